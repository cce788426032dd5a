//! macOS: not implemented. Never compiled in CI (no darwin target is built anywhere;
//! docs/platforms.md), so what is below is a sketch that has never been compiled.
//!
//! What is missing: `getpeereid` reports no pid (0), so every pid check of a peer
//! policy (the agent's listener must be the box's recorded process) would refuse every
//! box; macOS needs `LOCAL_PEERPID` for that. Datagrams carry no sender credentials
//! (no `SCM_CREDENTIALS`). There is no `/proc/self/fd`: sockets would be addressed by
//! the verified directory's displayed path, so the check holds only while nobody else
//! can change that path (decision 0001). Until this is done, a macOS build stops here,
//! in one named place.

compile_error!(
    "boxsock-core: peer credentials with a pid (SO_PEERCRED; getpeereid reports pid 0, \
     so every pid check would refuse every box), datagram sender credentials \
     (SCM_CREDENTIALS) and descriptor-relative socket paths (/proc/self/fd) are not \
     implemented for macOS yet; see docs/platforms.md"
);

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::peer::PeerCred;

pub(crate) fn path_flag() -> OFlag {
    OFlag::O_RDONLY
}

pub(crate) fn through_fd(_fd: RawFd, shown: &Path, name: &str) -> PathBuf {
    shown.join(name)
}

/// `getpeereid`: uid and gid only (pid 0).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let (uid, gid) = nix::unistd::getpeereid(fd)?;
    Ok(PeerCred { pid: 0, uid: uid.as_raw(), gid: gid.as_raw() })
}

/// No pidfds on macOS.
pub fn peer_pidfd(_fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    Ok(None)
}

/// No abstract socket addresses outside Linux.
pub(crate) fn abstract_addr(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket addresses exist only on Linux"))
}

/// No abstract socket addresses outside Linux.
pub(crate) fn abstract_unix_addr(_n: &[u8]) -> io::Result<nix::sys::socket::UnixAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket addresses exist only on Linux"))
}

/// No `close_range` on macOS: the caller marks each descriptor with `fcntl`.
pub(crate) fn close_range_cloexec(_first: RawFd, _last: Option<RawFd>) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// No `/proc`: the holder of a busy port is not read.
pub(crate) fn port_holder(_p: &crate::settings::PortMapping) -> crate::ports::Holder {
    crate::ports::Holder::Unknown
}

/// No `/proc`: whether a process holds a port is not known.
pub(crate) fn holds_port(_pid: i32, _p: &crate::settings::PortMapping) -> Option<bool> {
    None
}
