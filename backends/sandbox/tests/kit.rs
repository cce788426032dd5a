//! The backend kit on `sandbox`, as root (CI and the build machines run as root; the
//! backend is unavailable to other users until its rootless mode exists, and the kit
//! then skips every check with that reason).

use boxsock_backend_conformance::Target;
use boxsock_core::backend::BackendConfig;

fn target() -> Target {
    let helper_dir = boxsock_host::dev::built_binaries(&["boxsock-agent"]);
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
