//! The built-in strategies are all linked and registered, each exactly once, through the
//! facade's one registry (`boxsock::builtin_strategies()`).

use boxsock_core::registry::RegistryError;

const BUILT_IN: [&str; 3] = ["abstract", "direct", "short-symlink"];

#[test]
fn built_in_strategies_are_registered_once() {
    let registry = boxsock::builtin_strategies();
    let names = registry.names();
    for name in BUILT_IN {
        assert!(
            names.contains(&name),
            "strategy {name:?} is not registered; registered: {names:?}"
        );
        let reg = registry.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reg.name, name);
        assert!(!reg.summary.is_empty(), "{name} has no summary");
    }
    let all: Vec<&str> = registry.iter().map(|r| r.name).collect();
    for name in &all {
        assert_eq!(
            all.iter().filter(|n| *n == name).count(),
            1,
            "{name} is registered more than once"
        );
    }
    registry.check_unique().expect("names are unique");
}

#[test]
fn unknown_strategy_is_a_clear_error() {
    let registry = boxsock::builtin_strategies();
    match registry.get("no-such-strategy") {
        Err(RegistryError::Unknown { name, known, .. }) => {
            assert_eq!(name, "no-such-strategy");
            assert!(known.contains(&"direct"), "{known:?}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}

/// Every crate under `strategies/` or `backends/` that registers something (it depends on
/// `inventory`) is a dependency of the facade, so the facade's `build.rs` links it and
/// it is in `builtin_strategies()` / `builtin_backends()`. Forgetting the one line in
/// `cli/Cargo.toml` fails here, not silently in the conformance run.
///
/// A dependency may be optional (the example `boxsock-xdg-hashed`, off by default): then
/// this test build must still link it (`LINKED_DEPENDENCIES`; the tests turn its feature
/// on through a dev-dependency), so the conformance run and the hostile suite cover it.
#[test]
fn every_registering_crate_is_a_dependency_of_the_facade() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let facade = std::fs::read_to_string(root.join("cli/Cargo.toml")).expect("read cli/Cargo.toml");
    let facade_deps = section_keys(&facade, "[dependencies]");
    let mut plugins = Vec::new();
    for parent in ["strategies", "backends"] {
        for entry in std::fs::read_dir(root.join(parent)).expect("list crates") {
            let manifest = entry.expect("entry").path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            if !section_keys(&text, "[dependencies]").iter().any(|k| k == "inventory") {
                continue;
            }
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
                .unwrap_or_else(|| panic!("{} has no package name", manifest.display()))
                .to_owned();
            assert!(
                facade_deps.contains(&name),
                "{name} ({}) registers with inventory but is not a dependency of the facade (cli/Cargo.toml): add `{name}.workspace = true` or a path dependency there; facade dependencies: {facade_deps:?}",
                manifest.display()
            );
            assert!(
                boxsock::LINKED_DEPENDENCIES.contains(&name.as_str()),
                "{name} is a facade dependency but this test build does not link it (an \
                 optional dependency whose feature no test turns on): its registrations \
                 are not tested; linked: {:?}",
                boxsock::LINKED_DEPENDENCIES
            );
            plugins.push(name);
        }
    }
    // Not vacuous: the built-ins were found, and the example strategy is one of them.
    let expected = [
        "boxsock-short-symlink",
        "boxsock-direct",
        "boxsock-abstract",
        "boxsock-host",
        "boxsock-xdg-hashed",
    ];
    for builtin in expected {
        assert!(plugins.iter().any(|p| p == builtin), "{builtin} not found among {plugins:?}");
    }
}

/// The example strategy is linked in the test build (the tests turn its feature on)
/// and registered under its name; what users install leaves it out (checked on
/// `cargo tree` in `packaging.rs`).
#[test]
fn the_example_strategy_is_registered_in_the_test_build() {
    let linked = boxsock::LINKED_DEPENDENCIES;
    assert!(linked.contains(&"boxsock-xdg-hashed"), "{linked:?}");
    let registry = boxsock::builtin_strategies();
    assert!(registry.names().contains(&"xdg-hashed"), "{:?}", registry.names());
}

/// The keys of a manifest section (`name.workspace = true`, `name = …` → `name`), up to
/// the next section header.
fn section_keys(manifest: &str, header: &str) -> Vec<String> {
    manifest
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let key = l.split(['=', '.']).next()?.trim().trim_matches('"');
            (!key.is_empty()).then(|| key.to_owned())
        })
        .collect()
}
