//! Image records: the [`Records`] trait the store keeps them through, and
//! [`JsonRecords`], a file of them for the library used on its own.
//!
//! boxsock's homes keep image records in the runtime's SQLite store, beside the boxes
//! that pin images (`boxsock-runtime` implements [`Records`]; decision 0019): there
//! "is this image in use" and the removal are one transaction. [`JsonRecords`]
//! (`<store>/images.json`, replaced atomically under `<store>/index.lock`) has no
//! boxes: nothing is ever in use, nothing is pinned. [`read_legacy`] reads such a file
//! so that a store that had one can move its records into the SQLite store.

use std::collections::HashSet;
use std::fmt;
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

impl ImageRecord {
    /// The bytes of its layer blobs as distributed (compressed).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A stored image record that could not be read: reported, never fatal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// Its id as stored (may itself be what is wrong).
    pub id: String,
    /// What is wrong with it.
    pub error: String,
}

/// Every record that could be read, and those that could not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordList {
    /// The good records.
    pub images: Vec<ImageRecord>,
    /// The bad ones.
    pub bad: Vec<BadRecord>,
}

/// The boxes pinned to an image (`users(id)`), asked inside [`Records::update`]'s
/// transaction: their names or ids, for the message that refuses a removal.
pub type Users<'a> = &'a dyn Fn(&Digest) -> Result<Vec<String>>;

/// A change to the records, run inside [`Records::update`].
pub type Change<'a> = &'a mut dyn FnMut(&mut Vec<ImageRecord>, Users<'_>) -> Result<()>;

/// Where an [`ImageStore`](crate::ImageStore) keeps its image records.
pub trait Records: Send + Sync + fmt::Debug {
    /// Every record (bad ones reported apart).
    fn read(&self) -> Result<RecordList>;
    /// Read the good records, let `change` edit them, write what changed: all in one
    /// transaction, so that `users` (boxes pinned to an image, asked inside it) cannot
    /// change between a check and the write. Bad records are left as they are.
    fn update(&self, change: Change<'_>) -> Result<()>;
    /// The hex digests that something other than the good records keeps alive (the
    /// manifests and layer diff ids boxes are pinned to; every digest a bad record
    /// mentions): `prune` never frees them.
    fn pinned(&self) -> Result<HashSet<String>>;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// Image records in `<store>/images.json`, for the library used without the runtime.
#[derive(Debug)]
pub struct JsonRecords {
    path: PathBuf,
    lock: PathBuf,
}

impl JsonRecords {
    /// The records of the store directory `dir`.
    pub fn new(dir: &Path) -> JsonRecords {
        JsonRecords { path: dir.join("images.json"), lock: dir.join("index.lock") }
    }

    fn read_file(&self) -> Result<IndexFile> {
        Ok(read_file(&self.path)?
            .unwrap_or(IndexFile { version: INDEX_VERSION, images: Vec::new() }))
    }
}

fn read_file(path: &Path) -> Result<Option<IndexFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read", path, e)),
    };
    let file: IndexFile = serde_json::from_slice(&bytes).map_err(|e| ImageError::CorruptIndex {
        path: path.to_path_buf(),
        reason: boxsock_core::echo::echo(&e.to_string()).to_string(),
    })?;
    if file.version != INDEX_VERSION {
        return Err(ImageError::CorruptIndex {
            path: path.to_path_buf(),
            reason: format!("version {} (this boxsock reads {INDEX_VERSION})", file.version),
        });
    }
    Ok(Some(file))
}

/// The records of a store's `images.json`, if it has one (the file [`JsonRecords`]
/// keeps), for moving them into another [`Records`].
pub fn read_legacy(dir: &Path) -> Result<Option<Vec<ImageRecord>>> {
    Ok(read_file(&dir.join("images.json"))?.map(|f| f.images))
}

impl Records for JsonRecords {
    fn read(&self) -> Result<RecordList> {
        // No lock: the file is only ever replaced whole.
        Ok(RecordList { images: self.read_file()?.images, bad: Vec::new() })
    }

    fn update(&self, change: Change<'_>) -> Result<()> {
        let _l = fsutil::lock(&self.lock, LockMode::Exclusive)?;
        let mut file = self.read_file()?;
        change(&mut file.images, &|_| Ok(Vec::new()))?;
        let bytes = serde_json::to_vec_pretty(&file).expect("the index serialises");
        fsutil::atomic_write(&self.path, &bytes)
    }

    fn pinned(&self) -> Result<HashSet<String>> {
        Ok(HashSet::new())
    }
}
