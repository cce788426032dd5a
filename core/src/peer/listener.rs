//! The listeners strategies hand out ([`Listener`], [`AsyncListener`]): every accept
//! enforces the strategy's [`PeerPolicy`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use super::{PeerCred, PeerPolicy, peer_pidfd};
use crate::address::SocketAddress;
use crate::error::BindingError;

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
