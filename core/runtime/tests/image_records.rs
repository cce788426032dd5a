//! Image records in the home's SQLite store (schema v5, decision 0019), on real SQLite
//! files: rows round-trip; a bad row is reported under its id and never stops the good
//! ones (nor a write); the boxes pinned to an image are asked inside the removal's
//! transaction; an `images.json` of the library alone is moved in once.

use std::sync::Arc;

use boxsock_core::BoxId;
use boxsock_core::backend::{BoxImage, BoxSettings};
use boxsock_image::index::Records;
use boxsock_image::{Digest, ImageError, ImageRecord, ImageStore, LayerRecord};
use boxsock_runtime::store::{BoxConfig, HomeRecords, Store};

fn d(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
}

fn record(id: char, names: &[&str]) -> ImageRecord {
    ImageRecord {
        id: d(id),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        config: d('c'),
        layers: vec![LayerRecord {
            blob: d('b'),
            diff_id: d('e'),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 42,
        }],
        platform: "linux/amd64".into(),
        added: 1_700_000_000,
    }
}

fn open(dir: &std::path::Path) -> (Arc<Store>, HomeRecords) {
    let store = Arc::new(Store::open(dir.join("boxsock.db")).unwrap());
    (store.clone(), HomeRecords::of_store(store))
}

fn add(records: &HomeRecords, rec: ImageRecord) {
    records
        .update(&mut |images, _| {
            images.push(rec.clone());
            Ok(())
        })
        .unwrap();
}

#[test]
fn records_round_trip_and_a_bad_row_is_reported_never_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, records) = open(tmp.path());
    add(&records, record('1', &["localhost/a:1", "localhost/a:latest"]));
    // Reopened from the file: the same record, names in order.
    drop((store, records));
    let (store, records) = open(tmp.path());
    let list = records.read().unwrap();
    assert_eq!(list.images, [record('1', &["localhost/a:1", "localhost/a:latest"])]);
    assert!(list.bad.is_empty());

    // Rows another tool broke: bad JSON layers, a size that lies, an id not a digest.
    let f = "f".repeat(64);
    store
        .execute_raw(&format!(
            "INSERT INTO images VALUES ('sha256:{}', 'sha256:{}', 'not json', 'linux/amd64', 0, 1);
             INSERT INTO images VALUES ('{f}-not-a-digest', 'x', '[]', 'p', 0, 1);
             INSERT INTO images VALUES ('sha256:{}', 'sha256:{}', '[]', 'p', 7, 1);",
            "2".repeat(64),
            "9".repeat(64),
            "3".repeat(64),
            "8".repeat(64),
        ))
        .unwrap();
    let list = records.read().unwrap();
    assert_eq!(list.images.len(), 1, "the good row still loads");
    assert_eq!(list.bad.len(), 3, "{:?}", list.bad);
    assert!(list.bad.iter().any(|b| b.error.contains("layers")), "{:?}", list.bad);
    assert!(list.bad.iter().any(|b| b.error.contains("not the sum")), "{:?}", list.bad);
    // Writes go on and leave the bad rows alone; prune keeps what they mention.
    add(&records, record('4', &["localhost/b:1"]));
    let list = records.read().unwrap();
    assert_eq!((list.images.len(), list.bad.len()), (2, 3));
    let pins = records.pinned().unwrap();
    for c in ['2', '9', '3', '8', 'f'] {
        assert!(pins.contains(&c.to_string().repeat(64)), "{c} kept: {pins:?}");
    }
}

#[test]
fn a_name_moves_to_the_image_recorded_last() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, records) = open(tmp.path());
    add(&records, record('1', &["localhost/a:1"]));
    records
        .update(&mut |images, _| {
            images[0].names.clear();
            images.push(record('2', &["localhost/a:1"]));
            Ok(())
        })
        .unwrap();
    let list = records.read().unwrap();
    assert_eq!(list.images[0].names, Vec::<String>::new());
    assert_eq!(list.images[1].names, ["localhost/a:1"]);
}

#[test]
fn removal_asks_for_pinned_boxes_inside_its_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, records) = open(tmp.path());
    add(&records, record('1', &["localhost/a:1"]));
    add(&records, record('2', &["localhost/b:1"]));
    let mut settings = BoxSettings::default();
    settings.image =
        Some(BoxImage::new("localhost/a:1".into(), d('1').to_string(), vec![d('e').to_string()]));
    let config = BoxConfig {
        strategy: "direct".into(),
        backend: "host".into(),
        network: false,
        env: vec![],
        settings,
        process: Default::default(),
    };
    store.insert(&Store::new_record(BoxId::generate(), Some("web".into()), config)).unwrap();
    // A box row whose config is not JSON but mentions image 2 counts as its user.
    store
        .execute_raw(&format!(
            "INSERT INTO boxes (id, state, config, created_at_ms, updated_at_ms)
             VALUES ('brokenbox', 'created', '{{oops sha256:{}', 0, 0)",
            "2".repeat(64)
        ))
        .unwrap();

    let images =
        ImageStore::open_with_records(tmp.path().join("images"), Arc::new(records)).unwrap();
    let err = images.remove("localhost/a:1").unwrap_err();
    match &err {
        ImageError::InUse { boxes, count, .. } => {
            assert_eq!((boxes, *count), (&vec!["\"web\"".to_owned()], 1))
        }
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().contains("\"web\""), "{err}");
    let err = images.remove("localhost/b:1").unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "the corrupt row counts: {err}");
    assert_eq!(images.list().unwrap().len(), 2, "nothing removed");
    images.remove_with("localhost/a:1", true).unwrap();
    assert_eq!(images.list().unwrap().len(), 1);
    // What the box pins is kept by prune though its image record is gone.
    let pins = HomeRecords::of_store(store.clone()).pinned().unwrap();
    assert!(pins.contains(d('1').hex()) && pins.contains(d('e').hex()), "{pins:?}");
}

#[test]
fn an_images_json_of_the_library_alone_is_moved_in_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    {
        let alone = ImageStore::open(&dir).unwrap();
        drop(alone);
    }
    let json = serde_json::json!({
        "version": 1,
        "images": [record('1', &["localhost/old:1"]), record('2', &["localhost/taken:1"])],
    });
    std::fs::write(dir.join("images.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    let (_store, records) = open(tmp.path());
    // A name the SQLite store already gives another image stays there.
    add(&records, record('3', &["localhost/taken:1"]));
    let images = ImageStore::open_with_records(&dir, Arc::new(records.clone())).unwrap();
    let list = images.list().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(images.resolve("localhost/old:1").unwrap().id, d('1'));
    assert_eq!(images.resolve("localhost/taken:1").unwrap().id, d('3'));
    assert!(!dir.join("images.json").exists() && dir.join("images.json.migrated").exists());
    // Once: a second open finds nothing to move.
    drop(ImageStore::open_with_records(&dir, Arc::new(records.clone())).unwrap());
    assert_eq!(records.read().unwrap().images.len(), 3);
}

/// "A concurrent create cannot slip between the check and the delete": while a removal's
/// change runs (after it asked for the pinned boxes), another connection cannot insert
/// a box row: the removal holds SQLite's write lock from before its read. Deterministic:
/// the other connection does not wait (busy timeout 0), so it fails at once or not at all.
#[test]
fn no_box_row_can_be_inserted_between_the_check_and_the_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, records) = open(tmp.path());
    add(&records, record('1', &["localhost/a:1"]));
    let other = rusqlite::Connection::open(tmp.path().join("boxsock.db")).unwrap();
    other.busy_timeout(std::time::Duration::ZERO).unwrap();
    let insert = |id: &str| {
        other.execute(
            "INSERT INTO boxes (id, state, config, created_at_ms, updated_at_ms)
             VALUES (?1, 'created', '{}', 0, 0)",
            [id],
        )
    };
    // The control: outside a removal the insert goes through.
    insert("before").unwrap();
    let mut during = None;
    records
        .update(&mut |images, users| {
            assert!(users(&d('1'))?.is_empty());
            during = Some(insert("during"));
            images.clear();
            Ok(())
        })
        .unwrap();
    let err = during.unwrap().unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy), "{err}");
    insert("after").unwrap();
    assert!(records.read().unwrap().images.is_empty());
}

/// The other half: a box row pinned to an image is inserted only while the image is
/// recorded, checked in the insert's transaction (a create that resolved the image
/// before an `rmi` committed fails instead of pinning a removed image).
#[test]
fn a_box_pinned_to_an_image_not_recorded_is_refused_at_insert() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, records) = open(tmp.path());
    add(&records, record('1', &["localhost/a:1"]));
    let pinned = |c: char| {
        let mut settings = BoxSettings::default();
        settings.image = Some(BoxImage::new("r".into(), d(c).to_string(), vec![]));
        let config = BoxConfig {
            strategy: "direct".into(),
            backend: "host".into(),
            network: false,
            env: vec![],
            settings,
            process: Default::default(),
        };
        Store::new_record(BoxId::generate(), None, config)
    };
    store.insert(&pinned('1')).unwrap();
    let err = store.insert(&pinned('7')).unwrap_err();
    assert!(matches!(err, boxsock_runtime::store::StoreError::ImageGone { .. }), "{err}");
    assert!(err.to_string().contains(&"7".repeat(64)), "{err}");
    assert_eq!(store.list().unwrap().boxes.len(), 1, "nothing written");
}
