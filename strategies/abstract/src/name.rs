//! Name derivation: `boxsock/<uid>/<32 hex digits>`, see `docs/decisions/0002-abstract-names.md`.
//!
//! The 128-bit tag is `HMAC-SHA256(key = home secret, message)` truncated to 16 bytes.
//! A box that has a per-start epoch (see [`crate::epoch`]; every start writes a fresh
//! one) uses the v2 message
//!
//! ```text
//! "boxsock-abstract-v2" NUL <uid in decimal> NUL <box id> NUL <epoch, 32 hex digits> NUL <socket file name> NUL
//! ```
//!
//! and a box without one (never started by a version that rotates) the v1 message
//!
//! ```text
//! "boxsock-abstract-v1" NUL <uid in decimal> NUL <box id> NUL <socket file name> NUL
//! ```
//!
//! Box ids and socket file names are validated (no NUL, no `/`) and the epoch is fixed
//! hex, so each encoding is unambiguous: two different inputs never feed the MAC the
//! same bytes, and the labels keep v1 and v2 apart.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of the per-home secret, in bytes (the HMAC-SHA256 key).
pub const SECRET_LEN: usize = 32;

/// Domain-separation label fed to the MAC before anything else; bump the version if the
/// derivation ever changes, so old and new names can never be confused.
const LABEL: &[u8] = b"boxsock-abstract-v1";

/// The label of names that carry a per-start epoch.
const LABEL_V2: &[u8] = b"boxsock-abstract-v2";

/// Bytes of a per-start epoch (128 bits, written as 32 hex digits).
pub const EPOCH_LEN: usize = 16;

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
    prefixed_v2: Hmac<Sha256>,
    name_prefix: Vec<u8>,
}

impl std::fmt::Debug for Deriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Deriver")
            .field("name_prefix", &String::from_utf8_lossy(&self.name_prefix))
            .finish_non_exhaustive()
    }
}

impl Deriver {
    /// Key the MAC with `secret` and absorb the label and `uid`.
    pub fn new(secret: &[u8; SECRET_LEN], uid: u32) -> Self {
        let keyed =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        let uid_s = uid.to_string();
        let prefix = |label: &[u8]| {
            let mut mac = keyed.clone();
            for part in [label, uid_s.as_bytes()] {
                mac.update(part);
                mac.update(&[0]);
            }
            mac
        };
        Deriver {
            prefixed: prefix(LABEL),
            prefixed_v2: prefix(LABEL_V2),
            name_prefix: format!("boxsock/{uid_s}/").into_bytes(),
        }
    }

    /// The v1 name of socket `file_name` of box `id` (a box with no epoch).
    pub fn derive(&self, id: &str, file_name: &str) -> Vec<u8> {
        let mut mac = self.prefixed.clone();
        for part in [id.as_bytes(), file_name.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        self.name(mac)
    }

    /// The name of socket `file_name` of box `id` in the start identified by `epoch`
    /// (v2), or the v1 name when the box has no epoch.
    pub fn derive_in(&self, id: &str, epoch: Option<&[u8; EPOCH_LEN]>, file_name: &str) -> Vec<u8> {
        let Some(epoch) = epoch else {
            return self.derive(id, file_name);
        };
        let mut mac = self.prefixed_v2.clone();
        let epoch_hex = hex(epoch);
        for part in [id.as_bytes(), &epoch_hex, file_name.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        self.name(mac)
    }

    fn name(&self, mac: Hmac<Sha256>) -> Vec<u8> {
        let tag = mac.finalize().into_bytes();
        let mut name = Vec::with_capacity(self.name_prefix.len() + 2 * TAG_LEN);
        name.extend_from_slice(&self.name_prefix);
        name.extend_from_slice(&hex(&tag[..TAG_LEN]));
        name
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out
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
        assert_eq!(
            std::str::from_utf8(&n).unwrap(),
            "boxsock/1000/0d832f63a3efbbce6fb9faaad6bc89e3"
        );
        // The precomputed deriver gives the same answer, repeatedly.
        let d = Deriver::new(&[7; SECRET_LEN], 1000);
        assert_eq!(d.derive("abc", "agent.sock"), n);
        assert_eq!(d.derive("abc", "agent.sock"), n);
        assert_ne!(d.derive("abc", "ready.sock"), n);
        // No epoch: the v1 name, so boxes started before rotation existed stay reachable.
        assert_eq!(d.derive_in("abc", None, "agent.sock"), n);
    }

    #[test]
    fn known_answer_pins_the_epoch_derivation() {
        // Python: hmac.new(bytes([7]*32), b"boxsock-abstract-v2\x001000\x00abc\x00"
        //   + b"01"*16 + b"\x00agent.sock\x00", "sha256").hexdigest()[:32]
        let d = Deriver::new(&[7; SECRET_LEN], 1000);
        let n = d.derive_in("abc", Some(&[1; EPOCH_LEN]), "agent.sock");
        assert_eq!(
            std::str::from_utf8(&n).unwrap(),
            "boxsock/1000/2de81d47b76703caae8e09915ca167cb"
        );
        assert_eq!(n.len(), derive(&[7; SECRET_LEN], 1000, "abc", "agent.sock").len());
        // Another epoch, another name; the v1 name differs from both.
        let other = d.derive_in("abc", Some(&[2; EPOCH_LEN]), "agent.sock");
        assert_ne!(other, n);
        assert_ne!(d.derive("abc", "agent.sock"), n);
    }
}
