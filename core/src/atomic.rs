//! One way to replace a file atomically: readers of its name see the old content or the
//! new, never a part, whatever happens to the writer.
//!
//! [`AtomicWrite::write`] opens the file's directory once and works on that descriptor:
//! a fresh temporary name beside the file (`O_CREAT|O_EXCL|O_NOFOLLOW`, the mode set
//! with `fchmod`, whatever the umask), the content, `fsync`, `renameat` over the name,
//! `fsync` of the directory. A writer that dies before the rename leaves the old file
//! (and at worst a stray `.<name>.*.tmp`); one that fails removes its temporary.
//! [`AtomicWrite::without_fsync`] skips both syncs, for a record whose loss to a crash
//! costs nothing (it is then read as missing and made again).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};
use rand::RngCore;

use crate::echo;

/// Why a file could not be replaced. Its old content, if any, is unchanged.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {} ({op}): {source}", echo::path(path))]
pub struct AtomicWriteError {
    /// The step that failed (`open the directory`, `create a temporary`, `write`,
    /// `sync`, `rename into place`, `sync the directory`).
    pub op: &'static str,
    /// The file that was to be replaced.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl From<AtomicWriteError> for io::Error {
    fn from(e: AtomicWriteError) -> Self {
        io::Error::new(e.source.kind(), e)
    }
}

/// How a file is replaced (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicWrite {
    mode: u32,
    durable: bool,
    no_replace: bool,
}

impl AtomicWrite {
    /// Files of `mode` (e.g. `0o600`), synced.
    pub const fn new(mode: u32) -> Self {
        AtomicWrite { mode, durable: true, no_replace: false }
    }

    /// Publish only if the name is free: the temporary is hard-linked to the name
    /// (`linkat`, which never replaces) and then unlinked. A name that exists fails
    /// with `ErrorKind::AlreadyExists` (op `publish`), the existing file untouched: a
    /// file made once by whichever process gets there first.
    pub const fn no_replace(self) -> Self {
        AtomicWrite { no_replace: true, ..self }
    }

    /// Without the two `fsync`s: still never a partial file under the name, but a
    /// crash of the machine may lose the new content (or the old).
    pub const fn without_fsync(self) -> Self {
        AtomicWrite { durable: false, ..self }
    }

    /// Replace `path` with `bytes`. Returns the new file, open, for a caller that
    /// wants its identity (`fstat`).
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<File, AtomicWriteError> {
        self.write_with(path, |f| f.write_all(bytes))
    }

    /// Replace `path` with what `fill` writes into the temporary file.
    pub fn write_with(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<File, AtomicWriteError> {
        let fail = |op, source| AtomicWriteError { op, path: path.to_path_buf(), source };
        let Some(name) = path.file_name() else {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "the path names no file");
            return Err(fail("name the file", e));
        };
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir: OwnedFd = nix::fcntl::open(dir_path, dir_flags, Mode::empty())
            .map_err(|e| fail("open the directory", e.into()))?;
        let (tmp, mut file) =
            self.create_temp(&dir, name).map_err(|e| fail("create a temporary", e))?;
        let written = (|| {
            // The umask may have narrowed the mode given at creation.
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                .map_err(|e| ("chmod", e))?;
            fill(&mut file).map_err(|e| ("write", e))?;
            if self.durable {
                file.sync_all().map_err(|e| ("sync", e))?;
            }
            if self.no_replace {
                let at = nix::fcntl::AtFlags::empty();
                linkat(&dir, tmp.as_os_str(), &dir, name, at).map_err(|e| ("publish", e.into()))?;
                // Published; the temporary name is only a second link to it now.
                let _ = unlinkat(&dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                Ok(())
            } else {
                renameat(&dir, tmp.as_os_str(), &dir, name)
                    .map_err(|e| ("rename into place", e.into()))
            }
        })();
        if let Err((op, e)) = written {
            let _ = unlinkat(&dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return Err(fail(op, e));
        }
        if self.durable {
            // The new name itself, durable: the directory's entry.
            nix::unistd::fsync(dir.as_fd()).map_err(|e| fail("sync the directory", e.into()))?;
        }
        Ok(file)
    }

    /// A fresh `.<name>.<pid>.<random>.tmp` in `dir`, created exclusively.
    fn create_temp(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<(OsString, File)> {
        // At most 128 bytes of the name, so the temporary's fits NAME_MAX (255).
        let stem = &name.as_bytes()[..name.len().min(128)];
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut rng = rand::rng();
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..8 {
            let mut tmp = b".".to_vec();
            tmp.extend_from_slice(stem);
            tmp.extend_from_slice(
                format!(".{}.{:016x}.tmp", std::process::id(), rng.next_u64()).as_bytes(),
            );
            let tmp = OsString::from_vec(tmp);
            match openat(dir, tmp.as_os_str(), flags, Mode::from_bits_truncate(self.mode & 0o7777))
            {
                Ok(fd) => return Ok((tmp, File::from(fd))),
                Err(nix::errno::Errno::EEXIST) => {
                    last = io::Error::from(io::ErrorKind::AlreadyExists)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests;
