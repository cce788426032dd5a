//! Why the agent could not start or serve.

use std::io;
use std::os::fd::RawFd;

use boxsock_core::error::BindingError;

use crate::config::AddressError;

/// Why the agent could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command line names neither an address nor a descriptor for a socket.
    #[error("bad command line: {0}")]
    Usage(&'static str),
    /// An inherited descriptor (`--agent-fd`, `--ready-fd`) is not the socket it must
    /// be.
    #[error("descriptor {fd} ({flag}) cannot be used: {reason}")]
    Inherited {
        /// The descriptor number.
        fd: RawFd,
        /// The flag that named it.
        flag: &'static str,
        /// What it is instead (not open, not a socket, not listening…).
        reason: String,
    },
    /// A command-line address is not a valid URI.
    #[error("bad address {uri:?}: {source}")]
    Address {
        /// The URI as given.
        uri: String,
        /// What is wrong.
        #[source]
        source: AddressError,
    },
    /// `--allow-uid` was combined with a vsock address: vsock has no peer
    /// credentials, so the check could not be made.
    #[error(
        "--allow-uid cannot be checked on {uri}: vsock carries no peer credentials (the VM boundary and the host's 0700 socket directory protect it); drop --allow-uid"
    )]
    VsockPeerCheck {
        /// The vsock URI.
        uri: String,
    },
    /// The agent's vsock port could not be bound (no `AF_VSOCK` transport, port in
    /// use).
    #[error("cannot listen on agent address {uri}: {source}")]
    VsockBind {
        /// The vsock URI.
        uri: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The agent address could not be bound.
    #[error("cannot listen on agent address {address}: {source}")]
    Bind {
        /// The address, printable.
        address: String,
        /// What failed.
        #[source]
        source: BindingError,
    },
    /// The readiness notification could not be delivered.
    #[error("cannot notify readiness on {address}: {reason}")]
    Notify {
        /// The ready address, printable.
        address: String,
        /// What failed.
        reason: String,
    },
    /// Accepting connections failed for good.
    #[error("accept on {address}: {source}")]
    Accept {
        /// The agent address, printable.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
