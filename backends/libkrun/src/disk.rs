//! The box's writable disk (decision 0023): `<box>/disk.ext4`, a sparse raw image
//! formatted ext4 on the host with `mkfs.ext4`, attached with `krun_add_disk`; the agent
//! mounts it and keeps the overlay's upper and work directories on it, so what a box
//! writes survives `stop`/`start` and a killed VMM (the ext4 journal), and goes with the
//! box directory at `rm`.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use boxsock_core::settings::ByteSize;

/// The image's file name in the box directory.
pub const FILE: &str = "disk.ext4";
/// The ext4 label the agent finds the disk by (`--upper-disk LABEL`), and libkrun's
/// block id (the virtio-blk serial).
pub const LABEL: &str = "boxsock-upper";
/// The size of a box's disk without `--disk-size`: 8 GiB, sparse. The image costs only
/// what the box writes (about 4 MiB of ext4 metadata at create), so the default can be
/// generous: room for a package manager's work in a box, under a typical free host disk.
pub const DEFAULT_SIZE: ByteSize = ByteSize::gib(8);
/// The smallest disk: ext4 with its journal needs a few MiB; 32 MiB leaves room to write.
pub const MIN_SIZE: ByteSize = ByteSize::mib(32);
/// The largest disk: 16 TiB, the largest file ext4 (4 KiB blocks) holds on the host.
pub const MAX_SIZE: ByteSize = ByteSize(16 << 40);
/// The formatter, found on `PATH` (e2fsprogs).
pub const MKFS: &str = "mkfs.ext4";

/// Why the disk could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A size outside [`MIN_SIZE`]..=[`MAX_SIZE`].
    #[error(
        "disk size {size} ({} bytes) is out of range: expected {MIN_SIZE} to {MAX_SIZE}",
        size.bytes()
    )]
    Size {
        /// The size asked for.
        size: ByteSize,
    },
    /// A file operation failed.
    #[error("disk image {}: {what}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `mkfs.ext4` could not run or failed.
    #[error(
        "disk image {}: {MKFS} failed: {reason} (install e2fsprogs)",
        boxsock_core::echo::path(path)
    )]
    Mkfs {
        /// The file.
        path: PathBuf,
        /// Its exit status and stderr, or why it did not run.
        reason: String,
    },
}

/// Check a size against [`MIN_SIZE`]..=[`MAX_SIZE`].
pub fn check_size(size: ByteSize) -> Result<(), DiskError> {
    if size.bytes() < MIN_SIZE.bytes() || size.bytes() > MAX_SIZE.bytes() {
        return Err(DiskError::Size { size });
    }
    Ok(())
}

/// The image of the box whose directory is `box_dir`.
pub fn path_in(box_dir: &Path) -> PathBuf {
    box_dir.join(FILE)
}

/// Make `path` a `size`-byte ext4 image labelled [`LABEL`] without writing its size:
/// a sparse file (`set_len`) formatted by `mkfs.ext4` with `lazy_journal_init` (a
/// sparse journal reads as zeros) and its default discard, which on a regular file
/// punches holes and marks the inode tables zeroed, so neither mkfs nor the guest
/// kernel writes them. About 4 MiB is allocated for an 8 GiB disk. Built as
/// `<path>.tmp` and renamed into place once formatted and synced: an image that exists
/// is whole. An existing image is kept as it is.
pub fn ensure(path: &Path, size: ByteSize) -> Result<bool, DiskError> {
    check_size(size)?;
    if path.exists() {
        return Ok(false);
    }
    let io = |what| {
        let path = path.to_path_buf();
        move |source| DiskError::Io { path, what, source }
    };
    let tmp = path.with_extension("ext4.tmp");
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create"))?;
    file.set_len(size.bytes()).map_err(io("set its size"))?;
    let out = Command::new(MKFS)
        .args(["-q", "-F", "-L", LABEL, "-m", "0", "-E", "lazy_journal_init=1"])
        .arg(&tmp)
        .stdin(std::process::Stdio::null())
        .output();
    let fail = |reason: String| {
        let _ = std::fs::remove_file(&tmp);
        DiskError::Mkfs { path: path.to_path_buf(), reason }
    };
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            return Err(fail(format!("{}: {}", o.status, boxsock_core::echo::echo(err.trim()))));
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    file.sync_all().map_err(io("sync"))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place"))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    tracing::debug!(path = %boxsock_core::echo::path(path), size = size.bytes(), "disk image made");
    Ok(true)
}

/// How much of a disk image is in use, read from the host file: its size and the bytes
/// the host has allocated to it (`st_blocks` × 512). Allocation is an upper bound of
/// what the box holds: ext4 metadata counts, and space the box frees is not given back
/// to the host (no discard), so it only grows until `rm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// The disk's size in bytes.
    pub size: u64,
    /// Bytes allocated to the image on the host.
    pub allocated: u64,
}

/// The usage of the image at `path`, or `None` when there is none.
pub fn usage(path: &Path) -> Option<Usage> {
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| Usage { size: m.len(), allocated: m.blocks() * 512 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_range_name_the_size_and_the_limits() {
        let e = check_size(ByteSize::mib(16)).unwrap_err().to_string();
        assert!(e.contains("16777216"), "{e}");
        assert!(e.contains(&MIN_SIZE.to_string()) && e.contains(&MAX_SIZE.to_string()), "{e}");
        assert!(check_size(ByteSize(MAX_SIZE.bytes() + 1)).is_err());
        check_size(MIN_SIZE).unwrap();
        check_size(DEFAULT_SIZE).unwrap();
    }
}
