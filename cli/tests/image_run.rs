//! Issue 20 point 4 through the runtime and the binary: `create`/`run IMAGE`.
//!
//! - A backend that cannot run images (`host`) refuses an image box at create, naming
//!   the backends that can, before anything is written.
//! - `create IMAGE` on libkrun pins the image (manifest, layers) with the box, builds
//!   the image's root once (layers merged, whiteouts applied) and a later `start` hands
//!   that root to the real shim as the read-only lower share (`configure_only`: nothing
//!   boots here; the VM tier boots it).
//! - A second box of the image shares the root: the home grows by the box's own files.
//!
//! Real parts: the real runtime and `boxsock` binary on temp homes, the real image store
//! filled by `boxsock image import` of an OCI layout the test builds, the real libkrun shim.

mod common;
#[path = "../../core/image/tests/corpus/mod.rs"]
mod corpus;

use std::path::Path;
use std::process::Command;

use boxsock::boxsock_core::backend::BoxImage;
use boxsock::{CreateOptions, Runtime, RuntimeError};
use common::{Env, agent_and_shim_dir, run, text};
use corpus::{Layer, Tar};
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

/// Import a two-layer image (the upper layer deletes `/etc/gone`) as `localhost/wh:1`
/// into the home's image store; returns its manifest digest.
fn import(env: &Env) -> String {
    let d = tempfile::tempdir().unwrap();
    let layers = vec![
        Layer::gzip(Tar::new().file("etc/keep", b"keep").file("etc/gone", b"x").finish()),
        Layer::zstd(Tar::new().whiteout("etc", "gone").file("etc/top", b"top").finish()),
    ];
    corpus::simple_layout(d.path(), &layers, "1");
    let o = run(boxsock(env).args(["image", "import", "--name", "localhost/wh"]).arg(d.path()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout).split_whitespace().next().unwrap().to_owned()
}

fn du(dir: &Path) -> u64 {
    let o = Command::new("du").args(["-s", "-B1"]).arg(dir).output().unwrap();
    text(&o.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

/// The capability: `host` has no root of its own to switch to, so an image box is
/// refused at create with `ImagesUnsupported` naming `libkrun`, and nothing is written.
#[tokio::test]
async fn a_backend_that_cannot_run_images_refuses_at_create_naming_those_that_can() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let image = BoxImage::new(
        "localhost/wh:1".into(),
        format!("sha256:{}", "ab".repeat(32)),
        vec![format!("sha256:{}", "cd".repeat(32))],
    );
    let e = rt
        .create(CreateOptions::builder().strategy("direct").backend("host").image(image).build())
        .await
        .unwrap_err();
    match &e {
        RuntimeError::ImagesUnsupported { backend, capable } => {
            assert_eq!(backend, "host");
            assert!(capable.iter().any(|c| c == "libkrun"), "{capable:?}");
        }
        other => panic!("expected ImagesUnsupported, got {other}"),
    }
    assert!(e.to_string().contains("libkrun"), "{e}");
    // An image and a root filesystem together: refused whatever the backend.
    let image = BoxImage::new(
        "localhost/wh:1".into(),
        format!("sha256:{}", "ab".repeat(32)),
        vec![format!("sha256:{}", "cd".repeat(32))],
    );
    let both = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("libkrun")
        .image(image.clone())
        .rootfs("/")
        .build();
    assert!(matches!(rt.create(both).await, Err(RuntimeError::ImageAndRootfs)));
    // An image whose root the store never built: refused, naming the path.
    let unbuilt =
        CreateOptions::builder().strategy("short-symlink").backend("libkrun").image(image);
    let e = rt.create(unbuilt.build()).await.unwrap_err();
    assert!(matches!(&e, RuntimeError::BadImage { .. }), "{e}");
    assert!(e.to_string().contains("images/roots/"), "{e}");
    assert!(env.box_dirs().is_empty());
    assert!(rt.list().unwrap().boxes.is_empty());
    assert!(!env.home.join("images").exists(), "nothing made for the image");
}

/// The binary: `run IMAGE` on host says the same (exit 125); an IMAGE with `--rootfs`
/// is refused; a missing image says how to get it.
#[test]
fn the_cli_refuses_clearly() {
    let env = Env::new();
    import(&env);
    let o = run(boxsock(&env).args(["--backend", "host", "run", "--rm", "localhost/wh:1"]));
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("cannot run an image"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("libkrun"), "{}", text(&o.stderr));
    let o = run(boxsock(&env).args(KRUN).args(["create", "--rootfs", "/", "localhost/wh:1"]));
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("not both"), "{}", text(&o.stderr));
    let o = run(boxsock(&env).args(KRUN).args(["create", "localhost/nope:2"]));
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("boxsock pull") && err.contains("boxsock image import"), "{err}");
    assert!(env.box_dirs().is_empty());
}

/// `create IMAGE` pins the image and `start` hands its root to the shim as the
/// read-only lower layer; the root has the whiteout applied; a second box of the image
/// reuses the root, and the home grows only by the box's own files.
#[test]
fn create_image_pins_it_and_start_shares_its_root() {
    let env = Env::new();
    let manifest = import(&env);
    let o = run(boxsock(&env).args(KRUN).args(["create", "-e", "A=1", "localhost/wh:1"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let info: Value =
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", &id])).stdout)
            .unwrap();
    let image = &info["settings"]["image"];
    assert_eq!(image["manifest"], manifest.as_str(), "{info}");
    assert_eq!(image["reference"], "localhost/wh:1", "{info}");
    assert_eq!(image["layers"].as_array().unwrap().len(), 2, "{info}");
    let root = env.home.join("images/roots").join(&manifest["sha256:".len()..]).join("root");
    assert_eq!(corpus::tree(&root), ["etc", "etc/keep", "etc/top"]);

    let o = run(boxsock(&env).args(KRUN).args(["--ready-timeout", "600", "start", &id]));
    assert_eq!(o.status.code(), Some(125), "configure_only never reports ready");
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.home.join("boxes").join(&id).join("shim-spec.json")).unwrap(),
    )
    .unwrap();
    let lower = spec["shares"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(lower["host_path"], root.display().to_string(), "{spec}");
    assert_eq!(lower["read_only"], true);
    assert!(
        spec["env"].as_array().unwrap().iter().any(|kv| kv[0] == "A" && kv[1] == "1"),
        "the image's Env with -e applied is the box's: {spec}"
    );

    let before = du(&env.home);
    let o = run(boxsock(&env).args(KRUN).args(["create", "localhost/wh:1"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let growth = du(&env.home) - before;
    // The box's directory, its row and its layer: far below the image's root.
    assert!(growth < 256 * 1024, "the second box grew the home by {growth} bytes");
    eprintln!("second box of the image: the home grew by {growth} bytes");
}

/// Issue 22: `boxsock --backend sandbox run --rm IMAGE -- sh -c '…'` runs the image's
/// root (its busybox, the upper layer's whiteout applied) in a sandbox, as root; a write
/// goes to the box's own layer, never to the image's shared root.
#[test]
fn the_sandbox_backend_runs_an_image() {
    if !nix::unistd::geteuid().is_root() {
        // Its rootless twin is the test below (run by root, playing uid 65534).
        boxsock_test_support::skip(
            boxsock_test_support::Need::Root,
            "the_sandbox_backend_runs_an_image: this one runs the box as root",
        );
        return;
    }
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut lower = Tar::new();
    lower.file_mode("bin/busybox", &busybox, 0o755).symlink("bin/sh", "busybox");
    for applet in ["cat", "ls", "echo", "touch"] {
        lower.symlink(format!("bin/{applet}"), "busybox");
    }
    lower.file("etc/keep", b"keep").file("etc/gone", b"x");
    let layers = vec![
        Layer::gzip(lower.finish()),
        Layer::zstd(Tar::new().whiteout("etc", "gone").file("etc/top", b"top").finish()),
    ];
    corpus::simple_layout(d.path(), &layers, "1");
    let o = run(boxsock(&env).args(["image", "import", "--name", "localhost/bb"]).arg(d.path()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let manifest = text(&o.stdout).split_whitespace().next().unwrap().to_owned();
    let root = env.home.join("images/roots").join(&manifest["sha256:".len()..]).join("root");
    let script = "cat /etc/keep /etc/top; ls /etc; echo w > /etc/written; cat /etc/written";
    let o = run(boxsock(&env)
        .args(["--backend", "sandbox", "run", "--rm", "localhost/bb:1"])
        .args(["--", "sh", "-c", script]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "keeptopkeep\ntop\nw\n", "{}", text(&o.stderr));
    // The root (built at create) holds the image's files only: the write went to the
    // box's layer, removed with it.
    let tree = corpus::tree(&root);
    assert!(tree.contains(&"etc/top".to_string()) && !tree.contains(&"etc/gone".to_string()));
    assert!(!tree.iter().any(|p| p.contains("written")), "the image's root was written: {tree:?}");
}

/// Issue 22's "done when", rootless (decision 0026): `boxsock --backend sandbox run --rm
/// IMAGE -- sh -c 'id -u; echo hi'` run by uid 65534 (a child that really drops its
/// groups, gid and uid) on a home and link base it owns, the image imported by that
/// user too: the box's user is root in the box (`0`), and the box is gone afterwards.
#[test]
fn the_sandbox_backend_runs_an_image_as_an_unprivileged_user() {
    use std::os::unix::process::CommandExt;
    const USER: u32 = 65534;
    assert!(nix::unistd::geteuid().is_root(), "CI runs as root; the test plays the user");
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut lower = Tar::new();
    lower.file_mode("bin/busybox", &busybox, 0o755).symlink("bin/sh", "busybox");
    for applet in ["id", "echo", "ls"] {
        lower.symlink(format!("bin/{applet}"), "busybox");
    }
    corpus::simple_layout(d.path(), &[Layer::gzip(lower.finish())], "1");
    for p in [env.root.path(), &env.link_base, d.path()] {
        chown_tree(p, USER);
    }
    let as_user = |c: &mut Command| -> std::process::Output {
        run(c.uid(USER).gid(USER).current_dir("/").env("HOME", "/tmp"))
    };
    let o =
        as_user(boxsock(&env).args(["image", "import", "--name", "localhost/bb"]).arg(d.path()));
    assert!(o.status.success(), "import as uid {USER}: {}", text(&o.stderr));
    let o = as_user(
        boxsock(&env).args(["--backend", "sandbox", "run", "--rm", "localhost/bb:1"]).args([
            "--",
            "sh",
            "-c",
            "id -u; echo hi",
        ]),
    );
    assert!(o.status.success(), "run as uid {USER}: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "0\nhi\n", "{}", text(&o.stderr));
    let o = as_user(boxsock(&env).args(["ls", "-a"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !text(&o.stdout).contains("localhost/bb"),
        "run --rm left its box: {}",
        text(&o.stdout)
    );
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

/// `create IMAGE [-- CMD]` stores the box's own command (decision 0020): the image's
/// Cmd by default, replaced by `-- CMD`, with its Env and `-u` as the box's user; what
/// `inspect` shows and `start -a` runs (the VM tier runs it: scenario `image-user`).
#[test]
fn create_image_stores_its_command_and_user_with_the_box() {
    let env = Env::new();
    import(&env);
    let inspect = |id: &str| -> Value {
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", id])).stdout).unwrap()
    };
    let o = run(boxsock(&env).args(KRUN).args(["create", "localhost/wh:1"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let i = inspect(text(&o.stdout).trim());
    assert_eq!(i["process"]["argv"], serde_json::json!(["sh"]), "the image's Cmd: {i}");
    assert!(i["process"].get("user").is_none(), "{i}");
    let o = run(boxsock(&env).args(KRUN).args([
        "create",
        "-u",
        "65534:65534",
        "-w",
        "/etc",
        "localhost/wh:1",
        "--",
        "cat",
        "top",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let i = inspect(text(&o.stdout).trim());
    assert_eq!(i["process"]["argv"], serde_json::json!(["cat", "top"]), "{i}");
    assert_eq!(i["process"]["user"], "65534:65534", "{i}");
    assert_eq!(i["process"]["cwd"], "/etc", "{i}");
}

/// `rmi -f` of an image a box uses, then `image prune`: the image's root and layers
/// stay (the box is pinned to them), and the box still starts on that root (the real
/// shim configures libkrun with it: `configure_only`); once the box is removed, the
/// next prune frees them (the control: prune does free what nothing pins).
#[test]
fn prune_keeps_the_root_and_layers_of_a_removed_image_a_box_still_uses() {
    let env = Env::new();
    let manifest = import(&env);
    let o = run(boxsock(&env).args(KRUN).args(["create", "localhost/wh:1"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let root = env.home.join("images/roots").join(&manifest["sha256:".len()..]).join("root");
    let layers = env.home.join("images/layers/sha256");
    let layer_count = std::fs::read_dir(&layers).unwrap().count();
    assert_eq!(layer_count, 2);
    let o = run(boxsock(&env).args(["rmi", "-f", "localhost/wh:1"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(boxsock(&env).args(["image", "prune"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(corpus::tree(&root), ["etc", "etc/keep", "etc/top"], "{}", text(&o.stdout));
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), layer_count);
    // The box still starts on that root.
    let o = run(boxsock(&env).args(KRUN).args(["--ready-timeout", "600", "start", &id]));
    assert_eq!(o.status.code(), Some(125), "configure_only never reports ready");
    assert!(!text(&o.stderr).contains("missing"), "{}", text(&o.stderr));
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.home.join("boxes").join(&id).join("shim-spec.json")).unwrap(),
    )
    .unwrap();
    let lower = spec["shares"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(lower["host_path"], root.display().to_string(), "{spec}");
    // The control: with the box gone, prune frees them.
    let o = run(boxsock(&env).args(["rm", "-f", &id]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(boxsock(&env).args(["image", "prune"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!root.exists(), "the root outlived every user: {}", text(&o.stdout));
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 0, "{}", text(&o.stdout));
}
