//! The store on good images: layers unpacked once (shared by diff id) with everything a
//! layer can hold; gzip, zstd and plain streams; whiteout markers; prune and remove.

mod corpus;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use boxsock_image::{ImageStore, ImportOptions, Removed};
use corpus::{Layer, Tar};
use serde_json::json;

fn store(tmp: &tempfile::TempDir) -> ImageStore {
    ImageStore::open(tmp.path().join("store")).unwrap()
}

fn named(name: &str) -> ImportOptions {
    ImportOptions { name: Some(name.into()), ..Default::default() }
}

fn base_layer() -> Vec<u8> {
    Tar::new()
        .dir("bin")
        .file_mode("bin/busybox", b"\x7fELF fake busybox", 0o755)
        .hardlink("bin/sh", "bin/busybox")
        .symlink("bin/ls", "busybox")
        .symlink("etc-link", "/etc")
        .dir("etc")
        .file("etc/os-release", b"ID=corpus\n")
        .file("etc/gone", b"deleted by the upper layer\n")
        .dir("var/cache")
        .file("var/cache/a", b"a")
        .file_mode("usr/bin/su", b"setuid", 0o4755)
        .dir_mode("tmp", 0o1777)
        .fifo("run-fifo")
        .chardev("dev-null", 1, 3)
        .file_xattrs("with-xattr", b"x", &[("user.boxsock", b"kept")])
        .finish()
}

fn upper_layer() -> Vec<u8> {
    Tar::new().whiteout("etc", "gone").opaque("var/cache").file("var/cache/b", b"b").finish()
}

#[test]
fn a_two_layer_image_unpacks_with_everything_a_layer_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp);
    corpus::simple_layout(
        &tmp.path().join("layout"),
        &[Layer::gzip(base_layer()), Layer::zstd(upper_layer())],
        "two",
    );
    let reports = s.import(&tmp.path().join("layout"), &named("localhost/corpus")).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.image.names, ["localhost/corpus:two"]);
    assert_eq!(r.unpacked.len(), 2);
    assert!(
        r.notes.iter().any(|n| n.contains("device node") && n.contains("dev-null")),
        "{:?}",
        r.notes
    );

    let layers = s.layers("localhost/corpus:two").unwrap();
    assert_eq!(layers.len(), 2);
    let (base, upper) = (&layers[0], &layers[1]);
    // Hard link: one inode.
    let a = fs::metadata(base.join("bin/busybox")).unwrap();
    let b = fs::metadata(base.join("bin/sh")).unwrap();
    assert_eq!((a.ino(), a.mode() & 0o7777), (b.ino(), 0o755));
    // Symlinks stay literal, even absolute ones: nothing is resolved on the host.
    assert_eq!(fs::read_link(base.join("bin/ls")).unwrap().to_str(), Some("busybox"));
    assert_eq!(fs::read_link(base.join("etc-link")).unwrap().to_str(), Some("/etc"));
    // Set-id and sticky bits survive.
    assert_eq!(fs::metadata(base.join("usr/bin/su")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    // Parents the layer left out are made 0755.
    assert_eq!(fs::metadata(base.join("usr")).unwrap().mode() & 0o7777, 0o755);
    assert!(fs::symlink_metadata(base.join("run-fifo")).unwrap().file_type().is_fifo());
    assert!(!base.join("dev-null").exists(), "device nodes are skipped");
    assert_eq!(
        xattr::get(base.join("with-xattr"), "user.boxsock").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(fs::metadata(base.join("etc/os-release")).unwrap().mtime(), 1_700_000_000);
    // Whiteouts stay as OCI markers for the stacking to apply.
    assert!(fs::metadata(upper.join("etc/.wh.gone")).unwrap().is_file());
    assert!(fs::metadata(upper.join("var/cache/.wh..wh..opq")).unwrap().is_file());
    assert_eq!(fs::read(upper.join("var/cache/b")).unwrap(), b"b");
    // The layer's wrapper is read-only.
    let wrapper = base.parent().unwrap();
    assert_eq!(fs::metadata(wrapper).unwrap().permissions().mode() & 0o777, 0o555);

    let info = s.inspect("localhost/corpus:two").unwrap();
    assert_eq!(info.config.cmd, ["sh"]);
    assert_eq!(info.record.platform, format!("linux/{}", corpus::host_arch()));
}

#[test]
fn ownership_is_kept_as_root() {
    if !nix::unistd::Uid::effective().is_root() {
        boxsock_test_support::skip(boxsock_test_support::Need::Root, "chown of unpacked files");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp);
    let tar = Tar::new().file_owned("owned", b"x", 0o2750, 1234, 5678).finish();
    corpus::simple_layout(&tmp.path().join("l"), &[Layer::plain(tar)], "t");
    s.import(&tmp.path().join("l"), &named("localhost/own")).unwrap();
    let m = fs::metadata(s.layers("localhost/own:t").unwrap()[0].join("owned")).unwrap();
    // The set-gid bit survives the chown (chmod comes after it).
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o2750));
}

#[test]
fn plain_gzip_and_zstd_streams_give_one_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp);
    let tar = Tar::new().file("f", b"same bytes").finish();
    let mut seen = Vec::new();
    for (i, layer) in [Layer::plain(tar.clone()), Layer::gzip(tar.clone()), Layer::zstd(tar)]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("l{i}"));
        corpus::simple_layout(&dir, &[layer], "t");
        let r = s.import(&dir, &named(&format!("localhost/c{i}"))).unwrap();
        seen.push(r[0].unpacked.len());
    }
    // Three blobs, one diff id: unpacked by the first import only.
    assert_eq!(seen, [1, 0, 0]);
    let l: Vec<_> = (0..3).map(|i| s.layers(&format!("localhost/c{i}:t")).unwrap()).collect();
    assert!(l[0] == l[1] && l[1] == l[2], "{l:?}");
}

#[test]
fn a_second_image_sharing_the_base_unpacks_none_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp);
    let base = Layer::gzip(base_layer());
    let top_a = Layer::gzip(Tar::new().file("a", b"a").finish());
    let top_b = Layer::gzip(Tar::new().file("b", b"b").finish());
    corpus::simple_layout(&tmp.path().join("a"), &[base.clone(), top_a], "t");
    corpus::simple_layout(&tmp.path().join("b"), &[base.clone(), top_b.clone()], "t");
    let ra = s.import(&tmp.path().join("a"), &named("localhost/a")).unwrap();
    assert_eq!(ra[0].unpacked.len(), 2);
    let events = std::sync::Mutex::new(Vec::new());
    let progress = |p: &boxsock_image::Progress| events.lock().unwrap().push(p.clone());
    let rb = s
        .import_with_progress(&tmp.path().join("b"), &named("localhost/b"), Some(&progress))
        .unwrap();
    // Only the new top layer was unpacked; the base reported present.
    assert_eq!(rb[0].unpacked, [(top_b.diff_id(), top_b.tar.len() as u64)]);
    let events = events.into_inner().unwrap();
    assert!(
        events.contains(&boxsock_image::Progress::LayerPresent { diff_id: base.diff_id() }),
        "{events:?}"
    );
    assert_eq!(s.layers("localhost/a:t").unwrap()[0], s.layers("localhost/b:t").unwrap()[0]);
}

#[test]
fn remove_then_prune_frees_what_no_image_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp);
    let big = vec![7u8; 256 << 10];
    let base = Layer::gzip(Tar::new().file("big", &big).finish());
    let top = Layer::plain(Tar::new().file("top", &big).finish());
    corpus::simple_layout(&tmp.path().join("a"), std::slice::from_ref(&base), "t");
    corpus::simple_layout(&tmp.path().join("b"), &[base, top], "t");
    s.import(&tmp.path().join("a"), &named("localhost/a")).unwrap();
    let b = s.import(&tmp.path().join("b"), &named("localhost/b")).unwrap().remove(0);
    assert_eq!(s.prune().unwrap().layers, 0, "everything is in use");

    assert_eq!(s.remove("localhost/b:t").unwrap(), Removed::Deleted(b.image.id.clone()));
    let p = s.prune().unwrap();
    // b's manifest, config, top blob and top layer go; the shared base stays for a.
    assert_eq!((p.blobs, p.layers), (3, 1));
    // The top layer is 256 KiB twice (blob and unpacked file).
    assert!(p.bytes_freed >= 2 * (256 << 10), "{p:?}");
    assert!(s.layers("localhost/a:t").unwrap()[0].join("big").is_file());
    assert!(matches!(s.resolve("localhost/b:t"), Err(boxsock_image::ImageError::NotFound { .. })));
}

#[test]
fn names_resolve_by_tag_id_and_prefix_and_a_tag_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp);
    for (i, body) in [b"one", b"two"].iter().enumerate() {
        let dir = tmp.path().join(format!("l{i}"));
        corpus::simple_layout(
            &dir,
            &[Layer::plain(Tar::new().file("f", *body).finish())],
            "latest",
        );
        s.import(&dir, &named("localhost/app")).unwrap();
    }
    let all = s.list().unwrap();
    assert_eq!(all.len(), 2);
    // The second import took the tag; the first image stays, by id.
    assert!(all[0].names.is_empty());
    assert_eq!(s.resolve("localhost/app").unwrap().id, all[1].id);
    assert_eq!(s.resolve(&all[0].id.hex()[..12]).unwrap().id, all[0].id);
    assert_eq!(s.resolve(&all[0].id.to_string()).unwrap().id, all[0].id);
    assert!(matches!(s.resolve("abc"), Err(boxsock_image::ImageError::NotFound { .. })));
}

#[test]
fn an_index_resolves_to_this_platform_or_names_the_ones_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    let mut l = corpus::Layout::new(&dir);
    let mine = l.image(
        &[Layer::plain(Tar::new().file("mine", b"").finish())],
        corpus::host_arch(),
        json!({}),
    );
    let other =
        l.image(&[Layer::plain(Tar::new().file("other", b"").finish())], "s390x", json!({}));
    let index = l.index(vec![other.clone(), mine]);
    l.tag(index, "multi");
    let s = store(&tmp);
    s.import(&dir, &named("localhost/multi")).unwrap();
    assert!(s.layers("localhost/multi:multi").unwrap()[0].join("mine").exists());

    let dir2 = tmp.path().join("foreign");
    let mut l2 = corpus::Layout::new(&dir2);
    let other =
        l2.image(&[Layer::plain(Tar::new().file("other", b"").finish())], "s390x", json!({}));
    let riscv = l2.image(&[Layer::plain(Tar::new().file("r", b"").finish())], "riscv64", json!({}));
    let index = l2.index(vec![other, riscv]);
    l2.tag(index, "x");
    let err = s.import(&dir2, &named("localhost/foreign")).unwrap_err().to_string();
    assert!(err.contains("linux/s390x") && err.contains("linux/riscv64"), "{err}");
    assert!(err.contains(&format!("linux/{}", corpus::host_arch())), "{err}");
}
