//! Platform code of the agent: vsock (the guest side of a libkrun box), the guest's
//! network (`guestnet`) and root filesystem (`guestroot`). The agent runs on Linux
//! only, in a guest or as a host process; Linux is the only platform built and tested
//! (docs/platforms.md).

#[cfg(target_os = "linux")]
pub mod linux;

// Never compiled in CI: no darwin target is built anywhere (docs/platforms.md).
#[cfg(not(target_os = "linux"))]
mod macos;
