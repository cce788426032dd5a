//! Crash injection for the hostile suite: `BOXSOCK_TEST_CRASH_AT=<step>` makes the
//! process `SIGKILL` itself when a runtime operation reaches the named step, so tests
//! can prove that every interruption of `create`, `start`, `stop` and `remove` is
//! recovered by the next open.
//!
//! The variable is read once per process. Unset (the normal case) a step costs one
//! atomic load. The steps are listed in [`CRASH_STEPS`]; an unknown step never fires.
//!
//! The hook exists only with the crate's `test-support` feature: without it
//! [`point`] compiles to nothing and a release `boxsock` ignores the variable. The
//! hostile suite and the CLI tests enable the feature through their dev-dependencies.

/// The environment variable naming the step at which to die.
pub const CRASH_ENV: &str = "BOXSOCK_TEST_CRASH_AT";

/// Every step at which a crash can be injected, in the order an operation reaches them:
///
/// - `create:dirs` — box directories made, no row yet;
/// - `create:row` — row inserted, binding not yet ensured;
/// - `create:ensured` — binding made, before returning;
/// - `start:starting` — state `starting` recorded, nothing bound or launched;
/// - `start:bound` — ready socket bound, box process not launched;
/// - `start:launched` — box process (and its companions) launched and recorded,
///   readiness not awaited;
/// - `start:ready` — the agent reported ready, state still `starting`;
/// - `start:running` — state `running` recorded, before returning;
/// - `stop:stopping` — state `stopping` recorded, process not yet signalled;
/// - `stop:terminated` — process gone, state still `stopping`;
/// - `stop:stopped` — state `stopped` recorded, before cleaning up;
/// - `remove:released` — binding released, directory and row still there;
/// - `remove:dir-removed` — directory deleted, row still there;
/// - `remove:row-deleted` — row deleted, before returning.
pub const CRASH_STEPS: &[&str] = &[
    "create:dirs",
    "create:row",
    "create:ensured",
    "start:starting",
    "start:bound",
    "start:launched",
    "start:ready",
    "start:running",
    "stop:stopping",
    "stop:terminated",
    "stop:stopped",
    "remove:released",
    "remove:dir-removed",
    "remove:row-deleted",
];

/// `SIGKILL` this process if [`CRASH_ENV`] names `step` (`test-support` builds only).
#[cfg(feature = "test-support")]
pub(super) fn point(step: &'static str) {
    use std::sync::OnceLock;
    debug_assert!(CRASH_STEPS.contains(&step), "unlisted crash step {step}");
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_ENV).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(step) {
        tracing::warn!(step, "{CRASH_ENV}: killing this process");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; never continue past the step.
        std::process::abort();
    }
}

/// Without `test-support` the hook is nothing: [`CRASH_ENV`] is never read.
#[cfg(not(feature = "test-support"))]
#[inline(always)]
pub(super) fn point(step: &'static str) {
    debug_assert!(CRASH_STEPS.contains(&step), "unlisted crash step {step}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn steps_are_unique_and_namespaced_by_verb() {
        let mut seen = std::collections::HashSet::new();
        for s in super::CRASH_STEPS {
            assert!(seen.insert(s), "duplicate step {s}");
            let verb = s.split(':').next().unwrap();
            assert!(["create", "start", "stop", "remove"].contains(&verb), "{s}");
        }
    }

    /// With `test-support` (always on for this crate's own tests) a child process —
    /// this test binary re-run on this one test — dies of SIGKILL at the named step.
    /// That the feature stays off in what `cargo install` builds is checked by
    /// `boxsock-tests`' `packaging` test (`cargo tree -e features`).
    #[cfg(feature = "test-support")]
    #[test]
    fn with_test_support_the_crash_variable_kills_at_its_step() {
        const CHILD: &str = "BOXSOCK_CRASH_HOOK_CHILD";
        if std::env::var_os(CHILD).is_some() {
            super::point("start:bound");
            return;
        }
        use std::os::unix::process::ExitStatusExt;
        let o = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::tests::with_test_support_the_crash_variable_kills_at_its_step",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env(super::CRASH_ENV, "start:bound")
            .output()
            .unwrap();
        assert_eq!(o.status.signal(), Some(9), "{}", o.status);
    }
}
