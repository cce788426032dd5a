//! The hostile-layer corpus: each case is a layer or layout built by `corpus`, imported
//! into a store, and must fail with its own error while nothing outside the store
//! changes. Cases that attack the file system first run a naive unpacker (joins names
//! onto the root, follows symlinks) on the same bytes, against a stand-in host
//! directory, and fail if the attack does not land there: the case is real.

mod corpus;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use boxsock_image::{ImageError, ImageStore, ImportOptions, UnpackLimits};
use corpus::{Layer, Tar};

struct Case {
    tmp: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("host")).unwrap();
        fs::write(tmp.path().join("host/secret"), b"original").unwrap();
        Case { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The stand-in for a host directory an attack aims at.
    fn host(&self) -> PathBuf {
        self.path().join("host")
    }

    /// Everything under the case directory except the store: must not change.
    fn outside(&self) -> Vec<String> {
        corpus::tree(self.path())
            .into_iter()
            .filter(|p| !p.starts_with("store"))
            .collect::<Vec<_>>()
            .into_iter()
            .chain(std::iter::once(
                String::from_utf8_lossy(&fs::read(self.host().join("secret")).unwrap())
                    .into_owned(),
            ))
            .collect()
    }

    /// Import `layer` as a one-layer image with `limits`; returns the error. Checks
    /// that nothing outside the store changed and that the store holds no trace.
    fn import_fails(&self, layer: Layer, limits: UnpackLimits) -> ImageError {
        let layout = self.path().join("layout");
        corpus::simple_layout(&layout, &[layer], "t");
        let before = self.outside();
        let store = ImageStore::open(self.path().join("store")).unwrap().with_limits(limits);
        let err = store
            .import(
                &layout,
                &ImportOptions { name: Some("localhost/hostile".into()), ..Default::default() },
            )
            .expect_err("a hostile layer was accepted");
        assert_eq!(self.outside(), before, "something outside the store changed: {err}");
        assert!(store.list().unwrap().is_empty(), "an image was recorded: {err}");
        let layers = corpus::tree(&self.path().join("store/layers/sha256"));
        assert!(layers.is_empty(), "a layer was left: {layers:?}");
        let tmp = corpus::tree(&self.path().join("store/tmp"));
        assert!(tmp.is_empty(), "work in progress was left: {tmp:?}");
        fs::remove_dir_all(&layout).unwrap();
        err
    }

    /// Run the naive unpacker on `tar` into `<case>/naive/root`.
    fn naive(&self, tar: &[u8]) {
        let root = self.path().join("naive/root");
        fs::create_dir_all(&root).unwrap();
        naive_unpack(tar, &root);
    }

    fn host_changed(&self) -> bool {
        fs::read(self.host().join("secret")).unwrap() != b"original"
            || fs::read_dir(self.host()).unwrap().count() != 1
    }

    fn reset_host(&self) {
        fs::remove_dir_all(self.host()).unwrap();
        fs::create_dir(self.host()).unwrap();
        fs::write(self.host().join("secret"), b"original").unwrap();
        let _ = fs::remove_dir_all(self.path().join("naive"));
        let _ = fs::remove_file(self.path().join("escape"));
    }
}

/// The victim the corpus is checked against: what a hand-written extractor does when it
/// trusts names (joins them onto the root) and the file system (follows symlinks).
fn naive_unpack(tar: &[u8], root: &Path) {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let Ok(mut e) = e else { return };
        let name = e.path_bytes().into_owned();
        let p = root.join(OsStr::from_bytes(&name));
        if let Some(parent) = p.parent() {
            let _ = fs::create_dir_all(parent);
        }
        match e.header().entry_type() {
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                let _ = fs::write(&p, data);
            }
            tar::EntryType::Directory => {
                let _ = fs::create_dir_all(&p);
            }
            tar::EntryType::Symlink => {
                let t = e.link_name_bytes().unwrap().into_owned();
                let _ = std::os::unix::fs::symlink(OsStr::from_bytes(&t), &p);
            }
            tar::EntryType::Link => {
                let t = e.link_name_bytes().unwrap().into_owned();
                let _ = fs::hard_link(root.join(OsStr::from_bytes(&t)), &p);
            }
            _ => {}
        }
    }
}

fn unsafe_entry(err: &ImageError) -> (&str, &str) {
    match err {
        ImageError::UnsafeEntry { entry, reason, .. } => (entry.as_str(), reason.as_str()),
        other => panic!("expected UnsafeEntry, got {other:?}: {other}"),
    }
}

#[test]
fn dot_dot_entries_are_refused() {
    let c = Case::new();
    let tar = Tar::new().file("ok", b"").file("../../host/dotdot", b"pwned").finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker did not escape");
    c.reset_host();
    let err = c.import_fails(Layer::gzip(tar), UnpackLimits::default());
    let (entry, reason) = unsafe_entry(&err);
    assert_eq!((entry, reason), ("\"../../host/dotdot\"", "`..` component"));
}

#[test]
fn absolute_entries_are_refused() {
    let c = Case::new();
    let target = c.host().join("abs");
    let tar = Tar::new().file(target.as_os_str().as_bytes(), b"pwned").finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker did not write the absolute path");
    c.reset_host();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    assert_eq!(unsafe_entry(&err).1, "absolute path");
}

#[test]
fn a_file_written_through_a_symlink_to_a_host_directory_is_refused() {
    let c = Case::new();
    let tar = Tar::new()
        .symlink("etc", c.host().as_os_str().as_bytes())
        .file("etc/passwd", b"pwned")
        .finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker did not write through the link");
    c.reset_host();
    let err = c.import_fails(Layer::gzip(tar), UnpackLimits::default());
    assert_eq!(unsafe_entry(&err), ("\"etc/passwd\"", "its path goes through a symlink"));
}

#[test]
fn a_file_written_through_a_symlink_to_the_real_etc_is_refused() {
    let c = Case::new();
    let name = format!("boxsock-corpus-{}", std::process::id());
    let tar = Tar::new().symlink("etc", "/etc").file(format!("etc/{name}"), b"pwned").finish();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    assert_eq!(unsafe_entry(&err).1, "its path goes through a symlink");
    assert!(!Path::new("/etc").join(&name).exists());
}

#[test]
fn a_directory_made_through_a_relative_symlink_is_refused() {
    let c = Case::new();
    let tar = Tar::new().symlink("up", "../../host").dir("up/made").finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker did not make the directory");
    c.reset_host();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    assert_eq!(unsafe_entry(&err).1, "its path goes through a symlink");
}

#[test]
fn a_hard_link_to_a_host_file_is_refused() {
    let c = Case::new();
    let secret = c.host().join("secret");
    let tar =
        Tar::new().hardlink("hl", secret.as_os_str().as_bytes()).file("hl", b"pwned").finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker did not rewrite the host file");
    c.reset_host();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    let (entry, reason) = unsafe_entry(&err);
    assert_eq!(entry, "\"hl\"");
    assert!(reason.contains("outside the layer"), "{reason}");

    let tar = Tar::new().hardlink("hl", "../../host/secret").file("hl", b"pwned").finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the relative hard link did not land");
    c.reset_host();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    assert!(unsafe_entry(&err).1.contains("outside the layer"), "{err}");
}

#[test]
fn a_hard_link_through_a_symlink_is_refused() {
    let c = Case::new();
    let tar = Tar::new()
        .symlink("h", c.host().as_os_str().as_bytes())
        .hardlink("hl", "h/secret")
        .file("hl", b"pwned")
        .finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker did not follow the link");
    c.reset_host();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    assert!(unsafe_entry(&err).1.contains("not a file of this layer"), "{err}");
}

#[test]
fn a_hard_link_to_a_symlink_links_the_symlink_not_its_target() {
    // Not refused (a link to a link is legal), but the host file is never touched:
    // the later file entry replaces the name, it does not write through it.
    let c = Case::new();
    let secret = c.host().join("secret");
    let tar = Tar::new()
        .symlink("s", secret.as_os_str().as_bytes())
        .hardlink("h", "s")
        .file("h", b"pwned")
        .finish();
    c.naive(&tar);
    assert!(c.host_changed(), "control: the naive unpacker wrote through the link");
    c.reset_host();
    let before = c.outside();
    let layout = c.path().join("layout");
    corpus::simple_layout(&layout, &[Layer::plain(tar)], "t");
    let store = ImageStore::open(c.path().join("store")).unwrap();
    store
        .import(&layout, &ImportOptions { name: Some("localhost/l".into()), ..Default::default() })
        .unwrap();
    fs::remove_dir_all(&layout).unwrap();
    assert_eq!(c.outside(), before);
    let root = &store.layers("localhost/l:t").unwrap()[0];
    assert_eq!(fs::read(root.join("h")).unwrap(), b"pwned");
    assert_eq!(fs::read_link(root.join("s")).unwrap(), secret);
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let c = Case::new();
    let tar = Tar::new().file("zeros", &vec![0u8; 8 << 20]).finish();
    let layer = Layer::gzip(tar);
    assert!(layer.blob.len() < 64 << 10, "control: the bomb is small compressed");
    let limits = UnpackLimits { max_bytes: 1 << 20, ..Default::default() };
    let err = c.import_fails(layer.clone(), limits);
    assert!(
        matches!(&err, ImageError::LayerTooLarge { limit, .. } if *limit == 1 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("1048576 bytes"), "{err}");
    // The same layer under the default limit unpacks: the limit is what stopped it.
    let layout = c.path().join("ok");
    corpus::simple_layout(&layout, &[layer], "t");
    ImageStore::open(c.path().join("store2"))
        .unwrap()
        .import(&layout, &ImportOptions::default())
        .unwrap();
}

#[test]
fn a_blob_whose_digest_differs_is_refused() {
    let c = Case::new();
    let layout = c.path().join("layout");
    let tar = Tar::new().file("f", b"genuine").finish();
    let l = corpus::simple_layout(&layout, &[Layer::plain(tar)], "t");
    // Same size, one byte changed: a tar any unpacker takes.
    let blob = l.blob_path(&Layer::plain(Tar::new().file("f", b"genuine").finish()).digest());
    let mut bytes = fs::read(&blob).unwrap();
    let at = bytes.windows(7).position(|w| w == b"genuine").unwrap();
    bytes[at] = b'G';
    fs::write(&blob, &bytes).unwrap();
    c.naive(&bytes);
    assert_eq!(fs::read(c.path().join("naive/root/f")).unwrap(), b"Genuine", "control");
    let store = ImageStore::open(c.path().join("store")).unwrap();
    let err = store.import(&layout, &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(store.list().unwrap().is_empty());
    assert!(
        corpus::tree(&c.path().join("store/blobs/sha256")).iter().all(|b| !bytes_named(&bytes, b))
    );
}

fn bytes_named(bytes: &[u8], name: &str) -> bool {
    boxsock_image::Digest::of(bytes).hex() == name
}

#[test]
fn a_wrong_diff_id_is_refused_and_leaves_no_layer() {
    let c = Case::new();
    let layout = c.path().join("layout");
    let mut l = corpus::Layout::new(&layout);
    let good = Layer::plain(Tar::new().file("f", b"x").finish());
    let mut lying = good.clone();
    lying.tar = Tar::new().file("f", b"y").finish(); // the config will claim this diff id
    let desc = l.image(
        &[Layer { blob: good.blob.clone(), ..lying }],
        corpus::host_arch(),
        serde_json::json!({}),
    );
    l.tag(desc, "t");
    let store = ImageStore::open(c.path().join("store")).unwrap();
    let err = store.import(&layout, &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { what, .. } if what.contains("diff id")),
        "{err:?}"
    );
    assert!(corpus::tree(&c.path().join("store/layers/sha256")).is_empty());
    assert!(corpus::tree(&c.path().join("store/tmp")).is_empty());
}

#[test]
fn a_manifest_with_the_wrong_media_type_is_refused() {
    let c = Case::new();
    let layout = c.path().join("layout");
    let mut l = corpus::Layout::new(&layout);
    let desc = l.image(
        &[Layer::plain(Tar::new().file("f", b"x").finish())],
        corpus::host_arch(),
        serde_json::json!({}),
    );
    // Rewrite the manifest with an artifact media type, keep the descriptor's.
    let d: boxsock_image::Digest = desc["digest"].as_str().unwrap().parse().unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(l.blob_path(&d)).unwrap()).unwrap();
    m["mediaType"] = "application/vnd.example.artifact.v1+json".into();
    let bytes = serde_json::to_vec(&m).unwrap();
    let nd = l.blob(&bytes);
    let desc = serde_json::json!({
        "mediaType": "application/vnd.example.artifact.v1+json",
        "digest": nd.to_string(),
        "size": bytes.len(),
    });
    l.tag(desc, "t");
    let store = ImageStore::open(c.path().join("store")).unwrap();
    let err = store.import(&layout, &ImportOptions::default()).unwrap_err();
    assert!(matches!(&err, ImageError::WrongMediaType { what: "manifest", .. }), "{err:?}");
    assert!(err.to_string().contains("application/vnd.example.artifact.v1+json"), "{err}");

    // A manifest whose config is not an image config.
    let mut m2 = m.clone();
    m2["mediaType"] = boxsock_image::manifest::OCI_MANIFEST.into();
    m2["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
    let err = boxsock_image::manifest::parse_document(&serde_json::to_vec(&m2).unwrap(), None)
        .unwrap_err();
    assert!(matches!(&err, ImageError::WrongMediaType { what: "image config", .. }), "{err:?}");
}

#[test]
fn a_truncated_blob_is_refused() {
    let c = Case::new();
    let layout = c.path().join("layout");
    let layer = Layer::gzip(Tar::new().file("f", &vec![1u8; 100_000]).finish());
    let l = corpus::simple_layout(&layout, std::slice::from_ref(&layer), "t");
    let blob = l.blob_path(&layer.digest());
    let half = layer.blob.len() / 2;
    fs::write(&blob, &layer.blob[..half]).unwrap();
    let store = ImageStore::open(c.path().join("store")).unwrap();
    let err = store.import(&layout, &ImportOptions::default()).unwrap_err();
    match &err {
        ImageError::Truncated { expected, got, .. } => {
            assert_eq!((*expected, *got), (layer.blob.len() as u64, half as u64))
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(corpus::tree(&c.path().join("store/tmp")).is_empty());
    assert!(!store.blob_path(&layer.digest()).exists(), "a half blob looks complete");
}

fn many_entries(n: u32) -> Vec<u8> {
    let mut t = Tar::new();
    for i in 0..n {
        t.file(format!("d{:03}/f{i:06}", i % 100), b"");
    }
    t.finish()
}

/// The process's peak resident set (`VmHWM`), KiB.
fn max_rss_kib() -> i64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_100000_entry_layer_unpacks_in_bounded_memory_or_stops_at_the_entry_limit() {
    let c = Case::new();
    let layer = Layer::gzip(many_entries(100_000));
    let limits = UnpackLimits { max_entries: 50_000, ..Default::default() };
    let err = c.import_fails(layer.clone(), limits);
    assert!(matches!(&err, ImageError::TooManyEntries { limit: 50_000, .. }), "{err:?}");

    let layout = c.path().join("big");
    corpus::simple_layout(&layout, &[layer], "t");
    let store = ImageStore::open(c.path().join("store")).unwrap();
    // Reset the peak to the current resident set (clear_refs 5), so that the peak the
    // earlier steps reached does not hide the import's.
    fs::write("/proc/self/clear_refs", "5").unwrap();
    let rss = max_rss_kib();
    let r = store.import(&layout, &ImportOptions::default()).unwrap();
    let grown = max_rss_kib() - rss;
    eprintln!("100 000 entries unpacked: peak RSS grew by {grown} KiB (shown with --nocapture)");
    assert_eq!(r[0].unpacked.len(), 1);
    let root = store.layers(&r[0].image.id.to_string()).unwrap().remove(0);
    assert!(root.join("d099/f099999").is_file());
    // Per-entry state is not kept: the peak grows by far less than the entries would.
    assert!(grown < 32 << 10, "peak RSS grew by {grown} KiB unpacking 100 000 entries");
}

#[test]
fn names_that_are_not_utf8_are_kept_exactly_and_quoted_in_errors() {
    let c = Case::new();
    let tar =
        Tar::new().file(b"caf\xe9", b"latin-1").dir(b"\xff\xfe").file(b"\xff\xfe/x", b"").finish();
    let layout = c.path().join("layout");
    corpus::simple_layout(&layout, &[Layer::plain(tar)], "t");
    let store = ImageStore::open(c.path().join("store")).unwrap();
    let r = store.import(&layout, &ImportOptions::default()).unwrap();
    let root = store.layers(&r[0].image.id.to_string()).unwrap().remove(0);
    assert_eq!(fs::read(root.join(OsStr::from_bytes(b"caf\xe9"))).unwrap(), b"latin-1");
    assert!(root.join(OsStr::from_bytes(b"\xff\xfe/x")).is_file());

    let c = Case::new();
    let tar = Tar::new().file(b"\xff\x1b[31m/../../host/x", b"pwned").finish();
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    let (entry, _) = unsafe_entry(&err);
    assert!(entry.contains("\\xff") && !entry.contains('\x1b'), "{entry}");
}

#[test]
fn a_corrupt_layer_is_refused_with_a_quoted_bounded_message() {
    let c = Case::new();
    // A header whose mode field is not octal, named with terminal escapes: tar's own
    // message quotes the name raw; ours must not.
    let mut tar = Tar::new().file(format!("\x1b[2J{}", "n".repeat(80)), b"x").finish();
    tar[100..108].copy_from_slice(b"zzzzzzz\0");
    let sum: u32 = tar[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) })
        .sum();
    tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let err = c.import_fails(Layer::plain(tar), UnpackLimits::default());
    assert!(matches!(err, ImageError::BadLayer { .. }), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains('\x1b') && text.len() < 512, "{text}");
}
