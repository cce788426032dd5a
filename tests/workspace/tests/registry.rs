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
/// `inventory`) is a dependency of the facade and has its line in `cli/src/linked.rs`,
/// so it is linked and in `builtin_strategies()` / `builtin_backends()`. Forgetting
/// either line fails here, naming the crate and the line to add, not silently in the
/// conformance run.
///
/// A line may be under a feature (the example `boxsock-xdg-hashed`, off by default):
/// then this test build must turn that feature on (the facade's defaults, or the
/// `boxsock` dev-dependency of this package), so the conformance run and the hostile
/// suite cover the crate.
#[test]
fn every_registering_crate_is_a_dependency_of_the_facade_and_linked() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    };
    let facade = read("cli/Cargo.toml");
    let facade_deps = section_keys(&facade, "[dependencies]");
    let linked = linked_crates(&read("cli/src/linked.rs"));
    let mut features_on = array_items(&facade, "default");
    features_on.extend(array_items(&read("tests/workspace/Cargo.toml"), "boxsock"));
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
                "{name} ({}) registers with inventory but is not a dependency of the facade \
                 (cli/Cargo.toml): add `{name}.workspace = true` or a path dependency there; \
                 facade dependencies: {facade_deps:?}",
                manifest.display()
            );
            let ident = name.replace('-', "_");
            let Some((_, feature)) = linked.iter().find(|(c, _)| *c == ident) else {
                panic!(
                    "{name} is a facade dependency but cli/src/linked.rs does not name it, so \
                     it is not linked and its registrations vanish: add `use {ident} as _;` \
                     there; named: {linked:?}"
                );
            };
            if let Some(feature) = feature {
                assert!(
                    features_on.contains(feature),
                    "{name} is linked only with the facade's feature {feature:?}, which this \
                     test build does not turn on (its registrations are not tested): add it \
                     to the `boxsock` dev-dependency features in tests/workspace/Cargo.toml \
                     (and cli/Cargo.toml, benches/Cargo.toml); on: {features_on:?}"
                );
            }
            plugins.push(name);
        }
    }
    // Not vacuous: the built-ins were found, and the example strategy is one of them.
    let expected = [
        "boxsock-short-symlink",
        "boxsock-direct",
        "boxsock-abstract",
        "boxsock-host",
        "boxsock-sandbox",
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
    let registry = boxsock::builtin_strategies();
    assert!(registry.names().contains(&"xdg-hashed"), "{:?}", registry.names());
}

/// The parser of `linked.rs` reads what a reader reads: a commented-out line names
/// nothing, and a feature applies to the next `use` line only.
#[test]
fn linked_crates_reads_lines_features_and_skips_comments() {
    let text = "//! doc naming `use boxsock_doc as _;`\n\
                use boxsock_a as _;\n\
                // use boxsock_commented as _;\n\
                #[cfg(feature = \"x-y\")]\n\
                use boxsock_b as _;\n\
                use boxsock_c as _;\n";
    assert_eq!(
        linked_crates(text),
        [
            ("boxsock_a".to_owned(), None),
            ("boxsock_b".to_owned(), Some("x-y".to_owned())),
            ("boxsock_c".to_owned(), None),
        ]
    );
}

/// The crates `linked.rs` names (`use <crate> as _;`, one a line), each with the feature
/// of a `#[cfg(feature = "…")]` line right above it.
fn linked_crates(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut feature = None;
    for line in text.lines().map(str::trim) {
        let gate = line.strip_prefix("#[cfg(feature = \"").and_then(|r| r.strip_suffix("\")]"));
        if let Some(f) = gate {
            feature = Some(f.to_owned());
        } else if let Some(c) = line.strip_prefix("use ").and_then(|r| r.strip_suffix(" as _;")) {
            out.push((c.to_owned(), feature.take()));
        } else if !line.starts_with("//") && !line.is_empty() {
            feature = None;
        }
    }
    out
}

/// The strings of the array `key = [...]` or the `features = [...]` of the inline
/// table `key = { … }` in a manifest (one line), e.g. `default = ["libkrun"]`.
fn array_items(manifest: &str, key: &str) -> Vec<String> {
    let is_key = |l: &&str| l.split('=').next().is_some_and(|k| k.trim() == key);
    let Some(line) = manifest.lines().find(is_key) else { return Vec::new() };
    let value = line.split_once('=').map_or("", |(_, v)| v);
    let list = match value.find("features") {
        Some(at) => &value[at..],
        None => value,
    };
    let Some(inner) = list.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(i, _)| i)
    else {
        return Vec::new();
    };
    let items = inner.split(',').map(|s| s.trim().trim_matches('"').to_owned());
    items.filter(|s| !s.is_empty()).collect()
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
