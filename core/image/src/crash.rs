//! Test hook (feature `test-support` only): `BOXSOCK_IMAGE_CRASH_AT=<step>` makes the
//! process SIGKILL itself at a named step, so that tests prove a `kill -9` there leaves
//! the store consistent. A no-op without the feature.

/// SIGKILL this process if `BOXSOCK_IMAGE_CRASH_AT` names `step`.
#[cfg(feature = "test-support")]
pub(crate) fn point(step: &str) {
    if std::env::var("BOXSOCK_IMAGE_CRASH_AT").is_ok_and(|s| s == step) {
        tracing::warn!(step, "test hook: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    }
}

/// A no-op without the `test-support` feature.
#[cfg(not(feature = "test-support"))]
#[inline(always)]
pub(crate) fn point(_step: &str) {}
