//! An image's root: its layers merged into one directory tree, OCI whiteouts applied,
//! every file a hard link to the file in its (shared, read-only) layer directory
//! (decision 0018).
//!
//! ```text
//! <store>/roots/<manifest hex>/root/   built once per image, renamed into place whole
//! ```
//!
//! A backend shows this one directory to a box, read-only, under the box's writable
//! layer, exactly as it shows a `--rootfs` directory: one share per box whatever the
//! number of layers (libkrun has 11 interrupt lines for every device of a guest on
//! x86_64, so one virtio-fs share per layer would cap images at a handful of layers),
//! and nothing to apply in the guest. Nothing is copied: each file is a new name of the
//! layer's inode. Nothing is written in a layer directory either (a link changes only
//! the inode's link count); what the merge creates is directories of its own.
//!
//! The merge, per directory, top layer first:
//!
//! - an entry comes from the topmost layer that has it; a directory merges with the
//!   same directory in the layers below, down to the first layer where the name is not
//!   a directory;
//! - `.wh.<name>` in a layer hides `<name>` in every layer below it (not in its own
//!   layer, as the OCI image spec says), and is itself never shown;
//! - `.wh..wh..opq` in a directory hides that directory's content in every layer
//!   below; the directory's own content (in its layer and above) stays.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::fsutil::{self, LockMode, TempEntry};
use crate::store::ImageStore;

/// The opaque-directory marker.
pub const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of a whiteout marker.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// What [`ImageStore::ensure_root`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootReport {
    /// The image's root (`<store>/roots/<hex>/root`).
    pub path: PathBuf,
    /// Whether this call built it (`false`: it existed).
    pub built: bool,
    /// Names linked to layer files (0 when it existed).
    pub links: u64,
    /// Directories made (0 when it existed).
    pub dirs: u64,
}

impl ImageStore {
    /// The root of the image with this manifest digest (present or not): the core's
    /// `image_root_in` rule, which backends use to find it.
    pub fn root_path(&self, manifest: &Digest) -> PathBuf {
        boxsock_core::layout::image_root_in(self.dir(), &manifest.to_string())
            .expect("a Digest is sha256:<64 hex digits>")
    }

    /// Build the image's root once (see the module documentation), from the unpacked
    /// layers `diff_ids` (bottom first, as the manifest lists them). A root that exists
    /// is complete: it is built in `tmp/` under a per-image lock and renamed into place.
    pub fn ensure_root(&self, manifest: &Digest, diff_ids: &[Digest]) -> Result<RootReport> {
        let path = self.root_path(manifest);
        let present = || fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let existing = || RootReport { path: path.clone(), built: false, links: 0, dirs: 0 };
        if present() {
            return Ok(existing());
        }
        let _adding = self.adding()?;
        let _l = fsutil::lock(
            &self.locks().join(format!("root-{}.lock", manifest.hex())),
            LockMode::Exclusive,
        )?;
        if present() {
            return Ok(existing());
        }
        let layers: Vec<PathBuf> = diff_ids
            .iter()
            .rev()
            .map(|d| {
                let p = self.layer_path(d);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => Ok(p),
                    Ok(_) => Err(ImageError::io(
                        "find unpacked layer",
                        p,
                        std::io::Error::from(std::io::ErrorKind::NotADirectory),
                    )),
                    Err(e) => Err(ImageError::io("find unpacked layer", p, e)),
                }
            })
            .collect::<Result<_>>()?;
        let roots = self.dir().join("roots");
        fsutil::ensure_dir(&roots)?;
        let mut tmp = TempEntry::new(&self.tmp(), "root")?;
        let wrapper = tmp.path().to_path_buf();
        fs::create_dir(&wrapper).map_err(|e| ImageError::io("create", &wrapper, e))?;
        let mut counts = (0u64, 0u64);
        merge(&layers, &wrapper.join("root"), &mut counts)?;
        let dirfd = fs::File::open(&wrapper).map_err(|e| ImageError::io("open", &wrapper, e))?;
        nix::unistd::syncfs(&dirfd).map_err(|e| ImageError::io("syncfs", &wrapper, e.into()))?;
        drop(dirfd);
        let dest = path.parent().expect("roots/<hex>/root").to_path_buf();
        fs::rename(&wrapper, &dest).map_err(|e| ImageError::io("rename into place", &dest, e))?;
        tmp.consumed();
        fsutil::sync_dir(&roots)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o555))
            .map_err(|e| ImageError::io("chmod", &dest, e))?;
        tracing::info!(
            manifest = %manifest,
            layers = diff_ids.len(),
            links = counts.0,
            dirs = counts.1,
            "image root built"
        );
        Ok(RootReport { path, built: true, links: counts.0, dirs: counts.1 })
    }
}

/// One name of a merged directory: where it comes from.
struct Source {
    /// The topmost layer's entry (whose kind and metadata the merged entry takes).
    top: PathBuf,
    /// For a directory: the same directory in this and lower layers, top first, down
    /// to the first layer where the name is not a directory.
    dirs: Vec<PathBuf>,
    /// No lower layer contributes any more (the topmost entry is not a directory, or a
    /// lower layer's entry under this name was not one).
    closed: bool,
}

/// Merge `sources` (the same directory in several layers, top first) into the new
/// directory `dest`. `counts`: (links, directories) made.
fn merge(sources: &[PathBuf], dest: &Path, counts: &mut (u64, u64)) -> Result<()> {
    let top = sources.first().expect("a merged directory has a topmost source");
    let meta = fs::symlink_metadata(top).map_err(|e| ImageError::io("stat", top, e))?;
    fs::create_dir(dest).map_err(|e| ImageError::io("create", dest, e))?;
    counts.1 += 1;
    let mut names: BTreeMap<OsString, Source> = BTreeMap::new();
    let mut hidden: HashSet<OsString> = HashSet::new();
    for src in sources {
        let mut whiteouts = Vec::new();
        let mut opaque = false;
        let rd = fs::read_dir(src).map_err(|e| ImageError::io("read", src, e))?;
        for e in rd {
            let e = e.map_err(|e| ImageError::io("read", src, e))?;
            let name = e.file_name();
            let bytes = name.as_bytes();
            if bytes == OPAQUE {
                opaque = true;
                continue;
            }
            if let Some(target) = bytes.strip_prefix(WHITEOUT_PREFIX) {
                whiteouts.push(OsStr::from_bytes(target).to_os_string());
                continue;
            }
            if hidden.contains(&name) {
                continue;
            }
            let is_dir = e.file_type().map_err(|err| ImageError::io("stat", e.path(), err))?;
            let is_dir = is_dir.is_dir();
            match names.get_mut(&name) {
                None => {
                    let path = e.path();
                    let dirs = if is_dir { vec![path.clone()] } else { Vec::new() };
                    names.insert(name, Source { top: path, dirs, closed: !is_dir });
                }
                Some(s) if !s.closed => match is_dir {
                    true => s.dirs.push(e.path()),
                    false => s.closed = true,
                },
                Some(_) => {}
            }
        }
        // A layer's markers apply to the layers below it, never to itself.
        hidden.extend(whiteouts);
        if opaque {
            break;
        }
    }
    for (name, s) in &names {
        let to = dest.join(name);
        if s.dirs.is_empty() {
            fs::hard_link(&s.top, &to).map_err(|e| ImageError::io("link", &to, e))?;
            counts.0 += 1;
        } else {
            merge(&s.dirs, &to, counts)?;
        }
    }
    copy_dir_metadata(&meta, dest)
}

/// The merged directory takes its topmost layer's mode, owner (when allowed) and times.
fn copy_dir_metadata(meta: &fs::Metadata, dest: &Path) -> Result<()> {
    fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| ImageError::io("chmod", dest, e))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| ImageError::io("chown", dest, e))?;
        // chown clears setuid/setgid bits: set the mode again.
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| ImageError::io("chmod", dest, e))?;
    }
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().map_err(|e| ImageError::io("stat", dest, e))?)
        .set_modified(meta.modified().map_err(|e| ImageError::io("stat", dest, e))?);
    let f = fs::File::open(dest).map_err(|e| ImageError::io("open", dest, e))?;
    f.set_times(times).map_err(|e| ImageError::io("set times", dest, e))
}
