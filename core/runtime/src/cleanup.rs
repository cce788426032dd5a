//! Socket-file and home clean-up: what a box whose process is gone leaves in its socket
//! directory, the `ready` socket of a start, and the home a failed open created.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use boxsock_core::catalogue;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::{RuntimeError, home};

/// The box's real socket directory, opened from the home's descriptor one checked
/// component at a time (`boxes`, `<id>`, `sockets`: each a directory of this user's,
/// not a symlink, not writable by others). `None` when one is missing, or (logged) not
/// ours: then nothing in it is provably ours to delete, and another user who swapped
/// in their own directory must not have root delete their files (or, through a
/// symlink, anyone's sockets).
fn open_sockets_dir(home: BorrowedFd<'_>, layout: &BoxLayout, id: &BoxId) -> Option<OwnedFd> {
    let walk = || -> Result<Option<OwnedFd>, RuntimeError> {
        let Some(boxes) =
            home::check_dir_at(home, OsStr::new("boxes"), &layout.boxes_dir(), false)?
        else {
            return Ok(None);
        };
        let Some(dir) =
            home::check_dir_at(boxes.as_fd(), OsStr::new(id.as_str()), &layout.box_dir(id), false)?
        else {
            return Ok(None);
        };
        home::check_dir_at(dir.as_fd(), OsStr::new("sockets"), &layout.sockets_dir(id), false)
    };
    match walk() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(box_id = %id, error = %e, "not removing the box's socket files: its directory is not provably ours");
            None
        }
    }
}

/// Unlink `name` in `dir` if it is a socket (never follows a symlink). Whether it did.
fn remove_socket_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd<'_>, name: &P) -> bool {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
            nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir).is_ok()
        }
        _ => false,
    }
}

/// Remove the `ready` socket file of a box. Only in the real directory under the home
/// (reached from the home's descriptor, see [`open_sockets_dir`]), never through the
/// strategy's alias: a path in /tmp may lead somewhere else by now, and the alias names
/// the same file when it is intact.
pub(crate) fn remove_ready_file(home: BorrowedFd<'_>, layout: &BoxLayout, id: &BoxId) {
    if let Some(dir) = open_sockets_dir(home, layout, id) {
        remove_socket_at(dir.as_fd(), catalogue::READY.file_name().as_str());
    }
}

/// Remove every socket file left in a box's real socket directory (`ready` included),
/// reached as [`remove_ready_file`] does, never through the strategy's alias. The one
/// clean-up for a box that has no process any more (stop, the health monitor,
/// recovery): whatever is bound there is stale, e.g. the `agent.sock` of an agent
/// killed with SIGKILL. Only sockets are removed.
pub(crate) fn remove_socket_files(home: BorrowedFd<'_>, layout: &BoxLayout, id: &BoxId) {
    let Some(dir) = open_sockets_dir(home, layout, id) else { return };
    let listing = nix::dir::Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let Ok(mut listing) = listing else { return };
    let names: Vec<std::ffi::CString> = listing
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        if remove_socket_at(dir.as_fd(), name.as_c_str()) {
            tracing::debug!(box_id = %id, file = ?name, "removed a stale socket file");
        }
    }
}

/// Removes a start's `ready` socket file when dropped (whatever way the start ends).
pub(crate) struct ReadyCleanup<'a> {
    pub(crate) home: BorrowedFd<'a>,
    pub(crate) layout: &'a BoxLayout,
    pub(crate) id: &'a BoxId,
}

impl Drop for ReadyCleanup<'_> {
    fn drop(&mut self) {
        remove_ready_file(self.home, self.layout, self.id);
    }
}

/// Remove what a failed first open of a new home made: the home (this open created the
/// directory and made the home in it while holding its initialisation lock exclusively,
/// which it still holds, so no other process has used it), then the ancestors it
/// created, each only if empty. A process waiting for the lock finds the directory
/// removed and resolves the path again (`home::init_lock`).
pub(crate) fn undo_created_home(home: &Path, created: &[PathBuf]) {
    if created.last().is_some_and(|h| h == home) {
        if let Err(e) = std::fs::remove_dir_all(home) {
            tracing::warn!(home = %boxsock_core::echo::path(home), error = %e, "cannot remove the home this failed open created");
        }
    }
    for d in created.iter().rev() {
        match std::fs::remove_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %boxsock_core::echo::path(d), error = %e, "cannot remove a directory this failed open created")
            }
            _ => {}
        }
    }
}
