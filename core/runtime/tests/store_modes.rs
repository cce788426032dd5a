//! The store's files are 0600 whatever the umask (issue 10: they were 0644, and a box's
//! `-e DB_PASSWORD=…` could be read back from the WAL by any user).
//!
//! A test binary of its own with a single test: the umask is process-wide.

use std::os::unix::fs::PermissionsExt;

use boxsock_core::id::BoxId;
use boxsock_runtime::store::{BoxConfig, Store};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode()
        & 0o777
}

#[test]
fn store_wal_and_shm_are_0600_under_umask_000_and_old_ones_are_tightened() {
    let d = tempfile::tempdir().unwrap();
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let p = d.path().join("boxsock.db");
    let s = Store::open(&p).unwrap();
    let cfg = BoxConfig {
        strategy: "short-symlink".into(),
        backend: "host".into(),
        network: false,
        env: vec![("DB_PASSWORD".into(), "hunter2".into())],
        settings: Default::default(),
        process: Default::default(),
    };
    s.insert(&Store::new_record(BoxId::generate(), None, cfg)).unwrap();
    for f in ["boxsock.db", "boxsock.db-wal", "boxsock.db-shm"] {
        assert_eq!(mode(&d.path().join(f)), 0o600, "{f} under umask 000");
    }
    drop(s);
    // Files left 0644 by an older boxsock are tightened at the next open.
    for f in ["boxsock.db", "boxsock.db-wal", "boxsock.db-shm"] {
        std::fs::set_permissions(d.path().join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = Store::open(&p).unwrap();
    assert_eq!(s.list().unwrap().boxes.len(), 1);
    for f in ["boxsock.db", "boxsock.db-wal", "boxsock.db-shm"] {
        assert_eq!(mode(&d.path().join(f)), 0o600, "{f} after reopening");
    }
    nix::sys::stat::umask(old);
}
