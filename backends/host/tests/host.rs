//! The `host` backend launching the real `boxsock-agent`, with addresses from the
//! `direct` strategy in a temp home (and abstract addresses, on Linux).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxsock_runtime::agent_client::{self, AgentClient};
use boxsock_core::backend::{AddressNeeds, Availability, BackendConfig, BackendError, BoxSockets, Isolation, LaunchSpec};
use boxsock_core::peer::{self, Listener, PeerPolicy};
use boxsock_core::registry::{BackendRegistration, Registry};
use boxsock_core::{Backend, BoxId, BoxLayout, SocketAddress, SocketBinding, boxdir, catalogue};
use boxsock_direct as _;
use boxsock_host::HostBackend;

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

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(dir.path());
    let id = BoxId::generate();
    boxdir::create_box_dirs(&layout, &id).unwrap();
    Home { _dir: dir, layout, id }
}

fn spec(h: &Home, agent: SocketAddress, ready: SocketAddress, env: Vec<(String, String)>) -> LaunchSpec {
    let agent_is_path = agent.as_path().is_some();
    LaunchSpec {
        id: h.id.clone(),
        layout: h.layout.clone(),
        sockets: BoxSockets {
            addresses: BTreeMap::from([("agent".to_owned(), agent), ("ready".to_owned(), ready)]),
            dir: match agent_is_path {
                true => boxsock_direct::Direct::default().socket_dir(&h.layout, &h.id).unwrap(),
                false => None,
            },
            peer: PeerPolicy::unchecked(),
        },
        log_file: h.layout.log_file(&h.id),
        network: false,
        policy: Vec::new(),
        env,
        settings: Default::default(),
    }
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
    let ready = direct.bind_stream(&h.layout, &h.id, "ready.sock").unwrap().into_tokio().unwrap();
    let agent_addr = direct.address(&h.layout, &h.id, "agent.sock").unwrap();
    let s = spec(&h, agent_addr, ready.address().clone(), vec![("BOXSOCK_HOST_TEST".into(), "from spec".into())]);

    let b = backend();
    let launched = b.launch(&s).unwrap();
    assert!(launched.companions.is_empty());
    let pid = launched.pid;

    let (mut conn, _) = tokio::time::timeout(LIMIT, ready.accept()).await.expect("no readiness").unwrap();
    let info = agent_client::read_ready(&mut conn).await.unwrap();
    assert_eq!(info.pid as i32, pid, "the reported pid is the process we launched");
    // Its own session, so the runtime's terminal signals do not reach it.
    assert_eq!(nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap().as_raw(), pid);

    let stream = direct.connect_stream(&h.layout, &h.id, "agent.sock").unwrap();
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

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(reap_within(pid), 128 + 9);
    assert!(!alive(pid), "agent {pid} still exists after kill and reap");
}

/// Issue 10: the agent binds its socket through the runtime's verified directory (an
/// inherited descriptor), never by the /tmp path; it checks peers on path addresses
/// too, and the embedder's `allowed_peer_uids` reach it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn path_addresses_go_through_the_inherited_dir_and_allowed_uids_reach_the_agent() {
    use std::os::unix::fs::MetadataExt;
    let h = home();
    let me = nix::unistd::geteuid().as_raw();
    let direct = boxsock_direct::Direct::default();
    direct.ensure(&h.layout, &h.id).unwrap();
    let ready = direct.bind_stream(&h.layout, &h.id, "ready.sock").unwrap().into_tokio().unwrap();
    let agent_addr = direct.address(&h.layout, &h.id, "agent.sock").unwrap();
    let mut s = spec(&h, agent_addr, ready.address().clone(), Vec::new());
    s.sockets.peer = PeerPolicy::allow_uids([me, 65534]);
    let launched = backend().launch(&s).unwrap();
    let (mut conn, cred) = tokio::time::timeout(LIMIT, ready.accept()).await.expect("no readiness").unwrap();
    assert_eq!(cred.expect("path strategies check peers").pid, launched.pid);
    agent_client::read_ready(&mut conn).await.unwrap();

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", launched.pid)).unwrap();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let after = |flag: &str| -> Vec<&str> {
        args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    };
    assert_eq!(after("--agent"), ["unix:///proc/self/fd/3/agent.sock"], "{args:?}");
    assert_eq!(after("--ready"), ["unix:///proc/self/fd/3/ready.sock"], "{args:?}");
    assert_eq!(after("--allow-uid"), [me.to_string(), "65534".to_owned()], "{args:?}");
    let fd3 = std::fs::read_link(format!("/proc/{}/fd/3", launched.pid)).unwrap();
    assert_eq!(fd3, h.layout.sockets_dir(&h.id), "the agent's descriptor 3 is the box's socket directory");
    let agent_file = h.layout.sockets_dir(&h.id).join("agent.sock");
    assert_eq!(std::fs::symlink_metadata(&agent_file).unwrap().mode() & 0o777, 0o600);

    let stream = direct.connect_stream(&h.layout, &h.id, "agent.sock").unwrap();
    AgentClient::connect(stream).unwrap().shutdown().await.unwrap();
    assert_eq!(reap_within(launched.pid), 0);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn abstract_addresses_make_the_agent_check_peer_uids() {
    let h = home();
    let me = nix::unistd::geteuid().as_raw();
    let tag = format!("{}-{}", std::process::id(), h.id);
    let agent = SocketAddress::Abstract(format!("boxsock-host-test-{tag}-agent").into_bytes());
    let ready = SocketAddress::Abstract(format!("boxsock-host-test-{tag}-ready").into_bytes());
    let policy = PeerPolicy::allow_uids([me]);
    let listener = Listener::new(peer::bind_stream_at(&ready).unwrap(), ready.clone(), "ready".into(), policy.clone())
        .into_tokio()
        .unwrap();

    let launched = backend().launch(&spec(&h, agent.clone(), ready, Vec::new())).unwrap();
    let (mut conn, cred) = tokio::time::timeout(LIMIT, listener.accept()).await.expect("no readiness").unwrap();
    assert_eq!(cred.unwrap().pid, launched.pid);
    agent_client::read_ready(&mut conn).await.unwrap();

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", launched.pid)).unwrap();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let at = args.iter().position(|a| a == "--allow-uid").expect("no --allow-uid for an abstract address");
    assert_eq!(args[at + 1], me.to_string());

    let stream = peer::connect_stream_at(&agent, "agent", &policy).unwrap();
    AgentClient::connect(stream).unwrap().shutdown().await.unwrap();
    assert_eq!(reap_within(launched.pid), 0);
    assert!(!alive(launched.pid));
}

#[test]
fn launch_errors_name_what_is_wrong() {
    let h = home();
    let b = backend();
    let a = SocketAddress::Path(h.layout.sockets_dir(&h.id).join("agent.sock"));
    let r = SocketAddress::Path(h.layout.sockets_dir(&h.id).join("ready.sock"));

    let mut s = spec(&h, a.clone(), r.clone(), Vec::new());
    s.sockets.addresses.remove("ready");
    match b.launch(&s) {
        Err(BackendError::Spec { reason, .. }) => assert!(reason.contains("\"ready\""), "{reason}"),
        other => panic!("{other:?}"),
    }

    let mut s = spec(&h, a.clone(), r.clone(), Vec::new());
    s.log_file = h.layout.box_dir(&h.id).join("no-such-dir/box.log");
    match b.launch(&s) {
        Err(BackendError::Spec { reason, .. }) => assert!(reason.contains("no-such-dir/box.log"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // An "agent" that cannot be executed: the error names the binary.
    let helpers = tempfile::tempdir().unwrap();
    let fake = helpers.path().join("boxsock-agent");
    std::fs::write(&fake, "#!/nonexistent/boxsock-interpreter\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = HostBackend::new(BackendConfig { helper_dir: Some(helpers.path().to_owned()), ..Default::default() });
    assert_eq!(b.find_agent().unwrap(), fake);
    match b.launch(&spec(&h, a, r, Vec::new())) {
        Err(BackendError::Spawn { what, .. }) => assert_eq!(what, boxsock_core::echo::path(&fake).to_string()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn declared_shape_and_availability() {
    let b = backend();
    assert_eq!(b.sockets(true), vec![catalogue::AGENT, catalogue::READY]);
    assert_eq!(b.sockets(false), b.sockets(true), "network is ignored");
    assert_eq!(b.address_needs(), AddressNeeds::PathOrAbstract);
    assert_eq!(b.isolation(), Isolation::None);
    assert_eq!(b.available(), Availability::Available);
    assert_eq!(b.agent_candidates()[0], agent_dir().join("boxsock-agent"));

    // A non-executable file in the helper directory is skipped, not picked.
    let helpers = tempfile::tempdir().unwrap();
    std::fs::write(helpers.path().join("boxsock-agent"), b"#!/bin/sh\n").unwrap();
    let b = HostBackend::new(BackendConfig { helper_dir: Some(helpers.path().to_owned()), ..Default::default() });
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
