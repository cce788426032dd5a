//! Property tests for socket file names: `catalogue::validate_file_name` accepts exactly
//! one safe component of at most `MAX_FILE_NAME_LEN` bytes, rejects everything else with
//! a bounded message that quotes the name and says why, and `binding::socket_path`
//! agrees with it and joins accepted names as a direct child of any directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use boxsock_core::binding::socket_path;
use boxsock_core::catalogue::{MAX_FILE_NAME_LEN, validate_file_name};
use boxsock_core::error::BindingError;
use proptest::prelude::*;

const HOSTILE: &[&str] = &[
    "/",
    "..",
    ".",
    "\0",
    " ",
    "\n",
    "é",
    "日本",
    "\u{202e}",
    "a",
    "sock",
    "-",
    "_",
    ":",
    "\\",
    ".sock",
    "-krun.sock",
];

fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,60}",
        "[A-Za-z0-9._-]{0,60}",
        proptest::collection::vec(proptest::sample::select(HOSTILE), 0..12)
            .prop_map(|v| v.concat()),
        "[a-z]{40,5000}",
        ".{1000,10000}",
    ]
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

proptest! {
    #[test]
    fn names_are_accepted_exactly_by_the_rule(name in hostile_name()) {
        let want = !name.is_empty() && name.len() <= MAX_FILE_NAME_LEN && !name.starts_with('.') && name.chars().all(allowed);
        match validate_file_name(&name) {
            Ok(()) => {
                prop_assert!(want, "accepted {:?}", name);
                let comps: Vec<Component<'_>> = Path::new(&name).components().collect();
                prop_assert_eq!(comps, vec![Component::Normal(OsStr::new(&name))]);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!want, "rejected {:?}: {}", name, msg);
                prop_assert!(msg.starts_with("socket file name"), "{}", msg);
                prop_assert!(msg.len() < 400, "message of {} bytes", msg.len());
                if name.is_empty() {
                    prop_assert!(msg.contains("empty"), "{}", msg);
                } else {
                    // The name, or its start, is quoted.
                    let start: String = name.chars().take(MAX_FILE_NAME_LEN).collect();
                    let quoted = format!("{:?}", start);
                    prop_assert!(msg.contains(&quoted[..quoted.len() - 1]), "{} does not quote {:?}", msg, start);
                    let reason_given = if name.len() > MAX_FILE_NAME_LEN {
                        msg.contains(&format!("{} bytes", name.len())) && msg.contains(&MAX_FILE_NAME_LEN.to_string())
                    } else if name.starts_with('.') {
                        msg.contains("starts with '.'")
                    } else {
                        let bad = name.chars().find(|c| !allowed(*c)).expect("some bad char");
                        msg.contains(&format!("contains {:?}", bad))
                    };
                    prop_assert!(reason_given, "{} does not say why", msg);
                }
            }
        }
    }

    #[test]
    fn socket_path_agrees_and_stays_in_its_dir(
        dir in proptest::collection::vec(any::<u8>(), 0..200),
        name in hostile_name(),
    ) {
        let dir = Path::new(OsStr::from_bytes(&dir));
        match (socket_path(dir, &name), validate_file_name(&name)) {
            (Ok(p), Ok(())) => {
                prop_assert_eq!(p.parent(), Some(dir));
                prop_assert_eq!(p.file_name(), Some(OsStr::new(&name)));
                prop_assert!(p.as_os_str().as_bytes().starts_with(dir.as_os_str().as_bytes()));
            }
            (Err(BindingError::Invalid { what, reason }), Err(msg)) => {
                prop_assert_eq!(reason, msg.to_string());
                prop_assert_eq!(what, "socket file name");
            }
            (got, want) => prop_assert!(false, "socket_path {:?} but validate_file_name {:?}", got, want),
        }
    }
}
