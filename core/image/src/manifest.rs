//! The OCI and docker documents a store reads (manifests, indexes / manifest lists, image
//! configs), parsed with `oci-spec`, with the media type of each checked for its place,
//! and the choice of one manifest from an index for a platform. Parsers never panic on
//! input (fuzzed: tests/fuzz `image_manifest`, `image_config`).

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI layer, plain tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker layer, gzip.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What the registry `Accept` header and a layout may hold as a manifest.
pub const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

/// A manifest document: one image, or an index of them.
#[derive(Debug)]
pub enum Document {
    /// One image.
    Manifest(Box<ImageManifest>),
    /// An index or manifest list.
    Index(Box<ImageIndex>),
}

fn parse_error(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Parse {
        what: what.to_owned(),
        reason: boxsock_core::echo::echo(&e.to_string()).to_string(),
    }
}

/// Parse a manifest or index. `declared` is the media type it was served or referenced
/// with (a registry's `Content-Type`, a descriptor's `mediaType`), when known; the
/// document's own `mediaType` must agree with it.
pub fn parse_document(bytes: &[u8], declared: Option<&str>) -> Result<Document> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| parse_error("manifest", e))?;
    let own = value.get("mediaType").and_then(|m| m.as_str());
    let media_type = match (own, declared) {
        (Some(o), Some(d)) if o != d && !d.is_empty() && d != "application/json" => {
            return Err(ImageError::WrongMediaType {
                what: "manifest",
                found: boxsock_core::echo::echo(o).to_string(),
                expected: "the media type it was served with",
            });
        }
        (Some(o), _) => o.to_owned(),
        (None, Some(d)) if !d.is_empty() && d != "application/json" => d.to_owned(),
        // OCI makes mediaType optional: an index has `manifests`, a manifest `layers`.
        (None, _) if value.get("manifests").is_some() => OCI_INDEX.to_owned(),
        (None, _) => OCI_MANIFEST.to_owned(),
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_value(value).map_err(|e| parse_error("image manifest", e))?;
            if m.schema_version() != 2 {
                return Err(parse_error("image manifest", "schemaVersion is not 2"));
            }
            check_config_type(m.config())?;
            Ok(Document::Manifest(Box::new(m)))
        }
        OCI_INDEX | DOCKER_LIST => {
            let i: ImageIndex =
                serde_json::from_value(value).map_err(|e| parse_error("image index", e))?;
            Ok(Document::Index(Box::new(i)))
        }
        other => Err(ImageError::WrongMediaType {
            what: "manifest",
            found: boxsock_core::echo::echo(other).to_string(),
            expected: "an OCI or docker v2 image manifest or index",
        }),
    }
}

fn check_config_type(d: &Descriptor) -> Result<()> {
    let t = d.media_type().to_string();
    if t == OCI_CONFIG || t == DOCKER_CONFIG {
        Ok(())
    } else {
        Err(ImageError::WrongMediaType {
            what: "image config",
            found: boxsock_core::echo::echo(&t).to_string(),
            expected: "application/vnd.oci.image.config.v1+json or the docker v1 config",
        })
    }
}

/// Check a layer descriptor's media type: a tar, plain, gzip or zstd (the stream's
/// first bytes decide how it is read; the type only has to say "layer").
pub fn check_layer_type(media_type: &str) -> Result<()> {
    let base = media_type.replace(".nondistributable", "");
    match base.as_str() {
        OCI_LAYER_TAR
        | OCI_LAYER_GZIP
        | OCI_LAYER_ZSTD
        | DOCKER_LAYER
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(()),
        _ => Err(ImageError::UnsupportedLayer {
            media_type: boxsock_core::echo::echo(media_type).to_string(),
        }),
    }
}

/// Parse an image config.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| parse_error("image config", e))
}

/// The digest of a descriptor, checked.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    d.digest().to_string().parse()
}

/// `os/arch[/variant]` as docker names platforms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`…
    pub architecture: String,
    /// `v8`…, when the index says.
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<the architecture this was built for>`, in OCI's names.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            a => a,
        };
        Platform { os: "linux".into(), architecture: arch.into(), variant: None }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// At most this many platforms are named in a no-match error.
pub const MAX_PLATFORMS_SHOWN: usize = 16;

/// Choose the manifest for `want` from an index: the first entry of that os and
/// architecture (and variant, when `want` names one). With none, the error lists every
/// platform the index offers.
pub fn select_platform<'i>(index: &'i ImageIndex, want: &Platform) -> Result<&'i Descriptor> {
    let mut available = Vec::new();
    for d in index.manifests() {
        let Some(p) = d.platform() else {
            if !available.iter().any(|a| a == "unknown") {
                available.push("unknown".to_owned());
            }
            continue;
        };
        let os = p.os().to_string();
        let arch = p.architecture().to_string();
        let variant = p.variant().clone();
        if os == want.os
            && arch == want.architecture
            && (want.variant.is_none() || want.variant == variant)
        {
            return Ok(d);
        }
        let shown =
            boxsock_core::echo::echo(&Platform { os, architecture: arch, variant }.to_string())
                .to_string();
        if !available.contains(&shown) {
            available.push(shown);
        }
    }
    // An index chooses how many entries it has; the message stays bounded.
    if available.len() > MAX_PLATFORMS_SHOWN {
        let more = available.len() - MAX_PLATFORMS_SHOWN;
        available.truncate(MAX_PLATFORMS_SHOWN);
        available.push(format!("and {more} more"));
    }
    Err(ImageError::NoMatchingPlatform { wanted: want.to_string(), available })
}
