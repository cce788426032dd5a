//! Platform code of the image store: how a layer directory is held and how names are
//! resolved beneath it without following symlinks (`openat2`). Linux is the only
//! platform built and tested (docs/platforms.md); everything Linux-only the store calls
//! is in `linux.rs`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

// Never compiled in CI: no darwin target is built anywhere (docs/platforms.md).
#[cfg(not(target_os = "linux"))]
mod macos;
#[cfg(not(target_os = "linux"))]
pub(crate) use macos::*;
