//! The socket catalogue: every socket a box has, who binds it, and which names its
//! binder derives from it.
//!
//! A backend declares its sockets as a list of [`SocketSpec`]s. Every name in
//! [`SocketSpec::all_file_names`] (the socket's own file name and every derived name)
//! is checked against the `sun_path` budget before a box is created: the seed's outage
//! came from a name the runtime never chose (libkrun appending `-krun.sock`).

use std::fmt;

/// Stream or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_DGRAM`.
    Datagram,
}

/// Who binds (listens on) a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binder {
    /// The host runtime binds it; the backend or guest connects (e.g. `ready`).
    Runtime,
    /// The backend / VMM binds it; the runtime connects (e.g. `agent` under libkrun).
    Backend,
    /// The runtime binds it (through the strategy: its rotation of squatted names and
    /// its peer policy) and hands the listening descriptor to the box's process, which
    /// only accepts on it (`agent` under the host backend,
    /// [`BoxSockets::handed`](crate::backend::BoxSockets::handed)). No process of the
    /// box binds it or is told its name.
    Handed,
    /// An external peer the runtime starts binds it (e.g. `net`, bound by passt).
    External(&'static str),
}

/// A name a binder derives from a socket's address, in the same directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DerivedName {
    /// The socket's own file name with a suffix appended: libkrun ≤ 1.18 bound
    /// `<net path>-krun.sock` for a unixgram network backend.
    Suffix(&'static str),
    /// A sibling file name in the socket's directory, given at its worst-case length:
    /// libkrun 1.19 binds `$TMPDIR/krun-net-<pid>-<n>.sock`, and the shim points
    /// `TMPDIR` at the box's binding directory.
    Sibling(&'static str),
}

/// One socket of a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    /// Logical name (`agent`, `ready`, `net`); the file name is `<name>.sock`.
    pub name: &'static str,
    /// Stream or datagram.
    pub kind: SocketKind,
    /// Who binds it.
    pub binder: Binder,
    /// Names the binder derives from it; each counts in every budget.
    pub derived: &'static [DerivedName],
}

/// The typed key of a box's socket: a catalogue entry ([`AGENT`], [`READY`], [`NET`], or
/// a backend's own), never a string.
pub type Socket = SocketSpec;

impl SocketSpec {
    /// The socket's file name, `<name>.sock`.
    pub fn file_name(&self) -> String {
        format!("{}.sock", self.name)
    }

    /// The socket's file name followed by every derived name, each with a label for
    /// error messages (`agent`, `net (derived: net.sock-krun.sock)`).
    pub fn all_file_names(&self) -> Vec<(String, String)> {
        let own = self.file_name();
        let mut out = vec![(self.name.to_owned(), own.clone())];
        for d in self.derived {
            let file = match d {
                DerivedName::Suffix(s) => format!("{own}{s}"),
                DerivedName::Sibling(s) => (*s).to_owned(),
            };
            out.push((format!("{} (derived: {file})", self.name), file));
        }
        out
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The in-box agent's request socket. Under libkrun the VMM listens on the host path
/// (vsock port mapped with `listen=true`); under the host backend the agent binds it.
pub const AGENT: SocketSpec =
    SocketSpec { name: "agent", kind: SocketKind::Stream, binder: Binder::Backend, derived: &[] };

/// The readiness socket: the runtime listens, the guest dials it once when ready.
pub const READY: SocketSpec =
    SocketSpec { name: "ready", kind: SocketKind::Stream, binder: Binder::Runtime, derived: &[] };

/// The network socket, bound by the network proxy (passt), dialled by the VMM.
pub const NET: SocketSpec = SocketSpec {
    name: "net",
    kind: SocketKind::Stream,
    binder: Binder::External("passt"),
    derived: &[],
};

/// Longest file name a socket may have (`<name>.sock` or a derived name).
///
/// Chosen so that the default strategy's worst-case address fits every platform:
/// `/tmp/boxsock-4294967295/<32-byte id>/` is 57 bytes, and macOS's `sun_path` holds
/// 104 including the NUL, leaving 104 - 1 - 57 = 46. The `short-symlink` budget test
/// pins this arithmetic (`PORTABLE_MAX_FILE_NAME_LEN`).
pub const MAX_FILE_NAME_LEN: usize = 46;

/// Why a socket file name was refused by [`validate_file_name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileNameError {
    /// The name is empty.
    #[error("socket file name is empty")]
    Empty,
    /// The name is longer than [`MAX_FILE_NAME_LEN`]; only its start is kept, so the
    /// message stays bounded however long the name was.
    #[error("socket file name {start:?}{} is {len} bytes; the most is {max}", if *truncated { "…" } else { "" })]
    TooLong {
        /// The start of the name.
        start: String,
        /// Whether `start` is shorter than the name.
        truncated: bool,
        /// The name's length in bytes.
        len: usize,
        /// [`MAX_FILE_NAME_LEN`].
        max: usize,
    },
    /// The name starts with `.`.
    #[error("socket file name {name:?} starts with '.'")]
    LeadingDot {
        /// The name.
        name: String,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error("socket file name {name:?} contains {c:?}")]
    Character {
        /// The name.
        name: String,
        /// The first refused character.
        c: char,
    },
}

/// Validate a socket file name: one path component of `[A-Za-z0-9._-]`, not starting
/// with `.`, at most [`MAX_FILE_NAME_LEN`] bytes.
pub fn validate_file_name(name: &str) -> Result<(), FileNameError> {
    if name.is_empty() {
        return Err(FileNameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_LEN {
        // Quote only the start of an over-long name, so the message stays bounded.
        let start: String = name.chars().take(MAX_FILE_NAME_LEN + 16).collect();
        let truncated = start.len() < name.len();
        return Err(FileNameError::TooLong {
            start,
            truncated,
            len: name.len(),
            max: MAX_FILE_NAME_LEN,
        });
    }
    if name.starts_with('.') {
        return Err(FileNameError::LeadingDot { name: name.to_owned() });
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(FileNameError::Character { name: name.to_owned(), c });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_listed_after_the_own_name() {
        const S: SocketSpec = SocketSpec {
            name: "net",
            kind: SocketKind::Datagram,
            binder: Binder::External("gvproxy"),
            derived: &[
                DerivedName::Suffix("-krun.sock"),
                DerivedName::Sibling("krun-net-4194304-4294967295.sock"),
            ],
        };
        let names: Vec<String> = S.all_file_names().into_iter().map(|(_, f)| f).collect();
        assert_eq!(names, ["net.sock", "net.sock-krun.sock", "krun-net-4194304-4294967295.sock"]);
        for n in &names {
            validate_file_name(n).unwrap();
        }
    }

    #[test]
    fn over_long_name_error_is_bounded_and_names_the_length() {
        // Found by the `socket_name` fuzz target: the whole name was quoted.
        let name = "n".repeat(100_000);
        let err = validate_file_name(&name).unwrap_err().to_string();
        assert!(err.len() < 200, "{} bytes", err.len());
        assert!(
            err.contains("100000 bytes") && err.contains(&MAX_FILE_NAME_LEN.to_string()),
            "{err}"
        );
        assert!(err.contains(&"n".repeat(MAX_FILE_NAME_LEN)) && err.contains('…'), "{err}");
        let err = validate_file_name(&"m".repeat(MAX_FILE_NAME_LEN + 1)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{:?}", "m".repeat(MAX_FILE_NAME_LEN + 1))) && !err.contains('…'),
            "{err}"
        );
    }

    #[test]
    fn file_name_validation() {
        assert!(validate_file_name("agent.sock").is_ok());
        for bad in ["", ".x", "a/b", "a b", "..", &"x".repeat(MAX_FILE_NAME_LEN + 1)] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_file_name(""), Err(FileNameError::Empty));
        assert_eq!(validate_file_name(".x"), Err(FileNameError::LeadingDot { name: ".x".into() }));
        assert_eq!(
            validate_file_name("a/b"),
            Err(FileNameError::Character { name: "a/b".into(), c: '/' })
        );
    }
}
