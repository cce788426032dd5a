//! Crates that can be published, and what a user gets from `cargo install`. Real cargo
//! on the real workspace, offline (the registry index the test build already fetched is
//! enough): `cargo package` (which compiles each package), `cargo tree`, `cargo check`
//! and `cargo install` into a temporary root, then the installed `boxsock` drives a
//! `host` box. Skipped, with the reason, only when cargo itself cannot be run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `target/`: this test runs from `target/<profile>/deps/`. Reused by the cargo
/// commands below so they do not rebuild the world.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// `cargo` (the one running this test), or `None` with the reason printed.
fn cargo() -> Option<Command> {
    let bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if Command::new(&bin).arg("--version").output().is_err() {
        let by = "the tests run under `cargo test`, which sets CARGO";
        let need = boxsock_test_support::Need::Setup { what: "cargo", provided_by: by };
        boxsock_test_support::skip(need, format!("cannot run cargo ({})", bin.to_string_lossy()));
        return None;
    }
    let mut c = Command::new(bin);
    c.current_dir(workspace()).env_remove("RUSTFLAGS").env_remove("CARGO_TARGET_DIR");
    Some(c)
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().expect("command runs");
    assert!(o.status.success(), "{cmd:?}: {}\n{}", o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The crates published to crates.io: the libraries, the kits a third-party strategy
/// or backend tests itself with, the agent, the example strategy (an optional
/// dependency of the facade, so it must be published with it), the facade and the OCI
/// runtime (`cargo install boxsock-oci`, as engines need it).
const PUBLISHED: [&str; 16] = [
    "boxsock",
    "boxsock-abstract",
    "boxsock-agent",
    "boxsock-backend-conformance",
    "boxsock-conformance",
    "boxsock-core",
    "boxsock-direct",
    "boxsock-elf",
    "boxsock-host",
    "boxsock-image",
    "boxsock-libkrun",
    "boxsock-oci",
    "boxsock-runtime",
    "boxsock-sandbox",
    "boxsock-short-symlink",
    "boxsock-xdg-hashed",
];

/// This workspace's own tests and benches: `publish = false`.
const NOT_PUBLISHED: [&str; 3] = ["boxsock-benches", "boxsock-tests", "boxsock-vm-tests"];

/// Every workspace package and whether it may be published (`publish` is not `false`),
/// from `cargo metadata`.
fn workspace_packages() -> Vec<(String, bool)> {
    let mut c = cargo().expect("cargo runs");
    let json = ok(c.args(["metadata", "--no-deps", "--format-version", "1", "--offline"]));
    let meta: serde_json::Value = serde_json::from_str(&json).expect("cargo metadata is JSON");
    let mut out: Vec<(String, bool)> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_owned();
            // `publish = false` is `[]`; unset is `null`.
            let publishable = !p["publish"].as_array().is_some_and(Vec::is_empty);
            (name, publishable)
        })
        .collect();
    out.sort();
    out
}

/// Exactly the published crates are publishable: a test-only crate without
/// `publish = false`, or a library that lost its way to crates.io, fails here.
#[test]
fn only_the_published_crates_are_publishable() {
    if cargo().is_none() {
        return;
    }
    let packages = workspace_packages();
    let publishable: Vec<&str> =
        packages.iter().filter(|(_, p)| *p).map(|(n, _)| n.as_str()).collect();
    assert_eq!(publishable, PUBLISHED, "publishable workspace crates; all: {packages:?}");
    for name in NOT_PUBLISHED {
        assert!(packages.iter().any(|(n, p)| n == name && !p), "{name}: {packages:?}");
    }
}

/// Every publishable crate packages *and compiles from its package* (`cargo package`
/// verifies: each `.crate` is unpacked and built against the other packaged crates, not
/// the workspace's sources), offline: versions on path dependencies, licence,
/// description, every file the build needs inside the package, no placeholder
/// repository. The verification builds share this test build's target directory, so
/// a third-party dependency compiles once per feature set (the VMM included). Like
/// `cargo install` below, that relinks `target/debug/boxsock`, `boxsock-agent` and
/// `boxsock-krun-shim` as the packages build them (default features: no crash hook,
/// no example strategy); any later cargo build of them, `dev::built_binaries`
/// included, even a fresh one, links the test build's back.
///
/// The verification builds the packages from `<target-dir>/package/tmp-registry`, which
/// cargo unpacks into `$CARGO_HOME/registry/src/-<hash of that path>/` and *reuses* for
/// as long as that directory exists: every version here is 0.1.0, so a cargo home that
/// outlives a checkout at the same path (CI's does) verifies this commit's crates
/// against an older commit's sources. The project's CI failed that way (boxsock-abstract
/// against a boxsock-core without `atomic`). So the target directory is named through a
/// fresh symbolic link: a new registry path, a fresh unpack, the same build artifacts;
/// the unpacked sources are removed afterwards.
#[test]
fn every_publishable_crate_packages_and_compiles_offline() {
    let Some(mut c) = cargo() else { return };
    let packages = workspace_packages();
    let publishable: Vec<&str> =
        packages.iter().filter(|(_, p)| *p).map(|(n, _)| n.as_str()).collect();
    let alias = tempfile::tempdir().unwrap();
    let target = alias.path().join("target");
    std::os::unix::fs::symlink(target_dir(), &target).unwrap();
    // -v: the compiler lines name the directory the packages were unpacked into.
    c.args(["package", "--offline", "--allow-dirty", "-v", "--target-dir"]).arg(&target);
    for p in &publishable {
        c.args(["-p", p]);
    }
    let started = std::time::Instant::now();
    let o = c.output().expect("cargo package runs");
    let log = text(&o);
    let unpacked = Unpacked::named_in(&log);
    assert!(o.status.success(), "{c:?}: {}\n{log}", o.status);
    // Every package compiled from the fresh unpack, not from one a run before left.
    assert_eq!(unpacked.0.len(), 1, "unpacked into none or several directories:\n{log}");
    // What the verification cost, for CI's time budget (shown with --nocapture).
    let compiled = log.lines().filter(|l| l.trim_start().starts_with("Compiling ")).count();
    eprintln!(
        "cargo package: {} crates packaged and verified in {:.0} s ({compiled} units compiled)",
        publishable.len(),
        started.elapsed().as_secs_f64()
    );
    for name in &publishable {
        assert!(
            log.contains(&format!("Verifying {name} v0.1.0")),
            "{name} was packaged but not compiled from its package:\n{log}"
        );
        let krate = target_dir().join("package").join(format!("{name}-0.1.0.crate"));
        assert!(krate.is_file(), "{name} not packaged: no {}", krate.display());
    }
    for name in NOT_PUBLISHED {
        assert!(!log.contains(&format!("Packaging {name} ")), "{name} was packaged:\n{log}");
    }
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("example.invalid"),
        "a placeholder repository is back in Cargo.toml"
    );
}

/// What users install leaves the example strategy out: it is an optional dependency of
/// the facade, off by default (the tests turn it on through dev-dependencies).
#[test]
fn the_installed_facade_does_not_link_the_example_strategy() {
    let Some(mut c) = cargo() else { return };
    let args = ["tree", "-p", "boxsock", "-e", "normal", "--prefix", "none", "--offline"];
    let tree = ok(c.args(args));
    let has = |tree: &str, crate_name: &str| {
        tree.lines().any(|l| l.starts_with(&format!("{crate_name} ")))
    };
    assert!(has(&tree, "boxsock-short-symlink"), "unexpected tree:\n{tree}");
    assert!(!has(&tree, "boxsock-xdg-hashed"), "the example is a default dependency:\n{tree}");
    let mut c = cargo().unwrap();
    let tree = ok(c.args(args).args(["--features", "boxsock-xdg-hashed"]));
    assert!(has(&tree, "boxsock-xdg-hashed"), "the feature does not add it:\n{tree}");
}

/// What `cargo install --path cli` (and any embedder) builds: `boxsock` without the
/// `test-support` scaffolding (crash hook, raw SQL, `cargo build` runner).
#[test]
fn release_boxsock_has_no_test_support() {
    let Some(mut c) = cargo() else { return };
    let tree = ok(c.args([
        "tree",
        "-p",
        "boxsock",
        "-e",
        "normal,build,features",
        "--prefix",
        "none",
        "--offline",
    ]));
    assert!(tree.contains("boxsock-runtime feature \"default\""), "unexpected tree:\n{tree}");
    let scaffolding: Vec<&str> =
        tree.lines().filter(|l| l.contains("feature \"test-support\"")).collect();
    assert!(scaffolding.is_empty(), "test-support reaches the installed boxsock: {scaffolding:?}");
}

/// `--no-default-features` drops the `libkrun` backend: no VMM in the graph, and the
/// facade still builds (its default backend is then `host`).
#[test]
fn facade_without_libkrun_builds_and_links_no_vmm() {
    let Some(mut c) = cargo() else { return };
    let tree = ok(c.args([
        "tree",
        "-p",
        "boxsock",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--no-default-features",
        "--offline",
    ]));
    for vmm in ["boxsock-libkrun ", "libkrun ", "libkrun-sys "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(vmm)),
            "{vmm}is in the graph without the libkrun feature:\n{tree}"
        );
    }
    let mut c = cargo().unwrap();
    ok(c.args(["check", "-p", "boxsock", "--no-default-features", "--offline", "--target-dir"])
        .arg(target_dir()));
}

/// Reuses this build's target directory (a fresh one would rebuild everything, VMM
/// included); that relinks `target/debug/boxsock` without `test-support`, which
/// `dev::built_binaries` relinks back before anything drives the crash hook.
///
/// `cargo install --path cli` plus the agent it names gives a working `boxsock`: from the
/// install root alone (a bare `PATH`, no helper directory), a `host` box is created,
/// started and runs a command. With `boxsock` installed alone, `start` names the missing
/// helper, where it looked and the command that installs it.
#[test]
fn cargo_install_gives_a_working_boxsock_with_its_helpers() {
    let Some(mut c) = cargo() else { return };
    let root = tempfile::tempdir().unwrap();
    let install = |c: &mut Command, path: &str| {
        ok(c.args(["install", "--offline", "--debug", "--no-track", "--path", path, "--root"])
            .arg(root.path())
            .env("CARGO_TARGET_DIR", target_dir()));
    };
    install(&mut c, "cli");
    let bin = root.path().join("bin");
    assert!(bin.join("boxsock").is_file());

    let home = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let boxsock = |exe: &Path| {
        let mut c = Command::new(exe);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .args(["--home"])
            .arg(home.path().join("h"))
            .args(["--link-base"])
            .arg(links.path())
            .args(["--backend", "host"]);
        c
    };

    // Alone: the agent is missing, and the error says what, where, and how (at
    // create, which checks that the backend can run, or at start).
    let o = boxsock(&bin.join("boxsock")).arg("create").output().unwrap();
    let err = if o.status.success() {
        let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        let o = boxsock(&bin.join("boxsock")).args(["start", &id]).output().unwrap();
        assert!(!o.status.success(), "started without an agent: {}", text(&o));
        text(&o)
    } else {
        text(&o)
    };
    assert!(
        err.contains("boxsock-agent")
            && err.contains(&bin.join("boxsock-agent").display().to_string()),
        "{err}"
    );
    assert!(err.contains("cargo install"), "the fix is not named: {err}");

    // With the agent installed beside it: a working box.
    install(&mut cargo().unwrap(), "backends/agent");
    let id = ok(boxsock(&bin.join("boxsock")).arg("create")).trim().to_owned();
    assert_eq!(ok(boxsock(&bin.join("boxsock")).args(["start", &id])).trim(), id);
    assert_eq!(
        ok(boxsock(&bin.join("boxsock")).args(["exec", &id, "--", "echo", "installed"])),
        "installed\n"
    );
    ok(boxsock(&bin.join("boxsock")).args(["rm", "-f", &id]));
}

/// The directories under `$CARGO_HOME/registry/src/` that a verbose `cargo package` log
/// names as holding this workspace's unpacked packages; removed on drop. Only a
/// directory that holds nothing but `boxsock*` packages is removed: the fresh registry
/// path makes it this run's own (see the test above).
struct Unpacked(Vec<PathBuf>);

impl Unpacked {
    fn named_in(log: &str) -> Unpacked {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for word in log.split([' ', '`', '\'', '"']) {
            let Some(at) = word.find("/registry/src/-") else { continue };
            let rest = &word[at + "/registry/src/".len()..];
            let Some(slash) = rest.find('/') else { continue };
            if !rest[slash + 1..].starts_with("boxsock") {
                continue;
            }
            let dir = PathBuf::from(&word[..at + "/registry/src/".len() + slash]);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Unpacked(dirs)
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        for dir in &self.0 {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let ours =
                entries.flatten().all(|e| e.file_name().to_string_lossy().starts_with("boxsock"));
            if ours {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
