//! Socket addresses as strategies hand them out.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::sys::abstract_addr;
use serde::{Deserialize, Serialize};

/// Why [`SocketAddress::from_uri`] refused a URI; each variant quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// `unix://` followed by a relative path.
    #[error("{}: a unix:// address must be absolute", crate::echo::echo(uri))]
    NotAbsolute {
        /// The URI.
        uri: String,
    },
    /// `abstract:` with nothing after it.
    #[error("{}: empty abstract name", crate::echo::echo(uri))]
    EmptyAbstract {
        /// The URI.
        uri: String,
    },
    /// Neither `unix://` nor `abstract:`.
    #[error("{}: expected unix:///path or abstract:name", crate::echo::echo(uri))]
    Scheme {
        /// The URI.
        uri: String,
    },
}

/// Where a box socket lives: a filesystem path, or (Linux only) an abstract name.
///
/// Addresses are derived at the point of use from (home, box id, socket name) and the
/// strategy; they are never persisted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketAddress {
    /// A filesystem path (for short-symlink, the alias through the short link).
    Path(PathBuf),
    /// A Linux abstract-namespace name, without the leading NUL.
    Abstract(Vec<u8>),
}

impl SocketAddress {
    /// The path, if this is a filesystem address.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            SocketAddress::Path(p) => Some(p),
            SocketAddress::Abstract(_) => None,
        }
    }

    /// Bytes of the name itself (path bytes, or abstract name bytes), without any NUL.
    pub fn byte_len(&self) -> usize {
        match self {
            SocketAddress::Path(p) => p.as_os_str().len(),
            SocketAddress::Abstract(n) => n.len(),
        }
    }

    /// A printable form: the path (lossy), or `@name` for abstract names, the notation
    /// of `ss -x` and `/proc/net/unix`.
    pub fn display_string(&self) -> String {
        match self {
            SocketAddress::Path(p) => p.to_string_lossy().into_owned(),
            SocketAddress::Abstract(n) => format!("@{}", String::from_utf8_lossy(n)),
        }
    }

    /// The address as a URI, the form the in-box agent takes on its command line:
    /// `unix:///abs/path` or `abstract:name`.
    pub fn to_uri(&self) -> String {
        match self {
            SocketAddress::Path(p) => format!("unix://{}", p.to_string_lossy()),
            SocketAddress::Abstract(n) => format!("abstract:{}", String::from_utf8_lossy(n)),
        }
    }

    /// Parse the URI form written by [`SocketAddress::to_uri`].
    pub fn from_uri(uri: &str) -> Result<Self, UriError> {
        if let Some(rest) = uri.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                return Err(UriError::NotAbsolute { uri: uri.to_owned() });
            }
            Ok(SocketAddress::Path(PathBuf::from(rest)))
        } else if let Some(rest) = uri.strip_prefix("abstract:") {
            if rest.is_empty() {
                return Err(UriError::EmptyAbstract { uri: uri.to_owned() });
            }
            Ok(SocketAddress::Abstract(rest.as_bytes().to_vec()))
        } else {
            Err(UriError::Scheme { uri: uri.to_owned() })
        }
    }

    /// The std socket address, for `bind_addr` / `connect_addr`.
    pub fn to_std(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        match self {
            SocketAddress::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            SocketAddress::Abstract(n) => abstract_addr(n),
        }
    }
}

/// A filesystem path is a path address (used by [`crate::BindingError::io`], whose
/// subject is often a directory or a file rather than a socket).
impl From<PathBuf> for SocketAddress {
    fn from(p: PathBuf) -> Self {
        SocketAddress::Path(p)
    }
}

impl From<&Path> for SocketAddress {
    fn from(p: &Path) -> Self {
        SocketAddress::Path(p.to_path_buf())
    }
}

impl From<&PathBuf> for SocketAddress {
    fn from(p: &PathBuf) -> Self {
        SocketAddress::Path(p.clone())
    }
}

impl From<&SocketAddress> for SocketAddress {
    fn from(a: &SocketAddress) -> Self {
        a.clone()
    }
}

/// Shown quoted, escaped and bounded ([`crate::echo::path`]): a path may hold what another
/// user wrote. [`SocketAddress::display_string`] is the raw form.
impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Path(p) => write!(f, "{}", crate::echo::path(p)),
            SocketAddress::Abstract(n) => write!(f, "@{}", crate::echo::bytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        for a in [
            SocketAddress::Path("/tmp/boxsock-0/abc/agent.sock".into()),
            SocketAddress::Abstract(b"boxsock-x".to_vec()),
        ] {
            assert_eq!(SocketAddress::from_uri(&a.to_uri()).unwrap(), a);
        }
        assert_eq!(
            SocketAddress::from_uri("unix://relative"),
            Err(UriError::NotAbsolute { uri: "unix://relative".into() })
        );
        assert_eq!(
            SocketAddress::from_uri("tcp://x"),
            Err(UriError::Scheme { uri: "tcp://x".into() })
        );
        assert_eq!(
            SocketAddress::from_uri("abstract:"),
            Err(UriError::EmptyAbstract { uri: "abstract:".into() })
        );
    }

    #[test]
    fn a_bad_uri_is_quoted_bounded() {
        let long = format!("tcp://{}", "x".repeat(10_000));
        let msg = SocketAddress::from_uri(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes: {msg}", msg.len());
        assert!(
            msg.contains("10006 bytes") && msg.contains("expected unix:///path or abstract:name"),
            "{msg}"
        );
        assert!(
            SocketAddress::from_uri("unix://rel")
                .unwrap_err()
                .to_string()
                .starts_with("\"unix://rel\"")
        );
    }
}
