//! Name derivation: `boxsock/<uid>/<32 hex digits>`, see `docs/decisions/0002-abstract-names.md`.
//!
//! The 128-bit tag is `HMAC-SHA256(key = home secret, message)` truncated to 16 bytes,
//! where the message is
//!
//! ```text
//! "boxsock-abstract-v1" NUL <uid in decimal> NUL <box id> NUL <socket file name> NUL
//! ```
//!
//! Box ids and socket file names are validated (no NUL, no `/`), so the NUL-separated
//! encoding is unambiguous: two different (uid, id, name) triples never feed the MAC the
//! same bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of the per-home secret, in bytes (the HMAC-SHA256 key).
pub const SECRET_LEN: usize = 32;

/// Domain-separation label fed to the MAC before anything else; bump the version if the
/// derivation ever changes, so old and new names can never be confused.
const LABEL: &[u8] = b"boxsock-abstract-v1";

/// Bytes of the tag kept in the name (128 bits).
pub const TAG_LEN: usize = 16;

/// The longest name this derivation can produce: `boxsock/` + a 10-digit uid + `/` +
/// 32 hex digits. It fits `sun_path` on Linux (1 + 51 <= 108) whatever the home.
pub const MAX_NAME_LEN: usize = "boxsock/".len() + 10 + 1 + 2 * TAG_LEN;

/// Derive the abstract name (without the leading NUL) of socket `file_name` of box `id`
/// of user `uid`, keyed by the home's `secret`.
pub fn derive(secret: &[u8; SECRET_LEN], uid: u32, id: &str, file_name: &str) -> Vec<u8> {
    Deriver::new(secret, uid).derive(id, file_name)
}

/// [`derive`] with the key schedule and the (label, uid) prefix computed once: each
/// name then costs one clone of the MAC state and about two SHA-256 compressions.
#[derive(Clone)]
pub struct Deriver {
    prefixed: Hmac<Sha256>,
    name_prefix: Vec<u8>,
}

impl std::fmt::Debug for Deriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Deriver").field("name_prefix", &String::from_utf8_lossy(&self.name_prefix)).finish_non_exhaustive()
    }
}

impl Deriver {
    /// Key the MAC with `secret` and absorb the label and `uid`.
    pub fn new(secret: &[u8; SECRET_LEN], uid: u32) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        let uid_s = uid.to_string();
        for part in [LABEL, uid_s.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        Deriver { prefixed: mac, name_prefix: format!("boxsock/{uid_s}/").into_bytes() }
    }

    /// The name of socket `file_name` of box `id`.
    pub fn derive(&self, id: &str, file_name: &str) -> Vec<u8> {
        let mut mac = self.prefixed.clone();
        for part in [id.as_bytes(), file_name.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        let tag = mac.finalize().into_bytes();
        let mut name = Vec::with_capacity(self.name_prefix.len() + 2 * TAG_LEN);
        name.extend_from_slice(&self.name_prefix);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in &tag[..TAG_LEN] {
            name.push(HEX[usize::from(b >> 4)]);
            name.push(HEX[usize::from(b & 0xf)]);
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_length() {
        let n = derive(&[7; SECRET_LEN], u32::MAX, "abc", "agent.sock");
        let s = std::str::from_utf8(&n).unwrap();
        let rest = s.strip_prefix("boxsock/4294967295/").unwrap();
        assert_eq!(rest.len(), 32);
        assert!(rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(n.len(), MAX_NAME_LEN);
        let addr = boxsock_core::SocketAddress::Abstract(n);
        boxsock_core::budget::check("agent.sock", &addr, boxsock_core::Platform::Linux).unwrap();
    }

    #[test]
    fn every_input_changes_the_tag() {
        let base = derive(&[1; SECRET_LEN], 1000, "abc", "agent.sock");
        assert_eq!(base, derive(&[1; SECRET_LEN], 1000, "abc", "agent.sock"));
        let mut other_key = [1; SECRET_LEN];
        other_key[31] = 2;
        for n in [
            derive(&other_key, 1000, "abc", "agent.sock"),
            derive(&[1; SECRET_LEN], 1001, "abc", "agent.sock"),
            derive(&[1; SECRET_LEN], 1000, "abd", "agent.sock"),
            derive(&[1; SECRET_LEN], 1000, "abc", "ready.sock"),
            // The separator keeps ("ab", "cagent.sock") apart from ("abc", "agent.sock").
            derive(&[1; SECRET_LEN], 1000, "ab", "cagent.sock"),
        ] {
            assert_ne!(n[n.len() - 32..], base[base.len() - 32..]);
        }
    }

    #[test]
    fn known_answer_pins_the_derivation() {
        // Computed independently (Python's hmac module) from the message layout in the
        // module docs. If this changes, every running box becomes unreachable: bump LABEL.
        let n = derive(&[7; SECRET_LEN], 1000, "abc", "agent.sock");
        assert_eq!(std::str::from_utf8(&n).unwrap(), "boxsock/1000/0d832f63a3efbbce6fb9faaad6bc89e3");
        // The precomputed deriver gives the same answer, repeatedly.
        let d = Deriver::new(&[7; SECRET_LEN], 1000);
        assert_eq!(d.derive("abc", "agent.sock"), n);
        assert_eq!(d.derive("abc", "agent.sock"), n);
        assert_ne!(d.derive("abc", "ready.sock"), n);
    }
}
