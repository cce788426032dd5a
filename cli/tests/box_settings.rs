//! Issue 13 point 4 and point 1 through the runtime and the binary: the `CreateOptions`
//! builder (names or types, `#[non_exhaustive]`), `Runtime: Clone`, and the backend
//! settings stored with a box (vcpus, memory, root filesystem), so a later `start`, from
//! another process with other per-invocation options, boots the same box.
//!
//! Real parts: the real runtime and `boxsock` binary on temp homes, the real agent on
//! the host backend, the real `boxsock-krun-shim` configuring the real libkrun
//! (`configure_only=true`: nothing boots here), real SQLite files.

mod common;

use std::path::PathBuf;
use std::process::Command;

use boxsock::{BoxSettings, CreateOptions, ExecIo, Runtime, RuntimeError};
use common::{Env, agent_and_shim_dir, run, text};
use serde_json::Value;

/// The binary with the real agent and the krun shim.
fn boxsock(env: &Env) -> Command {
    common::boxsock_in(env, &agent_and_shim_dir())
}

async fn echo(rt: &Runtime, id: &str, word: &str) -> String {
    let mut out = Vec::new();
    let mut out_cb = |b: &[u8]| out.extend_from_slice(b);
    let mut err_cb = |_: &[u8]| {};
    let code = rt
        .exec(
            id,
            vec!["echo".into(), word.into()],
            vec![],
            ExecIo { stdin: None, stdout: &mut out_cb, stderr: &mut err_cb },
        )
        .await
        .unwrap();
    assert_eq!(code, 0);
    String::from_utf8(out).unwrap()
}

/// The builder takes strategy and backend types; clones of one runtime share its home
/// (one lock, one store): a box made through one clone is run through another, and the
/// runtime lives on after the first clone is dropped.
#[tokio::test]
async fn the_builder_takes_types_and_clones_share_one_runtime() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let other = rt.clone();
    let opts = CreateOptions::builder()
        .strategy_of::<boxsock_direct::Direct>()
        .backend_of::<boxsock_host::HostBackend>()
        .name("typed")
        .build();
    assert_eq!((opts.strategy.as_str(), opts.backend.as_str()), ("direct", "host"));
    let b = rt.create(opts).await.unwrap();
    other.start("typed").await.unwrap();
    drop(rt);
    assert_eq!(echo(&other, b.id.as_str(), "through-a-clone").await, "through-a-clone\n");
    // Clones run concurrently.
    let (a, c) = (other.clone(), other.clone());
    let (x, y) = tokio::join!(
        a.create(CreateOptions::builder().strategy("short-symlink").backend("host").build()),
        c.create(CreateOptions::builder().strategy("abstract").backend("host").build())
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x.id, y.id);
    assert_eq!(other.list().unwrap().boxes.len(), 3);
    other.remove("typed", true).await.unwrap();
}

/// Nothing chosen, or settings the backend does not support: refused before anything is
/// written, naming what is missing or unsupported.
#[tokio::test]
async fn unchosen_and_unsupported_settings_are_refused_before_anything_is_written() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let e = rt.create(CreateOptions::builder().backend("host").build()).await.unwrap_err();
    assert!(matches!(e, RuntimeError::Unchosen { what: "strategy" }), "{e}");
    assert!(e.to_string().contains("no strategy chosen"), "{e}");
    let root = tempfile::tempdir().unwrap();
    let e = rt
        .create(
            CreateOptions::builder()
                .strategy("direct")
                .backend("host")
                .rootfs(root.path())
                .vcpus(2)
                .build(),
        )
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("\"host\"") && msg.contains("vcpus") && msg.contains("rootfs"), "{msg}");
    let e = rt
        .create(
            CreateOptions::builder()
                .strategy("direct")
                .backend("host")
                .rootfs(root.path().join("missing"))
                .build(),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, RuntimeError::BadRootfs { path, .. } if path.ends_with("missing")), "{e}");
    assert!(env.box_dirs().is_empty());
    assert!(rt.list().unwrap().boxes.is_empty());
}

/// `create --rootfs DIR --vcpus 2 --ram-mib 768` stores the settings (the rootfs
/// canonicalised: given through a symlink and `..`); a later `start` in another process
/// with other per-invocation options (`--backend-option vcpus=1`) boots the stored box:
/// the spec the real shim received has 2 vCPUs, 768 MiB and the user's directory as
/// the read-only lower layer. The user's directory is unchanged.
#[test]
fn create_rootfs_stores_the_settings_and_a_later_start_boots_the_same_box() {
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let user = d.path().join("roots/busybox");
    std::fs::create_dir_all(user.join("bin")).unwrap();
    std::fs::copy("/bin/true", user.join("bin/true")).unwrap();
    std::os::unix::fs::symlink(d.path().join("roots"), d.path().join("via-link")).unwrap();
    let given = d.path().join("via-link/busybox/../busybox");
    let before: Vec<_> = walk(&user);
    let krun = [
        "--backend",
        "libkrun",
        "--strategy",
        "short-symlink",
        "--backend-option",
        "configure_only=true",
    ];
    let o = run(boxsock(&env).args(krun).args(["create", "--rootfs"]).arg(&given).args([
        "--vcpus",
        "2",
        "--ram-mib",
        "768",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let info: Value =
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", &id])).stdout)
            .unwrap();
    let settings = &info["settings"];
    assert_eq!(settings["rootfs"], user.canonicalize().unwrap().display().to_string(), "{info}");
    assert_eq!(
        (settings["vcpus"].as_u64(), settings["ram_mib"].as_u64()),
        (Some(2), Some(768)),
        "{info}"
    );

    let o = run(boxsock(&env).args(krun).args([
        "--backend-option",
        "vcpus=1",
        "--ready-timeout",
        "600",
        "start",
        &id,
    ]));
    assert_eq!(
        o.status.code(),
        Some(125),
        "configure_only never reports ready (a boxsock failure: 125): {}",
        text(&o.stderr)
    );
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.home.join("boxes").join(&id).join("shim-spec.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((spec["vcpus"].as_u64(), spec["ram_mib"].as_u64()), (Some(2), Some(768)), "{spec}");
    let shares = spec["shares"].as_array().unwrap();
    assert_eq!(
        shares.last().unwrap()["host_path"],
        user.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(shares.last().unwrap()["read_only"], true);
    assert_eq!(walk(&user), before, "the user's root changed");

    // The host backend supports none of these: create says so, with exit 1 and no box.
    let o = run(boxsock(&env)
        .args(["--backend", "host", "--strategy", "direct", "create", "--rootfs"])
        .arg(&user));
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("rootfs"), "{}", text(&o.stderr));
    let settings = BoxSettings::default();
    assert!(settings.is_default());
}

fn walk(root: &std::path::Path) -> Vec<(PathBuf, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        v.push((p.clone(), m.size(), m.mtime_nsec()));
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    v.sort();
    v
}

/// Issue 21's typed settings at the command line: malformed volumes, ports and sizes
/// are refused by the parser naming the input and what was expected; a missing or
/// relative host directory, a guest path that is not absolute and two volumes on one
/// guest path are refused at create, before anything is written; a backend that cannot
/// honour a setting names it. `--cpus` and `--memory 512m` are stored as the box's
/// vCPUs and MiB.
#[test]
fn volumes_ports_and_sizes_are_checked_at_create_before_anything_is_written() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let host = ["--backend", "host", "--strategy", "direct"];
    let krun = [
        "--backend",
        "libkrun",
        "--strategy",
        "short-symlink",
        "--backend-option",
        "configure_only=true",
    ];
    let refused = |args: &[&str], says: &[&str]| {
        let o = run(boxsock(&env).args(args));
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted: {}", text(&o.stdout));
        for s in says {
            assert!(err.contains(s), "{args:?}: {s:?} not in {err}");
        }
        assert!(env.box_dirs().is_empty(), "{args:?} left a box");
    };
    let d = data.to_str().unwrap();
    let missing = format!("{}/missing:/data", dir.path().display());
    let as_file = format!("{}:/data", file.display());
    let twice_a = format!("{d}:/data");
    let twice_b = format!("{d}:/data:ro");
    let relative_guest = format!("{d}:data");
    for (args, says) in [
        (vec!["create", "-v", "data:/data"], vec!["volume", "not an absolute path"]),
        (vec!["create", "-v", &relative_guest], vec!["guest path", "not an absolute path"]),
        (vec!["create", "-v", &missing], vec!["volume", "missing", "cannot be used"]),
        (vec!["create", "-v", &as_file], vec!["volume", "not a directory"]),
        (vec!["create", "-v", &twice_a, "-v", &twice_b], vec!["one volume per guest path"]),
        (vec!["create", "-p", "80"], vec!["publish", "expected"]),
        (vec!["create", "-p", "8080:80/sctp"], vec!["protocol"]),
        (vec!["create", "-p", "8080:80", "-p", "8080:81"], vec!["published twice"]),
        (vec!["create", "--memory", "12q"], vec!["unit"]),
        (vec!["create", "--disk-size", "lots"], vec!["size"]),
    ] {
        refused(&[&krun[..], &args[..]].concat(), &says);
    }
    // The host backend honours none of them and names each.
    refused(
        &[&host[..], &["create", "-v", &twice_a, "-p", "8080:80", "--memory", "1g"][..]].concat(),
        &["\"host\"", "volumes", "ports", "ram_mib"],
    );

    let o = run(boxsock(&env).args(krun).args(["create", "--cpus", "2", "--memory", "512m"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let info: Value =
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", &id])).stdout)
            .unwrap();
    let s = &info["settings"];
    assert_eq!((s["vcpus"].as_u64(), s["ram_mib"].as_u64()), (Some(2), Some(512)), "{info}");
}
