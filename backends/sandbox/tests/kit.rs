//! The backend kit on `sandbox`: as root (CI and the build machines run as root), and
//! for a rootless runtime (decision 0026): `sandbox_kit_rootless` runs this binary's
//! `sandbox_kit::` checks again in a child that really drops to uid 65534.

use boxsock_backend_conformance::Target;
use boxsock_core::backend::BackendConfig;

/// Set in the child that plays the user: its helper directory (built by root; the
/// user cannot run cargo on this target directory).
const ROOTLESS_HELPERS: &str = "SANDBOX_KIT_ROOTLESS_HELPERS";

fn target() -> Target {
    let helper_dir = match std::env::var_os(ROOTLESS_HELPERS) {
        Some(dir) => dir.into(),
        None => boxsock_host::dev::built_binaries(&["boxsock-agent"]),
    };
    Target::new(
        &boxsock_sandbox::REGISTRATION,
        BackendConfig { helper_dir: Some(helper_dir), ..Default::default() },
    )
}

boxsock_backend_conformance::backend_conformance_tests!(sandbox_kit, target);

/// With `--network`: pasta is the box's companion, so `companions_reaped` runs too.
fn target_with_network() -> Target {
    let mut t = target();
    t.network = true;
    t
}

boxsock_backend_conformance::backend_conformance_tests!(sandbox_kit_network, target_with_network);

/// The kit without a network, run by uid 65534 (groups, gid and uid dropped by std's
/// `Command`): every check passes; as for root without a network, only
/// `companions_reaped` finds nothing to check. (With `--network` a rootless box needs
/// pasta to open `/dev/net/tun` in the box's user namespace, which this machine's mode
/// 0600 forbids: refused at start, saying so.)
#[test]
fn sandbox_kit_rootless() {
    if std::env::var_os(ROOTLESS_HELPERS).is_some() {
        return; // the child itself
    }
    use std::os::unix::process::CommandExt;
    assert!(nix::unistd::geteuid().is_root(), "CI runs as root; the test plays the user");
    let helpers = boxsock_host::dev::built_binaries(&["boxsock-agent"]);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["sandbox_kit::", "--test-threads=2", "--nocapture"])
        .env(ROOTLESS_HELPERS, helpers)
        .env("HOME", "/tmp")
        .env_remove("XDG_RUNTIME_DIR")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok());
    // As for root without a network: only `companions_reaped` has nothing to check.
    let skipped: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            l.contains("skipped")
                && !l.contains("companions_reaped: the backend launched no companions")
        })
        .collect();
    // A box really launched and stopped (an unavailable backend would make every
    // check skip, which this binary's harness still counts as passed).
    let both = format!("{stdout}{stderr}");
    let ran = both.contains("backend sandbox: box ready in")
        && both.contains("backend sandbox: stop took");
    assert!(
        out.status.success() && passed >= Some(7) && skipped.is_empty() && ran,
        "the kit as uid 65534: {stdout}{stderr}"
    );
    println!("kit as uid 65534: {passed:?} passed");
}
