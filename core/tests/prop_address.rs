//! Property tests for socket address URIs: `SocketAddress::from_uri` never panics,
//! accepts exactly `unix://` + an absolute path and `abstract:` + a non-empty name, and
//! round-trips with `to_uri` both ways.

use std::path::PathBuf;

use boxsock_core::SocketAddress;
use proptest::prelude::*;

fn uri_like() -> impl Strategy<Value = String> {
    let prefix = proptest::sample::select(
        &["unix://", "unix:/", "unix:", "abstract:", "abstract", "UNIX://", "", "tcp://"][..],
    );
    prop_oneof![
        any::<String>(),
        (prefix.clone(), any::<String>()).prop_map(|(p, r)| format!("{p}{r}")),
        (prefix, "[/a-z.\0 ]{0,20}").prop_map(|(p, r)| format!("{p}{r}")),
    ]
}

proptest! {
    #[test]
    fn from_uri_accepts_exactly_the_two_forms(uri in uri_like()) {
        let want = uri.strip_prefix("unix://").is_some_and(|r| r.starts_with('/'))
            || uri.strip_prefix("abstract:").is_some_and(|r| !r.is_empty());
        match SocketAddress::from_uri(&uri) {
            Ok(a) => {
                prop_assert!(want, "accepted {:?}", uri);
                prop_assert_eq!(a.to_uri(), uri.clone());
                prop_assert_eq!(SocketAddress::from_uri(&a.to_uri()), Ok(a.clone()));
                let _ = a.to_std(); // may fail (NUL, too long) but never panics
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!want, "rejected {:?}: {}", uri, msg);
                // The input is quoted as `echo` does: whole when short, cut and measured when long.
                prop_assert!(msg.contains(&boxsock_core::echo::echo(&uri).to_string()), "{}", msg);
            }
        }
    }

    #[test]
    fn addresses_round_trip_through_their_uri(rest in any::<String>(), name in ".+") {
        let path = SocketAddress::Path(PathBuf::from(format!("/{rest}")));
        prop_assert_eq!(SocketAddress::from_uri(&path.to_uri()), Ok(path.clone()));
        let abs = SocketAddress::Abstract(name.clone().into_bytes());
        prop_assert_eq!(SocketAddress::from_uri(&abs.to_uri()), Ok(abs.clone()));
        prop_assert_eq!(abs.byte_len(), name.len());
    }
}
