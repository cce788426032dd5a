//! Binding and connecting by address (a path string or an abstract name): stale socket
//! files replaced, socket files 0600 whatever the umask, a connect's peer checked. Box
//! sockets of path strategies go through a [`SocketDir`](crate::sockdir::SocketDir)
//! instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

use super::PeerPolicy;
use crate::address::SocketAddress;
use crate::error::BindingError;
use crate::sys::abstract_unix_addr;

/// Whether a filesystem socket at `path` is stale: a socket file nobody listens on.
///
/// The probe is a `connect`: only the kernel knows whether a listener is behind a socket
/// file, and matching `/proc/net/unix` by name would misjudge a socket bound through
/// another spelling of the same directory (then a live socket would be unlinked). The
/// cost is that a *live* listener sees one empty connection that closes at once; this
/// happens only when two parties bind the same address, which the runtime prevents for
/// its own sockets (a box is moved to `Starting` before its `ready` socket is bound), and
/// every boxsock listener tolerates an empty connection.
fn is_stale_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
            Ok(_) => false,
        },
        _ => false,
    }
}

fn bind_retrying_stale<T>(
    addr: &SocketAddress,
    bind: impl Fn(&std::os::unix::net::SocketAddr) -> io::Result<T>,
) -> Result<T, BindingError> {
    let std_addr = addr.to_std().map_err(|e| BindingError::io("encode address", addr, e))?;
    match bind(&std_addr) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if let Some(p) = addr.as_path() {
                if is_stale_socket(p) {
                    tracing::debug!(path = %crate::echo::path(p), "replacing stale socket file");
                    let _ = std::fs::remove_file(p);
                    return bind(&std_addr).map_err(|e| BindingError::io("bind", p, e));
                }
            }
            Err(BindingError::io("bind", addr, e))
        }
        Err(e) => Err(BindingError::io("bind", addr, e)),
    }
}

/// Bind a std stream listener at `addr`, replacing a stale socket file. A path's socket
/// file is created 0600 whatever the umask (see [`bind_stream_private`]).
///
/// This resolves `addr` as a string. Box sockets of path strategies go through a
/// verified [`SocketDir`](crate::sockdir::SocketDir) instead.
pub fn bind_stream_at(addr: &SocketAddress) -> Result<UnixListener, BindingError> {
    let l = bind_retrying_stale(addr, |_| bind_stream_private(addr))?;
    chmod_private(addr)?;
    Ok(l)
}

/// Bind a std datagram socket at `addr`, replacing a stale socket file; 0600 as for
/// [`bind_stream_at`].
pub fn bind_datagram_at(addr: &SocketAddress) -> Result<UnixDatagram, BindingError> {
    let d = bind_retrying_stale(addr, |_| bind_datagram_private(addr))?;
    chmod_private(addr)?;
    Ok(d)
}

fn chmod_private(addr: &SocketAddress) -> Result<(), BindingError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = addr.as_path() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BindingError::io("chmod 0600", p, e))?;
    }
    Ok(())
}

/// A new `AF_UNIX` socket whose file, once bound, is at most 0600: Linux takes a bound
/// socket file's mode from the socket's inode (masked by the umask), so the mode is set
/// on the socket first. Elsewhere the `fchmod` is harmless and callers chmod the file
/// after binding.
fn private_socket(ty: nix::sys::socket::SockType, addr: &SocketAddress) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, UnixAddr, bind, socket};
    let fd = socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if addr.as_path().is_some() {
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    }
    let ua = match addr {
        SocketAddress::Path(p) => UnixAddr::new(p.as_path())?,
        SocketAddress::Abstract(n) => abstract_unix_addr(n)?,
    };
    bind(fd.as_raw_fd(), &ua)?;
    Ok(fd)
}

/// Bind and listen a stream socket at `addr`, its file created 0600 whatever the umask.
/// No stale-file handling; see [`bind_stream_at`].
pub fn bind_stream_private(addr: &SocketAddress) -> io::Result<UnixListener> {
    let fd = private_socket(nix::sys::socket::SockType::Stream, addr)?;
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(128).map_err(io::Error::from)?)?;
    Ok(UnixListener::from(fd))
}

/// Bind a datagram socket at `addr`, its file created 0600 whatever the umask.
pub fn bind_datagram_private(addr: &SocketAddress) -> io::Result<UnixDatagram> {
    let fd = private_socket(nix::sys::socket::SockType::Datagram, addr)?;
    Ok(UnixDatagram::from(fd))
}

/// Connect a stream to `addr` and check the listener against `policy`.
pub fn connect_stream_at(
    addr: &SocketAddress,
    socket: &str,
    policy: &PeerPolicy,
) -> Result<UnixStream, BindingError> {
    let std_addr = addr.to_std().map_err(|e| BindingError::io("encode address", addr, e))?;
    let stream =
        UnixStream::connect_addr(&std_addr).map_err(|e| BindingError::io("connect", addr, e))?;
    policy.check(stream.as_fd(), socket, addr)?;
    Ok(stream)
}
