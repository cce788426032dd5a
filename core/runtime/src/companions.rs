//! Companions ([`boxsock_core::backend::Launched::companions`], e.g. passt) live exactly
//! as long as their box's process: they are stopped here on stop, remove, a failed
//! start, the box process's death and recovery.

use std::sync::Arc;
use std::time::Duration;

use boxsock_core::id::BoxId;
use nix::sys::signal::Signal;

use crate::Inner;
use crate::kill::{self, COMPANION_TERM_WAIT, KILL_WAIT};
use crate::process::{ProcessHandle, ProcessIdentity};

/// How long the health monitor waits for a companion SIGKILLed with its dead box.
const COMPANION_KILL_WAIT: Duration = Duration::from_millis(200);

impl Inner {
    /// Stop a box's companions: the recorded ones and `extra` (known to a start that
    /// could not record them). SIGTERM to each (and its process group: companions run
    /// in their own session), then SIGKILL; each is waited for (and reaped when it is
    /// our child). The record is cleared afterwards. Never signals a process whose
    /// start time differs from the recorded one.
    pub(crate) async fn stop_companions(self: &Arc<Self>, id: &BoxId, extra: &[ProcessIdentity]) {
        self.end_companions(id, extra, &kill::term_then_kill(COMPANION_TERM_WAIT, KILL_WAIT)).await
    }

    /// [`Inner::stop_companions`] when the box process just died: SIGKILL at once, then
    /// reap what is our child for a short while.
    pub(crate) async fn kill_companions_now(self: &Arc<Self>, id: &BoxId) {
        self.end_companions(id, &[], &kill::kill_now(COMPANION_KILL_WAIT)).await
    }

    /// The store is read and written on the blocking pool; the waits are asynchronous.
    async fn end_companions(
        self: &Arc<Self>,
        id: &BoxId,
        extra: &[ProcessIdentity],
        steps: &[(Signal, Duration)],
    ) {
        let box_id = id.clone();
        let recorded = self.blocking(move |i| i.store.companions(box_id.as_str())).await;
        let mut all = recorded.unwrap_or_else(|e| {
            tracing::warn!(box_id = %id, error = %e, "cannot read the recorded companions");
            Vec::new()
        });
        for e in extra {
            if !all.contains(e) {
                all.push(*e);
            }
        }
        if all.is_empty() {
            return;
        }
        for ident in &all {
            let h = ProcessHandle::open_group_leader(*ident);
            if h.is_alive() {
                kill::escalate(&h, steps).await;
            }
            if h.is_alive() {
                tracing::error!(box_id = %id, pid = ident.pid, "companion process survived SIGKILL");
            } else {
                tracing::debug!(box_id = %id, pid = ident.pid, exit_code = ?h.exit_code(), "companion stopped");
            }
        }
        let box_id = id.clone();
        match self.blocking(move |i| i.store.set_companions(&box_id, &[])).await {
            Ok(()) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(box_id = %id, error = %e, "cannot clear the recorded companions")
            }
        }
    }
}
