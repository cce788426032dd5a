//! Bounded echoes of user input in error messages.
//!
//! An error names what it refused, but a 5 000-byte id must not make a 5 000-byte
//! message. [`echo`] quotes input as `{:?}` does, cut at [`ECHO_MAX`] bytes (on a
//! character boundary) and followed by the whole input's length when it was cut.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole_and_long_input_is_cut_with_its_length() {
        assert_eq!(echo("web").to_string(), "\"web\"");
        assert_eq!(echo(&"a".repeat(ECHO_MAX)).to_string(), format!("{:?}", "a".repeat(ECHO_MAX)));
        let long = "x".repeat(5000);
        assert_eq!(echo(&long).to_string(), format!("{:?}… (5000 bytes)", "x".repeat(ECHO_MAX)));
        // A cut never splits a character.
        let wide = "é".repeat(100);
        let shown = echo(&wide).to_string();
        assert!(shown.starts_with(&format!("{:?}", "é".repeat(ECHO_MAX / 2))) && shown.ends_with("(200 bytes)"), "{shown}");
    }
}
