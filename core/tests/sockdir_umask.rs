//! Socket files bound through a [`SocketDir`] are 0600 whatever the umask.
//!
//! A test binary of its own with a single test: the umask is process-wide, and a test
//! that changes it must not run beside others (they would create files and directories
//! under `umask 000` meanwhile).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use boxsock_core::peer::PeerPolicy;
use boxsock_core::{DirExpectation, SocketDir};

#[test]
fn socket_files_are_0600_whatever_the_umask() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let dir = SocketDir::open(root.path(), DirExpectation { owner: me, identity: None }).unwrap();
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let l = dir.bind_stream("s.sock", PeerPolicy::unchecked()).unwrap();
    let d = dir.bind_datagram("d.sock").unwrap();
    for n in ["s.sock", "d.sock"] {
        let m = std::fs::symlink_metadata(root.path().join(n)).unwrap().mode() & 0o7777;
        assert_eq!(m, 0o600, "{n} has mode {m:04o}");
    }
    drop((l, d));
}
