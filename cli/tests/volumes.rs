//! Issue 21 item 2, volumes on libkrun, through the real `boxsock` binary: what `create
//! -v HOST:GUEST[:ro]` stores reaches the shim of a later `start` in another process as
//! one virtio-fs share per volume (read-only where `:ro`), the agent's `--volume`
//! arguments, and a Landlock jail that grants exactly the volumes beside what a box
//! without volumes gets. Errors: too many volumes (the interrupt-line budget, naming the
//! count and the limit) at create, a host directory gone by start.
//!
//! Real parts: real temp homes and SQLite stores, the real `boxsock-krun-shim` applying
//! the real jail and configuring the real libkrun (`configure_only=true`: nothing boots
//! here; the VM tier mounts the volumes in a guest: scenarios `volume-rw`, `volume-ro`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use boxsock_libkrun::spec::MAX_VOLUMES;
use common::{Env, agent_and_shim_dir, run, text};
use serde_json::Value;

fn boxsock(env: &Env) -> Command {
    common::boxsock_in(env, &agent_and_shim_dir())
}

const KRUN: [&str; 6] = [
    "--backend",
    "libkrun",
    "--strategy",
    "short-symlink",
    "--backend-option",
    "configure_only=true",
];

/// `create` with `args`, then `start` in another process (configure_only: the shim
/// configures libkrun, writes its spec and exits, so the start fails with 125); the
/// spec the shim received.
fn create_and_start(env: &Env, args: &[&str]) -> (String, Value) {
    let o = run(boxsock(env).args(KRUN).arg("create").args(args));
    assert!(o.status.success(), "create {args:?}: {}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let o = run(boxsock(env).args(KRUN).args(["--ready-timeout", "600", "start", &id]));
    assert_eq!(
        o.status.code(),
        Some(125),
        "configure_only never reports ready: {}",
        text(&o.stderr)
    );
    let path = env.home.join("boxes").join(&id).join("shim-spec.json");
    let spec = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; start said {}", path.display(), text(&o.stderr)));
    (id, serde_json::from_str(&spec).unwrap())
}

fn paths(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}

fn canon(p: &Path) -> String {
    p.canonicalize().unwrap().display().to_string()
}

/// Two volumes (one `:ro`, both given through a symlink): the stored box's later start
/// hands the shim one share per volume after the root's two, in order, with the
/// canonical host directory and `read_only` as asked; the agent is told where to mount
/// each; and the jail differs from a box without volumes by exactly the rw volume in
/// `read_write` and the ro volume in `read_only`. The shim applied that jail (it ran
/// with `jail=on`, the default, and configured libkrun under it).
#[test]
fn each_volume_is_one_share_and_the_jail_grants_exactly_the_volumes() {
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let (rw, ro) = (d.path().join("real/rw"), d.path().join("real/ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
    let rw_arg = format!("{}:/data", d.path().join("link/rw").display());
    let ro_arg = format!("{}:/srv/some thing:ro", d.path().join("link/ro").display());

    let (plain_id, plain) = create_and_start(&env, &[]);
    let (id, spec) = create_and_start(&env, &["-v", &rw_arg, "-v", &ro_arg]);

    let info: Value =
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", &id])).stdout)
            .unwrap();
    let stored = info["settings"]["volumes"].as_array().unwrap();
    assert_eq!(stored.len(), 2, "{info}");
    assert_eq!(stored[0]["host"], canon(&rw), "{info}");

    let shares = spec["shares"].as_array().unwrap();
    let base_shares = plain["shares"].as_array().unwrap().len();
    assert_eq!(shares.len(), base_shares + 2, "{spec}");
    let vols: Vec<(String, String, bool)> = shares[base_shares..]
        .iter()
        .map(|s| {
            (
                s["tag"].as_str().unwrap().to_owned(),
                s["host_path"].as_str().unwrap().to_owned(),
                s["read_only"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        vols,
        [("boxsock-vol0".into(), canon(&rw), false), ("boxsock-vol1".into(), canon(&ro), true)]
    );
    let args: Vec<&str> =
        spec["exec"]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let volume_args: Vec<&str> =
        args.windows(2).filter(|w| w[0] == "--volume").map(|w| w[1]).collect();
    assert_eq!(volume_args, ["boxsock-vol0:rw:/data", "boxsock-vol1:ro:/srv/some thing"]);

    let jail = &spec["jail"];
    assert_eq!(jail["enabled"], true);
    let (box_dir, plain_box_dir) = (
        env.home.join("boxes").join(&id).display().to_string(),
        env.home.join("boxes").join(&plain_id).display().to_string(),
    );
    // Each box's own paths (its disk, read-write; its layer, read-only) named as the
    // other box's, so the two jails compare.
    let as_this_box = |set: BTreeSet<String>| -> BTreeSet<String> {
        set.into_iter().map(|p| p.replace(&plain_box_dir, &box_dir)).collect()
    };
    let disk = format!("{box_dir}/disk.ext4");
    assert_eq!(as_this_box(paths(&plain["jail"]["read_write"])), BTreeSet::from([disk.clone()]));
    assert_eq!(paths(&jail["read_write"]), BTreeSet::from([disk, canon(&rw)]));
    let (with, without) =
        (paths(&jail["read_only"]), as_this_box(paths(&plain["jail"]["read_only"])));
    assert_eq!(with.difference(&without).cloned().collect::<Vec<_>>(), [canon(&ro)]);
    assert!(without.is_subset(&with));
    assert_eq!(jail["devices"], plain["jail"]["devices"]);
    let log = std::fs::read_to_string(env.home.join("boxes").join(&id).join("logs/box.log"))
        .unwrap_or_default();
    assert!(log.contains("configured"), "the jailed shim did not configure libkrun: {log}");
}

/// The interrupt-line budget: `MAX_VOLUMES` volumes are accepted, one more is refused
/// at create naming the count and the limit, before anything is written.
#[test]
fn more_volumes_than_the_guest_takes_are_refused_at_create_naming_count_and_limit() {
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let vols: Vec<String> = (0..=MAX_VOLUMES)
        .map(|i| {
            let dir = d.path().join(format!("v{i}"));
            std::fs::create_dir(&dir).unwrap();
            format!("{}:/v{i}", dir.display())
        })
        .collect();
    let args = |n: usize| -> Vec<&str> {
        let mut a = vec!["create"];
        for v in &vols[..n] {
            a.extend(["-v", v.as_str()]);
        }
        a
    };
    let o = run(boxsock(&env).args(KRUN).args(args(MAX_VOLUMES + 1)));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(!err.contains("--backend host"), "host takes no volumes at all: {err}");
    let count = format!("{} volumes", MAX_VOLUMES + 1);
    let limit = format!("at most {MAX_VOLUMES}");
    assert!(err.contains(&count) && err.contains(&limit), "{err}");
    assert!(env.box_dirs().is_empty(), "a refused create left a box");
    let o = run(boxsock(&env).args(KRUN).args(args(MAX_VOLUMES)));
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// A volume's host directory removed between create and start: the start fails naming
/// the volume and the directory, and no shim runs.
#[test]
fn a_host_directory_gone_by_start_fails_the_start_naming_it() {
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let gone = d.path().join("gone-later");
    std::fs::create_dir(&gone).unwrap();
    let arg = format!("{}:/data", gone.display());
    let o = run(boxsock(&env).args(KRUN).args(["create", "-v", &arg]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    std::fs::remove_dir(&gone).unwrap();
    let o = run(boxsock(&env).args(KRUN).args(["start", &id]));
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("gone-later") && err.contains("is gone"), "{err}");
    let spec: PathBuf = env.home.join("boxes").join(&id).join("shim-spec.json");
    assert!(!spec.exists(), "a shim ran");
}
