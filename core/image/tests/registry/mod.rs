//! The registry harness the pull tests share (`tests/pull.rs` here, and the CLI's
//! `cli/tests/images.rs` and the pull bench `benches/benches/image.rs` through
//! `#[path]`): Debian's `docker-registry` (distribution 2.8) on 127.0.0.1:<free port>,
//! its storage in a temporary directory, plain, behind htpasswd (basic) auth or behind a
//! token realm; filled by `skopeo copy`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use boxsock_test_support::{Need, skip};

/// The service name the token realm signs for.
pub const SERVICE: &str = "boxsock-registry";
/// The issuer of the token realm's JWTs.
pub const ISSUER: &str = "boxsock-test-issuer";

/// Static busybox (Debian's busybox-static), what the test images are built from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether `program` is on PATH (a skip naming `package` when not).
pub fn have(program: &str, package: &'static str, name: &'static str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if !found {
        skip(Need::Program { name, package }, format!("{program} is not on PATH"));
    }
    found
}

/// docker-registry, skopeo and busybox are here (skips naming what is missing).
pub fn tools() -> bool {
    have("docker-registry", "docker-registry", "docker-registry")
        && have("skopeo", "skopeo", "skopeo")
        && {
            let ok = Path::new(BUSYBOX).is_file();
            if !ok {
                skip(
                    Need::Program { name: "busybox", package: "busybox-static" },
                    "no /bin/busybox",
                );
            }
            ok
        }
}

/// How the registry authenticates.
pub enum Auth {
    None,
    /// htpasswd: a basic realm.
    Basic,
    /// distribution's token auth: a bearer realm served by a token server whose
    /// certificate is the registry's `rootcertbundle`.
    Token {
        /// `host:port` of the token server (`http://<realm>/token`).
        realm: String,
        /// The certificate the registry checks tokens with.
        cert_pem: PathBuf,
        /// The token server, kept alive as long as the registry.
        _server: Box<dyn std::any::Any>,
    },
}

/// A registry process, killed (and reaped) on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The user and password of an auth registry.
    pub creds: Option<(String, String)>,
    _dir: tempfile::TempDir,
    _auth: Auth,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Start one (panics when it never answers).
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let creds =
            (!matches!(auth, Auth::None)).then(|| ("boxsock".to_owned(), "s3cret-pw".to_owned()));
        if let (Auth::Basic, Some((u, p))) = (&auth, &creds) {
            assert!(
                have("htpasswd", "apache2-utils", "htpasswd"),
                "htpasswd needed for the auth registry"
            );
            let out = Command::new("htpasswd").args(["-Bbn", u, p]).output().unwrap();
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
        }
        // A free port: bind :0, read it, release it for the registry (retried below if
        // another process takes it in between).
        for _attempt in 0..5 {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let mut config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
            match &auth {
                Auth::None => {}
                Auth::Basic => config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: boxsock-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )),
                Auth::Token { realm, cert_pem, .. } => config.push_str(&format!(
                    "auth:\n  token:\n    realm: http://{realm}/token\n    service: {SERVICE}\n    \
                     issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    cert_pem.display()
                )),
            }
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Bounded wait for readiness: up to 300 × 100 ms for /v2/ to answer.
            for _ in 0..300 {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: most likely the port was taken; try another
                }
                if answers(&addr) {
                    return Registry { child, addr, creds, _dir: dir, _auth: auth };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the registry never answered on a free port (5 tries)")
    }

    /// `skopeo copy` the layout's `tag` (every platform with `all`) to `<addr>/<repo>`.
    /// Push with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, all: bool) {
        let mut c = Command::new("skopeo");
        c.args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            c.arg("--all");
        }
        if let Some((u, p)) = &self.creds {
            c.arg(format!("--dest-creds={u}:{p}"));
        }
        c.arg(format!("oci:{}:{tag}", layout.display()));
        c.arg(format!("docker://{}/{repo}", self.addr));
        let out = c.output().unwrap();
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `<addr>/<repo>`.
    pub fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }
}

/// Whether something at `addr` answers `GET /v2/` with HTTP.
pub fn answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
}
