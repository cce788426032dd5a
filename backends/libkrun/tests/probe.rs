//! The availability probe, against a fake sysfs and against this machine.

use boxsock_core::Backend;
use boxsock_core::backend::{Availability, BackendConfig, BackendError};
use boxsock_libkrun::probe::HostProbe;
use boxsock_libkrun::{Libkrun, LibkrunConfig};

mod common;

fn reason(a: Availability) -> String {
    match a {
        Availability::Unavailable { reason } => reason,
        Availability::Available => panic!("expected unavailable"),
    }
}

#[test]
fn missing_dev_kvm_is_named() {
    let t = tempfile::tempdir().unwrap();
    let p = HostProbe {
        dev_kvm: t.path().join("kvm"),
        sys_module: t.path().join("module"),
        ..HostProbe::default()
    };
    let r = reason(p.probe());
    assert!(
        r.contains(&t.path().join("kvm").display().to_string()) && r.contains("does not exist"),
        "{r}"
    );
}

#[test]
fn pvm_is_detected_through_sys_module() {
    let t = tempfile::tempdir().unwrap();
    let kvm = t.path().join("kvm");
    std::fs::write(&kvm, b"").unwrap();
    std::fs::create_dir_all(t.path().join("module/kvm_pvm")).unwrap();
    let p = HostProbe {
        dev_kvm: kvm.clone(),
        sys_module: t.path().join("module"),
        ..HostProbe::default()
    };
    let r = reason(p.probe());
    assert!(r.contains("kvm_pvm") && r.contains("PVM"), "{r}");
    // Without the module, a file that is not a KVM device fails the API-version ioctl.
    std::fs::remove_dir(t.path().join("module/kvm_pvm")).unwrap();
    let r = reason(p.probe());
    assert!(r.contains("KVM_GET_API_VERSION"), "{r}");
}

#[test]
fn a_kvm_problem_and_a_missing_libkrunfw_are_both_named() {
    let t = tempfile::tempdir().unwrap();
    let kvm = t.path().join("kvm");
    std::fs::write(&kvm, b"").unwrap();
    std::fs::create_dir_all(t.path().join("module/kvm_pvm")).unwrap();
    let missing = "libkrunfw-does-not-exist.so.99";
    let p =
        HostProbe { dev_kvm: kvm, sys_module: t.path().join("module"), libkrunfw: missing.into() };
    let r = reason(p.probe());
    assert!(r.contains("kvm_pvm") && r.contains(missing) && r.contains("; and "), "{r}");
    // With a loadable "libkrunfw", only the KVM problem is left.
    let p = HostProbe { libkrunfw: "libc.so.6".into(), ..p };
    let r = reason(p.probe());
    assert!(r.contains("kvm_pvm") && !r.contains("; and "), "{r}");
}

#[test]
fn missing_libkrunfw_is_named() {
    let p =
        HostProbe { libkrunfw: "libkrunfw-does-not-exist.so.99".into(), ..HostProbe::default() };
    let r = reason(p.probe_libkrunfw());
    assert!(r.contains("libkrunfw-does-not-exist.so.99") && r.contains("install libkrunfw"), "{r}");
    // libc is always loadable: the probe does say yes when it can.
    let p = HostProbe { libkrunfw: "libc.so.6".into(), ..HostProbe::default() };
    assert_eq!(p.probe_libkrunfw(), Availability::Available);
}

#[test]
fn this_machine_and_launch_refusal_agree() {
    let b = Libkrun::new(LibkrunConfig::from_backend_config(&BackendConfig::default()).unwrap());
    let a = b.available();
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        let r = reason(a.clone());
        assert!(r.contains("kvm_pvm"), "{r}");
    }
    if let Availability::Unavailable { reason } = a {
        eprintln!("libkrun unavailable here: {reason}");
        // launch refuses up front instead of starting a VM that cannot run (the 30 s
        // "guest ready" timeout of the story), and starts nothing.
        let f = common::Fixture::new(0);
        f.ensure();
        match b.launch(&f.launch_spec(true)) {
            Err(BackendError::Unavailable { backend, reason: r }) => {
                assert_eq!(backend, "libkrun");
                assert_eq!(r, reason);
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.addr("net.sock").exists(), "no passt was started");
    }
}
