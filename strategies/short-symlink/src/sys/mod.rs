//! Platform-specific system calls (crosvm habit: one module per platform, no `#[cfg]`
//! sprinkled through the portable code).

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use linux::rename_noreplace;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(crate) use macos::rename_noreplace;
