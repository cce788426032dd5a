//! What a spawned process inherits: stdio and the descriptors it is handed, nothing else.
//!
//! A process inherits every descriptor of its parent that is not close-on-exec: the
//! runtime's own (a box's `O_PATH` socket directory) and whatever the CLI itself was
//! started with. [`cloexec_except`] runs in `pre_exec`, after stdio and the handed
//! descriptors are in place, and marks everything else close-on-exec. Marking, not
//! closing, keeps the standard library's exec-error pipe working until `execve`.

use std::io;
use std::os::fd::RawFd;

/// Mark every descriptor from 3 up close-on-exec except those in `keep` (in any
/// order; numbers below 3 are ignored). For `pre_exec`: async-signal-safe, allocates
/// nothing.
pub fn cloexec_except(keep: &[RawFd]) -> io::Result<()> {
    let mut lo: RawFd = 3;
    loop {
        // The smallest kept descriptor at or above `lo`.
        let next = keep.iter().copied().filter(|&k| k >= lo).min();
        match next {
            None => return cloexec_range(lo, None),
            Some(k) => {
                if k > lo {
                    cloexec_range(lo, Some(k - 1))?;
                }
                if k == RawFd::MAX {
                    return Ok(());
                }
                lo = k + 1;
            }
        }
    }
}

/// `close_range(first, last, CLOSE_RANGE_CLOEXEC)` (Linux 5.11); before that kernel, or
/// elsewhere, `fcntl(F_SETFD)` on each descriptor below the open-files limit.
fn cloexec_range(first: RawFd, last: Option<RawFd>) -> io::Result<()> {
    match crate::sys::close_range_cloexec(first, last) {
        Ok(()) => return Ok(()),
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => return Err(e),
        Err(_) => {}
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the stack value passed.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(RawFd::MAX as libc::rlim_t) as RawFd
    } else {
        65536
    };
    let end = last.map_or(limit, |l| l.saturating_add(1).min(limit));
    for fd in first..end {
        // SAFETY: fcntl on a descriptor number; EBADF for one that is not open.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    /// The descriptors a child sees, started with 10, 11 and 251 open without CLOEXEC
    /// and `cloexec_except(keep)` in its `pre_exec`.
    fn inherited(keep: &'static [RawFd]) -> Vec<RawFd> {
        let null = std::fs::File::open("/dev/null").unwrap();
        let src = null.as_raw_fd();
        let mut c = std::process::Command::new("sh");
        c.args(["-c", "ls /proc/$$/fd"]);
        // SAFETY: dup2 and cloexec_except are async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                for fd in [10, 11, 251] {
                    if libc::dup2(src, fd) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                cloexec_except(keep)
            });
        }
        let o = c.output().unwrap();
        let mut v: Vec<RawFd> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_stdio_and_kept_descriptors_are_inherited() {
        assert_eq!(inherited(&[]), [0, 1, 2]);
        assert_eq!(inherited(&[251, 10]), [0, 1, 2, 10, 251]);
        assert_eq!(inherited(&[11]), [0, 1, 2, 11]);
    }

    #[test]
    fn a_spawn_error_is_still_reported() {
        let mut c = std::process::Command::new("/nonexistent/boxsock-no-such-binary");
        // SAFETY: cloexec_except is async-signal-safe.
        unsafe {
            c.pre_exec(|| cloexec_except(&[]));
        }
        assert_eq!(c.spawn().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
