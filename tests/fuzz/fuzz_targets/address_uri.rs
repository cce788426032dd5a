//! `SocketAddress::from_uri` on arbitrary strings.
//!
//! Never panics; an accepted URI round-trips exactly through `to_uri` and back; a
//! rejected one gives an error that says which form was expected.
#![no_main]

use boxsock_core::{SocketAddress, UriError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else { return };
    match SocketAddress::from_uri(uri) {
        Ok(a) => {
            assert_eq!(a.to_uri(), uri);
            assert_eq!(SocketAddress::from_uri(&a.to_uri()).as_ref(), Ok(&a));
            match &a {
                SocketAddress::Path(p) => {
                    assert!(p.is_absolute());
                    assert_eq!(a.byte_len(), uri.len() - "unix://".len());
                }
                SocketAddress::Abstract(n) => {
                    assert!(!n.is_empty());
                    assert_eq!(a.byte_len(), uri.len() - "abstract:".len());
                }
            }
            // Converting to a kernel address may fail (too long, NUL) but never panics.
            let _ = a.to_std();
            let _ = a.display_string();
        }
        Err(e) => {
            // The message says which form was expected and quotes the input bounded.
            let msg = e.to_string();
            assert!(
                msg.contains("absolute") || msg.contains("empty abstract name") || msg.contains("expected unix:///path or abstract:name"),
                "{msg}"
            );
            // At most 64 input bytes, each escaped to at most 10 (`\u{10ffff}`).
            assert!(msg.len() <= 64 * 10 + 120, "unbounded echo: {} bytes", msg.len());
            let (UriError::NotAbsolute { uri: got } | UriError::EmptyAbstract { uri: got } | UriError::Scheme { uri: got }) = e else {
                panic!("a new UriError variant: {msg}");
            };
            assert_eq!(got, uri);
        }
    }
});
