//! The store's config deserialiser: a row's `config` column (`BoxConfig` as JSON) on
//! arbitrary bytes.
//!
//! `serde_json` on `BoxConfig` never panics; an accepted config re-serialises to JSON
//! that decodes to the same value; a rejected one gives a message. Then the same text is
//! stored as a real row beside a good one and the store lists both: the fuzzed row
//! loads exactly when the deserialiser accepts it (with the same config), otherwise it
//! is reported bad under its id with a "config JSON" reason, and the good row always
//! loads: one bad row never bricks a home.
#![no_main]

use std::sync::OnceLock;

use boxsock_runtime::store::{BoxConfig, Store};
use libfuzzer_sys::fuzz_target;

const GOOD: &str = r#"{"strategy":"short-symlink","backend":"host","network":true,"env":[["K","V"]],"ready_socket_path":"/legacy"}"#;

fn store() -> &'static Store {
    // An in-memory SQLite database: the same schema and decoding as a file, and nothing
    // is left behind when libFuzzer exits without running destructors.
    static S: OnceLock<Store> = OnceLock::new();
    S.get_or_init(|| Store::open(":memory:").expect("open in-memory store"))
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<BoxConfig>(data);
    match &parsed {
        Ok(cfg) => {
            let again = serde_json::to_vec(cfg).expect("a config serialises");
            assert_eq!(&serde_json::from_slice::<BoxConfig>(&again).expect("re-serialised config decodes"), cfg);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains('\0') {
        return; // SQL text cannot carry NUL; the JSON check above covered it.
    }
    let s = store();
    s.execute_raw(&format!(
        "DELETE FROM boxes;
         INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms)
         VALUES ('fuzzbox', NULL, 'created', {}, 1, 1), ('goodbox', NULL, 'created', {}, 2, 2);",
        sql_quote(text),
        sql_quote(GOOD)
    ))
    .expect("insert raw rows");
    let listing = s.list().expect("list never fails on a bad row");
    assert!(listing.boxes.iter().any(|b| b.id.as_str() == "goodbox"), "the good row did not load");
    let fuzzed = listing.boxes.iter().find(|b| b.id.as_str() == "fuzzbox");
    match (&parsed, fuzzed) {
        (Ok(cfg), Some(rec)) => assert_eq!(&rec.config, cfg),
        (Err(_), None) => {
            let bad = listing.bad.iter().find(|b| b.id == "fuzzbox").expect("bad row is reported under its id");
            assert!(bad.error.contains("config JSON"), "{}", bad.error);
        }
        (p, f) => panic!("deserialiser says {p:?} but the store loaded {f:?}"),
    }
});
