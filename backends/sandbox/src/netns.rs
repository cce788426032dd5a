//! A network namespace the box joins instead of having its own
//! ([`BoxSettings::network_namespace`](boxsock_core::backend::BoxSettings)): how an OCI
//! engine (podman, containerd's CNI) hands a container the namespace it has set up, with
//! its interfaces, routes and published ports.
//!
//! The path is stored as given and opened by the runtime at each start ([`open`]), so
//! a namespace removed since create fails that start, naming the path. The descriptor
//! is checked to be a network namespace with the `NS_GET_NSTYPE` ioctl: it names the
//! namespace's type exactly, where comparing the file system with `/proc/self/ns/net`'s
//! (nsfs) would accept any namespace's file (`/proc/PID/ns/mnt` too) and leave the
//! wrong type to a bare `EINVAL` from `setns` in the child. The child then joins it with
//! `setns(fd, CLONE_NEWNET)` instead of making a network namespace (`child::Plan`);
//! it neither brings up `lo` nor starts pasta there: the namespace is the engine's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use boxsock_core::echo;

/// Why a path cannot be joined as the box's network namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// The path is relative: the runtime opens it at each start, from wherever it runs.
    #[error("network namespace {}: not an absolute path", echo::path(.path))]
    Relative {
        /// The path as given.
        path: PathBuf,
    },
    /// The path holds a NUL byte.
    #[error("network namespace {}: the path holds a NUL byte", echo::path(.path))]
    Nul {
        /// The path as given.
        path: PathBuf,
    },
    /// The path cannot be inspected or opened (a namespace removed since create: its
    /// file is gone with `ip netns delete`).
    #[error(
        "network namespace {}: cannot {what} it: {source} (was the namespace removed?)",
        echo::path(.path)
    )]
    Open {
        /// The path as given.
        path: PathBuf,
        /// `inspect` or `open`.
        what: &'static str,
        /// The error of `stat` or `open`.
        source: io::Error,
    },
    /// The path is a directory, a FIFO, a socket or a device: never a namespace's file
    /// (those are opened only when they are regular files, so nothing blocks on a FIFO
    /// or acts on a device's open).
    #[error(
        "network namespace {}: it is a {kind}, not a namespace's file (such as \
         /run/netns/NAME or /proc/PID/ns/net)",
        echo::path(.path)
    )]
    NotAFile {
        /// The path as given.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The file is not a namespace at all (`NS_GET_NSTYPE` answers `ENOTTY`): a plain
    /// file, or a `/run/netns/NAME` whose namespace was unmounted.
    #[error(
        "network namespace {}: not a namespace (a regular file on {fs}, not a bind of \
         one such as /run/netns/NAME or /proc/PID/ns/net)",
        echo::path(.path)
    )]
    NotANamespace {
        /// The path as given.
        path: PathBuf,
        /// Its file system's magic, in hex (nsfs is 0x6e736673).
        fs: String,
    },
    /// A namespace of another type.
    #[error(
        "network namespace {}: it is a {kind} namespace, not a network namespace",
        echo::path(.path)
    )]
    OtherType {
        /// The path as given.
        path: PathBuf,
        /// The namespace's type (`mount`, `pid`, …).
        kind: &'static str,
    },
    /// `NS_GET_NSTYPE` failed otherwise.
    #[error("network namespace {}: cannot ask its type: {source}", echo::path(.path))]
    Query {
        /// The path as given.
        path: PathBuf,
        /// The ioctl's error.
        source: io::Error,
    },
}

fn kind_of(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_char_device() {
        Some("character device")
    } else {
        Some("special file")
    }
}

fn ns_kind(nstype: libc::c_int) -> &'static str {
    match nstype {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWPID => "PID",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWUTS => "UTS",
        libc::CLONE_NEWIPC => "IPC",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "unknown",
    }
}

/// The checks that need no file: absolute, no NUL.
pub fn check_path(path: &Path) -> Result<(), NamespaceError> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(NamespaceError::Nul { path: path.to_path_buf() });
    }
    if !path.is_absolute() {
        return Err(NamespaceError::Relative { path: path.to_path_buf() });
    }
    Ok(())
}

/// Open `path` (`O_RDONLY | O_CLOEXEC`) and check that it is a network namespace; the
/// descriptor is what the child joins. Symlinks are followed (`/proc/PID/ns/net` is
/// one); the check is on the descriptor, so what is joined is what was checked.
pub fn open(path: &Path) -> Result<OwnedFd, NamespaceError> {
    check_path(path)?;
    let err = |what, source| NamespaceError::Open { path: path.to_path_buf(), what, source };
    let meta = std::fs::metadata(path).map_err(|e| err("inspect", e))?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(NamespaceError::NotAFile { path: path.to_path_buf(), kind });
    }
    // O_NONBLOCK and O_NOCTTY: were the path swapped for a FIFO or a terminal since the
    // stat, the open neither blocks nor takes a controlling terminal.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| err("open", e))?;
    let meta = file.metadata().map_err(|e| err("inspect", e))?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(NamespaceError::NotAFile { path: path.to_path_buf(), kind });
    }
    // SAFETY: NS_GET_NSTYPE takes no argument; the descriptor is ours and open.
    let t = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if t == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTTY) {
            let fs = nix::sys::statfs::fstatfs(&file)
                .map(|s| format!("file system 0x{:x}", s.filesystem_type().0))
                .unwrap_or_else(|_| "an unknown file system".into());
            return Err(NamespaceError::NotANamespace { path: path.to_path_buf(), fs });
        }
        return Err(NamespaceError::Query { path: path.to_path_buf(), source: e });
    }
    if t != libc::CLONE_NEWNET {
        return Err(NamespaceError::OtherType { path: path.to_path_buf(), kind: ns_kind(t) });
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_namespace_opens_and_anything_else_is_refused_naming_it() {
        open(Path::new("/proc/self/ns/net")).expect("this process's own network namespace");
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let e = open(&file).unwrap_err();
        assert!(matches!(e, NamespaceError::NotANamespace { .. }), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        let e = open(Path::new("/proc/self/ns/mnt")).unwrap_err();
        assert!(e.to_string().contains("a mount namespace, not a network"), "{e}");
        let e = open(tmp.path()).unwrap_err();
        assert!(matches!(e, NamespaceError::NotAFile { kind: "directory", .. }), "{e}");
        let e = open(&tmp.path().join("gone")).unwrap_err();
        assert!(matches!(e, NamespaceError::Open { .. }), "{e}");
        let e = open(Path::new("run/netns/x")).unwrap_err();
        assert!(matches!(e, NamespaceError::Relative { .. }), "{e}");
    }
}
