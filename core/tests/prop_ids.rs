//! Property tests for box ids and the paths built from them: arbitrary strings and bytes
//! (NUL, `/`, `..`, unicode, whitespace, very long) never panic; an accepted id is one
//! safe path component; a rejected one gives an error that quotes the (truncated)
//! input and a reason that is true of it; for homes of arbitrary bytes every
//! `BoxLayout` path starts with the home.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use boxsock_core::id::IdErrorReason;
use boxsock_core::{BoxId, BoxLayout};
use proptest::prelude::*;

/// Pieces that break naive path handling.
const HOSTILE: &[&str] = &[
    "/", "..", ".", "\0", " ", "\t", "\n", "é", "日本", "\u{202e}", "\u{85}", "\u{a0}", "a", "Z",
    "9", "-", "_", ":", "*", "\\", "%2f", "~",
];

/// Arbitrary strings, weighted towards the shapes that matter.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        "[A-Za-z0-9._-]{0,40}",
        proptest::collection::vec(proptest::sample::select(HOSTILE), 0..12)
            .prop_map(|v| v.concat()),
        "[a-z]{30,5000}",
        ".{1000,10000}",
    ]
}

/// The rule, written independently of the implementation: 1..=32 bytes of
/// `[A-Za-z0-9._-]`, not starting with `.`.
fn oracle(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= BoxId::MAX_LEN
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A reason is only ever given when it is true of the input.
fn reason_holds(s: &str, reason: IdErrorReason) -> bool {
    match reason {
        IdErrorReason::Empty => s.is_empty(),
        IdErrorReason::TooLong => s.len() > BoxId::MAX_LEN,
        IdErrorReason::LeadingDot => s.starts_with('.'),
        IdErrorReason::Slash => s.contains('/'),
        IdErrorReason::Nul => s.contains('\0'),
        IdErrorReason::Whitespace => s.chars().any(char::is_whitespace),
        IdErrorReason::NonAscii => !s.is_ascii(),
        IdErrorReason::BadChar => {
            s.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        }
    }
}

fn valid_id() -> impl Strategy<Value = BoxId> {
    "[A-Za-z0-9_-][A-Za-z0-9._-]{0,31}"
        .prop_map(|s| BoxId::parse(&s).expect("generated id is valid"))
}

const HOME_PIECES: &[&[u8]] = &[b"/", b"..", b".", b"//", b"h", b"\xff", b" "];

fn arbitrary_home() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(proptest::sample::select(HOME_PIECES), 0..20)
            .prop_map(|v| v.concat()),
    ]
}

proptest! {
    #[test]
    fn ids_are_accepted_exactly_by_the_rule(s in hostile_string()) {
        let got = BoxId::parse(&s);
        prop_assert_eq!(got.is_ok(), oracle(&s), "{:?} -> {:?}", s, got);
        match got {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), s.as_str());
                let comps: Vec<Component<'_>> = Path::new(id.as_str()).components().collect();
                prop_assert_eq!(comps, vec![Component::Normal(OsStr::new(id.as_str()))]);
                let home = Path::new("/srv/home");
                let joined = home.join(id.as_str());
                prop_assert_eq!(joined.parent(), Some(home));
            }
            Err(e) => {
                let prefix: String = s.chars().take(80).collect();
                prop_assert_eq!(&e.input, &prefix);
                let msg = e.to_string();
                prop_assert!(msg.contains(&format!("{:?}", prefix)), "{}", msg);
                prop_assert!(msg.contains(&e.reason.to_string()), "{}", msg);
                prop_assert!(reason_holds(&s, e.reason), "reason {:?} is not true of {:?}", e.reason, s);
                prop_assert!(msg.len() < 80 * 12 + 200, "message of {} bytes", msg.len());
            }
        }
    }

    #[test]
    fn from_bytes_agrees_with_parse_and_bounds_its_error(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..5000),
        hostile_string().prop_map(String::into_bytes),
    ]) {
        let got = BoxId::from_bytes(&bytes);
        match std::str::from_utf8(&bytes) {
            Ok(s) => prop_assert_eq!(got, BoxId::parse(s)),
            Err(_) => {
                let e = got.expect_err("non-UTF-8 is never an id");
                prop_assert_eq!(e.reason, IdErrorReason::NonAscii);
                prop_assert!(e.input.chars().count() <= 80);
                prop_assert!(String::from_utf8_lossy(&bytes).starts_with(&e.input));
            }
        }
    }

    #[test]
    fn every_layout_path_starts_with_any_home(home in arbitrary_home(), id in valid_id()) {
        let home = OsStr::from_bytes(&home);
        let layout = BoxLayout::new(home);
        let boxes = layout.boxes_dir();
        let dir = layout.box_dir(&id);
        let inside = [layout.sockets_dir(&id), layout.logs_dir(&id), layout.log_file(&id), layout.rootfs_dir(&id)];
        for p in [layout.store_path(), layout.lock_path(), boxes.clone(), dir.clone()].iter().chain(&inside) {
            // Both as path components and as raw bytes.
            prop_assert!(p.starts_with(layout.home()), "{:?} not under {:?}", p, home);
            prop_assert!(p.as_os_str().as_bytes().starts_with(home.as_bytes()), "{:?} not under {:?}", p, home);
        }
        prop_assert_eq!(dir.parent(), Some(boxes.as_path()));
        prop_assert_eq!(dir.file_name(), Some(OsStr::new(id.as_str())));
        for p in &inside {
            let rest = p.strip_prefix(&dir).expect("box path under the box dir");
            prop_assert!(rest.components().all(|c| matches!(c, Component::Normal(_))), "{:?}", p);
        }
    }
}
