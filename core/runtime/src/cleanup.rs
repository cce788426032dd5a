//! Socket-file and home clean-up: what a box whose process is gone leaves in its socket
//! directory, the `ready` socket of a start, and the home a failed open created.

use std::path::PathBuf;

use boxsock_core::catalogue;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;

use crate::lock;

/// Remove the `ready` socket file of a box. Only in the real directory under the home,
/// never through the strategy's alias: a path in /tmp may lead somewhere else by now,
/// and the alias names the same file when it is intact.
pub(crate) fn remove_ready_file(layout: &BoxLayout, id: &BoxId) {
    use std::os::unix::fs::FileTypeExt;
    let real = layout.sockets_dir(id).join(catalogue::READY.file_name());
    if std::fs::symlink_metadata(&real).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(real);
    }
}

/// Remove every socket file left in a box's real socket directory (`ready` included),
/// never through the strategy's alias. The one clean-up for a box that has no process
/// any more (stop, the health monitor, recovery): whatever is bound there is stale,
/// e.g. the `agent.sock` of an agent killed with SIGKILL. Only sockets are removed.
pub(crate) fn remove_socket_files(layout: &BoxLayout, id: &BoxId) {
    remove_ready_file(layout, id);
    let dir = layout.sockets_dir(id);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        use std::os::unix::fs::FileTypeExt;
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::debug!(box_id = %id, path = %boxsock_core::echo::path(&e.path()), "removed a stale socket file"),
                Err(err) => tracing::debug!(box_id = %id, path = %boxsock_core::echo::path(&e.path()), error = %err, "could not remove a stale socket file"),
            }
        }
    }
}

/// Removes a start's `ready` socket file when dropped (whatever way the start ends).
pub(crate) struct ReadyCleanup<'a> {
    pub(crate) layout: &'a BoxLayout,
    pub(crate) id: &'a BoxId,
}

impl Drop for ReadyCleanup<'_> {
    fn drop(&mut self) {
        remove_ready_file(self.layout, self.id);
    }
}

/// Remove what a failed open of a new home made: the home (this open created it 0700
/// moments ago, so only this user can have written in it), then the ancestors it
/// created, each only if empty. Not while another process holds the home's lock: it
/// may have adopted the new home meanwhile.
pub(crate) fn undo_created_home(layout: &BoxLayout, created: &[PathBuf]) {
    let lock_path = layout.lock_path();
    let guard = match std::fs::symlink_metadata(&lock_path) {
        Ok(_) => match lock::try_exclusive(&lock_path) {
            Ok(Some(g)) => Some(g),
            _ => return,
        },
        Err(_) => None,
    };
    if created.last().is_some_and(|h| h == layout.home()) {
        if let Err(e) = std::fs::remove_dir_all(layout.home()) {
            tracing::warn!(home = %boxsock_core::echo::path(layout.home()), error = %e, "cannot remove the home this failed open created");
        }
    }
    drop(guard);
    for d in created.iter().rev() {
        match std::fs::remove_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %boxsock_core::echo::path(d), error = %e, "cannot remove a directory this failed open created")
            }
            _ => {}
        }
    }
}
