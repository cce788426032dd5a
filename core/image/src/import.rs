//! Import without a registry: an OCI image layout directory, an OCI archive (a tar of a
//! layout) or a `docker save` tarball (either may be gzip or zstd compressed).
//!
//! Archives are read as one stream, never extracted: every regular file is ingested as
//! a blob as it passes (verified against its name under `blobs/sha256/`; named by its
//! content otherwise), the small JSON documents are kept in memory, and the image is
//! then assembled from the store. Files the archive holds that no image uses are freed
//! by the next prune.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use crate::blobs::{Expect, MAX_DOCUMENT};
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::manifest::{self, Document, Platform};
use crate::store::{AddReport, ImageStore, ProgressFn};
use crate::unpack::Compression;

/// Options of an import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The name for images the archive does not name fully (an OCI layout's
    /// `org.opencontainers.image.ref.name` is often a bare tag, which is appended).
    pub name: Option<String>,
    /// The platform chosen from an index; default `linux/<this arch>`.
    pub platform: Option<Platform>,
}

/// Where the blobs of a layout come from.
enum Source<'a> {
    /// A layout directory: `<dir>/blobs/sha256/<hex>`.
    Dir(&'a Path),
    /// Already in the store (an archive streamed in).
    Store,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

impl ImageStore {
    /// Import every image of an OCI layout directory, OCI archive or `docker save`
    /// tarball at `path`. Returns one report per image.
    pub fn import(&self, path: &Path, opts: &ImportOptions) -> Result<Vec<AddReport>> {
        self.import_with_progress(path, opts, None)
    }

    /// [`ImageStore::import`] with a progress callback.
    pub fn import_with_progress(
        &self,
        path: &Path,
        opts: &ImportOptions,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Vec<AddReport>> {
        let _adding = self.adding()?;
        let meta = std::fs::metadata(path).map_err(|e| ImageError::io("stat", path, e))?;
        if meta.is_dir() {
            let layout = read_layout_doc(path, "oci-layout")?;
            check_layout(path, &layout)?;
            let index = read_layout_doc(path, "index.json")?;
            return self.import_index(path, &index, Source::Dir(path), opts, progress);
        }
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let mut buffered = BufReader::new(file);
        let head = buffered.fill_buf().map_err(|e| ImageError::io("read", path, e))?.to_vec();
        let stream: Box<dyn Read> = match Compression::sniff(&head) {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|e| ImageError::io("read", path, e))?,
            ),
        };
        let archive = self.ingest_archive(path, stream)?;
        if let Some(index) = archive.docs.get("index.json") {
            if let Some(layout) = archive.docs.get("oci-layout") {
                check_layout(path, layout)?;
            }
            return self.import_index(path, index, Source::Store, opts, progress);
        }
        if archive.docs.contains_key("manifest.json") {
            return self.import_docker(path, &archive, opts, progress);
        }
        Err(import_error(
            path,
            "neither an OCI layout (index.json) nor a docker save (manifest.json)",
        ))
    }

    fn import_index(
        &self,
        path: &Path,
        index_bytes: &[u8],
        src: Source<'_>,
        opts: &ImportOptions,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Vec<AddReport>> {
        let index = match manifest::parse_document(index_bytes, None)? {
            Document::Index(i) => i,
            Document::Manifest(_) => return Err(import_error(path, "index.json is not an index")),
        };
        if index.manifests().is_empty() {
            return Err(import_error(path, "index.json lists no image"));
        }
        let want = opts.platform.clone().unwrap_or_else(Platform::host);
        let mut out = Vec::new();
        for desc in index.manifests() {
            let names = layout_names(desc, opts)?;
            out.push(self.import_descriptor(desc, &src, &want, &names, progress, 0)?);
        }
        Ok(out)
    }

    fn import_descriptor(
        &self,
        desc: &Descriptor,
        src: &Source<'_>,
        want: &Platform,
        names: &[String],
        progress: Option<ProgressFn<'_>>,
        depth: u32,
    ) -> Result<AddReport> {
        if depth > 4 {
            return Err(ImageError::Parse {
                what: "image index".into(),
                reason: "indexes nested deeper than 4".into(),
            });
        }
        let digest = manifest::descriptor_digest(desc)?;
        self.fetch(src, &digest, desc.size())?;
        let bytes = self.read_blob(&digest)?;
        let media_type = desc.media_type().to_string();
        match manifest::parse_document(&bytes, Some(&media_type))? {
            Document::Index(i) => {
                let chosen = manifest::select_platform(&i, want)?;
                self.import_descriptor(chosen, src, want, names, progress, depth + 1)
            }
            Document::Manifest(m) => {
                self.fetch(src, &manifest::descriptor_digest(m.config())?, m.config().size())?;
                for l in m.layers() {
                    manifest::check_layer_type(l.media_type().as_ref())?;
                    self.fetch(src, &manifest::descriptor_digest(l)?, l.size())?;
                }
                self.add_image(&digest, names, progress)
            }
        }
    }

    /// Make sure blob `d` is in the store, copying it from a layout directory.
    fn fetch(&self, src: &Source<'_>, d: &Digest, size: u64) -> Result<()> {
        match src {
            Source::Store if self.blobs.has(d) => Ok(()),
            Source::Store => {
                Err(ImageError::NotFound { reference: format!("blob {d} in the archive") })
            }
            Source::Dir(dir) => {
                let p = dir.join("blobs/sha256").join(d.hex());
                let f = File::open(&p).map_err(|e| ImageError::io("open blob", &p, e))?;
                self.put_blob(f, d, Some(size)).map(|_| ())
            }
        }
    }

    fn ingest_archive(&self, path: &Path, stream: impl Read) -> Result<Archive> {
        let mut archive = tar::Archive::new(stream);
        let mut out = Archive::default();
        let bad = |e: std::io::Error| {
            let e = boxsock_core::echo::echo(&e.to_string()).to_string();
            import_error(path, &format!("not a readable tar: {e}"))
        };
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name =
                String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_owned();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    // docker save links a repeated layer.tar to its first copy.
                    if let Some(t) = entry.link_name_bytes() {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        out.links.insert(name, t);
                    }
                    continue;
                }
                _ => continue,
            }
            if matches!(
                name.as_str(),
                "index.json" | "oci-layout" | "manifest.json" | "repositories"
            ) {
                let mut bytes = Vec::new();
                (&mut entry).take(MAX_DOCUMENT + 1).read_to_end(&mut bytes).map_err(bad)?;
                if bytes.len() as u64 > MAX_DOCUMENT {
                    return Err(ImageError::TooLarge {
                        what: boxsock_core::echo::echo(&name).to_string(),
                        limit: MAX_DOCUMENT,
                    });
                }
                out.docs.insert(name, bytes);
                continue;
            }
            let size = entry.header().size().map_err(bad)?;
            let named: Option<Digest> = name
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}").parse())
                .transpose()?;
            let digest = match &named {
                Some(d) if self.blobs.has(d) => d.clone(),
                Some(d) => {
                    self.put_blob(&mut entry, d, Some(size))?;
                    d.clone()
                }
                None => {
                    self.blobs
                        .ingest(
                            &mut entry,
                            Expect { digest: None, size: Some(size), limit: u64::MAX },
                        )?
                        .0
                }
            };
            out.files.insert(name, (digest, size));
        }
        Ok(out)
    }

    fn import_docker(
        &self,
        path: &Path,
        archive: &Archive,
        opts: &ImportOptions,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Vec<AddReport>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&archive.docs["manifest.json"]).map_err(|e| {
                import_error(
                    path,
                    &format!("manifest.json: {}", boxsock_core::echo::echo(&e.to_string())),
                )
            })?;
        if entries.is_empty() {
            return Err(import_error(path, "manifest.json lists no image"));
        }
        let mut out = Vec::new();
        for e in entries {
            let (config, config_size) = archive.file(path, &e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (d, size) = archive.file(path, l)?;
                let mut head = [0u8; 4];
                let n = self.blobs.open(&d)?.read(&mut head).unwrap_or(0);
                let media_type = match Compression::sniff(&head[..n]) {
                    Compression::None => manifest::OCI_LAYER_TAR,
                    Compression::Gzip => manifest::OCI_LAYER_GZIP,
                    Compression::Zstd => manifest::OCI_LAYER_ZSTD,
                };
                layers.push(serde_json::json!({
                    "mediaType": media_type,
                    "digest": d.to_string(),
                    "size": size,
                }));
            }
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest::OCI_MANIFEST,
                "config": {
                    "mediaType": manifest::OCI_CONFIG,
                    "digest": config.to_string(),
                    "size": config_size,
                },
                "layers": layers,
            });
            let digest = self.put_document(&serde_json::to_vec(&m).expect("serialises"))?;
            let mut names = Vec::new();
            for t in e.repo_tags.unwrap_or_default() {
                names.push(t.parse::<crate::Reference>()?.name());
            }
            if names.is_empty()
                && let Some(n) = &opts.name
            {
                names.push(n.parse::<crate::Reference>()?.name());
            }
            out.push(self.add_image(&digest, &names, progress)?);
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Archive {
    /// The small documents, by name.
    docs: HashMap<String, Vec<u8>>,
    /// Every other regular file, ingested as a blob.
    files: HashMap<String, (Digest, u64)>,
    /// Links, name → target.
    links: HashMap<String, String>,
}

impl Archive {
    /// The blob of the file `name` (following the archive's links, a few deep).
    fn file(&self, path: &Path, name: &str) -> Result<(Digest, u64)> {
        let mut name = name.trim_start_matches("./").to_owned();
        for _ in 0..8 {
            if let Some(f) = self.files.get(&name) {
                return Ok(f.clone());
            }
            let Some(target) = self.links.get(&name) else { break };
            // A relative link resolves from the link's directory.
            name = match (target.starts_with('/'), name.rsplit_once('/')) {
                (false, Some((dir, _))) => normalise_join(dir, target),
                _ => target.trim_start_matches('/').to_owned(),
            };
        }
        Err(import_error(
            path,
            &format!("the archive has no file {}", boxsock_core::echo::echo(&name)),
        ))
    }
}

fn normalise_join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn import_error(path: &Path, reason: &str) -> ImageError {
    ImageError::Import { path: PathBuf::from(path), reason: reason.to_owned() }
}

fn read_layout_doc(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    let f = File::open(&p).map_err(|e| ImageError::io("open", &p, e))?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes).map_err(|e| ImageError::io("read", &p, e))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(ImageError::TooLarge {
            what: boxsock_core::echo::path(&p).to_string(),
            limit: MAX_DOCUMENT,
        });
    }
    Ok(bytes)
}

fn check_layout(path: &Path, bytes: &[u8]) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| import_error(path, "oci-layout is not JSON"))?;
    match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(v) if v.starts_with("1.") => Ok(()),
        _ => Err(import_error(path, "oci-layout does not say imageLayoutVersion 1.x")),
    }
}

/// The names an index entry gives its image.
fn layout_names(desc: &Descriptor, opts: &ImportOptions) -> Result<Vec<String>> {
    let ann = desc.annotations().clone().unwrap_or_default();
    if let Some(full) = ann.get(CONTAINERD_NAME) {
        return Ok(vec![full.parse::<crate::Reference>()?.name()]);
    }
    let ref_name = ann.get(REF_NAME);
    if let Some(r) = ref_name
        && r.contains('/')
    {
        return Ok(vec![r.parse::<crate::Reference>()?.name()]);
    }
    let Some(base) = &opts.name else { return Ok(Vec::new()) };
    let base_ref: crate::Reference = base.parse()?;
    let explicit_tag = base.rsplit_once('/').map_or(base.as_str(), |(_, l)| l).contains(':');
    let name = match ref_name {
        Some(tag) if !explicit_tag => {
            format!("{}/{}:{tag}", base_ref.registry, base_ref.repository)
        }
        _ => base_ref.name(),
    };
    Ok(vec![name.parse::<crate::Reference>()?.name()])
}
