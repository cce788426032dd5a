//! The schema: the migrations, applied in order inside one immediate transaction, and
//! the version a file's header records (read before SQLite opens the file, so a store
//! of a newer boxsock is refused untouched).

use std::os::fd::OwnedFd;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migrations, in order; `user_version` is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: boxes.
    "CREATE TABLE boxes (
        id            TEXT PRIMARY KEY NOT NULL,
        name          TEXT UNIQUE,
        state         TEXT NOT NULL,
        config        TEXT NOT NULL,
        pid           INTEGER,
        start_time    INTEGER,
        exit_code     INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );",
    // 2: companion processes of a box (passt…), so recovery can kill them after a
    // runtime crash. Rows go with their box.
    "CREATE TABLE companions (
        box_id     TEXT NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
        pid        INTEGER NOT NULL,
        start_time INTEGER NOT NULL,
        PRIMARY KEY (box_id, pid, start_time)
    );",
    // 3: auto-remove owners: a box created for one client (`run --rm`) is removed once
    // that process (pid + start time) is gone. Rows go with their box.
    "CREATE TABLE auto_remove (
        box_id     TEXT PRIMARY KEY NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
        pid        INTEGER NOT NULL,
        start_time INTEGER NOT NULL
    );",
    // 4: the backend settings that define a box (vcpus, memory, root filesystem) live
    // in the config JSON as `settings`; rows of older versions get the defaults written
    // out. Rows whose config is not a JSON object are left as they are (reported as
    // corrupt when read, never fatal).
    "UPDATE boxes SET config = json_set(config, '$.settings', json('{}'))
        WHERE json_valid(config) AND json_type(config) = 'object' AND json_type(config, '$.settings') IS NULL;",
    // 5: image records (decision 0019): an image by its manifest digest, with its config
    // digest, its layers as JSON (`[{blob, diff_id, media_type, size}]`, bottom first),
    // its platform, the bytes of its layer blobs and when it entered the store; its
    // names (`registry/repo:tag`, each naming one image) in their own table. Boxes pin
    // an image through their config's `$.settings.image.manifest`.
    "CREATE TABLE images (
        id       TEXT PRIMARY KEY NOT NULL,
        config   TEXT NOT NULL,
        layers   TEXT NOT NULL,
        platform TEXT NOT NULL,
        size     INTEGER NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE TABLE image_names (
        name     TEXT PRIMARY KEY NOT NULL,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL
    );
    CREATE INDEX image_names_by_image ON image_names(image_id);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version recorded in a SQLite file's header (`user_version`, a big-endian
/// 32-bit integer at offset 60), if `header` is one.
pub(super) fn header_user_version(header: &[u8]) -> Option<i64> {
    if header.len() < 64 || !header.starts_with(b"SQLite format 3\0") {
        return None;
    }
    Some(i64::from(i32::from_be_bytes([header[60], header[61], header[62], header[63]])))
}

/// The first bytes of a store file (its 100-byte header, or less when the file is
/// shorter), read with `pread` at offset 0.
pub(super) fn read_header(fd: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 100];
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[got..], got as i64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf[..got].to_vec())
}

/// Apply the migrations `conn`'s store lacks, in one immediate transaction; a store of a
/// newer schema (another process may have migrated it meanwhile) is refused unchanged.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sq = |op| {
        let path = path.to_path_buf();
        move |source| StoreError::Sqlite { path, op, source }
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sq("begin migration"))?;
    // Re-read inside the write lock: another process may have migrated meanwhile.
    let v: i64 =
        tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq("read schema version"))?;
    if v > SCHEMA_VERSION {
        return Err(StoreError::FutureSchema {
            path: path.to_path_buf(),
            found: v,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.execute_batch(m).map_err(sq("migrate"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(sq("write schema version"))?;
        tracing::debug!(path = %boxsock_core::echo::path(path), version = i + 1, "store migrated");
    }
    tx.commit().map_err(sq("commit migration"))
}
