//! Box identifiers.
//!
//! A [`BoxId`] is the only part of a box's paths that comes from outside the runtime, so
//! it is the one place where "nothing built from a name can escape the home" is enforced.
//! A valid id is a single path component: 1 to [`BoxId::MAX_LEN`] bytes of ASCII
//! letters, digits, `-` and `_`, with `.` allowed inside but never at the start (so `.`
//! and `..` and hidden names are impossible).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid [`BoxId`]. The message names the input: its first 80
/// characters, and its whole length when it is longer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid box id {input:?}{}: {reason}", if *.len > .input.len() { format!("… ({} bytes)", .len) } else { String::new() })]
pub struct IdError {
    /// The rejected input, as given (lossy for display only), cut to 80 characters.
    pub input: String,
    /// The whole input's length in bytes.
    pub len: usize,
    /// What is wrong with it.
    pub reason: IdErrorReason,
}

/// The ways an id can be invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdErrorReason {
    /// The empty string.
    #[error("it is empty")]
    Empty,
    /// Longer than [`BoxId::MAX_LEN`] bytes.
    #[error("it is longer than {} bytes", BoxId::MAX_LEN)]
    TooLong,
    /// `.` or `..`, or any name starting with `.`.
    #[error("it starts with '.' (no '.', '..' or hidden names)")]
    LeadingDot,
    /// Contains `/`.
    #[error("it contains '/'")]
    Slash,
    /// Contains a NUL byte.
    #[error("it contains a NUL byte")]
    Nul,
    /// Contains whitespace.
    #[error("it contains whitespace")]
    Whitespace,
    /// Contains a non-ASCII character.
    #[error("it contains a non-ASCII character")]
    NonAscii,
    /// Contains another character outside `[A-Za-z0-9._-]`.
    #[error("it contains a character outside [A-Za-z0-9._-]")]
    BadChar,
}

/// A validated box identifier: one safe path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoxId(String);

impl BoxId {
    /// Length of generated ids (random base62): 62^12 ≈ 3.2e21 possibilities.
    pub const GENERATED_LEN: usize = 12;
    /// Longest id accepted by [`BoxId::parse`]. Every socket budget is computed with it.
    pub const MAX_LEN: usize = 32;

    /// A fresh random id of [`BoxId::GENERATED_LEN`] base62 characters.
    pub fn generate() -> Self {
        let s: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(Self::GENERATED_LEN)
            .map(char::from)
            .collect();
        BoxId(s)
    }

    /// Validate `input` as an id.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        Self::check(input).map(|()| BoxId(input.to_owned()))
    }

    /// Validate raw bytes (for example a directory entry name) as an id.
    pub fn from_bytes(input: &[u8]) -> Result<Self, IdError> {
        match std::str::from_utf8(input) {
            Ok(s) => Self::parse(s),
            Err(_) => Err(IdError {
                // Truncated like `check` does, so the error stays printable.
                input: String::from_utf8_lossy(input).chars().take(80).collect(),
                len: input.len(),
                reason: IdErrorReason::NonAscii,
            }),
        }
    }

    fn check(input: &str) -> Result<(), IdError> {
        let fail = |reason| {
            Err(IdError { input: input.chars().take(80).collect(), len: input.len(), reason })
        };
        if input.is_empty() {
            return fail(IdErrorReason::Empty);
        }
        // Character checks come first so that the most specific reason is reported.
        for c in input.chars() {
            let reason = match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => continue,
                '/' => IdErrorReason::Slash,
                '\0' => IdErrorReason::Nul,
                c if c.is_whitespace() => IdErrorReason::Whitespace,
                c if !c.is_ascii() => IdErrorReason::NonAscii,
                _ => IdErrorReason::BadChar,
            };
            return fail(reason);
        }
        if input.len() > Self::MAX_LEN {
            return fail(IdErrorReason::TooLong);
        }
        if input.starts_with('.') {
            return fail(IdErrorReason::LeadingDot);
        }
        Ok(())
    }

    /// The id as a string slice (always ASCII, one path component).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BoxId {
    /// Honours width and alignment (`{:<14}`), so tables line up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for BoxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoxId({})", self.0)
    }
}

impl FromStr for BoxId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl AsRef<str> for BoxId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for BoxId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BoxId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BoxId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_honours_width_and_alignment() {
        let id = BoxId::parse("abc").unwrap();
        assert_eq!(format!("[{id:<6}]"), "[abc   ]");
        assert_eq!(format!("[{id:>5}]"), "[  abc]");
    }

    #[test]
    fn generated_ids_are_valid_fixed_length_base62_and_distinct() {
        let a = BoxId::generate();
        let b = BoxId::generate();
        assert_eq!(a.as_str().len(), BoxId::GENERATED_LEN);
        assert!(a.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(BoxId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn rejects_each_bad_shape_with_its_reason() {
        let cases: &[(&str, IdErrorReason)] = &[
            ("", IdErrorReason::Empty),
            (".", IdErrorReason::LeadingDot),
            ("..", IdErrorReason::LeadingDot),
            (".hidden", IdErrorReason::LeadingDot),
            ("a/b", IdErrorReason::Slash),
            ("../etc", IdErrorReason::Slash),
            ("a\0b", IdErrorReason::Nul),
            ("a b", IdErrorReason::Whitespace),
            ("a\nb", IdErrorReason::Whitespace),
            ("héllo", IdErrorReason::NonAscii),
            ("a:b", IdErrorReason::BadChar),
            ("a*", IdErrorReason::BadChar),
        ];
        for (input, reason) in cases {
            let err = BoxId::parse(input).unwrap_err();
            assert_eq!(err.reason, *reason, "input {input:?}");
            assert!(err.to_string().contains(&format!("{:?}", err.input)), "{err}");
        }
        let long = "a".repeat(BoxId::MAX_LEN + 1);
        assert_eq!(BoxId::parse(&long).unwrap_err().reason, IdErrorReason::TooLong);
        assert!(BoxId::parse(&"a".repeat(BoxId::MAX_LEN)).is_ok());
        assert!(BoxId::parse("web-1.v2_x").is_ok());
    }

    #[test]
    fn non_utf8_error_carries_the_input_truncated() {
        // Found by the `box_id` fuzz target: the non-UTF-8 path kept the whole input.
        let mut long = vec![0xffu8; 4096];
        long.extend_from_slice(b"tail");
        let err = BoxId::from_bytes(&long).unwrap_err();
        assert_eq!(err.reason, IdErrorReason::NonAscii);
        assert_eq!(err.input.chars().count(), 80);
        assert!(err.input.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        let err = BoxId::parse(&"é".repeat(4096)).unwrap_err();
        assert_eq!(err.input.chars().count(), 80);
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<BoxId>("\"ok-id\"").is_ok());
        let err = serde_json::from_str::<BoxId>("\"../x\"").unwrap_err();
        assert!(err.to_string().contains("invalid box id"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_accepted_id_is_one_safe_component(s in "\\PC{0,40}") {
            if let Ok(id) = BoxId::parse(&s) {
                let p = std::path::Path::new("/home").join(id.as_str());
                proptest::prop_assert_eq!(p.parent(), Some(std::path::Path::new("/home")));
                proptest::prop_assert!(!id.as_str().starts_with('.'));
                proptest::prop_assert!(id.as_str().len() <= BoxId::MAX_LEN);
            }
        }
    }
}
