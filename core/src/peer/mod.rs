//! Peer credentials, and the listener type strategies hand out.
//!
//! Filesystem strategies are protected by a 0700 directory; abstract addresses are
//! protected by nothing, so their strategies return a checking [`PeerPolicy`] and every
//! accept and every connect verifies the peer's uid (`SO_PEERCRED`). The check lives
//! here, in one place, so no strategy has to remember it.
//!
//! One job per file: [`PeerPolicy`] (`policy`, with its rate-limited rejection log in
//! `rejections`), the listeners that enforce it (`listener`), per-datagram credentials
//! (`datagram`), and binding or connecting by address (`address`).

mod address;
mod datagram;
mod listener;
mod policy;
mod rejections;

pub use address::{
    bind_datagram_at, bind_datagram_private, bind_stream_at, bind_stream_private, connect_stream_at,
};
pub use datagram::recv_checked;
pub use listener::{Accepted, AsyncListener, Listener};
pub use policy::PeerPolicy;
pub use rejections::{REJECTION_LOG_INTERVAL, REJECTION_LOG_SAMPLES};

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

/// A pidfd of the process at the other end of a connected stream socket
/// (`SO_PEERPIDFD`, Linux ≥ 6.5). `Ok(None)` where the kernel does not support it; an
/// error when it does but the peer is gone (`ESRCH`) or the socket has no peer
/// credentials (`ENODATA`, e.g. a connected datagram socket).
pub use crate::sys::peer_pidfd;

/// Ask the kernel to attach the sender's credentials (`SCM_CREDENTIALS`) to every
/// datagram queued on `sock` from now on (`SO_PASSCRED`). Required before
/// [`recv_checked`] can accept anything; datagrams already queued carry none.
pub use crate::sys::set_pass_cred;

#[cfg(test)]
mod tests;
