//! The store: a SQLite file at `<home>/boxsock.db` holding one row per box.
//!
//! - WAL mode and a busy timeout, so several processes can share a home.
//! - The schema is versioned with `PRAGMA user_version` and migrated forward inside an
//!   immediate transaction; a database written by a *newer* boxsock is refused with
//!   [`StoreError::FutureSchema`] naming both versions, never modified.
//! - A row's configuration is a [`BoxConfig`] serialised as JSON. It holds **no socket
//!   path**: addresses are derived from (home, id) by the strategy at the point of use.
//!   Rows written by older versions with extra fields (`"transport"`,
//!   `"ready_socket_path"`…) load; the extra fields are ignored.
//! - A corrupt row (bad JSON, missing or mistyped fields, an invalid id or state) is
//!   reported with its id and skipped: [`Store::list`] returns the good rows and the bad
//!   ones separately, so one bad row never bricks a home.
//! - Every write is one transaction; state changes are checked against the state
//!   machine inside it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::id::BoxId;
use crate::process::ProcessIdentity;
use crate::state::BoxState;

/// What a box is made of, as persisted. No socket path, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxConfig {
    /// Registered strategy name.
    pub strategy: String,
    /// Registered backend name.
    pub backend: String,
    /// Whether the box has a network.
    #[serde(default)]
    pub network: bool,
    /// Extra environment for the in-box agent.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// One box as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxRecord {
    /// The id.
    pub id: BoxId,
    /// The optional unique name.
    pub name: Option<String>,
    /// The lifecycle state.
    pub state: BoxState,
    /// The configuration.
    pub config: BoxConfig,
    /// The box's process, while it has one (and after, for inspection).
    pub process: Option<ProcessIdentity>,
    /// The last recorded exit code of the box's process (status, or 128 + signal).
    pub exit_code: Option<i32>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last update, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A row found by [`Store::resolve`]: its id column (the row may be corrupt) and its
/// decoding.
pub type Resolved = (String, Result<BoxRecord, StoreError>);

/// A row that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRow {
    /// The row's id column, as stored.
    pub id: String,
    /// What is wrong with it.
    pub error: String,
}

/// The result of [`Store::list`]: the good rows, and the bad ones with their errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// Rows that loaded, ordered by creation time.
    pub boxes: Vec<BoxRecord>,
    /// Rows that did not.
    pub bad: Vec<BadRow>,
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {op}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer boxsock.
    #[error(
        "store {path} has schema version {found}, newer than this boxsock understands (at most {supported}); upgrade boxsock, the store was not modified"
    )]
    FutureSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A row could not be decoded.
    #[error("box {id}: stored row is corrupt: {reason}")]
    Corrupt {
        /// The row's id column.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Another box already has this name.
    #[error("the name {name:?} is already used by box {by}")]
    NameTaken {
        /// The name.
        name: String,
        /// The box that has it.
        by: String,
    },
    /// Another box already has this id.
    #[error("a box with id {id} already exists")]
    IdTaken {
        /// The id.
        id: BoxId,
    },
    /// No such box.
    #[error("no box {id}")]
    NotFound {
        /// The id.
        id: BoxId,
    },
    /// The state machine does not allow this change.
    #[error("box {id}: illegal state transition {from} -> {to}")]
    IllegalTransition {
        /// The box.
        id: BoxId,
        /// Its current state.
        from: BoxState,
        /// The requested state.
        to: BoxState,
    },
}

/// The migrations, in order; `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
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
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The box store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

const COLUMNS: &str = "id, name, state, config, pid, start_time, exit_code, created_at_ms, updated_at_ms";

/// A raw row, before decoding.
struct RawRow {
    id: String,
    name: Option<String>,
    state: String,
    config: String,
    pid: Option<i64>,
    start_time: Option<i64>,
    exit_code: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl RawRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: r.get(0)?,
            name: r.get(1)?,
            state: r.get(2)?,
            config: r.get(3)?,
            pid: r.get(4)?,
            start_time: r.get(5)?,
            exit_code: r.get(6)?,
            created_at_ms: r.get(7)?,
            updated_at_ms: r.get(8)?,
        })
    }

    fn decode(self) -> Result<BoxRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { id: self.id.clone(), reason };
        let id = BoxId::parse(&self.id).map_err(|e| corrupt(e.to_string()))?;
        let state = self.state.parse::<BoxState>().map_err(corrupt)?;
        let config: BoxConfig = serde_json::from_str(&self.config).map_err(|e| corrupt(format!("config JSON: {e}")))?;
        let process = match (self.pid, self.start_time) {
            (Some(pid), Some(st)) => Some(ProcessIdentity {
                pid: i32::try_from(pid).map_err(|_| corrupt(format!("pid {pid} out of range")))?,
                start_time: u64::try_from(st).map_err(|_| corrupt(format!("start time {st} out of range")))?,
            }),
            (None, None) => None,
            _ => return Err(corrupt("pid and start time must be both set or both empty".into())),
        };
        Ok(BoxRecord {
            id,
            name: self.name,
            state,
            config,
            process,
            exit_code: self.exit_code.map(|c| c as i32),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

impl Store {
    /// Open (creating if needed) the store at `path` and migrate it to
    /// [`SCHEMA_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let sq = |op| {
            let path = path.clone();
            move |source| StoreError::Sqlite { path, op, source }
        };
        let mut conn = Connection::open(&path).map_err(sq("open"))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sq("set busy timeout"))?;
        // journal_mode returns a row; query it rather than execute.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sq("enable WAL"))?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;").map_err(sq("set pragmas"))?;
        // Short-lived processes (each CLI call) would otherwise checkpoint and delete the
        // WAL at close, and the next one re-create it: two fsyncs per invocation for
        // nothing. Checkpoints still happen automatically as the WAL grows.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(sq("disable checkpoint on close"))?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq("read schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::FutureSchema { path, found, supported: SCHEMA_VERSION });
        }
        if found < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq("begin migration"))?;
            // Re-read inside the write lock: another process may have migrated meanwhile.
            let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq("read schema version"))?;
            if v > SCHEMA_VERSION {
                return Err(StoreError::FutureSchema { path, found: v, supported: SCHEMA_VERSION });
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
                tx.execute_batch(m).map_err(sq("migrate"))?;
                tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(sq("write schema version"))?;
                tracing::debug!(path = %path.display(), version = i + 1, "store migrated");
            }
            tx.commit().map_err(sq("commit migration"))?;
        }
        Ok(Store { path, conn: Mutex::new(conn) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sq(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.clone(), op, source }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Insert a new box. Fails with [`StoreError::NameTaken`] or [`StoreError::IdTaken`]
    /// without writing anything.
    pub fn insert(&self, rec: &BoxRecord) -> Result<(), StoreError> {
        self.insert_owned(rec, None)
    }

    /// [`Store::insert`], recording in the same transaction the process whose end
    /// makes the box removable ([`Store::auto_remove_owners`]).
    pub fn insert_owned(&self, rec: &BoxRecord, owner: Option<ProcessIdentity>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.sq("begin insert"))?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM boxes WHERE id = ?1", [rec.id.as_str()], |r| r.get(0))
            .optional()
            .map_err(self.sq("check id"))?;
        if exists.is_some() {
            return Err(StoreError::IdTaken { id: rec.id.clone() });
        }
        if let Some(name) = &rec.name {
            // A name must not collide with another box's name, nor with an id (ids and
            // names are accepted in the same places).
            let by: Option<String> = tx
                .query_row("SELECT id FROM boxes WHERE name = ?1 OR id = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(self.sq("check name"))?;
            if let Some(by) = by {
                return Err(StoreError::NameTaken { name: name.clone(), by });
            }
        }
        let config = serde_json::to_string(&rec.config).expect("BoxConfig always serialises");
        tx.execute(
            &format!("INSERT INTO boxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                rec.id.as_str(),
                rec.name,
                rec.state.as_str(),
                config,
                rec.process.map(|p| p.pid as i64),
                rec.process.map(|p| p.start_time as i64),
                rec.exit_code.map(|c| c as i64),
                rec.created_at_ms,
                rec.updated_at_ms,
            ],
        )
        .map_err(self.sq("insert box"))?;
        if let Some(o) = owner {
            tx.execute(
                "INSERT INTO auto_remove (box_id, pid, start_time) VALUES (?1, ?2, ?3)",
                params![rec.id.as_str(), o.pid as i64, o.start_time as i64],
            )
            .map_err(self.sq("insert auto-remove owner"))?;
        }
        tx.commit().map_err(self.sq("commit insert"))
    }

    /// Every box recorded with an auto-remove owner, and that owner, by id.
    pub fn auto_remove_owners(&self) -> Result<Vec<(String, ProcessIdentity)>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT box_id, pid, start_time FROM auto_remove ORDER BY box_id")
            .map_err(self.sq("list auto-remove owners"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            .map_err(self.sq("list auto-remove owners"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, pid, start_time) = row.map_err(self.sq("read auto-remove owner"))?;
            match (i32::try_from(pid), u64::try_from(start_time)) {
                (Ok(pid), Ok(start_time)) => out.push((id, ProcessIdentity { pid, start_time })),
                _ => tracing::warn!(box_id = %id, pid, start_time, "auto-remove owner out of range; ignored"),
            }
        }
        Ok(out)
    }

    /// A new record in state `Created`, timestamps now.
    pub fn new_record(id: BoxId, name: Option<String>, config: BoxConfig) -> BoxRecord {
        let now = now_ms();
        BoxRecord {
            id,
            name,
            state: BoxState::Created,
            config,
            process: None,
            exit_code: None,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    fn get_raw(conn: &Connection, id: &str) -> rusqlite::Result<Option<RawRow>> {
        conn.query_row(&format!("SELECT {COLUMNS} FROM boxes WHERE id = ?1"), [id], RawRow::from_row).optional()
    }

    /// The box with this id. A corrupt row is [`StoreError::Corrupt`].
    pub fn get(&self, id: &BoxId) -> Result<Option<BoxRecord>, StoreError> {
        let conn = self.conn();
        Self::get_raw(&conn, id.as_str()).map_err(self.sq("read box"))?.map(RawRow::decode).transpose()
    }

    /// Find a box by id, else by name. Returns the id column of the row found (which may
    /// be corrupt) and its decoding.
    pub fn resolve(&self, id_or_name: &str) -> Result<Option<Resolved>, StoreError> {
        let conn = self.conn();
        let raw = match Self::get_raw(&conn, id_or_name).map_err(self.sq("read box"))? {
            Some(r) => Some(r),
            None => conn
                .query_row(&format!("SELECT {COLUMNS} FROM boxes WHERE name = ?1"), [id_or_name], RawRow::from_row)
                .optional()
                .map_err(self.sq("read box by name"))?,
        };
        Ok(raw.map(|r| (r.id.clone(), r.decode())))
    }

    /// Every box: good rows, and bad rows with their errors.
    pub fn list(&self) -> Result<Listing, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} FROM boxes ORDER BY created_at_ms, id"))
            .map_err(self.sq("list boxes"))?;
        let rows = stmt.query_map([], RawRow::from_row).map_err(self.sq("list boxes"))?;
        let mut out = Listing::default();
        for row in rows {
            // A row whose *columns* have the wrong SQL types cannot even be read as a
            // RawRow; report it under its rowid-less id if we can get one.
            match row {
                Ok(raw) => match raw.decode() {
                    Ok(rec) => out.boxes.push(rec),
                    Err(StoreError::Corrupt { id, reason }) => {
                        tracing::warn!(box_id = %id, error = %reason, "skipping corrupt box row");
                        out.bad.push(BadRow { id, error: reason });
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable box row");
                    out.bad.push(BadRow { id: "?".into(), error: e.to_string() });
                }
            }
        }
        Ok(out)
    }

    /// Change a box's state inside one transaction: the current state must be one of
    /// `from` (if given) and the state machine must allow `-> to`; `edit` may then
    /// change the process identity and exit code. Returns the updated record.
    pub fn transition(
        &self,
        id: &BoxId,
        from: Option<&[BoxState]>,
        to: BoxState,
        edit: impl FnOnce(&mut BoxRecord),
    ) -> Result<BoxRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.sq("begin transition"))?;
        let mut rec = Self::get_raw(&tx, id.as_str())
            .map_err(self.sq("read box"))?
            .ok_or_else(|| StoreError::NotFound { id: id.clone() })?
            .decode()?;
        let allowed_from = from.is_none_or(|f| f.contains(&rec.state));
        if !allowed_from || !rec.state.can_transition(to) {
            return Err(StoreError::IllegalTransition { id: id.clone(), from: rec.state, to });
        }
        rec.state = to;
        edit(&mut rec);
        rec.updated_at_ms = now_ms();
        tx.execute(
            "UPDATE boxes SET state = ?2, pid = ?3, start_time = ?4, exit_code = ?5, updated_at_ms = ?6 WHERE id = ?1",
            params![
                id.as_str(),
                rec.state.as_str(),
                rec.process.map(|p| p.pid as i64),
                rec.process.map(|p| p.start_time as i64),
                rec.exit_code.map(|c| c as i64),
                rec.updated_at_ms,
            ],
        )
        .map_err(self.sq("update box"))?;
        tx.commit().map_err(self.sq("commit transition"))?;
        Ok(rec)
    }

    /// Record the process of a box without changing its state.
    pub fn set_process(&self, id: &BoxId, process: Option<ProcessIdentity>) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE boxes SET pid = ?2, start_time = ?3, updated_at_ms = ?4 WHERE id = ?1",
                params![id.as_str(), process.map(|p| p.pid as i64), process.map(|p| p.start_time as i64), now_ms()],
            )
            .map_err(self.sq("record process"))?;
        if n == 0 { Err(StoreError::NotFound { id: id.clone() }) } else { Ok(()) }
    }

    /// Replace the recorded companion processes of a box (empty: none).
    pub fn set_companions(&self, id: &BoxId, companions: &[ProcessIdentity]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.sq("begin companions"))?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM boxes WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()
            .map_err(self.sq("check id"))?;
        if exists.is_none() {
            return Err(StoreError::NotFound { id: id.clone() });
        }
        tx.execute("DELETE FROM companions WHERE box_id = ?1", [id.as_str()]).map_err(self.sq("clear companions"))?;
        for c in companions {
            tx.execute(
                "INSERT OR IGNORE INTO companions (box_id, pid, start_time) VALUES (?1, ?2, ?3)",
                params![id.as_str(), c.pid as i64, c.start_time as i64],
            )
            .map_err(self.sq("record companion"))?;
        }
        tx.commit().map_err(self.sq("commit companions"))
    }

    /// The recorded companion processes of the box whose id column is `id`. Values out
    /// of range (a hand-edited row) are skipped with a warning.
    pub fn companions(&self, id: &str) -> Result<Vec<ProcessIdentity>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT pid, start_time FROM companions WHERE box_id = ?1 ORDER BY pid")
            .map_err(self.sq("list companions"))?;
        let rows = stmt
            .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.sq("list companions"))?;
        let mut out = Vec::new();
        for row in rows {
            let (pid, st) = row.map_err(self.sq("read companion"))?;
            match (i32::try_from(pid), u64::try_from(st)) {
                (Ok(pid), Ok(start_time)) if pid > 0 => out.push(ProcessIdentity { pid, start_time }),
                _ => tracing::warn!(box_id = id, pid, start_time = st, "skipping an out-of-range companion row"),
            }
        }
        Ok(out)
    }

    /// Delete the row whose id column is `id` (which may be a corrupt row's id).
    /// Returns whether a row was deleted.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        // Explicitly too: a row deleted by a tool without foreign keys on must not leave
        // companions behind for the next box with that id.
        conn.execute("DELETE FROM companions WHERE box_id = ?1", [id]).map_err(self.sq("delete companions"))?;
        conn.execute("DELETE FROM auto_remove WHERE box_id = ?1", [id]).map_err(self.sq("delete auto-remove owner"))?;
        let n = conn.execute("DELETE FROM boxes WHERE id = ?1", [id]).map_err(self.sq("delete box"))?;
        Ok(n > 0)
    }

    /// Run raw SQL (tests and repair tools: inserting legacy rows, corrupting rows).
    #[doc(hidden)]
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.conn().execute_batch(sql).map_err(self.sq("execute"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BoxConfig {
        BoxConfig { strategy: "short-symlink".into(), backend: "host".into(), network: false, env: vec![] }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("boxsock.db")).unwrap();
        (d, s)
    }

    #[test]
    fn insert_get_list_delete_round_trip_and_wal() {
        let (d, s) = store();
        let rec = Store::new_record(BoxId::generate(), Some("web".into()), cfg());
        s.insert(&rec).unwrap();
        assert_eq!(s.get(&rec.id).unwrap().unwrap(), rec);
        assert_eq!(s.resolve("web").unwrap().unwrap().1.unwrap().id, rec.id);
        assert_eq!(s.list().unwrap().boxes, vec![rec.clone()]);
        assert!(s.delete(rec.id.as_str()).unwrap());
        assert!(s.get(&rec.id).unwrap().is_none());
        let mode: String = s.conn().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        // Reopening keeps the version and the data file.
        drop(s);
        let s = Store::open(d.path().join("boxsock.db")).unwrap();
        let v: i64 = s.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn names_are_unique_and_cannot_shadow_ids() {
        let (_d, s) = store();
        let a = Store::new_record(BoxId::generate(), Some("web".into()), cfg());
        s.insert(&a).unwrap();
        let b = Store::new_record(BoxId::generate(), Some("web".into()), cfg());
        assert!(matches!(s.insert(&b), Err(StoreError::NameTaken { ref by, .. }) if by == a.id.as_str()));
        let c = Store::new_record(BoxId::generate(), Some(a.id.to_string()), cfg());
        assert!(matches!(s.insert(&c), Err(StoreError::NameTaken { .. })));
        assert!(matches!(s.insert(&a), Err(StoreError::IdTaken { .. })));
        assert_eq!(s.list().unwrap().boxes.len(), 1);
    }

    #[test]
    fn future_schema_is_refused_and_left_untouched() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.db");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        match Store::open(&p) {
            Err(e @ StoreError::FutureSchema { found: 99, supported, .. }) => {
                assert_eq!(supported, SCHEMA_VERSION);
                assert!(e.to_string().contains("99"), "{e}");
            }
            other => panic!("expected FutureSchema, got {other:?}"),
        }
        let c = Connection::open(&p).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 99);
    }

    #[test]
    fn legacy_row_with_path_fields_loads() {
        let (_d, s) = store();
        s.execute_raw(
            r#"INSERT INTO boxes (id, name, state, config, pid, start_time, exit_code, created_at_ms, updated_at_ms)
               VALUES ('legacy1', NULL, 'stopped',
                 '{"strategy":"short-symlink","backend":"host","transport":"unix","ready_socket_path":"/very/long/home/boxes/legacy1/sockets/ready.sock"}',
                 NULL, NULL, NULL, 1, 1)"#,
        )
        .unwrap();
        let rec = s.get(&BoxId::parse("legacy1").unwrap()).unwrap().unwrap();
        assert_eq!(rec.config, cfg());
        assert_eq!(rec.state, BoxState::Stopped);
    }

    #[test]
    fn corrupt_rows_are_reported_by_id_and_skipped() {
        let (_d, s) = store();
        let good = Store::new_record(BoxId::generate(), None, cfg());
        s.insert(&good).unwrap();
        for (id, state, config) in [
            ("trunc", "stopped", r#"{"strategy":"short-sym"#),
            ("missing", "stopped", r#"{"backend":"host"}"#),
            ("types", "stopped", r#"{"strategy":1,"backend":"host"}"#),
            ("badstate", "exploded", r#"{"strategy":"a","backend":"b"}"#),
            ("../evil", "stopped", r#"{"strategy":"a","backend":"b"}"#),
        ] {
            s.execute_raw(&format!(
                "INSERT INTO boxes (id, state, config, created_at_ms, updated_at_ms) VALUES ('{id}', '{state}', '{config}', 2, 2)"
            ))
            .unwrap();
        }
        let l = s.list().unwrap();
        assert_eq!(l.boxes, vec![good]);
        let mut bad: Vec<&str> = l.bad.iter().map(|b| b.id.as_str()).collect();
        bad.sort_unstable();
        assert_eq!(bad, ["../evil", "badstate", "missing", "trunc", "types"]);
        assert!(matches!(s.get(&BoxId::parse("trunc").unwrap()), Err(StoreError::Corrupt { ref id, .. }) if id == "trunc"));
        assert!(s.delete("trunc").unwrap());
    }

    #[test]
    fn companions_round_trip_replace_and_go_with_the_box() {
        let (d, s) = store();
        let rec = Store::new_record(BoxId::generate(), None, cfg());
        s.insert(&rec).unwrap();
        let a = ProcessIdentity { pid: 100, start_time: 5 };
        let b = ProcessIdentity { pid: 101, start_time: 6 };
        s.set_companions(&rec.id, &[b, a]).unwrap();
        assert_eq!(s.companions(rec.id.as_str()).unwrap(), vec![a, b]);
        s.set_companions(&rec.id, &[b]).unwrap();
        assert_eq!(s.companions(rec.id.as_str()).unwrap(), vec![b]);
        // A state change leaves them alone; reopening keeps them.
        s.transition(&rec.id, None, BoxState::Starting, |_| {}).unwrap();
        drop(s);
        let s = Store::open(d.path().join("boxsock.db")).unwrap();
        assert_eq!(s.companions(rec.id.as_str()).unwrap(), vec![b]);
        let missing = BoxId::generate();
        assert!(matches!(s.set_companions(&missing, &[a]), Err(StoreError::NotFound { .. })));
        assert!(s.delete(rec.id.as_str()).unwrap());
        assert!(s.companions(rec.id.as_str()).unwrap().is_empty());
    }

    #[test]
    fn auto_remove_owners_are_inserted_with_the_box_survive_reopening_and_go_with_it() {
        let (d, s) = store();
        let plain = Store::new_record(BoxId::generate(), None, cfg());
        s.insert(&plain).unwrap();
        let owned = Store::new_record(BoxId::generate(), None, cfg());
        let owner = ProcessIdentity { pid: 4242, start_time: 77 };
        s.insert_owned(&owned, Some(owner)).unwrap();
        assert_eq!(s.auto_remove_owners().unwrap(), vec![(owned.id.to_string(), owner)]);
        // A failed insert (id taken) records no owner either.
        assert!(s.insert_owned(&owned, Some(ProcessIdentity { pid: 1, start_time: 1 })).is_err());
        drop(s);
        let s = Store::open(d.path().join("boxsock.db")).unwrap();
        assert_eq!(s.auto_remove_owners().unwrap(), vec![(owned.id.to_string(), owner)]);
        assert!(s.delete(owned.id.as_str()).unwrap());
        assert!(s.auto_remove_owners().unwrap().is_empty());
    }

    #[test]
    fn a_version_1_store_migrates_and_keeps_its_rows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                r#"INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms)
                   VALUES ('old1', NULL, 'stopped', '{"strategy":"short-symlink","backend":"host"}', 1, 1)"#,
            )
            .unwrap();
        }
        let s = Store::open(&p).unwrap();
        let v: i64 = s.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let id = BoxId::parse("old1").unwrap();
        assert_eq!(s.get(&id).unwrap().unwrap().config, cfg());
        assert!(s.companions("old1").unwrap().is_empty());
        let c = ProcessIdentity { pid: 7, start_time: 8 };
        s.set_companions(&id, &[c]).unwrap();
        assert_eq!(s.companions("old1").unwrap(), vec![c]);
        assert!(s.auto_remove_owners().unwrap().is_empty());
    }

    #[test]
    fn transitions_follow_the_state_machine_atomically() {
        let (_d, s) = store();
        let rec = Store::new_record(BoxId::generate(), None, cfg());
        s.insert(&rec).unwrap();
        let id = rec.id.clone();
        let ident = ProcessIdentity { pid: 42, start_time: 7 };
        let r = s.transition(&id, Some(&[BoxState::Created]), BoxState::Starting, |r| r.process = Some(ident)).unwrap();
        assert_eq!(r.state, BoxState::Starting);
        assert_eq!(s.get(&id).unwrap().unwrap().process, Some(ident));
        let e = s.transition(&id, None, BoxState::Created, |_| {}).unwrap_err();
        assert!(matches!(e, StoreError::IllegalTransition { from: BoxState::Starting, to: BoxState::Created, .. }));
        // Expected-from mismatch is refused even if the edge exists elsewhere.
        let e = s.transition(&id, Some(&[BoxState::Stopped]), BoxState::Starting, |_| {}).unwrap_err();
        assert!(matches!(e, StoreError::IllegalTransition { .. }));
        assert_eq!(s.get(&id).unwrap().unwrap().state, BoxState::Starting);
        let missing = BoxId::generate();
        assert!(matches!(s.transition(&missing, None, BoxState::Running, |_| {}), Err(StoreError::NotFound { .. })));
    }
}
