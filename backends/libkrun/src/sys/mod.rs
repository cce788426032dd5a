//! Platform code of the libkrun backend: the shim's jail, the host probe's library
//! name, how passt's listener is seen. Linux is the only platform built and tested
//! (docs/platforms.md).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

// Never compiled in CI: no darwin target is built anywhere (docs/platforms.md).
#[cfg(not(target_os = "linux"))]
mod macos;
#[cfg(not(target_os = "linux"))]
pub(crate) use macos::*;
