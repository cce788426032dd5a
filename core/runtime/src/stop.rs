//! `stop` and `remove`: ask the agent, then SIGTERM, then SIGKILL, each bounded; the
//! box is `Stopped` only once its process is really gone. Removal releases the binding,
//! deletes the directory, then the row.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use boxsock_core::id::BoxId;

use crate::kill::{self, KILL_WAIT};
use crate::process::ProcessHandle;
use crate::state::BoxState;
use crate::store::BoxRecord;
use crate::{Inner, RuntimeError, cleanup, crash, lock};

impl Inner {
    pub(crate) async fn stop_locked(
        self: &Arc<Self>,
        rec: BoxRecord,
        timeout: Duration,
    ) -> Result<BoxRecord, RuntimeError> {
        let id = rec.id.clone();
        if !rec.state.has_process() {
            // Companions left by an interrupted cleanup go now.
            self.stop_companions(&id, &[]).await;
            return Ok(rec);
        }
        let was = rec.state;
        // The process to stop is the one recorded when the box became `Stopping`, not
        // the one in `rec` (read earlier): a concurrent start may have recorded its
        // process since, and would otherwise be left running under a stopped box.
        let rec = if was != BoxState::Stopping {
            self.store
                .transition(
                    &id,
                    Some(&[BoxState::Starting, BoxState::Running, BoxState::Unhealthy]),
                    BoxState::Stopping,
                    |_| {},
                )
                .map_err(RuntimeError::from_store)?
        } else {
            rec
        };
        crash::point("stop:stopping");
        if let Some(w) = lock(&self.watchers).remove(&id) {
            w.abort();
        }
        let handle = self.handle_for(&rec);
        if let Some(h) = &handle {
            self.terminate(&rec, h, was == BoxState::Running, timeout).await?;
        } else if was == BoxState::Starting {
            // Its starter died between launching the process and recording it.
            self.shutdown_unrecorded(&rec).await;
        }
        self.stop_companions(&id, &[]).await;
        // The process is gone: what it listened on goes before the box is recorded
        // stopped (a stopped box has no socket files). Its listeners were bound by the
        // runtime (handed to it), so it cannot remove them itself.
        cleanup::remove_socket_files(self.home_fd.as_fd(), &self.layout, &id);
        crash::point("stop:terminated");
        let exit = handle.as_ref().and_then(|h| h.exit_code());
        let rec = self
            .store
            .transition(&id, Some(&[BoxState::Stopping]), BoxState::Stopped, |r| {
                r.process = None;
                if exit.is_some() {
                    r.exit_code = exit;
                }
            })
            .map_err(RuntimeError::from_store)?;
        crash::point("stop:stopped");
        lock(&self.procs).remove(&id);
        self.drop_binding(&id);
        tracing::debug!(box_id = %id, exit_code = ?exit, "stopped");
        Ok(rec)
    }

    /// Make the process gone: graceful shutdown (if `graceful`), SIGTERM, SIGKILL.
    async fn terminate(
        self: &Arc<Self>,
        rec: &BoxRecord,
        h: &ProcessHandle,
        graceful: bool,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let id = &rec.id;
        if !h.is_alive() {
            return Ok(());
        }
        if graceful {
            let asked = async {
                let (client, address) = self.dial_agent(rec).await?;
                client.shutdown().await.map_err(|source| RuntimeError::Agent {
                    id: id.clone(),
                    address,
                    source,
                })
            };
            match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(())) => {
                    if h.wait_gone(timeout).await {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => tracing::debug!(box_id = %id, error = %e, "graceful shutdown failed"),
                Err(_) => tracing::debug!(box_id = %id, "graceful shutdown timed out"),
            }
        }
        if kill::escalate(h, &kill::term_then_kill(timeout, KILL_WAIT)).await {
            return Ok(());
        }
        Err(RuntimeError::StopFailed { id: id.clone(), pid: h.identity().pid, waited: KILL_WAIT })
    }

    /// Release the binding, delete the directory, delete the row — in that order.
    pub(crate) fn purge(
        &self,
        id: &BoxId,
        strategy: &str,
        force: bool,
    ) -> Result<(), RuntimeError> {
        // The box's binding, if this runtime holds one, releases what it opened;
        // otherwise the strategy releases the box by its id.
        let held = lock(&self.bindings).remove(id).map(|(_, b)| b);
        self.forget_process(id);
        match self.strategy(strategy) {
            Ok(s) => {
                let released = match held {
                    Some(b) => b.release(),
                    None => s.release_box(&self.layout, id),
                };
                if let Err(e) = released {
                    if !force {
                        return Err(e.into());
                    }
                    tracing::warn!(box_id = %id, error = %e, "release failed; removing anyway (force)");
                }
            }
            Err(e) => {
                tracing::warn!(box_id = %id, strategy, error = %e, "strategy unavailable; releasing with every strategy");
                self.release_everywhere(id);
            }
        }
        crash::point("remove:released");
        boxsock_core::boxdir::remove_box_dir(&self.layout, id).map_err(|e| RuntimeError::Io {
            op: "remove box directory",
            path: self.layout.box_dir(id),
            source: e,
        })?;
        crash::point("remove:dir-removed");
        self.store.delete(id.as_str())?;
        crash::point("remove:row-deleted");
        tracing::debug!(box_id = %id, "removed");
        Ok(())
    }
}
