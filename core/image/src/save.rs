//! Save: an image as an OCI archive (a tar of an OCI image layout), written to a
//! temporary file beside the destination and renamed over it once whole.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::error::{ImageError, Result};
use crate::fsutil;
use crate::manifest;
use crate::store::ImageStore;

impl ImageStore {
    /// Write the image `reference` to `out` as an OCI archive. Every blob is verified
    /// as it is copied; `out` appears only once the archive is whole.
    pub fn save(&self, reference: &str, out: &Path) -> Result<()> {
        let rec = self.resolve(reference)?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = dir.join(fsutil::temp_name(".boxsock-save"));
        let result = self.write_archive(&rec, &tmp);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, out).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::io("rename into place", out, e)
        })?;
        fsutil::sync_dir(dir)
    }

    fn write_archive(&self, rec: &crate::ImageRecord, tmp: &Path) -> Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| ImageError::io("create", tmp, e))?;
        let mut tar = tar::Builder::new(io::BufWriter::new(file));
        let werr = |e: io::Error| ImageError::io("write", tmp, e);
        let manifest_bytes = self.read_blob(&rec.id)?;
        let media_type = match manifest::parse_document(&manifest_bytes, None)? {
            manifest::Document::Manifest(m) => {
                m.media_type().as_ref().map_or(manifest::OCI_MANIFEST.to_owned(), |t| t.to_string())
            }
            manifest::Document::Index(_) => manifest::OCI_INDEX.to_owned(),
        };
        let mut annotations = serde_json::Map::new();
        if let Some(name) = rec.names.first() {
            annotations.insert("io.containerd.image.name".into(), name.clone().into());
            if let Some((_, tag)) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                annotations.insert("org.opencontainers.image.ref.name".into(), tag.into());
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": [{
                "mediaType": media_type,
                "digest": rec.id.to_string(),
                "size": manifest_bytes.len(),
                "annotations": annotations,
            }],
        });
        let doc = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| -> Result<()> {
            let mut h = header(bytes.len() as u64);
            tar.append_data(&mut h, name, bytes).map_err(werr)
        };
        doc(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        doc(&mut tar, "index.json", &serde_json::to_vec(&index).expect("serialises"))?;
        let mut blobs = vec![rec.id.clone(), rec.config.clone()];
        blobs.extend(rec.layers.iter().map(|l| l.blob.clone()));
        let mut seen = std::collections::HashSet::new();
        for d in blobs {
            if !seen.insert(d.clone()) {
                continue;
            }
            let path = self.blob_path(&d);
            let size = fs::metadata(&path).map_err(|e| ImageError::io("stat", &path, e))?.len();
            let mut src = self.blobs.open(&d)?;
            let mut h = header(size);
            tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut src).map_err(werr)?;
            let (actual, _) = src.finish();
            if actual != d {
                return Err(ImageError::DigestMismatch {
                    what: format!("stored blob {d}"),
                    expected: d,
                    actual,
                });
            }
        }
        let buf = tar.into_inner().map_err(werr)?;
        let file: File = buf.into_inner().map_err(|e| werr(e.into_error()))?;
        let mut file = file;
        file.flush().map_err(werr)?;
        file.sync_all().map_err(werr)
    }
}

/// A reproducible header: no owner, no time.
fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}
