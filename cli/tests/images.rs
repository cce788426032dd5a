//! The image verbs through the real binary: `image import` of an OCI layout directory,
//! an OCI archive and a `docker save` tarball (the archives made by Debian's `skopeo`
//! from a layout the test writes), on temp homes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use boxsock_test_support::{Need, skip};
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
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if !found {
        skip(Need::Program { name: "skopeo", package }, format!("{program} is not on PATH"));
    }
    found
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
    assert_eq!(printed(&q), [id.clone()], "--quiet prints the id alone");
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
