//! The libkrun backend: each box is a `boxsock-krun-shim` process that configures a
//! libkrun micro-VM and enters it (`krun_start_enter` takes the process over).
//!
//! - [`api`]: the [`KrunApi`] seam (one method per libkrun call) and [`RecordingKrun`];
//!   [`ffi::LibKrun`] is the real implementation over `libkrun-sys`.
//! - [`spec`]: the [`ShimSpec`] the backend hands the shim on stdin, and [`configure`],
//!   the pure sequence of calls.
//! - [`jail`]: Landlock for the shim on Linux, a Seatbelt profile renderer for macOS,
//!   both from the strategy's policy paths with explicit directory intent.
//! - [`probe`]: whether a guest can really boot here (real KVM, not PVM; libkrunfw).
//! - [`passt`]: one passt per box with a network.
//! - [`ports`]: published ports: the passt options, the check that each is free.
//! - [`derived`]: the name libkrun derives for a unixgram network, pinned by a test.
//! - [`rootfs`]: prepares a box's guest root (the agent, its loader and libraries).
//!
//! libkrun does not validate socket path lengths (`krun_add_vsock_port2` accepts an
//! over-long path and returns 0), so every path is checked against the budget twice:
//! in [`Libkrun::shim_spec`] and in the shim before the first libkrun call.

// First: on a platform other than Linux the build stops here (docs/platforms.md).
mod sys;

pub mod api;
pub mod backend;
pub mod derived;
pub mod disk;
pub mod ffi;
pub mod jail;
pub mod passt;
pub mod ports;
pub mod probe;
pub mod rootfs;
pub mod spec;

use std::sync::Arc;

use boxsock_core::backend::{Backend, BackendConfig, BackendError};
use boxsock_core::registry::BackendRegistration;

pub use api::{KrunApi, KrunCall, KrunCtx, KrunError, RecordingKrun};
pub use backend::{Libkrun, LibkrunConfig};
pub use derived::{KRUN_NET_DERIVED_WORST_CASE, NET};
pub use spec::{ShimSpec, SpecError, configure};

/// The registered name.
pub const NAME: &str = "libkrun";

/// File name of the shim binary (looked up in `BackendConfig::helper_dir`).
pub const SHIM_BINARY: &str = "boxsock-krun-shim";

/// How a user installs the shim beside `boxsock` (named in the error when it is missing).
pub const SHIM_INSTALL: &str =
    "cargo install boxsock-libkrun (from a checkout: cargo install --path backends/libkrun)";

/// File, in the box directory, where the shim records the exact [`ShimSpec`] it
/// received (one JSON document, rewritten at each start). A diagnostic artifact: nothing
/// reads it back as state — socket paths are never persisted as state.
pub const SHIM_SPEC_FILE: &str = "shim-spec.json";

/// The registration, also usable in explicit registries.
pub const REGISTRATION: BackendRegistration = BackendRegistration {
    name: NAME,
    summary: "libkrun micro-VM per box (a shim process enters the VM); needs real KVM and libkrunfw",
    build,
};

inventory::submit!(REGISTRATION);

fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(Libkrun::new(LibkrunConfig::from_backend_config(config)?)))
}
