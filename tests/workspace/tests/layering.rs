//! Which crate may depend on which (docs/ARCHITECTURE.md, "Crate graph").
//!
//! One test per rule there. The in-box agent and the libkrun shim run in every box: they
//! must link neither SQLite nor the runtime. Backends see only `boxsock-core`, strategies
//! the core and other strategies; the core sees no other boxsock crate, the runtime only
//! the core and the image store (without its registry client), the image store only the
//! core; the facade depends on every strategy and
//! backend. Checked on cargo's own resolution of the normal (non-dev) dependency graph,
//! so a new dependency of one of them fails here, not in a review.

use std::process::Command;

/// The normal dependencies of `package` (`cargo tree -e normal`), one crate name a line.
fn normal_deps(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let deps: Vec<String> =
        text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    assert!(deps.iter().any(|d| d == package), "cargo tree did not list {package} itself: {text}");
    deps
}

fn assert_lacks(package: &str, forbidden: &[&str]) {
    let deps = normal_deps(package);
    for f in forbidden {
        assert!(
            !deps.iter().any(|d| d == f),
            "{package} depends on {f} (it must not); its graph: {deps:?}"
        );
    }
}

/// The workspace crates (`boxsock`, `boxsock-*`) in `package`'s normal graph, itself
/// left out.
fn boxsock_deps(package: &str) -> Vec<String> {
    let mut deps: Vec<String> = normal_deps(package)
        .into_iter()
        .filter(|d| d != package && (d == "boxsock" || d.starts_with("boxsock-")))
        .collect();
    deps.sort();
    deps.dedup();
    deps
}

/// "`boxsock-core` depends on no other boxsock crate."
#[test]
fn the_core_depends_on_no_other_boxsock_crate() {
    assert_eq!(boxsock_deps("boxsock-core"), Vec::<String>::new());
}

/// "boxsock-agent, the libkrun shim ──> boxsock-core only (no SQLite, no runtime)".
#[test]
fn agent_and_shim_link_neither_sqlite_nor_the_runtime() {
    // The shim is a binary of boxsock-libkrun: its graph is the package's.
    for package in ["boxsock-agent", "boxsock-libkrun"] {
        assert_lacks(package, &["rusqlite", "libsqlite3-sys", "boxsock-runtime", "boxsock"]);
    }
    assert_eq!(
        boxsock_deps("boxsock-agent"),
        ["boxsock-core"],
        "the agent depends on the core only"
    );
    assert_eq!(boxsock_deps("boxsock-libkrun"), BACKEND_LAYER, "libkrun: the core layer only");
}

/// The crates a backend may use: the core and the core's shared helpers for backends
/// (`boxsock-elf`: the files a program needs, for backends that copy the agent).
const BACKEND_LAYER: [&str; 2] = ["boxsock-core", "boxsock-elf"];

/// "`boxsock-elf` ──> boxsock-core only": a helper of the core layer.
#[test]
fn the_elf_helper_sees_only_the_core() {
    assert_eq!(boxsock_deps("boxsock-elf"), ["boxsock-core"]);
}

/// "Strategies and backends depend on `boxsock-core` only (a strategy may build on
/// another strategy crate)": a backend's boxsock crates are exactly the core; a
/// strategy's are the core plus, at most, other strategies. Every package under
/// `strategies/` and `backends/`, found by directory.
#[test]
fn strategies_and_backends_see_only_the_core() {
    let strategies = packages_under("strategies");
    let backends = packages_under("backends");
    for builtin in
        ["boxsock-short-symlink", "boxsock-direct", "boxsock-abstract", "boxsock-xdg-hashed"]
    {
        assert!(
            strategies.iter().any(|p| p == builtin),
            "{builtin} not found under strategies/: {strategies:?}"
        );
    }
    for builtin in ["boxsock-agent", "boxsock-host", "boxsock-libkrun"] {
        assert!(
            backends.iter().any(|p| p == builtin),
            "{builtin} not found under backends/: {backends:?}"
        );
    }
    for package in &backends {
        let deps = boxsock_deps(package);
        assert!(
            deps.iter().any(|d| d == "boxsock-core")
                && deps.iter().all(|d| BACKEND_LAYER.contains(&d.as_str())),
            "backend {package} must depend on the core layer ({BACKEND_LAYER:?}) only; it depends on {deps:?}"
        );
        assert_lacks(package, &["rusqlite"]);
    }
    for package in &strategies {
        let deps = boxsock_deps(package);
        assert!(
            deps.iter().any(|d| d == "boxsock-core"),
            "strategy {package} does not build on the core: {deps:?}"
        );
        let others: Vec<&String> =
            deps.iter().filter(|d| *d != "boxsock-core" && !strategies.contains(d)).collect();
        assert!(
            others.is_empty(),
            "strategy {package} may depend on the core and other strategies only; it depends on {others:?}"
        );
        assert_lacks(package, &["rusqlite"]);
    }
}

/// The `[package] name` of every crate directly under `parent/` (a workspace glob), so
/// a new one is checked with no edit here.
fn packages_under(parent: &str) -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join(parent)).expect("list crates") {
        let Ok(text) = std::fs::read_to_string(entry.expect("entry").path().join("Cargo.toml"))
        else {
            continue;
        };
        if let Some(name) =
            text.lines().find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    out
}

/// "The runtime depends on no strategy or backend": its boxsock crates are the core and
/// the image store (whose records it keeps, decision 0019), and the image store comes
/// without its network stack (pulling is the caller's choice).
#[test]
fn the_runtime_names_no_concrete_strategy_or_backend() {
    assert_eq!(boxsock_deps("boxsock-runtime"), ["boxsock-core", "boxsock-image"]);
    assert_lacks("boxsock-runtime", &["oci-client", "reqwest", "rustls"]);
    // And it does sit on SQLite: the graph is the real one, not an empty answer.
    assert!(normal_deps("boxsock-runtime").iter().any(|d| d == "rusqlite"));
}

/// "`boxsock-image` ──> boxsock-core only": the image store is a library the runtime
/// and the CLI build on; it links neither the runtime nor SQLite.
#[test]
fn the_image_store_sees_only_the_core() {
    assert_eq!(boxsock_deps("boxsock-image"), ["boxsock-core"]);
    assert_lacks("boxsock-image", &["rusqlite", "libsqlite3-sys"]);
}

/// "The facade depends on every strategy and backend it offers": with every feature
/// on, every package under `strategies/` and `backends/` is a direct dependency of
/// `boxsock` (which `cli/src/linked.rs` links; `registry.rs` checks the registrations).
#[test]
fn the_facade_depends_on_every_strategy_and_backend() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal", "--depth", "1", "--all-features"])
        .args(["--prefix", "none", "--format", "{p}", "-p", "boxsock"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p boxsock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let direct: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    for package in packages_under("strategies").iter().chain(&packages_under("backends")) {
        // The agent is a binary the backends start, not a library the facade links.
        if package == "boxsock-agent" {
            continue;
        }
        assert!(
            direct.contains(&package.as_str()),
            "the facade does not depend on {package}: {direct:?}"
        );
    }
}

/// "boxsock-oci ──> boxsock (the facade) only": a front end like the CLI, it reaches
/// strategies, backends and the runtime through the facade and adds no boxsock crate of
/// its own.
#[test]
fn the_oci_runtime_is_a_front_end_over_the_facade() {
    let mut expected = boxsock_deps("boxsock");
    expected.push("boxsock".into());
    expected.sort();
    assert_eq!(boxsock_deps("boxsock-oci"), expected);
}
