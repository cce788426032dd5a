//! The error type of socket strategies. Its variants are part of the contract: the
//! conformance kit asserts on them, and callers match on them.

use std::io;
use std::path::PathBuf;

use crate::address::SocketAddress;

/// What went wrong in a [`SocketBinding`](crate::binding::SocketBinding) operation.
///
/// Every variant carries the facts a person needs to act: which socket, which path, how
/// long, what limit, who owns what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// An address does not fit in `sun_path`.
    #[error(
        "socket {socket:?}: address {} is {len} bytes, over the limit: sun_path holds {limit} bytes including the terminating NUL, so at most {} bytes fit",
        crate::echo::os(path.as_ref()),
        limit.saturating_sub(1)
    )]
    PathTooLong {
        /// Logical socket name (with the derived name, if that is what missed).
        socket: String,
        /// The full address, printable.
        path: String,
        /// Its length in bytes, without the NUL.
        len: usize,
        /// `sizeof(sun_path)`, NUL included.
        limit: usize,
    },

    /// Something on disk is not as safe as it must be (wrong owner, a symlink where a
    /// directory must be, group/other access that could not be repaired…).
    #[error("refusing insecure {}: {reason}", crate::echo::path(path))]
    Insecure {
        /// The offending path.
        path: PathBuf,
        /// What is wrong, naming owners and modes.
        reason: String,
    },

    /// Something that is not ours occupies a path the strategy needs (a regular file or
    /// directory where the link belongs). It is never overwritten.
    #[error(
        "refusing to replace {}: it is {found}, not a link this strategy made",
        crate::echo::path(path)
    )]
    Occupied {
        /// The path.
        path: PathBuf,
        /// What was found there ("a regular file", "a directory"…).
        found: String,
    },

    /// The box's real socket directory does not exist (removed box, or deleted by hand).
    #[error("box {id}: its socket directory {} does not exist", crate::echo::path(path))]
    MissingSocketDir {
        /// The box id.
        id: String,
        /// `<home>/boxes/<id>/sockets`.
        path: PathBuf,
    },

    /// The strategy cannot do this here (platform, capability, configuration).
    #[error("strategy {strategy:?} does not support {what}: {reason}")]
    Unsupported {
        /// Strategy name.
        strategy: String,
        /// What was asked.
        what: String,
        /// Why not.
        reason: String,
    },

    /// A socket name or configuration value is invalid.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid ("socket file name", "base directory"…).
        what: String,
        /// Why.
        reason: String,
    },

    /// A peer's credentials are not allowed on this socket.
    #[error(
        "socket {socket:?} at {address}: peer pid {pid} uid {uid} is not allowed ({})",
        peer_expectation(*uid, allowed, *expected_pid)
    )]
    PeerRejected {
        /// Logical socket name or address.
        socket: String,
        /// The address, printable.
        address: String,
        /// Peer pid (0 if unknown).
        pid: i32,
        /// Peer uid.
        uid: u32,
        /// Allowed uids (empty when only the pid is checked).
        allowed: Vec<u32>,
        /// The process the peer had to be (the box's recorded process), if the policy
        /// named one.
        expected_pid: Option<i32>,
    },

    /// A system call failed.
    #[error("{op} {address}: {source}")]
    Io {
        /// The operation, as a verb ("bind", "connect", "create directory"…).
        op: &'static str,
        /// What it worked on: a filesystem path (a socket's, a directory's, a file's),
        /// or an abstract socket name (shown `@name`, never stored as a path).
        address: SocketAddress,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What a rejected peer should have been, for [`BindingError::PeerRejected`].
fn peer_expectation(uid: u32, allowed: &[u32], expected_pid: Option<i32>) -> String {
    let uid_ok = allowed.is_empty() || allowed.contains(&uid);
    match (uid_ok, expected_pid) {
        (true, Some(p)) => {
            format!("its uid is allowed, but it is not the box's process: expected pid {p}")
        }
        (false, Some(p)) => {
            format!("allowed uids: {allowed:?}; expected the box's process, pid {p}")
        }
        (_, None) => format!("allowed uids: {allowed:?}"),
    }
}

impl BindingError {
    /// Build an [`BindingError::Io`] on a path or a socket address.
    pub fn io(op: &'static str, at: impl Into<SocketAddress>, source: io::Error) -> Self {
        BindingError::Io { op, address: at.into(), source }
    }

    /// Build an [`BindingError::Io`] from a nix errno.
    pub fn errno(op: &'static str, at: impl Into<SocketAddress>, errno: nix::errno::Errno) -> Self {
        BindingError::Io { op, address: at.into(), source: io::Error::from(errno) }
    }
}
