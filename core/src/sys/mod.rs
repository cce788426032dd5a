//! Platform code of the core: how a verified directory descriptor is addressed
//! ([`SocketDir`](crate::SocketDir)) and how a peer's credentials are read
//! ([`peer`](crate::peer)). Linux is the only platform built and tested
//! (docs/platforms.md); everything Linux-only the core calls is in `linux.rs`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

// Never compiled in CI: no darwin target is built anywhere (docs/platforms.md).
#[cfg(not(target_os = "linux"))]
mod macos;
#[cfg(not(target_os = "linux"))]
pub use macos::*;
