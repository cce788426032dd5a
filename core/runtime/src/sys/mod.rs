//! Platform code of the runtime: process handles (pidfds), process identity (the
//! start time in `/proc/<pid>/stat`) and how SQLite opens the store through its
//! directory's descriptor. Linux is the only platform built and tested
//! (docs/platforms.md); everything Linux-only the runtime calls is in `linux.rs` (and
//! `linux/`).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

// Never compiled in CI: no darwin target is built anywhere (docs/platforms.md).
#[cfg(not(target_os = "linux"))]
mod macos;
#[cfg(not(target_os = "linux"))]
pub(crate) use macos::*;
