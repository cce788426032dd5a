//! An image's root (`ImageStore::ensure_root`): the layers merged with OCI whiteouts
//! applied, every file a hard link to its layer's file, nothing written in a layer.

mod corpus;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use boxsock_image::{ImageStore, ImportOptions};
use corpus::{Layer, Tar};

/// Three layers: the base; one that deletes a file and a directory (whiteouts) and
/// replaces a directory's content (opaque) while adding to it; one that brings back a
/// deleted name as a file of its own and replaces a directory by a file.
fn layers() -> Vec<Layer> {
    vec![
        Layer::gzip(
            Tar::new()
                .dir("etc")
                .file("etc/keep", b"keep")
                .file("etc/gone", b"deleted by the next layer")
                .dir("var")
                .file("var/old", b"hidden by the opaque marker")
                .dir("var/sub")
                .file("var/sub/deep", b"hidden too")
                .dir("tree")
                .file("tree/inside", b"deleted with its directory")
                .dir("will-be-file")
                .file("will-be-file/x", b"x")
                .file("back", b"first")
                .finish(),
        ),
        Layer::zstd(
            Tar::new()
                .whiteout("etc", "gone")
                .whiteout("", "tree")
                .whiteout("", "back")
                .opaque("var")
                .file("var/new", b"the opaque layer's own")
                .file("etc/added", b"added")
                .finish(),
        ),
        Layer::plain(
            Tar::new().file("back", b"second").file("will-be-file", b"now a file").finish(),
        ),
    ]
}

fn import(tmp: &Path) -> (ImageStore, boxsock_image::ImageRecord) {
    let layout = tmp.join("layout");
    corpus::simple_layout(&layout, &layers(), "v1");
    let store = ImageStore::open(tmp.join("store")).unwrap();
    let opts = ImportOptions { name: Some("localhost/wh".into()), ..Default::default() };
    store.import(&layout, &opts).unwrap();
    let rec = store.resolve("localhost/wh:v1").unwrap();
    (store, rec)
}

#[test]
fn whiteouts_and_opaque_directories_take_effect_and_markers_are_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, rec) = import(tmp.path());
    let diff_ids: Vec<_> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
    let before: Vec<Vec<String>> =
        diff_ids.iter().map(|d| corpus::tree(&store.layer_path(d))).collect();
    let r = store.ensure_root(&rec.id, &diff_ids).unwrap();
    assert!(r.built);
    assert_eq!(r.path, store.root_path(&rec.id));
    assert_eq!(
        corpus::tree(&r.path),
        ["back", "etc", "etc/added", "etc/keep", "var", "var/new", "will-be-file",],
        "deleted names absent, opaque content hidden, no marker shown"
    );
    assert_eq!(fs::read(r.path.join("back")).unwrap(), b"second");
    assert_eq!(fs::read(r.path.join("will-be-file")).unwrap(), b"now a file");
    assert_eq!(fs::read(r.path.join("var/new")).unwrap(), b"the opaque layer's own");
    // Nothing copied: each file is its layer's inode.
    let keep = fs::metadata(r.path.join("etc/keep")).unwrap();
    let in_layer = fs::metadata(store.layer_path(&diff_ids[0]).join("etc/keep")).unwrap();
    assert_eq!((keep.dev(), keep.ino()), (in_layer.dev(), in_layer.ino()));
    // The layers still hold exactly what they held, markers included.
    let after: Vec<Vec<String>> =
        diff_ids.iter().map(|d| corpus::tree(&store.layer_path(d))).collect();
    assert_eq!(before, after);
    assert!(after[1].iter().any(|p| p == "etc/.wh.gone"), "{:?}", after[1]);
    // Built once: a second call finds it.
    let again = store.ensure_root(&rec.id, &diff_ids).unwrap();
    assert!(!again.built);
}

/// The positive control: a naive stacking that copies the layers bottom first without
/// applying the markers shows the deleted file and the markers. The merge is what
/// removes them.
#[test]
fn a_naive_stacking_shows_what_the_whiteouts_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, rec) = import(tmp.path());
    let naive = tmp.path().join("naive");
    for l in &rec.layers {
        let src = store.layer_path(&l.diff_id);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(&naive)
            .status();
        match status {
            Ok(s) if s.success() => {}
            // `will-be-file` is a directory below and a file above: cp refuses; the
            // control has shown enough by then.
            _ => {}
        }
    }
    let tree = corpus::tree(&naive);
    assert!(tree.iter().any(|p| p == "etc/gone"), "{tree:?}");
    assert!(tree.iter().any(|p| p == "etc/.wh.gone"), "{tree:?}");
    assert!(tree.iter().any(|p| p == "var/old"), "{tree:?}");
}

#[test]
fn prune_removes_the_root_of_a_removed_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, rec) = import(tmp.path());
    let diff_ids: Vec<_> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
    let r = store.ensure_root(&rec.id, &diff_ids).unwrap();
    store.prune().unwrap();
    assert!(r.path.is_dir(), "a root of a listed image stays");
    store.remove("localhost/wh:v1").unwrap();
    let pruned = store.prune().unwrap();
    assert!(!r.path.exists(), "the root went with its image");
    assert!(pruned.bytes_freed > 0);
}
