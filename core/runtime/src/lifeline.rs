//! Removing a box whose auto-remove owner died: what `run --rm`'s lifeline does once
//! its client is gone ([`Runtime::remove_owned`]). Decision 0012.
//!
//! The lifeline knows the box's id before the box exists (the client chose it,
//! [`crate::CreateOptions::id`]), so it can finish whatever the client left at any
//! point: nothing yet, an interrupted create (a directory without a row), a box
//! created, starting, running a command, or half removed. It deletes only what it can
//! prove the client made: a row recorded with that client as its auto-remove owner,
//! or a directory an interrupted create journalled (the rules of recovery).

use std::sync::Arc;

use boxsock_core::id::BoxId;

use crate::process::{Liveness, ProcessIdentity};
use crate::recovery::{RowlessDir, finish_interrupted_create};
use crate::store::BoxRecord;
use crate::{Inner, Runtime, RuntimeError};

/// What [`Runtime::remove_owned`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedRemoval {
    /// The box was stopped (agent shutdown, TERM, KILL) and removed: companions
    /// killed, binding released, directory and row deleted.
    Removed,
    /// The owner's create was interrupted before the row: the directory it journalled
    /// was removed.
    CreateUndone,
    /// Nothing of the box is left (never created, or already removed).
    Absent,
    /// Something under this id exists that the owner cannot be proved to have made (a
    /// row with another owner or none, a corrupt row, a directory no create
    /// journalled): left in place.
    NotOwned,
    /// The owner is still alive: nothing was done.
    OwnerAlive,
}

impl Runtime {
    /// Remove box `id` if it was created for `owner` (its
    /// [`crate::CreateOptions::auto_remove_owner`]) and that process is gone; with a
    /// directory but no row, finish the interrupted create instead. Holds the box's
    /// operation lock (and, in [`crate::LockMode::Shared`], the home's shared lock)
    /// like `remove`, so it waits for a start or stop of the box in another process.
    ///
    /// Unlike [`Runtime::remove_abandoned`], this touches one box only and never waits
    /// for exclusive use of the home.
    pub async fn remove_owned(
        &self,
        id: &BoxId,
        owner: ProcessIdentity,
    ) -> Result<OwnedRemoval, RuntimeError> {
        let inner = &self.inner;
        inner.writable("remove a box")?;
        // A zombie owner has ended: only its parent has not reaped it yet.
        if owner.probe() == Liveness::Alive {
            return Ok(OwnedRemoval::OwnerAlive);
        }
        let _op = inner.op_lock().await?;
        let _box = inner.box_lock(id).await?;
        // Read under the box's lock: a start or stop that held it has recorded its end.
        let rec = {
            let id = id.clone();
            inner.blocking(move |i| i.store.get(&id)).await
        };
        let rec = match rec {
            Ok(Some(rec)) => rec,
            Ok(None) => {
                let box_id = id.clone();
                let done = inner.blocking(move |i| finish_interrupted_create(i, &box_id)).await?;
                return Ok(match done {
                    RowlessDir::Removed => OwnedRemoval::CreateUndone,
                    RowlessDir::NoDir => OwnedRemoval::Absent,
                    RowlessDir::Unclaimed { journaled, marked } => {
                        tracing::warn!(
                            box_id = %id,
                            journaled,
                            marked,
                            "directory without a row that this client cannot be proved to have \
                             made: left in place"
                        );
                        OwnedRemoval::NotOwned
                    }
                });
            }
            Err(e) => {
                tracing::warn!(
                    box_id = %id,
                    error = %e,
                    "the row of an auto-remove box cannot be read; left in place"
                );
                return Ok(OwnedRemoval::NotOwned);
            }
        };
        let recorded = {
            let id = id.to_string();
            inner
                .blocking(move |i| {
                    i.store
                        .auto_remove_owners()
                        .map(|o| o.into_iter().find(|(b, _)| *b == id).map(|(_, o)| o))
                })
                .await?
        };
        if recorded != Some(owner) {
            tracing::warn!(
                box_id = %id,
                owner = ?recorded,
                expected = ?owner,
                "box is not tied to this client; left in place"
            );
            return Ok(OwnedRemoval::NotOwned);
        }
        tracing::info!(
            box_id = %id,
            owner_pid = owner.pid,
            state = %rec.state,
            "removing a run --rm box whose client is gone"
        );
        let strategy = rec.config.strategy.clone();
        if rec.state.has_process() {
            inner.stop_locked(rec, inner.options.stop_timeout).await?;
        }
        inner.stop_companions(id, &[]).await;
        inner.purge(id, &strategy, true)?;
        // Killed between the row and dropping its journal entry.
        crate::home::journal_done(&inner.layout, id);
        Ok(OwnedRemoval::Removed)
    }
}

impl Inner {
    /// Ask an agent the store does not know to shut down: a box left `starting` with no
    /// process recorded, whose starter died between the backend launching the box
    /// process and recording it. Such an agent exits by itself when the ready socket (or
    /// channel) is gone — unless it had already queued its `Ready` there; then it serves
    /// on the box's agent address with nobody knowing its pid. Whoever listens there (the
    /// box's own address, in its private directory or under its keyed name, checked
    /// like every dial) is asked to shut down, as a graceful stop would; nothing
    /// listening is the usual answer. Only for a caller holding the box's operation
    /// lock (or recovery's exclusive home lock), so no live start is cut short.
    pub(crate) async fn shutdown_unrecorded(self: &Arc<Self>, rec: &BoxRecord) {
        let asked = async {
            let (client, address) = self.dial_agent(rec).await.map_err(|e| e.to_string())?;
            client.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<String, String>(address)
        };
        match tokio::time::timeout(self.options.stop_timeout, asked).await {
            Ok(Ok(address)) => {
                tracing::warn!(
                    box_id = %rec.id,
                    address = %address,
                    "asked an unrecorded agent (its starter died before recording it) to shut down"
                )
            }
            Ok(Err(e)) => {
                tracing::debug!(box_id = %rec.id, error = %e, "no unrecorded agent answers")
            }
            Err(_) => {
                tracing::debug!(
                    box_id = %rec.id,
                    "an unrecorded agent did not answer a shutdown in time"
                )
            }
        }
    }
}
