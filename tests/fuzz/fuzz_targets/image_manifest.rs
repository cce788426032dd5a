//! The image store's manifest parser (`boxsock_image::manifest`) on arbitrary bytes,
//! with each declared media type a registry or layout could give.
//!
//! Never a panic; an error has a bounded message; an accepted manifest's descriptors
//! either give a digest (one safe path component: 64 lower-case hex) or an error; an
//! accepted index either yields one of its own entries for the host platform or an error
//! naming a bounded list of platforms.
#![no_main]

use boxsock_image::manifest::{self, Document, Platform};
use libfuzzer_sys::fuzz_target;

const BOUND: usize = 8192;

fn digest_ok(d: &boxsock_image::Result<boxsock_image::Digest>) {
    match d {
        Ok(d) => {
            assert_eq!(d.hex().len(), 64);
            assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        Err(e) => assert!(e.to_string().len() < BOUND),
    }
}

fuzz_target!(|data: &[u8]| {
    let (declared, body) = match data.split_first() {
        Some((k, rest)) => {
            let types = manifest::MANIFEST_TYPES;
            let d = match *k as usize % (types.len() + 2) {
                i if i < types.len() => Some(types[i]),
                i if i == types.len() => Some("application/json"),
                _ => None,
            };
            (d, rest)
        }
        None => (None, data),
    };
    match manifest::parse_document(body, declared) {
        Ok(Document::Manifest(m)) => {
            digest_ok(&manifest::descriptor_digest(m.config()));
            for l in m.layers() {
                digest_ok(&manifest::descriptor_digest(l));
                if let Err(e) = manifest::check_layer_type(l.media_type().as_ref()) {
                    assert!(e.to_string().len() < BOUND);
                }
            }
        }
        Ok(Document::Index(i)) => match manifest::select_platform(&i, &Platform::host()) {
            Ok(d) => assert!(i.manifests().iter().any(|m| std::ptr::eq(m, d))),
            Err(e) => assert!(e.to_string().len() < BOUND, "unbounded: {}", e.to_string().len()),
        },
        Err(e) => assert!(e.to_string().len() < BOUND),
    }
});
