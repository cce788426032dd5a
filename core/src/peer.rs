//! Peer credentials, and the listener type strategies hand out.
//!
//! Filesystem strategies are protected by a 0700 directory; abstract addresses are
//! protected by nothing, so their strategies return a checking [`PeerPolicy`] and every
//! accept and every connect verifies the peer's uid (`SO_PEERCRED`). The check lives
//! here, in one place, so no strategy has to remember it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::address::SocketAddress;
use crate::error::BindingError;
use crate::sys::abstract_unix_addr;

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

/// Read the peer credentials of a connected Unix socket (`SO_PEERCRED`).
pub use crate::sys::peer_cred;

/// Which peers may talk on a socket, plus a shared counter of rejections.
///
/// Rejections are counted exactly ([`PeerPolicy::rejected`]) but logged rate-limited:
/// in each [`REJECTION_LOG_INTERVAL`], the first [`REJECTION_LOG_SAMPLES`] rejections
/// are logged one by one with the peer's pid and uid, and the rest are summed into one
/// warning, `"N more peers rejected in the last T s"` (fields `more`, `interval_s`,
/// `last_peer_uid`, `last_peer_pid` of the last one not logged), written when the next rejection after the interval
/// arrives, on [`PeerPolicy::flush_rejection_log`], or when the last clone of the policy
/// is dropped. A flood of rejected connections therefore costs the log a few lines per
/// interval, not one line per connection.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allowed: Option<Arc<[u32]>>,
    /// The one process that may be at the other end (the box's recorded process), where
    /// known: a listener created by any other process is refused even with an allowed
    /// uid (another process of the owner is not the box).
    pid: Option<i32>,
    shared: Arc<Shared>,
}

/// Rejections logged one by one per interval before the rest are summarised.
pub const REJECTION_LOG_SAMPLES: u64 = 5;

/// The interval of the rejection log's rate limit.
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Shared {
    rejected: AtomicU64,
    log: Mutex<RejectionWindow>,
}

/// What the rejection log has done in the current interval.
#[derive(Debug, Default)]
struct RejectionWindow {
    /// Start of the interval; `None` before the first rejection.
    started: Option<Instant>,
    /// Rejections logged one by one in this interval.
    sampled: u64,
    /// Rejections counted but not logged in this interval.
    suppressed: u64,
    /// The last suppressed rejection: socket, address, peer (if it had credentials).
    last: Option<(String, String, Option<PeerCred>)>,
}

impl RejectionWindow {
    /// Log the summary of suppressed rejections, if any, and start a new interval.
    fn flush(&mut self, now: Instant) {
        if self.suppressed > 0 {
            let interval_s = self.started.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
            let (socket, address, cred) = self.last.take().unwrap_or_default();
            tracing::warn!(
                socket,
                address,
                more = self.suppressed,
                interval_s,
                last_peer_uid = ?cred.map(|c| c.uid),
                last_peer_pid = ?cred.map(|c| c.pid),
                "{} more peers rejected in the last {interval_s:.1} s",
                self.suppressed
            );
        }
        *self = RejectionWindow { started: Some(now), ..RejectionWindow::default() };
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let log = self.log.get_mut().unwrap_or_else(|p| p.into_inner());
        log.flush(Instant::now());
    }
}

impl PeerPolicy {
    fn with(allowed: Option<Arc<[u32]>>) -> Self {
        PeerPolicy { allowed, pid: None, shared: Arc::new(Shared::default()) }
    }

    /// No credential check (the filesystem protects the address).
    pub fn unchecked() -> Self {
        Self::with(None)
    }

    /// Only peers whose uid is in `uids` are accepted.
    pub fn allow_uids(uids: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = uids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self::with(Some(v.into()))
    }

    /// The same policy, also requiring the peer to be process `pid` (for a connect to
    /// a box's socket: the box's recorded process — the agent for the host backend, the
    /// shim for libkrun — created the listener). Turns an unchecked policy into one
    /// that checks the pid only.
    pub fn with_pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// The process the peer must be, if the policy names one.
    pub fn expected_pid(&self) -> Option<i32> {
        self.pid
    }

    /// Whether this policy checks anything.
    pub fn is_checked(&self) -> bool {
        self.allowed.is_some() || self.pid.is_some()
    }

    /// The allowed uids, if checked.
    pub fn allowed_uids(&self) -> Option<&[u32]> {
        self.allowed.as_deref()
    }

    /// How many peers this policy (and its clones) has rejected. Exact, whatever the
    /// log's rate limit dropped.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Log the summary of rejections not logged individually since the last summary,
    /// if any, now. Long-running servers call this periodically so a flood that
    /// stopped is still reported before the next rejection (or exit).
    pub fn flush_rejection_log(&self) {
        self.shared.log.lock().unwrap_or_else(|p| p.into_inner()).flush(Instant::now());
    }

    /// Count one rejection and log it, rate-limited (see the type's documentation).
    fn note_rejection(
        &self,
        socket: &str,
        address: &SocketAddress,
        cred: Option<PeerCred>,
        why: &'static str,
    ) {
        self.shared.rejected.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut w = self.shared.log.lock().unwrap_or_else(|p| p.into_inner());
        match w.started {
            Some(s) if now.duration_since(s) < REJECTION_LOG_INTERVAL => {}
            _ => w.flush(now),
        }
        if w.sampled < REJECTION_LOG_SAMPLES {
            w.sampled += 1;
            let last_sample = w.sampled == REJECTION_LOG_SAMPLES;
            drop(w);
            match cred {
                Some(c) => {
                    tracing::warn!(socket, address = %address, peer_pid = c.pid, peer_uid = c.uid, expected_pid = ?self.pid, "{why}")
                }
                None => tracing::warn!(socket, address = %address, "{why}"),
            }
            if last_sample {
                tracing::warn!(
                    socket,
                    interval_s = REJECTION_LOG_INTERVAL.as_secs(),
                    "further rejected peers in this interval are counted and summarised, not logged one by one"
                );
            }
        } else {
            w.suppressed += 1;
            w.last = Some((socket.to_owned(), address.display_string(), cred));
        }
    }

    /// Check the peer on `fd`. On rejection, counts it and logs the peer's pid and uid
    /// (rate-limited).
    pub fn check(
        &self,
        fd: BorrowedFd<'_>,
        socket: &str,
        address: &SocketAddress,
    ) -> Result<Option<PeerCred>, BindingError> {
        if !self.is_checked() {
            return Ok(None);
        }
        let cred =
            peer_cred(fd).map_err(|e| BindingError::io("read peer credentials of", address, e))?;
        self.check_cred(cred, socket, address).map(Some)
    }

    /// Check credentials obtained some other way (for example `SCM_CREDENTIALS` on a
    /// datagram). An unchecked policy accepts everything. On rejection, counts it and
    /// logs the peer's pid and uid (rate-limited).
    pub fn check_cred(
        &self,
        cred: PeerCred,
        socket: &str,
        address: &SocketAddress,
    ) -> Result<PeerCred, BindingError> {
        let uid_ok = self.allowed.as_deref().is_none_or(|a| a.contains(&cred.uid));
        let pid_ok = self.pid.is_none_or(|p| p == cred.pid);
        if uid_ok && pid_ok {
            return Ok(cred);
        }
        self.note_rejection(socket, address, Some(cred), "rejected peer");
        Err(BindingError::PeerRejected {
            socket: socket.to_owned(),
            address: address.display_string(),
            pid: cred.pid,
            uid: cred.uid,
            allowed: self.allowed.as_deref().map(<[u32]>::to_vec).unwrap_or_default(),
            expected_pid: self.pid,
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
    pub fn new(
        inner: UnixListener,
        address: SocketAddress,
        socket: String,
        policy: PeerPolicy,
    ) -> Self {
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
        let (stream, _) =
            self.inner.accept().map_err(|e| BindingError::io("accept on", &self.address, e))?;
        let cred = self.policy.check(stream.as_fd(), &self.socket, &self.address)?;
        Ok((stream, cred))
    }

    /// Accept the next allowed connection (blocking) together with a pidfd of the peer
    /// process where the kernel provides one (`SO_PEERPIDFD`, Linux ≥ 6.5). Rejected
    /// peers are dropped, as in [`Listener::accept`].
    pub fn accept_peer(&self) -> io::Result<Accepted<UnixStream>> {
        let (stream, cred) = self.accept()?;
        let pidfd = pidfd_or_none(stream.as_fd(), &self.socket, &self.address);
        Ok(Accepted { stream, cred, pidfd })
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

    /// Like [`AsyncListener::accept`], with a pidfd of the peer where the kernel provides
    /// one (see [`Listener::accept_peer`]).
    pub async fn accept_peer(&self) -> io::Result<Accepted<tokio::net::UnixStream>> {
        let (stream, cred) = self.accept().await?;
        let pidfd = pidfd_or_none(stream.as_fd(), &self.socket, &self.address);
        Ok(Accepted { stream, cred, pidfd })
    }

    /// The address it is bound at.
    pub fn address(&self) -> &SocketAddress {
        &self.address
    }

    /// The peer policy it enforces.
    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }
}

/// An accepted, policy-checked connection.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The connection.
    pub stream: S,
    /// The peer's credentials, where the policy checked them.
    pub cred: Option<PeerCred>,
    /// A pidfd of the peer process (`SO_PEERPIDFD`): a handle that cannot be confused
    /// with a later process reusing the pid. `None` where the kernel does not provide
    /// it (before Linux 6.5, other platforms) or the peer has already exited.
    pub pidfd: Option<OwnedFd>,
}

fn pidfd_or_none(fd: BorrowedFd<'_>, socket: &str, address: &SocketAddress) -> Option<OwnedFd> {
    match peer_pidfd(fd) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(socket, address = %address, error = %e, "no pidfd for peer");
            None
        }
    }
}

/// A pidfd of the process at the other end of a connected stream socket
/// (`SO_PEERPIDFD`, Linux ≥ 6.5). `Ok(None)` where the kernel does not support it; an
/// error when it does but the peer is gone (`ESRCH`) or the socket has no peer
/// credentials (`ENODATA`, e.g. a connected datagram socket).
pub use crate::sys::peer_pidfd;

/// Ask the kernel to attach the sender's credentials (`SCM_CREDENTIALS`) to every
/// datagram queued on `sock` from now on (`SO_PASSCRED`). Required before
/// [`recv_checked`] can accept anything; datagrams already queued carry none.
pub use crate::sys::set_pass_cred;

/// Receive one datagram on `sock` into `buf` and check its sender against `policy`
/// using the `SCM_CREDENTIALS` the kernel attached to it (`SO_PASSCRED` must be on; see
/// [`set_pass_cred`]). The kernel fills these in for every sender and refuses forged
/// ones from unprivileged processes, so unlike `SO_PEERCRED` this works per message on
/// unconnected datagram sockets.
///
/// Returns the length and the sender's credentials (`None` only for an unchecked policy
/// and a datagram without credentials). A rejected datagram is consumed,
/// logged and counted, and reported as [`BindingError::PeerRejected`]: call again for
/// the next one. A datagram without credentials is refused with
/// [`BindingError::Insecure`] (fail closed). A checked policy with no `SO_PASSCRED`
/// therefore refuses everything. A datagram longer than `buf` is truncated, as with
/// `recv`.
pub fn recv_checked(
    sock: &UnixDatagram,
    buf: &mut [u8],
    policy: &PeerPolicy,
    socket: &str,
    address: &SocketAddress,
) -> Result<(usize, Option<PeerCred>), BindingError> {
    let (len, cred) = crate::sys::recv_with_cred(sock, buf)
        .map_err(|e| BindingError::errno("receive on", address, e))?;
    let Some(cred) = cred else {
        if !policy.is_checked() {
            return Ok((len, None));
        }
        policy.note_rejection(
            socket,
            address,
            None,
            "rejected datagram without sender credentials (SO_PASSCRED off?)",
        );
        return Err(BindingError::Insecure {
            path: io_path(address),
            reason: format!(
                "a datagram on socket {socket:?} carries no SCM_CREDENTIALS, so its sender cannot be checked; enable SO_PASSCRED before receiving"
            ),
        });
    };
    let cred = policy.check_cred(cred, socket, address)?;
    Ok((len, Some(cred)))
}

/// `Insecure.path` for a datagram address (`@name` for an abstract one); `Io` errors
/// carry the address itself.
fn io_path(addr: &SocketAddress) -> PathBuf {
    PathBuf::from(addr.display_string())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_uid_is_accepted_and_others_rejected_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Path(dir.path().join("s.sock"));
        let me = nix::unistd::geteuid().as_raw();

        let l = Listener::new(
            bind_stream_at(&addr).unwrap(),
            addr.clone(),
            "s".into(),
            PeerPolicy::allow_uids([me]),
        );
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

    #[cfg(target_os = "linux")]
    #[test]
    fn accept_peer_yields_a_pidfd_of_the_connector() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Path(dir.path().join("s.sock"));
        let me = nix::unistd::geteuid().as_raw();
        let l = Listener::new(
            bind_stream_at(&addr).unwrap(),
            addr.clone(),
            "s".into(),
            PeerPolicy::allow_uids([me]),
        );
        let _c = connect_stream_at(&addr, "s", &PeerPolicy::unchecked()).unwrap();
        let acc = l.accept_peer().unwrap();
        assert_eq!(acc.cred.unwrap().pid, std::process::id() as i32);
        let pidfd = acc.pidfd.expect("SO_PEERPIDFD (Linux >= 6.5)");
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
        assert!(
            info.lines()
                .any(|l| l.strip_prefix("Pid:").map(str::trim)
                    == Some(&std::process::id().to_string())),
            "{info}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn recv_checked_uses_per_message_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Path(dir.path().join("d.sock"));
        let rx = bind_datagram_at(&addr).unwrap();
        set_pass_cred(rx.as_fd()).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"hi", dir.path().join("d.sock")).unwrap();
        let mut buf = [0u8; 8];
        let (n, cred) =
            recv_checked(&rx, &mut buf, &PeerPolicy::allow_uids([me]), "d", &addr).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(cred.unwrap().uid, me);
        // The same sender, refused by a policy that does not list it; the datagram is consumed.
        tx.send_to(b"no", dir.path().join("d.sock")).unwrap();
        let other = PeerPolicy::allow_uids([me.wrapping_add(1)]);
        let err = recv_checked(&rx, &mut buf, &other, "d", &addr).unwrap_err();
        assert!(matches!(err, BindingError::PeerRejected { uid, .. } if uid == me), "{err}");
        assert_eq!(other.rejected(), 1);
        rx.set_nonblocking(true).unwrap();
        assert!(matches!(
            recv_checked(&rx, &mut buf, &other, "d", &addr),
            Err(BindingError::Io { .. })
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn async_accept_peer_checks_and_yields_a_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Path(dir.path().join("a.sock"));
        let me = nix::unistd::geteuid().as_raw();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = Listener::new(
                bind_stream_at(&addr).unwrap(),
                addr.clone(),
                "a".into(),
                PeerPolicy::allow_uids([me]),
            )
            .into_tokio()
            .unwrap();
            let _c = connect_stream_at(&addr, "a", &PeerPolicy::unchecked()).unwrap();
            let acc = tokio::time::timeout(std::time::Duration::from_secs(10), l.accept_peer())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(acc.cred.unwrap().uid, me);
            assert!(acc.pidfd.is_some());
            assert!(l.policy().is_checked());
        });
    }
}
