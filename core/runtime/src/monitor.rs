//! The health monitor: one task per running box, waiting on its pidfd; a box whose
//! process died becomes `Unhealthy`, then `Stopped`, with its exit recorded, its
//! companions killed and its socket files removed.

use std::os::fd::AsFd;
use std::sync::{Arc, Weak};

use boxsock_core::id::BoxId;

use crate::process::ProcessHandle;
use crate::state::BoxState;
use crate::{Inner, cleanup, lock};

impl Inner {
    /// Watch a running box's process; on exit, Running → Unhealthy → Stopped.
    pub(crate) fn watch(self: &Arc<Self>, id: &BoxId, handle: Arc<ProcessHandle>) {
        if !self.options.health_monitor {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(self);
        let box_id = id.clone();
        let task = tokio::spawn(async move {
            handle.wait_exit().await;
            if let Some(inner) = weak.upgrade() {
                inner.on_exit(&box_id, &handle).await;
            }
        });
        if let Some(old) = lock(&self.watchers).insert(id.clone(), task.abort_handle()) {
            old.abort();
        }
    }

    /// Record that a running box's process is gone (the monitor saw it exit, or a dial
    /// found it gone).
    /// The store and the files are touched on the blocking pool, and companions are
    /// waited for asynchronously: the monitor runs on the caller's executor.
    pub(crate) async fn on_exit(self: &Arc<Self>, id: &BoxId, handle: &ProcessHandle) {
        let exit = handle.exit_code();
        // Only a box that is supposed to be running is unhealthy; a stop or a failed
        // start in progress handles its own process.
        let box_id = id.clone();
        let unhealthy = self
            .blocking(move |i| {
                i.store
                    .transition(&box_id, Some(&[BoxState::Running]), BoxState::Unhealthy, |r| {
                        r.exit_code = exit
                    })
                    .is_ok()
            })
            .await;
        if !unhealthy {
            return;
        }
        tracing::warn!(box_id = %id, pid = handle.identity().pid, exit_code = ?exit, "box process died");
        self.kill_companions_now(id).await;
        let box_id = id.clone();
        self.blocking(move |i| {
            let _ =
                i.store.transition(&box_id, Some(&[BoxState::Unhealthy]), BoxState::Stopped, |r| {
                    r.process = None
                });
            cleanup::remove_socket_files(i.home_fd.as_fd(), &i.layout, &box_id);
        })
        .await;
        lock(&self.procs).remove(id);
        self.drop_binding(id);
        lock(&self.watchers).remove(id);
    }
}
