//! The shim's sandbox, built from one policy model ([`JailSpec`]): Landlock on Linux
//! ([`landlock_jail`]), a Seatbelt profile on macOS ([`seatbelt`], rendered as text).
//!
//! Directory intent comes from the strategy's `policy_paths`, never from the disk: a
//! `SymlinkToDirectory` path is granted on its *target* directory (the leaf stays
//! literal), even if a /tmp cleaner reaped the link. The runtime still runs `ensure`
//! before it builds the policy and launches the box, so the link exists when the shim
//! binds through it.

use std::path::{Path, PathBuf};

use boxsock_core::PolicyPath;
use boxsock_core::binding::PolicyIntent;

pub use crate::spec::JailSpec;

#[cfg(target_os = "linux")]
pub mod landlock_jail;
pub mod seatbelt;

/// Why the jail could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JailError {
    /// A path the jail must grant cannot be opened.
    #[error("jail: cannot open {} to grant {what}: {source}", boxsock_core::echo::path(path))]
    Open {
        /// The path.
        path: PathBuf,
        /// Which grant.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the ruleset.
    #[error("jail: landlock: {0}")]
    Landlock(String),
    /// The kernel does not enforce the ruleset (Landlock missing or disabled).
    #[error(
        "jail: landlock is not enforced by this kernel ({status}); refusing to run unjailed (set jail=off to override)"
    )]
    NotEnforced {
        /// The status the kernel reported.
        status: String,
    },
    /// The kernel cannot enforce a filesystem right the jail relies on.
    #[error(
        "jail: landlock ABI {abi} cannot enforce {missing}, which the jail relies on (needs ABI 3); refusing to run with a weaker jail (set jail=off to override)"
    )]
    Unenforceable {
        /// The kernel's Landlock ABI (0: none).
        abi: i32,
        /// The required rights it lacks.
        missing: String,
    },
    /// Not supported on this platform.
    #[error("jail: not supported on this platform: {0}")]
    Unsupported(&'static str),
}

/// The directory a socket policy path is granted on: its target for a symlink leaf, the
/// path itself otherwise.
pub fn grant_dir(p: &PolicyPath) -> &Path {
    match &p.intent {
        PolicyIntent::SymlinkToDirectory { target } => target,
        PolicyIntent::Directory | PolicyIntent::File => &p.path,
    }
}

/// System paths the shim reads (libraries, the dynamic loader's cache, /proc and /sys
/// for CPU topology). Missing ones are skipped.
pub const SYSTEM_READ_ONLY: &[&str] =
    &["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/opt"];

/// Devices the VMM opens read-write.
pub const SYSTEM_DEVICES: &[&str] = &["/dev/kvm", "/dev/null", "/dev/urandom", "/dev/random"];

/// Apply `spec` to the calling process (irreversible). On Linux: Landlock.
pub fn apply(spec: &JailSpec) -> Result<(), JailError> {
    crate::sys::apply_jail(spec)
}
