//! Every test skip goes through `boxsock_test_support::skip` (a failure under `CI=true`,
//! counted in `.ci/run`'s last line): no test prints its own "skipped" and returns.
//! Scans every Rust file of the workspace for a print of "skipped"/"SKIPPED".

use std::path::{Path, PathBuf};

/// Files that print their own skips, and why that is right for them.
const ALLOWED: &[(&str, &str)] = &[
    ("tests/support/src/lib.rs", "the mechanism itself"),
    ("tests/vm/", "the real-VM tier's own rule: BOXSOCK_VM_REQUIRED=1 (decision 0005)"),
    (
        "tests/conformance/src/lib.rs",
        "published kit: prints and returns Outcome::Skipped; the sweep routes it (kit_skips)",
    ),
    (
        "tests/backend-conformance/src/lib.rs",
        "published kit: prints and returns Outcome::Skipped; the sweep routes it (kit_skips)",
    ),
    (
        "benches/src/lib.rs",
        "a strategy that cannot serve a bench's home (direct when deep): not a machine skip",
    ),
    (
        "tests/conformance/tests/kit_can_fail.rs",
        "root-only detection checks; converted with the kits' rework (issue 17, item 5)",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if matches!(name.to_str(), Some("target" | ".git" | "fuzz")) {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_test_prints_its_own_skip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} Rust files under {}", files.len(), root.display());
    let mut bare = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        if ALLOWED.iter().any(|(a, _)| rel.starts_with(a))
            || rel == "tests/workspace/tests/skips.rs"
        {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let prints = ["println!(", "writeln!("].iter().any(|m| line.contains(m));
            if prints && (line.contains("\"skipped") || line.contains("\"SKIPPED")) {
                bare.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "skips that bypass boxsock_test_support::skip (a silent pass under CI):\n{}",
        bare.join("\n")
    );
}
