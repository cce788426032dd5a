//! Linux: pidfd_send_signal (Linux ≥ 5.3; pidfds come from the core) and the store's SQLite
//! VFS over `/proc/self/fd` (`sqlite_vfs`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

mod sqlite_vfs;

pub(crate) use sqlite_vfs::open_sqlite_in;

/// `O_PATH`: a descriptor that only anchors lookups (the home's ancestors, the store's
/// directory).
pub(crate) const O_PATH: OFlag = OFlag::O_PATH;

/// Send `signal` to the process `pidfd` refers to (never to a process that reused its
/// pid).
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an fd we own (valid for the call), a signal
    // number, a null siginfo pointer (allowed: the kernel fills in the default info)
    // and zero flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
