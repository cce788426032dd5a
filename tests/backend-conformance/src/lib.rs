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
//! **Its own test binary.** The kit looks for processes a box left behind among the
//! descendants of the test process (it makes the process a child subreaper, see
//! [`procs`]), and runs one check at a time per process. Other tests running in the same
//! binary could start processes it would take for strays: give the kit a test file of
//! its own.

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

/// One check at a time per process: checks look for strays among this process's
/// descendants.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run one check against `target` in a fresh [`Kit`]. Panics if the check fails; prints
/// and returns [`Outcome::Skipped`] if it does not apply (the backend is not
/// [`available_for_launch`](boxsock_core::Backend::available_for_launch) here, or the
/// check's subject is absent).
pub fn run_check(check: &Check, target: &Target) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = target.name();
    let backend = match (target.registration.build)(&target.config) {
        Ok(b) => b,
        Err(e) => panic!("{}: backend {name:?} cannot be built: {e}", check.name),
    };
    if let Availability::Unavailable { reason } = backend.available_for_launch() {
        return skip(check, name, format!("backend {name:?} cannot launch boxes on this machine: {reason}"));
    }
    if !procs::become_subreaper() {
        panic!("{}: cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so strays cannot be found", check.name);
    }
    let kit = Kit::new(target, check.name);
    match (check.run)(&kit) {
        Outcome::Skipped(reason) => skip(check, name, reason),
        Outcome::Passed => Outcome::Passed,
    }
}

/// Run the check called `name` (the macro's entry point). Panics on an unknown name.
pub fn run_named(name: &str, target: &Target) -> Outcome {
    let check = check_named(name).unwrap_or_else(|| panic!("the backend kit has no check {name:?}"));
    run_check(check, target)
}

/// Run every check against `target`, catching failures so that all are reported.
pub fn run_all(target: &Target) -> Report {
    Report::run_each(CHECKS, |c| c.name, |c| run_check(c, target))
}

/// Assert that `names` (the tests a [`backend_conformance_tests!`] expansion generated)
/// are exactly the names in [`CHECKS`].
pub fn assert_covers(names: &[&str]) {
    boxsock_conformance::report::assert_same_checks("backend_conformance_tests!", CHECKS.iter().map(|c| c.name), names);
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
