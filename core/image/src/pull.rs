//! Pull over the registry v2 protocol, with `oci-client` for the wire (anonymous,
//! basic and bearer-token auth, Range requests).
//!
//! - Plain HTTP only for a loopback registry or one the caller lists as insecure.
//! - Credentials: given explicitly, else from a docker `config.json` (`auths` entries;
//!   credential helpers are not run).
//! - An index or manifest list resolves to `linux/<this arch>` (or the asked platform);
//!   with no match the error lists the platforms it has.
//! - Every document and blob is checked against its digest before use.
//! - A blob downloads into `partial/<hex>` under a per-digest lock: a concurrent pull of
//!   the same blob waits and finds it stored (downloaded once), an interrupted one resumes
//!   from the bytes already there (a Range request), and only a verified whole blob is
//!   renamed into `blobs/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::fsutil::{self, LockMode};
use crate::index::ImageRecord;
use crate::manifest::{self, Document, Platform};
use crate::reference::Reference;
use crate::store::{ImageStore, Progress};

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <hidden> }}", self.username)
    }
}

/// A progress callback that can cross threads.
pub type SharedProgress = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How to pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// The platform chosen from an index; default `linux/<this arch>`.
    pub platform: Option<Platform>,
    /// Registries (`host[:port]` or `host`) reached over plain HTTP although not
    /// loopback (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// The docker config to read credentials from; default `$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Credentials that win over the docker config (`boxsock login` will store them).
    pub credentials: Option<Credentials>,
    /// Called per layer as bytes arrive and layers unpack.
    pub progress: Option<SharedProgress>,
}

/// What a pull did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullReport {
    /// The image as recorded.
    pub image: ImageRecord,
    /// Blobs downloaded by this pull, and the bytes each took (fewer than its size when
    /// it resumed).
    pub downloaded: Vec<(Digest, u64)>,
    /// Layers unpacked by this pull (diff id, decompressed bytes).
    pub unpacked: Vec<(Digest, u64)>,
    /// Notes of the unpacks.
    pub notes: Vec<String>,
}

impl PullReport {
    /// Bytes downloaded by this pull.
    pub fn bytes_downloaded(&self) -> u64 {
        self.downloaded.iter().map(|(_, n)| n).sum()
    }
}

/// Whether `registry` (`host[:port]`) may be reached over plain HTTP: a loopback host,
/// or one listed (with or without its port) in `insecure`.
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    let loopback =
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || insecure.iter().any(|i| i == registry || i == host)
}

/// The credentials a docker `config.json` holds for `registry` (`auths`, by
/// `host[:port]` or `https://host[:port]`, `auth` as base64 `user:password` or
/// `username` / `password`). `None` when the file or the entry is missing.
pub fn docker_credentials(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read", path, e)),
    };
    let bad =
        |reason: &str| ImageError::Credentials { path: path.to_owned(), reason: reason.to_owned() };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else { return Ok(None) };
    let keys: Vec<String> = if registry == crate::reference::DEFAULT_REGISTRY {
        vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]
    } else {
        vec![registry.to_owned(), format!("https://{registry}"), format!("http://{registry}")]
    };
    let Some(entry) = keys.iter().find_map(|k| auths.get(k.as_str())) else { return Ok(None) };
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .map_err(|_| bad("an `auth` entry is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("an `auth` entry is not UTF-8"))?;
        let (u, p) =
            text.split_once(':').ok_or_else(|| bad("an `auth` entry is not user:password"))?;
        return Ok(Some(Credentials { username: u.to_owned(), password: p.to_owned() }));
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|p| p.as_str()),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credentials { username: u.into(), password: p.into() })),
        _ => Ok(None),
    }
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

fn registry_error(registry: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        registry: boxsock_core::echo::echo(registry).to_string(),
        reason: boxsock_core::echo::echo(&e.to_string()).to_string(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::io("blocking task", "", std::io::Error::other(e.to_string())))?
}

impl ImageStore {
    /// Pull `reference` from its registry into the store.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<PullReport> {
        let r: Reference = reference.parse()?;
        let store = self.clone();
        let _adding = blocking(move || store.adding()).await?;
        // reqwest's rustls takes the process's crypto provider; install ring's once
        // (an error means one is installed already, which is as good). ring has no
        // post-quantum key exchange (hence rustls's deprecation note); aws-lc-rs, which
        // has, would add a large C build to every build of the workspace.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain = plain_http_allowed(&r.registry, &opts.insecure_registries);
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::HttpsExcept(vec![r.registry.clone()])
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        };
        let client = oci_client::Client::new(config);
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => match opts.docker_config.clone().or_else(default_docker_config) {
                Some(p) => docker_credentials(&p, &r.registry)?,
                None => None,
            },
        };
        let auth = match &creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let oref = match &r.digest {
            Some(d) => oci_client::Reference::with_digest(
                r.registry.clone(),
                r.repository.clone(),
                d.to_string(),
            ),
            None => oci_client::Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                r.selector(),
            ),
        };
        client
            .auth(&oref, &auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| registry_error(&r.registry, e))?;
        tracing::info!(reference = %r, plain_http = plain, auth = creds.is_some(), "pulling");

        // The manifest, through an index if it is one.
        let (mut bytes, _) = client
            .pull_manifest_raw(&oref, &auth, manifest::MANIFEST_TYPES)
            .await
            .map_err(|e| registry_error(&r.registry, e))?;
        let mut digest = Digest::of(&bytes);
        if let Some(want) = &r.digest
            && *want != digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {r}"),
                expected: want.clone(),
                actual: digest,
            });
        }
        let want = opts.platform.clone().unwrap_or_else(Platform::host);
        let mut doc = manifest::parse_document(&bytes, None)?;
        for _ in 0..4 {
            let Document::Index(index) = &doc else { break };
            let chosen = manifest::select_platform(index, &want)?;
            let d = manifest::descriptor_digest(chosen)?;
            let child = oci_client::Reference::with_digest(
                r.registry.clone(),
                r.repository.clone(),
                d.to_string(),
            );
            let (b, _) = client
                .pull_manifest_raw(&child, &auth, manifest::MANIFEST_TYPES)
                .await
                .map_err(|e| registry_error(&r.registry, e))?;
            let actual = Digest::of(&b);
            if actual != d {
                return Err(ImageError::DigestMismatch {
                    what: "manifest from the index".into(),
                    expected: d,
                    actual,
                });
            }
            doc = manifest::parse_document(&b, Some(chosen.media_type().as_ref()))?;
            bytes = b;
            digest = actual;
        }
        let Document::Manifest(m) = doc else {
            return Err(ImageError::Parse {
                what: "image index".into(),
                reason: "indexes nested deeper than 4".into(),
            });
        };
        let stored = self.put_document(&bytes)?;
        debug_assert_eq!(stored, digest);

        let mut downloaded = Vec::new();
        let mut wanted = vec![(manifest::descriptor_digest(m.config())?, m.config().size())];
        for l in m.layers() {
            manifest::check_layer_type(l.media_type().as_ref())?;
            wanted.push((manifest::descriptor_digest(l)?, l.size()));
        }
        for (d, size) in wanted {
            let n = self.fetch_blob(&client, &oref, &d, size, opts.progress.as_ref()).await?;
            if n > 0 {
                downloaded.push((d, n));
            }
        }
        let names = if r.tag.is_some() { vec![r.name()] } else { Vec::new() };
        let store = self.clone();
        let progress = opts.progress.clone();
        let report = blocking(move || {
            let p = progress.as_ref().map(|p| move |e: &Progress| p(e));
            store.add_image(&digest, &names, p.as_ref().map(|f| f as &(dyn Fn(&Progress) + Sync)))
        })
        .await?;
        Ok(PullReport {
            image: report.image,
            downloaded,
            unpacked: report.unpacked,
            notes: report.notes,
        })
    }

    fn partial_dir(&self) -> PathBuf {
        self.dir().join("partial")
    }

    /// Download blob `d` unless it is stored; returns the bytes downloaded.
    async fn fetch_blob(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        d: &Digest,
        size: u64,
        progress: Option<&SharedProgress>,
    ) -> Result<u64> {
        let lock_path = self.locks().join(format!("blob-{}.lock", d.hex()));
        let _lock = blocking(move || fsutil::lock(&lock_path, LockMode::Exclusive)).await?;
        if self.blobs.has(d) {
            if let Some(p) = progress {
                p(&Progress::BlobPresent { blob: d.clone() });
            }
            return Ok(0);
        }
        fsutil::ensure_dir(&self.partial_dir())?;
        let partial = self.partial_dir().join(d.hex());
        let mut offset = fs::metadata(&partial).map_or(0, |m| m.len());
        if offset > size {
            offset = 0;
        }
        let registry = oref.registry().to_owned();
        let digest_str = d.to_string();
        let resp = client
            .pull_blob_stream_partial(oref, digest_str.as_str(), offset, None)
            .await
            .map_err(|e| registry_error(&registry, e))?;
        let (mut stream, append) = match resp {
            BlobResponse::Full(s) => (s, false),
            BlobResponse::Partial(s) => (s, true),
        };
        if !append {
            offset = 0;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&partial)
            .map_err(|e| ImageError::io("open", &partial, e))?;
        let mut done = offset;
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| registry_error(&registry, e))?;
            if done + chunk.len() as u64 > size {
                drop(file);
                let _ = fs::remove_file(&partial);
                return Err(ImageError::TooLarge { what: format!("blob {d}"), limit: size });
            }
            file.write_all(&chunk).map_err(|e| ImageError::io("write", &partial, e))?;
            done += chunk.len() as u64;
            got += chunk.len() as u64;
            if let Some(p) = progress {
                p(&Progress::Download { blob: d.clone(), done, total: size });
            }
            if done >= size / 2 && done < size {
                file.sync_data().map_err(|e| ImageError::io("fsync", &partial, e))?;
                crate::crash::point("pull-half-blob");
            }
        }
        drop(file);
        if done < size {
            // Kept: the next pull resumes from here.
            return Err(ImageError::Truncated { digest: d.clone(), expected: size, got: done });
        }
        let store = self.clone();
        let (d2, partial2) = (d.clone(), partial.clone());
        blocking(move || store.blobs.adopt(&partial2, &d2, size)).await?;
        tracing::info!(blob = %d, bytes = got, resumed_from = offset, "blob downloaded");
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_listed_registries() {
        for r in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.3.4.5"] {
            assert!(plain_http_allowed(r, &[]), "{r}");
        }
        for r in ["registry.example:5000", "10.0.0.1:5000", "docker.io", "localhost.example"] {
            assert!(!plain_http_allowed(r, &[]), "{r}");
        }
        let insecure = vec!["10.0.0.1:5000".to_owned(), "lab.example".to_owned()];
        assert!(plain_http_allowed("10.0.0.1:5000", &insecure));
        assert!(!plain_http_allowed("10.0.0.1:5001", &insecure));
        assert!(plain_http_allowed("lab.example:443", &insecure));
    }

    #[test]
    fn docker_config_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        assert_eq!(docker_credentials(&p, "r.example").unwrap(), None);
        // "user:pa:ss" base64
        fs::write(
            &p,
            r#"{"auths": {"r.example:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}}"#,
        )
        .unwrap();
        let c = docker_credentials(&p, "r.example:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pa:ss"));
        assert!(!format!("{c:?}").contains("pa:ss"), "a password is never printed");
        let hub = docker_credentials(&p, "docker.io").unwrap().unwrap();
        assert_eq!(hub.username, "hub");
        assert_eq!(docker_credentials(&p, "other.example").unwrap(), None);
        fs::write(&p, r#"{"auths": {"r.example": {"auth": "!!"}}}"#).unwrap();
        let err = docker_credentials(&p, "r.example").unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("base64"), "{err}");
    }
}
