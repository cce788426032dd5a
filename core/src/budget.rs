//! The `sun_path` budget.
//!
//! A Unix socket address holds at most [`Platform::sun_len`] bytes: 104 on macOS, 108 on
//! Linux, the terminating NUL included. A filesystem path *fits* when
//! `len + 1 <= sun_len`. A Linux abstract name is stored as a leading NUL followed by the
//! name with no terminator, so it fits when `1 + len <= sun_len`.
//!
//! Every address a box uses, including each name a binder derives from it, is checked
//! here before anything is bound; a failure names the socket, the full path, its byte
//! length and the limit.

use std::path::Path;

use crate::address::SocketAddress;
use crate::error::BindingError;

/// A platform with its own `sun_path` size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Linux: `sizeof(sun_path) == 108`.
    Linux,
    /// macOS: `sizeof(sun_path) == 104`.
    MacOs,
}

impl Platform {
    /// The platform this binary was built for.
    pub const fn current() -> Platform {
        if cfg!(target_os = "macos") { Platform::MacOs } else { Platform::Linux }
    }

    /// `sizeof(sun_path)` on this platform, NUL included.
    pub const fn sun_len(self) -> usize {
        match self {
            Platform::Linux => 108,
            Platform::MacOs => 104,
        }
    }

    /// The strictest limit across every supported platform (macOS, 104). Strategies that
    /// promise portability prove their worst case against this.
    pub const fn portable_sun_len() -> usize {
        Platform::MacOs.sun_len()
    }

    /// Human name.
    pub const fn name(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::MacOs => "macos",
        }
    }
}

/// Bytes of `sun_path` an address occupies (path: bytes + NUL; abstract: NUL + bytes).
pub fn encoded_len(addr: &SocketAddress) -> usize {
    match addr {
        SocketAddress::Path(p) => p.as_os_str().len() + 1,
        SocketAddress::Abstract(name) => 1 + name.len(),
    }
}

/// Whether `addr` fits in `limit` bytes of `sun_path`.
pub fn fits_in(addr: &SocketAddress, limit: usize) -> bool {
    encoded_len(addr) <= limit
}

/// Check that `addr`, the address of `socket`, fits on `platform`.
///
/// The error names the socket, the address, its byte length (without the NUL) and the
/// limit (with it), so a person reading it can see by how much it missed.
pub fn check(socket: &str, addr: &SocketAddress, platform: Platform) -> Result<(), BindingError> {
    check_limit(socket, addr, platform.sun_len())
}

/// Like [`check`] with an explicit limit (for example [`Platform::portable_sun_len`]).
pub fn check_limit(socket: &str, addr: &SocketAddress, limit: usize) -> Result<(), BindingError> {
    if fits_in(addr, limit) {
        Ok(())
    } else {
        Err(BindingError::PathTooLong {
            socket: socket.to_owned(),
            path: addr.display_string(),
            len: addr.byte_len(),
            limit,
        })
    }
}

/// Convenience: check a filesystem path on the current platform.
pub fn check_path(socket: &str, path: &Path) -> Result<(), BindingError> {
    check(socket, &SocketAddress::Path(path.to_path_buf()), Platform::current())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn path_of_len(n: usize) -> SocketAddress {
        let mut s = String::from("/");
        s.push_str(&"x".repeat(n - 1));
        SocketAddress::Path(PathBuf::from(s))
    }

    #[test]
    fn boundaries_103_104_107_108() {
        // Bazel failed exactly between 104 and 108: pin both sides of both limits.
        assert!(check("s", &path_of_len(103), Platform::MacOs).is_ok());
        assert!(check("s", &path_of_len(104), Platform::MacOs).is_err());
        assert!(check("s", &path_of_len(107), Platform::Linux).is_ok());
        assert!(check("s", &path_of_len(108), Platform::Linux).is_err());
        assert!(check("s", &path_of_len(104), Platform::Linux).is_ok());
    }

    #[test]
    fn error_names_socket_path_len_and_limit() {
        let err = check("agent", &path_of_len(120), Platform::Linux).unwrap_err();
        match &err {
            BindingError::PathTooLong { socket, path, len, limit } => {
                assert_eq!(socket, "agent");
                assert_eq!(path.len(), 120);
                assert_eq!(*len, 120);
                assert_eq!(*limit, 108);
            }
            other => panic!("wrong variant {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("agent") && msg.contains("120") && msg.contains("108"), "{msg}");
    }

    #[test]
    fn abstract_names_count_their_leading_nul() {
        let a = SocketAddress::Abstract(vec![b'a'; 107]);
        assert!(check("s", &a, Platform::Linux).is_ok());
        let a = SocketAddress::Abstract(vec![b'a'; 108]);
        assert!(check("s", &a, Platform::Linux).is_err());
    }
}
