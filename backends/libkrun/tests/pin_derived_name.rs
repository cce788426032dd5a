//! Pins libkrun's derived unixgram name: reads the `krun-devices` source actually
//! resolved in Cargo.lock (through `cargo metadata`) and fails if the rule that
//! `KRUN_NET_DERIVED_WORST_CASE` was derived from changes.

use std::path::PathBuf;
use std::process::Command;

use boxsock_libkrun::derived::{
    KRUN_NET_DERIVED_WORST_CASE, LIBKRUN_PINNED_VERSION, PID_MAX_LIMIT,
};
use boxsock_test_support::{Need, skip};

const REDERIVE: &str = "re-derive boxsock_libkrun::derived::KRUN_NET_DERIVED_WORST_CASE (and the net socket's DerivedName in backends/libkrun/src/backend.rs) from the new rule";

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for offline in [true, false] {
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1", "--manifest-path", manifest]);
        if offline {
            cmd.arg("--offline");
        }
        let out = cmd.output().expect("run cargo metadata");
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
        }
    }
    panic!("cargo metadata failed");
}

fn package(meta: &serde_json::Value, name: &str) -> (String, PathBuf) {
    let pkgs = meta["packages"].as_array().unwrap();
    let found: Vec<_> = pkgs.iter().filter(|p| p["name"] == name).collect();
    assert_eq!(found.len(), 1, "expected exactly one {name} in the resolved graph; {REDERIVE}");
    let p = found[0];
    let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
    (p["version"].as_str().unwrap().to_owned(), manifest.parent().unwrap().to_path_buf())
}

#[test]
fn libkrun_derived_unixgram_name_rule_is_unchanged() {
    let meta = metadata();
    let (krun_version, _) = package(&meta, "libkrun");
    let (_, devices_dir) = package(&meta, "krun-devices");
    let file = devices_dir.join("src/virtio/net/unixgram.rs");
    let src = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("cannot read {} ({e}): the unixgram backend moved; {REDERIVE}", file.display())
    });

    for (needle, what) in [
        ("\"krun-net-{}-{}.sock\"", "the name format"),
        ("process::id()", "the pid as the first number"),
        ("NET_SOCK_COUNTER.fetch_add", "the counter as the second number"),
        ("static NET_SOCK_COUNTER: AtomicU32", "the counter being a u32 (worst case u32::MAX)"),
        (
            "std::env::temp_dir().join(&socket_name)",
            "the directory being TMPDIR (the shim points it at the binding dir)",
        ),
    ] {
        assert!(
            src.contains(needle),
            "libkrun {krun_version}: {} no longer contains {needle:?} ({what}); {REDERIVE}",
            file.display()
        );
    }
    assert!(
        !src.contains("-krun.sock"),
        "libkrun {krun_version} appends -krun.sock again (the <= 1.18 rule): model it as DerivedName::Suffix; {REDERIVE}"
    );
    assert_eq!(
        KRUN_NET_DERIVED_WORST_CASE,
        format!("krun-net-{PID_MAX_LIMIT}-{}.sock", u32::MAX),
        "{REDERIVE}"
    );
    if krun_version != LIBKRUN_PINNED_VERSION {
        eprintln!(
            "note: libkrun is {krun_version}, the rule was pinned at {LIBKRUN_PINNED_VERSION}; the rule still matches"
        );
    }
}

#[test]
fn pid_max_limit_bounds_this_kernel() {
    // The first number is a pid: the kernel's pid_max never exceeds PID_MAX_LIMIT.
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/pid_max") {
        let max: u32 = s.trim().parse().unwrap();
        assert!(max <= PID_MAX_LIMIT, "pid_max {max} > {PID_MAX_LIMIT}; {REDERIVE}");
    } else {
        skip(Need::Kernel("/proc/sys/kernel/pid_max"), "cannot read /proc/sys/kernel/pid_max");
    }
}
