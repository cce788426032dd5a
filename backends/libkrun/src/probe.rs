//! Can a libkrun guest actually boot here? [`HostProbe`] answers with a sentence
//! `boxsock doctor` can print.
//!
//! Checks, in order: `/dev/kvm` exists; it is not provided by `kvm_pvm` (PVM, under
//! which the VM configures and the vCPU then dies at the guest's first instructions —
//! `/sys/module/kvm_pvm` exists when that module is loaded); it opens read-write and
//! answers `KVM_GET_API_VERSION` with 12; and `libkrunfw` (the guest kernel libkrun
//! loads in `krun_start_enter`) can be `dlopen`ed. The first failing KVM check and a
//! missing libkrunfw are both reported (`…; and …`), so fixing one does not reveal the
//! other only later.

use std::ffi::{CStr, CString};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use boxsock_core::backend::Availability;

/// The library libkrun 1.19 loads at `krun_start_enter` (`libkrunfw.so.5` on Linux).
pub const LIBKRUNFW: &str = crate::sys::LIBKRUNFW;

/// `KVM_GET_API_VERSION` = `_IO(0xAE, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only KVM API version there is.
const KVM_API_VERSION: i32 = 12;

/// Where to look. The defaults are the real system paths; tests point them at a temp
/// directory (a fake `/sys/module`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// The KVM device.
    pub dev_kvm: PathBuf,
    /// The loaded-modules directory of sysfs.
    pub sys_module: PathBuf,
    /// The libkrunfw soname (or a path).
    pub libkrunfw: String,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            dev_kvm: PathBuf::from("/dev/kvm"),
            sys_module: PathBuf::from("/sys/module"),
            libkrunfw: LIBKRUNFW.to_owned(),
        }
    }
}

fn no(reason: String) -> Availability {
    Availability::Unavailable { reason }
}

impl HostProbe {
    /// Run every check (Linux): the first failing KVM check and the libkrunfw check,
    /// both named when both fail.
    #[cfg(target_os = "linux")]
    pub fn probe(&self) -> Availability {
        match (self.probe_kvm(), self.probe_libkrunfw()) {
            (Availability::Available, fw) => fw,
            (kvm @ Availability::Unavailable { .. }, Availability::Available) => kvm,
            (Availability::Unavailable { reason: a }, Availability::Unavailable { reason: b }) => {
                no(format!("{a}; and {b}"))
            }
        }
    }

    /// The KVM checks alone (Linux); the first failing one gives the reason.
    #[cfg(target_os = "linux")]
    pub fn probe_kvm(&self) -> Availability {
        let kvm = &self.dev_kvm;
        if std::fs::metadata(kvm).is_err() {
            return no(format!(
                "{} does not exist: libkrun needs hardware virtualisation (load kvm_intel or kvm_amd, or run on a host that exposes KVM)",
                boxsock_core::echo::path(kvm)
            ));
        }
        if self.sys_module.join("kvm_pvm").exists() {
            return no(format!(
                "{} is provided by kvm_pvm (PVM, {} exists): a libkrun guest configures but its vCPU dies at the first instruction; run on a host with hardware KVM (kvm_intel/kvm_amd)",
                boxsock_core::echo::path(kvm),
                boxsock_core::echo::path(&self.sys_module.join("kvm_pvm"))
            ));
        }
        let f = match OpenOptions::new().read(true).write(true).open(kvm) {
            Ok(f) => f,
            Err(e) => {
                return no(format!(
                    "cannot open {} read-write ({e}): add the user to the kvm group",
                    boxsock_core::echo::path(kvm)
                ));
            }
        };
        // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; `f` is
        // an open descriptor for the duration of the call. On a non-KVM file the ioctl
        // fails with ENOTTY and nothing is touched.
        let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
        if v != KVM_API_VERSION {
            let e = std::io::Error::last_os_error();
            return no(format!(
                "{} is not a usable KVM device: KVM_GET_API_VERSION returned {v} (expected {KVM_API_VERSION}; {e})",
                boxsock_core::echo::path(kvm)
            ));
        }
        Availability::Available
    }

    /// Whether libkrunfw can be loaded.
    pub fn probe_libkrunfw(&self) -> Availability {
        let Ok(name) = CString::new(self.libkrunfw.as_bytes()) else {
            return no(format!("libkrunfw name {:?} contains a NUL byte", self.libkrunfw));
        };
        // SAFETY: `name` is a valid C string; dlopen either returns a handle we close
        // right away or NULL. RTLD_LOCAL keeps its symbols out of the global namespace.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns NULL or a pointer to a thread-local C string valid
            // until the next dl* call on this thread; it is copied at once.
            let err = unsafe {
                let p = libc::dlerror();
                if p.is_null() {
                    "unknown error".to_owned()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            return no(format!(
                "{} cannot be loaded ({err}): install libkrunfw (the guest kernel libkrun boots), e.g. from the containers/libkrunfw releases, where the dynamic loader finds it",
                self.libkrunfw
            ));
        }
        // SAFETY: `h` is the non-NULL handle dlopen just returned, closed exactly once.
        unsafe { libc::dlclose(h) };
        Availability::Available
    }
}
