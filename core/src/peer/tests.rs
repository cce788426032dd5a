use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;

use super::*;
use crate::address::SocketAddress;
use crate::error::BindingError;

#[test]
fn own_uid_is_accepted_and_others_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddress::Path(dir.path().join("s.sock"));
    let me = nix::unistd::geteuid().as_raw();

    let l = Listener::new(
        bind_stream_at(&addr).unwrap(),
        addr.clone(),
        "s".into(),
        PeerPolicy::allow_uids([me]),
    );
    let c = connect_stream_at(&addr, "s", &PeerPolicy::allow_uids([me])).unwrap();
    let (_s, cred) = l.accept_once().unwrap();
    assert_eq!(cred.unwrap().uid, me);
    drop(c);

    let other = PeerPolicy::allow_uids([me.wrapping_add(1)]);
    let err = connect_stream_at(&addr, "s", &other).unwrap_err();
    assert!(matches!(err, BindingError::PeerRejected { uid, .. } if uid == me), "{err}");
    assert_eq!(other.rejected(), 1);
}

#[test]
fn stale_socket_file_is_replaced_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddress::Path(dir.path().join("s.sock"));
    let live = bind_stream_at(&addr).unwrap();
    let err = bind_stream_at(&addr).unwrap_err();
    assert!(matches!(err, BindingError::Io { op: "bind", .. }), "{err}");
    drop(live); // the file stays behind: stale
    assert!(dir.path().join("s.sock").exists());
    bind_stream_at(&addr).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn accept_peer_yields_a_pidfd_of_the_connector() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddress::Path(dir.path().join("s.sock"));
    let me = nix::unistd::geteuid().as_raw();
    let l = Listener::new(
        bind_stream_at(&addr).unwrap(),
        addr.clone(),
        "s".into(),
        PeerPolicy::allow_uids([me]),
    );
    let _c = connect_stream_at(&addr, "s", &PeerPolicy::unchecked()).unwrap();
    let acc = l.accept_peer().unwrap();
    assert_eq!(acc.cred.unwrap().pid, std::process::id() as i32);
    let pidfd = acc.pidfd.expect("SO_PEERPIDFD (Linux >= 6.5)");
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
    assert!(
        info.lines()
            .any(|l| l.strip_prefix("Pid:").map(str::trim)
                == Some(&std::process::id().to_string())),
        "{info}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn recv_checked_uses_per_message_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddress::Path(dir.path().join("d.sock"));
    let rx = bind_datagram_at(&addr).unwrap();
    set_pass_cred(rx.as_fd()).unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let tx = UnixDatagram::unbound().unwrap();
    tx.send_to(b"hi", dir.path().join("d.sock")).unwrap();
    let mut buf = [0u8; 8];
    let (n, cred) = recv_checked(&rx, &mut buf, &PeerPolicy::allow_uids([me]), "d", &addr).unwrap();
    assert_eq!(&buf[..n], b"hi");
    assert_eq!(cred.unwrap().uid, me);
    // The same sender, refused by a policy that does not list it; the datagram is consumed.
    tx.send_to(b"no", dir.path().join("d.sock")).unwrap();
    let other = PeerPolicy::allow_uids([me.wrapping_add(1)]);
    let err = recv_checked(&rx, &mut buf, &other, "d", &addr).unwrap_err();
    assert!(matches!(err, BindingError::PeerRejected { uid, .. } if uid == me), "{err}");
    assert_eq!(other.rejected(), 1);
    rx.set_nonblocking(true).unwrap();
    assert!(matches!(
        recv_checked(&rx, &mut buf, &other, "d", &addr),
        Err(BindingError::Io { .. })
    ));
}

#[cfg(target_os = "linux")]
#[test]
fn async_accept_peer_checks_and_yields_a_pidfd() {
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddress::Path(dir.path().join("a.sock"));
    let me = nix::unistd::geteuid().as_raw();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let l = Listener::new(
            bind_stream_at(&addr).unwrap(),
            addr.clone(),
            "a".into(),
            PeerPolicy::allow_uids([me]),
        )
        .into_tokio()
        .unwrap();
        let _c = connect_stream_at(&addr, "a", &PeerPolicy::unchecked()).unwrap();
        let acc = tokio::time::timeout(std::time::Duration::from_secs(10), l.accept_peer())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(acc.cred.unwrap().uid, me);
        assert!(acc.pidfd.is_some());
        assert!(l.policy().is_checked());
    });
}
