//! `abstract`: box sockets at Linux abstract-namespace names, with mandatory peer
//! credential checks.
//!
//! An abstract socket has no filesystem entry, so it has no `sun_path` problem however
//! deep the home is, and nothing to clean up on disk: the kernel frees the name when the
//! last descriptor of the bound socket closes. It also has **no permissions**: any
//! process in the same network namespace can connect (containerd's shim API listened on
//! one until CVE-2020-15257). This strategy is therefore only safe because of two
//! things it does not let a caller skip:
//!
//! - **Unguessable names that change at every start.** `boxsock/<uid>/<128-bit hex
//!   tag>`, the tag an HMAC-SHA256 of (uid, box id, per-start epoch, socket name) keyed
//!   by a 32-byte per-home secret kept 0600 in `<home>/abstract-socket.key` (see
//!   `docs/decisions/0002-abstract-names.md`). The epoch is 128 random bits written
//!   0600 to `<home>/boxes/<id>/abstract-epoch` by
//!   opening the box for a start (`Opening::Start`, [`Abstract::prepare_start`]) at
//!   every start. Nobody can pre-bind ("squat") a box's name before the box does or
//!   predict the next one, and names seen during an earlier run (an old argv,
//!   `/proc/net/unix`) lead nowhere. A bind that still finds its name taken names the
//!   holder (`sock_diag`: uid, inode, pid) in a warning and moves the box to fresh
//!   names ([`MAX_ROTATIONS`] times at most). Bound names are still *visible*, so names
//!   alone are not access control; the next point is.
//! - **Peer credentials on every connection.** [`Abstract::peer_policy`] allows
//!   only the owner's uid plus [`StrategyConfig::allowed_peer_uids`]; every listener the
//!   strategy hands out checks `SO_PEERCRED` on each accept and drops other uids, every
//!   connect checks the listener's, and datagram sockets are bound with `SO_PASSCRED`
//!   so receivers can check each message with [`boxsock_core::peer::recv_checked`].
//!
//! Abstract addresses are not paths: a path-only consumer (libkrun) cannot be handed
//! one, which [`Capabilities::path_addressable`](boxsock_core::Capabilities) says.
//!
//! Linux only: on other targets the registration exists but building it returns
//! [`BindingError::Unsupported`](boxsock_core::BindingError::Unsupported).

#[cfg(target_os = "linux")]
mod diag;
#[cfg(target_os = "linux")]
mod epoch;
pub mod name;
#[cfg(target_os = "linux")]
mod secret;
mod sys;

use boxsock_core::registry::StrategyRegistration;

#[cfg(target_os = "linux")]
pub use epoch::EPOCH_FILE;
#[cfg(target_os = "linux")]
pub use secret::SECRET_FILE;
#[cfg(target_os = "linux")]
pub use sys::linux::Abstract;
#[cfg(target_os = "linux")]
pub use sys::linux::MAX_ROTATIONS;

/// The registered name.
pub const NAME: &str = "abstract";

/// The registration, also usable in explicit registries.
pub const REGISTRATION: StrategyRegistration = StrategyRegistration {
    name: NAME,
    summary: "Linux abstract-namespace names keyed by a per-home secret; every accept and connect checks peer credentials (not path-addressable)",
    build: sys::build,
};

inventory::submit!(REGISTRATION);
