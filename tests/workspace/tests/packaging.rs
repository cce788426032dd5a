//! Crates that can be published, and what a user gets from `cargo install` (issue 12,
//! points 6 and 7). Real cargo on the real workspace, offline (the registry index the
//! test build already fetched is enough): `cargo package`, `cargo tree`, `cargo check`
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

/// Every workspace crate packages (`cargo package --no-verify`): versions on path
/// dependencies, licence, description, no placeholder repository.
#[test]
fn every_crate_packages_offline() {
    let Some(mut c) = cargo() else { return };
    let out = tempfile::tempdir().unwrap();
    ok(c.args(["package", "--no-verify", "--workspace", "--offline", "--allow-dirty", "--target-dir"]).arg(out.path()));
    let crates: Vec<String> = std::fs::read_dir(out.path().join("package"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".crate"))
        .collect();
    for name in ["boxsock-core", "boxsock-runtime", "boxsock-short-symlink", "boxsock-direct", "boxsock-abstract", "boxsock-agent", "boxsock-host", "boxsock-libkrun", "boxsock-conformance", "boxsock"] {
        assert!(crates.contains(&format!("{name}-0.1.0.crate")), "{name} not packaged: {crates:?}");
    }
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("example.invalid"), "a placeholder repository is back in Cargo.toml");
}

/// What `cargo install --path cli` (and any embedder) builds: `boxsock` without the
/// `test-support` scaffolding (crash hook, raw SQL, `cargo build` runner).
#[test]
fn release_boxsock_has_no_test_support() {
    let Some(mut c) = cargo() else { return };
    let tree = ok(c.args(["tree", "-p", "boxsock", "-e", "normal,build,features", "--prefix", "none", "--offline"]));
    assert!(tree.contains("boxsock-runtime feature \"default\""), "unexpected tree:\n{tree}");
    let scaffolding: Vec<&str> = tree.lines().filter(|l| l.contains("feature \"test-support\"")).collect();
    assert!(scaffolding.is_empty(), "test-support reaches the installed boxsock: {scaffolding:?}");
}

/// `--no-default-features` drops the `libkrun` backend: no VMM in the graph, and the
/// facade still builds (its default backend is then `host`).
#[test]
fn facade_without_libkrun_builds_and_links_no_vmm() {
    let Some(mut c) = cargo() else { return };
    let tree = ok(c.args(["tree", "-p", "boxsock", "-e", "normal,build", "--prefix", "none", "--no-default-features", "--offline"]));
    for vmm in ["boxsock-libkrun ", "libkrun ", "libkrun-sys "] {
        assert!(!tree.lines().any(|l| l.starts_with(vmm)), "{vmm}is in the graph without the libkrun feature:\n{tree}");
    }
    let mut c = cargo().unwrap();
    ok(c.args(["check", "-p", "boxsock", "--no-default-features", "--offline", "--target-dir"]).arg(target_dir()));
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
    assert!(err.contains("boxsock-agent") && err.contains(&bin.join("boxsock-agent").display().to_string()), "{err}");
    assert!(err.contains("cargo install"), "the fix is not named: {err}");

    // With the agent installed beside it: a working box.
    install(&mut cargo().unwrap(), "backends/agent");
    let id = ok(boxsock(&bin.join("boxsock")).arg("create")).trim().to_owned();
    assert_eq!(ok(boxsock(&bin.join("boxsock")).args(["start", &id])).trim(), id);
    assert_eq!(ok(boxsock(&bin.join("boxsock")).args(["exec", &id, "--", "echo", "installed"])), "installed\n");
    ok(boxsock(&bin.join("boxsock")).args(["rm", "-f", &id]));
}
