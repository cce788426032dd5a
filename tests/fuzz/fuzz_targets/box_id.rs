//! `BoxId::parse` / `BoxId::from_bytes` on arbitrary bytes.
//!
//! Never panics; `parse` and `from_bytes` agree; a rejected id gives an error that names
//! the (truncated) input and a reason; every accepted id is exactly the input, joined
//! onto a home it is a direct child of `<home>/boxes`, and every `BoxLayout` path of the
//! box stays under the box directory.
#![no_main]

use std::path::{Component, Path};

use boxsock_core::id::IdError;
use boxsock_core::{BoxId, BoxLayout};
use libfuzzer_sys::fuzz_target;

/// Homes of every shape a user can give: absolute, relative, empty, with `.`/`..`,
/// trailing slashes, spaces and non-UTF-8 bytes.
const HOMES: &[&[u8]] = &[
    b"/home/u/.local/share/boxsock",
    b"rel/home",
    b"",
    b"/",
    b"./h/../h/./",
    b"/a b/\xff\xfe/home//",
];

fn check_error(data: &[u8], e: &IdError) {
    let msg = e.to_string();
    assert!(msg.starts_with("invalid box id "), "{msg}");
    assert!(!e.reason.to_string().is_empty());
    assert!(msg.ends_with(&e.reason.to_string()), "{msg}");
    // The input is quoted, truncated to 80 characters, so an error stays printable.
    assert!(e.input.chars().count() <= 80, "error carries {} chars", e.input.chars().count());
    let lossy = String::from_utf8_lossy(data);
    assert!(lossy.starts_with(&e.input), "error input is not a prefix of the input");
}

fn check_accepted(data: &[u8], id: &BoxId) {
    let s = id.as_str();
    assert_eq!(s.as_bytes(), data);
    assert!(!s.is_empty() && s.len() <= BoxId::MAX_LEN);
    // One plain path component: no separator, no `.`/`..`, not hidden.
    let comps: Vec<Component<'_>> = Path::new(s).components().collect();
    assert_eq!(comps, [Component::Normal(s.as_ref())], "{s:?}");
    assert!(!s.starts_with('.'));
    // Display, FromStr and serde all round-trip.
    let shown = format!("{id}");
    assert_eq!(&BoxId::parse(&shown).unwrap(), id);
    let json = serde_json::to_string(id).unwrap();
    assert_eq!(&serde_json::from_str::<BoxId>(&json).unwrap(), id);

    for home in HOMES {
        use std::os::unix::ffi::OsStrExt;
        let layout = BoxLayout::new(std::ffi::OsStr::from_bytes(home));
        let boxes = layout.boxes_dir();
        let dir = layout.box_dir(id);
        assert!(boxes.starts_with(layout.home()));
        assert_eq!(dir.parent(), Some(boxes.as_path()), "{}", dir.display());
        assert_eq!(dir.file_name().map(|n| n.as_bytes()), Some(data));
        for p in [layout.sockets_dir(id), layout.logs_dir(id), layout.log_file(id), layout.rootfs_dir(id)] {
            let rest = p.strip_prefix(&dir).unwrap_or_else(|_| panic!("{} is outside {}", p.display(), dir.display()));
            assert!(rest.components().all(|c| matches!(c, Component::Normal(_))), "{}", p.display());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let from_bytes = BoxId::from_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(BoxId::parse(s), from_bytes, "parse and from_bytes disagree on {s:?}");
        assert_eq!(s.parse::<BoxId>(), from_bytes);
    }
    match &from_bytes {
        Ok(id) => check_accepted(data, id),
        Err(e) => check_error(data, e),
    }
});
