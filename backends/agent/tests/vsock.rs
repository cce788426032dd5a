//! The agent's `vsock://` addresses, with real `AF_VSOCK` sockets where the machine
//! has them. A full round trip needs the `vsock_loopback` transport (CID 1); without
//! it those tests skip: a failure under `CI=true` where the kernel has the module to
//! load (`.ci/run` loads it), allowed where it has none. These tests never dial CID 2:
//! from inside a VM that is the real host.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_agent::vsock::{self, VsockListener, VsockStream};
use boxsock_core::proto::{self, Frame, Request, Response};
use boxsock_runtime::agent_client;
use boxsock_test_support::{Need, Unmakeable, skip, skip_allowed};

const AGENT: &str = env!("CARGO_BIN_EXE_boxsock-agent");
const LIMIT: Duration = Duration::from_secs(30);

/// A port unlikely to be taken by a parallel test run (pid, time, a counter).
fn unique_port() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mix = std::process::id().wrapping_mul(2_654_435_761)
        ^ nanos
        ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503);
    // Stay clear of low and well-known ports, and of VMADDR_PORT_ANY.
    100_000 + mix % 2_000_000_000
}

/// Whether `AF_VSOCK` sockets exist at all here (a transport is loaded).
fn vsock_sockets() -> Result<(), String> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Vsock,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map(drop)
    .map_err(|e| format!("socket(AF_VSOCK): {e}"))
}

/// Skip for want of a vsock transport: a failure under CI where the kernel has a
/// `vsock_loopback` to load (`.ci/run` loads it), allowed where it has none.
#[track_caller]
fn skip_without_vsock(why: String) {
    if loopback_in_kernel() {
        skip(Need::VsockLoopback, why);
    } else {
        skip_allowed(Unmakeable::NoVsockLoopbackInKernel, why);
    }
}

/// Whether this kernel has `vsock_loopback`: loaded or built in (`/sys/module`), or as
/// a module file of the running release.
fn loopback_in_kernel() -> bool {
    if std::path::Path::new("/sys/module/vsock_loopback").exists() {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir =
        std::path::Path::new("/lib/modules").join(release.trim()).join("kernel/net/vmw_vsock");
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("vsock_loopback.ko"))
    })
}

/// Whether a bind on (`cid`, `port`) is refused because the port is taken (a plain
/// blocking socket, no runtime needed).
fn port_taken(cid: u32, port: u32) -> bool {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, bind, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    match bind(fd.as_raw_fd(), &VsockAddr::new(cid, port)) {
        Ok(()) => false,
        Err(nix::errno::Errno::EADDRINUSE) => true,
        Err(e) => panic!("bind vsock {cid}:{port}: {e}"),
    }
}

struct Agent(Child);

impl Agent {
    fn spawn(args: &[&str]) -> Agent {
        let child = Command::new(AGENT)
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent listens on a vsock port (every CID) and notifies on a Unix path: the
/// port is really bound while it runs (our own bind gets EADDRINUSE) and released
/// after a graceful SIGTERM. Needs AF_VSOCK, not loopback.
#[tokio::test]
async fn listens_on_a_vsock_port_on_every_cid_and_releases_it() {
    if let Err(why) = vsock_sockets() {
        skip_without_vsock(format!("no AF_VSOCK transport here: {why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.sock");
    let listener = tokio::net::UnixListener::bind(&ready).unwrap();
    let port = unique_port();
    let uri = format!("vsock://{port}");
    let mut agent =
        Agent::spawn(&["--agent", &uri, "--ready", &format!("unix://{}", ready.display())]);
    let (mut s, _) =
        tokio::time::timeout(LIMIT, listener.accept()).await.expect("no readiness").unwrap();
    let info =
        tokio::time::timeout(LIMIT, agent_client::read_ready(&mut s)).await.unwrap().unwrap();
    assert_eq!(info.pid, agent.0.id());
    assert!(port_taken(vsock::CID_ANY, port), "the agent does not hold vsock port {port}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(agent.wait_exit().code(), Some(0));
    assert!(
        !port_taken(vsock::CID_ANY, port),
        "vsock port {port} still taken after the agent exited"
    );
}

/// A second agent on a port already taken exits 1 naming the vsock URI.
#[test]
fn a_taken_vsock_port_is_an_error_naming_the_uri() {
    if let Err(why) = vsock_sockets() {
        skip_without_vsock(format!("no AF_VSOCK transport here: {why}"));
        return;
    }
    let port = unique_port();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _g = rt.enter();
    let _held = VsockListener::bind(vsock::CID_ANY, port).unwrap();
    let uri = format!("vsock://{port}");
    let out = Command::new(AGENT)
        .args(["--agent", &uri, "--ready", "unix:///nonexistent/ready.sock"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on agent address {uri}")) && err.contains("in use"),
        "{err}"
    );
}

/// Nobody answers on the ready port: the agent exits 1 (after the kernel's connect
/// timeout), naming the vsock URI, the CID and the port. Dials CID 1 (local), never
/// the host.
#[test]
fn an_unanswered_vsock_ready_port_is_an_error_naming_it() {
    if let Err(why) = vsock_sockets() {
        skip_without_vsock(format!("no AF_VSOCK transport here: {why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent_path = dir.path().join("agent.sock");
    let port = unique_port();
    let uri = format!("vsock://1:{port}");
    let out = Command::new(AGENT)
        .args(["--agent", &format!("unix://{}", agent_path.display()), "--ready", &uri])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!agent_path.exists(), "the agent left its socket behind after failing to notify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot notify readiness on {uri}"))
            && err.contains(&format!("CID 1 port {port}")),
        "{err}"
    );
}

/// The whole guest path on one machine: the agent listens on a vsock port and
/// notifies on another, the test plays the host (hello, exec, exit code) over
/// `VMADDR_CID_LOCAL`. Needs the `vsock_loopback` transport.
#[tokio::test]
async fn round_trip_over_vsock_loopback() {
    let (agent_port, ready_port) = (unique_port(), unique_port());
    if let Err(why) = vsock::loopback_available(ready_port) {
        skip_without_vsock(format!(
            "no vsock loopback: {why}; try `modprobe vsock_loopback` as root"
        ));
        return;
    }
    let ready = VsockListener::bind(vsock::CID_LOCAL, ready_port).unwrap();
    let mut agent = Agent::spawn(&[
        "--agent",
        &format!("vsock://1:{agent_port}"),
        "--ready",
        &format!("vsock://1:{ready_port}"),
    ]);
    let (mut s, (peer_cid, _)) =
        tokio::time::timeout(LIMIT, ready.accept()).await.expect("no readiness").unwrap();
    assert_eq!(peer_cid, vsock::CID_LOCAL);
    match tokio::time::timeout(LIMIT, proto::read_frame::<Response, _>(&mut s))
        .await
        .unwrap()
        .unwrap()
    {
        Frame::Control(Response::Ready { version, pid }) => {
            assert_eq!(version, proto::VERSION);
            assert_eq!(pid, agent.0.id());
        }
        other => panic!("expected Ready, got {other:?}"),
    }

    let mut c = VsockStream::connect(vsock::CID_LOCAL, agent_port).await.unwrap();
    proto::write_frame(&mut c, &Frame::Control(Request::Hello { version: proto::VERSION }))
        .await
        .unwrap();
    let hello = proto::read_frame::<Response, _>(&mut c).await.unwrap();
    assert!(matches!(hello, Frame::Control(Response::Hello { .. })), "{hello:?}");
    let exec = Request::Exec {
        argv: vec!["sh".into(), "-c".into(), "echo over vsock; exit 7".into()],
        env: vec![],
        stdin: false,
        cwd: None,
        tty: false,
        winsize: None,
        user: None,
        rlimits: vec![],
    };
    proto::write_frame(&mut c, &Frame::Control(exec)).await.unwrap();
    let mut out = Vec::new();
    let code = loop {
        match tokio::time::timeout(LIMIT, proto::read_frame::<Response, _>(&mut c))
            .await
            .unwrap()
            .unwrap()
        {
            Frame::Stdout(b) => out.extend(b),
            Frame::Stderr(_) => {}
            Frame::Control(Response::Exit { code, .. }) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((code, out.as_slice()), (7, &b"over vsock\n"[..]));

    let mut c = VsockStream::connect(vsock::CID_LOCAL, agent_port).await.unwrap();
    proto::write_frame(&mut c, &Frame::Control(Request::Hello { version: proto::VERSION }))
        .await
        .unwrap();
    proto::read_frame::<Response, _>(&mut c).await.unwrap();
    proto::write_frame(&mut c, &Frame::Control(Request::Shutdown {})).await.unwrap();
    assert!(matches!(
        proto::read_frame::<Response, _>(&mut c).await.unwrap(),
        Frame::Control(Response::ShuttingDown {})
    ));
    assert_eq!(agent.wait_exit().code(), Some(0));
}

/// `--allow-uid` with a vsock address is refused up front, whichever side is vsock.
#[test]
fn allow_uid_with_vsock_is_refused() {
    for args in [
        ["--agent", "vsock://1024", "--ready", "unix:///nonexistent/r.sock"],
        ["--agent", "unix:///nonexistent/a.sock", "--ready", "vsock://1025"],
    ] {
        let out = Command::new(AGENT).args(args).args(["--allow-uid", "0"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--allow-uid cannot be checked on vsock://")
                && err.contains("no peer credentials"),
            "{err}"
        );
    }
}
