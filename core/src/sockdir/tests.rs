use std::os::unix::fs::PermissionsExt;

use super::*;

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn expect(identity: Option<DirIdentity>) -> DirExpectation {
    DirExpectation { owner: me(), identity }
}

#[test]
fn binds_and_connects_through_the_descriptor_not_the_name() {
    let root = private_dir();
    let real = root.path().join("real");
    let decoy = root.path().join("decoy");
    for d in [&real, &decoy] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let want = DirIdentity::of_path(&real).unwrap();
    let dir = SocketDir::open(&link, expect(Some(want))).unwrap();
    // The name now leads elsewhere: the held directory does not follow it.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&decoy, &link).unwrap();
    let l = dir.bind_stream("a.sock", PeerPolicy::unchecked()).unwrap();
    assert!(real.join("a.sock").exists(), "bound through the descriptor");
    assert!(!decoy.join("a.sock").exists(), "bound through the re-resolved name");
    assert_eq!(
        l.address(),
        &SocketAddress::Path(link.join("a.sock")),
        "listeners show the stable name"
    );
    let _c = dir
        .connect_stream(
            "a.sock",
            &PeerPolicy::allow_uids([me()]).with_pid(std::process::id() as i32),
        )
        .unwrap();
    let (_s, cred) = l.accept_once().unwrap();
    assert_eq!(cred, None);
}

#[test]
fn refuses_wrong_identity_group_writable_and_non_directories() {
    let root = private_dir();
    let a = root.path().join("a");
    let b = root.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let want_b = DirIdentity::of_path(&b).unwrap();
    let err = SocketDir::open(&a, expect(Some(want_b))).unwrap_err();
    assert!(
        matches!(&err, BindingError::Insecure { reason, .. } if reason.contains("not the box's socket directory")),
        "{err}"
    );
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o770)).unwrap();
    let err = SocketDir::open(&a, expect(None)).unwrap_err();
    assert!(
        matches!(&err, BindingError::Insecure { reason, .. } if reason.contains("0770")),
        "{err}"
    );
    let f = root.path().join("f");
    std::fs::write(&f, b"").unwrap();
    let err = SocketDir::open(&f, expect(None)).unwrap_err();
    assert!(matches!(err, BindingError::Insecure { .. }), "{err}");
    let other = DirExpectation { owner: me().wrapping_add(1), identity: None };
    let err = SocketDir::open(&b, other).unwrap_err();
    assert!(
        matches!(&err, BindingError::Insecure { reason, .. } if reason.contains("owned by uid")),
        "{err}"
    );
}

#[test]
fn connect_rejects_a_listener_of_another_process() {
    let root = private_dir();
    let dir = SocketDir::open(root.path(), expect(None)).unwrap();
    let _l = dir.bind_stream("s.sock", PeerPolicy::unchecked()).unwrap();
    let wrong = (std::process::id() as i32).wrapping_add(1);
    let policy = PeerPolicy::allow_uids([me()]).with_pid(wrong);
    let err = dir.connect_stream("s.sock", &policy).unwrap_err();
    match &err {
        BindingError::PeerRejected { pid, expected_pid, address, .. } => {
            assert_eq!(*pid, std::process::id() as i32);
            assert_eq!(*expected_pid, Some(wrong));
            assert!(address.ends_with("/s.sock"), "{address}");
        }
        other => panic!("expected PeerRejected, got {other}"),
    }
    assert!(
        err.to_string().contains(&format!("it is not the box's process: expected pid {wrong}")),
        "{err}"
    );
    assert_eq!(policy.rejected(), 1);
}

#[test]
fn stale_socket_is_replaced_and_child_addresses_fit() {
    let root = private_dir();
    let dir = SocketDir::open(root.path(), expect(None)).unwrap();
    drop(dir.bind_stream("s.sock", PeerPolicy::unchecked()).unwrap());
    let _again = dir.bind_stream("s.sock", PeerPolicy::unchecked()).unwrap();
    let err = dir.bind_stream("s.sock", PeerPolicy::unchecked()).unwrap_err();
    assert!(matches!(err, BindingError::Io { op: "bind", .. }), "{err}");
    #[cfg(target_os = "linux")]
    assert_eq!(
        dir.address_at("agent.sock", 3).unwrap(),
        SocketAddress::Path("/proc/self/fd/3/agent.sock".into())
    );
    assert!(matches!(dir.address_at("../x", 3), Err(BindingError::Invalid { .. })));
    dir.remove_socket("s.sock").unwrap();
    assert!(!root.path().join("s.sock").exists());
}

#[test]
fn datagram_bound_at_a_redirected_name_is_refused() {
    let root = private_dir();
    let real = root.path().join("real");
    let decoy = root.path().join("decoy");
    for d in [&real, &decoy] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let dir = SocketDir::open(&link, expect(Some(DirIdentity::of_path(&real).unwrap()))).unwrap();
    // A stale datagram socket file in the verified directory (its socket is gone).
    drop(UnixDatagram::bind(real.join("stale.sock")).unwrap());
    // Intact: bound at the displayed name, proved through the descriptor.
    let ok = dir.bind_datagram("ok.sock").unwrap();
    assert_eq!(ok.local_addr().unwrap().as_pathname(), Some(link.join("ok.sock").as_path()));
    // Redirected between the verification and the bind: refused.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&decoy, &link).unwrap();
    let err = dir.bind_datagram("d.sock").unwrap_err();
    assert!(
        matches!(&err, BindingError::Insecure { reason, .. } if reason.contains("not the one in the verified socket directory")),
        "{err}"
    );
    // Redirected while a stale file of the same name sits in the verified directory: the
    // mode fix-up finds a file, but the token sent through the descriptor does not arrive.
    let err = dir.bind_datagram("stale.sock").unwrap_err();
    assert!(
        matches!(&err, BindingError::Insecure { reason, .. } if reason.contains("probe")),
        "{err}"
    );
}

#[test]
fn recheck_says_whether_the_name_it_was_opened_through_still_leads_to_it() {
    let root = private_dir();
    let real = root.path().join("real");
    let decoy = root.path().join("decoy");
    for d in [&real, &decoy] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::os::unix::fs::symlink(&real, root.path().join("link")).unwrap();
    let base = nix::fcntl::open(root.path(), dir_flags(), Mode::empty()).unwrap();
    let want = DirIdentity::of_path(&real).unwrap();
    let shown = root.path().join("link");
    let at = SocketDir::open_at(base.as_fd(), "link", &shown, expect(Some(want))).unwrap();
    let by_path = SocketDir::open(&shown, expect(Some(want))).unwrap();
    at.recheck().unwrap();
    by_path.recheck().unwrap();
    // Swapped: refused, naming both identities; the held descriptor is not followed.
    let tmp = root.path().join("link.tmp");
    std::os::unix::fs::symlink(&decoy, &tmp).unwrap();
    std::fs::rename(&tmp, &shown).unwrap();
    for d in [&at, &by_path] {
        match d.recheck() {
            Err(BindingError::Insecure { path, reason }) => {
                assert_eq!(path, shown);
                assert!(reason.contains(&format!("inode {}", want.ino)), "{reason}");
            }
            other => panic!("recheck after the link was swapped: {other:?}"),
        }
    }
    // Gone (a cleaner): ENOENT.
    std::fs::remove_file(&shown).unwrap();
    for d in [&at, &by_path] {
        match d.recheck() {
            Err(BindingError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT))
            }
            other => panic!("recheck after the link was removed: {other:?}"),
        }
    }
    // Back: accepted again.
    std::os::unix::fs::symlink(&real, &shown).unwrap();
    at.recheck().unwrap();
    by_path.recheck().unwrap();
}
