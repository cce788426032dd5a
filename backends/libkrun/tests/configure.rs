//! The call sequence through the `KrunApi` seam, the spec built from a `LaunchSpec`, and
//! the budget checks libkrun itself does not do.

mod common;

use std::path::PathBuf;

use boxsock_core::backend::{AddressNeeds, BackendConfig, BackendError, Isolation};
use boxsock_core::catalogue::{self, Binder, DerivedName};
use boxsock_core::registry::{BackendRegistration, Registry};
use boxsock_core::{Backend, BindingError, SocketAddress};
use boxsock_libkrun::api::{KrunCall, KrunCtx, KrunError, NET_FLAG_DHCP_CLIENT};
use boxsock_libkrun::ffi::LibKrun;
use boxsock_libkrun::spec::{AGENT_VSOCK_PORT, READY_VSOCK_PORT};
use boxsock_libkrun::{
    KRUN_NET_DERIVED_WORST_CASE, KrunApi, Libkrun, LibkrunConfig, RecordingKrun, SpecError,
    configure,
};
use common::Fixture;

fn backend() -> Libkrun {
    Libkrun::new(LibkrunConfig::from_backend_config(&BackendConfig::default()).unwrap())
}

#[test]
fn configure_makes_the_exact_calls_in_order_with_network() {
    let f = Fixture::new(0);
    let spec = backend().shim_spec(&f.launch_spec(true)).unwrap();
    let mut rec = RecordingKrun::new();
    let ctx = configure(&mut rec, &spec).unwrap();
    let c = KrunCtx(0);
    assert_eq!(ctx, c);
    let expected = vec![
        KrunCall::CreateCtx,
        KrunCall::SetVmConfig { ctx: c, vcpus: 1, ram_mib: 512 },
        KrunCall::SetRoot { ctx: c, root: f.layout.rootfs_dir(&f.id) },
        KrunCall::DisableImplicitVsock { ctx: c },
        KrunCall::AddVsock { ctx: c, tsi_features: 0 },
        KrunCall::AddVsockPort2 {
            ctx: c,
            port: AGENT_VSOCK_PORT,
            path: f.addr("agent.sock"),
            listen: true,
        },
        KrunCall::AddVsockPort2 {
            ctx: c,
            port: READY_VSOCK_PORT,
            path: f.addr("ready.sock"),
            listen: false,
        },
        KrunCall::AddNetUnixstream {
            ctx: c,
            path: f.addr("net.sock"),
            mac: boxsock_libkrun::spec::GUEST_MAC,
            features: 0,
            flags: NET_FLAG_DHCP_CLIENT,
        },
        KrunCall::SetWorkdir { ctx: c, workdir: "/".into() },
        KrunCall::SetExec {
            ctx: c,
            path: "/boxsock-agent".into(),
            args: vec![
                "--agent".into(),
                "vsock://1024".into(),
                "--ready".into(),
                "vsock://1025".into(),
            ],
            env: vec![("BOXSOCK_TEST".into(), "1".into())],
        },
        KrunCall::SetConsoleOutput { ctx: c, path: f.layout.log_file(&f.id) },
    ];
    assert_eq!(rec.calls, expected);
    // TMPDIR is the binding directory: libkrun's derived unixgram name lands beside net.sock.
    assert_eq!(spec.tmpdir, f.link);
}

#[test]
fn without_network_there_is_no_net_call_and_no_net_socket() {
    let f = Fixture::new(0);
    let spec = backend().shim_spec(&f.launch_spec(false)).unwrap();
    assert!(spec.net.is_none());
    let mut rec = RecordingKrun::new();
    configure(&mut rec, &spec).unwrap();
    assert!(rec.calls.iter().all(|c| !matches!(c, KrunCall::AddNetUnixstream { .. })));
    assert_eq!(rec.calls.len(), 10);
}

#[test]
fn a_failing_call_stops_the_sequence_and_names_the_call_and_errno() {
    let f = Fixture::new(0);
    let spec = backend().shim_spec(&f.launch_spec(true)).unwrap();
    let mut rec = RecordingKrun::failing("krun_add_vsock_port2", libc::EINVAL);
    let err = configure(&mut rec, &spec).unwrap_err();
    assert_eq!(err, KrunError::Call { call: "krun_add_vsock_port2", errno: libc::EINVAL });
    assert_eq!(rec.calls.last().unwrap().c_name(), "krun_add_vsock_port2");
    assert_eq!(rec.calls.len(), 6, "nothing after the failing call");
    let msg = err.to_string();
    assert!(msg.contains("krun_add_vsock_port2") && msg.contains("errno 22"), "{msg}");
}

#[test]
fn real_libkrun_rejects_nul_bytes_before_calling_c() {
    let mut api = LibKrun::new();
    let err = api.set_root(KrunCtx(12345), std::path::Path::new("/a\0b")).unwrap_err();
    assert!(
        matches!(err, KrunError::Nul { call: "krun_set_root", what: "root_path", .. }),
        "{err}"
    );
    let err = api.set_exec(KrunCtx(12345), "/x", &[], &[("A=B".into(), "c".into())]).unwrap_err();
    assert!(matches!(err, KrunError::Nul { call: "krun_set_exec", .. }), "{err}");
}

#[test]
fn real_libkrun_maps_a_negative_return_to_call_and_errno() {
    // A context that was never created: libkrun answers -ENOENT.
    let mut api = LibKrun::new();
    let err = api.set_vm_config(KrunCtx(987_654), 1, 512).unwrap_err();
    match err {
        KrunError::Call { call, errno } => {
            assert_eq!(call, "krun_set_vm_config");
            assert!(errno > 0, "{errno}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn over_long_addresses_are_refused_before_libkrun_sees_them() {
    // libkrun's krun_add_vsock_port2 returns 0 for a path over the limit; we must not.
    let f = Fixture::new(0);
    let mut ls = f.launch_spec(false);
    let long = PathBuf::from(format!("/{}/agent.sock", "x".repeat(120)));
    ls.sockets.addresses.insert("agent".into(), SocketAddress::Path(long.clone()));
    let err = backend().shim_spec(&ls).unwrap_err();
    match err {
        BackendError::Binding(BindingError::PathTooLong { socket, path, len, limit }) => {
            assert_eq!(socket, "agent");
            assert_eq!(path, long.to_string_lossy());
            assert_eq!(len, long.as_os_str().len());
            assert_eq!(limit, 108);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn the_derived_unixgram_name_counts_in_the_net_budget() {
    // net.sock fits, but krun-net-<pid>-<n>.sock in the same directory does not: 107 - 32.
    let f = Fixture::new(0);
    let dir = format!("/{}", "n".repeat(107 - 1 - KRUN_NET_DERIVED_WORST_CASE.len() - 1 + 1));
    assert!(format!("{dir}/net.sock").len() < 107, "net.sock itself fits");
    let mut spec = backend().shim_spec(&f.launch_spec(true)).unwrap();
    spec.tmpdir = PathBuf::from(&dir);
    spec.net.as_mut().unwrap().path = PathBuf::from(format!("{dir}/net.sock"));
    match spec.validate().unwrap_err() {
        SpecError::Budget(BindingError::PathTooLong { socket, len, limit, .. }) => {
            assert!(socket.contains(KRUN_NET_DERIVED_WORST_CASE), "{socket}");
            assert_eq!(len, dir.len() + 1 + KRUN_NET_DERIVED_WORST_CASE.len());
            assert_eq!(limit, 108);
        }
        other => panic!("{other}"),
    }
    // One byte shorter fits.
    let dir2 = &dir[..dir.len() - 1];
    spec.tmpdir = PathBuf::from(dir2);
    spec.net.as_mut().unwrap().path = PathBuf::from(format!("{dir2}/net.sock"));
    spec.validate().unwrap();
}

#[test]
fn abstract_addresses_are_refused_with_the_reason() {
    let f = Fixture::new(0);
    let mut ls = f.launch_spec(false);
    ls.sockets.addresses.insert("ready".into(), SocketAddress::Abstract(b"boxsock-x".to_vec()));
    match backend().shim_spec(&ls).unwrap_err() {
        BackendError::Spec { backend, reason } => {
            assert_eq!(backend, "libkrun");
            assert!(
                reason.contains("maps vsock ports to host paths")
                    && reason.contains("@\"boxsock-x\""),
                "{reason}"
            );
        }
        other => panic!("{other}"),
    }
    let mut ls = f.launch_spec(true);
    ls.sockets.addresses.remove("net");
    assert!(
        matches!(backend().shim_spec(&ls), Err(BackendError::Spec { reason, .. }) if reason.contains("\"net\""))
    );
}

#[test]
fn addresses_come_only_from_the_launch_spec() {
    // Whatever the strategy hands out is what libkrun gets, byte for byte.
    let f = Fixture::new(0);
    let mut ls = f.launch_spec(true);
    for (n, p) in [("agent", "/s/a1.sock"), ("ready", "/s/r1.sock"), ("net", "/s/n1.sock")] {
        ls.sockets.addresses.insert(n.into(), SocketAddress::Path(p.into()));
    }
    let spec = backend().shim_spec(&ls).unwrap();
    assert_eq!(spec.agent.host_path, PathBuf::from("/s/a1.sock"));
    assert_eq!(spec.ready.host_path, PathBuf::from("/s/r1.sock"));
    assert_eq!(spec.net.unwrap().path, PathBuf::from("/s/n1.sock"));
    assert_eq!(spec.tmpdir, PathBuf::from("/s"));
}

#[test]
fn shim_spec_round_trips_through_json() {
    let f = Fixture::new(0);
    let spec = backend().shim_spec(&f.launch_spec(true)).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    let back: boxsock_libkrun::ShimSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    // A bad box id in the JSON is refused by BoxId's own validation.
    let bad = json.replace(f.id.as_str(), "../x");
    assert!(serde_json::from_str::<boxsock_libkrun::ShimSpec>(&bad).is_err());
}

#[test]
fn declared_sockets_and_traits() {
    let b = backend();
    assert_eq!(b.name(), "libkrun");
    assert_eq!(b.address_needs(), AddressNeeds::PathOnly);
    assert_eq!(b.isolation(), Isolation::Vm);
    let s = b.sockets(false);
    assert_eq!(s, vec![catalogue::AGENT, catalogue::READY]);
    assert_eq!(s[0].binder, Binder::Backend);
    assert_eq!(s[1].binder, Binder::Runtime);
    let s = b.sockets(true);
    assert_eq!(s.len(), 3);
    assert_eq!(s[2].name, "net");
    assert_eq!(s[2].binder, Binder::External("passt"));
    assert_eq!(s[2].derived, &[DerivedName::Sibling(KRUN_NET_DERIVED_WORST_CASE)]);
    let names: Vec<String> = s[2].all_file_names().into_iter().map(|(_, f)| f).collect();
    assert_eq!(names, ["net.sock", "krun-net-4194304-4294967295.sock"]);
    assert_eq!(KRUN_NET_DERIVED_WORST_CASE, format!("krun-net-{}-{}.sock", 4_194_304u32, u32::MAX));
}

#[test]
fn registered_as_libkrun_and_options_are_checked() {
    let r = Registry::<BackendRegistration>::collected();
    assert!(r.names().contains(&"libkrun"), "{:?}", r.names());
    let mut cfg = BackendConfig::default();
    cfg.options.insert("vcpus".into(), "0".into());
    assert!(matches!(
        r.build("libkrun", &cfg),
        Err(boxsock_core::registry::BuildError::Backend(BackendError::Spec { .. }))
    ));
    cfg.options.insert("vcpus".into(), "4".into());
    cfg.options.insert("ram_mib".into(), "1024".into());
    cfg.helper_dir = Some("/opt/bs".into());
    let c = LibkrunConfig::from_backend_config(&cfg).unwrap();
    assert_eq!((c.vcpus, c.ram_mib), (4, 1024));
    assert_eq!(c.shim, PathBuf::from("/opt/bs/boxsock-krun-shim"));
}
