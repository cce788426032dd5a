//! `ImageStore`: the directory that holds blobs, unpacked layers and image records.
//!
//! ```text
//! <store>/blobs/sha256/<hex>          content-addressed blobs, verified, whole
//! <store>/layers/sha256/<diff>/root/  one unpacked layer (0555 wrapper; never written again)
//! <store>/tmp/                        work in progress, each entry held by a flock
//! <store>/locks/                      per-layer and per-blob locks (one unpack, one download)
//! <store>/images.json                 image records of [`JsonRecords`] (the library alone)
//! <store>/store.lock                  shared by additions, exclusive for prune
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blobs::{Blobs, Expect, MAX_DOCUMENT};
use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::fsutil::{self, LockMode, TempEntry};
use crate::index::{ImageRecord, JsonRecords, LayerRecord, RecordList, Records};
use crate::manifest::{self, Document};
use crate::unpack::{self, UnpackLimits, UnpackReport};

/// An image's id: the digest of its manifest.
pub type ImageId = Digest;

/// A step of adding an image, reported per layer (the CLI draws progress bars from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of a layer blob arrived (`done` of `total`).
    Download {
        /// The blob.
        blob: Digest,
        /// Bytes so far.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// The blob was already in the store: nothing downloaded.
    BlobPresent {
        /// The blob.
        blob: Digest,
    },
    /// A layer was unpacked.
    Unpacked {
        /// The layer's diff id.
        diff_id: Digest,
        /// Decompressed bytes.
        bytes: u64,
    },
    /// The layer was already unpacked: nothing done.
    LayerPresent {
        /// The layer's diff id.
        diff_id: Digest,
    },
}

/// A progress callback.
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Sync);

/// What adding an image did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddReport {
    /// The image as recorded.
    pub image: ImageRecord,
    /// Layers unpacked by this call (diff ids), and their decompressed bytes.
    pub unpacked: Vec<(Digest, u64)>,
    /// Notes of the unpacks (skipped device nodes…).
    pub notes: Vec<String>,
}

impl AddReport {
    /// Decompressed bytes unpacked by this call.
    pub fn bytes_unpacked(&self) -> u64 {
        self.unpacked.iter().map(|(_, b)| b).sum()
    }
}

/// What `prune` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Unpacked layers removed.
    pub layers: usize,
    /// Bytes freed on disk (allocated blocks).
    pub bytes_freed: u64,
}

/// An image and its parsed config.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    /// The record.
    pub record: ImageRecord,
    /// What it runs.
    pub config: ImageConfig,
    /// The config document, parsed.
    pub oci_config: oci_spec::image::ImageConfiguration,
}

/// What `remove` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// One name was removed; the image stays under its other names.
    Untagged(String),
    /// The image record was removed (its blobs and layers go at the next prune).
    Deleted(ImageId),
}

/// The image store of one directory.
#[derive(Clone, Debug)]
pub struct ImageStore {
    dir: PathBuf,
    pub(crate) blobs: Blobs,
    limits: UnpackLimits,
    records: Arc<dyn Records>,
}

impl ImageStore {
    /// Open (creating if missing) the store in `dir`, its records in
    /// `<dir>/images.json` ([`JsonRecords`]), and remove what interrupted operations
    /// left in its `tmp/`.
    pub fn open(dir: impl AsRef<Path>) -> Result<ImageStore> {
        let records = Arc::new(JsonRecords::new(dir.as_ref()));
        Self::open_in(dir, records)
    }

    /// Open the store in `dir` with its records kept by `records` (boxsock's homes: the
    /// runtime's SQLite store). Records an `images.json` there holds (a store the
    /// library kept on its own) are moved into `records` first, and the file is renamed
    /// `images.json.migrated`; an image or name `records` has already is kept as it is.
    pub fn open_with_records(
        dir: impl AsRef<Path>,
        records: Arc<dyn Records>,
    ) -> Result<ImageStore> {
        let store = Self::open_in(dir, records)?;
        store.migrate_legacy()?;
        Ok(store)
    }

    fn migrate_legacy(&self) -> Result<()> {
        let Some(old) = crate::index::read_legacy(&self.dir)? else { return Ok(()) };
        let _l = fsutil::lock(&self.dir.join("index.lock"), LockMode::Exclusive)?;
        // Re-read under the lock: another process may have moved them meanwhile.
        drop(old);
        let Some(old) = crate::index::read_legacy(&self.dir)? else { return Ok(()) };
        let count = old.len();
        self.records.update(&mut |images, _| {
            let taken: std::collections::HashSet<String> =
                images.iter().flat_map(|i| i.names.clone()).collect();
            for mut rec in old.clone() {
                if images.iter().any(|i| i.id == rec.id) {
                    continue;
                }
                rec.names.retain(|n| !taken.contains(n));
                images.push(rec);
            }
            Ok(())
        })?;
        let from = self.dir.join("images.json");
        let to = self.dir.join("images.json.migrated");
        fs::rename(&from, &to).map_err(|e| ImageError::io("rename", &from, e))?;
        fsutil::sync_dir(&self.dir)?;
        tracing::info!(images = count, from = %from.display(), "image records moved from images.json");
        Ok(())
    }

    /// Open the store in `dir` for reading only (`images`, `image inspect`, `image
    /// save`): nothing is created, swept or migrated, so a home a read-only verb looks
    /// at is left byte for byte as it was. Only the reading methods may be used on it
    /// (`list_all`, `list`, `resolve`, `inspect`, `layers`, `save`); records that an
    /// `images.json` still holds are not read until a writing open moves them.
    pub fn open_read_only(dir: impl AsRef<Path>, records: Arc<dyn Records>) -> ImageStore {
        let dir = dir.as_ref().to_path_buf();
        ImageStore {
            blobs: Blobs::new(dir.join("blobs/sha256"), dir.join("tmp")),
            dir,
            limits: UnpackLimits::default(),
            records,
        }
    }

    fn open_in(dir: impl AsRef<Path>, records: Arc<dyn Records>) -> Result<ImageStore> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["blobs/sha256", "layers/sha256", "tmp", "locks"] {
            fsutil::ensure_dir(&dir.join(sub))?;
        }
        let store = ImageStore {
            blobs: Blobs::new(dir.join("blobs/sha256"), dir.join("tmp")),
            dir,
            limits: UnpackLimits::default(),
            records,
        };
        fsutil::sweep_tmp(&store.tmp())?;
        Ok(store)
    }

    /// Set the limits every layer unpack is held to.
    pub fn with_limits(mut self, limits: UnpackLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(crate) fn locks(&self) -> PathBuf {
        self.dir.join("locks")
    }

    /// Held (shared) by every addition; prune takes it exclusively, so that it never
    /// removes a blob an addition has stored but not yet recorded.
    pub(crate) fn adding(&self) -> Result<fsutil::Lock> {
        fsutil::lock(&self.dir.join("store.lock"), LockMode::Shared)
    }

    /// The path of a blob (present or not).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.path(d)
    }

    /// The directory an unpacked layer has (present or not).
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("root")
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers/sha256").join(diff_id.hex())
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.records.read()?.images)
    }

    /// Every image, and the stored records that could not be read (reported apart).
    pub fn list_all(&self) -> Result<RecordList> {
        self.records.read()
    }

    /// Find an image by name (normalised), full id, or unique id prefix (at least 4 hex
    /// digits, with or without `sha256:`).
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord> {
        let images = self.list()?;
        find(&images, reference).cloned()
    }

    /// An image with its config parsed.
    pub fn inspect(&self, reference: &str) -> Result<ImageInfo> {
        let record = self.resolve(reference)?;
        let oci_config = manifest::parse_config(&self.blobs.read(&record.config)?)?;
        Ok(ImageInfo { config: ImageConfig::from_oci(&oci_config), oci_config, record })
    }

    /// The unpacked layer directories of an image, bottom first: what a backend stacks
    /// read-only. Each must stay unchanged (they are shared by every image and box).
    pub fn layers(&self, reference: &str) -> Result<Vec<PathBuf>> {
        let record = self.resolve(reference)?;
        record
            .layers
            .iter()
            .map(|l| {
                let p = self.layer_path(&l.diff_id);
                if p.is_dir() {
                    Ok(p)
                } else {
                    Err(ImageError::io(
                        "find unpacked layer",
                        p,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ))
                }
            })
            .collect()
    }

    /// Remove a name, or (given an id, or the last name) the image record, refused
    /// while boxes are pinned to the image ([`ImageError::InUse`] names them). Blobs
    /// and layers are freed by [`ImageStore::prune`].
    pub fn remove(&self, reference: &str) -> Result<Removed> {
        self.remove_with(reference, false)
    }

    /// [`ImageStore::remove`]; with `force`, also an image boxes are pinned to (their
    /// layers stay until no box is pinned to them). The check and the removal are one
    /// transaction of the records.
    pub fn remove_with(&self, reference: &str, force: bool) -> Result<Removed> {
        let mut out = None;
        self.records.update(&mut |images, users| {
            let rec = find(images, reference)?.clone();
            let by_name = normalise(reference);
            if let Some(name) = by_name.filter(|n| rec.names.contains(n))
                && rec.names.len() > 1
            {
                let r = images.iter_mut().find(|i| i.id == rec.id).expect("found above");
                r.names.retain(|n| *n != name);
                out = Some(Removed::Untagged(name));
                return Ok(());
            }
            let using = users(&rec.id)?;
            if !using.is_empty() && !force {
                return Err(ImageError::InUse {
                    image: boxsock_core::echo::echo(reference).to_string(),
                    count: using.len(),
                    boxes: using
                        .iter()
                        .take(16)
                        .map(|b| boxsock_core::echo::echo(b).to_string())
                        .collect(),
                });
            }
            images.retain(|i| i.id != rec.id);
            out = Some(Removed::Deleted(rec.id));
            Ok(())
        })?;
        Ok(out.expect("set by a successful update"))
    }

    /// Remove every blob and layer no image references, and what interrupted operations
    /// left; reports the bytes freed.
    pub fn prune(&self) -> Result<PruneReport> {
        let _excl = fsutil::lock(&self.dir.join("store.lock"), LockMode::Exclusive)?;
        let images = self.list()?;
        // By hex: what boxes pin and bad records mention come as hex strings.
        let pinned = self.records.pinned()?;
        let mut keep_blobs: std::collections::HashSet<String> = pinned.clone();
        let mut keep_layers = pinned.clone();
        for i in &images {
            keep_blobs.insert(i.id.hex().to_owned());
            keep_blobs.insert(i.config.hex().to_owned());
            for l in &i.layers {
                keep_blobs.insert(l.blob.hex().to_owned());
                keep_layers.insert(l.diff_id.hex().to_owned());
            }
        }
        // A manifest a box is pinned to keeps its config and layer blobs while it is
        // here (the image record may be gone: `rmi -f`).
        for hex in &pinned {
            let Ok(d) = format!("sha256:{hex}").parse::<Digest>() else { continue };
            if !self.blobs.has(&d) {
                continue;
            }
            if let Ok(bytes) = self.blobs.read(&d)
                && let Ok(Document::Manifest(m)) = manifest::parse_document(&bytes, None)
            {
                if let Ok(c) = manifest::descriptor_digest(m.config()) {
                    keep_blobs.insert(c.hex().to_owned());
                }
                for l in m.layers() {
                    if let Ok(b) = manifest::descriptor_digest(l) {
                        keep_blobs.insert(b.hex().to_owned());
                    }
                }
            }
        }
        let mut report =
            PruneReport { bytes_freed: fsutil::sweep_tmp(&self.tmp())?, ..Default::default() };
        for b in self.blobs.all()? {
            if !keep_blobs.contains(b.hex()) {
                report.bytes_freed += self.blobs.remove(&b)?;
                report.blobs += 1;
            }
        }
        // Partial downloads whose blob lock is free (a pull would resume them; prune
        // is asked to free space).
        let partial = self.dir.join("partial");
        if let Ok(rd) = fs::read_dir(&partial) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let lock = self.locks().join(format!("blob-{name}.lock"));
                if let Some(_held) = fsutil::try_lock(&lock, LockMode::Exclusive)? {
                    report.bytes_freed += fsutil::remove_tree(&e.path())?;
                }
            }
        }
        // Image roots first (their files are links to layer files, freed with the
        // last): kept for a listed image and for a manifest a box is pinned to.
        let roots = self.dir.join("roots");
        if let Ok(rd) = fs::read_dir(&roots) {
            let ids: std::collections::HashSet<&str> = images.iter().map(|i| i.id.hex()).collect();
            for e in rd.flatten() {
                let keep =
                    e.file_name().to_str().is_some_and(|n| ids.contains(n) || pinned.contains(n));
                if !keep {
                    report.bytes_freed += fsutil::remove_tree(&e.path())?;
                }
            }
        }
        let layers = self.dir.join("layers/sha256");
        for e in fs::read_dir(&layers).map_err(|e| ImageError::io("read", &layers, e))? {
            let e = e.map_err(|e| ImageError::io("read", &layers, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep_layers.contains(&name) {
                report.bytes_freed += fsutil::remove_tree(&e.path())?;
                report.layers += 1;
            }
        }
        tracing::info!(
            blobs = report.blobs,
            layers = report.layers,
            bytes = report.bytes_freed,
            "pruned"
        );
        Ok(report)
    }

    /// Store a blob from `src`, verified against `digest` and `size`.
    pub(crate) fn put_blob(
        &self,
        src: impl std::io::Read,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<u64> {
        if self.blobs.has(digest) {
            return Ok(0);
        }
        let (_, n) =
            self.blobs.ingest(src, Expect { digest: Some(digest), size, limit: u64::MAX })?;
        Ok(n)
    }

    /// Record the image whose manifest blob `manifest` is in the store (with its config
    /// and layer blobs), unpacking every layer not yet unpacked, under `names` (moved
    /// from any other image that had them).
    pub(crate) fn add_image(
        &self,
        manifest: &Digest,
        names: &[String],
        progress: Option<ProgressFn<'_>>,
    ) -> Result<AddReport> {
        let bytes = self.blobs.read(manifest)?;
        let m = match manifest::parse_document(&bytes, None)? {
            Document::Manifest(m) => m,
            Document::Index(_) => {
                return Err(ImageError::WrongMediaType {
                    what: "manifest",
                    found: "an index".into(),
                    expected: "an image manifest (an index is resolved to one first)",
                });
            }
        };
        let config_digest = manifest::descriptor_digest(m.config())?;
        let config_bytes = self.blobs.read(&config_digest)?;
        let config = manifest::parse_config(&config_bytes)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != m.layers().len() {
            return Err(ImageError::Parse {
                what: format!("image config {config_digest}"),
                reason: format!("{} diff ids for {} layers", diff_ids.len(), m.layers().len()),
            });
        }
        let mut layers = Vec::new();
        let mut report_unpacked = Vec::new();
        let mut notes = Vec::new();
        for (desc, diff) in m.layers().iter().zip(diff_ids) {
            let media_type = desc.media_type().to_string();
            manifest::check_layer_type(&media_type)?;
            let blob = manifest::descriptor_digest(desc)?;
            let diff_id: Digest = diff.parse()?;
            let size = desc.size();
            if let Some(r) = self.ensure_layer(&blob, &diff_id, progress)? {
                report_unpacked.push((diff_id.clone(), r.bytes));
                notes.extend(r.notes);
            }
            layers.push(LayerRecord { blob, diff_id, media_type, size });
        }
        let platform = format!("{}/{}", config.os(), config.architecture());
        let added = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = ImageRecord {
            id: manifest.clone(),
            names: names.to_vec(),
            config: config_digest,
            layers,
            platform,
            added,
        };
        let mut stored = None;
        self.records.update(&mut |images, _| {
            for other in images.iter_mut() {
                other.names.retain(|n| !names.contains(n));
            }
            // An image left without a name stays, addressable by id (docker's dangling).
            stored = Some(match images.iter_mut().find(|i| i.id == record.id) {
                Some(existing) => {
                    for n in names {
                        if !existing.names.contains(n) {
                            existing.names.push(n.clone());
                        }
                    }
                    existing.clone()
                }
                None => {
                    images.push(record.clone());
                    record.clone()
                }
            });
            Ok(())
        })?;
        let record = stored.expect("set by a successful update");
        tracing::info!(image = %record.id, names = ?record.names, "image added");
        Ok(AddReport { image: record, unpacked: report_unpacked, notes })
    }

    /// Unpack the layer blob `blob` (in the store) as `diff_id`, unless it is unpacked
    /// already (then `None`: nothing was read). One process unpacks a layer at a time;
    /// the others wait and find it done.
    pub(crate) fn ensure_layer(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Option<UnpackReport>> {
        let dest = self.layer_dir(diff_id);
        let present = || fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir());
        if !present() {
            let _l = fsutil::lock(
                &self.locks().join(format!("layer-{}.lock", diff_id.hex())),
                LockMode::Exclusive,
            )?;
            if !present() {
                let report = self.unpack_new(blob, diff_id, &dest)?;
                if let Some(p) = progress {
                    p(&Progress::Unpacked { diff_id: diff_id.clone(), bytes: report.bytes });
                }
                return Ok(Some(report));
            }
        }
        if let Some(p) = progress {
            p(&Progress::LayerPresent { diff_id: diff_id.clone() });
        }
        Ok(None)
    }

    fn unpack_new(&self, blob: &Digest, diff_id: &Digest, dest: &Path) -> Result<UnpackReport> {
        let mut tmp = TempEntry::new(&self.tmp(), "layer")?;
        let wrapper = tmp.path().to_path_buf();
        let root = wrapper.join("root");
        fs::create_dir(&wrapper).map_err(|e| ImageError::io("create", &wrapper, e))?;
        fs::create_dir(&root).map_err(|e| ImageError::io("create", &root, e))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .map_err(|e| ImageError::io("chmod", &root, e))?;
        let src = self.blobs.open(blob)?;
        crate::crash::point("unpack-start");
        let out = unpack::unpack(src, blob, &root, self.limits)?;
        if out.blob_digest != *blob {
            return Err(ImageError::DigestMismatch {
                what: format!("stored layer blob {blob}"),
                expected: blob.clone(),
                actual: out.blob_digest,
            });
        }
        if out.diff_id != *diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("diff id of layer {blob}"),
                expected: diff_id.clone(),
                actual: out.diff_id,
            });
        }
        // Everything the unpack wrote reaches the disk before the layer gets its name.
        let dirfd = fs::File::open(&wrapper).map_err(|e| ImageError::io("open", &wrapper, e))?;
        nix::unistd::syncfs(&dirfd).map_err(|e| ImageError::io("syncfs", &wrapper, e.into()))?;
        drop(dirfd);
        crate::crash::point("unpack-before-rename");
        fs::rename(&wrapper, dest).map_err(|e| ImageError::io("rename into place", dest, e))?;
        tmp.consumed();
        fsutil::sync_dir(dest.parent().expect("layers/sha256"))?;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o555))
            .map_err(|e| ImageError::io("chmod", dest, e))?;
        tracing::info!(
            diff_id = %diff_id,
            entries = out.report.entries,
            bytes = out.report.bytes,
            "layer unpacked"
        );
        Ok(out.report)
    }

    /// Read a blob of at most [`MAX_DOCUMENT`] bytes, verified.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        self.blobs.read(d)
    }

    /// Ingest a whole document and return its digest (used for synthesised manifests).
    pub(crate) fn put_document(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.blobs.has(&d) {
            self.blobs.ingest(
                bytes,
                Expect { digest: Some(&d), size: Some(bytes.len() as u64), limit: MAX_DOCUMENT },
            )?;
        }
        Ok(d)
    }
}

/// A reference in the form names are recorded in, when it parses as one.
fn normalise(reference: &str) -> Option<String> {
    reference.parse::<crate::Reference>().ok().filter(|r| r.digest.is_none()).map(|r| r.name())
}

fn find<'i>(images: &'i [ImageRecord], reference: &str) -> Result<&'i ImageRecord> {
    if let Some(name) = normalise(reference)
        && let Some(i) = images.iter().find(|i| i.names.contains(&name))
    {
        return Ok(i);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let not_found =
        || ImageError::NotFound { reference: boxsock_core::echo::echo(reference).to_string() };
    if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let mut matches = images.iter().filter(|i| i.id.hex().starts_with(hex));
    match (matches.next(), matches.next()) {
        (Some(i), None) => Ok(i),
        (None, _) => Err(not_found()),
        (Some(_), Some(_)) => Err(ImageError::Ambiguous {
            prefix: boxsock_core::echo::echo(reference).to_string(),
            count: 2 + matches.count(),
        }),
    }
}
