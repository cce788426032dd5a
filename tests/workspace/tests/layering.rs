//! Which crate may depend on which (docs/ARCHITECTURE.md, "Crate graph").
//!
//! The in-box agent and the libkrun shim run in every box: they must link neither SQLite
//! nor the runtime. Strategies and backends see only `boxsock-core`. Checked on cargo's
//! own resolution of the normal (non-dev) dependency graph, so a new `use` of the runtime
//! from one of them fails here, not in a review.

use std::process::Command;

/// The normal dependencies of `package` (`cargo tree -e normal`), one crate name a line.
fn normal_deps(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let deps: Vec<String> = text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    assert!(deps.iter().any(|d| d == package), "cargo tree did not list {package} itself: {text}");
    deps
}

fn assert_lacks(package: &str, forbidden: &[&str]) {
    let deps = normal_deps(package);
    for f in forbidden {
        assert!(!deps.iter().any(|d| d == f), "{package} depends on {f} (it must not); its graph: {deps:?}");
    }
}

#[test]
fn agent_and_shim_link_neither_sqlite_nor_the_runtime() {
    // The shim is a binary of boxsock-libkrun: its graph is the package's.
    for package in ["boxsock-agent", "boxsock-libkrun"] {
        assert_lacks(package, &["rusqlite", "libsqlite3-sys", "boxsock-runtime", "boxsock"]);
    }
}

#[test]
fn strategies_and_backends_see_only_the_core() {
    let mut packages = plugin_packages();
    for builtin in ["boxsock-short-symlink", "boxsock-direct", "boxsock-abstract", "boxsock-host", "boxsock-libkrun"] {
        assert!(packages.iter().any(|p| p == builtin), "{builtin} not found under strategies/ or backends/: {packages:?}");
    }
    packages.push("boxsock-core".into());
    for package in &packages {
        assert_lacks(package, &["boxsock-runtime", "rusqlite", "boxsock"]);
    }
}

/// Every package under `strategies/` and `backends/` (the workspace globs), so a new
/// one is checked with no edit here.
fn plugin_packages() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for parent in ["strategies", "backends"] {
        for entry in std::fs::read_dir(root.join(parent)).expect("list crates") {
            let Ok(text) = std::fs::read_to_string(entry.expect("entry").path().join("Cargo.toml")) else { continue };
            if let Some(name) = text.lines().find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"'))) {
                out.push(name.to_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_runtime_names_no_concrete_strategy_or_backend() {
    // Every strategy and backend package (the agent included), found by directory.
    let plugins = plugin_packages();
    assert!(plugins.iter().any(|p| p == "boxsock-agent") && plugins.len() >= 6, "{plugins:?}");
    let forbidden: Vec<&str> = plugins.iter().map(String::as_str).collect();
    assert_lacks("boxsock-runtime", &forbidden);
    // And it does sit on SQLite: the check above is not vacuous.
    assert!(normal_deps("boxsock-runtime").iter().any(|d| d == "rusqlite"));
}
