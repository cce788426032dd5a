//! Bounded echoes of user input in error messages.
//!
//! An error names what it refused, but a 5 000-byte id must not make a 5 000-byte
//! message. [`echo`] quotes input as `{:?}` does, cut at [`ECHO_MAX`] bytes (on a
//! character boundary) and followed by the whole input's length when it was cut.
//!
//! Paths, link targets and other OS strings come from the filesystem, where another user
//! may have written them: [`path`] and [`os`] quote them the same way (control characters
//! escaped as `{:?}` does, bytes that are not UTF-8 as `\xNN`), bounded at
//! [`PATH_ECHO_MAX`] bytes, keeping the head and the tail (a path's tail names what was
//! refused). No message or table shows a path any other way, so nothing another user
//! names can write to the terminal of whoever reads it.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

/// Most bytes of input an error message quotes.
pub const ECHO_MAX: usize = 64;

/// Displays `input` quoted (`"abc"`), or its first [`ECHO_MAX`] bytes quoted followed
/// by `… (N bytes)` when it is longer.
pub fn echo(input: &str) -> Echo<'_> {
    Echo(input)
}

/// See [`echo`].
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(&'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= ECHO_MAX {
            return write!(f, "{s:?}");
        }
        let mut end = ECHO_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &s[..end], s.len())
    }
}

/// Most bytes of a path (or other OS string) a message quotes: its first and last
/// `PATH_ECHO_MAX / 2` bytes are shown when it is longer.
pub const PATH_ECHO_MAX: usize = 512;

/// Displays `p` quoted, escaped and bounded (see the module documentation).
pub fn path(p: &Path) -> EchoOs<'_> {
    EchoOs(p.as_os_str().as_encoded_bytes())
}

/// Displays `s` quoted, escaped and bounded, as [`path`] does.
pub fn os(s: &OsStr) -> EchoOs<'_> {
    EchoOs(s.as_encoded_bytes())
}

/// Displays raw bytes (an abstract socket name, a link target read as bytes) quoted,
/// escaped and bounded, as [`path`] does.
pub fn bytes(b: &[u8]) -> EchoOs<'_> {
    EchoOs(b)
}

/// See [`path`].
#[derive(Debug, Clone, Copy)]
pub struct EchoOs<'a>(&'a [u8]);

/// Write `b` escaped: valid UTF-8 as `{:?}` escapes a string (without the quotes),
/// other bytes as `\xNN`.
fn escaped(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\'' => f.write_str("'")?,
                c => write!(f, "{}", c.escape_debug())?,
            }
        }
        for x in chunk.invalid() {
            write!(f, "\\x{x:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for EchoOs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        f.write_str("\"")?;
        if b.len() <= PATH_ECHO_MAX {
            escaped(f, b)?;
            return f.write_str("\"");
        }
        let half = PATH_ECHO_MAX / 2;
        escaped(f, &b[..half])?;
        f.write_str("…")?;
        escaped(f, &b[b.len() - half..])?;
        write!(f, "\" ({} bytes)", b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_with_controls_and_non_utf8_escaped_and_bounded() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(path(Path::new("/tmp/boxsock-0")).to_string(), "\"/tmp/boxsock-0\"");
        let hostile = OsStr::from_bytes(b"/x\x1b]0;T\x07\xff\xc2\x9b\"'\\");
        let shown = os(hostile).to_string();
        assert_eq!(shown, r#""/x\u{1b}]0;T\u{7}\xff\u{9b}\"'\\""#);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        let long = format!("/{}{}", "a".repeat(4000), "/tail");
        let shown = path(Path::new(&long)).to_string();
        assert!(shown.len() < PATH_ECHO_MAX + 40, "{}", shown.len());
        assert!(shown.ends_with("/tail\" (4006 bytes)") && shown.starts_with("\"/aaa"), "{shown}");
    }

    #[test]
    fn short_input_is_quoted_whole_and_long_input_is_cut_with_its_length() {
        assert_eq!(echo("web").to_string(), "\"web\"");
        assert_eq!(echo(&"a".repeat(ECHO_MAX)).to_string(), format!("{:?}", "a".repeat(ECHO_MAX)));
        let long = "x".repeat(5000);
        assert_eq!(echo(&long).to_string(), format!("{:?}… (5000 bytes)", "x".repeat(ECHO_MAX)));
        // A cut never splits a character.
        let wide = "é".repeat(100);
        let shown = echo(&wide).to_string();
        assert!(
            shown.starts_with(&format!("{:?}", "é".repeat(ECHO_MAX / 2)))
                && shown.ends_with("(200 bytes)"),
            "{shown}"
        );
    }
}
