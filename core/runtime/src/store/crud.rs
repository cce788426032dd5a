//! CRUD: the queries and writes of [`Store`], each write one transaction; state changes
//! are checked against the state machine inside it.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use boxsock_core::id::BoxId;

use super::row::{COLUMNS, RawRow};
use super::{BadRow, BoxConfig, BoxRecord, Listing, Resolved, Store, StoreError};
use crate::process::ProcessIdentity;
use crate::state::BoxState;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// Insert a new box. Fails with [`StoreError::NameTaken`] or [`StoreError::IdTaken`]
    /// without writing anything.
    pub fn insert(&self, rec: &BoxRecord) -> Result<(), StoreError> {
        self.insert_owned(rec, None)
    }

    /// [`Store::insert`], recording in the same transaction the process whose end
    /// makes the box removable ([`Store::auto_remove_owners`]).
    pub fn insert_owned(
        &self,
        rec: &BoxRecord,
        owner: Option<ProcessIdentity>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sq("begin insert"))?;
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
        // The image a box is pinned to must be recorded when the box is: checked in this
        // (immediate) transaction, so it cannot pass between `rmi`'s check and delete.
        if let Some(image) = &rec.config.settings.image {
            let found: Option<String> = tx
                .query_row("SELECT id FROM images WHERE id = ?1", [&image.manifest], |r| r.get(0))
                .optional()
                .map_err(self.sq("check image"))?;
            if found.is_none() {
                return Err(StoreError::ImageGone {
                    id: rec.id.clone(),
                    // A digest whole (71 bytes, one safe word); anything else quoted.
                    image: match image.manifest.parse::<boxsock_image::Digest>() {
                        Ok(d) => d.to_string(),
                        Err(_) => boxsock_core::echo::echo(&image.manifest).to_string(),
                    },
                });
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
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(self.sq("list auto-remove owners"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, pid, start_time) = row.map_err(self.sq("read auto-remove owner"))?;
            match (i32::try_from(pid), u64::try_from(start_time)) {
                (Ok(pid), Ok(start_time)) => out.push((id, ProcessIdentity { pid, start_time })),
                _ => {
                    tracing::warn!(box_id = %id, pid, start_time, "auto-remove owner out of range; ignored")
                }
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
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM boxes WHERE id = ?1"),
            [id],
            RawRow::from_row,
        )
        .optional()
    }

    /// The box with this id. A corrupt row is [`StoreError::Corrupt`].
    pub fn get(&self, id: &BoxId) -> Result<Option<BoxRecord>, StoreError> {
        let conn = self.conn();
        Self::get_raw(&conn, id.as_str())
            .map_err(self.sq("read box"))?
            .map(RawRow::decode)
            .transpose()
    }

    /// Find a box the way every verb names one: by id, else by name, else by a unique
    /// id prefix (names win over prefixes; see docs/runtime.md). Returns the id column
    /// of the row found (which may be corrupt) and its decoding. A prefix of several ids
    /// is [`StoreError::AmbiguousPrefix`], naming them.
    pub fn resolve(&self, id_or_name: &str) -> Result<Option<Resolved>, StoreError> {
        if let Some(found) = self.resolve_exact(id_or_name)? {
            return Ok(Some(found));
        }
        let Some(id) = self.id_with_prefix(id_or_name)? else { return Ok(None) };
        let conn = self.conn();
        let raw = Self::get_raw(&conn, &id).map_err(self.sq("read box"))?;
        Ok(raw.map(|r| (r.id.clone(), r.decode())))
    }

    /// The one id starting with `prefix`, if any. An empty prefix matches nothing.
    fn id_with_prefix(&self, prefix: &str) -> Result<Option<String>, StoreError> {
        if prefix.is_empty() {
            return Ok(None);
        }
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id FROM boxes ORDER BY id").map_err(self.sq("list box ids"))?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(self.sq("list box ids"))?;
        let mut found = Vec::new();
        for id in ids {
            let id = id.map_err(self.sq("list box ids"))?;
            if id.starts_with(prefix) {
                found.push(id);
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(StoreError::AmbiguousPrefix { prefix: prefix.to_owned(), candidates: found }),
        }
    }

    /// Find a box by its exact id, else its exact name (no prefixes: what a new name
    /// must not collide with).
    pub fn resolve_exact(&self, id_or_name: &str) -> Result<Option<Resolved>, StoreError> {
        let conn = self.conn();
        let raw = match Self::get_raw(&conn, id_or_name).map_err(self.sq("read box"))? {
            Some(r) => Some(r),
            None => conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM boxes WHERE name = ?1"),
                    [id_or_name],
                    RawRow::from_row,
                )
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
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sq("begin transition"))?;
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
    pub fn set_process(
        &self,
        id: &BoxId,
        process: Option<ProcessIdentity>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE boxes SET pid = ?2, start_time = ?3, updated_at_ms = ?4 WHERE id = ?1",
                params![
                    id.as_str(),
                    process.map(|p| p.pid as i64),
                    process.map(|p| p.start_time as i64),
                    now_ms()
                ],
            )
            .map_err(self.sq("record process"))?;
        if n == 0 { Err(StoreError::NotFound { id: id.clone() }) } else { Ok(()) }
    }

    /// Replace the recorded companion processes of a box (empty: none).
    pub fn set_companions(
        &self,
        id: &BoxId,
        companions: &[ProcessIdentity],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sq("begin companions"))?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM boxes WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()
            .map_err(self.sq("check id"))?;
        if exists.is_none() {
            return Err(StoreError::NotFound { id: id.clone() });
        }
        tx.execute("DELETE FROM companions WHERE box_id = ?1", [id.as_str()])
            .map_err(self.sq("clear companions"))?;
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
                (Ok(pid), Ok(start_time)) if pid > 0 => {
                    out.push(ProcessIdentity { pid, start_time })
                }
                _ => tracing::warn!(
                    box_id = id,
                    pid,
                    start_time = st,
                    "skipping an out-of-range companion row"
                ),
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
        conn.execute("DELETE FROM companions WHERE box_id = ?1", [id])
            .map_err(self.sq("delete companions"))?;
        conn.execute("DELETE FROM auto_remove WHERE box_id = ?1", [id])
            .map_err(self.sq("delete auto-remove owner"))?;
        let n =
            conn.execute("DELETE FROM boxes WHERE id = ?1", [id]).map_err(self.sq("delete box"))?;
        Ok(n > 0)
    }

    /// Run raw SQL (tests only: inserting legacy rows, corrupting rows). Only with the
    /// `test-support` feature.
    #[cfg(any(test, feature = "test-support"))]
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.conn().execute_batch(sql).map_err(self.sq("execute"))
    }
}
