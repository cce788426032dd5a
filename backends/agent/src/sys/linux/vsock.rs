//! `AF_VSOCK` for the agent inside a libkrun guest: the `vsock://` address form, a
//! tokio listener (accepting on a guest port that libkrun maps to a host Unix socket
//! with `listen=true`) and a blocking connect (the readiness notification, dialled to
//! the host, CID 2, on a port libkrun maps with `listen=false`).
//!
//! Built on `nix` (`socket`, `VsockAddr`) and tokio's [`AsyncFd`], not on
//! `tokio-vsock`: that crate pulls a second `nix` (0.31), `futures` and `bytes` into the
//! guest binary for the ~100 lines below.
//!
//! **No peer credentials.** vsock has no `SO_PEERCRED`: a guest-side connection carries
//! only the peer's CID and port. The agent therefore refuses `--allow-uid` together
//! with a `vsock://` address ([`crate::AgentError::VsockPeerCheck`]): what protects the
//! agent port is the VM boundary (only the host's libkrun can reach guest port 1024)
//! and, on the host, the box's 0700 socket directory around the mapped path.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr, sockopt};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `VMADDR_CID_ANY`: listen on every CID of this machine.
pub const CID_ANY: u32 = libc::VMADDR_CID_ANY;
/// `VMADDR_CID_LOCAL` (1): loopback inside one machine (needs `vsock_loopback`).
pub const CID_LOCAL: u32 = 1;
/// `VMADDR_CID_HOST` (2): the host, seen from a guest.
pub const CID_HOST: u32 = libc::VMADDR_CID_HOST;
/// `VMADDR_PORT_ANY`: not a port one can name on a command line.
pub const PORT_ANY: u32 = libc::VMADDR_PORT_ANY;

/// A parsed `vsock://[<cid>:]<port>` address. Without a CID, a listener uses
/// [`CID_ANY`] and a connect goes to [`CID_HOST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VsockAddress {
    /// The CID given in the URI, if any.
    pub cid: Option<u32>,
    /// The port (never 0 nor [`PORT_ANY`]).
    pub port: u32,
}

/// Why [`VsockAddress::parse`] refused a URI. The message is a sentence without the
/// URI, which the caller adds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VsockAddressError {
    /// Not `vsock://…`.
    #[error("expected vsock://<port> or vsock://<cid>:<port>")]
    Scheme,
    /// The CID or the port is not a decimal number.
    #[error("vsock {what} {text:?} is not a decimal number")]
    NotANumber {
        /// `CID` or `port`.
        what: &'static str,
        /// The text given.
        text: String,
    },
    /// The CID or the port does not fit in 32 bits.
    #[error("vsock {what} {text} does not fit in 32 bits")]
    TooLarge {
        /// `CID` or `port`.
        what: &'static str,
        /// The text given.
        text: String,
    },
    /// Port 0.
    #[error("vsock port 0 is not usable")]
    PortZero,
    /// Port `VMADDR_PORT_ANY`.
    #[error("vsock port {PORT_ANY} is VMADDR_PORT_ANY, not a port")]
    PortAny,
}

/// Why [`loopback_available`] says this machine cannot run a vsock round trip.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// No `AF_VSOCK` socket can be created.
    #[error("socket(AF_VSOCK): {0}")]
    Socket(#[source] io::Error),
    /// `VMADDR_CID_LOCAL` cannot be bound.
    #[error(
        "bind(AF_VSOCK, VMADDR_CID_LOCAL, {port}): {source} (is the vsock_loopback transport loaded?)"
    )]
    Bind {
        /// The port tried.
        port: u32,
        /// The OS error.
        #[source]
        source: nix::errno::Errno,
    },
}

impl VsockAddress {
    /// Parse `vsock://<port>` or `vsock://<cid>:<port>`.
    pub fn parse(uri: &str) -> Result<VsockAddress, VsockAddressError> {
        let Some(rest) = uri.strip_prefix("vsock://") else {
            return Err(VsockAddressError::Scheme);
        };
        let (cid, port) = match rest.split_once(':') {
            Some((c, p)) => (Some(parse_u32("CID", c)?), p),
            None => (None, rest),
        };
        let port = parse_u32("port", port)?;
        if port == 0 {
            return Err(VsockAddressError::PortZero);
        }
        if port == PORT_ANY {
            return Err(VsockAddressError::PortAny);
        }
        Ok(VsockAddress { cid, port })
    }

    /// The CID a listener binds: the given one, or [`CID_ANY`].
    pub fn listen_cid(&self) -> u32 {
        self.cid.unwrap_or(CID_ANY)
    }

    /// The CID a connect dials: the given one, or [`CID_HOST`].
    pub fn connect_cid(&self) -> u32 {
        self.cid.unwrap_or(CID_HOST)
    }

    /// The URI form (`vsock://<port>` or `vsock://<cid>:<port>`).
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

fn parse_u32(what: &'static str, s: &str) -> Result<u32, VsockAddressError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VsockAddressError::NotANumber { what, text: s.to_owned() });
    }
    // All digits: the only failure left is overflow.
    s.parse::<u32>().map_err(|_| VsockAddressError::TooLarge { what, text: s.to_owned() })
}

impl fmt::Display for VsockAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cid {
            Some(cid) => write!(f, "vsock://{cid}:{}", self.port),
            None => write!(f, "vsock://{}", self.port),
        }
    }
}

/// Register an owned socket with tokio's reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which owns it from now on; the
    // descriptor stays open and is never replaced while registered, and is closed only
    // when the `AsyncFd` (which deregisters first) is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

fn new_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    Ok(socket::socket(AddressFamily::Vsock, SockType::Stream, flags, None)?)
}

/// A vsock stream listener registered with tokio.
#[derive(Debug)]
pub struct VsockListener {
    fd: AsyncFd<OwnedFd>,
    cid: u32,
    port: u32,
}

impl VsockListener {
    /// Bind and listen on (`cid`, `port`). Must be called inside a tokio runtime.
    pub fn bind(cid: u32, port: u32) -> io::Result<VsockListener> {
        let fd = new_socket(true)?;
        socket::bind(fd.as_raw_fd(), &VsockAddr::new(cid, port))?;
        socket::listen(&fd, Backlog::MAXCONN)?;
        Ok(VsockListener { fd: register(fd)?, cid, port })
    }

    /// The (cid, port) it was bound to.
    pub fn local(&self) -> (u32, u32) {
        (self.cid, self.port)
    }

    /// Accept one connection; returns the stream and the peer's (cid, port).
    pub async fn accept(&self) -> io::Result<(VsockStream, (u32, u32))> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                let raw = socket::accept4(
                    fd.as_raw_fd(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                )?;
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                Ok(unsafe { OwnedFd::from_raw_fd(raw) })
            }) {
                Ok(Ok(conn)) => {
                    let peer = socket::getpeername::<VsockAddr>(conn.as_raw_fd())
                        .map(|a| (a.cid(), a.port()))
                        .unwrap_or((0, 0));
                    return Ok((VsockStream::new(conn)?, peer));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A connected vsock stream registered with tokio.
#[derive(Debug)]
pub struct VsockStream {
    fd: AsyncFd<OwnedFd>,
}

impl VsockStream {
    /// Wrap a connected, non-blocking vsock socket. Must be called inside a tokio
    /// runtime.
    pub fn new(fd: OwnedFd) -> io::Result<VsockStream> {
        Ok(VsockStream { fd: register(fd)? })
    }

    /// Connect without blocking the runtime (tokio waits for writability).
    pub async fn connect(cid: u32, port: u32) -> io::Result<VsockStream> {
        let fd = new_socket(true)?;
        match socket::connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)) {
            Ok(()) => return VsockStream::new(fd),
            Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let s = VsockStream::new(fd)?;
        let _ = s.fd.writable().await?;
        match socket::getsockopt(&s.fd, sockopt::SocketError)? {
            0 => Ok(s),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

impl AsyncRead for VsockStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for VsockStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| {
                Ok(socket::send(fd.as_raw_fd(), data, socket::MsgFlags::MSG_NOSIGNAL)?)
            }) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(
            socket::shutdown(self.fd.as_raw_fd(), socket::Shutdown::Write).map_err(io::Error::from),
        )
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

/// Connect (blocking) to (`cid`, `port`) with a send timeout; the kernel's vsock
/// connect timeout (2 s by default) bounds the connect itself. Returns the socket as
/// a `File` for plain `write_all`.
pub fn connect_blocking(cid: u32, port: u32, send_timeout: Duration) -> io::Result<std::fs::File> {
    let fd = new_socket(false)?;
    socket::connect(fd.as_raw_fd(), &VsockAddr::new(cid, port))?;
    let tv = nix::sys::time::TimeVal::new(
        send_timeout.as_secs() as libc::time_t,
        send_timeout.subsec_micros() as libc::suseconds_t,
    );
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    Ok(std::fs::File::from(fd))
}

/// Whether this machine can run a vsock round trip on its own: a socket of family
/// `AF_VSOCK` can be created and bound on [`CID_LOCAL`] (needs the `vsock_loopback`
/// transport). `Err` says why not, for a test's skip message. Binds port `port` on
/// success and releases it at once.
pub fn loopback_available(port: u32) -> Result<(), LoopbackError> {
    let fd = new_socket(false).map_err(LoopbackError::Socket)?;
    socket::bind(fd.as_raw_fd(), &VsockAddr::new(CID_LOCAL, port))
        .map_err(|source| LoopbackError::Bind { port, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_port_and_cid_port() {
        assert_eq!(VsockAddress::parse("vsock://1024"), Ok(VsockAddress { cid: None, port: 1024 }));
        assert_eq!(
            VsockAddress::parse("vsock://2:1025"),
            Ok(VsockAddress { cid: Some(2), port: 1025 })
        );
        assert_eq!(VsockAddress::parse("vsock://1"), Ok(VsockAddress { cid: None, port: 1 }));
        assert_eq!(
            VsockAddress::parse("vsock://4294967295:4294967294"),
            Ok(VsockAddress { cid: Some(u32::MAX), port: u32::MAX - 1 })
        );
    }

    #[test]
    fn default_cids_depend_on_the_role() {
        let a = VsockAddress::parse("vsock://1024").unwrap();
        assert_eq!(a.listen_cid(), CID_ANY);
        assert_eq!(a.connect_cid(), CID_HOST);
        assert_eq!(CID_HOST, 2);
        let b = VsockAddress::parse("vsock://1:7").unwrap();
        assert_eq!((b.listen_cid(), b.connect_cid()), (1, 1));
    }

    #[test]
    fn uri_round_trips() {
        for uri in ["vsock://1024", "vsock://2:1025", "vsock://4294967295:9"] {
            assert_eq!(VsockAddress::parse(uri).unwrap().to_uri(), uri);
        }
    }

    #[test]
    fn bad_forms_are_refused_with_a_reason() {
        let cases = [
            ("vsock://0", "port 0"),
            ("vsock://4294967295", "VMADDR_PORT_ANY"),
            ("vsock://-1", "not a decimal number"),
            ("vsock://4294967296", "does not fit in 32 bits"),
            ("vsock://", "not a decimal number"),
            ("vsock://x", "not a decimal number"),
            ("vsock://+5", "not a decimal number"),
            ("vsock:// 5", "not a decimal number"),
            ("vsock://2:", "not a decimal number"),
            ("vsock://:5", "CID \"\""),
            ("vsock://1:2:3", "not a decimal number"),
            ("vsock://99999999999:5", "CID 99999999999 does not fit"),
            ("vsock:1024", "expected vsock://"),
            ("unix:///x", "expected vsock://"),
        ];
        for (uri, want) in cases {
            match VsockAddress::parse(uri) {
                Err(e) => assert!(e.to_string().contains(want), "{uri}: {e:?} lacks {want:?}"),
                Ok(a) => panic!("{uri} parsed as {a:?}"),
            }
        }
    }

    /// The stream wrapper's readiness loops (read, write, half-close), exercised over
    /// a Unix socketpair: `VsockStream` only needs a non-blocking stream socket, and
    /// this machine has no vsock loopback for a real pair (`tests/vsock.rs` runs one
    /// where there is).
    #[tokio::test]
    async fn stream_wrapper_reads_writes_and_half_closes() {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let mut a = VsockStream::new(a).unwrap();
        let mut b = VsockStream::new(b).unwrap();
        // More than a socket buffer, so writes really wait for readiness.
        let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expect = big.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&big).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), b.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
        // The other direction still works after the half-close.
        let mut a = writer.await.unwrap();
        b.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
    }
}
