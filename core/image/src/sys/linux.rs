//! Linux: a layer directory is held as an `O_PATH` descriptor and every name beneath it
//! is opened with `openat2`, whose `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` makes the
//! kernel refuse `..`, absolute paths, symlinks and magic links on the way.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Open the directory at `path` (not through a final symlink) as a handle for `*at`
/// calls.
pub(crate) fn open_dir_handle(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// What [`open_beneath`] opens.
#[derive(Clone, Copy)]
pub(crate) enum Open {
    /// A directory, as a handle for `*at` calls.
    DirHandle,
    /// A directory, readable (for `fchmod`, `fchown`, xattrs).
    Dir,
    /// Any file, as a handle (a FIFO, which must not be opened for I/O).
    Handle,
}

/// Open `name` (one or more components) beneath `dir`: never through a symlink, never
/// outside `dir`, never across a mount.
pub(crate) fn open_beneath(dir: impl AsFd, name: &OsStr, what: Open) -> nix::Result<OwnedFd> {
    let flags = match what {
        Open::DirHandle => OFlag::O_PATH | OFlag::O_DIRECTORY,
        Open::Dir => OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Open::Handle => OFlag::O_PATH,
    };
    let how = OpenHow::new().flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    nix::fcntl::openat2(dir, name, how)
}

/// The path that names an open descriptor (`/proc/self/fd/<n>`): how a mode is set on
/// an `O_PATH` handle, which `fchmod` refuses.
pub(crate) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))
}
