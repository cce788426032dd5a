//! Issue 13, root filesystems (decision 0006), without a VM: one shared guest base per
//! agent (nothing copied per box), a `--rootfs` directory handed to libkrun read-only
//! below the box's own layer, the agent told to mount them, the shim's jail granting
//! them read-only, and the user's directory untouched throughout. The guest side (the
//! overlay and `/bin/sh -c` in a busybox root) is `boxsock_agent::guestroot`'s test,
//! and the real-VM tier's `rootfs-busybox` scenario.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use boxsock_core::Backend;
use boxsock_core::backend::{BackendConfig, BackendError, BoxSettings};
use boxsock_libkrun::api::{KrunCall, KrunCtx};
use boxsock_libkrun::backend::recorded_base;
use boxsock_libkrun::spec::{BOX_LAYER_TAG, LOWER_TAG};
use boxsock_libkrun::{Libkrun, LibkrunConfig, RecordingKrun, configure, rootfs};
use common::Fixture;

/// A dynamically linked stand-in for the agent: small, so the base is quick to build.
const AGENT: &str = "/bin/true";

fn backend(opts: &[(&str, &str)]) -> Libkrun {
    let mut options: BTreeMap<String, String> =
        [("configure_only".to_owned(), "on".to_owned()), ("agent".to_owned(), AGENT.to_owned())]
            .into();
    options.extend(opts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let cfg = BackendConfig {
        helper_dir: Some(
            PathBuf::from(env!("CARGO_BIN_EXE_boxsock-krun-shim")).parent().unwrap().to_path_buf(),
        ),
        options,
    };
    Libkrun::new(LibkrunConfig::from_backend_config(&cfg).unwrap())
}

/// Every entry under `root` with its size, mode, inode and mtime.
fn snapshot(root: &Path) -> Vec<(PathBuf, u64, u32, u64, i64, i64)> {
    let mut v = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        v.push((p.clone(), m.size(), m.mode(), m.ino(), m.mtime(), m.mtime_nsec()));
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    v.sort();
    v
}

fn bytes_under(root: &Path) -> u64 {
    snapshot(root).iter().filter(|e| e.2 & 0o170000 == 0o100000).map(|e| e.1).sum()
}

/// A busybox-like user root: a few files and a symlink.
fn user_root(dir: &Path) -> PathBuf {
    let r = dir.join("user-root");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("bin/busybox"), vec![7u8; 4096]).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    std::fs::write(r.join("etc/hostname"), "user\n").unwrap();
    r
}

#[test]
fn boxes_share_one_base_and_copy_nothing_per_box() {
    let f1 = Fixture::new(0);
    let b = backend(&[]);
    b.prepare(&f1.layout, &f1.id).unwrap();
    // A second box of the same home.
    let id2 = boxsock_core::BoxId::generate();
    boxsock_core::boxdir::create_box_dirs(&f1.layout, &id2).unwrap();
    b.prepare(&f1.layout, &id2).unwrap();
    let base1 = recorded_base(&f1.layout, &f1.id).unwrap();
    let base2 = recorded_base(&f1.layout, &id2).unwrap();
    assert_eq!(base1, base2, "one base per agent");
    assert!(base1.starts_with(f1.layout.home().join(rootfs::BASE_DIR)));
    assert!(base1.join("boxsock-agent").is_file() && base1.join(rootfs::GUEST_MOUNT_BASE).is_dir());
    // The base holds the agent and its libraries; each box's own layer holds nothing.
    assert!(bytes_under(&base1) >= std::fs::metadata(AGENT).unwrap().len());
    for id in [&f1.id, &id2] {
        let layer = f1.layout.rootfs_dir(id);
        assert_eq!(
            std::fs::read_dir(&layer).unwrap().count(),
            0,
            "{} is not empty",
            layer.display()
        );
    }
    // Exactly one base was built, and no temporary directory is left.
    let entries: Vec<_> = std::fs::read_dir(f1.layout.home().join(rootfs::BASE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Another agent gets another base; the first stays.
    let other = backend(&[("agent", "/bin/false")]);
    other.prepare(&f1.layout, &id2).unwrap();
    assert_ne!(recorded_base(&f1.layout, &id2).unwrap(), base1);
    assert!(base1.is_dir());
}

#[test]
fn a_rootfs_box_hands_libkrun_the_users_dir_read_only_below_its_own_layer() {
    let f = Fixture::new(0);
    let user = user_root(f.home_dir.path());
    let before = snapshot(&user);
    let b = backend(&[]);
    b.prepare(&f.layout, &f.id).unwrap();
    let base = recorded_base(&f.layout, &f.id).unwrap();
    let mut spec = f.launch_spec(false);
    spec.settings = BoxSettings::default();
    spec.settings.rootfs = Some(user.clone());
    spec.settings.vcpus = Some(2);
    spec.settings.ram_mib = Some(768);
    let shim = b.shim_spec(&spec).unwrap();
    let mut rec = RecordingKrun::new();
    configure(&mut rec, &shim).unwrap();
    let c = KrunCtx(0);
    assert_eq!(
        rec.calls[1],
        KrunCall::SetVmConfig { ctx: c, vcpus: 2, ram_mib: 768 },
        "stored settings win over the backend's defaults"
    );
    assert_eq!(rec.calls[2], KrunCall::SetRoot { ctx: c, root: base.clone() });
    assert_eq!(
        rec.calls[3],
        KrunCall::AddVirtiofs {
            ctx: c,
            tag: BOX_LAYER_TAG.into(),
            path: f.layout.rootfs_dir(&f.id),
            read_only: true
        }
    );
    assert_eq!(
        rec.calls[4],
        KrunCall::AddVirtiofs {
            ctx: c,
            tag: LOWER_TAG.into(),
            path: user.clone(),
            read_only: true
        }
    );
    let exec = rec.calls.iter().find_map(|k| match k {
        KrunCall::SetExec { args, .. } => Some(args.clone()),
        _ => None,
    });
    let args = exec.unwrap();
    let tail: Vec<&str> = args.iter().map(String::as_str).skip(4).collect();
    assert_eq!(
        tail,
        [
            "--overlay-lower",
            BOX_LAYER_TAG,
            "--overlay-lower",
            LOWER_TAG,
            "--upper-disk",
            boxsock_libkrun::disk::LABEL
        ]
    );
    // The box's disk is attached read-write after the shares, and is the jail's only
    // read-write grant (decision 0023).
    let image = f.layout.box_dir(&f.id).join(boxsock_libkrun::disk::FILE);
    assert_eq!(
        rec.calls[5],
        KrunCall::AddDisk {
            ctx: c,
            block_id: boxsock_libkrun::disk::LABEL.into(),
            path: image.clone(),
            read_only: false
        }
    );
    assert_eq!(shim.jail.read_write, [image]);
    // …so the box's own layer needs its read-only grant (the guest cannot execute its
    // busybox without it: found in the VM tier).
    assert!(shim.jail.read_only.contains(&f.layout.rootfs_dir(&f.id)), "{:?}", shim.jail);
    // The jail: the base and the user's root read-only, never read-write.
    assert!(
        shim.jail.read_only.contains(&base) && shim.jail.read_only.contains(&user),
        "{:?}",
        shim.jail.read_only
    );
    assert!(
        shim.jail.read_write.iter().all(|p| !user.starts_with(p) && !base.starts_with(p)),
        "{:?}",
        shim.jail.read_write
    );
    // The shim really configures libkrun with it (configure_only), and nothing of the
    // user's root changed, nor was anything of it copied.
    f.ensure();
    let mut verified = f.launch_spec_verified(false);
    verified.settings = spec.settings.clone();
    let launched = b.launch_unchecked(&verified).unwrap();
    let status =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(launched.process.pid()), None).unwrap();
    let log = std::fs::read_to_string(f.layout.log_file(&f.id)).unwrap_or_default();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(launched.process.pid()), 0),
        "shim log: {log}"
    );
    // The shim recorded what it configured: the user's root as the read-only lower.
    let recorded =
        std::fs::read_to_string(f.layout.box_dir(&f.id).join(boxsock_libkrun::SHIM_SPEC_FILE))
            .unwrap();
    assert!(
        recorded.contains(&format!("\"host_path\":\"{}\",\"read_only\":true", user.display())),
        "{recorded}"
    );
    assert_eq!(snapshot(&user), before, "the user's root changed");
    assert!(
        !f.layout.box_dir(&f.id).join("rootfs/bin").exists(),
        "the user's root was copied into the box"
    );
}

#[test]
fn without_rootfs_the_base_itself_is_the_lower_layer() {
    let f = Fixture::new(0);
    let b = backend(&[]);
    b.prepare(&f.layout, &f.id).unwrap();
    let base = recorded_base(&f.layout, &f.id).unwrap();
    let shim = b.shim_spec(&f.launch_spec(false)).unwrap();
    assert_eq!(shim.root_dir, base);
    assert_eq!(
        shim.shares
            .iter()
            .map(|s| (s.tag.as_str(), s.host_path.clone(), s.read_only))
            .collect::<Vec<_>>(),
        [(BOX_LAYER_TAG, f.layout.rootfs_dir(&f.id), true), (LOWER_TAG, base.clone(), true)]
    );
    assert_eq!((shim.vcpus, shim.ram_mib), (1, 512));
}

/// A box made before bases (no record, its own full copy in `<box>/rootfs`) still boots
/// from that copy, with no shares and the agent's old command line.
#[test]
fn a_box_made_before_bases_boots_from_its_own_copy() {
    let f = Fixture::new(0);
    let shim = backend(&[]).shim_spec(&f.launch_spec(false)).unwrap();
    assert_eq!(shim.root_dir, f.layout.rootfs_dir(&f.id));
    assert!(shim.shares.is_empty());
    assert!(!shim.exec.args.iter().any(|a| a == "--overlay-lower"));
    // …but a root filesystem needs the base: a clear error naming the record.
    let mut spec = f.launch_spec(false);
    spec.settings.rootfs = Some(f.home_dir.path().to_path_buf());
    let e = backend(&[]).shim_spec(&spec).unwrap_err();
    assert!(e.to_string().contains(rootfs::BASE_RECORD), "{e}");
}

#[test]
fn bad_settings_are_refused_naming_the_setting_and_value() {
    let b = backend(&[]);
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let cases: Vec<(BoxSettings, &str, String)> = vec![
        (
            {
                let mut s = BoxSettings::default();
                s.vcpus = Some(0);
                s
            },
            "vcpus",
            "0".into(),
        ),
        (
            {
                let mut s = BoxSettings::default();
                s.ram_mib = Some(32);
                s
            },
            "ram_mib",
            "32 MiB".into(),
        ),
        (
            {
                let mut s = BoxSettings::default();
                s.rootfs = Some(file.clone());
                s
            },
            "rootfs",
            format!("{}: not a directory", boxsock_core::echo::path(&file)),
        ),
        (
            {
                let mut s = BoxSettings::default();
                s.rootfs = Some(d.path().join("missing"));
                s
            },
            "rootfs",
            "missing".into(),
        ),
        (
            {
                let mut s = BoxSettings::default();
                s.rootfs = Some("relative".into());
                s
            },
            "rootfs",
            "not an absolute path".into(),
        ),
        (
            {
                let mut s = BoxSettings::default();
                s.network_namespace = Some("/run/netns/x".into());
                s
            },
            "network_namespace",
            "\"/run/netns/x\": a guest has its own kernel".into(),
        ),
        (
            {
                let mut s = BoxSettings::default();
                s.hostname = Some("a/b".into());
                s
            },
            "hostname",
            "\"a/b\": holds a '/'".into(),
        ),
    ];
    for (settings, setting, needle) in cases {
        let e = b.check_settings(&settings).unwrap_err();
        assert!(matches!(&e, BackendError::BadSetting { setting: s, .. } if *s == setting), "{e}");
        assert!(e.to_string().contains(&needle), "{e}");
    }
    let mut ok = BoxSettings::default();
    ok.rootfs = Some(d.path().to_path_buf());
    ok.vcpus = Some(4);
    ok.hostname = Some("web-1".into());
    b.check_settings(&ok).unwrap();
}
