//! The workspace is formatted by `rustfmt.toml`: `cargo fmt --all --check` runs inside
//! the README's test command, so CI and a developer run one command and get one verdict.

use std::process::Command;

#[test]
fn the_workspace_is_rustfmt_clean() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["fmt", "--all", "--check"])
        .current_dir(root)
        .output()
        .expect("run cargo fmt (rustfmt is part of the toolchain CI uses)");
    let diff = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the workspace is not formatted: run `cargo fmt --all` ({} lines of diff)\n{}\n{err}",
        diff.lines().count(),
        diff.chars().take(4000).collect::<String>()
    );
}
