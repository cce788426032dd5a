//! The store's image records: `<store>/images.json`, one JSON document replaced
//! atomically (`fsutil::atomic_write`) under `<store>/index.lock`. A stand-in until the
//! runtime's SQLite store holds image records (issue 20's integration change moves them
//! there, with the box→image references that `rmi` checks).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::fsutil::{self, LockMode};

/// The version of the index format this code writes and reads.
pub const INDEX_VERSION: u32 = 1;

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob (compressed as distributed).
    pub blob: Digest,
    /// The digest of the uncompressed tar: the unpacked directory's key.
    pub diff_id: Digest,
    /// The descriptor's media type.
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image's id: its manifest's digest.
    pub id: Digest,
    /// The names it is listed under (`registry/repo:tag`), possibly none.
    pub names: Vec<String>,
    /// The config blob.
    pub config: Digest,
    /// The layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// `os/arch` of the image.
    pub platform: String,
    /// When it entered the store (seconds since the epoch).
    pub added: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IndexFile {
    pub version: u32,
    pub images: Vec<ImageRecord>,
}

pub(crate) struct Index {
    path: PathBuf,
    lock: PathBuf,
}

impl Index {
    pub(crate) fn new(dir: &Path) -> Index {
        Index { path: dir.join("images.json"), lock: dir.join("index.lock") }
    }

    /// Read the index (no lock: the file is only ever replaced whole).
    pub(crate) fn read(&self) -> Result<IndexFile> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IndexFile { version: INDEX_VERSION, images: Vec::new() });
            }
            Err(e) => return Err(ImageError::io("read", &self.path, e)),
        };
        let file: IndexFile =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::CorruptIndex {
                path: self.path.clone(),
                reason: boxsock_core::echo::echo(&e.to_string()).to_string(),
            })?;
        if file.version != INDEX_VERSION {
            return Err(ImageError::CorruptIndex {
                path: self.path.clone(),
                reason: format!("version {} (this boxsock reads {INDEX_VERSION})", file.version),
            });
        }
        Ok(file)
    }

    /// Read, change and write the index under its lock.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut IndexFile) -> Result<T>) -> Result<T> {
        let _l = fsutil::lock(&self.lock, LockMode::Exclusive)?;
        let mut file = self.read()?;
        let out = f(&mut file)?;
        let bytes = serde_json::to_vec_pretty(&file).expect("the index serialises");
        fsutil::atomic_write(&self.path, &bytes)?;
        Ok(out)
    }
}
