//! Import without a registry (an OCI layout directory, an OCI archive, a `docker save`
//! tarball) and save as an OCI archive, round-tripped.

mod corpus;

use std::fs;
use std::io::Write;
use std::path::Path;

use boxsock_image::{Digest, ImageError, ImageStore, ImportOptions};
use corpus::{Layer, Tar};
use serde_json::json;

/// A tar of every file under `dir` (names relative, `./`-less), gzip'd when asked.
fn tar_dir(dir: &Path, out: &Path, gzip: bool) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    let bytes = b.into_inner().unwrap();
    let bytes = if gzip { corpus::gzip(&bytes) } else { bytes };
    fs::write(out, bytes).unwrap();
}

fn two_layers() -> Vec<Layer> {
    vec![
        Layer::gzip(Tar::new().file("etc/base", b"base").file("etc/gone", b"x").finish()),
        Layer::zstd(Tar::new().whiteout("etc", "gone").file("etc/top", b"top").finish()),
    ]
}

#[test]
fn an_oci_archive_imports_like_its_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    corpus::simple_layout(&layout, &two_layers(), "v1");
    for gzip in [false, true] {
        let archive = tmp.path().join(format!("image-{gzip}.tar"));
        tar_dir(&layout, &archive, gzip);
        let s = ImageStore::open(tmp.path().join(format!("store-{gzip}"))).unwrap();
        let opts = ImportOptions { name: Some("localhost/arch".into()), ..Default::default() };
        let r = s.import(&archive, &opts).unwrap();
        assert_eq!(r[0].image.names, ["localhost/arch:v1"]);
        let layers = s.layers("localhost/arch:v1").unwrap();
        assert_eq!(fs::read(layers[1].join("etc/top")).unwrap(), b"top");
        assert!(layers[1].join("etc/.wh.gone").is_file());
    }
}

#[test]
fn a_docker_save_tarball_imports_with_its_repo_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = Tar::new().file("bin/sh", b"sh").finish();
    let l2 = Tar::new().file("app", b"app").finish();
    let diff: Vec<String> = [&l1, &l2].iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": corpus::host_arch(), "os": "linux",
        "config": {"Cmd": ["/app"], "Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": diff},
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": ["busybox:save", "localhost:5000/team/app:2"],
        // The second layer is reached through a symlink, as older docker writes repeats.
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &config);
    add("aaa/layer.tar", &l1);
    add("ccc/layer.tar", &l2);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add("repositories", b"{}");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "bbb/layer.tar", "../ccc/layer.tar").unwrap();
    let path = tmp.path().join("saved.tar");
    fs::File::create(&path).unwrap().write_all(&b.into_inner().unwrap()).unwrap();

    let s = ImageStore::open(tmp.path().join("store")).unwrap();
    let r = s.import(&path, &ImportOptions::default()).unwrap();
    assert_eq!(r[0].image.names, ["docker.io/library/busybox:save", "localhost:5000/team/app:2"]);
    let info = s.inspect("busybox:save").unwrap();
    assert_eq!(info.config.cmd, ["/app"]);
    let layers = s.layers("localhost:5000/team/app:2").unwrap();
    assert_eq!(fs::read(layers[1].join("app")).unwrap(), b"app");
}

#[test]
fn save_writes_an_oci_archive_that_imports_back_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    corpus::simple_layout(&layout, &two_layers(), "v1");
    let a = ImageStore::open(tmp.path().join("a")).unwrap();
    let opts = ImportOptions { name: Some("localhost/rt".into()), ..Default::default() };
    let id = a.import(&layout, &opts).unwrap().remove(0).image.id;
    let out = tmp.path().join("out.tar");
    a.save("localhost/rt:v1", &out).unwrap();
    // Only the archive is left beside it (the temporary was renamed).
    let beside: Vec<_> =
        fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(beside.iter().all(|n| !n.to_string_lossy().starts_with(".boxsock-save")), "{beside:?}");

    let b = ImageStore::open(tmp.path().join("b")).unwrap();
    let r = b.import(&out, &ImportOptions::default()).unwrap();
    assert_eq!(r[0].image.id, id, "the same manifest, byte for byte");
    assert_eq!(r[0].image.names, ["localhost/rt:v1"]);
    assert_eq!(b.list().unwrap()[0].layers, a.list().unwrap()[0].layers);

    // A blob damaged in the store is caught while saving, and no archive appears.
    let blob = a.blob_path(&a.list().unwrap()[0].layers[0].blob);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&blob, bytes).unwrap();
    let err = a.save("localhost/rt:v1", &tmp.path().join("bad.tar")).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(!tmp.path().join("bad.tar").exists());
}

#[test]
fn something_else_is_refused_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("not-an-image.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    b.append_data(&mut h, "hello", &b"hi"[..]).unwrap();
    fs::write(&p, b.into_inner().unwrap()).unwrap();
    let s = ImageStore::open(tmp.path().join("store")).unwrap();
    let err = s.import(&p, &ImportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("not-an-image.tar") && err.contains("neither an OCI layout"), "{err}");
    fs::write(&p, b"garbage, not a tar at all, more than 512 bytes? no").unwrap();
    assert!(s.import(&p, &ImportOptions::default()).is_err());
}
