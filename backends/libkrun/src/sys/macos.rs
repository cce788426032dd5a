//! macOS: not implemented. Never compiled in CI (no darwin target is built anywhere;
//! docs/platforms.md), so what is below is a sketch that has never been compiled.
//!
//! What is missing: the shim's jail (the Seatbelt profile is rendered, by
//! `jail::seatbelt`, but never applied), a probe of Hypervisor.framework (only
//! libkrunfw is probed), and everything the shim and the runtime take from the core
//! and the runtime on Linux (peer pids, pidfds). Until then a macOS build stops here,
//! in one named place.

compile_error!(
    "boxsock-libkrun: the shim's jail (Seatbelt profiles are rendered but never \
     applied) and the Hypervisor.framework probe are not implemented for macOS yet; \
     see docs/platforms.md"
);

use std::path::Path;

use crate::jail::{JailError, JailSpec};

/// The library libkrun 1.19 loads at `krun_start_enter`.
pub(crate) const LIBKRUNFW: &str = "libkrunfw.5.dylib";

pub(crate) fn apply_jail(_spec: &JailSpec) -> Result<(), JailError> {
    Err(JailError::Unsupported(
        "the shim's jail is Landlock; render a Seatbelt profile with jail::seatbelt instead",
    ))
}

/// A connect probe (no `/proc/net/unix`).
pub(crate) fn is_listening(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

impl crate::probe::HostProbe {
    /// macOS: only libkrunfw is probed (Hypervisor.framework is assumed).
    pub fn probe(&self) -> boxsock_core::backend::Availability {
        self.probe_libkrunfw()
    }
}
