//! Recovery at open: make the store tell the truth about processes and directories.
//!
//! Runs only while the home's exclusive lock is held (no other process is
//! mid-operation). Decisions (see `docs/runtime.md`):
//!
//! - `Running` and alive: kept (and watched). `Running` and gone: `Unhealthy` →
//!   `Stopped`.
//! - `Starting`: whoever was starting it died before readiness was confirmed, so the
//!   process (if any) is killed and the box is `Stopped`. Same for `Stopping` and
//!   `Unhealthy`. A `Starting` box with no process recorded may still have one (its
//!   starter died between the launch and recording it): an agent listening on its
//!   address is asked to shut down (`shutdown_unrecorded`).
//! - A row whose directory is gone is an interrupted removal (removal deletes the
//!   directory before the row): its process is killed, its binding released, the row
//!   deleted.
//! - A directory under `boxes/` with a valid id and no row is removed **only if the
//!   runtime can prove an interrupted create made it**: create journals
//!   `<home>/journal/create.<id>` before making the directory, writes the directory's
//!   marker `.boxsock-box` first, and drops the journal entry once the row exists. With
//!   both, its binding is released with every strategy and the directory removed; with
//!   the journal entry only (a crash between `mkdir` and the marker), the directory is
//!   removed only if empty. Anything else is reported ([`OpenReport::unclaimed_dirs`])
//!   and left alone: never delete what we cannot prove we created. Entries whose names
//!   are not valid ids are reported and left alone. A directory whose row is corrupt is
//!   kept. Journal entries of boxes that have a row or no directory are dropped.
//! - Corrupt rows are reported, never touched.
//! - Recorded companions (passt…) of every box that is not `Running` with a live
//!   process afterwards are killed and their record cleared.
//! - First of all (with `RuntimeOptions::remove_abandoned_at_open`), boxes whose
//!   auto-remove owner is gone (`run --rm` killed) are stopped and removed:
//!   [`remove_abandoned`].

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Inner, RuntimeError, cleanup, kill};
use crate::process::Liveness;
use crate::state::BoxState;
use crate::store::BadRow;
use boxsock_core::binding::SweepReport;
use boxsock_core::id::BoxId;

/// A box whose recorded state recovery changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// The box.
    pub id: BoxId,
    /// Its recorded state.
    pub from: BoxState,
    /// Its state now.
    pub to: BoxState,
    /// Whether a live process had to be killed.
    pub killed: bool,
}

/// Why one strategy's sweep failed ([`OpenReport::swept`], `Runtime::sweep`).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The strategy could not be built.
    #[error(transparent)]
    Strategy(Box<RuntimeError>),
    /// Its sweep failed.
    #[error(transparent)]
    Binding(#[from] boxsock_core::error::BindingError),
}

/// What [`Runtime::open`](super::Runtime::open) found and repaired.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Each strategy's sweep.
    pub swept: Vec<(String, Result<SweepReport, SweepError>)>,
    /// State corrections.
    pub recovered: Vec<Recovered>,
    /// Directories without a row, removed (binding released).
    pub orphan_dirs_removed: Vec<BoxId>,
    /// Rows without a directory, removed (binding released, process killed).
    pub orphan_rows_removed: Vec<BoxId>,
    /// Rows that could not be decoded (left in place).
    pub corrupt_rows: Vec<BadRow>,
    /// Entries under `boxes/` that are not box directories (left in place).
    pub unknown_entries: Vec<std::path::PathBuf>,
    /// Directories under `boxes/` named like a box, without a row, that boxsock cannot
    /// prove it created (no create journal entry, or no marker): left in place.
    pub unclaimed_dirs: Vec<std::path::PathBuf>,
    /// Recovery did not run: another process was mid-operation on the home.
    pub recovery_skipped: bool,
    /// Boxes removed because their auto-remove owner is gone.
    pub abandoned_removed: Vec<BoxId>,
}

const RECOVERY_STOP_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn recover(
    inner: &Arc<Inner>,
    report: &mut OpenReport,
) -> Result<(), RuntimeError> {
    if inner.options.remove_abandoned_at_open {
        report.abandoned_removed = remove_abandoned(inner).await?;
    }
    let layout = &inner.layout;
    let listing = inner.store.list()?;
    for bad in &listing.bad {
        tracing::warn!(box_id = %bad.id, error = %bad.error, "corrupt box row left in place");
    }
    report.corrupt_rows = listing.bad.clone();

    for rec in &listing.boxes {
        let dir_exists = layout.box_dir(&rec.id).is_dir();
        let handle = inner.handle_for(rec);
        let alive = handle.as_ref().is_some_and(|h| h.is_alive());
        let mut killed = false;
        let must_kill = alive && (!dir_exists || rec.state != BoxState::Running);
        if must_kill {
            let h = handle.as_ref().expect("alive implies a handle");
            kill::escalate(h, &kill::term_then_kill(RECOVERY_STOP_WAIT, RECOVERY_STOP_WAIT)).await;
            killed = true;
            if h.is_alive() {
                tracing::error!(box_id = %rec.id, pid = h.identity().pid, "could not kill an abandoned box process");
            }
        }
        if dir_exists && rec.state == BoxState::Starting && rec.process.is_none() {
            // Its starter died between launching the process and recording it.
            inner.shutdown_unrecorded(rec).await;
        }
        // Companions live exactly as long as a running box's process.
        if !(alive && dir_exists && rec.state == BoxState::Running) {
            inner.stop_companions(&rec.id, &[]).await;
        }
        if !dir_exists {
            tracing::warn!(box_id = %rec.id, "box row without a directory (interrupted removal): removing the row");
            inner.forget_process(&rec.id);
            match inner.strategy(&rec.config.strategy) {
                Ok(s) => {
                    let _ = s.release_box(layout, &rec.id);
                }
                Err(_) => inner.release_everywhere(&rec.id),
            }
            inner.store.delete(rec.id.as_str())?;
            report.orphan_rows_removed.push(rec.id.clone());
            continue;
        }
        if !rec.state.has_process() || (rec.state == BoxState::Running && alive) {
            continue;
        }
        let exit = handle.as_ref().and_then(|h| h.exit_code());
        let path: &[BoxState] = match rec.state {
            BoxState::Running => &[BoxState::Unhealthy, BoxState::Stopped],
            _ => &[BoxState::Stopped],
        };
        let mut from = rec.state;
        for &to in path {
            inner.store.transition(&rec.id, Some(&[from]), to, |r| {
                if exit.is_some() {
                    r.exit_code = exit;
                }
                if to == BoxState::Stopped {
                    r.process = None;
                }
            })?;
            from = to;
        }
        cleanup::remove_socket_files(inner.home_fd.as_fd(), layout, &rec.id);
        inner.forget_process(&rec.id);
        tracing::warn!(box_id = %rec.id, from = %rec.state, killed, "recovered box state: stopped");
        report.recovered.push(Recovered {
            id: rec.id.clone(),
            from: rec.state,
            to: BoxState::Stopped,
            killed,
        });
    }

    let known: std::collections::HashSet<String> = listing
        .boxes
        .iter()
        .map(|r| r.id.to_string())
        .chain(listing.bad.iter().map(|b| b.id.clone()))
        .collect();
    let entries = match std::fs::read_dir(layout.boxes_dir()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RuntimeError::Io { op: "read", path: layout.boxes_dir(), source: e }),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(id) = BoxId::from_bytes(name.as_encoded_bytes()) else {
            tracing::warn!(path = %boxsock_core::echo::path(&entry.path()), "unexpected entry under boxes/ left in place");
            report.unknown_entries.push(entry.path());
            continue;
        };
        if known.contains(id.as_str()) {
            continue;
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir {
            report.unknown_entries.push(entry.path());
            continue;
        }
        match finish_interrupted_create(inner, &id)? {
            RowlessDir::Removed => report.orphan_dirs_removed.push(id),
            RowlessDir::Unclaimed { journaled, marked } => {
                tracing::warn!(
                    path = %boxsock_core::echo::path(&entry.path()),
                    journaled,
                    marked,
                    "directory under boxes/ without a row that boxsock cannot prove it created: left in place"
                );
                report.unclaimed_dirs.push(entry.path());
            }
            RowlessDir::NoDir => {}
        }
    }
    // Journal entries of creates that finished (a row) or never made a directory.
    if let Ok(entries) = std::fs::read_dir(layout.journal_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("create."))
                .and_then(|n| BoxId::parse(n).ok())
            else {
                continue;
            };
            if known.contains(id.as_str())
                || std::fs::symlink_metadata(layout.box_dir(&id)).is_err()
            {
                super::home::journal_done(layout, &id);
            }
        }
    }
    Ok(())
}

/// What [`finish_interrupted_create`] found at a box id that has no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowlessDir {
    /// A directory an interrupted create made (journalled and marked, or journalled and
    /// empty): removed, its binding released, its journal entry dropped.
    Removed,
    /// A directory boxsock cannot prove it made: left in place.
    Unclaimed { journaled: bool, marked: bool },
    /// No directory (a journal entry alone is dropped).
    NoDir,
}

/// Finish what an interrupted create of `id` left, for an id that has no row: the
/// caller has checked that there is none, and holds the home against a concurrent
/// create of that id (recovery: exclusively; `run --rm`'s lifeline: the client that
/// chose the id is gone). Create journals `journal/create.<id>`, then makes the
/// directory writing its marker `.boxsock-box` first, then the row, then drops the
/// journal entry; so a directory with both was made by a create that did not finish,
/// and one with the journal entry only and nothing in it by a create interrupted
/// between `mkdir` and the marker. Anything else is not ours to delete.
pub(crate) fn finish_interrupted_create(
    inner: &Inner,
    id: &BoxId,
) -> Result<RowlessDir, RuntimeError> {
    let layout = &inner.layout;
    let dir = layout.box_dir(id);
    let journaled = std::fs::symlink_metadata(layout.create_journal(id)).is_ok_and(|m| m.is_file());
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        if journaled {
            super::home::journal_done(layout, id);
        }
        return Ok(RowlessDir::NoDir);
    }
    let marked = std::fs::symlink_metadata(layout.box_marker(id)).is_ok_and(|m| m.is_file());
    if journaled && marked {
        tracing::warn!(
            box_id = %id,
            "box directory without a row (interrupted create): removing it"
        );
        inner.release_everywhere(id);
        boxsock_core::boxdir::remove_box_dir(layout, id).map_err(|e| RuntimeError::Io {
            op: "remove orphan box directory",
            path: dir,
            source: e,
        })?;
        super::home::journal_done(layout, id);
        Ok(RowlessDir::Removed)
    } else if journaled && std::fs::remove_dir(&dir).is_ok() {
        // Interrupted between mkdir and the marker: an empty directory is all it made.
        super::home::journal_done(layout, id);
        Ok(RowlessDir::Removed)
    } else {
        Ok(RowlessDir::Unclaimed { journaled, marked })
    }
}

/// Stop and remove every box whose auto-remove owner (pid + start time) is no longer
/// alive. The caller holds the home exclusively. A box that cannot be removed is
/// logged and left for the next time; the others go on.
pub(super) async fn remove_abandoned(inner: &Arc<Inner>) -> Result<Vec<BoxId>, RuntimeError> {
    let mut removed = Vec::new();
    for (raw_id, owner) in inner.store.auto_remove_owners()? {
        if owner.probe() == Liveness::Alive {
            continue;
        }
        let Ok(id) = BoxId::parse(&raw_id) else {
            tracing::warn!(box_id = %boxsock_core::echo::echo(&raw_id), "auto-remove owner of an invalid id left in place");
            continue;
        };
        let rec = match inner.store.get(&id) {
            Ok(Some(rec)) => rec,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(box_id = %id, error = %e, "abandoned auto-remove box has a corrupt row; left in place");
                continue;
            }
        };
        tracing::warn!(box_id = %id, owner_pid = owner.pid, state = %rec.state, "removing an auto-remove box whose owner is gone");
        let strategy = rec.config.strategy.clone();
        if rec.state.has_process() {
            if let Err(e) = inner.stop_locked(rec, inner.options.stop_timeout).await {
                tracing::error!(box_id = %id, error = %e, "cannot stop an abandoned auto-remove box; left for the next open");
                continue;
            }
        }
        inner.stop_companions(&id, &[]).await;
        if let Err(e) = inner.purge(&id, &strategy, true) {
            tracing::error!(box_id = %id, error = %e, "cannot remove an abandoned auto-remove box; left for the next open");
            continue;
        }
        removed.push(id);
    }
    Ok(removed)
}
