//! The Landlock jail, applied in a re-executed child (Landlock is per process and
//! irreversible, so never in the test process itself), and the Seatbelt renderer as text.

mod common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use boxsock_core::binding::PolicyIntent;
use boxsock_core::{PolicyAccess, PolicyPath};
use boxsock_libkrun::jail::{self, JailSpec, seatbelt};
use boxsock_test_support::{Need, skip};
use common::Fixture;

const CHILD_ENV: &str = "BOXSOCK_JAIL_CHILD";

#[derive(serde::Serialize, serde::Deserialize)]
struct ChildJob {
    spec: JailSpec,
    bind_at: PathBuf,
    write_inside: PathBuf,
    write_outside: PathBuf,
    read_outside: PathBuf,
    bind_outside: PathBuf,
    abstract_name: String,
}

fn attempt(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("err:{}", e.raw_os_error().unwrap_or(0)),
    }
}

/// Entry point of the re-executed child; a no-op in a normal test run.
#[test]
fn jail_child_entry() {
    let Ok(job) = std::env::var(CHILD_ENV) else { return };
    let job: ChildJob = serde_json::from_str(&job).unwrap();
    let mut out = serde_json::Map::new();
    out.insert(
        "apply".into(),
        attempt(jail::apply(&job.spec).map_err(std::io::Error::other)).into(),
    );
    let l = UnixListener::bind(&job.bind_at);
    out.insert(
        "bind".into(),
        attempt(
            l.as_ref()
                .map(drop)
                .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))),
        )
        .into(),
    );
    out.insert("connect".into(), attempt(UnixStream::connect(&job.bind_at).map(drop)).into());
    out.insert("write_inside".into(), attempt(std::fs::write(&job.write_inside, b"x")).into());
    out.insert("write_outside".into(), attempt(std::fs::write(&job.write_outside, b"x")).into());
    out.insert("read_outside".into(), attempt(std::fs::read(&job.read_outside).map(drop)).into());
    out.insert(
        "bind_outside".into(),
        attempt(UnixListener::bind(&job.bind_outside).map(drop)).into(),
    );
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(job.abstract_name.as_bytes())
            .unwrap();
        UnixStream::connect_addr(&a).map(drop)
    };
    out.insert("connect_abstract".into(), attempt(abs).into());
    let mut so = std::io::stdout();
    writeln!(so, "JAILRESULT {}", serde_json::Value::Object(out)).unwrap();
}

fn run_child(job: &ChildJob) -> serde_json::Value {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "jail_child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, serde_json::to_string(job).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("JAILRESULT ").map(|(_, j)| j.to_owned()))
        .unwrap_or_else(|| {
            panic!("child said nothing: {stdout} {}", String::from_utf8_lossy(&out.stderr))
        });
    serde_json::from_str(&line).unwrap()
}

#[test]
fn jailed_shim_binds_and_connects_through_the_link_and_writes_nowhere_else() {
    if !jail::landlock_jail::supported() {
        skip(
            Need::Kernel("Landlock ABI >= 6"),
            "Landlock with abstract-socket scoping is not available",
        );
        return;
    }
    let f = Fixture::new(200);
    // Build the policy while the link does NOT exist: intent comes from the strategy, not
    // from the disk, so the grant still lands on the target directory.
    assert!(std::fs::symlink_metadata(&f.link).is_err());
    let spec = JailSpec {
        enabled: true,
        read_only: jail::SYSTEM_READ_ONLY.iter().map(PathBuf::from).collect(),
        // Only the logs are read-write here, so the bind below is allowed by the socket
        // grant alone (on the link's target), not by a box-wide grant.
        read_write: vec![f.layout.logs_dir(&f.id)],
        devices: vec![PathBuf::from("/dev/null")],
        sockets: f.policy().to_vec(),
        socket_dir_fd: None,
    };
    assert!(matches!(spec.sockets[0].intent, PolicyIntent::SymlinkToDirectory { .. }));
    // The runtime runs ensure before launching the shim.
    f.ensure();
    let outside = tempfile::tempdir().unwrap();
    // Another box's file, in the same home: not readable from this box's jail.
    let secret = f.layout.boxes_dir().join("other-box-secret");
    std::fs::write(&secret, b"s").unwrap();
    let abs_name = format!("boxsock-jail-test-{}", std::process::id());
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        UnixListener::bind_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(abs_name.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let job = ChildJob {
        spec,
        bind_at: f.addr("agent.sock"),
        write_inside: f.layout.logs_dir(&f.id).join("inside.txt"),
        write_outside: outside.path().join("outside.txt"),
        read_outside: secret.clone(),
        bind_outside: outside.path().join("x.sock"),
        abstract_name: abs_name,
    };
    let r = run_child(&job);
    assert_eq!(r["apply"], "ok", "{r}");
    assert_eq!(r["bind"], "ok", "bind at the alias: {r}");
    assert_eq!(r["connect"], "ok", "{r}");
    assert_eq!(r["write_inside"], "ok", "{r}");
    let eacces = format!("err:{}", libc::EACCES);
    assert_eq!(r["write_outside"], eacces.as_str(), "{r}");
    assert_eq!(r["bind_outside"], eacces.as_str(), "{r}");
    assert_eq!(r["read_outside"], eacces.as_str(), "{r}");
    assert_eq!(
        r["connect_abstract"],
        format!("err:{}", libc::EPERM).as_str(),
        "abstract sockets are scoped: {r}"
    );
    assert!(!outside.path().join("outside.txt").exists());
    // The socket really is in the box's real socket directory.
    assert!(std::fs::symlink_metadata(f.layout.sockets_dir(&f.id).join("agent.sock")).is_ok());
    drop(abs);
}

#[test]
fn without_the_socket_grant_the_bind_is_denied() {
    // The same job minus the policy path: proves the grant above is what allowed the bind.
    if !jail::landlock_jail::supported() {
        skip(Need::Kernel("Landlock ABI >= 6"), "Landlock (ABI >= 6) is not available");
        return;
    }
    let f = Fixture::new(0);
    f.ensure();
    let outside = tempfile::tempdir().unwrap();
    let job = ChildJob {
        spec: JailSpec {
            enabled: true,
            read_only: jail::SYSTEM_READ_ONLY.iter().map(PathBuf::from).collect(),
            read_write: vec![f.layout.logs_dir(&f.id)],
            devices: vec![],
            sockets: vec![],
            socket_dir_fd: None,
        },
        bind_at: f.addr("agent.sock"),
        write_inside: f.layout.logs_dir(&f.id).join("inside.txt"),
        write_outside: outside.path().join("o.txt"),
        read_outside: outside.path().join("nothing"),
        bind_outside: outside.path().join("o.sock"),
        abstract_name: format!("boxsock-jail-none-{}", std::process::id()),
    };
    let r = run_child(&job);
    assert_eq!(r["apply"], "ok", "{r}");
    assert_eq!(r["bind"], format!("err:{}", libc::EACCES).as_str(), "{r}");
    assert_eq!(r["write_inside"], "ok", "{r}");
}

fn fake_canon(p: &Path) -> PathBuf {
    // macOS: /tmp is a link to /private/tmp; the fake resolves exactly that, and the
    // per-uid link, so a test can tell which parts were resolved.
    let s = p.to_string_lossy();
    if let Some(rest) = s.strip_prefix("/tmp") {
        if rest.starts_with("/boxsock-501/abc") {
            return PathBuf::from("/Users/u/deep/home/boxes/abc/sockets")
                .join(rest.trim_start_matches("/boxsock-501/abc").trim_start_matches('/'));
        }
        return PathBuf::from(format!("/private/tmp{rest}"));
    }
    p.to_path_buf()
}

#[test]
fn seatbelt_keeps_the_symlink_leaf_literal_and_grants_alias_and_real_paths() {
    let spec = JailSpec {
        enabled: true,
        read_only: vec![PathBuf::from("/usr/lib")],
        read_write: vec![PathBuf::from("/Users/u/deep/home/boxes/abc")],
        devices: vec![],
        sockets: vec![PolicyPath {
            path: PathBuf::from("/tmp/boxsock-501/abc"),
            intent: PolicyIntent::SymlinkToDirectory {
                target: PathBuf::from("/Users/u/deep/home/boxes/abc/sockets"),
            },
            access: PolicyAccess::Sockets,
        }],
        socket_dir_fd: None,
    };
    assert_eq!(
        seatbelt::alias_form(Path::new("/tmp/boxsock-501/abc"), &fake_canon),
        PathBuf::from("/private/tmp/boxsock-501/abc"),
        "the leaf stays literal, only the parent is canonicalised"
    );
    let p = seatbelt::render(&spec, &["agent.sock", "ready.sock"], &fake_canon);
    for sock in ["agent.sock", "ready.sock"] {
        for dir in ["/private/tmp/boxsock-501/abc", "/Users/u/deep/home/boxes/abc/sockets"] {
            let lit = format!("(path-literal \"{dir}/{sock}\")");
            assert!(
                p.contains(&format!("(allow network-bind (local unix-socket {lit}))")),
                "{lit}\n{p}"
            );
            assert!(
                p.contains(&format!("(allow network-outbound (remote unix-socket {lit}))")),
                "{lit}\n{p}"
            );
        }
    }
    assert!(p.contains("(allow file-read* file-write* (literal \"/private/tmp/boxsock-501/abc\") (subpath \"/private/tmp/boxsock-501/abc\"))"), "{p}");
    assert!(p.contains("(subpath \"/Users/u/deep/home/boxes/abc/sockets\")"), "{p}");
    // Never the unresolved /tmp form, which the sandbox would not match.
    assert!(!p.contains("\"/tmp/"), "{p}");
    assert!(p.starts_with("(version 1)\n(deny default)"), "{p}");
    assert!(p.contains("(allow file-read* (subpath \"/usr/lib\"))"));
}

#[test]
fn seatbelt_quotes_paths() {
    let spec = JailSpec {
        enabled: true,
        sockets: vec![PolicyPath {
            path: PathBuf::from("/h/a\"b"),
            intent: PolicyIntent::Directory,
            access: PolicyAccess::Sockets,
        }],
        ..JailSpec::default()
    };
    let p = seatbelt::render(&spec, &["s.sock"], &|p: &Path| p.to_path_buf());
    assert!(p.contains(r#""/h/a\"b/s.sock""#), "{p}");
}
