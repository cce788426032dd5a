//! passt as a real companion, and the real shim against the real libkrun with
//! `configure_only` (no guest is booted: this machine's KVM is PVM, see the probe).

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_core::backend::{BackendConfig, BackendError};
use boxsock_libkrun::passt::{Passt, PasstError};
use boxsock_libkrun::{Libkrun, LibkrunConfig};
use boxsock_test_support::{Need, Unmakeable, skip, skip_allowed};
use common::{Fixture, gone};

const PASST: Need = Need::Program { name: "passt", package: "passt" };

fn passt_bin() -> Option<PathBuf> {
    let p = std::env::var_os("PATH")?;
    std::env::split_paths(&p).map(|d| d.join("passt")).find(|p| p.exists())
}

fn backend(opts: &[(&str, &str)]) -> Libkrun {
    let cfg = BackendConfig {
        helper_dir: Some(
            PathBuf::from(env!("CARGO_BIN_EXE_boxsock-krun-shim")).parent().unwrap().to_path_buf(),
        ),
        options: opts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    Libkrun::new(LibkrunConfig::from_backend_config(&cfg).unwrap())
}

fn wait_exit(pid: i32) -> Option<i32> {
    // The test process is the parent: reap it (the runtime does the same).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Some(c),
            Ok(nix::sys::wait::WaitStatus::Signaled(..)) => return None,
            _ if Instant::now() > deadline => panic!("pid {pid} did not exit"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Kills and reaps a pid when dropped, so a failing assertion leaks no process.
struct Reap(i32);
impl Drop for Reap {
    fn drop(&mut self) {
        kill_and_reap(self.0);
    }
}

fn kill_and_reap(pid: i32) {
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
    let _ = nix::sys::wait::waitpid(p, None);
}

#[test]
fn passt_binds_through_a_short_symlink_and_accepts_then_dies_when_killed() {
    let Some(bin) = passt_bin() else {
        skip(PASST, "passt is not installed");
        return;
    };
    let f = Fixture::new(200); // a >200-byte home: the real path would not fit
    f.ensure();
    let sock = f.addr("net.sock");
    assert!(f.layout.sockets_dir(&f.id).join("net.sock").as_os_str().len() > 108);
    let log = f.layout.logs_dir(&f.id).join("passt.log");
    let p = Passt::start(&bin, &sock, &log, Duration::from_secs(5)).unwrap();
    let pid = p.pid();
    // Bound at the alias, visible in the real directory.
    UnixStream::connect(&sock).unwrap();
    UnixStream::connect(&sock).unwrap(); // passt takes a new client after the first leaves
    assert!(std::fs::symlink_metadata(f.layout.sockets_dir(&f.id).join("net.sock")).is_ok());
    p.kill();
    assert!(gone(pid), "passt {pid} still exists");
}

#[test]
fn passt_failures_name_the_binary_and_its_output() {
    let f = Fixture::new(0);
    f.ensure();
    let log = f.layout.logs_dir(&f.id).join("passt.log");
    let err = Passt::start(
        Path::new("/nonexistent/passt"),
        &f.addr("net.sock"),
        &log,
        Duration::from_secs(2),
    )
    .unwrap_err();
    assert!(
        matches!(err, PasstError::Spawn { .. }) && err.to_string().contains("/nonexistent/passt"),
        "{err}"
    );
    let Some(bin) = passt_bin() else {
        skip(PASST, "passt is not installed (the rest of the test)");
        return;
    };
    // A directory that does not exist: passt cannot bind and exits.
    let sock = f.addr("missing-dir/net.sock");
    let err = Passt::start(&bin, &sock, &log, Duration::from_secs(2)).unwrap_err();
    match &err {
        PasstError::NotBound { binary, socket, output, .. } => {
            assert_eq!(binary, &bin);
            assert_eq!(socket, &sock);
            assert!(!output.is_empty());
        }
        other => panic!("{other}"),
    }
    // Something that is not a socket at the path is never replaced.
    std::fs::write(f.addr("net.sock"), b"keep").unwrap();
    let err = Passt::start(&bin, &f.addr("net.sock"), &log, Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, PasstError::Occupied { .. }), "{err}");
    assert_eq!(std::fs::read(f.addr("net.sock")).unwrap(), b"keep");
}

/// A passt that never binds is killed when `start` gives up on it, not left behind
/// (a helper saw one orphaned under load). The stand-in writes its pid and sleeps; the
/// control is the same stand-in started by hand, alive until killed.
#[test]
fn a_passt_that_never_binds_is_killed_when_start_times_out() {
    let f = Fixture::new(0);
    f.ensure();
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("passt");
    let pid_file = dir.path().join("pid");
    std::fs::write(
        &stand_in,
        format!("#!/bin/sh\necho $$ > {}\nexec sleep 600\n", pid_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let log = f.layout.logs_dir(&f.id).join("passt.log");
    let read_pid = || -> i32 {
        for _ in 0..400 {
            if let Some(p) =
                std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok())
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the stand-in never started");
    };
    // Control: the stand-in lives on by itself.
    let mut control = std::process::Command::new(&stand_in).spawn().unwrap();
    let pid = read_pid();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!gone(pid), "the control stand-in died by itself");
    control.kill().unwrap();
    control.wait().unwrap();
    std::fs::remove_file(&pid_file).unwrap();

    let err =
        Passt::start(&stand_in, &f.addr("net.sock"), &log, Duration::from_millis(300)).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    let pid = read_pid();
    assert!(gone(pid), "passt {pid} outlived the start that timed out");
}

#[test]
fn launch_starts_passt_and_the_shim_configures_real_libkrun() {
    let Some(bin) = passt_bin() else {
        skip(PASST, "passt is not installed");
        return;
    };
    let f = Fixture::new(220);
    f.ensure();
    std::fs::write(f.layout.rootfs_dir(&f.id).join("boxsock-agent"), b"#!/bin/true\n").unwrap();
    // passt makes itself non-dumpable in namespaces of its own moments after it starts,
    // after which /proc/<pid>/cmdline and fd/ read empty or fail: a wrapper records
    // what passt is given (argv, descriptor 3) in the very process that then execs it.
    let seen = tempfile::tempdir().unwrap();
    let wrapper = seen.path().join("passt");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nreadlink /proc/$$/fd/3 > '{d}/fd3.tmp'; printf '%s\\n' \"$*\" > '{d}/argv.tmp'\nmv '{d}/fd3.tmp' '{d}/fd3'; mv '{d}/argv.tmp' '{d}/argv'\nexec '{bin}' \"$@\"\n",
            d = seen.path().display(),
            bin = bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let b = backend(&[("configure_only", "on"), ("passt", wrapper.to_str().unwrap())]);
    let launched = b.launch_unchecked(&f.launch_spec_verified(true)).unwrap();
    assert_eq!(launched.companions.len(), 1);
    let passt = launched.companions[0].pid();
    let guard = Reap(passt);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.path().join("argv").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // passt serves one end of a socketpair (`--fd 3`): nothing is bound on the
    // filesystem for `net`, so no path can be redirected.
    let cmdline = std::fs::read_to_string(seen.path().join("argv")).expect("the passt wrapper ran");
    assert!(cmdline.contains("--fd 3"), "{cmdline}");
    // No name a box listens on is in passt's argv (issue 18.1): nothing to read from
    // /proc and bind first.
    for needle in ["agent.sock", "ready.sock", "net.sock", "/proc/self/fd", "boxsock/"] {
        assert!(!cmdline.contains(needle), "passt's argv holds {needle:?}: {cmdline}");
    }
    assert!(!cmdline.contains(f.layout.sockets_dir(&f.id).to_str().unwrap()), "{cmdline}");
    let fd3 = std::fs::read_to_string(seen.path().join("fd3")).unwrap();
    assert!(fd3.starts_with("socket:"), "passt's descriptor 3: {fd3}");
    assert!(
        !f.addr("net.sock").exists() && !f.layout.sockets_dir(&f.id).join("net.sock").exists(),
        "a net socket file was bound"
    );
    let pid = |p: i32| nix::unistd::Pid::from_raw(p);
    assert_eq!(
        nix::unistd::getsid(Some(pid(passt))).unwrap(),
        pid(passt),
        "passt leads its own session"
    );
    if let Ok(sid) = nix::unistd::getsid(Some(pid(launched.process.pid()))) {
        assert_eq!(sid, pid(launched.process.pid()), "the shim leads its own session");
    }
    // The shim validated, jailed itself, made every libkrun call for real, and exited 0.
    let code = wait_exit(launched.process.pid());
    let log = std::fs::read_to_string(f.layout.log_file(&f.id)).unwrap();
    assert_eq!(code, Some(0), "shim log: {log}");
    assert!(log.contains("configured"), "{log}");
    // libkrun was given the verified directory (fd 3) and the network end (fd 4), and
    // every socket path through the descriptor.
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.layout.box_dir(&f.id).join(boxsock_libkrun::SHIM_SPEC_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["socket_dir_fd"], 3);
    assert_eq!(spec["agent"]["host_path"], "/proc/self/fd/3/agent.sock");
    assert_eq!(spec["ready"]["host_path"], "/proc/self/fd/3/ready.sock");
    assert_eq!(spec["tmpdir"], "/proc/self/fd/3");
    assert_eq!(spec["net"]["fd"], 4);
    assert_eq!(spec["jail"]["socket_dir_fd"], 3);
    // The companion is the runtime's to kill; do it and check it is really gone.
    drop(guard); // kills and reaps it
    assert!(gone(passt), "passt {passt} survived");
}

#[test]
fn a_failing_shim_spawn_kills_the_passt_it_started() {
    let Some(bin) = passt_bin() else {
        skip(PASST, "passt is not installed");
        return;
    };
    let f = Fixture::new(0);
    f.ensure();
    std::fs::write(f.layout.rootfs_dir(&f.id).join("boxsock-agent"), b"").unwrap();
    let b =
        backend(&[("shim", "/nonexistent/boxsock-krun-shim"), ("passt", bin.to_str().unwrap())]);
    let before = passt_pids();
    let err = b.launch_unchecked(&f.launch_spec_verified(true)).unwrap_err();
    assert!(
        matches!(&err, BackendError::Spawn { what, .. } if what.contains("/nonexistent/boxsock-krun-shim")),
        "{err}"
    );
    // The missing shim is named with the command that installs it.
    assert!(
        std::error::Error::source(&err)
            .is_some_and(|s| s.to_string().contains(boxsock_libkrun::SHIM_INSTALL)),
        "{err}"
    );
    let log = f.layout.log_file(&f.id).with_file_name("passt.log");
    let leaked: Vec<i32> = passt_pids()
        .into_iter()
        .filter(|p| !before.contains(p) && passt_logs_to(*p, &log))
        .collect();
    assert!(leaked.is_empty(), "passt leaked: {leaked:?}");
}

fn passt_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("passt"))
        })
        .collect()
}

/// Whether passt `pid` writes its output to `log` (this test's passt).
fn passt_logs_to(pid: i32, log: &Path) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|l| l == log)
}

#[test]
fn launch_without_a_verified_socket_dir_is_refused() {
    let f = Fixture::new(0);
    f.ensure();
    std::fs::write(f.layout.rootfs_dir(&f.id).join("boxsock-agent"), b"").unwrap();
    let err =
        backend(&[("configure_only", "on")]).launch_unchecked(&f.launch_spec(false)).unwrap_err();
    assert!(
        matches!(&err, BackendError::Spec { reason, .. } if reason.contains("no verified socket directory")),
        "{err}"
    );
}

#[allow(dead_code)]
fn passt_serves(pid: i32, sock: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*sock.to_string_lossy()))
}

#[test]
fn the_shim_refuses_an_over_long_spec_before_any_libkrun_call() {
    let f = Fixture::new(0);
    f.ensure();
    let mut spec = backend(&[]).shim_spec(&f.launch_spec(false)).unwrap();
    spec.agent.host_path = PathBuf::from(format!("/{}/agent.sock", "a".repeat(110)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxsock-krun-shim"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &spec).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"agent\"") && err.contains("122 bytes") && err.contains("108"), "{err}");
    // Garbage on stdin is a clear error too.
    let out = Command::new(env!("CARGO_BIN_EXE_boxsock-krun-shim"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid spec"));
}

#[test]
fn boots_a_box_on_a_real_kvm_host() {
    let b = backend(&[]);
    if let boxsock_core::backend::Availability::Unavailable { reason } =
        boxsock_core::Backend::available(&b)
    {
        skip_allowed(
            Unmakeable::NoHardwareKvm,
            format!("libkrun cannot boot a guest here: {reason}"),
        );
        return;
    }
    // A real host: boot needs a guest root with a static boxsock-agent; the end-to-end
    // boot (ready + exec through the agent) is scripts/krun-boot-test.sh, which drives the
    // CLI. Here: launch must at least start a shim that stays up.
    let f = Fixture::new(220);
    f.ensure();
    let agent = std::env::var_os("BOXSOCK_GUEST_AGENT").map(PathBuf::from);
    let Some(agent) = agent else {
        let what = "BOXSOCK_GUEST_AGENT (a static boxsock-agent)";
        let by = "scripts/krun-boot-test.sh sets it on a KVM host (CI machines have none)";
        skip(Need::Setup { what, provided_by: by }, "set BOXSOCK_GUEST_AGENT to boot here");
        return;
    };
    std::fs::copy(agent, f.layout.rootfs_dir(&f.id).join("boxsock-agent")).unwrap();
    let l = boxsock_core::Backend::launch(&b, &f.launch_spec_verified(false)).unwrap();
    let _guards: Vec<Reap> =
        l.companions.iter().map(|p| Reap(p.pid())).chain([Reap(l.process.pid())]).collect();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !gone(l.process.pid()),
        "the shim died: {}",
        std::fs::read_to_string(f.layout.log_file(&f.id)).unwrap_or_default()
    );
}

/// Regression (issue 11): `prepare` always installed the agent at `/boxsock-agent` while
/// the launch looked for `guest_agent`, so a box with a non-default path never started.
#[test]
fn a_non_default_guest_agent_is_installed_where_the_launch_looks_for_it() {
    use boxsock_core::Backend;
    let f = Fixture::new(220);
    f.ensure();
    let b = backend(&[
        ("configure_only", "on"),
        ("agent", "/bin/true"),
        ("guest_agent", "/opt/agent/bin/boxsock-agent"),
    ]);
    b.prepare(&f.layout, &f.id).unwrap();
    // The agent lives in the shared guest base (issue 13: nothing is copied per box).
    let root = boxsock_libkrun::backend::recorded_base(&f.layout, &f.id)
        .expect("prepare records the base");
    assert!(
        root.join("opt/agent/bin/boxsock-agent").is_file(),
        "agent not at the configured guest path"
    );
    let spec = b.shim_spec(&f.launch_spec(false)).unwrap();
    assert_eq!(spec.exec.path, "/opt/agent/bin/boxsock-agent");
    // The launch finds it (before the fix: "the guest root … has no agent at …").
    let launched = b.launch_unchecked(&f.launch_spec_verified(false)).unwrap();
    let code = wait_exit(launched.process.pid());
    let log = std::fs::read_to_string(f.layout.log_file(&f.id)).unwrap();
    assert_eq!(code, Some(0), "shim log: {log}");
}

#[test]
fn a_guest_agent_path_that_could_leave_the_root_is_refused_naming_the_option() {
    for bad in ["relative/agent", "/opt/../../etc/agent", "/.."] {
        let cfg = BackendConfig {
            helper_dir: None,
            options: [("guest_agent".to_owned(), bad.to_owned())].into_iter().collect(),
        };
        let err = LibkrunConfig::from_backend_config(&cfg).unwrap_err();
        assert!(err.to_string().contains("guest_agent") && err.to_string().contains(bad), "{err}");
    }
}
