//! A real `sandbox` box (a busybox root) given a hostname, and one joining a network
//! namespace made here (`ip netns add`, as an engine makes one for a container), as root
//! (CI and the build machines are root; the rootless refusal: `tests/rootless.rs`).
//!
//! The namespace tests run their control in the same run: a box without the setting
//! does not see the namespace's interface, so seeing it is the joining's doing.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use boxsock_core::settings::PortMapping;
use boxsock_runtime::{CreateOptions, Output, Runtime};

const APPLETS: &[&str] = &["sh", "cat", "echo", "grep", "hostname", "readlink"];

mod common;
use common::Env;

impl Env {
    fn new() -> Env {
        Env::with_root("hostname_netns", "roots/busybox", APPLETS)
    }

    async fn runtime(&self) -> Runtime {
        self.open_runtime(&[], false).await
    }

    fn opts(&self) -> boxsock_runtime::CreateOptionsBuilder {
        CreateOptions::builder().strategy("short-symlink").backend("sandbox").rootfs(&self.root)
    }

    async fn started(&self, rt: &Runtime, opts: CreateOptions) -> String {
        let rec = rt.create(opts).await.unwrap();
        rt.start(rec.id.as_str()).await.unwrap();
        self.track(rt, rec.id.as_str());
        rec.id.as_str().to_owned()
    }

    /// `create`, expected to fail: its error, and nothing was made.
    async fn create_refused(&self, rt: &Runtime, opts: CreateOptions, why: &str) -> String {
        let e = match rt.create(opts).await {
            Ok(rec) => panic!("{why}: box {} was created", rec.id),
            Err(e) => e.to_string(),
        };
        assert!(rt.list().unwrap().boxes.is_empty(), "{why}: a refused create left a box");
        println!("{why}: refused: {e}");
        e
    }
}

async fn sh(rt: &Runtime, id: &str, script: &str) -> Output {
    rt.command(id, "/bin/sh").args(["-c", script]).output().await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!("{:?}: stdout {:?} stderr {:?}", o.status, text(&o.stdout), text(&o.stderr))
}

fn ip(args: &[&str]) -> std::process::Output {
    let o = Command::new("ip").args(args).output().expect("run ip (iproute2; .ci/run installs it)");
    assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
    o
}

/// A network namespace made by `ip netns add` (at `/run/netns/NAME`), deleted on drop.
/// The interfaces inside go with it.
struct Netns {
    name: String,
}

impl Netns {
    /// A namespace named for this process and `tag`, with an interface `iface` (a veth
    /// pair inside it, as an engine gives a container; this kernel has no `dummy`).
    fn new(tag: &str, iface: &str) -> Netns {
        let name = format!("boxsock-test-{}-{tag}", std::process::id());
        // A leftover of a crashed run of this pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        let peer = format!("{iface}p");
        ip(&["-n", &ns.name, "link", "add", iface, "type", "veth", "peer", "name", &peer]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `net:[INODE]`, as `readlink /proc/self/ns/net` says in a process inside.
    fn link(&self) -> String {
        format!("net:[{}]", std::fs::metadata(self.path()).unwrap().ino())
    }

    fn delete(&self) {
        ip(&["netns", "delete", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

const PROBE: &str = "grep -c 'd0:' /proc/net/dev; readlink /proc/self/ns/net; hostname";

#[tokio::test(flavor = "multi_thread")]
async fn a_box_has_the_hostname_it_was_given_and_its_id_without_one() {
    let env = Env::new();
    let rt = env.runtime().await;
    let named = env.started(&rt, env.opts().hostname("web-1").build()).await;
    let longest = "h".repeat(64);
    let long = env.started(&rt, env.opts().hostname(longest.clone()).build()).await;
    let plain = env.started(&rt, env.opts().build()).await;
    for (id, want) in [(&named, "web-1"), (&long, longest.as_str()), (&plain, plain.as_str())] {
        let o = sh(&rt, id, "hostname; cat /proc/sys/kernel/hostname").await;
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(text(&o.stdout), format!("{want}\n{want}\n"), "box {id}: {}", show(&o));
    }
    // Stored with the box: every start sets it.
    rt.stop(&named, None).await.unwrap();
    rt.start(&named).await.unwrap();
    env.track(&rt, &named);
    let o = sh(&rt, &named, "hostname").await;
    assert_eq!(text(&o.stdout), "web-1\n", "after a restart: {}", show(&o));
    for id in [&named, &long, &plain] {
        rt.remove(id, true).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_hostnames_are_refused_at_create_naming_why() {
    let env = Env::new();
    let rt = env.runtime().await;
    let too_long = "h".repeat(65);
    for (name, reason) in [
        ("", "empty"),
        (too_long.as_str(), "65 bytes, above the kernel's limit of 64"),
        ("a/b", "holds a '/'"),
        ("a\0b", "holds a NUL byte"),
    ] {
        let e =
            env.create_refused(&rt, env.opts().hostname(name).build(), &format!("{name:?}")).await;
        assert!(e.contains("hostname") && e.contains(reason), "{name:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_joins_the_network_namespace_it_was_given_control_its_own_does_not() {
    let env = Env::new();
    let rt = env.runtime().await;
    let ns = Netns::new("join", "d0");
    let joined =
        env.started(&rt, env.opts().network_namespace(ns.path()).hostname("joined").build()).await;
    let own = env.started(&rt, env.opts().build()).await;

    let control = sh(&rt, &own, PROBE).await;
    let lines: Vec<String> = text(&control.stdout).lines().map(String::from).collect();
    assert_eq!(lines.first().map(String::as_str), Some("0"), "control: {}", show(&control));
    assert_ne!(lines.get(1), Some(&ns.link()), "control: {}", show(&control));

    let o = sh(&rt, &joined, PROBE).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        text(&o.stdout),
        format!("1\n{}\njoined\n", ns.link()),
        "the box is in the namespace and sees its d0: {}",
        show(&o)
    );
    // The namespace is the engine's: the box left its `lo` as it was (down).
    let lo = text(&ip(&["-n", &ns.name, "-o", "link", "show", "lo"]).stdout);
    let flags = lo.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
    assert!(!flags.split(',').any(|f| f == "UP"), "the box brought lo up: {lo}");

    // Opened at each start: a restart joins it again.
    rt.stop(&joined, None).await.unwrap();
    rt.start(&joined).await.unwrap();
    env.track(&rt, &joined);
    let o = sh(&rt, &joined, "readlink /proc/self/ns/net").await;
    assert_eq!(text(&o.stdout), format!("{}\n", ns.link()), "after a restart: {}", show(&o));
    for id in [&joined, &own] {
        rt.remove(id, true).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_removed_after_create_fails_that_start_naming_it() {
    let env = Env::new();
    let rt = env.runtime().await;
    let ns = Netns::new("gone", "d0");
    let rec = rt.create(env.opts().network_namespace(ns.path()).build()).await.unwrap();
    let id = rec.id.as_str().to_owned();
    ns.delete();
    let e = match rt.start(&id).await {
        Ok(_) => {
            env.track(&rt, &id);
            panic!("box {id} started without its network namespace");
        }
        Err(e) => e.to_string(),
    };
    println!("start refused: {e}");
    let shown = ns.path().display().to_string();
    assert!(e.contains(&shown) && e.contains("was the namespace removed?"), "{e}");
    assert!(rt.inspect(&id).unwrap().pid.is_none(), "a refused start left a process");
    // The path, as stored, names whatever namespace is there at the next start.
    let again = Netns::new("gone", "d0");
    rt.start(&id).await.unwrap();
    env.track(&rt, &id);
    let o = sh(&rt, &id, "readlink /proc/self/ns/net").await;
    assert_eq!(text(&o.stdout), format!("{}\n", again.link()), "{}", show(&o));
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_joined_is_refused_at_create_naming_it() {
    let env = Env::new();
    let rt = env.runtime().await;
    let file = env.tmp.path().join("not-a-namespace");
    std::fs::write(&file, b"").unwrap();
    let shown = file.display().to_string();
    let e = env.create_refused(&rt, env.opts().network_namespace(&file).build(), "a file").await;
    assert!(e.contains(&shown) && e.contains("not a namespace"), "{e}");
    let e = env
        .create_refused(&rt, env.opts().network_namespace(env.tmp.path()).build(), "a directory")
        .await;
    assert!(e.contains("it is a directory"), "{e}");
    let mnt = env.opts().network_namespace("/proc/self/ns/mnt").build();
    let e = env.create_refused(&rt, mnt, "a mount namespace").await;
    assert!(e.contains("/proc/self/ns/mnt") && e.contains("a mount namespace"), "{e}");
    let e =
        env.create_refused(&rt, env.opts().network_namespace("x/net").build(), "relative").await;
    assert!(e.contains("not an absolute path"), "{e}");
    let e = env
        .create_refused(&rt, env.opts().network_namespace(&file).network(true).build(), "+network")
        .await;
    assert!(e.contains("a network of its own (network) was asked for too"), "{e}");
    let port: PortMapping = "127.0.0.1:18080:80".parse().unwrap();
    let ports = env.opts().network_namespace(&file).port(port).build();
    let e = env.create_refused(&rt, ports, "+ports").await;
    assert!(e.contains("ports are published"), "{e}");
    // Control: the same builder with a network namespace is created.
    let ok = env.opts().network_namespace("/proc/self/ns/net").build();
    let rec = rt.create(ok).await.expect("control: a network namespace's file is accepted");
    rt.remove(rec.id.as_str(), true).await.unwrap();
}

/// The backend's own check (a caller that skips the runtime): ports and a joined
/// namespace are refused together.
#[test]
fn the_backend_refuses_ports_with_a_joined_namespace() {
    use boxsock_core::Backend;
    let b = boxsock_sandbox::SandboxBackend::new(Default::default());
    let mut s = boxsock_core::backend::BoxSettings::default();
    s.network_namespace = Some("/proc/self/ns/net".into());
    b.check_settings(&s).expect("control: a network namespace alone");
    s.ports.push("127.0.0.1:18080:80".parse().unwrap());
    let e = b.check_settings(&s).unwrap_err().to_string();
    assert!(e.contains("no network of its own to publish ports from"), "{e}");
}

/// The probe's role, played by this very test binary inside a box (run by the box's
/// copy of the agent's loader, as in `escape.rs`): connect to the abstract name in
/// `SANDBOX_PROBE_ABSTRACT` and say whether it worked.
#[test]
fn probe_role() {
    let Some(name) = std::env::var_os("SANDBOX_PROBE_ABSTRACT") else { return };
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_encoded_bytes()).unwrap();
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(_) => println!("PROBE CONNECTED"),
        Err(e) => println!("PROBE REFUSED {e}"),
    }
}

async fn probe(rt: &Runtime, id: &str, in_box: bool, name: &str) -> String {
    let me = std::env::current_exe().unwrap();
    let mut c = if in_box {
        let mut c = rt.command(id, "/.boxsock/ld.so");
        c.args(["--library-path", "/.boxsock", "/bin/probe"]);
        c
    } else {
        rt.command(id, me.to_str().unwrap())
    };
    let o = c
        .args(["--exact", "probe_role", "--nocapture", "--test-threads=1"])
        .env("SANDBOX_PROBE_ABSTRACT", name)
        .output()
        .await
        .unwrap();
    let out = text(&o.stdout);
    let line = out.lines().find_map(|l| l.find("PROBE ").map(|i| &l[i..]));
    line.unwrap_or_else(|| panic!("{}", show(&o))).into()
}

/// A box that joins the host's own network namespace shares its abstract socket
/// namespace, which a box's own namespace otherwise keeps apart (containerd's
/// CVE-2020-15257): Landlock's scope still refuses a host abstract socket and the box's
/// own agent name. Control: a `host` box reaches both.
#[tokio::test(flavor = "multi_thread")]
async fn a_box_in_the_host_network_namespace_cannot_reach_host_abstract_sockets() {
    let env = Env::new();
    std::fs::copy(std::env::current_exe().unwrap(), env.root.join("bin/probe")).unwrap();
    let rt = env.open_runtime(&[], true).await;
    let name = format!("boxsock-netns-test-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let opts = CreateOptions::builder()
        .strategy("abstract")
        .backend("sandbox")
        .rootfs(&env.root)
        .network_namespace("/proc/self/ns/net")
        .build();
    let id = env.started(&rt, opts).await;
    let o = sh(&rt, &id, "readlink /proc/self/ns/net").await;
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(text(&o.stdout).trim(), host_ns.to_str().unwrap(), "{}", show(&o));
    let info = rt.inspect(&id).unwrap();
    let agent =
        info.sockets.iter().find(|s| s.socket == "agent").and_then(|s| s.address.clone()).unwrap();
    let agent = agent.strip_prefix('@').unwrap_or_else(|| panic!("{agent}")).to_owned();
    let host = env
        .started(&rt, CreateOptions::builder().strategy("short-symlink").backend("host").build())
        .await;
    for target in [&name, &agent] {
        let control = probe(&rt, &host, false, target).await;
        assert_eq!(control, "PROBE CONNECTED", "control: the host backend reaches {target}");
        let o = probe(&rt, &id, true, target).await;
        // EPERM: the name is there (the same namespace), Landlock refuses it.
        assert!(o.starts_with("PROBE REFUSED"), "the box reached {target}: {o}");
        assert!(o.contains("Operation not permitted"), "not Landlock's refusal: {o}");
        println!("{target}: {o}");
    }
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}
