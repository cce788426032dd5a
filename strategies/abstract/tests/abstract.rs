//! The `abstract` strategy against the real kernel: names, the secret, round trips,
//! peer-credential rejection in both directions with a real second uid, name reuse, and
//! network-namespace scoping.

#![cfg(target_os = "linux")]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use boxsock_abstract::{Abstract, SECRET_FILE};
use boxsock_core::binding::{CrossUserProtection, PolicyIntent};
use boxsock_core::peer::{self, Listener, PeerPolicy};
use boxsock_core::registry::{Registry, StrategyRegistration};
use boxsock_core::{
    BindingError, BoxId, BoxLayout, PolicyAccess, SocketAddress, SocketBinding, StrategyConfig,
};
use boxsock_test_support::{Need, skip};
use common::*;

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn config(uid: u32) -> StrategyConfig {
    // base_dir is unused by this strategy; point it at nothing shared anyway.
    StrategyConfig {
        uid,
        base_dir: "/nonexistent-boxsock-test".into(),
        ..StrategyConfig::default()
    }
}

fn strategy() -> Abstract {
    Abstract::new(&config(me()))
}

fn id(s: &str) -> BoxId {
    BoxId::parse(s).unwrap()
}

fn name_of(a: &SocketAddress) -> Vec<u8> {
    match a {
        SocketAddress::Abstract(n) => n.clone(),
        other => panic!("not abstract: {other}"),
    }
}

/// A fresh home with box `b`'s `agent.sock` bound through the strategy, and the raw
/// abstract address a forked peer dials (prepared before the fork).
fn bound_agent() -> (tempfile::TempDir, BoxLayout, Abstract, BoxId, Listener, RawAddr) {
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    let l = s.bind_stream(&layout, &b, "agent.sock").unwrap();
    let raw = RawAddr::abstract_name(&name_of(l.address()));
    (h, layout, s, b, l, raw)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn secret_bytes(layout: &BoxLayout) -> Vec<u8> {
    std::fs::read(Abstract::secret_path(layout)).unwrap()
}

#[test]
fn registered_with_the_promised_capabilities_and_policy() {
    let _serial = serial();
    let reg = Registry::<StrategyRegistration>::collected();
    let mut cfg = config(me());
    cfg.allowed_peer_uids = vec![4242, me()];
    let s = reg.build("abstract", &cfg).unwrap();
    assert_eq!(s.name(), "abstract");
    let c = s.capabilities();
    assert!(!c.path_addressable && !c.filesystem_visible);
    assert!(c.peer_credentials && c.netns_scoped && c.home_length_independent);
    assert_eq!(c.cross_user, CrossUserProtection::PeerCredentials);
    assert!(c.supported_here());
    let home = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(home.path());
    let id = BoxId::parse("probe").unwrap();
    let looked = s.inspect_box(&layout, &id).unwrap();
    let p = looked.peer_policy().clone();
    assert!(p.is_checked());
    let mut want = [me(), 4242];
    want.sort();
    assert_eq!(p.allowed_uids().unwrap(), &want[..]);
    assert_eq!(s.binding_dir(), None);
}

#[test]
fn names_are_deterministic_and_differ_across_homes_boxes_sockets_and_uids() {
    let _serial = serial();
    let h1 = tempfile::tempdir().unwrap();
    let h2 = tempfile::tempdir().unwrap();
    let (l1, l2) = (BoxLayout::new(h1.path()), BoxLayout::new(h2.path()));
    let s = strategy();
    let a = s.address(&l1, &id("box1"), "agent.sock").unwrap();
    // Same instance, a fresh instance (re-reads the secret): same name.
    assert_eq!(a, s.address(&l1, &id("box1"), "agent.sock").unwrap());
    assert_eq!(a, strategy().address(&l1, &id("box1"), "agent.sock").unwrap());
    let n = String::from_utf8(name_of(&a)).unwrap();
    let prefix = format!("boxsock/{}/", me());
    assert!(n.starts_with(&prefix), "{n}");
    assert_eq!(n.len(), prefix.len() + 32);

    let other_uid = Abstract::new(&config(me().wrapping_add(1)));
    let all = [
        a.clone(),
        s.address(&l2, &id("box1"), "agent.sock").unwrap(),
        s.address(&l1, &id("box2"), "agent.sock").unwrap(),
        s.address(&l1, &id("box1"), "ready.sock").unwrap(),
        other_uid.address(&l1, &id("box1"), "agent.sock").unwrap(),
    ];
    let tags: HashSet<Vec<u8>> =
        all.iter().map(|a| name_of(a)[name_of(a).len() - 32..].to_vec()).collect();
    assert_eq!(tags.len(), all.len(), "{all:?}");
    // Nothing but the secret appears in a home.
    assert_eq!(entries(h1.path()), [SECRET_FILE]);
}

#[test]
fn deep_home_makes_no_difference() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let mut deep = t.path().to_path_buf();
    for _ in 0..10 {
        deep.push("a-rather-long-directory-name-0123456789");
    }
    std::fs::create_dir_all(&deep).unwrap();
    assert!(deep.as_os_str().len() > 300);
    let layout = BoxLayout::new(&deep);
    let s = strategy();
    let box_id = id("bx");
    s.ensure(&layout, &box_id).unwrap();
    let a = s.address(&layout, &box_id, "net.sock-krun.sock").unwrap();
    assert_eq!(a.byte_len(), format!("boxsock/{}/", me()).len() + 32);
    let l = s.bind_stream(&layout, &box_id, "net.sock-krun.sock").unwrap();
    s.connect_stream(&layout, &box_id, "net.sock-krun.sock").unwrap();
    l.accept_once().unwrap();
}

#[test]
fn bad_input_gets_a_clear_error() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    for bad in ["", "../agent.sock", "a/b", "."] {
        let e = s.address(&layout, &id("b"), bad).unwrap_err();
        assert!(matches!(e, BindingError::Invalid { .. }), "{bad:?}: {e}");
    }
    let missing = BoxLayout::new(h.path().join("no-such-home"));
    let e = s.address(&missing, &id("b"), "agent.sock").unwrap_err();
    match &e {
        BindingError::Io { address: SocketAddress::Path(path), .. } => {
            assert!(path.starts_with(h.path().join("no-such-home")), "{e}")
        }
        other => panic!("wrong variant: {other}"),
    }
    assert!(!h.path().join("no-such-home").exists());
}

#[test]
fn secret_is_created_0600_once_and_kept() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    s.ensure(&layout, &id("b")).unwrap();
    let path = Abstract::secret_path(&layout);
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.uid(), me());
    assert_eq!(m.len(), 32);
    let first = secret_bytes(&layout);
    assert_ne!(first, vec![0u8; 32]);
    s.ensure(&layout, &id("b")).unwrap();
    strategy().ensure(&layout, &id("c")).unwrap();
    assert_eq!(secret_bytes(&layout), first);
    assert_eq!(entries(h.path()), [SECRET_FILE]);
    // Deleted behind our back (a cleaner, a careless rm): ensure writes the same one back,
    // so running boxes keep their names.
    let before = s.address(&layout, &id("b"), "agent.sock").unwrap();
    std::fs::remove_file(&path).unwrap();
    s.ensure(&layout, &id("b")).unwrap();
    assert_eq!(secret_bytes(&layout), first);
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(strategy().address(&layout, &id("b"), "agent.sock").unwrap(), before);
    // A second home gets its own secret.
    let h2 = tempfile::tempdir().unwrap();
    let l2 = BoxLayout::new(h2.path());
    s.ensure(&l2, &id("b")).unwrap();
    assert_ne!(secret_bytes(&l2), first);
}

#[test]
fn concurrent_first_use_yields_one_secret() {
    let _serial = serial();
    for _round in 0..5 {
        let h = tempfile::tempdir().unwrap();
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let barrier = barrier.clone();
                let home = h.path().to_path_buf();
                std::thread::spawn(move || {
                    // A separate instance per thread: no shared cache, the disk decides.
                    let s = strategy();
                    let layout = BoxLayout::new(home);
                    barrier.wait();
                    s.ensure(&layout, &id("b")).unwrap();
                    s.address(&layout, &id("b"), "agent.sock").unwrap()
                })
            })
            .collect();
        let addrs: HashSet<SocketAddress> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(addrs.len(), 1, "threads derived different names: {addrs:?}");
        // One secret, no temporary files left behind.
        assert_eq!(entries(h.path()), [SECRET_FILE]);
        let layout = BoxLayout::new(h.path());
        assert_eq!(
            addrs.into_iter().next().unwrap(),
            strategy().address(&layout, &id("b"), "agent.sock").unwrap()
        );
    }
}

fn assert_insecure(layout: &BoxLayout, what: &str, needle: &str) {
    for r in [
        strategy().ensure(layout, &id("b")),
        strategy().address(layout, &id("b"), "agent.sock").map(drop),
    ] {
        match r {
            Err(BindingError::Insecure { path, reason }) => {
                assert_eq!(path, Abstract::secret_path(layout), "{what}");
                assert!(reason.contains(needle), "{what}: {reason}");
            }
            other => panic!("{what}: expected Insecure, got {other:?}"),
        }
    }
}

#[test]
fn tampered_secret_is_refused_and_left_alone() {
    let _serial = serial();
    // Group/other bits.
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    strategy().ensure(&layout, &id("b")).unwrap();
    let path = Abstract::secret_path(&layout);
    let before = secret_bytes(&layout);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_insecure(&layout, "0644", "0644");
    assert_eq!(
        std::fs::metadata(&path).unwrap().mode() & 0o7777,
        0o644,
        "mode was changed behind our back"
    );
    assert_eq!(secret_bytes(&layout), before);

    // A symlink to a perfectly good 0600 file.
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let real = h.path().join("elsewhere");
    std::fs::write(&real, [1u8; 32]).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, Abstract::secret_path(&layout)).unwrap();
    assert_insecure(&layout, "symlink", "symlink");
    assert!(
        std::fs::symlink_metadata(Abstract::secret_path(&layout)).unwrap().file_type().is_symlink()
    );

    // Truncated, and a directory in its place.
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    std::fs::write(Abstract::secret_path(&layout), [1u8; 5]).unwrap();
    std::fs::set_permissions(
        Abstract::secret_path(&layout),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_insecure(&layout, "short", "5 bytes");
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    std::fs::create_dir(Abstract::secret_path(&layout)).unwrap();
    assert_insecure(&layout, "directory", "not a regular file");
}

#[test]
fn secret_owned_by_another_user_is_refused() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, "changing a file's owner needs root");
        return;
    }
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    strategy().ensure(&layout, &id("b")).unwrap();
    std::os::unix::fs::chown(Abstract::secret_path(&layout), Some(NOBODY), Some(NOBODY)).unwrap();
    assert_insecure(&layout, "owner", &format!("uid {NOBODY}"));
}

#[test]
fn stream_round_trip_with_credentials_and_pidfd() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    s.ensure(&layout, &b).unwrap();
    let l = s.bind_stream(&layout, &b, "agent.sock").unwrap();
    assert!(matches!(l.address(), SocketAddress::Abstract(_)));
    let mut c = s.connect_stream(&layout, &b, "agent.sock").unwrap();
    let mut acc = l.accept_peer().unwrap();
    let cred = acc.cred.unwrap();
    assert_eq!((cred.uid, cred.pid), (me(), std::process::id() as i32));
    let pidfd = acc.pidfd.expect("this kernel has SO_PEERPIDFD");
    assert_eq!(pidfd_pid(pidfd.as_fd()), Some(std::process::id() as i32));
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    acc.stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(s.peer_policy().rejected(), 0);
    // No filesystem entry anywhere in the home.
    assert_eq!(entries(h.path()), [SECRET_FILE]);
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (-1 once it has been reaped).
fn pidfd_pid(fd: std::os::fd::BorrowedFd<'_>) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|v| v.trim().parse().ok())
}

#[test]
fn pidfd_is_a_handle_on_the_peer_process() {
    let _serial = serial();
    let (_h, _layout, _s, _b, l, raw) = bound_agent();
    let (go_r, go_w) = pipe();
    let go_fd = go_r.as_raw_fd();
    let child = fork_child(&[go_fd], || {
        let sock = stream_socket();
        // SAFETY: connect with an address prepared before the fork.
        if sock < 0 || unsafe { libc::connect(sock, raw.ptr(), raw.len) } != 0 {
            return 1;
        }
        // Wait for the parent's go, then exit.
        let mut b = 0u8;
        // SAFETY: one-byte read into a valid buffer.
        unsafe { libc::read(go_fd, (&raw mut b).cast(), 1) };
        0
    });
    assert!(wait_readable(l.as_fd(), Duration::from_secs(10)), "child never connected");
    let acc = l.accept_peer().unwrap();
    assert_eq!(acc.cred.unwrap().pid, child.pid);
    let pidfd = acc.pidfd.expect("this kernel has SO_PEERPIDFD");
    assert_eq!(pidfd_pid(pidfd.as_fd()), Some(child.pid));
    assert!(
        !wait_readable(pidfd.as_fd(), Duration::from_millis(0)),
        "pidfd readable while the child lives"
    );
    drop(go_w); // EOF: the child exits.
    assert!(wait_readable(pidfd.as_fd(), Duration::from_secs(10)), "pidfd did not report the exit");
    assert_eq!(child.wait(), 0);
}

#[test]
fn datagram_round_trip_checks_each_message() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    let rx = s.bind_datagram(&layout, &b, "net.sock").unwrap();
    let addr = s.address(&layout, &b, "net.sock").unwrap();
    let tx = UnixDatagram::unbound().unwrap();
    tx.send_to_addr(b"frame", &addr.to_std().unwrap()).unwrap();
    let mut buf = [0u8; 64];
    let (n, cred) = peer::recv_checked(&rx, &mut buf, &s.peer_policy(), "net.sock", &addr).unwrap();
    assert_eq!(&buf[..n], b"frame");
    let cred = cred.unwrap();
    assert_eq!((cred.uid, cred.pid), (me(), std::process::id() as i32));
}

#[test]
fn datagram_without_passcred_fails_closed() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let addr = s.address(&layout, &id("b"), "net.sock").unwrap();
    let rx = peer::bind_datagram_at(&addr).unwrap(); // no SO_PASSCRED
    UnixDatagram::unbound().unwrap().send_to_addr(b"x", &addr.to_std().unwrap()).unwrap();
    let policy = s.peer_policy();
    let e = peer::recv_checked(&rx, &mut [0u8; 8], &policy, "net.sock", &addr).unwrap_err();
    assert!(matches!(e, BindingError::Insecure { .. }), "{e}");
    assert_eq!(policy.rejected(), 1);
    // An unchecked policy lets it through, without credentials.
    UnixDatagram::unbound().unwrap().send_to_addr(b"y", &addr.to_std().unwrap()).unwrap();
    let (n, cred) =
        peer::recv_checked(&rx, &mut [0u8; 8], &PeerPolicy::unchecked(), "net.sock", &addr)
            .unwrap();
    assert_eq!((n, cred), (1, None));
}

#[test]
fn foreign_uid_connecting_to_our_listener_is_dropped_and_counted() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, format!("needs root to run the peer as uid {NOBODY}"));
        return;
    }
    let (_h, layout, s, b, l, raw) = bound_agent();
    let child = fork_child(&[], || {
        if !drop_to_nobody() {
            return 10;
        }
        let sock = stream_socket();
        // SAFETY: connect with an address prepared before the fork.
        if sock < 0 || unsafe { libc::connect(sock, raw.ptr(), raw.len) } != 0 {
            return 11;
        }
        let mut buf = [0u8; 16];
        // SAFETY: read into a valid buffer.
        match unsafe { libc::read(sock, buf.as_mut_ptr().cast(), buf.len()) } {
            0 => 0,                             // closed, no data: what we want
            n if n > 0 => 12,                   // got data
            _ if errno() == libc::EAGAIN => 13, // timed out: never closed
            _ => 14,
        }
    });
    assert!(wait_readable(l.as_fd(), Duration::from_secs(10)), "child never connected");
    match l.accept_once() {
        Err(BindingError::PeerRejected { uid, pid, allowed, .. }) => {
            assert_eq!(uid, NOBODY);
            assert_eq!(pid, child.pid);
            assert_eq!(allowed, vec![me()]);
        }
        other => panic!("expected PeerRejected, got {other:?}"),
    }
    assert_eq!(s.peer_policy().rejected(), 1);
    assert_eq!(child.wait(), 0, "the rejected peer must see EOF without data");

    // The looping accept skips a rejected peer and returns the next allowed one.
    let child = fork_child(&[], || {
        if !drop_to_nobody() {
            return 10;
        }
        let sock = stream_socket();
        // SAFETY: connect with an address prepared before the fork.
        if sock < 0 || unsafe { libc::connect(sock, raw.ptr(), raw.len) } != 0 {
            return 11;
        }
        let mut buf = [0u8; 1];
        // SAFETY: read into a valid buffer.
        (unsafe { libc::read(sock, buf.as_mut_ptr().cast(), 1) } != 0) as i32
    });
    assert!(wait_readable(l.as_fd(), Duration::from_secs(10)), "child never connected");
    let mut mine = s.connect_stream(&layout, &b, "agent.sock").unwrap();
    let (mut acc, cred) = l.accept().unwrap();
    assert_eq!(cred.unwrap().uid, me());
    mine.write_all(b"k").unwrap();
    let mut one = [0u8; 1];
    acc.read_exact(&mut one).unwrap();
    assert_eq!(s.peer_policy().rejected(), 2);
    assert_eq!(child.wait(), 0);
}

#[test]
fn connecting_to_a_listener_of_another_uid_is_refused() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, format!("needs root to run the listener as uid {NOBODY}"));
        return;
    }
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    // The squatter knows the name (it is visible in /proc/net/unix once used).
    let addr = s.address(&layout, &b, "agent.sock").unwrap();
    let raw = RawAddr::abstract_name(&name_of(&addr));
    let (ready_r, ready_w) = pipe();
    let ready_fd = ready_w.as_raw_fd();
    let child = fork_child(&[ready_fd], || {
        if !drop_to_nobody() {
            write_byte(ready_fd, b'e');
            return 10;
        }
        let sock = stream_socket();
        // SAFETY: bind/listen with an address prepared before the fork.
        let ok = sock >= 0
            && unsafe { libc::bind(sock, raw.ptr(), raw.len) == 0 && libc::listen(sock, 8) == 0 };
        write_byte(ready_fd, if ok { b'r' } else { b'e' });
        loop {
            // SAFETY: sleeping until the parent kills us.
            unsafe { libc::pause() };
        }
    });
    drop(ready_w);
    assert_eq!(read_byte(&ready_r), Some(b'r'), "squatter could not listen");
    let e = s.connect_stream(&layout, &b, "agent.sock").unwrap_err();
    match &e {
        BindingError::PeerRejected { uid, socket, address, .. } => {
            assert_eq!(*uid, NOBODY);
            assert_eq!(socket, "agent.sock");
            assert_eq!(*address, addr.display_string());
        }
        other => panic!("expected PeerRejected, got {other}"),
    }
    assert_eq!(s.peer_policy().rejected(), 1);
    // We cannot bind over it; with no box directory to record fresh names in, the bind
    // fails loudly, naming the squatter's uid and what could not be done.
    let e = s.bind_stream(&layout, &b, "agent.sock").unwrap_err();
    assert!(matches!(&e, BindingError::Occupied { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("uid {NOBODY}")) && msg.contains(boxsock_abstract::EPOCH_FILE),
        "{msg}"
    );
    child.kill();
    assert_eq!(child.wait(), 128 + libc::SIGKILL);
}

#[test]
fn foreign_uid_datagram_is_rejected_per_message() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, format!("needs root to run the sender as uid {NOBODY}"));
        return;
    }
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    let rx = s.bind_datagram(&layout, &b, "net.sock").unwrap();
    let addr = s.address(&layout, &b, "net.sock").unwrap();
    let raw = RawAddr::abstract_name(&name_of(&addr));
    let child = fork_child(&[], || {
        if !drop_to_nobody() {
            return 10;
        }
        // SAFETY: plain syscalls on memory prepared before the fork.
        unsafe {
            let sock = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            let msg = b"evil";
            if sock < 0
                || libc::sendto(sock, msg.as_ptr().cast(), msg.len(), 0, raw.ptr(), raw.len) != 4
            {
                return 11;
            }
        }
        0
    });
    let child_pid = child.pid;
    assert_eq!(child.wait(), 0);
    UnixDatagram::unbound().unwrap().send_to_addr(b"good", &addr.to_std().unwrap()).unwrap();
    let policy = s.peer_policy();
    let mut buf = [0u8; 16];
    match peer::recv_checked(&rx, &mut buf, &policy, "net.sock", &addr) {
        Err(BindingError::PeerRejected { uid, pid, .. }) => {
            assert_eq!((uid, pid), (NOBODY, child_pid))
        }
        other => panic!("expected PeerRejected, got {other:?}"),
    }
    assert_eq!(policy.rejected(), 1);
    let (n, cred) = peer::recv_checked(&rx, &mut buf, &policy, "net.sock", &addr).unwrap();
    assert_eq!(&buf[..n], b"good");
    assert_eq!(cred.unwrap().uid, me());
}

#[test]
fn a_name_is_bindable_again_once_its_last_descriptor_closes() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    let in_use = |e: BindingError| matches!(&e, BindingError::Io { op: "bind", source, .. } if source.kind() == std::io::ErrorKind::AddrInUse);

    let l = s.bind_stream(&layout, &b, "agent.sock").unwrap();
    let taken = s.bind_stream(&layout, &b, "agent.sock").unwrap_err();
    // Regression: the error carried the abstract name as a path ("@…"); it carries the
    // address itself, and its message still names the socket.
    match &taken {
        BindingError::Io { address, .. } => {
            assert_eq!(address, &s.address(&layout, &b, "agent.sock").unwrap());
            assert!(taken.to_string().contains(&address.to_string()), "{taken}");
        }
        other => panic!("wrong variant: {other}"),
    }
    assert!(in_use(taken));
    let dup = l.as_fd().try_clone_to_owned().unwrap();
    drop(l);
    // A descriptor is still open (as in a crashed box's surviving child): still taken.
    assert!(in_use(s.bind_stream(&layout, &b, "agent.sock").unwrap_err()));
    drop(dup);
    s.release(&layout, &b).unwrap();
    let l = s.bind_stream(&layout, &b, "agent.sock").unwrap();
    drop(l);

    let d = s.bind_datagram(&layout, &b, "net.sock").unwrap();
    assert!(in_use(s.bind_datagram(&layout, &b, "net.sock").unwrap_err()));
    drop(d);
    s.bind_datagram(&layout, &b, "net.sock").unwrap();

    // A dead box's listener: a child process binds, is killed, the name is free.
    let addr = s.address(&layout, &b, "ready.sock").unwrap();
    let raw = RawAddr::abstract_name(&name_of(&addr));
    let (ready_r, ready_w) = pipe();
    let ready_fd = ready_w.as_raw_fd();
    let child = fork_child(&[ready_fd], || {
        let sock = stream_socket();
        // SAFETY: bind/listen with an address prepared before the fork.
        let ok = sock >= 0
            && unsafe { libc::bind(sock, raw.ptr(), raw.len) == 0 && libc::listen(sock, 8) == 0 };
        write_byte(ready_fd, if ok { b'r' } else { b'e' });
        loop {
            // SAFETY: sleeping until the parent kills us.
            unsafe { libc::pause() };
        }
    });
    drop(ready_w);
    assert_eq!(read_byte(&ready_r), Some(b'r'));
    assert!(in_use(s.bind_stream(&layout, &b, "ready.sock").unwrap_err()));
    child.kill();
    assert_eq!(child.wait(), 128 + libc::SIGKILL);
    s.release(&layout, &b).unwrap();
    assert_eq!(s.sweep(&layout).unwrap(), Default::default());
    s.bind_stream(&layout, &b, "ready.sock").unwrap();
}

#[test]
fn a_peer_in_another_network_namespace_cannot_connect() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, "unshare(CLONE_NEWNET) needs root (CAP_SYS_ADMIN)");
        return;
    }
    let (_h, _layout, _s, _b, l, raw) = bound_agent();
    let child = fork_child(&[], || {
        let sock = stream_socket();
        // SAFETY: connect with an address prepared before the fork (control: same netns).
        if sock < 0 || unsafe { libc::connect(sock, raw.ptr(), raw.len) } != 0 {
            return 20;
        }
        // SAFETY: plain syscall.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return SKIP;
        }
        let sock = stream_socket();
        // SAFETY: as above.
        if unsafe { libc::connect(sock, raw.ptr(), raw.len) } == 0 {
            return 21;
        }
        if errno() == libc::ECONNREFUSED { 0 } else { 22 }
    });
    let code = child.wait();
    if code == SKIP {
        skip(Need::Kernel("network namespaces"), "unshare(CLONE_NEWNET) was denied");
        return;
    }
    assert_eq!(
        code, 0,
        "the child in a new network namespace reached the name (21) or failed oddly"
    );
    // Exactly one connection arrived: the control one from the original namespace.
    l.accept_once().unwrap();
    let inner = l.into_inner();
    inner.set_nonblocking(true).unwrap();
    let e = inner.accept().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "a second connection arrived");
}

#[test]
fn ensure_release_sweep_and_policy_touch_only_the_secret() {
    let _serial = serial();
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    // No box directory needed.
    s.ensure(&layout, &b).unwrap();
    s.ensure(&layout, &b).unwrap();
    let _l = s.bind_stream(&layout, &b, "agent.sock").unwrap();
    s.release(&layout, &b).unwrap();
    s.release(&layout, &b).unwrap();
    assert_eq!(s.sweep(&layout).unwrap(), Default::default());
    assert_eq!(entries(h.path()), [SECRET_FILE]);
    let p = s.policy_paths(&layout, &b).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].path, Abstract::secret_path(&layout));
    assert_eq!(p[0].intent, PolicyIntent::File);
    assert_eq!(p[0].access, PolicyAccess::Read);
    let s: std::sync::Arc<dyn SocketBinding> = std::sync::Arc::new(s);
    assert_eq!(s.inspect_box(&layout, &b).unwrap().binding_path(), None);
}

/// The Landlock ABI version of this kernel (0 if Landlock is unavailable).
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query: no attribute, size 0.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

/// In a child: enter a Landlock domain scoped for abstract Unix sockets only
/// (`LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`). Raw syscalls, nothing allocated.
fn landlock_scope_abstract_sockets() -> bool {
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }
    const LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: 0,
        scoped: LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET,
    };
    // SAFETY: attr is a valid landlock_ruleset_attr of the size passed; the returned fd is
    // ours and is closed below.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const attr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        );
        if fd < 0 || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return false;
        }
        let ok = libc::syscall(libc::SYS_landlock_restrict_self, fd as libc::c_int, 0u32) == 0;
        libc::close(fd as libc::c_int);
        ok
    }
}

#[test]
fn landlock_scoped_process_cannot_dial_out_but_can_be_dialled() {
    let _serial = serial();
    let abi = landlock_abi();
    if abi < 6 {
        skip(
            Need::Kernel("Landlock ABI >= 6"),
            format!("Landlock abstract-socket scoping needs ABI >= 6, this kernel has {abi}"),
        );
        return;
    }
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let s = strategy();
    let b = id("b");
    // Bound by us, outside the child's future domain (as the runtime binds `ready`).
    let outside = s.bind_stream(&layout, &b, "ready.sock").unwrap();
    let out_raw = RawAddr::abstract_name(&name_of(outside.address()));
    // To be bound by the child inside its domain (as a jailed VMM binds `agent`).
    let in_addr = s.address(&layout, &b, "agent.sock").unwrap();
    let in_raw = RawAddr::abstract_name(&name_of(&in_addr));
    let (rep_r, rep_w) = pipe();
    let rep_fd = rep_w.as_raw_fd();
    let child = fork_child(&[rep_fd], || {
        if !landlock_scope_abstract_sockets() {
            write_byte(rep_fd, b's');
            return SKIP;
        }
        let sock = stream_socket();
        // SAFETY: connect with an address prepared before the fork.
        let r = unsafe { libc::connect(sock, out_raw.ptr(), out_raw.len) };
        write_byte(
            rep_fd,
            if r == 0 {
                b'c'
            } else if errno() == libc::EPERM {
                b'p'
            } else {
                b'x'
            },
        );
        let l = stream_socket();
        // SAFETY: bind/listen/accept with an address prepared before the fork; the 10 s
        // receive timeout bounds accept.
        unsafe {
            if libc::bind(l, in_raw.ptr(), in_raw.len) != 0 || libc::listen(l, 4) != 0 {
                write_byte(rep_fd, b'e');
                return 2;
            }
            write_byte(rep_fd, b'r');
            if libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) < 0 {
                return 3;
            }
        }
        0
    });
    drop(rep_w);
    match read_byte(&rep_r) {
        Some(b'p') => {}
        Some(b's') => {
            skip(Need::Kernel("Landlock ABI >= 6"), "the child could not enter a Landlock domain");
            return;
        }
        other => panic!(
            "a scoped process dialling out of its domain: expected EPERM, got {:?}",
            other.map(char::from)
        ),
    }
    assert_eq!(read_byte(&rep_r), Some(b'r'), "the scoped child could not listen");
    // From outside the domain we can connect in, with the usual credential check.
    s.connect_stream(&layout, &b, "agent.sock").unwrap();
    assert_eq!(child.wait(), 0);
    // Nothing reached our listener.
    let inner = outside.into_inner();
    inner.set_nonblocking(true).unwrap();
    assert_eq!(inner.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
}

/// Fork a child that drops to `nobody`, binds a listening stream socket at every name in
/// `names` and holds them until killed. Returns once all are bound.
fn nobody_squatting(names: &[Vec<u8>]) -> Child {
    nobody_squatting_as(libc::SOCK_STREAM, names)
}

/// [`nobody_squatting`] with sockets of type `kind` (abstract names are per type).
fn nobody_squatting_as(kind: libc::c_int, names: &[Vec<u8>]) -> Child {
    let raws: Vec<RawAddr> = names.iter().map(|n| RawAddr::abstract_name(n)).collect();
    let (r, w) = pipe();
    let wfd = w.as_raw_fd();
    let child = fork_child(&[wfd], || {
        if !drop_to_nobody() {
            write_byte(wfd, b'F');
            return 10;
        }
        for raw in &raws {
            // SAFETY: socket/bind/listen with an address prepared before the fork.
            let ok = unsafe {
                let s = libc::socket(libc::AF_UNIX, kind, 0);
                s >= 0
                    && libc::bind(s, raw.ptr(), raw.len) == 0
                    && (kind != libc::SOCK_STREAM || libc::listen(s, 16) == 0)
            };
            if !ok {
                write_byte(wfd, b'F');
                return 11;
            }
        }
        write_byte(wfd, b'B');
        loop {
            // SAFETY: pause only waits for a signal (the parent's SIGKILL).
            unsafe { libc::pause() };
        }
    });
    drop(w);
    assert_eq!(read_byte(&r), Some(b'B'), "the nobody child could not bind the names");
    child
}

/// A fresh home with the 0700 directory of box `b` (where its epoch lives).
fn home_with_box() -> (tempfile::TempDir, BoxLayout, BoxId) {
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let b = id("b");
    std::fs::create_dir_all(layout.box_dir(&b)).unwrap();
    std::fs::set_permissions(layout.box_dir(&b), std::fs::Permissions::from_mode(0o700)).unwrap();
    (h, layout, b)
}

#[test]
fn every_start_rotates_the_names_so_names_bound_by_another_user_after_stop_do_not_matter() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, format!("needs root to run the squatter as uid {NOBODY}"));
        return;
    }
    let (_h, layout, b) = home_with_box();
    let s = strategy();
    // First start: bind both of the box's sockets, then stop (close them).
    s.prepare_start(&layout, &b).unwrap();
    let epoch_file = Abstract::epoch_path(&layout, &b);
    let m = std::fs::metadata(&epoch_file).unwrap();
    assert_eq!((m.mode() & 0o777, m.uid()), (0o600, me()), "the epoch is private to the owner");
    let old: Vec<Vec<u8>> = ["agent.sock", "ready.sock"]
        .iter()
        .map(|f| name_of(s.bind_stream(&layout, &b, f).unwrap().address()))
        .collect();
    // Another user binds the names it saw (in /proc/net/unix, in an argv) once the box stopped.
    let squatter = nobody_squatting(&old);

    // The next start gives the box names nobody has seen, before anything is bound.
    let log = LogBuf::default();
    let listener = log.capture(|| {
        s.prepare_start(&layout, &b).unwrap();
        let new_agent = name_of(&s.address(&layout, &b, "agent.sock").unwrap());
        assert_ne!(new_agent, old[0], "prepare_start must change the agent's name");
        assert_ne!(name_of(&s.address(&layout, &b, "ready.sock").unwrap()), old[1]);
        let l = s.bind_stream(&layout, &b, "agent.sock").unwrap();
        assert_eq!(
            name_of(l.address()),
            new_agent,
            "no squatted name was met, so no rotation at bind"
        );
        l
    });
    assert!(!log.text().contains("already bound"), "{}", log.text());

    // Every other process of the home (a fresh instance: nothing cached) derives the
    // same names, and reaches our listener, not the squatter.
    let other_process = strategy();
    assert_eq!(
        other_process.address(&layout, &b, "agent.sock").unwrap(),
        listener.address().clone()
    );
    let _c = other_process.connect_stream(&layout, &b, "agent.sock").unwrap();
    let (_acc, cred) = listener.accept_once().unwrap();
    assert_eq!(cred.unwrap().uid, me());
    drop(squatter);
}

#[test]
fn a_squatted_current_name_is_recovered_by_rotating_and_the_squatter_is_named() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, format!("needs root to run the squatter as uid {NOBODY}"));
        return;
    }
    let (_h, layout, b) = home_with_box();
    let s = strategy();
    s.prepare_start(&layout, &b).unwrap();
    let current = name_of(&s.address(&layout, &b, "agent.sock").unwrap());
    let squatter = nobody_squatting(std::slice::from_ref(&current));

    let log = LogBuf::default();
    let l = log.capture(|| s.bind_stream(&layout, &b, "agent.sock")).unwrap();
    assert_ne!(name_of(l.address()), current, "the bind must move to a fresh name");
    let text = log.text();
    assert!(text.contains("already bound by another socket"), "{text}");
    assert!(
        text.contains(&format!("squatter_uid=Some({NOBODY})")),
        "the warning names uid {NOBODY}: {text}"
    );
    assert!(text.contains(&format!("squatter_pid=Some({})", squatter.pid)), "{text}");
    assert!(text.contains("squatter_inode=Some("), "{text}");

    // The rotation is recorded: another process derives the new name and reaches us.
    let other_process = strategy();
    assert_eq!(other_process.address(&layout, &b, "agent.sock").unwrap(), l.address().clone());
    let _c = other_process.connect_stream(&layout, &b, "agent.sock").unwrap();
    assert_eq!(l.accept_once().unwrap().1.unwrap().uid, me());

    // A datagram socket recovers the same way.
    let d_name = name_of(&s.address(&layout, &b, "net.sock").unwrap());
    let d_squatter = nobody_squatting_as(libc::SOCK_DGRAM, std::slice::from_ref(&d_name));
    let d = s.bind_datagram(&layout, &b, "net.sock").unwrap();
    let bound = d.local_addr().unwrap();
    use std::os::linux::net::SocketAddrExt;
    assert_ne!(bound.as_abstract_name().unwrap(), d_name.as_slice());
    drop((squatter, d_squatter));
}

#[test]
fn twenty_thousand_rejected_connects_add_a_few_kb_to_the_log_and_are_all_counted() {
    let _serial = serial();
    if !is_root() {
        skip(Need::Root, format!("needs root to run the peer as uid {NOBODY}"));
        return;
    }
    const N: u64 = 20_000;
    const BOUND: usize = 4 * 1024;
    let (_h, layout, s, b, l, raw) = bound_agent();
    let log = LogBuf::default();
    let policy = s.peer_policy();
    let accepting = {
        let log = log.clone();
        std::thread::spawn(move || {
            log.capture(|| {
                // Loops over every rejected peer; returns with the owner's connection.
                let (_s, cred) = l.accept().unwrap();
                let policy = l.policy().clone();
                drop(l);
                policy.flush_rejection_log();
                cred
            })
        })
    };
    let started = std::time::Instant::now();
    let child = fork_child(&[], || {
        if !drop_to_nobody() {
            return 10;
        }
        for _ in 0..N {
            // SAFETY: socket/connect/close with an address prepared before the fork.
            let ok = unsafe {
                let sock = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let ok = sock >= 0 && libc::connect(sock, raw.ptr(), raw.len) == 0;
                libc::close(sock);
                ok
            };
            if !ok {
                return 11;
            }
        }
        0
    });
    assert_eq!(child.wait(), 0, "the nobody child's connects failed");
    let _mine = s.connect_stream(&layout, &b, "agent.sock").unwrap();
    let cred = accepting.join().unwrap();
    let took = started.elapsed();
    assert_eq!(cred.unwrap().uid, me());
    assert_eq!(policy.rejected(), N, "the count stays exact");

    let text = log.text();
    eprintln!("{N} rejected connects in {took:?} added {} bytes to the log:\n{text}", text.len());
    assert!(text.len() <= BOUND, "{N} rejections logged {} bytes (bound {BOUND})", text.len());
    let samples = text
        .lines()
        .filter(|l| l.contains("rejected peer") && l.contains(&format!("peer_uid={NOBODY}")))
        .count() as u64;
    assert!(samples >= 1 && samples <= 5 * (1 + took.as_secs() / 10), "{samples} samples:\n{text}");
    let more: u64 = text
        .lines()
        .filter_map(|l| l.split("more=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(samples + more, N, "samples plus summaries account for every rejection:\n{text}");
    drop(b);
}

/// `StrategyConfig::read_only` (doctor, `ls`, `inspect`): the strategy never creates the
/// home's key, reports names of the real length from a throwaway key while there is
/// none, and uses the key on disk, once there is one, exactly as a writing instance does.
#[test]
fn a_read_only_instance_creates_no_key_and_agrees_with_the_writer_once_there_is_one() {
    let h = tempfile::tempdir().unwrap();
    let layout = BoxLayout::new(h.path());
    let b = id("b");
    let ro = Abstract::new(&StrategyConfig { read_only: true, ..config(me()) });
    let before = ro.address(&layout, &b, "agent.sock").unwrap();
    assert_eq!(
        entries(h.path()),
        Vec::<String>::new(),
        "a read-only address() wrote into the home"
    );
    let writer = strategy();
    let real = writer.address(&layout, &b, "agent.sock").unwrap();
    assert!(h.path().join(SECRET_FILE).exists(), "the writing instance creates the key");
    assert_eq!(before.byte_len(), real.byte_len(), "the throwaway name has the real length");
    assert_ne!(before, real, "a throwaway key is not the home's key");
    let ro = Abstract::new(&StrategyConfig { read_only: true, ..config(me()) });
    assert_eq!(
        ro.address(&layout, &b, "agent.sock").unwrap(),
        real,
        "with a key on disk, read-only derives the real names"
    );
}
