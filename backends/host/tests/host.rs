//! The `host` backend launching the real `boxsock-agent`, with addresses from the
//! `direct` strategy in a temp home (and abstract addresses, on Linux).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxsock_core::backend::{
    AddressNeeds, Availability, BackendConfig, BackendError, BoxSockets, Isolation, LaunchSpec,
    Readiness,
};
use boxsock_core::catalogue::Binder;
use boxsock_core::peer::{self, Listener, PeerPolicy};
use boxsock_core::registry::{BackendRegistration, Registry};
use boxsock_core::sockdir::SocketDir;
use boxsock_core::{Backend, BoxId, BoxLayout, SocketAddress, SocketBinding, boxdir, catalogue};
use boxsock_core::{BoxBinding, Opening, PathStrategy, Socket, SocketKind};
use boxsock_direct as _;
use boxsock_host::HostBackend;
use boxsock_runtime::agent_client::{self, AgentClient};

const LIMIT: Duration = Duration::from_secs(30);

/// The directory holding a built `boxsock-agent`. `cargo test -p boxsock-host` alone
/// does not build other packages' binaries, so build it once if it is missing.
fn agent_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

fn backend() -> HostBackend {
    HostBackend::new(BackendConfig { helper_dir: Some(agent_dir()), ..Default::default() })
}

struct Home {
    _dir: tempfile::TempDir,
    layout: BoxLayout,
    id: BoxId,
}

/// The box's binding through `direct`, opened for use.
fn held(h: &Home) -> Arc<dyn BoxBinding> {
    Arc::new(boxsock_direct::Direct::default())
        .open_box(&h.layout, &h.id, Opening::Use, &[])
        .unwrap()
}

/// The catalogue key of a socket file of the test's own (leaked: a few per test).
fn sock(file: &str) -> Socket {
    let name = file.strip_suffix(".sock").unwrap_or(file);
    Socket {
        name: Box::leak(name.to_owned().into_boxed_str()),
        kind: SocketKind::Stream,
        binder: Binder::Runtime,
        derived: &[],
    }
}

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(dir.path());
    let id = BoxId::generate();
    boxdir::create_box_dirs(&layout, &id).unwrap();
    Home { _dir: dir, layout, id }
}

/// A launch spec handing `agent` to the agent, with a fresh ready channel: the spec and
/// the test's end of the channel. Drop the spec after `launch`, as the runtime does, so
/// the agent holds the only other end.
fn spec(
    h: &Home,
    agent: Listener,
    dir: Option<SocketDir>,
    env: Vec<(String, String)>,
) -> (LaunchSpec, tokio::net::UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut sockets = BoxSockets::new(
        BTreeMap::from([("agent".to_owned(), agent.address().clone())]),
        dir,
        PeerPolicy::unchecked(),
    );
    sockets.handed.insert("agent".into(), Arc::new(agent));
    sockets.ready_channel = Some(Arc::new(OwnedFd::from(theirs)));
    let spec = LaunchSpec {
        id: h.id.clone(),
        layout: h.layout.clone(),
        sockets,
        log_file: h.layout.log_file(&h.id),
        network: false,
        policy: Vec::new(),
        env,
        settings: Default::default(),
    };
    (spec, tokio::net::UnixStream::from_std(ours).unwrap())
}

/// The arguments of process `pid`.
fn argv(pid: i32) -> Vec<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Reap `pid` if it has ended, without blocking: its exit code, or 128 + signal.
fn reap(pid: i32) -> nix::Result<Option<i32>> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))? {
        WaitStatus::Exited(_, code) => Ok(Some(code)),
        WaitStatus::Signaled(_, sig, _) => Ok(Some(128 + sig as i32)),
        _ => Ok(None),
    }
}

/// Reap `pid` (our child), waiting a bounded time; returns its code.
fn reap_within(pid: i32) -> i32 {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(code) = reap(pid).unwrap() {
            return code;
        }
        assert!(Instant::now() < deadline, "agent {pid} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn launch_with_direct_addresses_ready_exec_then_kill_and_gone() {
    let h = home();
    let direct = boxsock_direct::Direct::default();
    direct.ensure(&h.layout, &h.id).unwrap();
    let agent = held(&h).listen(&sock("agent.sock")).unwrap();
    let dir = Some(direct.open_dir(&h.layout, &h.id).unwrap());
    let (s, mut ready) =
        spec(&h, agent, dir, vec![("BOXSOCK_HOST_TEST".into(), "from spec".into())]);

    let b = backend();
    let launched = b.launch(&s).unwrap();
    drop(s);
    assert!(launched.companions.is_empty());
    let pid = launched.process.pid();

    let info = tokio::time::timeout(LIMIT, agent_client::read_ready(&mut ready))
        .await
        .expect("no readiness")
        .unwrap();
    assert_eq!(info.pid as i32, pid, "the reported pid is the process we launched");
    // Its own session, so the runtime's terminal signals do not reach it.
    assert_eq!(nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap().as_raw(), pid);

    let stream = held(&h).connect(&sock("agent.sock"), None).unwrap();
    let mut out = Vec::new();
    let code = tokio::time::timeout(
        LIMIT,
        AgentClient::connect(stream).unwrap().exec(
            &["sh", "-c", "printf '%s' \"$BOXSOCK_HOST_TEST\"; exit 5"],
            &[],
            None::<&[u8]>,
            |b| out.extend_from_slice(b),
            |_| {},
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((code, &out[..]), (5, &b"from spec"[..]));

    let log = std::fs::read_to_string(h.layout.log_file(&h.id)).unwrap();
    assert!(log.contains("readiness sent"), "agent log not in the box log: {log}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    assert_eq!(reap_within(pid), 128 + 9);
    assert!(!alive(pid), "agent {pid} still exists after kill and reap");
}

/// Decision 0010: the agent binds nothing and is told no name: it inherits the listener
/// the runtime bound (descriptor 3) and its end of the ready channel (4), nothing else;
/// it still checks peers with the box's policy, and the embedder's
/// `allowed_peer_uids` reach it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_agent_inherits_its_listener_and_ready_channel_and_is_told_no_name() {
    use std::os::unix::fs::MetadataExt;
    let h = home();
    let me = nix::unistd::geteuid().as_raw();
    let direct = boxsock_direct::Direct::default();
    direct.ensure(&h.layout, &h.id).unwrap();
    let agent = held(&h).listen(&sock("agent.sock")).unwrap();
    let agent_ino =
        std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&agent)))
            .unwrap()
            .ino();
    let dir = Some(direct.open_dir(&h.layout, &h.id).unwrap());
    let (mut s, mut ready) = spec(&h, agent, dir, Vec::new());
    s.sockets.peer = PeerPolicy::allow_uids([me, 65534]);
    let launched = backend().launch(&s).unwrap();
    drop(s);
    let info = tokio::time::timeout(LIMIT, agent_client::read_ready(&mut ready))
        .await
        .expect("no readiness")
        .unwrap();
    assert_eq!(info.pid as i32, launched.process.pid());

    let args = argv(launched.process.pid());
    assert_eq!(
        args[1..],
        [
            "--agent-fd",
            "3",
            "--ready-fd",
            "4",
            "--allow-uid",
            &me.to_string(),
            "--allow-uid",
            "65534"
        ],
        "{args:?}"
    );
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", launched.process.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut fds: Vec<i32> = fds.iter().map(|f| f.parse().unwrap()).collect();
    fds.sort();
    // The agent's tokio runtime opens descriptors of its own (epoll, eventfd) above 4;
    // descriptor 4, the ready channel, closes once the frame is sent.
    assert_eq!(fds[..4], [0, 1, 2, 3], "{fds:?}");
    let fd3 = std::fs::metadata(format!("/proc/{}/fd/3", launched.process.pid())).unwrap();
    assert_eq!(fd3.ino(), agent_ino, "the agent's descriptor 3 is the listener the test bound");
    let agent_file = h.layout.sockets_dir(&h.id).join("agent.sock");
    assert_eq!(std::fs::symlink_metadata(&agent_file).unwrap().mode() & 0o777, 0o600);

    let stream = held(&h).connect(&sock("agent.sock"), None).unwrap();
    AgentClient::connect(stream).unwrap().shutdown().await.unwrap();
    assert_eq!(reap_within(launched.process.pid()), 0);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn abstract_addresses_make_the_agent_check_peer_uids() {
    let h = home();
    let me = nix::unistd::geteuid().as_raw();
    let tag = format!("{}-{}", std::process::id(), h.id);
    let agent = SocketAddress::Abstract(format!("boxsock-host-test-{tag}-agent").into_bytes());
    let policy = PeerPolicy::allow_uids([me]);
    let listener = Listener::new(
        peer::bind_stream_at(&agent).unwrap(),
        agent.clone(),
        "agent".into(),
        policy.clone(),
    );
    let (mut s, mut ready) = spec(&h, listener, None, Vec::new());
    s.sockets.peer = policy.clone();
    let launched = backend().launch(&s).unwrap();
    drop(s);
    let info = tokio::time::timeout(LIMIT, agent_client::read_ready(&mut ready))
        .await
        .expect("no readiness")
        .unwrap();
    assert_eq!(info.pid as i32, launched.process.pid());

    let args = argv(launched.process.pid());
    let at = args
        .iter()
        .position(|a| a == "--allow-uid")
        .expect("no --allow-uid for an abstract address");
    assert_eq!(args[at + 1], me.to_string());
    assert!(
        !args.iter().any(|a| a.contains("boxsock-host-test")),
        "the abstract name is in the agent's argv: {args:?}"
    );

    let stream = peer::connect_stream_at(&agent, "agent", &policy).unwrap();
    AgentClient::connect(stream).unwrap().shutdown().await.unwrap();
    assert_eq!(reap_within(launched.process.pid()), 0);
    assert!(!alive(launched.process.pid()));
}

#[tokio::test]
async fn launch_errors_name_what_is_wrong() {
    let h = home();
    let b = backend();
    let direct = boxsock_direct::Direct::default();
    direct.ensure(&h.layout, &h.id).unwrap();
    // Each spec below lives to the end of the test: a file of its own.
    let listener = |n: u32| held(&h).listen(&sock(&format!("agent-{n}.sock"))).unwrap();

    let (mut s, _r) = spec(&h, listener(1), None, Vec::new());
    s.sockets.handed.clear();
    match b.launch(&s) {
        Err(BackendError::Binding(e)) => assert!(e.to_string().contains("\"agent\""), "{e}"),
        other => panic!("{other:?}"),
    }

    let (mut s, _r) = spec(&h, listener(2), None, Vec::new());
    s.sockets.ready_channel = None;
    match b.launch(&s) {
        Err(BackendError::Spec { reason, .. }) => {
            assert!(reason.contains("ready channel"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    let (mut s, _r) = spec(&h, listener(3), None, Vec::new());
    s.log_file = h.layout.box_dir(&h.id).join("no-such-dir/box.log");
    match b.launch(&s) {
        Err(BackendError::Spec { reason, .. }) => {
            assert!(reason.contains("no-such-dir/box.log"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // An "agent" that cannot be executed: the error names the binary.
    let helpers = tempfile::tempdir().unwrap();
    let fake = helpers.path().join("boxsock-agent");
    std::fs::write(&fake, "#!/nonexistent/boxsock-interpreter\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = HostBackend::new(BackendConfig {
        helper_dir: Some(helpers.path().to_owned()),
        ..Default::default()
    });
    assert_eq!(b.find_agent().unwrap(), fake);
    match b.launch(&spec(&h, listener(4), None, Vec::new()).0) {
        Err(BackendError::Spawn { what, .. }) => {
            assert_eq!(what, boxsock_core::echo::path(&fake).to_string())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn declared_shape_and_availability() {
    let b = backend();
    assert_eq!(b.sockets(true), vec![boxsock_host::AGENT]);
    assert_eq!(boxsock_host::AGENT.binder, Binder::Handed);
    assert_eq!(boxsock_host::AGENT.name, catalogue::AGENT.name);
    assert_eq!(b.readiness(), Readiness::Channel);
    assert_eq!(b.sockets(false), b.sockets(true), "network is ignored");
    assert_eq!(b.address_needs(), AddressNeeds::PathOrAbstract);
    assert_eq!(b.isolation(), Isolation::None);
    assert_eq!(b.available(), Availability::Available);
    assert_eq!(b.agent_candidates()[0], agent_dir().join("boxsock-agent"));

    // A non-executable file in the helper directory is skipped, not picked.
    let helpers = tempfile::tempdir().unwrap();
    std::fs::write(helpers.path().join("boxsock-agent"), b"#!/bin/sh\n").unwrap();
    let b = HostBackend::new(BackendConfig {
        helper_dir: Some(helpers.path().to_owned()),
        ..Default::default()
    });
    assert_ne!(b.find_agent().unwrap(), helpers.path().join("boxsock-agent"));
}

#[test]
fn registered_as_host_and_summary_says_no_isolation() {
    let reg = Registry::<BackendRegistration>::collected();
    let entry = reg.get("host").unwrap();
    assert!(entry.summary.contains("NO isolation"), "{}", entry.summary);
    let built = reg.build("host", &BackendConfig::default()).unwrap();
    assert_eq!(built.name(), "host");
}
