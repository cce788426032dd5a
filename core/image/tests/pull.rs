//! Pull against a real registry: Debian's `docker-registry` (distribution 2.8) started
//! here on 127.0.0.1:<free port> with its storage in a temporary directory, once plain
//! and once behind htpasswd (basic) auth, filled by `skopeo copy` from OCI layouts the
//! tests build from static busybox (`/bin/busybox`, Debian's busybox-static).

#![cfg(feature = "registry")]

mod corpus;
mod registry;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxsock_image::{Credentials, Digest, ImageError, ImageStore, Platform, Progress, PullOptions};
use corpus::{Layer, Tar};
use registry::{Auth, BUSYBOX, ISSUER, Registry, SERVICE, have, tools};
use serde_json::json;

fn busybox_layer() -> Layer {
    let bb = std::fs::read(BUSYBOX).unwrap();
    let mut t = Tar::new();
    t.dir("bin").file_mode("bin/busybox", &bb, 0o755);
    for app in ["sh", "ls", "cat", "echo"] {
        t.symlink(format!("bin/{app}"), "busybox");
    }
    t.dir("etc").file("etc/motd", b"removed by the upper layer\n").file("etc/hostname", b"base\n");
    Layer::gzip(t.finish())
}

fn whiteout_layer() -> Layer {
    Layer::gzip(Tar::new().whiteout("etc", "motd").file("etc/hostname", b"upper\n").finish())
}

fn layout_with(dir: &Path, layers: &[Layer], tag: &str) -> PathBuf {
    let mut l = corpus::Layout::new(dir);
    let desc =
        l.image(layers, corpus::host_arch(), json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}));
    l.tag(desc, tag);
    dir.to_path_buf()
}

fn opts() -> PullOptions {
    // No docker config of the machine's user leaks in.
    PullOptions {
        docker_config: Some(PathBuf::from("/nonexistent/config.json")),
        ..Default::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn a_two_layer_busybox_image_with_whiteouts_pulls_and_runs() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let layers = [busybox_layer(), whiteout_layer()];
    reg.push(&layout_with(&tmp.path().join("l"), &layers, "two"), "two", "team/busybox:two", false);

    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let o = PullOptions {
        progress: Some(Arc::new(move |p: &Progress| ev.lock().unwrap().push(p.clone()))),
        ..opts()
    };
    let r = runtime().block_on(store.pull(&reg.reference("team/busybox:two"), &o)).unwrap();
    assert_eq!(r.image.names, [reg.reference("team/busybox:two")]);
    // config + two layers, each whole.
    let blob_bytes: u64 = layers.iter().map(|l| l.blob.len() as u64).sum();
    assert_eq!(r.downloaded.len(), 3);
    assert!(r.bytes_downloaded() > blob_bytes, "{r:?}");
    assert_eq!(r.unpacked.len(), 2);
    let events = events.lock().unwrap();
    assert!(
        events.iter().any(|e| matches!(e, Progress::Download { blob, done, total }
        if *blob == layers[0].digest() && done == total)),
        "no per-layer progress"
    );

    let dirs = store.layers(&reg.reference("team/busybox:two")).unwrap();
    assert!(dirs[1].join("etc/.wh.motd").is_file());
    assert_eq!(std::fs::read(dirs[1].join("etc/hostname")).unwrap(), b"upper\n");
    // The pulled busybox is the real one and runs.
    let out = Command::new(dirs[0].join("bin/busybox")).args(["echo", "pulled"]).output().unwrap();
    assert_eq!(out.stdout, b"pulled\n");
    assert_eq!(store.inspect(&reg.reference("team/busybox:two")).unwrap().config.cmd, ["/bin/sh"]);
}

#[test]
fn a_second_image_sharing_the_base_downloads_and_unpacks_none_of_it() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_layer();
    let a = Layer::gzip(Tar::new().file("a", b"a").finish());
    let b = Layer::zstd(Tar::new().file("b", b"b").finish());
    reg.push(&layout_with(&tmp.path().join("a"), &[base.clone(), a], "1"), "1", "app/a:1", false);
    reg.push(
        &layout_with(&tmp.path().join("b"), &[base.clone(), b.clone()], "1"),
        "1",
        "app/b:1",
        false,
    );
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let rt = runtime();
    let ra = rt.block_on(store.pull(&reg.reference("app/a:1"), &opts())).unwrap();
    assert!(ra.downloaded.iter().any(|(d, _)| *d == base.digest()));
    let rb = rt.block_on(store.pull(&reg.reference("app/b:1"), &opts())).unwrap();
    // The base: 0 bytes downloaded, 0 bytes unpacked. Only b's config and zstd layer came.
    let base_downloaded: u64 =
        rb.downloaded.iter().filter(|(d, _)| *d == base.digest()).map(|(_, n)| n).sum();
    let base_unpacked: u64 =
        rb.unpacked.iter().filter(|(d, _)| *d == base.diff_id()).map(|(_, n)| n).sum();
    assert_eq!((base_downloaded, base_unpacked), (0, 0), "{rb:?}");
    assert_eq!(rb.downloaded.len(), 2, "{rb:?}");
    assert_eq!(rb.unpacked, [(b.diff_id(), b.tar.len() as u64)]);
    let (la, lb) = (
        store.layers(&reg.reference("app/a:1")).unwrap(),
        store.layers(&reg.reference("app/b:1")).unwrap(),
    );
    assert_eq!(la[0], lb[0], "one shared base directory");
}

#[test]
fn a_multi_platform_index_resolves_to_this_arch_or_names_what_it_has() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    let mut l = corpus::Layout::new(&dir);
    let mine = l.image(&[busybox_layer()], corpus::host_arch(), json!({"Cmd": ["/bin/sh"]}));
    let other_arch = if corpus::host_arch() == "arm64" { "amd64" } else { "arm64" };
    let other =
        l.image(&[Layer::gzip(Tar::new().file("other-arch", b"").finish())], other_arch, json!({}));
    let index = l.index(vec![other, mine.clone()]);
    l.tag(index, "multi");
    reg.push(&dir, "multi", "multi/bb:1", true);

    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let rt = runtime();
    let r = rt.block_on(store.pull(&reg.reference("multi/bb:1"), &opts())).unwrap();
    assert_eq!(r.image.id.to_string(), mine["digest"].as_str().unwrap());
    assert!(store.layers(&r.image.id.to_string()).unwrap()[0].join("bin/busybox").is_file());

    let o = PullOptions {
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "mips64le".into(),
            variant: None,
        }),
        ..opts()
    };
    let err = rt.block_on(store.pull(&reg.reference("multi/bb:1"), &o)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ImageError::NoMatchingPlatform { .. }), "{err:?}");
    assert!(
        text.contains("linux/mips64le")
            && text.contains(&format!("linux/{}", corpus::host_arch()))
            && text.contains(&format!("linux/{other_arch}")),
        "{text}"
    );
}

#[test]
fn basic_auth_with_credentials_from_a_docker_config() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Auth::Basic);
    let tmp = tempfile::tempdir().unwrap();
    reg.push(
        &layout_with(&tmp.path().join("l"), &[busybox_layer()], "1"),
        "1",
        "private/bb:1",
        false,
    );
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let rt = runtime();
    // Anonymous: refused by the registry (the control: auth is really on).
    let err = rt.block_on(store.pull(&reg.reference("private/bb:1"), &opts())).unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err:?}");
    // A wrong password: refused.
    let wrong = PullOptions {
        credentials: Some(Credentials { username: "boxsock".into(), password: "nope".into() }),
        ..opts()
    };
    assert!(rt.block_on(store.pull(&reg.reference("private/bb:1"), &wrong)).is_err());
    // The right one, from a docker config.json.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("boxsock:s3cret-pw");
    let cfg = tmp.path().join("docker/config.json");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string()).unwrap();
    let o = PullOptions { docker_config: Some(cfg), ..opts() };
    let r = rt.block_on(store.pull(&reg.reference("private/bb:1"), &o)).unwrap();
    assert_eq!(r.image.names, [reg.reference("private/bb:1")]);
}

#[test]
fn concurrent_pulls_of_one_image_download_each_blob_once() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let layers = [busybox_layer(), whiteout_layer()];
    reg.push(&layout_with(&tmp.path().join("l"), &layers, "1"), "1", "conc/bb:1", false);
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let rt = runtime();
    let reference = reg.reference("conc/bb:1");
    let (s1, s2) = (store.clone(), store.clone());
    let (r1, r2) = rt.block_on(async {
        let o = opts();
        tokio::join!(s1.pull(&reference, &o), s2.pull(&reference, &o))
    });
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.image.id, r2.image.id);
    let mut all: Vec<Digest> =
        r1.downloaded.iter().chain(&r2.downloaded).map(|(d, _)| d.clone()).collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(n, all.len(), "a blob was downloaded twice: {r1:?} {r2:?}");
    assert_eq!(n, 3, "config and two layers, once each");
    let unpacked = r1.unpacked.len() + r2.unpacked.len();
    assert_eq!(unpacked, 2, "each layer unpacked once");
}

const CHILD: &str = "BOXSOCK_IMAGE_PULL_CHILD";

/// Not a test on its own: the pull a parent kills half-way through a blob.
#[test]
fn child_pulls() {
    let Some(spec) = std::env::var_os(CHILD) else { return };
    let spec = spec.to_string_lossy().into_owned();
    let (store, reference) = spec.split_once('|').unwrap();
    let store = ImageStore::open(store).unwrap();
    let _ = runtime().block_on(store.pull(reference, &opts()));
}

#[test]
fn an_interrupted_pull_resumes_and_never_leaves_a_half_blob_that_looks_whole() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    // Incompressible, so the blob is large and arrives in many chunks.
    let mut noise = vec![0u8; 3 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // gzip: skopeo would compress a plain layer on its way to the registry (another digest).
    let big = Layer::gzip(Tar::new().file("noise", &noise).finish());
    reg.push(
        &layout_with(&tmp.path().join("l"), std::slice::from_ref(&big), "1"),
        "1",
        "resume/bb:1",
        false,
    );
    let store_dir = tmp.path().join("store");
    let reference = reg.reference("resume/bb:1");

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pulls", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}|{reference}", store_dir.display()))
        .env("BOXSOCK_IMAGE_CRASH_AT", "pull-half-blob")
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "the pull was not killed half-way: {status:?}");
    let partial = store_dir.join("partial").join(big.digest().hex());
    let had = std::fs::metadata(&partial).unwrap().len();
    assert!(had >= big.blob.len() as u64 / 2 && had < big.blob.len() as u64, "{had}");
    let store = ImageStore::open(&store_dir).unwrap();
    assert!(!store.blob_path(&big.digest()).exists(), "a half blob has a blob's name");

    let r = runtime().block_on(store.pull(&reference, &opts())).unwrap();
    let got: u64 = r.downloaded.iter().filter(|(d, _)| *d == big.digest()).map(|(_, n)| n).sum();
    assert_eq!(got, big.blob.len() as u64 - had, "the pull did not resume from {had}");
    let root = &store.layers(&reference).unwrap()[0];
    assert_eq!(std::fs::read(root.join("noise")).unwrap(), noise);
    assert!(!partial.exists());
}

/// The token endpoint of distribution's token auth: checks basic credentials and
/// answers a JWT (RS256, its certificate in `x5c`) granting the scopes asked for.
/// Serves from a thread until dropped.
struct TokenServer {
    addr: String,
    cert_pem: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    issued: Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    /// `None` (after a skip) when openssl is missing.
    fn start(user: &str, password: &str) -> Option<TokenServer> {
        if !have("openssl", "openssl", "openssl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, cert_pem, cert_der, key_der) = (
            dir.path().join("key.pem"),
            dir.path().join("cert.pem"),
            dir.path().join("cert.der"),
            dir.path().join("key.der"),
        );
        let run = |args: &[&std::ffi::OsStr]| {
            let o = Command::new("openssl").args(args).output().unwrap();
            assert!(o.status.success(), "openssl: {}", String::from_utf8_lossy(&o.stderr));
        };
        run(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            cert_pem.as_os_str(),
            "-days".as_ref(),
            "2".as_ref(),
            "-subj".as_ref(),
            "/CN=boxsock-token".as_ref(),
        ]);
        run(&[
            "pkcs8".as_ref(),
            "-topk8".as_ref(),
            "-nocrypt".as_ref(),
            "-in".as_ref(),
            key.as_os_str(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-out".as_ref(),
            key_der.as_os_str(),
        ]);
        run(&[
            "x509".as_ref(),
            "-in".as_ref(),
            cert_pem.as_os_str(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-out".as_ref(),
            cert_der.as_os_str(),
        ]);
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(&key_der).unwrap())
            .expect("openssl's key parses");
        use base64::Engine as _;
        let x5c =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cert_der).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (stop2, issued2) = (stop.clone(), issued.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let authorised = text.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("authorization") && v.trim() == expected
                    })
                });
                if !authorised {
                    let _ = conn.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\
                          Connection: close\r\n\r\n",
                    );
                    continue;
                }
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let mut access = Vec::new();
                for kv in query.split('&') {
                    let Some(("scope", v)) = kv.split_once('=') else { continue };
                    let scope = percent_decode(v);
                    // repository:<name>:<actions>
                    let mut parts = scope.splitn(3, ':');
                    let (Some(kind), Some(name), Some(actions)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let actions: Vec<&str> = actions.split(',').collect();
                    access.push(json!({"type": kind, "name": name, "actions": actions}));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = json!({
                    "iss": ISSUER, "sub": "boxsock", "aud": SERVICE,
                    "exp": now + 600, "nbf": now - 60, "iat": now - 60,
                    "jti": format!("{now}-{}", issued2.load(std::sync::atomic::Ordering::SeqCst)),
                    "access": access,
                });
                let signing = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                let jwt = format!("{signing}.{}", b64url(&sig));
                issued2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body =
                    json!({"token": jwt, "access_token": jwt, "expires_in": 600}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes());
            }
        });
        Some(TokenServer { addr, cert_pem, stop, thread: Some(thread), issued, _dir: dir })
    }
}

#[test]
fn the_bearer_token_flow_against_the_registrys_token_auth() {
    if !tools() {
        return;
    }
    let Some(tokens) = TokenServer::start("boxsock", "s3cret-pw") else { return };
    let issued = tokens.issued.clone();
    let reg = Registry::start(Auth::Token {
        realm: tokens.addr.clone(),
        cert_pem: tokens.cert_pem.clone(),
        _server: Box::new(tokens),
    });
    let tmp = tempfile::tempdir().unwrap();
    reg.push(&layout_with(&tmp.path().join("l"), &[busybox_layer()], "1"), "1", "tok/bb:1", false);
    let pushed = issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(pushed > 0, "skopeo's push went through the token server");
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let rt = runtime();
    // Without credentials the token server refuses: the control that auth is on.
    let err = rt.block_on(store.pull(&reg.reference("tok/bb:1"), &opts())).unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err:?}");
    let o = PullOptions {
        credentials: Some(Credentials { username: "boxsock".into(), password: "s3cret-pw".into() }),
        ..opts()
    };
    let r = rt.block_on(store.pull(&reg.reference("tok/bb:1"), &o)).unwrap();
    assert!(issued.load(std::sync::atomic::Ordering::SeqCst) > pushed, "no token was fetched");
    assert!(store.layers(&r.image.id.to_string()).unwrap()[0].join("bin/busybox").is_file());
}
