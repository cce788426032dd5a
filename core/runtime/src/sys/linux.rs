//! Linux: pidfds (`pidfd_open`, `pidfd_send_signal`, Linux ≥ 5.3), `/proc/<pid>/stat`,
//! and the store's SQLite VFS over `/proc/self/fd` (`sqlite_vfs`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

mod sqlite_vfs;

pub(crate) use sqlite_vfs::open_sqlite_in;

/// `O_PATH`: a descriptor that only anchors lookups (the home's ancestors, the store's
/// directory).
pub(crate) const O_PATH: OFlag = OFlag::O_PATH;

/// A pidfd of `pid`.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1; no
    // memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

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

/// The text of `/proc/<pid>/stat` (parsed by `process::parse_stat`).
pub(crate) fn read_stat_text(pid: i32) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
}
