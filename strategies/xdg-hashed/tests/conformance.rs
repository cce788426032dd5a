//! The conformance kit on `xdg-hashed`, once with the root this machine gives it
//! (`$XDG_RUNTIME_DIR/boxsock`, or the fallback under the kit's base directory), and once
//! with an `$XDG_RUNTIME_DIR`-style root (a private directory) forced.

use std::sync::Arc;

use boxsock_xdg_hashed::{Root, XdgHashed};

boxsock_conformance::conformance_tests!(xdg_hashed_kit, |c| {
    // The kit gives each check its own base directory; use the fallback root inside it, so
    // checks never share a root whatever XDG_RUNTIME_DIR says.
    let root = Root::choose(None, c);
    Ok(Arc::new(XdgHashed::with_root(c, root)?))
});

/// Every check with an XDG-style root: `<base>/run/boxsock`, where `<base>/run` is a
/// private (0700) directory of the owner, as `$XDG_RUNTIME_DIR` is.
#[test]
fn kit_with_a_private_runtime_dir_root() {
    let report = boxsock_conformance::run_all(|c| {
        let run = c.base_dir.join("run");
        match std::fs::create_dir(&run) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(boxsock_core::BindingError::io("create", run, e)),
        }
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| boxsock_core::BindingError::io("chmod", &run, e))?;
        Ok(Arc::new(XdgHashed::with_root(c, Root::Xdg { path: run.join("boxsock") })?))
    });
    assert!(report.failures().is_empty(), "{:#?}", report.failures());
    assert!(report.passed().len() > 20, "too few checks ran: {:?}", report.skipped());
}
