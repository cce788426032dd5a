//! Property tests for the store's config rows, on a real SQLite file in a fresh temp
//! home: arbitrary configs and names round-trip through insert → get / resolve; any
//! text in a row's config column either loads (exactly when `BoxConfig` deserialises
//! it) or is reported as a bad row under its id, and never stops the good rows loading.

use boxsock_core::BoxId;
use boxsock_runtime::store::{BoxConfig, Store};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,20}",
        Just(String::new()),
        Just("'; DROP TABLE boxes; --".to_owned())
    ]
}

fn config() -> impl Strategy<Value = BoxConfig> {
    (text(), text(), any::<bool>(), proptest::collection::vec((text(), text()), 0..4)).prop_map(
        |(strategy, backend, network, env)| BoxConfig {
            strategy,
            backend,
            network,
            env,
            settings: Default::default(),
            process: Default::default(),
        },
    )
}

/// Config-column text: valid configs, legacy rows with extra fields, near misses, noise.
fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        config().prop_map(|c| serde_json::to_string(&c).unwrap()),
        (config(), text()).prop_map(|(c, path)| {
            let mut v = serde_json::to_value(&c).unwrap();
            v["ready_socket_path"] = serde_json::Value::String(path);
            v.to_string()
        }),
        config().prop_map(|c| {
            let s = serde_json::to_string(&c).unwrap();
            s.chars().take(s.chars().count() / 2).collect::<String>()
        }),
        Just(r#"{"strategy":1,"backend":"host"}"#.to_owned()),
        any::<String>(),
    ]
}

fn fresh() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().expect("temp home");
    let s = Store::open(d.path().join("boxsock.db")).expect("open store");
    (d, s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn configs_and_names_round_trip(cfg in config(), name in proptest::option::of(text())) {
        let (_home, store) = fresh();
        let id = BoxId::generate();
        let rec = Store::new_record(id.clone(), name.clone(), cfg);
        store.insert(&rec).expect("insert");
        prop_assert_eq!(store.get(&id).expect("get"), Some(rec.clone()));
        if let Some(n) = &name {
            let (found, decoded) = store.resolve(n).expect("resolve").expect("found by name");
            prop_assert_eq!(found, id.as_str());
            prop_assert_eq!(decoded.expect("decodes"), rec);
        }
    }

    #[test]
    fn any_config_text_loads_or_is_reported(text in config_text()) {
        prop_assume!(!text.contains('\0')); // SQL text literals cannot carry NUL
        let (_home, store) = fresh();
        let good = Store::new_record(BoxId::generate(), None, BoxConfig {
            strategy: "direct".into(), backend: "host".into(), network: false, env: vec![], settings: Default::default(),
            process: Default::default(),
        });
        store.insert(&good).expect("insert good row");
        store
            .execute_raw(&format!(
                "INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms) VALUES ('fuzzbox', NULL, 'created', '{}', 0, 0);",
                text.replace('\'', "''")
            ))
            .expect("insert raw row");
        let listing = store.list().expect("list never fails on a bad row");
        prop_assert!(listing.boxes.contains(&good), "the good row did not load");
        let loaded = listing.boxes.iter().find(|b| b.id.as_str() == "fuzzbox");
        match (serde_json::from_str::<BoxConfig>(&text), loaded) {
            (Ok(cfg), Some(rec)) => prop_assert_eq!(&rec.config, &cfg),
            (Err(_), None) => {
                let bad = listing.bad.iter().find(|b| b.id == "fuzzbox").expect("reported under its id");
                prop_assert!(bad.error.contains("config JSON"), "{}", bad.error);
                let by_id = store.resolve("fuzzbox").expect("resolve").expect("row exists");
                prop_assert!(by_id.1.is_err());
            }
            (p, l) => prop_assert!(false, "deserialiser {:?} but store loaded {:?}", p, l),
        }
    }
}
