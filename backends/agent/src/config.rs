//! What the command line gives the agent: its addresses (Unix, vsock or an inherited
//! descriptor) and whom it trusts.

use std::fmt;
use std::os::fd::RawFd;

use boxsock_core::SocketAddress;

use crate::error::AgentError;
use crate::vsock::{self, VsockAddress};

/// Why an agent address did not parse, for [`AgentError::Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A `vsock:` URI.
    #[error(transparent)]
    Vsock(#[from] vsock::VsockAddressError),
    /// A Unix socket URI.
    #[error(transparent)]
    Unix(#[from] boxsock_core::UriError),
}

/// An address on the agent's command line: a Unix socket address (path or abstract
/// name), or a vsock port inside a guest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentAddress {
    /// `unix:///abs/path` or `abstract:name`.
    Unix(SocketAddress),
    /// `vsock://<port>` or `vsock://<cid>:<port>`.
    Vsock(VsockAddress),
    /// A descriptor the agent inherited (`--agent-fd`, `--ready-fd`): a listening
    /// Unix stream socket for requests, a connected one for the readiness frame. The
    /// runtime bound or made it, so the agent is told no name.
    Inherited(RawFd),
}

impl AgentAddress {
    /// The URI form, as [`parse_address`] reads it.
    pub fn to_uri(&self) -> String {
        match self {
            AgentAddress::Unix(a) => a.to_uri(),
            AgentAddress::Vsock(v) => v.to_uri(),
            // Not parsed back: descriptors are given with `--agent-fd`/`--ready-fd`.
            AgentAddress::Inherited(fd) => format!("fd:{fd}"),
        }
    }

    /// The filesystem path, for a `unix://` address.
    pub fn as_path(&self) -> Option<&std::path::Path> {
        match self {
            AgentAddress::Unix(a) => a.as_path(),
            AgentAddress::Vsock(_) | AgentAddress::Inherited(_) => None,
        }
    }

    pub(crate) fn is_vsock(&self) -> bool {
        matches!(self, AgentAddress::Vsock(_))
    }
}

impl From<SocketAddress> for AgentAddress {
    fn from(a: SocketAddress) -> Self {
        AgentAddress::Unix(a)
    }
}

impl From<VsockAddress> for AgentAddress {
    fn from(a: VsockAddress) -> Self {
        AgentAddress::Vsock(a)
    }
}

impl fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAddress::Unix(a) => a.fmt(f),
            AgentAddress::Vsock(v) => v.fmt(f),
            AgentAddress::Inherited(fd) => write!(f, "inherited descriptor {fd}"),
        }
    }
}

/// What the agent serves and whom it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where to listen for requests.
    pub agent: AgentAddress,
    /// Where to send the readiness notification.
    pub ready: AgentAddress,
    /// Peer uids allowed on both sockets; empty means no credential check (the
    /// filesystem protects the addresses).
    pub allow_uids: Vec<u32>,
}

/// Parse a command-line address: `unix:///abs/path`, `abstract:name`,
/// `vsock://<port>` or `vsock://<cid>:<port>` (port a u32, neither 0 nor
/// `VMADDR_PORT_ANY`). Errors are [`AgentError::Address`] naming the URI.
pub fn parse_address(uri: &str) -> Result<AgentAddress, AgentError> {
    let bad = |source| AgentError::Address { uri: uri.to_owned(), source };
    if uri.starts_with("vsock:") {
        return VsockAddress::parse(uri).map(AgentAddress::Vsock).map_err(|e| bad(e.into()));
    }
    SocketAddress::from_uri(uri).map(AgentAddress::Unix).map_err(|e| bad(e.into()))
}
