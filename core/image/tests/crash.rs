//! `kill -9` in the middle of an unpack leaves the store consistent: no layer, no
//! image, no half-written blob that looks whole; the next open removes the leftovers and
//! the same import then succeeds. The child is this test binary, killed by the crate's
//! test hook (`BOXSOCK_IMAGE_CRASH_AT`, feature `test-support`) at a named step.

mod corpus;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use boxsock_image::{ImageStore, ImportOptions};
use corpus::{Layer, Tar};

const CHILD: &str = "BOXSOCK_IMAGE_CRASH_CHILD";

/// Not a test on its own: the import a parent kills, run in a child.
#[test]
fn child_imports() {
    let Some(dir) = std::env::var_os(CHILD) else { return };
    let dir = Path::new(&dir);
    let store = ImageStore::open(dir.join("store")).unwrap();
    store
        .import(
            &dir.join("layout"),
            &ImportOptions { name: Some("localhost/c".into()), ..Default::default() },
        )
        .unwrap();
}

fn run_child(dir: &Path, step: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_imports", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir)
        .env("BOXSOCK_IMAGE_CRASH_AT", step)
        .status()
        .unwrap()
}

fn killed_at(step: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tar::new();
    for i in 0..500 {
        t.file(format!("f{i}"), b"data");
    }
    let layer = Layer::gzip(t.finish());
    corpus::simple_layout(&tmp.path().join("layout"), std::slice::from_ref(&layer), "t");

    let status = run_child(tmp.path(), step);
    assert_eq!(status.signal(), Some(9), "the child was not killed at {step}: {status:?}");
    // The kill left work in progress behind (the control: there was something to clean).
    let left = corpus::tree(&tmp.path().join("store/tmp"));
    assert!(!left.is_empty(), "nothing was in progress at {step}");
    assert!(corpus::tree(&tmp.path().join("store/layers/sha256")).is_empty());

    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    assert!(corpus::tree(&tmp.path().join("store/tmp")).is_empty(), "open left {left:?}");
    assert!(store.list().unwrap().is_empty());
    // Every blob present is whole and right.
    for b in corpus::tree(&tmp.path().join("store/blobs/sha256")) {
        let bytes = std::fs::read(tmp.path().join("store/blobs/sha256").join(&b)).unwrap();
        assert_eq!(boxsock_image::Digest::of(&bytes).hex(), b);
    }
    let r = store
        .import(
            &tmp.path().join("layout"),
            &ImportOptions { name: Some("localhost/c".into()), ..Default::default() },
        )
        .unwrap();
    assert_eq!(r[0].unpacked, [(layer.diff_id(), layer.tar.len() as u64)]);
    assert!(store.layers("localhost/c:t").unwrap()[0].join("f499").is_file());
}

#[test]
fn kill_9_in_the_middle_of_an_unpack() {
    killed_at("unpack-mid");
}

#[test]
fn kill_9_after_the_unpack_before_the_rename() {
    killed_at("unpack-before-rename");
}

#[test]
fn kill_9_while_a_blob_is_written() {
    killed_at("blob-write");
}
