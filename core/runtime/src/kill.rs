//! The one signal → wait → SIGKILL sequence. Every place that makes a process gone
//! (`stop`, a failed start, companions, the health monitor, recovery) goes through
//! [`escalate`] with its own steps.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::ProcessHandle;

/// How long `stop` (and a failed start) waits after SIGKILL before giving up.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a companion gets after SIGTERM before SIGKILL.
pub(crate) const COMPANION_TERM_WAIT: Duration = Duration::from_secs(2);

/// SIGTERM, wait up to `term_wait`, then SIGKILL, wait up to `kill_wait`.
pub(crate) fn term_then_kill(term_wait: Duration, kill_wait: Duration) -> [(Signal, Duration); 2] {
    [(Signal::SIGTERM, term_wait), (Signal::SIGKILL, kill_wait)]
}

/// SIGKILL at once, wait up to `wait`.
pub(crate) fn kill_now(wait: Duration) -> [(Signal, Duration); 1] {
    [(Signal::SIGKILL, wait)]
}

/// Send each step's signal to `h`'s process group and to `h` itself (a box process and
/// a companion each lead their own session), then wait up to the step's time for it to
/// be gone (reaped when it is our child); stop at the first step after which it is.
/// Returns whether it is gone. Never signals a process whose start time differs from
/// the handle's identity ([`ProcessHandle::signal`]). Waits without blocking the
/// executor (pidfd readiness, or async sleeps).
pub(crate) async fn escalate(h: &ProcessHandle, steps: &[(Signal, Duration)]) -> bool {
    for &(sig, wait) in steps {
        let _ = h.signal_group(sig);
        let _ = h.signal(sig);
        if h.wait_gone(wait).await {
            return true;
        }
        tracing::debug!(pid = h.identity().pid, signal = %sig, "still alive");
    }
    false
}
