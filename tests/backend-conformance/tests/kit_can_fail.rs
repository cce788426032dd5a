//! The kit can fail, check by check: each check has a backend broken for it — the real
//! `host` backend (the real `boxsock-agent`, real sockets) with one [`Fault`] — and the
//! whole kit is run against it: exactly that check fails, with that check's message, and
//! every other check passes (or is skipped for the reason it is skipped on the correct
//! backend). So each fault is distinct and breaks only its check. The same backend done
//! right passes every check. `every_check_has_a_fault` fails when a check in [`CHECKS`]
//! has no fault here, so a new check cannot be added without its proof.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use boxsock_backend_conformance::{CHECKS, Outcome, Target, check_named, run_all, run_named};
use boxsock_core::backend::{
    AddressNeeds, Availability, BackendConfig, BackendError, Isolation, LaunchSpec, Launched,
    Readiness,
};
use boxsock_core::process::OwnedProcess;
use boxsock_core::registry::BackendRegistration;
use boxsock_core::spawn::Spawn;
use boxsock_core::{Backend, SocketSpec};
use boxsock_host::HostBackend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// None: `host` as it is.
    None,
    /// `host` plus a companion (`sleep`, own session), reported.
    Companion,
    /// The agent is started in the background by a launcher that exits: it runs, but in
    /// the launcher's session, not its own (`Launched::process` is no session leader).
    NotSessionLeader,
    /// For boxes with path addresses, a helper watches the box log and, once the agent
    /// logs a graceful shutdown, stays behind (a process that outlives `stop`).
    HelperOutlivesShutdown,
    /// The agent is started (in its own session) by a launcher that stays its parent
    /// and reaps it: the runtime, not the parent, never learns how it died.
    LauncherReapsIt,
    /// `host` with its output sent to /dev/null instead of the box log.
    LogToNull,
    /// Says it takes abstract names, refuses them at launch.
    ClaimsAbstract,
    /// A reported companion, as [`Fault::Companion`]; when a box is started again, an
    /// unreported helper of the companion is started too, in a session of its own.
    CompanionHelperOnRestart,
    /// Cannot launch on this machine ([`UNAVAILABLE_REASON`]).
    Unavailable,
}

const UNAVAILABLE_REASON: &str = "no such hypervisor on this machine";

/// Where the launchers of [`Fault::NotSessionLeader`] and [`Fault::LauncherReapsIt`] find
/// the real agent, and where they write its pid.
const ENV_REAL_AGENT: &str = "BOXSOCK_FAULT_AGENT";
const ENV_PID_FILE: &str = "BOXSOCK_FAULT_PID_FILE";

/// Starts the agent in the background and exits: the agent stays in this script's
/// session (the host backend made the script a session leader).
const NOT_SESSION_LEADER: &str = r#"#!/bin/sh
"$BOXSOCK_FAULT_AGENT" "$@" &
f="$BOXSOCK_FAULT_PID_FILE"
echo $! > "$f.tmp" && mv "$f.tmp" "$f"
"#;

/// Starts the agent in a session of its own (`setsid` does not fork: a background job
/// of a script leads no process group) and waits for it, so the script reaps it.
const LAUNCHER_REAPS_IT: &str = r#"#!/bin/sh
setsid "$BOXSOCK_FAULT_AGENT" "$@" &
f="$BOXSOCK_FAULT_PID_FILE"
echo $! > "$f.tmp" && mv "$f.tmp" "$f"
wait
"#;

/// The helper of [`Fault::HelperOutlivesShutdown`]: reads the log from its start and
/// follows it while the agent lives (so it sees every line, however late it starts);
/// gone with the agent unless the agent logged a graceful shutdown.
const OUTLIVES_SHUTDOWN: &str =
    r#"tail -n +1 --pid="$1" -s 0.05 -f "$2" | grep -q "shutdown requested" && exec sleep 600"#;

#[derive(Debug)]
struct Faulty {
    name: &'static str,
    fault: Fault,
    inner: HostBackend,
}

/// `program args…` in a session of its own, stdout and stderr to `log`; returns its pid.
fn spawn_detached(program: &str, args: &[&str], log: &Path) -> Result<OwnedProcess, BackendError> {
    // Its own session, stdio to the log, nothing else inherited. Dropping the result
    // neither waits nor kills; the runtime (or the kit) ends it.
    let mut cmd = Spawn::new(program);
    cmd.args(args).log_file(log).map_err(|e| BackendError::spawn("faulty", e))?;
    cmd.spawn().map_err(|e| BackendError::spawn("faulty", e))
}

/// A directory holding `script` as an executable `boxsock-agent` (the host backend's
/// helper directory for a launcher fault), made once per process.
fn launcher_dir(fault: Fault) -> PathBuf {
    static DIRS: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = DIRS.get_or_init(|| {
        let d =
            tempfile::Builder::new().prefix("bk-launchers").tempdir_in("/tmp").expect("tempdir");
        for (name, script) in
            [("not-session-leader", NOT_SESSION_LEADER), ("launcher-reaps-it", LAUNCHER_REAPS_IT)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = d.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            let p = dir.join(boxsock_host::AGENT_BINARY);
            std::fs::write(&p, script).expect("write launcher");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        d
    });
    let name = match fault {
        Fault::NotSessionLeader => "not-session-leader",
        _ => "launcher-reaps-it",
    };
    root.path().join(name)
}

impl Faulty {
    fn spawn_error(&self, what: &str, e: std::io::Error) -> BackendError {
        BackendError::Spawn { backend: self.name.into(), what: what.into(), source: e }
    }

    /// Launch through a launcher script (see [`launcher_dir`]) and report the agent it
    /// started, as the script wrote its pid.
    fn launch_via_launcher(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        let real = built_agent_dir().join(boxsock_host::AGENT_BINARY);
        let pid_file = spec.layout.box_dir(&spec.id).join("fault-agent.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut s = spec.clone();
        s.env.push((ENV_REAL_AGENT.into(), real.display().to_string()));
        s.env.push((ENV_PID_FILE.into(), pid_file.display().to_string()));
        let launcher = HostBackend::new(BackendConfig {
            helper_dir: Some(launcher_dir(self.fault)),
            ..Default::default()
        });
        let launched = launcher.launch(&s)?;
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) =
                std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let e = std::io::Error::other(format!("{} never appeared", pid_file.display()));
                return Err(self.spawn_error("the launcher", e));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Not our child: adopted (pidfd first, then the start time, checked alive).
        let process =
            OwnedProcess::adopt(pid).map_err(|e| self.spawn_error("the launcher's agent", e))?;
        Ok(Launched { process, companions: launched.companions })
    }
}

impl Backend for Faulty {
    fn name(&self) -> &str {
        self.name
    }
    fn sockets(&self, network: bool) -> Vec<SocketSpec> {
        self.inner.sockets(network)
    }
    fn address_needs(&self) -> AddressNeeds {
        self.inner.address_needs()
    }
    fn readiness(&self) -> Readiness {
        self.inner.readiness()
    }
    fn isolation(&self) -> Isolation {
        Isolation::None
    }
    fn available(&self) -> Availability {
        if self.fault == Fault::Unavailable {
            return Availability::Unavailable { reason: UNAVAILABLE_REASON.into() };
        }
        self.inner.available()
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        let log = spec.log_file.clone();
        match self.fault {
            Fault::None | Fault::Unavailable => self.inner.launch(spec),
            Fault::NotSessionLeader | Fault::LauncherReapsIt => self.launch_via_launcher(spec),
            Fault::HelperOutlivesShutdown => {
                let mut s = spec.clone();
                // The helper waits for the agent's "shutdown requested" (info level).
                s.env.push(("RUST_LOG".into(), "info".into()));
                let launched = self.inner.launch(&s)?;
                // Path boxes only: the address check stops an abstract box gracefully
                // too, and this fault is the stop check's alone.
                if spec.sockets.dir.is_some() {
                    let (pid, path) =
                        (launched.process.pid().to_string(), log.display().to_string());
                    let args = ["-c", OUTLIVES_SHUTDOWN, "helper", pid.as_str(), path.as_str()];
                    spawn_detached("sh", &args, &log)?;
                }
                Ok(launched)
            }
            Fault::LogToNull => {
                let mut s = spec.clone();
                s.log_file = "/dev/null".into();
                self.inner.launch(&s)
            }
            Fault::ClaimsAbstract => {
                if spec.sockets.dir.is_none() {
                    let reason = "this backend only takes paths".into();
                    return Err(BackendError::Spec { backend: self.name.into(), reason });
                }
                self.inner.launch(spec)
            }
            Fault::Companion | Fault::CompanionHelperOnRestart => {
                static STARTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
                let again = !STARTED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(HashSet::new)
                    .insert(spec.id.to_string());
                let mut launched = self.inner.launch(spec)?;
                launched.companions.push(spawn_detached("sleep", &["600"], &log)?);
                if self.fault == Fault::CompanionHelperOnRestart && again {
                    spawn_detached("sleep", &["601"], &log)?;
                }
                Ok(launched)
            }
        }
    }
}

macro_rules! faulty {
    ($reg:ident, $name:literal, $fault:expr) => {
        static $reg: BackendRegistration = BackendRegistration {
            name: $name,
            summary: "a deliberately broken backend of the kit's own tests",
            build: |config: &BackendConfig| -> Result<Arc<dyn Backend>, BackendError> {
                let inner = HostBackend::new(config.clone());
                Ok(Arc::new(Faulty { name: $name, fault: $fault, inner }))
            },
        };
    };
}

faulty!(CORRECT, "correct", Fault::None);
faulty!(COMPANION, "companion", Fault::Companion);
faulty!(NOT_SESSION_LEADER_REG, "not-session-leader", Fault::NotSessionLeader);
faulty!(OUTLIVES_SHUTDOWN_REG, "outlives-shutdown", Fault::HelperOutlivesShutdown);
faulty!(LAUNCHER_REAPS_IT_REG, "launcher-reaps-it", Fault::LauncherReapsIt);
faulty!(LOG_TO_NULL, "log-to-null", Fault::LogToNull);
faulty!(CLAIMS_ABSTRACT, "claims-abstract", Fault::ClaimsAbstract);
faulty!(HELPER_ON_RESTART, "helper-on-restart", Fault::CompanionHelperOnRestart);
faulty!(UNAVAILABLE, "unavailable", Fault::Unavailable);

/// One test at a time: a check asserts that the whole process has no descendants left,
/// which another test's running box would break.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn built_agent_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

fn target(reg: &'static BackendRegistration) -> Target {
    let helper_dir = built_agent_dir();
    let mut t =
        Target::new(reg, BackendConfig { helper_dir: Some(helper_dir), ..Default::default() });
    t.ready_timeout = Duration::from_secs(3);
    t.stop_timeout = Duration::from_secs(2);
    t
}

/// The fault of each check: the check, the backend broken for it, what its failure must
/// say (besides naming the backend and the check).
const FAULTS: &[(&str, &BackendRegistration, &[&str])] = &[
    ("launch_and_readiness", &NOT_SESSION_LEADER_REG, &["does not lead its own session"]),
    (
        "stop_is_bounded_and_leaves_nothing",
        &OUTLIVES_SHUTDOWN_REG,
        &["after stop of box", "processes the box started are still alive", "(sleep)"],
    ),
    (
        "killed_box_is_observed_exited",
        &LAUNCHER_REAPS_IT_REG,
        &["killed with SIGKILL, recorded exit code None, expected 137"],
    ),
    ("log_file_receives_output", &LOG_TO_NULL, &["is ready but its log", "is empty"]),
    ("address_needs_are_honoured", &CLAIMS_ABSTRACT, &["did not start", "only takes paths"]),
    (
        "companions_reaped",
        &HELPER_ON_RESTART,
        &["after remove --force of box", "processes the box started are still alive", "(sleep)"],
    ),
];

/// The whole kit against the backend broken for `check`: exactly `check` fails, with its
/// message; every other check passes, or is skipped as it is on the correct backend
/// (`companions_reaped` without companions).
fn prove(check: &str) {
    let _serial = serial();
    let (_, reg, says) = FAULTS.iter().find(|(c, ..)| *c == check).expect("a fault for the check");
    let report = run_all(&target(reg));
    let failures = report.failures();
    let [(failed, msg)] = failures.as_slice() else {
        panic!(
            "backend {:?} (broken for {check}) did not fail exactly {check}: {:#?}",
            reg.name, report.results
        );
    };
    assert_eq!(*failed, check, "backend {:?} broke another check: {msg}", reg.name);
    let named = format!("backend {:?}, check {check}: ", reg.name);
    assert!(msg.contains(&named), "the failure does not name backend and check ({named}): {msg}");
    for s in *says {
        assert!(
            msg.contains(s),
            "{check} failed against {:?}, but not with {s:?}: {msg}",
            reg.name
        );
    }
    for r in &report.results {
        match &r.outcome {
            Ok(Outcome::Skipped(why)) => {
                assert_eq!(
                    r.check, "companions_reaped",
                    "{} skipped against {:?}: {why}",
                    r.check, reg.name
                );
                assert!(why.contains("no companions"), "{why}");
            }
            Ok(Outcome::Passed) | Err(_) => {}
        }
    }
    // The kit cleaned up after the failure: nothing it started is left.
    let left = boxsock_backend_conformance::procs::live_descendants();
    assert!(left.is_empty(), "a failed check left processes: {left:?}");
}

#[test]
fn every_check_has_a_fault() {
    let missing: Vec<&str> =
        CHECKS.iter().map(|c| c.name).filter(|n| !FAULTS.iter().any(|(c, ..)| c == n)).collect();
    assert!(
        missing.is_empty(),
        "checks without a backend broken for them in kit_can_fail.rs: {missing:?}"
    );
    for (c, ..) in FAULTS {
        assert!(check_named(c).is_some(), "a fault for {c:?}, which the kit does not have");
    }
    let faults: HashSet<&str> = FAULTS.iter().map(|(_, r, _)| r.name).collect();
    assert_eq!(faults.len(), FAULTS.len(), "two checks share a fault");
    assert_eq!(FAULTS.len(), CHECKS.len());
    let mut proved = PROVED.to_vec();
    let mut all: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
    proved.sort_unstable();
    all.sort_unstable();
    assert_eq!(proved, all, "every check's fault must have its test in fault_tests!");
}

#[test]
fn correct_host_passes_every_check_but_companions() {
    let _serial = serial();
    let report = run_all(&target(&CORRECT));
    assert!(report.failures().is_empty(), "{:#?}", report.failures());
    assert_eq!(report.results.len(), CHECKS.len());
    let skipped: Vec<&str> = report.skipped().iter().map(|(c, _)| *c).collect();
    assert_eq!(skipped, ["companions_reaped"], "{:?}", report.skipped());
}

#[test]
fn correct_backend_with_a_companion_passes_every_check() {
    let _serial = serial();
    let report = run_all(&target(&COMPANION));
    assert!(report.failures().is_empty(), "{:#?}", report.failures());
    assert_eq!(report.passed().len(), CHECKS.len(), "skipped: {:?}", report.skipped());
}

/// One test per fault, `<check>_can_fail`; their checks are [`PROVED`].
macro_rules! fault_tests {
    ($($check:ident),* $(,)?) => {
        const PROVED: &[&str] = &[$(stringify!($check)),*];
        mod can_fail {
            $(
                #[test]
                fn $check() {
                    super::prove(stringify!($check));
                }
            )*
        }
    };
}

fault_tests!(
    launch_and_readiness,
    stop_is_bounded_and_leaves_nothing,
    killed_box_is_observed_exited,
    log_file_receives_output,
    address_needs_are_honoured,
    companions_reaped,
);

#[test]
fn a_backend_that_cannot_launch_here_is_skipped_with_its_reason() {
    let _serial = serial();
    for check in CHECKS {
        match run_named(check.name, &target(&UNAVAILABLE)) {
            Outcome::Skipped(why) => assert!(
                why.contains("cannot launch boxes on this machine")
                    && why.contains(UNAVAILABLE_REASON),
                "{why}"
            ),
            Outcome::Passed => {
                panic!("check {} passed against a backend that cannot launch here", check.name)
            }
        }
    }
}
