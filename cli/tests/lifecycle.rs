//! The runtime through the library, with real processes (the `boxsock-agent` on the
//! `host` backend), a real SQLite file and real sockets and links in temp dirs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use boxsock::boxsock_core::backend::{AddressNeeds, Backend, BackendError, Isolation, LaunchSpec, Launched};
use boxsock::boxsock_core::{SocketSpec, catalogue};
use boxsock::{
    Availability, BackendConfig, BackendRegistration, BindingError, BoxState, CreateOptions, ExecIo, LockMode, ProcessIdentity,
    Registry, Runtime, RuntimeError, builtin_backends,
};
use common::{Env, LIMIT, pid_running, wait_until};

// Name the strategy and backend crates so their registrations are linked.
use boxsock_abstract as _;
use boxsock_direct as _;
use boxsock_host as _;
use boxsock_libkrun as _;
use boxsock_short_symlink as _;

async fn exec_out(rt: &Runtime, id: &str, argv: &[&str]) -> Result<(i32, String, String), RuntimeError> {
    let (mut out, mut err) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut on_out, mut on_err) = (|b: &[u8]| out.extend_from_slice(b), |b: &[u8]| err.extend_from_slice(b));
    let code = rt
        .exec(id, argv.iter().map(|s| s.to_string()).collect(), vec![], ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err })
        .await?;
    Ok((code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned()))
}

/// The whole life of one box, asserting the process and every trace of it are gone.
async fn full_lifecycle(env: &Env, rt: &Runtime, strategy: &str, backend: &str) {
    let b = rt.create(CreateOptions::new(strategy, backend)).await.unwrap_or_else(|e| panic!("{strategy}/{backend}: create: {e}"));
    let id = b.id.to_string();
    assert_eq!(b.state, BoxState::Created);
    let s = rt.strategy(strategy).unwrap();

    let running = rt.start(&id).await.unwrap_or_else(|e| panic!("{strategy}/{backend}: start: {e}"));
    assert_eq!(running.state, BoxState::Running);
    let pid = running.process.expect("a running box has a process").pid;
    assert!(pid_running(pid));
    // The ready socket is gone once the box is ready.
    assert!(!rt.layout().sockets_dir(&b.id).join("ready.sock").exists());

    let (code, out, err) = exec_out(rt, &id, &["sh", "-c", "echo out-$((6*7)); echo err >&2; exit 3"]).await.unwrap();
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out-42\n", "err\n"), "{strategy}/{backend}");

    // inspect reports the watched process and every socket's live address.
    let info = rt.inspect(&id).unwrap();
    assert_eq!(info.pid, Some(pid));
    assert!(info.alive);
    let agent = info.sockets.iter().find(|s| s.socket == "agent").expect("agent socket listed");
    assert!(agent.fits && agent.bytes.unwrap() < agent.limit, "{agent:?}");
    assert_eq!(agent.address.as_deref().unwrap(), s.address(rt.layout(), &b.id, "agent.sock").unwrap().display_string());

    // Stop: really gone, then restart.
    let stopped = rt.stop(&id, None).await.unwrap();
    assert_eq!(stopped.state, BoxState::Stopped);
    assert!(!pid_running(pid), "pid {pid} still running after stop");
    let again = rt.start(&id).await.unwrap();
    let pid2 = again.process.unwrap().pid;
    assert_ne!(pid2, pid);
    assert_eq!(exec_out(rt, &id, &["true"]).await.unwrap().0, 0);

    // A running box is not removed without force.
    assert!(matches!(rt.remove(&id, false).await, Err(RuntimeError::StillRunning { .. })));
    rt.remove(&id, true).await.unwrap();
    assert!(!pid_running(pid2), "pid {pid2} still running after remove");
    assert!(matches!(rt.get(&id), Err(RuntimeError::NotFound(_))));
    assert!(!rt.layout().box_dir(&b.id).exists());
    if let Some(link) = s.binding_path(rt.layout(), &b.id) {
        assert!(std::fs::symlink_metadata(&link).is_err(), "binding {} leaked", link.display());
    }
    assert!(env.box_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_for_every_compatible_available_pair() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let mut ran = 0;
    for backend in builtin_backends().names() {
        let b = rt.backend(backend).unwrap();
        if let Availability::Unavailable { reason } = b.available() {
            eprintln!("skipped: backend {backend} unavailable here: {reason}");
            continue;
        }
        for strategy in boxsock::builtin_strategies().names() {
            let s = rt.strategy(strategy).unwrap();
            if !s.capabilities().supported_here() {
                eprintln!("skipped: strategy {strategy} unsupported here");
                continue;
            }
            if let Err(reason) = boxsock::boxsock_core::runtime::compatibility(&*s, &*b) {
                eprintln!("skipped: {strategy}/{backend} incompatible: {reason}");
                continue;
            }
            full_lifecycle(&env, &rt, strategy, backend).await;
            ran += 1;
        }
    }
    assert!(ran >= 3, "expected at least the three strategies on the host backend, ran {ran}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_deeper_than_200_bytes_works_end_to_end_with_short_symlink() {
    let env = Env::deep(201);
    assert!(env.home.as_os_str().len() > 200);
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    // The direct strategy cannot serve this home: refused before anything is written.
    let e = rt.create(CreateOptions::new("direct", "host")).await.unwrap_err();
    match &e {
        RuntimeError::Binding(BindingError::PathTooLong { socket, path, len, limit }) => {
            assert_eq!(socket, "agent");
            assert!(path.starts_with(env.home.to_str().unwrap()) && path.ends_with("agent.sock"), "{path}");
            assert_eq!(*len, path.len());
            assert_eq!(*limit, 108);
        }
        other => panic!("expected PathTooLong, got {other}"),
    }
    assert!(e.to_string().contains("agent") && e.to_string().contains("108"), "{e}");
    assert!(env.box_dirs().is_empty() && rt.list().unwrap().boxes.is_empty());
    full_lifecycle(&env, &rt, "short-symlink", "host").await;
}

/// A backend that can only take filesystem paths (like libkrun), declared here so the
/// test does not depend on libkrun being usable.
#[derive(Debug)]
struct PathOnlyBackend;

impl Backend for PathOnlyBackend {
    fn name(&self) -> &str {
        "path-only-test"
    }
    fn sockets(&self, _network: bool) -> Vec<SocketSpec> {
        vec![catalogue::AGENT, catalogue::READY]
    }
    fn address_needs(&self) -> AddressNeeds {
        AddressNeeds::PathOnly
    }
    fn isolation(&self) -> Isolation {
        Isolation::None
    }
    fn available(&self) -> Availability {
        Availability::Available
    }
    fn launch(&self, _spec: &LaunchSpec) -> Result<Launched, BackendError> {
        Err(BackendError::Spec { backend: "path-only-test".into(), reason: "never launched in tests".into() })
    }
}

fn build_path_only(_: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(PathOnlyBackend))
}

static PATH_ONLY: BackendRegistration =
    BackendRegistration { name: "path-only-test", summary: "test backend taking only paths", build: build_path_only };

#[tokio::test]
async fn abstract_with_a_path_only_backend_is_refused_readably_and_writes_nothing() {
    let env = Env::new();
    let mut o = env.options();
    o.backends = Registry::from_entries("backend", [&boxsock_host::REGISTRATION, &PATH_ONLY]);
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let e = rt.create(CreateOptions::new("abstract", "path-only-test")).await.unwrap_err();
    match &e {
        RuntimeError::Incompatible { strategy, backend, reason } => {
            assert_eq!((strategy.as_str(), backend.as_str()), ("abstract", "path-only-test"));
            assert!(reason.contains("path"), "{reason}");
        }
        other => panic!("expected Incompatible, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("\"abstract\"") && msg.contains("cannot be used with backend"), "{msg}");
    assert!(env.box_dirs().is_empty());
    assert!(rt.list().unwrap().boxes.is_empty());
    // The real path-only backend (libkrun) is refused the same way, whether or not it
    // can run on this machine.
    let (rt2, _) = Runtime::open(env.root.path().join("home2"), env.options()).await.unwrap();
    match rt2.create(CreateOptions::new("abstract", "libkrun")).await {
        Err(RuntimeError::Incompatible { backend, .. }) => assert_eq!(backend, "libkrun"),
        other => panic!("expected Incompatible, got {other:?}"),
    }
    rt2.close();
    // The same strategy with the host backend (which takes abstract names) is fine.
    let b = rt.create(CreateOptions::new("abstract", "host")).await.unwrap();
    rt.remove(b.id.as_str(), false).await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_before_touching_disk() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let mut o = CreateOptions::new("short-symlink", "host");
    o.name = Some("../escape".into());
    assert!(matches!(rt.create(o).await, Err(RuntimeError::InvalidName(_))));
    assert!(matches!(
        rt.create(CreateOptions::new("nope", "host")).await,
        Err(RuntimeError::Registry(boxsock::boxsock_core::registry::RegistryError::Unknown { .. }))
    ));
    assert!(matches!(rt.create(CreateOptions::new("short-symlink", "nope")).await, Err(RuntimeError::Registry(_))));
    let mut o = CreateOptions::new("short-symlink", "host");
    o.name = Some("web".into());
    rt.create(o.clone()).await.unwrap();
    let e = rt.create(o).await.unwrap_err();
    assert!(e.to_string().contains("\"web\" is already used"), "{e}");
    assert_eq!(env.box_dirs().len(), 1);
    assert_eq!(env.links().len(), 1);
    for bad in ["nonexistent", "", "../x"] {
        assert!(matches!(rt.start(bad).await, Err(RuntimeError::NotFound(_))), "{bad:?}");
    }
    rt.remove("web", false).await.unwrap();
    assert!(env.links().is_empty() && env.box_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_monitor_marks_a_killed_box_stopped_and_the_process_is_really_gone() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let id = b.id.to_string();
    rt.start(&id).await.unwrap();
    let info = rt.inspect(&id).unwrap();
    let pid = info.pid.unwrap();
    // The pid inspect reports is the one the runtime watches and would kill.
    let watched = rt.process(&id).unwrap().unwrap();
    assert_eq!(watched.identity().pid, pid);
    assert_eq!(Some(watched.identity().start_time), info.start_time);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the box to be stopped", || rt.get(&id).unwrap().state == BoxState::Stopped);
    let rec = rt.get(&id).unwrap();
    assert_eq!(rec.exit_code, Some(128 + 9), "the exit is recorded");
    assert!(rec.process.is_none());
    // Really gone: no process (not even a zombie) with that identity.
    assert!(!pid_running(pid));
    assert!(!ProcessIdentity { pid, start_time: info.start_time.unwrap() }.is_alive());
    assert!(matches!(exec_out(&rt, &id, &["true"]).await, Err(RuntimeError::NotRunning { state: BoxState::Stopped, .. })));
    // Removed through the normal path (no force needed: it is stopped).
    rt.remove(&id, false).await.unwrap();
    assert!(env.links().is_empty() && env.box_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_names_the_address_quotes_the_log_and_kills_the_box() {
    let env = Env::new();
    let helpers = common::never_ready_agent(env.root.path(), "fake-agent-was-here");
    let mut o = env.options_with_helpers(helpers);
    o.ready_timeout = Duration::from_millis(400);
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let e = rt.start(b.id.as_str()).await.unwrap_err();
    let rec = rt.get(b.id.as_str()).unwrap();
    match &e {
        RuntimeError::ReadyTimeout { waited_for, log_tail, after, .. } => {
            assert!(waited_for.contains("agent readiness on") && waited_for.contains("ready.sock"), "{waited_for}");
            assert!(log_tail.contains("fake-agent-was-here"), "{log_tail}");
            assert_eq!(*after, Duration::from_millis(400));
        }
        other => panic!("expected ReadyTimeout, got {other}"),
    }
    assert_eq!(rec.state, BoxState::Stopped);
    assert!(rec.process.is_none());
    // The fake agent (a sleep with the pid it printed) is gone, its ready socket too.
    let log = std::fs::read_to_string(rt.layout().log_file(&b.id)).unwrap();
    let pid: i32 = log.split("pid=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(!pid_running(pid), "fake agent {pid} still running");
    assert!(!rt.layout().sockets_dir(&b.id).join("ready.sock").exists());
    rt.remove(b.id.as_str(), false).await.unwrap();
}

#[tokio::test]
async fn a_second_runtime_on_the_home_gets_home_busy_naming_the_pid() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let e = Runtime::open(&env.home, env.options()).await.unwrap_err();
    let me = std::process::id() as i32;
    assert!(matches!(&e, RuntimeError::HomeBusy { pid: Some(p), .. } if *p == me), "{e}");
    assert!(e.to_string().contains(&format!("in use by pid {me}")), "{e}");
    // Shared (CLI-style) runtimes are refused too while an exclusive one holds the home.
    let mut o = env.options();
    o.lock_mode = LockMode::Shared;
    assert!(matches!(Runtime::open(&env.home, o).await, Err(RuntimeError::HomeBusy { .. })));
    // With a wait, the second one gets the home once the first closes.
    let mut o = env.options();
    o.lock_wait = Some(LIMIT);
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rt.close();
    });
    let (rt2, _) = Runtime::open(&env.home, o).await.unwrap();
    closer.await.unwrap();
    rt2.list().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_boxes_concurrently_leave_nothing_behind() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let rt = Arc::new(rt);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let rt = rt.clone();
        set.spawn(async move {
            let b = rt.create(CreateOptions::new("short-symlink", "host")).await?;
            let id = b.id.to_string();
            let started = rt.start(&id).await?;
            let pid = started.process.unwrap().pid;
            let (code, out, _) = exec_out(&rt, &id, &["echo", &format!("box-{i}")]).await?;
            assert_eq!((code, out), (0, format!("box-{i}\n")));
            rt.remove(&id, true).await?;
            Ok::<_, RuntimeError>(pid)
        });
    }
    let mut pids = Vec::new();
    while let Some(r) = set.join_next().await {
        pids.push(r.unwrap().unwrap_or_else(|e| panic!("a box failed: {e}")));
    }
    assert_eq!(pids.len(), 100);
    for pid in pids {
        assert!(!pid_running(pid), "process {pid} leaked");
    }
    assert!(env.links().is_empty(), "leaked links: {:?}", env.links());
    assert!(env.box_dirs().is_empty(), "leaked box dirs: {:?}", env.box_dirs());
    let l = rt.list().unwrap();
    assert!(l.boxes.is_empty() && l.bad.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_row_with_persisted_paths_loads_and_the_derived_address_wins() {
    let env = Env::deep(150);
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let id = "legacybox01";
    boxsock::boxsock_core::boxdir::create_box_dirs(rt.layout(), &id.parse().unwrap()).unwrap();
    let stale = format!("{}/boxes/{id}/sockets/ready.sock", env.home.display());
    rt.store()
        .execute_raw(&format!(
            r#"INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms) VALUES ('{id}', 'old', 'stopped',
               '{{"strategy":"short-symlink","backend":"host","transport":"unix","ready_socket_path":"{stale}","agent_socket_path":"{stale}"}}', 1, 1)"#
        ))
        .unwrap();
    rt.close();
    let (rt, report) = Runtime::open(&env.home, env.options()).await.unwrap();
    assert!(report.orphan_dirs_removed.is_empty() && report.corrupt_rows.is_empty());
    let rec = rt.get("old").unwrap();
    assert_eq!(rec.config.strategy, "short-symlink");
    rt.start("old").await.unwrap();
    let info = rt.inspect("old").unwrap();
    let ready = info.sockets.iter().find(|s| s.socket == "ready").unwrap();
    assert!(ready.address.as_deref().unwrap().starts_with(env.per_uid_dir().to_str().unwrap()), "{ready:?}");
    assert_ne!(ready.address.as_deref(), Some(stale.as_str()));
    assert_eq!(exec_out(&rt, "old", &["echo", "hi"]).await.unwrap().1, "hi\n");
    rt.remove("old", true).await.unwrap();
    assert!(env.links().is_empty());
}

#[tokio::test]
async fn corrupt_rows_are_reported_never_brick_list_and_go_with_force() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let good = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    for (id, config) in [("trunc1", r#"{"strategy":"short-sym"#), ("notypes", r#"{"strategy":5,"backend":[]}"#), ("missing", r#"{}"#)] {
        rt.store()
            .execute_raw(&format!(
                "INSERT INTO boxes (id, state, config, created_at_ms, updated_at_ms) VALUES ('{id}', 'running', '{config}', 1, 1)"
            ))
            .unwrap();
    }
    rt.close();
    let (rt, report) = Runtime::open(&env.home, env.options()).await.unwrap();
    let mut bad: Vec<_> = report.corrupt_rows.iter().map(|b| b.id.clone()).collect();
    bad.sort();
    assert_eq!(bad, ["missing", "notypes", "trunc1"]);
    let l = rt.list().unwrap();
    assert_eq!(l.boxes.len(), 1);
    assert_eq!(l.boxes[0].id, good.id);
    assert_eq!(l.bad.len(), 3);
    let e = rt.inspect("trunc1").unwrap_err();
    assert!(e.to_string().contains("trunc1") && e.to_string().contains("corrupt"), "{e}");
    assert!(rt.remove("trunc1", false).await.is_err());
    assert_eq!(rt.remove("trunc1", true).await.unwrap(), "trunc1");
    assert_eq!(rt.list().unwrap().bad.len(), 2);
    // The good box still works.
    rt.start(good.id.as_str()).await.unwrap();
    rt.remove(good.id.as_str(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_deleted_while_running_heals_on_the_next_exec() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let id = b.id.to_string();
    rt.start(&id).await.unwrap();
    let link = rt.strategy("short-symlink").unwrap().binding_path(rt.layout(), &b.id).expect("short-symlink has a link");
    std::fs::remove_file(&link).unwrap(); // what a /tmp cleaner does
    assert!(std::fs::symlink_metadata(&link).is_err());
    let (code, out, _) = exec_out(&rt, &id, &["echo", "healed"]).await.unwrap();
    assert_eq!((code, out.as_str()), (0, "healed\n"));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    rt.ping(&id).await.unwrap();
    rt.remove(&id, true).await.unwrap();
    assert!(std::fs::symlink_metadata(&link).is_err());
}

#[tokio::test]
async fn recovery_removes_orphan_dirs_and_rows_and_releases_their_bindings() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    // A row without a directory (an interrupted removal)...
    let a = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    std::fs::remove_dir_all(rt.layout().box_dir(&a.id)).unwrap();
    // ...a directory without a row (an interrupted create), with its binding...
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    rt.store().delete(b.id.as_str()).unwrap();
    // ...and something under boxes/ that is not a box.
    std::fs::write(env.home.join("boxes/.not-a-box"), b"x").unwrap();
    rt.close();

    let (rt, report) = Runtime::open(&env.home, env.options()).await.unwrap();
    assert_eq!(report.orphan_rows_removed, vec![a.id.clone()]);
    assert_eq!(report.orphan_dirs_removed, vec![b.id.clone()]);
    assert_eq!(report.unknown_entries.len(), 1);
    assert!(rt.list().unwrap().boxes.is_empty());
    assert!(env.links().is_empty(), "bindings leaked: {:?}", env.links());
    assert_eq!(env.box_dirs(), [".not-a-box"]);
}

#[tokio::test]
async fn recovery_never_signals_a_stranger_holding_a_recorded_pid() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    // We cannot force pid reuse: record a live unrelated process's pid with a start
    // time that is not its own, as if the box's process had died and the pid had been
    // reused.
    let mut stranger = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let real = ProcessIdentity::of(stranger.id() as i32).unwrap();
    rt.store()
        .execute_raw(&format!(
            "UPDATE boxes SET state = 'running', pid = {}, start_time = {} WHERE id = '{}'",
            real.pid,
            real.start_time - 1,
            b.id
        ))
        .unwrap();
    // stop() must not touch it either.
    let stopped = rt.stop(b.id.as_str(), Some(Duration::from_millis(200))).await.unwrap();
    assert_eq!(stopped.state, BoxState::Stopped);
    assert!(stranger.try_wait().unwrap().is_none(), "stop signalled a stranger");
    rt.store()
        .execute_raw(&format!("UPDATE boxes SET state = 'running', pid = {}, start_time = {} WHERE id = '{}'", real.pid, real.start_time - 1, b.id))
        .unwrap();
    rt.close();
    let (rt, report) = Runtime::open(&env.home, env.options()).await.unwrap();
    assert_eq!(report.recovered.len(), 1);
    assert!(!report.recovered[0].killed);
    assert_eq!(rt.get(b.id.as_str()).unwrap().state, BoxState::Stopped);
    assert!(stranger.try_wait().unwrap().is_none(), "recovery signalled a stranger");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    rt.remove(b.id.as_str(), false).await.unwrap();
}

#[tokio::test]
async fn a_future_store_schema_is_refused_naming_the_version() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    rt.store().execute_raw("PRAGMA user_version = 42").unwrap();
    rt.close();
    let e = Runtime::open(&env.home, env.options()).await.unwrap_err();
    assert!(matches!(&e, RuntimeError::Store(boxsock::boxsock_core::store::StoreError::FutureSchema { found: 42, .. })), "{e}");
    assert!(e.to_string().contains("42"), "{e}");
}

/// Worker of `eight_processes_through_the_library_share_a_home`: run only as a child
/// process, with the home and link base in the environment.
#[tokio::test]
#[ignore = "worker process for eight_processes_through_the_library_share_a_home"]
async fn shared_home_worker() {
    let home = std::env::var_os("BOXSOCK_TEST_HOME").expect("run by the parent test");
    let links = std::env::var_os("BOXSOCK_TEST_LINKS").expect("run by the parent test");
    let n: usize = std::env::var("BOXSOCK_TEST_N").unwrap().parse().unwrap();
    let mut o = boxsock::RuntimeOptions::new(boxsock::builtin_strategies(), builtin_backends());
    o.strategy_config = boxsock::StrategyConfig { base_dir: links.into(), ..Default::default() };
    o.lock_mode = LockMode::Shared;
    o.lock_wait = Some(LIMIT);
    let (rt, _) = Runtime::open(std::path::PathBuf::from(home), o).await.unwrap();
    for i in 0..n {
        let mut c = CreateOptions::new("short-symlink", "host");
        c.name = Some(format!("w{}-{i}", std::process::id()));
        let b = rt.create(c).await.unwrap();
        assert_eq!(rt.get(b.name.as_deref().unwrap()).unwrap().id, b.id);
        rt.remove(b.id.as_str(), false).await.unwrap();
    }
}

#[test]
fn eight_processes_through_the_library_share_a_home() {
    let env = Env::new();
    // Create the home first so every worker opens an existing store.
    std::fs::create_dir_all(&env.home).unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "shared_home_worker", "--ignored", "--test-threads", "1"])
                .env("BOXSOCK_TEST_HOME", &env.home)
                .env("BOXSOCK_TEST_LINKS", &env.link_base)
                .env("BOXSOCK_TEST_N", "50")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let o = w.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "worker failed: {out}{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains("1 passed"), "the worker did not run: {out}");
    }
    assert!(env.links().is_empty(), "leaked links: {:?}", env.links());
    assert!(env.box_dirs().is_empty(), "leaked dirs: {:?}", env.box_dirs());
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
        rt.list().unwrap()
    });
    assert!(rows.boxes.is_empty() && rows.bad.is_empty(), "rows left: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_health_monitor_exec_finds_a_dead_box_and_records_it_stopped() {
    let env = Env::new();
    let mut o = env.options();
    o.health_monitor = false;
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let id = b.id.to_string();
    let pid = rt.start(&id).await.unwrap().process.unwrap().pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the box process to die", || !pid_running(pid));
    assert_eq!(rt.get(&id).unwrap().state, BoxState::Running, "nobody watched");
    match exec_out(&rt, &id, &["true"]).await {
        Err(RuntimeError::NotRunning { state: BoxState::Stopped, .. }) => {}
        other => panic!("expected NotRunning(stopped), got {other:?}"),
    }
    let rec = rt.get(&id).unwrap();
    assert_eq!((rec.state, rec.exit_code), (BoxState::Stopped, Some(128 + 9)));
    rt.remove(&id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_connection_on_the_ready_socket_is_not_mistaken_for_the_agent() {
    if std::process::Command::new("python3").arg("-c").arg("").status().map(|s| !s.success()).unwrap_or(true) {
        eprintln!("skipped: python3 is needed to make the stray connection");
        return;
    }
    let env = Env::new();
    // A wrapper that first dials the ready socket and hangs up without a frame (what a
    // stale-socket probe or a stray client does), then execs the real agent.
    let d = env.root.path().join("poking-helpers");
    std::fs::create_dir_all(&d).unwrap();
    let real = common::agent_dir().join("boxsock-agent");
    let script = d.join("boxsock-agent");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprev=''\nfor a in \"$@\"; do [ \"$prev\" = --ready ] && ready=\"${{a#unix://}}\"; prev=\"$a\"; done\n\
             python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()' \"$ready\" || exit 99\n\
             echo poked-ready\nexec '{}' \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (rt, _) = Runtime::open(&env.home, env.options_with_helpers(d)).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    rt.start(b.id.as_str()).await.expect("start survives an empty connection on ready");
    let log = std::fs::read_to_string(rt.layout().log_file(&b.id)).unwrap();
    assert!(log.contains("poked-ready"), "the wrapper did not poke the ready socket: {log}");
    assert_eq!(rt.get(b.id.as_str()).unwrap().state, BoxState::Running);
    rt.remove(b.id.as_str(), true).await.unwrap();
}

/// A backend whose box process never gets ready and whose companion (a stand-in for
/// passt that cannot sandbox itself) writes its log beside the box log and exits.
#[derive(Debug)]
struct DyingCompanionBackend;

impl Backend for DyingCompanionBackend {
    fn name(&self) -> &str {
        "dying-companion-test"
    }
    fn sockets(&self, _network: bool) -> Vec<SocketSpec> {
        vec![catalogue::AGENT, catalogue::READY]
    }
    fn address_needs(&self) -> AddressNeeds {
        AddressNeeds::PathOnly
    }
    fn isolation(&self) -> Isolation {
        Isolation::None
    }
    fn available(&self) -> Availability {
        Availability::Available
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        use std::os::unix::process::CommandExt;
        let spawn = |cmd: &mut std::process::Command| {
            cmd.process_group(0).spawn().map(|c| c.id() as i32).map_err(|source| BackendError::Spawn {
                backend: "dying-companion-test".into(),
                what: "sh".into(),
                source,
            })
        };
        let pid = spawn(std::process::Command::new("sleep").arg("30"))?;
        let log = spec.log_file.with_file_name("companion.log");
        let script = format!("sleep 0.3; echo 'companion: pivot_root: Invalid argument' > '{}'; exit 3", log.display());
        let companion = spawn(std::process::Command::new("sh").args(["-c", &script]))?;
        Ok(Launched { pid, companions: vec![companion] })
    }
}

fn build_dying_companion(_: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(DyingCompanionBackend))
}

static DYING_COMPANION: BackendRegistration = BackendRegistration {
    name: "dying-companion-test",
    summary: "test backend whose companion dies before the box is ready",
    build: build_dying_companion,
};

/// Regression (issue 11): passt exited (it could not sandbox itself) and `start` waited
/// out the whole ready timeout beside a VMM that could never come up. A companion that
/// exits before the box is ready now fails the start at once, with its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_exiting_before_ready_fails_the_start_within_a_second_with_its_log() {
    let env = Env::new();
    let mut o = env.options();
    o.backends = Registry::from_entries("backend", [&boxsock_host::REGISTRATION, &DYING_COMPANION]);
    o.ready_timeout = Duration::from_secs(30);
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "dying-companion-test")).await.unwrap();
    let t0 = std::time::Instant::now();
    let e = rt.start(b.id.as_str()).await.unwrap_err();
    let took = t0.elapsed();
    match &e {
        RuntimeError::CompanionExited { pid, logs, .. } => {
            assert!(*pid > 0);
            assert!(logs.contains("pivot_root: Invalid argument") && logs.contains("companion.log"), "{logs}");
            assert!(!pid_running(*pid), "companion {pid} still running");
        }
        other => panic!("expected CompanionExited, got {other}"),
    }
    assert!(e.to_string().contains("companion") && e.to_string().contains("pivot_root"), "{e}");
    // 0.3 s until the companion exits, then at once (the ready timeout is 30 s).
    assert!(took < Duration::from_millis(1300), "start took {took:?}");
    let rec = rt.get(b.id.as_str()).unwrap();
    assert_eq!(rec.state, BoxState::Stopped);
    assert!(rec.process.is_none());
    rt.remove(b.id.as_str(), false).await.unwrap();
}
