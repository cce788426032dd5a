//! The per-start epoch of a box: 16 random bytes, written as 32 hex digits to
//! `<home>/boxes/<id>/abstract-epoch` (mode 0600, owned by the effective uid).
//!
//! Every start writes a fresh one (opening the box for a start, `Opening::Start`),
//! and so does a bind that finds its name taken. The epoch is an input of the name
//! derivation (see [`crate::name`]); it is not an address and not a secret (the home's
//! key is), but it lives in the 0700 box directory so that only the owner can change
//! it, and every process of the home reads the same one. A box without the file (never
//! started by a version that rotates) has no epoch and keeps its v1 names.
//!
//! Rotation replaces the file with the core's atomic writer (a private temporary, 0600,
//! synced and renamed over the old file), so readers see the old epoch or the new one,
//! never a partial file. Starts of one box are serialised by the runtime.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use boxsock_core::BindingError;
use boxsock_core::atomic::AtomicWrite;
use rand::RngCore;

use crate::name::{EPOCH_LEN, hex};

/// File name of the epoch inside the box directory.
pub const EPOCH_FILE: &str = "abstract-epoch";

/// A box's epoch.
pub type Epoch = [u8; EPOCH_LEN];

/// What identifies one version of the epoch file on disk: a rotation `rename`s a new
/// inode into place, so (device, inode, ctime) changes with every rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp { dev: m.dev(), ino: m.ino(), ctime: m.ctime(), ctime_nsec: m.ctime_nsec() }
    }
}

/// The stamp of the epoch file at `path` (one `lstat`), `None` if there is none.
pub fn stamp(path: &Path) -> Result<Option<Stamp>, BindingError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(Stamp::of(&m))),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            Ok(None)
        }
        Err(e) => Err(BindingError::io("stat epoch", path, e)),
    }
}

/// Read and validate the epoch at `path`: `Ok(None)` if the box has none.
pub fn load(path: &Path, owner: u32) -> Result<Option<(Epoch, Stamp)>, BindingError> {
    let insecure = |reason: String| BindingError::Insecure { path: path.to_path_buf(), reason };
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(insecure("it is a symlink; the epoch must be a regular file".into()));
        }
        Err(e) => return Err(BindingError::io("open epoch", path, e)),
    };
    let m = f.metadata().map_err(|e| BindingError::io("stat epoch", path, e))?;
    if !m.file_type().is_file() {
        return Err(insecure("it is not a regular file".into()));
    }
    if m.uid() != owner {
        return Err(insecure(format!("it is owned by uid {}, not by uid {owner}", m.uid())));
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(insecure(format!(
            "its mode is {mode:04o}, which lets group or others read or change it; it must be 0600"
        )));
    }
    if m.len() != 2 * EPOCH_LEN as u64 {
        return Err(insecure(format!("it is {} bytes long, not {}", m.len(), 2 * EPOCH_LEN)));
    }
    let mut text = [0u8; 2 * EPOCH_LEN];
    f.read_exact(&mut text).map_err(|e| BindingError::io("read epoch", path, e))?;
    let epoch = parse(&text).ok_or_else(|| {
        insecure(format!("it does not hold {} lower-case hex digits", 2 * EPOCH_LEN))
    })?;
    Ok(Some((epoch, Stamp::of(&m))))
}

fn parse(text: &[u8; 2 * EPOCH_LEN]) -> Option<Epoch> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; EPOCH_LEN];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// Write a fresh random epoch to `path` (the box directory must exist) and return it
/// with the stamp of the file now in place.
pub fn rotate(path: &Path) -> Result<(Epoch, Stamp), BindingError> {
    let mut epoch = [0u8; EPOCH_LEN];
    rand::rng().fill_bytes(&mut epoch);
    // Synced, file and directory: a crash never leaves a torn epoch under the name.
    let file = AtomicWrite::new(0o600)
        .write(path, &hex(&epoch))
        .map_err(|e| BindingError::io("publish epoch", path, e.source))?;
    // The stamp of the file now at `path`, from its descriptor (rename changed its ctime).
    let m = file.metadata().map_err(|e| BindingError::io("stat epoch", path, e))?;
    let stamp = Stamp::of(&m);
    Ok((epoch, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_load_round_trip_and_every_rotation_changes_epoch_and_stamp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(EPOCH_FILE);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(load(&p, me).unwrap(), None);
        assert_eq!(stamp(&p).unwrap(), None);
        let (e1, s1) = rotate(&p).unwrap();
        assert_eq!(load(&p, me).unwrap(), Some((e1, s1)));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let (e2, s2) = rotate(&p).unwrap();
        assert_ne!(e1, e2);
        assert_ne!(s1, s2);
        assert_eq!(stamp(&p).unwrap(), Some(s2));
        // Nothing but the epoch is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_or_exposed_epoch_is_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(EPOCH_FILE);
        let me = nix::unistd::geteuid().as_raw();
        rotate(&p).unwrap();
        std::fs::set_permissions(
            &p,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
        )
        .unwrap();
        let e = load(&p, me).unwrap_err();
        assert!(
            matches!(&e, BindingError::Insecure { reason, .. } if reason.contains("0644")),
            "{e}"
        );
        std::fs::set_permissions(
            &p,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(&p, "Z".repeat(32)).unwrap();
        let e = load(&p, me).unwrap_err();
        assert!(
            matches!(&e, BindingError::Insecure { reason, .. } if reason.contains("hex")),
            "{e}"
        );
        std::fs::write(&p, "00").unwrap();
        let e = load(&p, me).unwrap_err();
        assert!(
            matches!(&e, BindingError::Insecure { reason, .. } if reason.contains("2 bytes")),
            "{e}"
        );
        assert!(e.to_string().contains(EPOCH_FILE), "{e}");
    }
}
