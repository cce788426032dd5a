//! Descriptors the agent inherited (`--agent-fd`, `--ready-fd`): checked to be the Unix
//! stream socket each must be, marked close-on-exec, and taken over once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::config::{AgentAddress, AgentConfig};
use crate::error::AgentError;

/// Check every inherited descriptor of `config` (`--agent-fd`: a listening Unix stream
/// socket; `--ready-fd`: a connected one) without taking them over. The agent's binary
/// calls it first, before anything it does opens a descriptor (its tokio runtime's
/// epoll would take the number of one that was not inherited); [`Agent::bind`](crate::Agent::bind) checks
/// again and takes them over.
pub fn check_inherited(config: &AgentConfig) -> Result<(), AgentError> {
    check_distinct(config)?;
    let both = [(&config.agent, "--agent-fd", true), (&config.ready, "--ready-fd", false)];
    for (a, flag, listening) in both {
        if let AgentAddress::Inherited(fd) = a {
            check_socket(*fd, flag, listening)?;
        }
    }
    Ok(())
}

/// One descriptor cannot be both the listener and the ready channel (and would be
/// taken over twice).
pub(crate) fn check_distinct(config: &AgentConfig) -> Result<(), AgentError> {
    match (&config.agent, &config.ready) {
        (AgentAddress::Inherited(a), AgentAddress::Inherited(r)) if a == r => {
            Err(AgentError::Inherited {
                fd: *a,
                flag: "--agent-fd and --ready-fd",
                reason: "one descriptor cannot be both the listener and the ready channel".into(),
            })
        }
        _ => Ok(()),
    }
}

/// Take over inherited descriptor `fd` (named by `flag`) once it is known to be a Unix
/// stream socket that is listening (`listening`) or not ([`check_socket`]).
pub(crate) fn inherited_socket(
    fd: RawFd,
    flag: &'static str,
    listening: bool,
) -> Result<OwnedFd, AgentError> {
    check_socket(fd, flag, listening)?;
    // SAFETY: `fd` is open (checked), and the agent takes it over here exactly once (its
    // config names each descriptor once, checked in `Agent::bind`); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether inherited descriptor `fd` (named by `flag`) is a Unix stream socket that is
/// listening (`listening`) or not, and mark it close-on-exec. The error names the
/// descriptor and what it is instead.
fn check_socket(fd: RawFd, flag: &'static str, listening: bool) -> Result<(), AgentError> {
    let bad = |reason: String| AgentError::Inherited { fd, flag, reason };
    if fd < 3 {
        return Err(bad("descriptors 0, 1 and 2 are stdio".into()));
    }
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor number writes into the stack value passed; a
    // number that is not open is EBADF, and nothing is borrowed before it is known open.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBADF) => bad("it is not open".into()),
            _ => bad(format!("fstat: {e}")),
        });
    }
    if let Some(kind) = not_a_socket(st.st_mode) {
        return Err(bad(format!("it is {kind}, not a socket")));
    }
    // SAFETY: `fd` is open (fstat succeeded); borrowed only for these calls.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let opt = |name: &str, opt: libc::c_int| {
        sockopt_int(borrowed, opt).map_err(|e| bad(format!("{name}: {e}")))
    };
    let domain = opt("SO_DOMAIN", libc::SO_DOMAIN)?;
    if domain != libc::AF_UNIX {
        return Err(bad(format!("it is a socket of address family {domain}, not a Unix socket")));
    }
    let ty = opt("SO_TYPE", libc::SO_TYPE)?;
    if ty != libc::SOCK_STREAM {
        let what = if ty == libc::SOCK_DGRAM { "a datagram" } else { "not a stream" };
        return Err(bad(format!("it is {what} socket (type {ty}), not a stream socket")));
    }
    match (opt("SO_ACCEPTCONN", libc::SO_ACCEPTCONN)? != 0, listening) {
        (true, true) | (false, false) => {}
        (false, true) => {
            return Err(bad("it is a Unix stream socket that is not listening".into()));
        }
        (true, false) => return Err(bad("it is a listening socket, not a connected one".into())),
    }
    // Close-on-exec: nothing the agent was handed reaches a command.
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(|e| bad(format!("F_SETFD: {e}")))?;
    Ok(())
}

/// What a file of `mode` is, when it is not a socket.
fn not_a_socket(mode: libc::mode_t) -> Option<String> {
    match mode & libc::S_IFMT {
        libc::S_IFSOCK => None,
        libc::S_IFREG => Some("a regular file".to_owned()),
        libc::S_IFDIR => Some("a directory".to_owned()),
        libc::S_IFCHR => Some("a character device".to_owned()),
        libc::S_IFIFO => Some("a pipe".to_owned()),
        libc::S_IFBLK => Some("a block device".to_owned()),
        other => Some(format!(
            "a file of type {other:#o} (an epoll, event or other anonymous descriptor)"
        )),
    }
}

/// An integer `SOL_SOCKET` option of `fd`.
fn sockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the stack integer passed.
    let r = unsafe {
        let out = (&mut v as *mut libc::c_int).cast();
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, out, &mut len)
    };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(v) }
}
