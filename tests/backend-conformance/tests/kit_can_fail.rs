//! The kit can fail: each check is run against a backend broken in the way that check
//! is about, and must fail; the same backend done right passes every check. The broken
//! backends wrap the real `host` backend (the real `boxsock-agent`, real sockets) and
//! add one fault each: a process that never becomes ready, a process that escapes the
//! box's session, output sent to /dev/null, abstract names claimed but refused, a
//! companion whose helper escapes.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use boxsock_backend_conformance::{CHECKS, Outcome, Target, run_all, run_named};
use boxsock_core::backend::{AddressNeeds, Availability, BackendConfig, BackendError, Isolation, LaunchSpec, Launched};
use boxsock_core::registry::BackendRegistration;
use boxsock_core::{Backend, SocketSpec};
use boxsock_host::HostBackend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// None: `host` as it is.
    None,
    /// `host` plus a companion (`sleep`, own session), reported.
    Companion,
    /// Launches `sleep` instead of the agent: nothing binds, nothing is ready.
    NeverReady,
    /// `host` plus an unreported process in a session of its own.
    StrayEscapes,
    /// `host` with its output sent to /dev/null instead of the box log.
    LogToNull,
    /// Says it takes abstract names, refuses them at launch.
    ClaimsAbstract,
    /// A reported companion plus an unreported helper of it in its own session.
    CompanionEscapes,
    /// Cannot launch on this machine ([`UNAVAILABLE_REASON`]).
    Unavailable,
}

const UNAVAILABLE_REASON: &str = "no such hypervisor on this machine";

#[derive(Debug)]
struct Faulty {
    name: &'static str,
    fault: Fault,
    inner: HostBackend,
}

/// `program args…` in a session of its own, stdout and stderr to `log`; returns its pid.
fn spawn_detached(program: &str, args: &[&str], log: &std::path::Path) -> Result<i32, BackendError> {
    let open = || std::fs::OpenOptions::new().create(true).append(true).open(log);
    let spawn_err = |source| BackendError::Spawn { backend: "faulty".into(), what: program.into(), source };
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(open().map_err(spawn_err)?).stderr(open().map_err(spawn_err)?);
    // SAFETY: runs in the forked child before exec and only calls setsid(2), which is
    // async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    // Dropping the `Child` neither waits nor kills; the runtime (or the kit) ends it.
    cmd.spawn().map(|c| c.id() as i32).map_err(spawn_err)
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
            Fault::NeverReady => Ok(Launched { pid: spawn_detached("sleep", &["600"], &log)?, companions: Vec::new() }),
            Fault::StrayEscapes => {
                let launched = self.inner.launch(spec)?;
                spawn_detached("sleep", &["600"], &log)?;
                Ok(launched)
            }
            Fault::LogToNull => {
                let mut s = spec.clone();
                s.log_file = "/dev/null".into();
                self.inner.launch(&s)
            }
            Fault::ClaimsAbstract => {
                if spec.sockets.dir.is_none() {
                    return Err(BackendError::Spec { backend: self.name.into(), reason: "this backend only takes paths".into() });
                }
                self.inner.launch(spec)
            }
            Fault::Companion | Fault::CompanionEscapes => {
                let mut launched = self.inner.launch(spec)?;
                launched.companions.push(spawn_detached("sleep", &["600"], &log)?);
                if self.fault == Fault::CompanionEscapes {
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
                Ok(Arc::new(Faulty { name: $name, fault: $fault, inner: HostBackend::new(config.clone()) }))
            },
        };
    };
}

faulty!(CORRECT, "correct", Fault::None);
faulty!(COMPANION, "companion", Fault::Companion);
faulty!(NEVER_READY, "never-ready", Fault::NeverReady);
faulty!(STRAY_ESCAPES, "stray-escapes", Fault::StrayEscapes);
faulty!(LOG_TO_NULL, "log-to-null", Fault::LogToNull);
faulty!(CLAIMS_ABSTRACT, "claims-abstract", Fault::ClaimsAbstract);
faulty!(COMPANION_ESCAPES, "companion-escapes", Fault::CompanionEscapes);
faulty!(UNAVAILABLE, "unavailable", Fault::Unavailable);

/// One test at a time: `must_fail` asserts that the whole process has no descendants
/// left, which another test's running box would break.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn target(reg: &'static BackendRegistration) -> Target {
    let helper_dir = boxsock_host::dev::built_binaries(&["boxsock-agent"]);
    let mut t = Target::new(reg, BackendConfig { helper_dir: Some(helper_dir), ..Default::default() });
    t.ready_timeout = Duration::from_secs(3);
    t.stop_timeout = Duration::from_secs(2);
    t
}

/// `check` fails against `reg`, with a message containing `needle`.
fn must_fail(reg: &'static BackendRegistration, check: &str, needle: &str) {
    let t = target(reg);
    let r = std::panic::catch_unwind(|| run_named(check, &t));
    match r {
        Ok(o) => panic!("check {check} did not fail against backend {:?}: {o:?}", reg.name),
        Err(p) => {
            let msg = boxsock_backend_conformance::panic_message(&*p);
            assert!(msg.contains(needle), "check {check} against {:?} failed, but not with {needle:?}: {msg}", reg.name);
            assert!(msg.contains(reg.name), "the failure does not name the backend: {msg}");
        }
    }
    // The kit cleaned up after the failure: nothing it started is left.
    assert!(boxsock_backend_conformance::procs::live_descendants().is_empty(), "a failed check left processes: {:?}", boxsock_backend_conformance::procs::live_descendants());
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

#[test]
fn launch_and_readiness_can_fail() {
    let _serial = serial();
    must_fail(&NEVER_READY, "launch_and_readiness", "did not start");
}

#[test]
fn stop_is_bounded_and_leaves_nothing_can_fail() {
    let _serial = serial();
    must_fail(&STRAY_ESCAPES, "stop_is_bounded_and_leaves_nothing", "still alive");
}

#[test]
fn killed_box_is_observed_exited_can_fail() {
    let _serial = serial();
    must_fail(&STRAY_ESCAPES, "killed_box_is_observed_exited", "still alive");
}

#[test]
fn log_file_receives_output_can_fail() {
    let _serial = serial();
    must_fail(&LOG_TO_NULL, "log_file_receives_output", "is empty");
}

#[test]
fn address_needs_are_honoured_can_fail() {
    let _serial = serial();
    must_fail(&CLAIMS_ABSTRACT, "address_needs_are_honoured", "abstract");
}

#[test]
fn companions_reaped_can_fail() {
    let _serial = serial();
    must_fail(&COMPANION_ESCAPES, "companions_reaped", "still alive");
}

#[test]
fn a_backend_that_cannot_launch_here_is_skipped_with_its_reason() {
    let _serial = serial();
    for check in CHECKS {
        match run_named(check.name, &target(&UNAVAILABLE)) {
            Outcome::Skipped(why) => assert!(why.contains("cannot launch boxes on this machine") && why.contains(UNAVAILABLE_REASON), "{why}"),
            Outcome::Passed => panic!("check {} passed against a backend that cannot launch here", check.name),
        }
    }
}
