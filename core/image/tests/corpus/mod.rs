//! The test corpus: layers and OCI layouts built by code, hostile ones included. Every
//! case is made here from scratch in a temporary directory (no binary fixtures), so the
//! bytes each test feeds the store are readable next to the test.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use boxsock_image::Digest;
use serde_json::json;

/// A tar stream written entry by entry, with raw names: nothing here stops `..`, a
/// leading `/` or non-UTF-8 bytes, because the corpus needs them.
#[derive(Default)]
pub struct Tar {
    out: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    fn header(kind: tar::EntryType, name: &[u8], size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        assert!(name.len() <= 100, "corpus names fit the old header");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Tar {
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: impl AsRef<[u8]>, data: &[u8]) -> &mut Tar {
        self.file_mode(name, data, 0o644)
    }

    pub fn file_mode(&mut self, name: impl AsRef<[u8]>, data: &[u8], mode: u32) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Regular, name.as_ref(), data.len() as u64, mode);
        self.push(h, data)
    }

    pub fn file_owned(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Tar {
        let mut h = Tar::header(tar::EntryType::Regular, name.as_bytes(), data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, data)
    }

    pub fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Directory, name.as_ref(), 0, 0o755);
        self.push(h, &[])
    }

    pub fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Directory, name.as_bytes(), 0, mode);
        self.push(h, &[])
    }

    fn link(&mut self, kind: tar::EntryType, name: &[u8], target: &[u8]) -> &mut Tar {
        let mut h = Tar::header(kind, name, 0, 0o777);
        assert!(target.len() <= 100);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        self.push(h, &[])
    }

    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.link(tar::EntryType::Symlink, name.as_ref(), target.as_ref())
    }

    pub fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.link(tar::EntryType::Link, name.as_ref(), target.as_ref())
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Tar {
        let mut h = Tar::header(tar::EntryType::Char, name.as_bytes(), 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    pub fn fifo(&mut self, name: &str) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Fifo, name.as_bytes(), 0, 0o640);
        self.push(h, &[])
    }

    /// A file with PAX `SCHILY.xattr.<key>` records.
    pub fn file_xattrs(&mut self, name: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> &mut Tar {
        let mut pax = Vec::new();
        for (k, v) in xattrs {
            let rec_body = [format!(" SCHILY.xattr.{k}=").as_bytes(), v, b"\n"].concat();
            // The length prefix counts itself.
            let mut len = rec_body.len() + 1;
            while format!("{len}").len() + rec_body.len() != len {
                len += 1;
            }
            pax.extend_from_slice(format!("{len}").as_bytes());
            pax.extend_from_slice(&rec_body);
        }
        let h = Tar::header(tar::EntryType::XHeader, b"././@PaxHeader", pax.len() as u64, 0o644);
        self.push(h, &pax);
        self.file(name, data)
    }

    /// `.wh.<name>` in `dir` ("" for the root).
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Tar {
        let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        self.file(p, b"")
    }

    /// `.wh..wh..opq` in `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Tar {
        self.file(format!("{dir}/.wh..wh..opq"), b"")
    }

    /// The stream, with tar's two zero blocks at the end.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// One layer of an image in a layout.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: &'static str,
}

impl Layer {
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer { blob: tar.clone(), tar, media_type: TAR }
    }

    pub fn gzip(tar: Vec<u8>) -> Layer {
        Layer { blob: gzip(&tar), tar, media_type: GZIP }
    }

    pub fn zstd(tar: Vec<u8>) -> Layer {
        Layer { blob: zstd(&tar), tar, media_type: ZSTD }
    }

    pub fn diff_id(&self) -> Digest {
        Digest::of(&self.tar)
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.blob)
    }
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    pub manifests: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf(), manifests: Vec::new() }
    }

    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Write an image (config with `cfg` as its `config` section) and return the
    /// manifest's descriptor; not yet listed in index.json.
    pub fn image(&self, layers: &[Layer], arch: &str, cfg: serde_json::Value) -> serde_json::Value {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id().to_string()).collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = self.blob(&config_bytes);
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                let d = self.blob(&l.blob);
                json!({"mediaType": l.media_type, "digest": d.to_string(), "size": l.blob.len()})
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": layer_descs,
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let d = self.blob(&bytes);
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.to_string(),
            "size": bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    }

    /// List `desc` in index.json under the tag `tag`.
    pub fn tag(&mut self, mut desc: serde_json::Value, tag: &str) -> &mut Layout {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(desc);
        self.write_index();
        self
    }

    /// An index of `descs` as a blob, returning its descriptor.
    pub fn index(&self, descs: Vec<serde_json::Value>) -> serde_json::Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": descs,
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        let d = self.blob(&bytes);
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d.to_string(),
            "size": bytes.len(),
        })
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// The architecture name OCI uses for this machine.
pub fn host_arch() -> &'static str {
    boxsock_image::Platform::host().architecture.leak()
}

/// A one-image layout with `layers`, tagged `tag`, running `sh`.
pub fn simple_layout(dir: &Path, layers: &[Layer], tag: &str) -> Layout {
    let mut l = Layout::new(dir);
    let desc = l.image(layers, host_arch(), json!({"Cmd": ["sh"]}));
    l.tag(desc, tag);
    l
}

/// Every path under `dir` (relative), sorted: to prove nothing appeared outside.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
