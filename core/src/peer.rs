//! Peer credentials, and the listener type strategies hand out.
//!
//! Filesystem strategies are protected by a 0700 directory; abstract addresses are
//! protected by nothing, so their strategies return a checking [`PeerPolicy`] and every
//! accept and every connect verifies the peer's uid (`SO_PEERCRED`). The check lives
//! here, in one place, so no strategy has to remember it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::address::SocketAddress;
use crate::error::BindingError;

/// Credentials of the process at the other end of a connected socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Peer pid (0 where the platform does not report it).
    pub pid: i32,
    /// Peer effective uid.
    pub uid: u32,
    /// Peer effective gid.
    pub gid: u32,
}

/// Read the peer credentials of a connected Unix socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let c = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(PeerCred { pid: c.pid(), uid: c.uid(), gid: c.gid() })
}

/// Read the peer credentials of a connected Unix socket.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let (uid, gid) = nix::unistd::getpeereid(fd)?;
    Ok(PeerCred { pid: 0, uid: uid.as_raw(), gid: gid.as_raw() })
}

/// Which peers may talk on a socket, plus a shared counter of rejections.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allowed: Option<Arc<[u32]>>,
    rejected: Arc<AtomicU64>,
}

impl PeerPolicy {
    /// No credential check (the filesystem protects the address).
    pub fn unchecked() -> Self {
        PeerPolicy { allowed: None, rejected: Arc::new(AtomicU64::new(0)) }
    }

    /// Only peers whose uid is in `uids` are accepted.
    pub fn allow_uids(uids: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = uids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        PeerPolicy { allowed: Some(v.into()), rejected: Arc::new(AtomicU64::new(0)) }
    }

    /// Whether this policy checks anything.
    pub fn is_checked(&self) -> bool {
        self.allowed.is_some()
    }

    /// The allowed uids, if checked.
    pub fn allowed_uids(&self) -> Option<&[u32]> {
        self.allowed.as_deref()
    }

    /// How many peers this policy (and its clones) has rejected.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Check the peer on `fd`. On rejection, logs the peer's pid and uid and counts it.
    pub fn check(&self, fd: BorrowedFd<'_>, socket: &str, address: &SocketAddress) -> Result<Option<PeerCred>, BindingError> {
        let Some(allowed) = &self.allowed else {
            return Ok(None);
        };
        let cred = peer_cred(fd).map_err(|e| BindingError::io("read peer credentials of", address.display_string(), e))?;
        if allowed.contains(&cred.uid) {
            return Ok(Some(cred));
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(socket, address = %address, peer_pid = cred.pid, peer_uid = cred.uid, "rejected peer");
        Err(BindingError::PeerRejected {
            socket: socket.to_owned(),
            address: address.display_string(),
            pid: cred.pid,
            uid: cred.uid,
            allowed: allowed.to_vec(),
        })
    }
}

/// A stream listener handed out by a strategy. [`Listener::accept`] enforces the
/// strategy's [`PeerPolicy`]: a rejected peer is closed and accepting continues.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    address: SocketAddress,
    socket: String,
    policy: PeerPolicy,
}

impl Listener {
    /// Wrap a bound listener.
    pub fn new(inner: UnixListener, address: SocketAddress, socket: String, policy: PeerPolicy) -> Self {
        Listener { inner, address, socket, policy }
    }

    /// The address it is bound at.
    pub fn address(&self) -> &SocketAddress {
        &self.address
    }

    /// The peer policy it enforces.
    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    /// Accept the next allowed connection (blocking). Rejected peers are dropped.
    pub fn accept(&self) -> io::Result<(UnixStream, Option<PeerCred>)> {
        loop {
            let (stream, _) = self.inner.accept()?;
            match self.policy.check(stream.as_fd(), &self.socket, &self.address) {
                Ok(cred) => return Ok((stream, cred)),
                Err(_) => continue,
            }
        }
    }

    /// Accept one connection and report a rejection as an error instead of looping
    /// (for tests and for callers that account per connection).
    pub fn accept_once(&self) -> Result<(UnixStream, Option<PeerCred>), BindingError> {
        let (stream, _) = self
            .inner
            .accept()
            .map_err(|e| BindingError::io("accept on", self.address.display_string(), e))?;
        let cred = self.policy.check(stream.as_fd(), &self.socket, &self.address)?;
        Ok((stream, cred))
    }

    /// Turn into a tokio listener with the same policy. Must be called inside a tokio
    /// runtime.
    pub fn into_tokio(self) -> io::Result<AsyncListener> {
        self.inner.set_nonblocking(true)?;
        Ok(AsyncListener {
            inner: tokio::net::UnixListener::from_std(self.inner)?,
            address: self.address,
            socket: self.socket,
            policy: self.policy,
        })
    }

    /// The underlying std listener, for handing to code that enforces the policy itself
    /// (for example passing the fd to a child).
    pub fn into_inner(self) -> UnixListener {
        self.inner
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// The async form of [`Listener`].
#[derive(Debug)]
pub struct AsyncListener {
    inner: tokio::net::UnixListener,
    address: SocketAddress,
    socket: String,
    policy: PeerPolicy,
}

impl AsyncListener {
    /// Accept the next allowed connection. Rejected peers are dropped.
    pub async fn accept(&self) -> io::Result<(tokio::net::UnixStream, Option<PeerCred>)> {
        loop {
            let (stream, _) = self.inner.accept().await?;
            match self.policy.check(stream.as_fd(), &self.socket, &self.address) {
                Ok(cred) => return Ok((stream, cred)),
                Err(_) => continue,
            }
        }
    }

    /// The address it is bound at.
    pub fn address(&self) -> &SocketAddress {
        &self.address
    }
}

fn io_path(addr: &SocketAddress) -> PathBuf {
    PathBuf::from(addr.display_string())
}

/// Whether a filesystem socket at `path` is stale: a socket file nobody listens on.
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

fn bind_retrying_stale<T>(addr: &SocketAddress, bind: impl Fn(&std::os::unix::net::SocketAddr) -> io::Result<T>) -> Result<T, BindingError> {
    let std_addr = addr.to_std().map_err(|e| BindingError::io("encode address", io_path(addr), e))?;
    match bind(&std_addr) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if let Some(p) = addr.as_path() {
                if is_stale_socket(p) {
                    tracing::debug!(path = %p.display(), "replacing stale socket file");
                    let _ = std::fs::remove_file(p);
                    return bind(&std_addr).map_err(|e| BindingError::io("bind", p, e));
                }
            }
            Err(BindingError::io("bind", io_path(addr), e))
        }
        Err(e) => Err(BindingError::io("bind", io_path(addr), e)),
    }
}

/// Bind a std stream listener at `addr`, replacing a stale socket file.
pub fn bind_stream_at(addr: &SocketAddress) -> Result<UnixListener, BindingError> {
    bind_retrying_stale(addr, UnixListener::bind_addr)
}

/// Bind a std datagram socket at `addr`, replacing a stale socket file.
pub fn bind_datagram_at(addr: &SocketAddress) -> Result<UnixDatagram, BindingError> {
    bind_retrying_stale(addr, UnixDatagram::bind_addr)
}

/// Connect a stream to `addr` and check the listener against `policy`.
pub fn connect_stream_at(addr: &SocketAddress, socket: &str, policy: &PeerPolicy) -> Result<UnixStream, BindingError> {
    let std_addr = addr.to_std().map_err(|e| BindingError::io("encode address", io_path(addr), e))?;
    let stream = UnixStream::connect_addr(&std_addr).map_err(|e| BindingError::io("connect", io_path(addr), e))?;
    policy.check(stream.as_fd(), socket, addr)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_uid_is_accepted_and_others_rejected_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Path(dir.path().join("s.sock"));
        let me = nix::unistd::geteuid().as_raw();

        let l = Listener::new(bind_stream_at(&addr).unwrap(), addr.clone(), "s".into(), PeerPolicy::allow_uids([me]));
        let c = connect_stream_at(&addr, "s", &PeerPolicy::allow_uids([me])).unwrap();
        let (_s, cred) = l.accept_once().unwrap();
        assert_eq!(cred.unwrap().uid, me);
        drop(c);

        let other = PeerPolicy::allow_uids([me.wrapping_add(1)]);
        let err = connect_stream_at(&addr, "s", &other).unwrap_err();
        assert!(matches!(err, BindingError::PeerRejected { uid, .. } if uid == me), "{err}");
        assert_eq!(other.rejected(), 1);
    }

    #[test]
    fn stale_socket_file_is_replaced_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Path(dir.path().join("s.sock"));
        let live = bind_stream_at(&addr).unwrap();
        let err = bind_stream_at(&addr).unwrap_err();
        assert!(matches!(err, BindingError::Io { op: "bind", .. }), "{err}");
        drop(live); // the file stays behind: stale
        assert!(dir.path().join("s.sock").exists());
        bind_stream_at(&addr).unwrap();
    }
}
