//! The image verbs through the real binary, on temp homes with real SQLite stores:
//! `image import` of an OCI layout directory, an OCI archive and a `docker save`
//! tarball (the archives made by Debian's `skopeo` from a layout the test writes);
//! `image save` round trip; `rmi` refused while a box row pins the image; `image
//! prune`'s bytes; `pull` and `login` against Debian's `docker-registry` (the image
//! crate's harness, shared through `#[path]`); no escape codes on a pipe.

mod common;
#[path = "../../core/image/tests/registry/mod.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, run, stderr, stdout};
use serde_json::json;
use sha2::Digest as _;

/// The binary; the image verbs start no box, so no helper is needed.
fn boxsock(env: &Env) -> Command {
    common::boxsock_in(env, Path::new("/nonexistent-helpers"))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

fn have(program: &str, package: &'static str) -> bool {
    registry::have(program, package, "skopeo")
}

/// A one-layer OCI image layout at `dir` (its file `hello` holds `text`), tagged `tag`;
/// returns the manifest digest.
fn layout(dir: &Path, text: &str, tag: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
        d
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "hello", text.as_bytes()).unwrap();
    let layer = b.into_inner().unwrap();
    let diff = put(&layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/cat", "/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    }))
    .unwrap();
    let config_d = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_d, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_d
}

fn skopeo(from: String, to: String) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(&from)
        .arg(&to)
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy {from} {to}: {}", common::stderr(&out));
}

fn import(env: &Env, path: &Path, extra: &[&str]) -> std::process::Output {
    run(boxsock(env).args(["image", "import"]).args(extra).arg(path))
}

/// The id and names `image import` printed, one image per line.
fn printed(o: &std::process::Output) -> Vec<String> {
    assert!(o.status.success(), "import failed ({}): {}", o.status, stderr(o));
    stdout(o).lines().map(str::to_owned).collect()
}

#[test]
fn image_import_takes_a_layout_an_oci_archive_and_a_docker_save_tarball() {
    let env = Env::new();
    let dir = env.root.path().join("layout");
    let id = layout(&dir, "hello from the layer\n", "v1");

    let o = import(&env, &dir, &["--name", "localhost/hello"]);
    assert_eq!(printed(&o), [format!("{id} localhost/hello:v1")]);
    let q = import(&env, &dir, &["--quiet", "--name", "localhost/hello"]);
    assert_eq!(printed(&q), std::slice::from_ref(&id), "--quiet prints the id alone");
    // The layer is unpacked in the home's image store.
    let diff_hex = {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("blobs/sha256").join(&id["sha256:".len()..])).unwrap(),
        )
        .unwrap();
        m["layers"][0]["digest"].as_str().unwrap()["sha256:".len()..].to_owned()
    };
    let unpacked: PathBuf = env.home.join("images/layers/sha256").join(diff_hex).join("root/hello");
    assert_eq!(std::fs::read_to_string(&unpacked).unwrap(), "hello from the layer\n");

    if !have("skopeo", "skopeo") {
        return;
    }
    let oci_archive = env.root.path().join("image.oci.tar");
    skopeo(
        format!("oci:{}:v1", dir.display()),
        format!("oci-archive:{}:v2", oci_archive.display()),
    );
    let o = import(&env, &oci_archive, &["--name", "localhost/archived"]);
    let lines = printed(&o);
    // skopeo may rewrite the manifest (so the id may differ); the name is the archive's.
    assert!(lines.len() == 1 && lines[0].ends_with(" localhost/archived:v2"), "{lines:?}");

    let docker = env.root.path().join("image.docker.tar");
    skopeo(
        format!("oci:{}:v1", dir.display()),
        format!("docker-archive:{}:localhost:5000/team/saved:3", docker.display()),
    );
    let o = import(&env, &docker, &[]);
    let lines = printed(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (docker_id, names) = lines[0].split_once(' ').unwrap();
    assert!(docker_id.starts_with("sha256:") && docker_id.len() == 71, "{docker_id}");
    // Every name of the image is printed; the tarball's is among them.
    assert!(names.split(' ').any(|n| n == "localhost:5000/team/saved:3"), "{names}");
    // Three imports of one layer: unpacked once, shared.
    let layers = std::fs::read_dir(env.home.join("images/layers/sha256")).unwrap().count();
    assert_eq!(
        layers,
        1,
        "{:?}",
        std::fs::read_dir(env.home.join("images/layers/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}

#[test]
fn image_import_of_something_else_names_the_path_and_exits_125() {
    let env = Env::new();
    let bad = env.root.path().join("not-an-image\u{1b}[2J.txt");
    std::fs::write(&bad, b"hello").unwrap();
    let o = import(&env, &bad, &[]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("not-an-image\\u{1b}[2J.txt"), "the path, escaped: {err}");
    assert!(!err.contains('\u{1b}'), "no raw escape: {err:?}");
    assert!(stdout(&o).is_empty());
    let missing = env.root.path().join("missing.tar");
    let o = import(&env, &missing, &[]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("missing.tar"), "{}", stderr(&o));
}

/// Pin a box row of the home's store to image `id` (what `create IMAGE` records), as
/// the store API writes it; returns the box id.
fn pin_box(env: &Env, name: &str, id: &str, diff: &str) -> String {
    use boxsock::boxsock_core::backend::{BoxImage, BoxSettings};
    use boxsock::boxsock_runtime::store::{BoxConfig, Store};
    let store = Store::open(env.home.join("boxsock.db")).unwrap();
    let mut settings = BoxSettings::default();
    settings.image = Some(BoxImage::new("localhost/hello:v1".into(), id.into(), vec![diff.into()]));
    let config = BoxConfig {
        strategy: "short-symlink".into(),
        backend: "host".into(),
        network: false,
        env: vec![],
        settings,
        process: Default::default(),
    };
    let box_id = boxsock::BoxId::generate();
    // Its directory too, as create makes it: a row without one is an interrupted
    // removal, which the next open finishes.
    let dir = env.home.join("boxes").join(box_id.as_str());
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .unwrap();
    std::fs::write(dir.join(".boxsock-box"), b"").unwrap();
    store.insert(&Store::new_record(box_id.clone(), Some(name.into()), config)).unwrap();
    box_id.to_string()
}

fn diff_of(layout: &Path, manifest: &str) -> String {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&manifest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_owned()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Allocated bytes of every file under `dir` (what prune counts as freed).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        n += m.blocks() * 512;
        if m.is_dir() {
            n += allocated(&e.path());
        }
    }
    n
}

#[test]
fn rmi_is_refused_while_a_box_pins_the_image_and_prune_keeps_what_boxes_use() {
    let env = Env::new();
    let dir = env.root.path().join("layout");
    let id = layout(&dir, "pinned\n", "v1");
    let diff = diff_of(&dir, &id);
    assert!(import(&env, &dir, &["--name", "localhost/hello"]).status.success());
    // The control: a second image nothing pins is removed at once.
    let other = env.root.path().join("other");
    layout(&other, "other\n", "v9");
    assert!(import(&env, &other, &["--name", "localhost/other"]).status.success());
    let o = run(boxsock(&env).args(["rmi", "localhost/other:v9"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("Deleted: sha256:"), "{}", stdout(&o));

    let box_id = pin_box(&env, "pinned-box", &id, &diff);
    let o = run(boxsock(&env).args(["rmi", "localhost/hello:v1"]));
    assert_eq!(o.status.code(), Some(125), "refused: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("used by 1 box(es): \"pinned-box\""), "names the box: {err}");
    assert!(err.contains("localhost/hello:v1"), "names the image: {err}");
    let images = run(boxsock(&env).args(["images", "--quiet"]));
    assert_eq!(stdout(&images).trim(), id, "still listed");

    // Forced: the record goes, the box's layers and blobs stay through a prune.
    let o = run(boxsock(&env).args(["rmi", "-f", "localhost/hello:v1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("Deleted: {id}"));
    let store = env.home.join("images");
    let layer = store.join("layers/sha256").join(&diff["sha256:".len()..]).join("root/hello");
    let o = run(boxsock(&env).args(["image", "prune"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(layer.is_file(), "a pinned layer survives prune: {}", stdout(&o));
    assert_eq!(entries(&store.join("blobs/sha256")), 3, "manifest, config, layer: {}", stdout(&o));

    // The box gone, prune frees them all and says how much.
    let db = boxsock::boxsock_runtime::store::Store::open(env.home.join("boxsock.db")).unwrap();
    assert!(db.delete(&box_id).unwrap());
    let expected = allocated(&store.join("blobs/sha256"))
        + allocated(&store.join("layers/sha256"))
        + std::fs::symlink_metadata(store.join("layers/sha256").join(&diff["sha256:".len()..]))
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap();
    let o = run(boxsock(&env).args(["image", "prune"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let freed: u64 =
        out.strip_prefix("freed ").unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(!layer.exists() && entries(&store.join("blobs/sha256")) == 0, "{out}");
    assert!(out.contains("3 blob(s), 1 layer(s)"), "{out}");
    assert!(freed > 0 && freed >= expected / 2 && freed <= expected * 2, "{freed} vs {expected}");
}

#[test]
fn save_round_trips_and_images_on_a_pipe_has_no_escape_codes() {
    let env = Env::new();
    let dir = env.root.path().join("layout");
    let id = layout(&dir, "round trip\n", "v1");
    assert!(import(&env, &dir, &["--name", "localhost/rt"]).status.success());
    let out = env.root.path().join("saved.tar");
    let o = run(boxsock(&env).args(["image", "save", "localhost/rt:v1", "-o"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let other = Env::new();
    let o = import(&other, &out, &[]);
    assert_eq!(printed(&o), [format!("{id} localhost/rt:v1")], "the same image back");

    let o = run(boxsock(&env).arg("images"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("localhost/rt:v1") && text.contains(&id["sha256:".len()..][..12]),
        "{text}"
    );
    for b in [&o.stdout, &o.stderr] {
        assert!(!b.contains(&0x1b) && !b.contains(&b'\r'), "escape codes on a pipe: {b:?}");
    }
    let v: serde_json::Value = serde_json::from_slice(
        &run(boxsock(&env).args(["image", "inspect", "localhost/rt:v1"])).stdout,
    )
    .unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["process"]["cmd"], json!(["/bin/cat", "/hello"]), "{v}");
    // A reference that names nothing: the error names it, escaped.
    let o = run(boxsock(&env).args(["image", "inspect", "nothing\u{1b}]0;x"]));
    assert_eq!(o.status.code(), Some(125));
    assert!(!stderr(&o).contains('\u{1b}') && stderr(&o).contains("nothing"), "{}", stderr(&o));
}

#[test]
fn pull_and_login_against_a_real_registry_without_escape_codes_on_a_pipe() {
    if !registry::tools() {
        return;
    }
    let env = Env::new();
    let dir = env.root.path().join("layout");
    let id = layout(&dir, "pulled\n", "v1");
    // No docker config of the machine's user leaks in.
    let pull = |env: &Env, r: &str| {
        run(boxsock(env).env("DOCKER_CONFIG", env.root.path().join("no-docker")).args(["pull", r]))
    };

    let reg = registry::Registry::start(registry::Auth::None);
    reg.push(&dir, "v1", "cli/hello:v1", false);
    let reference = reg.reference("cli/hello:v1");
    let o = pull(&env, &reference);
    assert!(o.status.success(), "{}", stderr(&o));
    // skopeo's push may rewrite the manifest: the id is the registry's.
    let (pulled, name) =
        stdout(&o).trim().split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap();
    assert!(pulled.starts_with("sha256:") && pulled.len() == 71, "{pulled}");
    assert_eq!(name, reference);
    let listed = run(boxsock(&env).args(["images", "-q"]));
    assert_eq!(stdout(&listed).trim(), pulled, "recorded in the home's store");
    for b in [&o.stdout, &o.stderr] {
        assert!(!b.contains(&0x1b) && !b.contains(&b'\r'), "progress on a pipe: {b:?}");
    }
    let diff = diff_of(&dir, &id);
    let layer = env.home.join("images/layers/sha256").join(&diff["sha256:".len()..]);
    assert_eq!(std::fs::read_to_string(layer.join("root/hello")).unwrap(), "pulled\n");

    // The positive control of "nothing on a pipe": the same pull on a terminal (a pty
    // made by util-linux's `script`) draws its bars and notes there.
    if have("script", "util-linux") {
        let fresh = Env::new();
        let cmd = format!("{} pull {reference}", env!("CARGO_BIN_EXE_boxsock"));
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("BOXSOCK_HOME", &fresh.home)
            .env("BOXSOCK_LINK_BASE", &fresh.link_base)
            .env("DOCKER_CONFIG", fresh.root.path().join("no-docker"))
            .env("TERM", "xterm")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let tty = common::text(&o.stdout);
        assert!(o.status.success(), "{tty}");
        assert!(tty.contains("unpacked") && tty.contains('\u{1b}'), "bars on a tty: {tty:?}");
    }

    // Basic auth: refused without credentials (the control), pulled after `login`.
    let auth = registry::Registry::start(registry::Auth::Basic);
    auth.push(&dir, "v1", "priv/hello:v1", false);
    let (user, password) = auth.creds.clone().unwrap();
    let env2 = Env::new();
    let reference = auth.reference("priv/hello:v1");
    let o = pull(&env2, &reference);
    assert_eq!(o.status.code(), Some(125), "anonymous pull of a private repo: {}", stdout(&o));
    assert!(stderr(&o).contains(&auth.addr), "names the registry: {}", stderr(&o));
    let mut login = boxsock(&env2);
    login.args(["login", "-u", &user, "--password-stdin", &auth.addr]);
    login.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    login.stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let auth_file = env2.home.join("auth.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&auth_file).unwrap().contains(&password), "base64'd");
    let o = pull(&env2, &reference);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().ends_with(&format!(" {reference}")), "{}", stdout(&o));
}

#[test]
fn a_corrupt_image_row_is_reported_and_the_good_ones_still_listed() {
    let env = Env::new();
    // A home that does not exist lists nothing and is not made.
    let o = run(boxsock(&env).arg("images"));
    assert!(o.status.success() && stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!env.home.exists());

    let dir = env.root.path().join("layout");
    let id = layout(&dir, "good\n", "v1");
    assert!(import(&env, &dir, &["--name", "localhost/good"]).status.success());
    let db = rusqlite::Connection::open(env.home.join("boxsock.db")).unwrap();
    db.execute_batch("INSERT INTO images VALUES ('sha256:not-hex\x1b[2J', 'x', '[]', 'p', 0, 1);")
        .unwrap();
    drop(db);
    let o = run(boxsock(&env).args(["images", "--quiet"]));
    assert!(o.status.success(), "never fatal: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), id, "the good row still listed");
    let err = stderr(&o);
    assert!(err.contains("stored row is corrupt") && err.contains("not-hex"), "{err}");
    assert!(!err.contains('\u{1b}'), "escaped: {err:?}");
    // Writes go on beside it.
    let other = env.root.path().join("other");
    layout(&other, "other\n", "v2");
    assert!(import(&env, &other, &["--name", "localhost/other"]).status.success());
    let o = run(boxsock(&env).args(["images", "--quiet"]));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

/// Every file under `dir` with its mode and whole bytes (hashed), links with their
/// targets, sorted; the SQLite shared-memory index, which a reader may create and
/// SQLite rewrites, aside.
fn bytes_of(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel.ends_with("-shm") {
                continue;
            }
            let what = if m.is_file() {
                sha256(&std::fs::read(&p).unwrap())
            } else if m.is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            out.push(format!("{rel} {:o} {what}", m.mode()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `images`, `image inspect` and `image save` open the home read-only: a home with a
/// dead box (which a writing open would record stopped and clean) and an image store
/// missing its work directories (which a writing open would make) is left byte for
/// byte as it was; a home of a future schema is refused naming both versions, and left
/// as it was too.
#[test]
fn read_only_image_verbs_never_write_the_home() {
    let env = Env::new();
    let dir = env.root.path().join("layout");
    let id = layout(&dir, "hello\n", "v1");
    assert!(import(&env, &dir, &["--name", "localhost/hello"]).status.success());
    // A host box whose process dies with no runtime watching.
    let b = common::ok(common::boxsock(&env).args(["--backend", "host", "create"]));
    let b = b.trim();
    common::ok(common::boxsock(&env).args(["start", b]));
    let i = common::json(common::boxsock(&env).args(["inspect", "--json", b]));
    let pid = i["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    common::wait_until("the box process to die", || !common::pid_running(pid));
    for sub in ["tmp", "locks"] {
        std::fs::remove_dir_all(env.home.join("images").join(sub)).unwrap();
    }
    let before = bytes_of(&env.home);
    let saved = env.root.path().join("saved.tar");
    for args in [
        &["images"][..],
        &["images", "--json"],
        &["images", "-q"],
        &["image", "inspect", "localhost/hello:v1"],
        &["image", "save", "-o", saved.to_str().unwrap(), "localhost/hello:v1"],
    ] {
        let o = run(boxsock(&env).args(args));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(bytes_of(&env.home), before, "{args:?} changed the home");
    }
    assert!(saved.is_file());
    let o = run(boxsock(&env).args(["images", "-q"]));
    assert_eq!(stdout(&o).trim(), id);
    // The control: a writing verb records the dead box and makes the directories.
    let o = run(boxsock(&env).args(["image", "prune"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(bytes_of(&env.home), before, "a writing verb changes this home");

    // A future schema: refused naming the versions, nothing written.
    let db = env.home.join("boxsock.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        c.pragma_update(None, "user_version", v + 1).unwrap();
    }
    let before = bytes_of(&env.home);
    for args in [&["images"][..], &["image", "inspect", "localhost/hello:v1"]] {
        let o = run(boxsock(&env).args(args));
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("version"), "{args:?}: {}", stderr(&o));
        assert_eq!(bytes_of(&env.home), before, "{args:?} changed a future-schema home");
    }
}
