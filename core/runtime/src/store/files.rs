//! File hardening: the store's files are regular files of this user, 0600 whatever the
//! umask, reached through the home's directory descriptor and never through a symlink;
//! and a file another [`Store`](super::Store) of this process has open is never opened
//! (and closed) here, since closing any descriptor of a file drops this process's POSIX
//! locks on it, SQLite's included.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmod, fchmodat, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::migrations::{SCHEMA_VERSION, header_user_version, read_header};
use super::{StoreError, StoreMode};

/// The error of a failed call `op` on the store file `path`.
fn io(path: &Path, op: &'static str) -> impl FnOnce(nix::errno::Errno) -> StoreError {
    let path = path.to_path_buf();
    move |e| StoreError::Io { path, op, source: e.into() }
}

/// Create the store file `name` in `dir` (`path` names it in messages), 0600 and
/// exclusively; whether this call created it (`false`: it exists).
pub(super) fn create(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<bool, StoreError> {
    let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let excl = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | nofollow;
    match openat(dir.as_fd(), name, excl, Mode::from_bits_truncate(0o600)) {
        Ok(f) => {
            let st = fstat(&f).map_err(io(path, "inspect"))?;
            secure_stat(&st, path).and_then(|()| {
                tighten(&st, path, || fchmod(&f, Mode::from_bits_truncate(0o600)))
            })?;
            // A file this open created: no connection of this process has it, so
            // closing this descriptor drops nobody's lock.
            Ok(true)
        }
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        Err(e) => Err(io(path, "create")(e)),
    }
}

/// Remove the store `name` in `dir` and its journals: only for a store this open
/// created ([`create`] returned `true`) and failed to open.
pub(super) fn remove_created(dir: &OwnedFd, name: &OsStr) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut n = name.to_os_string();
        n.push(suffix);
        let _ = unlinkat(dir.as_fd(), n.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
}

/// Check the existing store `name` in `dir` and, in `ReadWrite` mode, its `-wal` and
/// `-shm`: regular files of this user, tightened to 0600, and a schema version this
/// build understands. Returns the database's (device, inode), or `None` for a missing
/// database in `ReadOnly` mode. `in_use` is the locked table of this process's open
/// stores: a file in it is not opened here (its store read the header already; SQLite's
/// version is checked again before any write).
pub(super) fn check(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    mode: StoreMode,
    in_use: &OpenStores,
) -> Result<Option<(u64, u64)>, StoreError> {
    // Existing files are checked by `fstatat` on the directory, never opened here:
    // closing any descriptor of a file drops every POSIX lock this process holds on
    // it, so checking a store that another `Store` of this process has open (a
    // second runtime on the home, a read-only one) would silently take that
    // connection's SQLite locks away, and another process could then reset the
    // shared WAL index under it (SIGBUS) or write beside it.
    let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) if mode == StoreMode::ReadOnly => return Ok(None),
        Err(e) => return Err(io(path, "inspect")(e)),
    };
    secure_stat(&st, path)?;
    let key = (st.st_dev, st.st_ino);
    if mode == StoreMode::ReadWrite {
        tighten(&st, path, || {
            fchmodat(
                dir.as_fd(),
                name,
                Mode::from_bits_truncate(0o600),
                FchmodatFlags::FollowSymlink,
            )
        })?;
    }
    // The schema version before SQLite sees the file (`journal_mode=WAL` and a
    // migration write): read through a descriptor only when no store of this
    // process has the file open; otherwise that store read it, and the version
    // SQLite reports is checked again before any write (`open_sqlite`).
    if !in_use.contains_key(&key) {
        let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let file = openat(dir.as_fd(), name, OFlag::O_RDONLY | nofollow, Mode::empty())
            .map_err(io(path, "open"))?;
        let same = fstat(&file).map(|f| (f.st_dev, f.st_ino) == key).unwrap_or(false);
        let header = read_header(&file).map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            op: "read header",
            source: e,
        })?;
        drop(file);
        if !same {
            return Err(StoreError::Insecure {
                path: path.to_path_buf(),
                reason: "it was replaced while being checked".into(),
            });
        }
        if let Some(found) = header_user_version(&header) {
            if found > SCHEMA_VERSION {
                return Err(StoreError::FutureSchema {
                    path: path.to_path_buf(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
    }
    if mode == StoreMode::ReadWrite {
        for suffix in ["-wal", "-shm"] {
            let mut n = name.to_os_string();
            n.push(suffix);
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            match fstatat(dir.as_fd(), n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    secure_stat(&st, &p)?;
                    tighten(&st, &p, || {
                        fchmodat(
                            dir.as_fd(),
                            n.as_os_str(),
                            Mode::from_bits_truncate(0o600),
                            FchmodatFlags::FollowSymlink,
                        )
                    })?;
                }
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(StoreError::Io { path: p, op: "inspect", source: e.into() }),
            }
        }
    }
    Ok(Some(key))
}

/// The store files (device, inode) that a [`Store`](super::Store) of this process has
/// open, with how many: [`Store::open_at`](super::Store::open_at) never opens (and so
/// never closes) a descriptor of one.
pub(super) type OpenStores = std::collections::HashMap<(u64, u64), usize>;

/// This process's table of open store files, locked.
pub(super) fn open_stores() -> MutexGuard<'static, OpenStores> {
    static OPEN: std::sync::OnceLock<Mutex<OpenStores>> = std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Store`](super::Store)'s entry in [`open_stores`], removed when the store (its
/// connection first: the field order of `Store`) is dropped.
#[derive(Debug)]
pub(super) struct OpenStore((u64, u64));

impl OpenStore {
    /// Count one more open store of the file `key` in the table `in_use` (locked since
    /// the file was checked) and release the table.
    pub(super) fn enter(mut in_use: MutexGuard<'static, OpenStores>, key: (u64, u64)) -> OpenStore {
        *in_use.entry(key).or_insert(0) += 1;
        drop(in_use);
        OpenStore(key)
    }
}

impl Drop for OpenStore {
    fn drop(&mut self) {
        let mut open = open_stores();
        if let Some(n) = open.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

/// Check that a store file's `lstat` is a regular file of ours.
fn secure_stat(st: &nix::sys::stat::FileStat, path: &Path) -> Result<(), StoreError> {
    let euid = nix::unistd::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(StoreError::Insecure {
            path: path.to_path_buf(),
            reason: format!("not a regular file (mode {:o})", st.st_mode),
        });
    }
    if st.st_uid != euid {
        return Err(StoreError::Insecure {
            path: path.to_path_buf(),
            reason: format!("owned by uid {}, not by this user (uid {euid})", st.st_uid),
        });
    }
    Ok(())
}

/// Make a store file 0600 with `chmod` if it is not (files of an older boxsock).
fn tighten(
    st: &nix::sys::stat::FileStat,
    path: &Path,
    chmod: impl FnOnce() -> nix::Result<()>,
) -> Result<(), StoreError> {
    if st.st_mode & 0o777 != 0o600 {
        chmod().map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            op: "make 0600",
            source: e.into(),
        })?;
    }
    Ok(())
}
