//! The few file operations the store is built from: atomic replacement of a small file,
//! `flock` locks, the store's temporary entries, and removal of trees the store made.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{ImageError, Result};

/// A held `flock` on a lock file; released on drop.
pub(crate) struct Lock {
    _flock: Flock<File>,
}

/// How a lock is taken.
#[derive(Clone, Copy)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

/// Take a `flock` on `path` (created 0600 if missing), waiting for it.
pub(crate) fn lock(path: &Path, mode: LockMode) -> Result<Lock> {
    lock_inner(path, mode, false)?.ok_or_else(|| unreachable_lock(path))
}

/// Take a `flock` on `path` only if nobody holds it.
pub(crate) fn try_lock(path: &Path, mode: LockMode) -> Result<Option<Lock>> {
    lock_inner(path, mode, true)
}

fn unreachable_lock(path: &Path) -> ImageError {
    ImageError::io("lock", path, std::io::Error::other("blocking lock returned busy"))
}

fn lock_inner(path: &Path, mode: LockMode, nonblock: bool) -> Result<Option<Lock>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| ImageError::io("open lock", path, e))?;
    let arg = match (mode, nonblock) {
        (LockMode::Shared, false) => FlockArg::LockShared,
        (LockMode::Exclusive, false) => FlockArg::LockExclusive,
        (LockMode::Shared, true) => FlockArg::LockSharedNonblock,
        (LockMode::Exclusive, true) => FlockArg::LockExclusiveNonblock,
    };
    match Flock::lock(file, arg) {
        Ok(f) => Ok(Some(Lock { _flock: f })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if nonblock => Ok(None),
        Err((_, e)) => Err(ImageError::io("flock", path, e.into())),
    }
}

/// A fresh random name for a temporary entry: `<prefix>-<16 hex>`.
pub(crate) fn temp_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// `fsync` a directory, so that a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ImageError::io("fsync directory", dir, e))
}

/// Replace `path` with `bytes` atomically: a temporary file beside it, written, synced,
/// renamed over, the directory synced. A reader sees the old or the new content, never
/// a part.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(temp_name(".tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io("write", &tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io("rename into place", path, e));
    }
    sync_dir(dir)
}

/// Remove a tree the store made (a layer, a temporary unpack): directories are made
/// writable by their owner first, because an image may hold 0555 directories. Never
/// follows a symlink (a link is removed, not its target). Returns the bytes of the
/// regular files removed (their allocated size).
pub(crate) fn remove_tree(path: &Path) -> Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ImageError::io("stat", path, e)),
    };
    if !meta.is_dir() {
        fs::remove_file(path).map_err(|e| ImageError::io("remove", path, e))?;
        return Ok(allocated(&meta));
    }
    let mut freed = 0;
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
            .map_err(|e| ImageError::io("chmod", path, e))?;
    }
    let entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|e| ImageError::io("read directory", path, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| ImageError::io("read directory", path, e))?;
    for p in entries {
        freed += remove_tree(&p)?;
    }
    fs::remove_dir(path).map_err(|e| ImageError::io("remove directory", path, e))?;
    Ok(freed)
}

/// The bytes a file occupies (what removing it frees).
pub(crate) fn allocated(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // A file with another name left is freed with the last one: counted there, once.
    if meta.nlink() > 1 && !meta.is_dir() { 0 } else { meta.blocks() * 512 }
}

/// Create `dir` (and parents) with mode 0755 if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| ImageError::io("create directory", dir, e))
}

/// An entry under the store's `tmp/` (a blob being written, a layer being unpacked),
/// held by a `flock` on `<name>.lock` for as long as it lives. Dropping it removes both.
/// [`sweep_tmp`] removes only entries whose lock nobody holds: what a killed process
/// left, never what a live one is writing.
pub(crate) struct TempEntry {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: Lock,
    keep: bool,
}

impl TempEntry {
    pub(crate) fn new(tmp: &Path, prefix: &str) -> Result<TempEntry> {
        let name = temp_name(prefix);
        let lock_path = tmp.join(format!("{name}.lock"));
        // The lock exists and is held before the entry does.
        let l = lock(&lock_path, LockMode::Exclusive)?;
        Ok(TempEntry { path: tmp.join(name), lock_path, _lock: l, keep: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The entry was renamed away: only the lock file is left to remove.
    pub(crate) fn consumed(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Remove what killed processes left under `tmp/`: each entry whose lock can be taken.
/// Returns the bytes freed.
pub(crate) fn sweep_tmp(tmp: &Path) -> Result<u64> {
    let mut freed = 0;
    let rd = fs::read_dir(tmp).map_err(|e| ImageError::io("read", tmp, e))?;
    for e in rd {
        let e = e.map_err(|e| ImageError::io("read", tmp, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".lock") || name.starts_with(".tmp") {
            continue;
        }
        let lock_path = tmp.join(format!("{name}.lock"));
        if let Some(_held) = try_lock(&lock_path, LockMode::Exclusive)? {
            freed += remove_tree(&e.path())?;
            let _ = fs::remove_file(&lock_path);
            tracing::info!(entry = name, "removed what an interrupted operation left");
        }
    }
    // Lock files whose entry is gone (the holder died after removing it).
    for e in fs::read_dir(tmp).map_err(|e| ImageError::io("read", tmp, e))? {
        let e = e.map_err(|e| ImageError::io("read", tmp, e))?;
        let name = e.file_name();
        let Some(entry) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else { continue };
        if !tmp.join(entry).exists()
            && let Some(_held) = try_lock(&e.path(), LockMode::Exclusive)?
        {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(freed)
}
