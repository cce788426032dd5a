//! The boxsock backend conformance kit: the executable specification of
//! [`Backend`](boxsock_core::Backend), as the strategy kit (`boxsock-conformance`) is of
//! `SocketBinding`.
//!
//! Every check is a plain public function taking a [`Kit`]: a fresh temporary home, a
//! real [`Runtime`](boxsock_runtime::Runtime) over it whose backend registry holds only
//! the backend under test, and real strategies (`short-symlink`, and `abstract` where a
//! check needs abstract names). Boxes are really created, started, pinged, stopped,
//! killed and removed; processes are really spawned. A check that does not apply (the
//! backend cannot launch here, it launched no companions, abstract names on a
//! path-only backend…) is [`Outcome::Skipped`] with the reason and prints
//! `skipped: <check>: <reason>`; it is never silently passed. A failing check panics
//! with a message naming the backend, the box and what was expected.
//!
//! What "conformant" means, check by check, is in [`CHECKS`] and `docs/backends.md`.
//!
//! Run it against a backend from any crate, one `#[test]` per check:
//!
//! ```ignore
//! fn target() -> boxsock_backend_conformance::Target {
//!     boxsock_backend_conformance::Target::new(&my_backend::REGISTRATION, my_config())
//! }
//! boxsock_backend_conformance::backend_conformance_tests!(my_backend_kit, target);
//! ```
//!
//! or iterate with [`run_all`], or run the [`cli`] entry point from a small binary (the
//! real-VM tier runs `boxsock-backend-kit --backend libkrun` inside its VM).
//!
//! **A process of its own per check.** The kit looks for processes a box left behind
//! among the descendants of the process that runs a check (it makes that process a
//! child subreaper, see [`procs`]). Under libtest, [`run_check`] therefore re-executes
//! the test binary and runs each check there, alone; the subreaper flag never touches
//! the test process, and other tests of the binary cannot be taken for strays.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use boxsock_core::backend::{Availability, BackendConfig};
use boxsock_core::registry::BackendRegistration;

pub mod checks;
pub mod cli;
pub mod kit;
pub mod procs;

pub use boxsock_conformance::report::{CheckResult, Outcome, Report, panic_message};
pub use kit::Kit;

/// What to run the kit against: a registered backend and how to build and drive it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend's registration (its name and constructor).
    pub registration: &'static BackendRegistration,
    /// The configuration it is built from (helper directory, backend options).
    pub config: BackendConfig,
    /// How long `start` waits for readiness (a VM in an emulated host needs minutes).
    pub ready_timeout: Duration,
    /// Each step of `stop` (graceful, SIGTERM) waits at most this long.
    pub stop_timeout: Duration,
    /// Create the kit's boxes with a network (where backends start companions, e.g.
    /// libkrun's passt).
    pub network: bool,
    /// Directory under which each check makes its home (`<root>/<check>-<random>`);
    /// `None`: a temporary directory. Homes are padded past 200 bytes either way.
    pub home_root: Option<PathBuf>,
}

impl Target {
    /// A target with the defaults: 20 s readiness, 3 s per stop step, no network,
    /// temporary homes.
    pub fn new(registration: &'static BackendRegistration, config: BackendConfig) -> Self {
        Target {
            registration,
            config,
            ready_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(3),
            network: false,
            home_root: None,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        self.registration.name
    }
}

/// One check of the specification.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Its name (also the name of the `#[test]` the macro generates).
    pub name: &'static str,
    /// The check. Panics on failure.
    pub run: fn(&Kit) -> Outcome,
}

macro_rules! check {
    ($name:ident) => {
        Check { name: stringify!($name), run: checks::$name }
    };
}

/// Every check, in the order they run.
pub const CHECKS: &[Check] = &[
    check!(launch_and_readiness),
    check!(stop_is_bounded_and_leaves_nothing),
    check!(killed_box_is_observed_exited),
    check!(log_file_receives_output),
    check!(address_needs_are_honoured),
    check!(companions_reaped),
];

/// Look up a check by name.
pub fn check_named(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

fn skip(check: &Check, backend: &str, reason: String) -> Outcome {
    eprintln!("skipped: {}: {reason} (backend {backend})", check.name);
    Outcome::Skipped(reason)
}

/// One check at a time per process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Names the check a re-executed test binary plays in a process of its own:
/// `<backend>\t<check>`.
const ENV_CHECK: &str = "BOXSOCK_BACKEND_KIT_CHECK";
/// Where that process writes how the check ended (see [`play`]).
const ENV_RESULT: &str = "BOXSOCK_BACKEND_KIT_RESULT";

/// Run one check against `target` in a fresh [`Kit`]. Panics if the check fails; prints
/// and returns [`Outcome::Skipped`] if it does not apply (the backend is not
/// [`available_for_launch`](boxsock_core::Backend::available_for_launch) here, or the
/// check's subject is absent).
///
/// The kit makes the process that runs a check a child subreaper (process-wide state),
/// so under libtest each check runs in a process of its own: the test binary is
/// re-executed, filtered to the running test, and plays that one check ([`play`]); its
/// outcome, or its panic message, is raised here as if the check had run in this
/// process. Outside libtest (the [`cli`] entry point, a binary of its own) it runs here.
pub fn run_check(check: &Check, target: &Target) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = target.name();
    let backend = match (target.registration.build)(&target.config) {
        Ok(b) => b,
        Err(e) => panic!("{}: backend {name:?} cannot be built: {e}", check.name),
    };
    if let Availability::Unavailable { reason } = backend.available_for_launch() {
        return skip(
            check,
            name,
            format!("backend {name:?} cannot launch boxes on this machine: {reason}"),
        );
    }
    if let Ok(role) = std::env::var(ENV_CHECK) {
        if role != format!("{name}\t{}", check.name) {
            return Outcome::Skipped("backend kit child: another check".into());
        }
        play(check, target);
    }
    let outcome = match boxsock_conformance::child::current_test_name() {
        Some(test) => run_in_own_process(&test, check, name),
        None => run_here(check, target),
    };
    match outcome {
        Outcome::Skipped(reason) => skip(check, name, reason),
        Outcome::Passed => Outcome::Passed,
    }
}

/// Whether this process is a kit child: the test binary re-executed to play one check
/// of one backend ([`run_check`]). It replays the test, so every other check it meets,
/// of this backend or of another, answers "another check": a caller that records
/// skips must not record those as the run's.
pub fn in_kit_child() -> bool {
    std::env::var_os(ENV_CHECK).is_some()
}

/// The check itself, in this process.
fn run_here(check: &Check, target: &Target) -> Outcome {
    if !procs::become_subreaper() {
        panic!(
            "{}: cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so strays cannot be found",
            check.name
        );
    }
    let kit = Kit::new(target, check.name);
    (check.run)(&kit)
}

/// In the re-executed test binary: run the check, write how it ended to
/// `$BOXSOCK_BACKEND_KIT_RESULT` (`passed`, `skipped\n<reason>` or `panicked\n<message>`,
/// then `left\n<processes>` if it left any, which are killed) and exit
/// [`CHILD_OK`](boxsock_conformance::child::CHILD_OK). The result is written whether or
/// not the test that called the kit catches the check's panic.
fn play(check: &Check, target: &Target) -> ! {
    let path =
        std::env::var_os(ENV_RESULT).expect("the backend kit's own process needs its result file");
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_here(check, target)));
    let mut text = match ended {
        Ok(Outcome::Passed) => "passed".to_owned(),
        Ok(Outcome::Skipped(reason)) => format!("skipped\n{reason}"),
        Err(p) => format!("panicked\n{}", panic_message(&*p)),
    };
    let left = procs::live_descendants();
    if !left.is_empty() {
        let names: Vec<String> = left.iter().map(ToString::to_string).collect();
        text = format!("left\n{}\n{text}", names.join(", "));
        for p in &left {
            // SAFETY: kill(2) with a pid and a signal number; no memory is passed.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
    std::fs::write(&path, text).expect("write the backend kit's result");
    std::process::exit(boxsock_conformance::child::CHILD_OK)
}

/// Re-execute this test binary (filtered to `test`) to play `check` against `backend`
/// in a process of its own; raise its outcome here.
fn run_in_own_process(test: &str, check: &Check, backend: &str) -> Outcome {
    use std::process::{Command, Stdio};
    let result = tempfile::NamedTempFile::new().expect("a temp file for the check's result");
    // Output goes to a file, not a pipe: nothing the check leaves can hang the wait.
    let out = tempfile::NamedTempFile::new().expect("a temp file for the check's output");
    let file = || out.reopen().expect("reopen the output file");
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_CHECK, format!("{backend}\t{}", check.name))
        .env(ENV_RESULT, result.path())
        .stdin(Stdio::null())
        .stdout(file())
        .stderr(file())
        .status()
        .unwrap_or_else(|e| panic!("{}: cannot re-execute the test binary: {e}", check.name));
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    eprint!("{output}");
    let text = std::fs::read_to_string(result.path()).unwrap_or_default();
    if status.code() != Some(boxsock_conformance::child::CHILD_OK) || text.is_empty() {
        panic!(
            "{}: backend {backend:?}: the check's own process ended without a result ({status}); its output:\n{output}",
            check.name
        );
    }
    let text = text.as_str();
    if let Some(rest) = text.strip_prefix("left\n") {
        let (left, _) = rest.split_once('\n').unwrap_or((rest, ""));
        panic!(
            "{}: backend {backend:?}: the check left processes behind it (killed): {left}",
            check.name
        );
    }
    match text.split_once('\n').unwrap_or((text, "")) {
        ("passed", _) => Outcome::Passed,
        ("skipped", reason) => Outcome::Skipped(reason.to_owned()),
        // The check's own message, so that a caller matching on it sees it unchanged.
        ("panicked", message) => std::panic::panic_any(message.to_owned()),
        _ => panic!("{}: backend {backend:?}: unreadable result {text:?}", check.name),
    }
}

/// Run the check called `name` (the macro's entry point). Panics on an unknown name.
pub fn run_named(name: &str, target: &Target) -> Outcome {
    let check =
        check_named(name).unwrap_or_else(|| panic!("the backend kit has no check {name:?}"));
    run_check(check, target)
}

/// Run every check against `target`, catching failures so that all are reported.
pub fn run_all(target: &Target) -> Report {
    Report::run_each(CHECKS, |c| c.name, |c| run_check(c, target))
}

/// Assert that `names` (the tests a [`backend_conformance_tests!`] expansion generated)
/// are exactly the names in [`CHECKS`].
pub fn assert_covers(names: &[&str]) {
    boxsock_conformance::report::assert_same_checks(
        "backend_conformance_tests!",
        CHECKS.iter().map(|c| c.name),
        names,
    );
}

/// Expand to a module `$module` with one `#[test]` per check of the kit, each running
/// the check against the [`Target`] returned by `$target` (a `fn() -> Target`).
#[macro_export]
macro_rules! backend_conformance_tests {
    ($module:ident, $target:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__backend_test_fns!(
                $target;
                launch_and_readiness,
                stop_is_bounded_and_leaves_nothing,
                killed_box_is_observed_exited,
                log_file_receives_output,
                address_needs_are_honoured,
                companions_reaped,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __backend_test_fns {
    ($target:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let target: fn() -> $crate::Target = $target;
                $crate::run_named(stringify!($name), &target());
            }
        )*

        #[test]
        fn every_check_has_a_test() {
            $crate::assert_covers(&[$(stringify!($name)),*]);
        }
    };
}
