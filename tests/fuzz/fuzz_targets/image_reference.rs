//! Image references (`registry/repo:tag@digest`) on arbitrary text.
//!
//! Never a panic; an error has a bounded message; an accepted reference's name parses
//! again to the same registry, repository and tag, and its repository has no `..`, no
//! empty component and no leading `/`.
#![no_main]

use boxsock_image::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match text.parse::<Reference>() {
        Ok(r) => {
            assert!(!r.repository.split('/').any(|c| c.is_empty() || c == ".." || c == "."));
            if r.tag.is_some() {
                let again: Reference = r.name().parse().expect("a reference's name parses");
                assert_eq!(
                    (&again.registry, &again.repository, &again.tag),
                    (&r.registry, &r.repository, &r.tag)
                );
            }
        }
        Err(e) => assert!(e.to_string().len() < 1024),
    }
});
