//! The runtime through the library, with real processes (the `boxsock-agent` on the
//! `host` backend), a real SQLite file and real sockets and links in temp dirs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use boxsock::boxsock_core::backend::{
    AddressNeeds, Backend, BackendError, Isolation, LaunchSpec, Launched, Readiness,
};
use boxsock::boxsock_core::{SocketSpec, catalogue};
use boxsock::{
    Availability, BackendConfig, BackendRegistration, BindingError, BoxState, CreateOptions,
    ExecIo, LockMode, ProcessIdentity, Registry, Runtime, RuntimeError, builtin_backends,
};
use boxsock_conformance::util::ByFile;
use boxsock_test_support::{Need, Unmakeable, skip, skip_allowed};
use common::{Env, LIMIT, pid_running, wait_until};

async fn exec_out(
    rt: &Runtime,
    id: &str,
    argv: &[&str],
) -> Result<(i32, String, String), RuntimeError> {
    let (mut out, mut err) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut on_out, mut on_err) =
        (|b: &[u8]| out.extend_from_slice(b), |b: &[u8]| err.extend_from_slice(b));
    let code = rt
        .exec(
            id,
            argv.iter().map(|s| s.to_string()).collect(),
            vec![],
            ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err },
        )
        .await?;
    Ok((
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// The whole life of one box, asserting the process and every trace of it are gone.
async fn full_lifecycle(env: &Env, rt: &Runtime, strategy: &str, backend: &str) {
    // A backend with a root of its own (it runs images: `sandbox`) gets a busybox root
    // with the commands run below; `host` runs the host's.
    let root = tempfile::tempdir().unwrap();
    let mut opts = CreateOptions::new(strategy, backend);
    if rt.backend(backend).unwrap().runs_images() {
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        for applet in ["sh", "true", "echo", "cat", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        opts.settings.rootfs = Some(root.path().canonicalize().unwrap());
    }
    let b = rt.create(opts).await.unwrap_or_else(|e| panic!("{strategy}/{backend}: create: {e}"));
    let id = b.id.to_string();
    assert_eq!(b.state, BoxState::Created);
    let s = rt.strategy(strategy).unwrap();

    let running =
        rt.start(&id).await.unwrap_or_else(|e| panic!("{strategy}/{backend}: start: {e}"));
    assert_eq!(running.state, BoxState::Running);
    let pid = running.process.expect("a running box has a process").pid;
    assert!(pid_running(pid));
    // The ready socket is gone once the box is ready.
    assert!(!rt.layout().sockets_dir(&b.id).join("ready.sock").exists());

    let (code, out, err) =
        exec_out(rt, &id, &["sh", "-c", "echo out-$((6*7)); echo err >&2; exit 3"]).await.unwrap();
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "out-42\n", "err\n"),
        "{strategy}/{backend}"
    );

    // inspect reports the watched process and every socket's live address.
    let info = rt.inspect(&id).unwrap();
    assert_eq!(info.pid, Some(pid));
    assert!(info.alive);
    let agent = info.sockets.iter().find(|s| s.socket == "agent").expect("agent socket listed");
    assert!(agent.fits && agent.bytes.unwrap() < agent.limit, "{agent:?}");
    assert_eq!(
        agent.address.as_deref().unwrap(),
        s.address(rt.layout(), &b.id, "agent.sock").unwrap().display_string()
    );

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
            skip_allowed(
                Unmakeable::NoHardwareKvm,
                format!("backend {backend} unavailable here: {reason}"),
            );
            continue;
        }
        for strategy in boxsock::builtin_strategies().names() {
            let s = rt.strategy(strategy).unwrap();
            if !s.capabilities().supported_here() {
                skip_allowed(
                    Unmakeable::Capability,
                    format!("strategy {strategy} unsupported here"),
                );
                continue;
            }
            if let Err(reason) = boxsock::boxsock_runtime::compatibility(&*s, &*b) {
                skip_allowed(
                    Unmakeable::Capability,
                    format!("{strategy}/{backend} incompatible: {reason}"),
                );
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
            assert!(
                path.starts_with(env.home.to_str().unwrap()) && path.ends_with("agent.sock"),
                "{path}"
            );
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
        Err(BackendError::Spec {
            backend: "path-only-test".into(),
            reason: "never launched in tests".into(),
        })
    }
}

fn build_path_only(_: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(PathOnlyBackend))
}

static PATH_ONLY: BackendRegistration = BackendRegistration {
    name: "path-only-test",
    summary: "test backend taking only paths",
    build: build_path_only,
};

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
            assert!(
                matches!(reason, boxsock::boxsock_runtime::Incompatibility::NeedsPaths { .. }),
                "{reason:?}"
            );
            assert!(reason.to_string().contains("path"), "{reason}");
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
    assert!(matches!(
        rt.create(CreateOptions::new("short-symlink", "nope")).await,
        Err(RuntimeError::Registry(_))
    ));
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

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    wait_until("the box to be stopped", || rt.get(&id).unwrap().state == BoxState::Stopped);
    let rec = rt.get(&id).unwrap();
    assert_eq!(rec.exit_code, Some(128 + 9), "the exit is recorded");
    assert!(rec.process.is_none());
    // Really gone: no process (not even a zombie) with that identity.
    assert!(!pid_running(pid));
    assert!(!ProcessIdentity { pid, start_time: info.start_time.unwrap() }.is_alive());
    assert!(matches!(
        exec_out(&rt, &id, &["true"]).await,
        Err(RuntimeError::NotRunning { state: BoxState::Stopped, .. })
    ));
    // Removed through the normal path (no force needed: it is stopped).
    rt.remove(&id, false).await.unwrap();
    assert!(env.links().is_empty() && env.box_dirs().is_empty());
}

/// A VM backend's box log is its guest's console: when the box dies before ready and
/// this start's part of the log shows a kernel crash, the error names the crash's
/// headline (which a 20-line tail of register dumps hides); an earlier start's crash,
/// still in the appended log, is not this start's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_dies_before_ready_names_the_kernel_crash_its_log_shows_from_this_start() {
    let env = Env::new();
    let d = env.root.path().join("crashing-helpers");
    std::fs::create_dir_all(&d).unwrap();
    let script = d.join("boxsock-agent");
    // First start: a guest console with an oops and 25 lines of registers; then exit 0,
    // as libkrun's VMM does when its guest reboots. Later starts: a clean exit 3.
    let regs = "echo '[    1.840000] R13: ffff888000148598 R14: ffffc9000000bf58'\n".repeat(25);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nm=\"$(dirname \"$0\")/started\"\nif [ -e \"$m\" ]; then echo 'agent: no'; exit 3; fi\n\
             : > \"$m\"\necho '[    0.000000] Linux version 6.12.113'\n\
             echo '[    1.790112] BUG: kernel NULL pointer dereference, address: 0000000000000008'\n\
             {regs}echo '[    1.898929] reboot: machine restart'\nexit 0\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (rt, _) = Runtime::open(&env.home, env.options_with_helpers(d)).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let e = rt.start(b.id.as_str()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(&e, RuntimeError::ExitedBeforeReady { exit_code: Some(0), .. }), "{msg}");
    assert!(
        msg.contains(
            "before reporting ready on the ready channel (an inherited descriptor). The kernel \
             in the box crashed: \"BUG: kernel NULL pointer dereference, address: \
             0000000000000008\". Last lines of its log:"
        ),
        "{msg}"
    );
    // The headline is not among the quoted last lines: only the sentence names it.
    let tail = msg.split_once("Last lines of its log:").unwrap().1;
    assert!(!tail.contains("BUG:") && tail.contains("machine restart"), "{msg}");

    let e = rt.start(b.id.as_str()).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            &e,
            RuntimeError::ExitedBeforeReady { exit_code: Some(3), kernel_crash: None, .. }
        ),
        "{msg}"
    );
    assert!(!msg.contains("crashed") && msg.contains("agent: no"), "{msg}");
    rt.remove(b.id.as_str(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_names_the_address_quotes_the_log_and_kills_the_box() {
    let env = Env::new();
    let helpers = common::never_ready_agent(env.root.path(), "fake-agent-was-here");
    let mut o = with_ready_socket_host(env.options_with_helpers(helpers));
    o.ready_timeout = Duration::from_millis(400);
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    // The host backend's agent reports on an inherited channel, which has no address.
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    match rt.start(b.id.as_str()).await.unwrap_err() {
        RuntimeError::ReadyTimeout { waited_for, .. } => {
            assert_eq!(
                waited_for,
                "agent readiness on the ready channel (an inherited descriptor)"
            );
        }
        other => panic!("expected ReadyTimeout, got {other}"),
    }
    rt.remove(b.id.as_str(), true).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host-ready-socket-test")).await.unwrap();
    let e = rt.start(b.id.as_str()).await.unwrap_err();
    let rec = rt.get(b.id.as_str()).unwrap();
    match &e {
        RuntimeError::ReadyTimeout { waited_for, log_tail, after, .. } => {
            assert!(
                waited_for.contains("agent readiness on") && waited_for.contains("ready.sock"),
                "{waited_for}"
            );
            assert!(log_tail.contains("fake-agent-was-here"), "{log_tail}");
            assert_eq!(*after, Duration::from_millis(400));
        }
        other => panic!("expected ReadyTimeout, got {other}"),
    }
    assert_eq!(rec.state, BoxState::Stopped);
    assert!(rec.process.is_none());
    // The fake agent (a sleep with the pid it printed) is gone, its ready socket too.
    let log = std::fs::read_to_string(rt.layout().log_file(&b.id)).unwrap();
    let pid: i32 = log
        .split("pid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
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
    let agent = info.sockets.iter().find(|s| s.socket == "agent").unwrap();
    assert!(
        agent.address.as_deref().unwrap().starts_with(env.per_uid_dir().to_str().unwrap()),
        "{agent:?}"
    );
    assert_ne!(agent.address.as_deref(), Some(stale.as_str()));
    assert_eq!(exec_out(&rt, "old", &["echo", "hi"]).await.unwrap().1, "hi\n");
    rt.remove("old", true).await.unwrap();
    assert!(env.links().is_empty());
}

#[tokio::test]
async fn corrupt_rows_are_reported_never_brick_list_and_go_with_force() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let good = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    for (id, config) in [
        ("trunc1", r#"{"strategy":"short-sym"#),
        ("notypes", r#"{"strategy":5,"backend":[]}"#),
        ("missing", r#"{}"#),
    ] {
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
    let link = rt
        .strategy("short-symlink")
        .unwrap()
        .binding_path(rt.layout(), &b.id)
        .expect("short-symlink has a link");
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
    // ...a directory without a row (an interrupted create: its journal entry is still
    // there), with its binding...
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    rt.store().delete(b.id.as_str()).unwrap();
    std::fs::write(rt.layout().create_journal(&b.id), b"").unwrap();
    // ...a box directory without a row that no create journalled (a copy, a restore):
    // never deleted...
    let c = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    rt.store().delete(c.id.as_str()).unwrap();
    // ...and something under boxes/ that is not a box.
    std::fs::write(env.home.join("boxes/.not-a-box"), b"x").unwrap();
    rt.close();

    let (rt, report) = Runtime::open(&env.home, env.options()).await.unwrap();
    assert_eq!(report.orphan_rows_removed, vec![a.id.clone()]);
    assert_eq!(report.orphan_dirs_removed, vec![b.id.clone()]);
    assert_eq!(report.unclaimed_dirs, vec![rt.layout().box_dir(&c.id)]);
    assert_eq!(report.unknown_entries.len(), 1);
    assert!(rt.list().unwrap().boxes.is_empty());
    assert_eq!(env.links(), [c.id.to_string()], "b's binding leaked or c's was released");
    let mut dirs = env.box_dirs();
    dirs.sort();
    assert_eq!(dirs, [".not-a-box".to_owned(), c.id.to_string()]);
    assert!(
        std::fs::read_dir(rt.layout().journal_dir()).unwrap().next().is_none(),
        "journal entries left"
    );
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
        .execute_raw(&format!(
            "UPDATE boxes SET state = 'running', pid = {}, start_time = {} WHERE id = '{}'",
            real.pid,
            real.start_time - 1,
            b.id
        ))
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
    assert!(
        matches!(
            &e,
            RuntimeError::Store(boxsock::boxsock_runtime::store::StoreError::FutureSchema {
                found: 42,
                ..
            })
        ),
        "{e}"
    );
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
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
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
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("")
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        skip(
            Need::Program { name: "python3", package: "python3" },
            "python3 is needed to make the stray connection",
        );
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
    let (rt, _) = Runtime::open(&env.home, with_ready_socket_host(env.options_with_helpers(d)))
        .await
        .unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host-ready-socket-test")).await.unwrap();
    rt.start(b.id.as_str()).await.expect("start survives an empty connection on ready");
    let log = std::fs::read_to_string(rt.layout().log_file(&b.id)).unwrap();
    assert!(log.contains("poked-ready"), "the wrapper did not poke the ready socket: {log}");
    assert_eq!(rt.get(b.id.as_str()).unwrap().state, BoxState::Running);
    rt.remove(b.id.as_str(), true).await.unwrap();
}

/// Issue 10, item 1: a read-only runtime (what `ls` and `inspect` use) recovers, sweeps,
/// deletes and creates nothing, and refuses every change.
#[tokio::test]
async fn a_read_only_runtime_changes_nothing_and_refuses_changes() {
    use boxsock::Access;
    let env = Env::new();
    let mut ro = env.options();
    ro.access = Access::ReadOnly;
    match Runtime::open(&env.home, ro.clone()).await {
        Err(RuntimeError::NoHome { path }) => assert_eq!(path, env.home),
        other => panic!("expected NoHome, got {other:?}"),
    }
    assert!(!env.home.exists(), "a read-only open created the home");
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    // An interrupted create, as a crash would leave it: journal, directory, no row.
    rt.store().delete(b.id.as_str()).unwrap();
    std::fs::write(rt.layout().create_journal(&b.id), b"").unwrap();
    rt.close();
    let snapshot = || {
        let mut v: Vec<_> = walk(&env.home);
        v.sort();
        v
    };
    let before = snapshot();
    let (rt, report) = Runtime::open(&env.home, ro).await.unwrap();
    assert!(report.recovery_skipped && report.orphan_dirs_removed.is_empty());
    assert!(rt.list().unwrap().boxes.is_empty());
    assert!(matches!(
        rt.create(CreateOptions::new("short-symlink", "host")).await,
        Err(RuntimeError::ReadOnly { .. })
    ));
    assert!(matches!(rt.sweep().await, Err(RuntimeError::ReadOnly { .. })));
    assert!(matches!(rt.remove(b.id.as_str(), true).await, Err(RuntimeError::ReadOnly { .. })));
    rt.close();
    assert_eq!(snapshot(), before, "a read-only runtime changed the home");
    // The next writing open finishes the interrupted create.
    let (_rt, report) = Runtime::open(&env.home, env.options()).await.unwrap();
    assert_eq!(report.orphan_dirs_removed, vec![b.id]);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        // SQLite's shared-memory index (`-shm`) is written by every reader.
        let mtime = if e.path().to_string_lossy().ends_with("-shm") { 0 } else { m.mtime_nsec() };
        out.push(format!("{} {:o} {} {mtime}", e.path().display(), m.mode(), m.len()));
        if m.is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// Issue 10, item 3: an open that failed (then: the store, past SQLite's 512 bytes) left
/// `boxes/` and the lock file behind. A new home whose open fails is removed again. The
/// failure is made real: the home lies on a tmpfs with a few inodes, so the open runs
/// out of them at each step in turn.
#[tokio::test]
async fn an_open_that_fails_in_a_new_home_leaves_nothing_behind() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "needs root to mount a tmpfs");
        return;
    }
    let env = Env::new();
    let mnt = env.root.path().join("fs");
    std::fs::create_dir(&mnt).unwrap();
    let mut failed_after_creating = Vec::new();
    for inodes in 2..12 {
        let opts = format!("size=4m,nr_inodes={inodes},mode=0700");
        if let Err(e) =
            mount(Some("tmpfs"), &mnt, Some("tmpfs"), MsFlags::empty(), Some(opts.as_str()))
        {
            skip(Need::Kernel("tmpfs mounts"), format!("cannot mount a tmpfs: {e}"));
            return;
        }
        let home = mnt.join("home");
        let r = Runtime::open(&home, env.options()).await;
        let left: Vec<String> = std::fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let ok = r.is_ok();
        if let Err(e) = &r {
            assert!(left.is_empty(), "{inodes} inodes: open failed ({e}) and left {left:?}");
            if inodes > 2 {
                failed_after_creating.push(inodes);
            }
        }
        drop(r);
        umount2(&mnt, MntFlags::MNT_DETACH).unwrap();
        if ok {
            break;
        }
    }
    assert!(
        failed_after_creating.len() >= 2,
        "the open never failed after making the home: {failed_after_creating:?}"
    );
}

/// Issue 10, item 2: box directories are re-checked at start and before each dial, not
/// only at create: one another user owns or can write is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_exec_recheck_the_box_directories() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "needs root to give a directory to uid 65534");
        return;
    }
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let id = b.id.to_string();
    let dir = rt.layout().box_dir(&b.id);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    match rt.start(&id).await {
        Err(RuntimeError::InsecureHome { path, reason }) => {
            assert_eq!(path, dir);
            assert!(reason.contains("777"), "{reason}");
        }
        other => panic!("start with a 0777 box directory: {other:?}"),
    }
    assert_eq!(
        rt.get(&id).unwrap().state,
        boxsock::BoxState::Created,
        "a refused start changes nothing"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Group/other read bits alone are tightened, not refused; the log is made 0600.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(rt.layout().log_file(&b.id), std::fs::Permissions::from_mode(0o644))
        .unwrap();
    rt.start(&id).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&rt.layout().log_file(&b.id))), (0o700, 0o600));
    let sockets = rt.layout().sockets_dir(&b.id);
    nix::unistd::chown(&sockets, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    match exec_out(&rt, &id, &["true"]).await {
        Err(RuntimeError::InsecureHome { path, reason }) => {
            assert_eq!(path, sockets);
            assert!(reason.contains("65534"), "{reason}");
        }
        other => panic!("exec with a sockets directory of nobody's: {other:?}"),
    }
    nix::unistd::chown(&sockets, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    assert_eq!(exec_out(&rt, &id, &["echo", "ok"]).await.unwrap().1, "ok\n");
    rt.remove(&id, true).await.unwrap();
}

/// Serialises the tests that fork children holding sockets, so no child inherits (and
/// keeps bound) a listener another test expects to be gone.
static FORKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The addresses box process `pid` listens on, by logical socket (`agent`), read from
/// its descriptors and `/proc/net/unix`: the agent is told no name (issue 18.1), so the
/// name is where the kernel has it. Abstract addresses only; asserts `agent` is among
/// them.
fn listening_addresses(
    pid: i32,
) -> std::collections::BTreeMap<String, boxsock::boxsock_core::SocketAddress> {
    use boxsock::boxsock_core::SocketAddress;
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter_map(|t| t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in table.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path
        let f: Vec<&str> = line.split_whitespace().collect();
        let listening = f.get(3) == Some(&"00010000");
        if let (true, Some(ino), Some(name)) =
            (listening, f.get(6), f.get(7).and_then(|p| p.strip_prefix('@')))
        {
            if inodes.iter().any(|i| i == ino) {
                let logical = if name.is_empty() { "?" } else { "agent" };
                out.insert(logical.to_owned(), SocketAddress::Abstract(name.as_bytes().to_vec()));
            }
        }
    }
    assert!(out.contains_key("agent"), "box process {pid} listens on no abstract name: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abstract_names_change_at_every_start_so_old_names_reach_nothing_and_squatted_ones_do_not_block()
 {
    use boxsock::boxsock_core::peer;
    use boxsock_conformance::fork::listen_in_child;
    let _serial = FORKING.lock().await;
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "needs root to run the squatter as uid 65534");
        return;
    }
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("abstract", "host")).await.unwrap();
    let id = b.id.to_string();
    let s = rt.strategy("abstract").unwrap();

    let first = listening_addresses(rt.start(&id).await.unwrap().process.unwrap().pid);
    rt.stop(&id, None).await.unwrap();
    let second = listening_addresses(rt.start(&id).await.unwrap().process.unwrap().pid);
    for (flag, a) in &first {
        assert_ne!(second[flag], *a, "{flag} kept its name across a restart");
        // A name from an old argv reaches nothing: no listener is bound there any more.
        let e = std::os::unix::net::UnixStream::connect_addr(&a.to_std().unwrap())
            .map(|c| peer::peer_cred(std::os::fd::AsFd::as_fd(&c)))
            .expect_err(&format!("{flag} {a} of the first start still reaches a listener"));
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{flag} {a}");
    }
    assert_eq!(exec_out(&rt, &id, &["true"]).await.unwrap().0, 0);
    rt.stop(&id, None).await.unwrap();

    // Another user binds every name of the last start once the box has stopped.
    let squatters: Vec<_> = second
        .values()
        .map(|a| listen_in_child(a).unwrap_or_else(|r| panic!("squat {a}: {r:?}")))
        .collect();
    let third = rt
        .start(&id)
        .await
        .unwrap_or_else(|e| panic!("a start after the names were squatted must succeed: {e}"));
    let third = listening_addresses(third.process.unwrap().pid);
    for (flag, a) in &second {
        assert_ne!(third[flag], *a, "{flag}");
    }
    assert_eq!(exec_out(&rt, &id, &["echo", "ok"]).await.unwrap().1, "ok\n");
    // The squatted old agent name leads to the squatter, whom the policy refuses.
    match peer::connect_stream_at(
        &second["agent"],
        "agent",
        &s.peer_policy(rt.layout(), &b.id).unwrap(),
    ) {
        Err(BindingError::PeerRejected { uid, .. }) => assert_eq!(uid, 65534),
        other => panic!("expected the squatter to be refused, got {other:?}"),
    }
    drop(squatters);
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_rejected_connects_add_at_most_a_few_kb_to_the_box_log() {
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "needs root to run the peer as uid 65534");
        return;
    }
    const N: u64 = 20_000;
    const BOUND: u64 = 4 * 1024;
    let _serial = FORKING.lock().await;
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("abstract", "host")).await.unwrap();
    let id = b.id.to_string();
    let pid = rt.start(&id).await.unwrap().process.unwrap().pid;
    let agent = listening_addresses(pid)["agent"].clone();
    let log = rt.layout().log_file(&b.id);
    let before = std::fs::metadata(&log).unwrap().len();

    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let boxsock::boxsock_core::SocketAddress::Abstract(name) = &agent else { panic!("{agent}") };
    for (i, c) in name.iter().enumerate() {
        sa.sun_path[i + 1] = *c as libc::c_char;
    }
    let len =
        (std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len()) as libc::socklen_t;
    let started = std::time::Instant::now();
    // SAFETY: the child only makes raw syscalls on memory prepared before the fork and
    // _exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        // SAFETY: as above; only raw syscalls, then _exit.
        unsafe {
            // Keep none of the parent's sockets (other tests' listeners) alive.
            for fd in 3..4096 {
                libc::close(fd);
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(10);
            }
            for _ in 0..N {
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                let ok = s >= 0 && libc::connect(s, (&raw const sa).cast(), len) == 0;
                libc::close(s);
                if !ok {
                    libc::_exit(11);
                }
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "flood child status {status:#x}"
    );
    let took = started.elapsed();
    // The box still serves its owner, then stops: the agent writes its last summary.
    assert_eq!(exec_out(&rt, &id, &["true"]).await.unwrap().0, 0);
    rt.stop(&id, None).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let added = &text[before as usize..];
    eprintln!(
        "{N} rejected connects in {took:?} added {} bytes to the box log:\n{added}",
        added.len()
    );
    assert!(
        (added.len() as u64) <= BOUND,
        "{N} rejections added {} bytes to the box log (bound {BOUND})",
        added.len()
    );
    // The count is exact: samples plus summaries account for every rejection.
    let samples = added
        .lines()
        .filter(|l| l.contains("rejected peer") && l.contains("peer_uid=65534"))
        .count() as u64;
    let more: u64 = added
        .lines()
        .filter_map(|l| l.split("more=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(samples + more, N, "{added}");
    rt.remove(&id, true).await.unwrap();
}

/// A built-in strategy without one behaviour, so a test can see what the runtime does
/// when a (third-party) strategy does not provide it. Everything else is delegated.
#[derive(Debug)]
struct Without {
    inner: Arc<dyn boxsock::boxsock_core::SocketBinding>,
    name: &'static str,
    omit: Omit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Omit {
    /// The per-start rotation (abstract's `Opening::Start`) is not done.
    PrepareStart,
    /// The boxes' peer policy checks nothing.
    PeerPolicy,
}

mod without {
    use super::{Omit, Without};
    use boxsock::BindingError;
    use boxsock::boxsock_core::binding::{Capabilities, PolicyPath, SweepReport};
    use boxsock::boxsock_core::peer::PeerPolicy;
    use boxsock::boxsock_core::{BoxBinding, Opening, PathStrategy, Socket};
    use boxsock::boxsock_core::{BoxId, BoxLayout, SocketBinding, SocketDir, StrategyConfig};
    use std::path::PathBuf;
    use std::sync::Arc;

    impl SocketBinding for Without {
        fn name(&self) -> &str {
            self.name
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn sweep(&self, l: &BoxLayout) -> Result<SweepReport, BindingError> {
            self.inner.sweep(l)
        }
        fn open_box(
            self: Arc<Self>,
            l: &BoxLayout,
            id: &BoxId,
            opening: Opening,
            sockets: &[Socket],
        ) -> Result<Arc<dyn BoxBinding>, BindingError> {
            let opening = match (self.omit, opening) {
                // The strategy's own binding (its rotation of a squatted name), never
                // renewed for a start.
                (Omit::PrepareStart, Opening::Start) => Opening::Use,
                (_, o) => o,
            };
            self.inner.clone().open_box(l, id, opening, sockets)
        }
    }

    /// `direct` whose boxes' peer policy checks nothing.
    #[derive(Debug)]
    struct UncheckedDirect(boxsock_direct::Direct);

    impl PathStrategy for UncheckedDirect {
        fn name(&self) -> &str {
            UNCHECKED
        }
        fn capabilities(&self) -> Capabilities {
            PathStrategy::capabilities(&self.0)
        }
        fn sweep(&self, l: &BoxLayout) -> Result<SweepReport, BindingError> {
            PathStrategy::sweep(&self.0, l)
        }
        fn socket_base(&self, l: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
            self.0.socket_base(l, id)
        }
        fn ensure(&self, l: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
            self.0.ensure(l, id)
        }
        fn open_dir(&self, l: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError> {
            self.0.open_dir(l, id)
        }
        fn release(&self, l: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
            self.0.release(l, id)
        }
        fn policy_paths(&self, l: &BoxLayout, id: &BoxId) -> Result<Vec<PolicyPath>, BindingError> {
            self.0.policy_paths(l, id)
        }
        fn peer_policy(&self) -> PeerPolicy {
            PeerPolicy::unchecked()
        }
    }

    pub const NO_ROTATE: &str = "abstract-no-rotate-test";
    pub const UNCHECKED: &str = "direct-unchecked-test";

    pub fn no_rotate(c: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
        Ok(Arc::new(Without {
            inner: Arc::new(boxsock_abstract::Abstract::new(c)),
            name: NO_ROTATE,
            omit: Omit::PrepareStart,
        }))
    }

    pub fn unchecked(c: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
        Ok(Arc::new(Without {
            inner: Arc::new(UncheckedDirect(boxsock_direct::Direct::new(c))),
            name: UNCHECKED,
            omit: Omit::PeerPolicy,
        }))
    }
}

/// `abstract` without its per-start rotation, so a test can squat the very name a start
/// binds the agent's listener at, and see the bind rotate away from it.
static NO_ROTATE: boxsock::boxsock_core::registry::StrategyRegistration =
    boxsock::boxsock_core::registry::StrategyRegistration {
        name: without::NO_ROTATE,
        summary: "abstract without per-start rotation (test)",
        build: without::no_rotate,
    };

/// Issue 18.1: the runtime binds the agent's listener, so a squatted agent name rotates
/// like any name the runtime binds (the agent, binding it itself, failed with
/// `EADDRINUSE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_agent_name_is_squatted_rotates_and_launches_with_the_new_names() {
    use boxsock_conformance::fork::listen_in_child;
    let _serial = FORKING.lock().await;
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "needs root to run the squatter as uid 65534");
        return;
    }
    let env = Env::new();
    let mut o = env.options();
    o.strategies =
        Registry::from_entries("strategy", [&boxsock_abstract::REGISTRATION, &NO_ROTATE]);
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let b = rt.create(CreateOptions::new(without::NO_ROTATE, "host")).await.unwrap();
    let id = b.id.to_string();
    let s = rt.strategy(without::NO_ROTATE).unwrap();
    let agent = s.address(rt.layout(), &b.id, "agent.sock").unwrap();
    // nobody holds the exact name this start will bind the agent's listener at.
    let squatter = listen_in_child(&agent).unwrap_or_else(|r| panic!("squat {agent}: {r:?}"));
    let rec = rt
        .start(&id)
        .await
        .unwrap_or_else(|e| panic!("the bind must rotate and the launch use the new names: {e}"));
    let bound = listening_addresses(rec.process.unwrap().pid);
    assert_ne!(bound["agent"], agent, "the agent was handed the squatted name");
    assert_eq!(
        bound["agent"],
        s.address(rt.layout(), &b.id, "agent.sock").unwrap(),
        "the agent's name is the rotated one"
    );
    assert_eq!(exec_out(&rt, &id, &["echo", "ok"]).await.unwrap().1, "ok\n");
    drop(squatter);
    rt.remove(&id, true).await.unwrap();
}

/// Issue 18.1: no name or path of a box's sockets is in its process's argv or
/// environment, where anyone can read it (`/proc/<pid>/cmdline`) and bind it first.
/// Every strategy on the host backend; the box's addresses as the strategy derives
/// them, their file names and the `/proc/self/fd` form the agent was once given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_name_of_a_box_is_in_its_process_argv_or_environment() {
    use boxsock::boxsock_core::SocketAddress;
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let backend = rt.backend("host").unwrap();
    let mut ran = Vec::new();
    for strategy in boxsock::builtin_strategies().names() {
        let s = rt.strategy(strategy).unwrap();
        if !s.capabilities().supported_here()
            || boxsock::boxsock_runtime::compatibility(&*s, &*backend).is_err()
        {
            continue;
        }
        let b = rt.create(CreateOptions::new(strategy, "host")).await.unwrap();
        let id = b.id.to_string();
        let pid = rt.start(&id).await.unwrap().process.unwrap().pid;
        let mut needles: Vec<Vec<u8>> =
            vec![b"agent.sock".to_vec(), b"ready.sock".to_vec(), b"/proc/self/fd/".to_vec()];
        for name in ["agent.sock", "ready.sock"] {
            match s.address(rt.layout(), &b.id, name).unwrap() {
                SocketAddress::Abstract(n) => needles.push(n),
                SocketAddress::Path(p) => {
                    needles.push(p.as_os_str().as_encoded_bytes().to_vec());
                    needles.push(p.parent().unwrap().as_os_str().as_encoded_bytes().to_vec());
                }
            }
        }
        if let Some(l) = s.binding_path(rt.layout(), &b.id) {
            needles.push(l.as_os_str().as_encoded_bytes().to_vec());
        }
        for what in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
            assert!(!bytes.is_empty() || what == "environ", "{strategy}: empty {what}");
            for n in &needles {
                assert!(
                    !bytes.windows(n.len()).any(|w| w == &n[..]),
                    "{strategy}: the box process's {what} holds {:?}: {:?}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
        assert_eq!(exec_out(&rt, &id, &["true"]).await.unwrap().0, 0, "{strategy}");
        rt.remove(&id, true).await.unwrap();
        ran.push(strategy);
    }
    assert!(ran.len() >= 3, "expected at least three strategies on the host backend, ran {ran:?}");
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
        use boxsock::boxsock_core::spawn::Spawn;
        let spawn = |cmd: &mut Spawn| {
            cmd.spawn().map_err(|e| BackendError::spawn("dying-companion-test", e))
        };
        let process = spawn(Spawn::new("sleep").arg("30"))?;
        let log = spec.log_file.with_file_name("companion.log");
        let script = format!(
            "sleep 0.3; echo 'companion: pivot_root: Invalid argument' > '{}'; exit 3",
            log.display()
        );
        let companion = spawn(Spawn::new("sh").args(["-c", &script]))?;
        Ok(Launched { process, companions: vec![companion] })
    }
}

/// The host agent reporting readiness on the `ready` socket the runtime binds
/// ([`Readiness::Socket`], libkrun's way) instead of an inherited channel, so that the
/// runtime's ready listener is tested on real processes: the agent gets its listener at
/// descriptor 3 and dials `ready` through the verified socket directory at 4 (or by
/// its abstract name: a test may show it, the host backend never does).
#[derive(Debug)]
struct ReadySocketHost {
    helpers: Option<std::path::PathBuf>,
}

impl Backend for ReadySocketHost {
    fn name(&self) -> &str {
        "host-ready-socket-test"
    }
    fn sockets(&self, _network: bool) -> Vec<SocketSpec> {
        vec![boxsock_host::AGENT, catalogue::READY]
    }
    fn address_needs(&self) -> AddressNeeds {
        AddressNeeds::PathOrAbstract
    }
    fn isolation(&self) -> Isolation {
        Isolation::None
    }
    fn available(&self) -> Availability {
        Availability::Available
    }
    fn readiness(&self) -> Readiness {
        Readiness::Socket
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        use boxsock::boxsock_core::spawn::Spawn;
        use std::os::fd::AsFd;
        let agent = spec.sockets.handed("agent")?;
        let ready =
            spec.sockets.child_endpoint(&boxsock::boxsock_core::catalogue::READY, 4)?.to_uri();
        let bin = boxsock::boxsock_core::helpers::find_agent(self.helpers.as_deref()).unwrap();
        let mut cmd = Spawn::new(bin);
        cmd.args([
            "--agent-fd",
            "3",
            "--ready",
            &ready,
            "--allow-uid",
            &nix::unistd::geteuid().to_string(),
        ])
        .log_file(&spec.log_file)
        .map_err(|e| BackendError::spawn(self.name(), e))?
        .hand(agent.as_fd(), 3);
        if let Some(dir) = &spec.sockets.dir {
            cmd.hand(dir.as_fd(), 4);
        }
        let process = cmd.spawn().map_err(|e| BackendError::spawn(self.name(), e))?;
        Ok(Launched { process, companions: vec![] })
    }
}

fn build_ready_socket_host(c: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(ReadySocketHost { helpers: c.helper_dir.clone() }))
}

static READY_SOCKET_HOST: BackendRegistration = BackendRegistration {
    name: "host-ready-socket-test",
    summary: "the host agent reporting readiness on the ready socket (test)",
    build: build_ready_socket_host,
};

/// `options` with the host backend and [`ReadySocketHost`].
fn with_ready_socket_host(mut o: boxsock::RuntimeOptions) -> boxsock::RuntimeOptions {
    o.backends =
        Registry::from_entries("backend", [&boxsock_host::REGISTRATION, &READY_SOCKET_HOST]);
    o
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
            assert!(
                logs.contains("pivot_root: Invalid argument") && logs.contains("companion.log"),
                "{logs}"
            );
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

/// `direct` whose peer policy checks nothing, as a third-party strategy's might.
static UNCHECKED: boxsock::boxsock_core::registry::StrategyRegistration =
    boxsock::boxsock_core::registry::StrategyRegistration {
        name: without::UNCHECKED,
        summary: "direct with an unchecked peer policy (test)",
        build: without::unchecked,
    };

/// Only the box's own process may declare it ready, whatever the strategy's peer policy:
/// with a policy that checks nothing the listener hands out no credentials, and an
/// earlier `start` took a `Ready` frame from any process. Here the box's agent never
/// gets ready and this test process (another pid) sends `Ready` on the box's `ready`
/// socket: the start must ignore it and time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_frame_from_another_process_is_ignored_even_when_the_strategy_checks_no_peers() {
    use boxsock::boxsock_core::proto::{Frame, Response, VERSION, encode};
    use std::io::Write;
    let env = Env::new();
    let mut o = env.options_with_helpers(common::never_ready_agent(env.root.path(), "never-ready"));
    o.strategies = Registry::from_entries("strategy", [&boxsock_direct::REGISTRATION, &UNCHECKED]);
    o.ready_timeout = Duration::from_secs(3);
    let (rt, _) = Runtime::open(&env.home, with_ready_socket_host(o)).await.unwrap();
    // (The host backend has no ready socket to send an impostor's frame to.)
    let b =
        rt.create(CreateOptions::new(without::UNCHECKED, "host-ready-socket-test")).await.unwrap();
    let ready = env.home.join("boxes").join(b.id.as_str()).join("sockets").join("ready.sock");
    let impostor = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + LIMIT;
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&ready) {
                let frame = encode(&Frame::Control(Response::Ready {
                    version: VERSION,
                    pid: std::process::id(),
                }));
                // Reached: the runtime may close the connection before this write lands
                // (the held binding's listener checks the peer's pid at accept), so the
                // write's own result says nothing about whether the frame was refused.
                let _ = s.write_all(&frame);
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    });
    let r = rt.start(b.id.as_str()).await;
    assert!(
        impostor.join().unwrap(),
        "the impostor never reached the ready socket, so the test proves nothing (start: {r:?})"
    );
    match r {
        Err(RuntimeError::ReadyTimeout { .. }) => {}
        Ok(rec) => panic!(
            "a Ready frame from pid {} started the box (its process is {:?})",
            std::process::id(),
            rec.process
        ),
        Err(e) => panic!("expected a readiness timeout, got: {e}"),
    }
    let _ = rt.remove(b.id.as_str(), true).await;
}

/// The identity of a process that has exited (and been reaped).
fn a_dead_process() -> ProcessIdentity {
    let mut p = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let ident = ProcessIdentity::of(p.id() as i32).unwrap();
    p.kill().unwrap();
    p.wait().unwrap();
    ident
}

/// `run --rm`'s lifeline removes through `Runtime::remove_owned`: only a box tied to the
/// dead owner it names, or that id's journalled interrupted create; nothing while the
/// owner lives, nothing it cannot prove the owner made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_owned_removes_only_what_its_dead_owner_made() {
    use boxsock::boxsock_runtime::store::StoreError;
    use boxsock::{BoxId, OwnedRemoval};
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let (gone, other) = (a_dead_process(), a_dead_process());
    let owned = |id: &BoxId, owner: ProcessIdentity| {
        CreateOptions::builder()
            .strategy("short-symlink")
            .backend("host")
            .id(id.clone())
            .auto_remove_owner(owner)
            .build()
    };

    // A running box of the dead owner: stopped and removed, agent, link and directory.
    let a = BoxId::generate();
    assert_eq!(rt.create(owned(&a, gone)).await.unwrap().id, a, "the chosen id is the box's");
    let pid = rt.start(a.as_str()).await.unwrap().process.unwrap().pid;
    assert!(env.links().contains(&a.to_string()));
    assert_eq!(rt.remove_owned(&a, gone).await.unwrap(), OwnedRemoval::Removed);
    assert!(!pid_running(pid), "the agent survived");
    assert!(rt.get(a.as_str()).is_err(), "the row is left");
    assert!(!env.links().contains(&a.to_string()) && !rt.layout().box_dir(&a).exists());
    assert_eq!(rt.remove_owned(&a, gone).await.unwrap(), OwnedRemoval::Absent);

    // Another owner's box, and a box of a live owner: left alone.
    let b = BoxId::generate();
    rt.create(owned(&b, other)).await.unwrap();
    assert_eq!(rt.remove_owned(&b, gone).await.unwrap(), OwnedRemoval::NotOwned);
    let me = ProcessIdentity::current().unwrap();
    let c = BoxId::generate();
    rt.create(owned(&c, me)).await.unwrap();
    assert_eq!(rt.remove_owned(&c, me).await.unwrap(), OwnedRemoval::OwnerAlive);
    assert!(rt.get(b.as_str()).is_ok() && rt.get(c.as_str()).is_ok());

    // A create interrupted before its row (journal entry, directory, marker): undone.
    let d = BoxId::generate();
    std::fs::create_dir_all(rt.layout().journal_dir()).unwrap();
    std::fs::write(rt.layout().create_journal(&d), b"").unwrap();
    std::fs::create_dir(rt.layout().box_dir(&d)).unwrap();
    std::fs::write(rt.layout().box_marker(&d), b"").unwrap();
    assert_eq!(rt.remove_owned(&d, gone).await.unwrap(), OwnedRemoval::CreateUndone);
    assert!(!rt.layout().box_dir(&d).exists() && !rt.layout().create_journal(&d).exists());
    // A directory no create journalled: not provably the owner's.
    let e = BoxId::generate();
    std::fs::create_dir(rt.layout().box_dir(&e)).unwrap();
    assert_eq!(rt.remove_owned(&e, gone).await.unwrap(), OwnedRemoval::NotOwned);
    assert!(rt.layout().box_dir(&e).exists());
    std::fs::remove_dir(rt.layout().box_dir(&e)).unwrap();

    // A chosen id already used as an id or a name is refused before anything is written.
    let web = CreateOptions::builder().strategy("short-symlink").backend("host").name("web");
    let named = rt.create(web.build()).await.unwrap();
    for taken in [b.clone(), BoxId::parse("web").unwrap()] {
        let err = rt.create(owned(&taken, gone)).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Store(StoreError::IdTaken { .. })), "{taken}: {err}");
    }
    for id in [b.as_str(), c.as_str(), named.id.as_str()] {
        rt.remove(id, true).await.unwrap();
    }
}

/// A start whose starter died between launching the agent and recording it leaves a
/// `starting` row with no process, and possibly an agent that had already said it was
/// ready. `remove -f` and recovery ask whoever listens on the box's agent address to
/// shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_the_store_never_recorded_is_shut_down_by_remove_and_by_recovery() {
    let env = Env::new();
    let mut o = env.options();
    o.health_monitor = false;
    let (rt, _) = Runtime::open(&env.home, o.clone()).await.unwrap();
    let mut agents = Vec::new();
    for _ in 0..2 {
        let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        let pid = rt.start(b.id.as_str()).await.unwrap().process.unwrap().pid;
        rt.store()
            .execute_raw(&format!(
                "UPDATE boxes SET state = 'starting', pid = NULL, start_time = NULL WHERE id = '{}'",
                b.id
            ))
            .unwrap();
        agents.push((b.id, pid));
    }
    rt.remove(agents[0].0.as_str(), true).await.unwrap();
    wait_until("remove -f to shut the unrecorded agent down", || !pid_running(agents[0].1));
    rt.close();
    let (rt, report) = Runtime::open(&env.home, o).await.unwrap();
    assert!(report.recovered.iter().any(|r| r.id == agents[1].0), "{:?}", report.recovered);
    wait_until("recovery to shut the unrecorded agent down", || !pid_running(agents[1].1));
    rt.remove(agents[1].0.as_str(), true).await.unwrap();
}
