//! `catalogue::validate_file_name` and `binding::socket_path` on arbitrary strings.
//!
//! Never panics; both agree; an accepted name is one plain component of at most
//! `MAX_FILE_NAME_LEN` bytes and its socket path is a direct child of the directory it
//! was joined onto; a rejected name gives a bounded error that says what is wrong.
#![no_main]

use std::path::{Component, Path};

use boxsock_core::binding::socket_path;
use boxsock_core::catalogue::{MAX_FILE_NAME_LEN, validate_file_name};
use boxsock_core::error::BindingError;
use libfuzzer_sys::fuzz_target;

const DIRS: &[&str] = &["/tmp/boxsock-0/abc", "rel/sockets", "", "/", "/h/./boxes/../boxes/x/sockets/"];

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let valid = validate_file_name(&name);
    for dir in DIRS {
        let dir = Path::new(dir);
        match (socket_path(dir, &name), &valid) {
            (Ok(p), Ok(())) => {
                assert_eq!(p.parent(), Some(dir), "{}", p.display());
                assert_eq!(p.file_name().and_then(|n| n.to_str()), Some(&*name));
            }
            (Err(BindingError::Invalid { what, reason }), Err(msg)) => {
                assert_eq!(reason, msg.to_string());
                assert!(what.contains("socket file name"));
            }
            (got, want) => panic!("socket_path {got:?} but validate_file_name {want:?}"),
        }
    }
    match valid {
        Ok(()) => {
            assert!(!name.is_empty() && name.len() <= MAX_FILE_NAME_LEN);
            let comps: Vec<Component<'_>> = Path::new(&*name).components().collect();
            assert_eq!(comps, [Component::Normal(std::ffi::OsStr::new(&*name))], "{name:?}");
            assert!(!name.starts_with('.'));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("socket file name"), "{msg}");
            // Bounded however long the input: the name is quoted truncated.
            assert!(msg.len() <= 600, "error of {} bytes", msg.len());
        }
    }
});
