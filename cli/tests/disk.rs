//! Issue 21 item 1 on the host tier (decision 0023): a libkrun box's persistent writable
//! layer is a sparse ext4 image in its directory, made at its first start, attached to
//! the VM (the spec the real shim received), granted read-write to the shim's jail and
//! nothing else, shown by `inspect`, and deleted by `rm`. Sizes out of range are refused
//! at create, naming the size and the limits. The guest side (the data surviving a stop
//! and a killed VMM, a full disk) is the real-VM tier's `disk-*` scenarios.
//!
//! Real parts: the `boxsock` binary on temp homes, the real `boxsock-krun-shim`
//! configuring the real libkrun (`configure_only=true`: nothing boots here), the real
//! `mkfs.ext4`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use boxsock_test_support::{Need, skip};
use common::{Env, agent_and_shim_dir, run, text};
use serde_json::Value;

const KRUN: [&str; 6] = [
    "--backend",
    "libkrun",
    "--strategy",
    "short-symlink",
    "--backend-option",
    "configure_only=true",
];

fn boxsock(env: &Env) -> Command {
    common::boxsock_in(env, &agent_and_shim_dir())
}

fn have_mkfs() -> bool {
    let ok = Command::new("mkfs.ext4").arg("-V").output().is_ok_and(|o| o.status.success());
    if !ok {
        skip(Need::Program { name: "mkfs.ext4", package: "e2fsprogs" }, "no mkfs.ext4");
    }
    ok
}

/// Create a libkrun box with `extra` create arguments, then start it once
/// (`configure_only`: the shim configures libkrun and exits, so the start fails with
/// 125 after the disk is made and the spec recorded). Returns the id and the spec.
fn create_and_start(env: &Env, extra: &[&str], start_opts: &[&str]) -> (String, Value) {
    let o = run(boxsock(env).args(KRUN).arg("create").args(extra));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let o = run(boxsock(env)
        .args(KRUN)
        .args(start_opts)
        .args(["--ready-timeout", "600", "start"])
        .arg(&id));
    assert_eq!(
        o.status.code(),
        Some(125),
        "configure_only never reports ready: {}",
        text(&o.stderr)
    );
    let spec =
        std::fs::read_to_string(env.home.join("boxes").join(&id).join("shim-spec.json")).unwrap();
    (id, serde_json::from_str(&spec).unwrap())
}

fn inspect(env: &Env, id: &str) -> Value {
    let o = run(boxsock(env).args(["inspect", "--json", id]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            v.push(p);
        }
    }
    v
}

/// Without `--disk-size` a libkrun box gets the default 8 GiB disk at its first start:
/// a sparse file (allocated blocks far below its size), attached read-write with the
/// label the agent mounts by, the only read-write grant of the shim's jail; `inspect`
/// shows its size and allocation; a second start keeps the very same file; `rm` leaves
/// no image anywhere in the home.
#[test]
fn a_box_gets_a_sparse_disk_at_first_start_that_rm_deletes() {
    if !have_mkfs() {
        return;
    }
    let env = Env::new();
    let (id, spec) = create_and_start(&env, &[], &[]);
    let image = env.home.join("boxes").join(&id).join("disk.ext4");
    assert_eq!(spec["disk"]["path"], image.display().to_string(), "{spec}");
    assert_eq!(spec["disk"]["block_id"], "boxsock-upper", "{spec}");
    let args: Vec<&str> =
        spec["exec"]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--upper-disk", "boxsock-upper"]), "{args:?}");
    assert_eq!(
        spec["jail"]["read_write"],
        serde_json::json!([image.display().to_string()]),
        "the jail grants read-write on the disk image and nothing else"
    );

    let m = std::fs::metadata(&image).unwrap();
    let allocated = m.blocks() * 512;
    assert_eq!(m.len(), 8 << 30, "the default size");
    assert!(
        allocated < m.len() / 64,
        "the image is not sparse: {allocated} bytes allocated of {}",
        m.len()
    );
    eprintln!("8 GiB disk image: {allocated} bytes allocated ({} blocks)", m.blocks());
    let info = inspect(&env, &id);
    assert_eq!(info["disk"]["size"].as_u64(), Some(8 << 30), "{info}");
    assert_eq!(info["disk"]["allocated"].as_u64(), Some(allocated), "{info}");
    let o = run(boxsock(&env).args(["inspect", &id]));
    assert!(
        text(&o.stdout).contains(&format!("disk:      {allocated} of {}", 8u64 << 30)),
        "{}",
        text(&o.stdout)
    );

    // A later start keeps the disk: the same inode, never formatted again.
    let o = run(boxsock(&env).args(KRUN).args(["--ready-timeout", "600", "start", &id]));
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert_eq!(std::fs::metadata(&image).unwrap().ino(), m.ino(), "the disk was made again");

    let o = run(boxsock(&env).args(["rm", &id]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!image.exists(), "rm left the disk image");
    let left: Vec<_> = files_under(&env.home)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("disk.ext4"))
        .collect();
    assert!(left.is_empty(), "disk images left after rm: {left:?}");
}

/// `--disk-size 64m` makes a 64 MiB disk; `upper=tmpfs` (the backend option the
/// disk's start time is measured against) attaches none and grants nothing read-write.
#[test]
fn disk_size_sets_the_size_and_upper_tmpfs_attaches_none() {
    if !have_mkfs() {
        return;
    }
    let env = Env::new();
    let (id, _) = create_and_start(&env, &["--disk-size", "64m"], &[]);
    let image = env.home.join("boxes").join(&id).join("disk.ext4");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 << 20);
    assert_eq!(inspect(&env, &id)["settings"]["disk_size"], 64 << 20);

    let (id, spec) = create_and_start(&env, &[], &["--backend-option", "upper=tmpfs"]);
    assert!(spec.get("disk").is_none(), "{spec}");
    assert_eq!(spec["jail"]["read_write"], serde_json::json!([]), "{spec}");
    assert!(!env.home.join("boxes").join(&id).join("disk.ext4").exists());
    assert!(inspect(&env, &id).get("disk").is_none());
}

/// Sizes libkrun cannot make are refused at create, naming the size and both limits,
/// before anything is written.
#[test]
fn disk_sizes_out_of_range_are_refused_at_create_naming_the_limits() {
    let env = Env::new();
    for (size, bytes) in [("1m", "1048576"), ("17t", "18691697672192")] {
        let o = run(boxsock(&env).args(KRUN).args(["create", "--disk-size", size]));
        let err = text(&o.stderr);
        assert!(!o.status.success(), "--disk-size {size} was accepted");
        for s in ["disk_size", size, bytes, "32m", "16t"] {
            assert!(err.contains(s), "--disk-size {size}: {s:?} not in {err}");
        }
        assert!(env.box_dirs().is_empty(), "--disk-size {size} left a box");
    }
}

/// A backend that keeps its writes in a directory refuses `--disk-size`, naming it, and
/// suggests no other backend: `host` refuses it too (a hint to less isolation that would
/// not even take the setting misleads). The control: a backend that cannot run here at
/// all still gets its hint.
#[test]
fn a_refused_disk_size_names_the_setting_and_suggests_no_backend_that_refuses_it_too() {
    let env = Env::new();
    let o = run(boxsock(&env).args(["--backend", "sandbox", "create", "--disk-size", "1g"]));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "sandbox took --disk-size: {err}");
    assert!(err.contains("disk_size"), "{err}");
    assert!(!err.contains("try --backend"), "a refused setting got a backend hint: {err}");
    assert!(env.box_dirs().is_empty(), "the refused create left a box");
    let o = run(boxsock(&env).args([
        "--backend",
        "libkrun",
        "--backend-option",
        "shim=/nonexistent/boxsock-krun-shim",
        "create",
    ]));
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("try --backend sandbox"), "{err}");
}
