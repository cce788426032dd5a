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
//! - The database and its `-wal` and `-shm` are 0600 whatever the umask: the file is
//!   created 0600 before SQLite sees it (SQLite gives its journal files the database's
//!   mode), and older files are tightened at open.
//! - The schema version is read from the file's header **before** SQLite opens it, and
//!   again before the first write (`PRAGMA journal_mode=WAL` rewrites the header and
//!   creates `-wal`/`-shm`): a newer store is refused byte-for-byte untouched.
//! - However deep the home, the store opens: on Linux SQLite is given the short name
//!   `/proc/self/fd/<dirfd>/boxsock.db` through a VFS that is the default `unix` VFS
//!   except that it keeps that name as it is (the `unix` VFS would resolve the magic
//!   link back to the long path and fail past its 512-byte limit). See
//!   `docs/decisions/0004-store-path-through-a-directory-fd.md`.
//! - A store that fails to open leaves nothing behind that this open created.
//!
//! One job per file: `migrations` (the schema and its version), `files` (file
//! hardening), `row` (the row codec), `crud` (the queries and writes); the SQLite VFS
//! that opens the store through the directory's descriptor is platform code, in the
//! crate's `sys`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rusqlite::{Connection, OpenFlags};

mod crud;
mod error;
mod files;
mod images;
mod migrations;
mod row;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use images::HomeRecords;
pub use migrations::SCHEMA_VERSION;
pub use row::{BadRow, BoxConfig, BoxProcess, BoxRecord, Listing, Resolved};

use files::OpenStore;
use migrations::migrate;

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// Create it if missing, migrate it, write to it.
    ReadWrite,
    /// Read only: nothing is created, migrated or changed. A missing database reads as
    /// an empty store.
    ReadOnly,
}

/// The box store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The directory SQLite reaches the database through (`/proc/self/fd/<n>/…`); it
    /// must stay open while the connection lives (journal files are opened lazily).
    _dir: Option<OwnedFd>,
    /// Its entry among the store files this process has open (after `conn`: dropped
    /// once the connection is closed).
    _open: Option<OpenStore>,
}

/// How long opening a store waits for other connections: the busy timeout of every
/// connection, and the bound of [`enable_wal`]'s retries.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Put the store in WAL mode, once: a store already in WAL mode (the pager knows after
/// the first read) is left as it is, so the switch happens only at a store's first
/// write-open. Racing first opens (several processes on a new store) are retried:
/// SQLite does not call the busy handler for this switch (it upgrades a read
/// transaction to a write one, which could deadlock), so the busy timeout alone does
/// not cover it.
fn enable_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sq = |op| {
        let path = path.to_path_buf();
        move |source| StoreError::Sqlite { path, op, source }
    };
    let mode: String =
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(sq("read journal mode"))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut step = Duration::from_millis(1);
    loop {
        // journal_mode returns a row; query it rather than execute.
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(path = %boxsock_core::echo::path(path), mode, "the store could not be put in WAL mode");
                }
                return Ok(());
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                tracing::debug!(path = %path.display(), "another connection is switching the store to WAL; retrying");
                std::thread::sleep(step);
                step = (step * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(sq("enable WAL")(e)),
        }
    }
}

impl Store {
    /// Open (creating if needed) the store at `path` and migrate it to
    /// [`SCHEMA_VERSION`]. `":memory:"` is an empty store in memory.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        if path == Path::new(":memory:") {
            return Self::in_memory(path);
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = nix::fcntl::open(
            parent,
            crate::sys::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            op: "open the directory of",
            source: e.into(),
        })?;
        Self::open_at(dir, path, StoreMode::ReadWrite)
    }

    /// Open the store whose file is `path`'s last component inside the directory `dir`
    /// (an opened descriptor: SQLite reaches the file through it, never by resolving
    /// `path` again; `path` is what messages name).
    pub fn open_at(dir: OwnedFd, path: &Path, mode: StoreMode) -> Result<Store, StoreError> {
        let path = path.to_path_buf();
        let name = path
            .file_name()
            .ok_or_else(|| StoreError::Io {
                path: path.clone(),
                op: "name",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the store path has no file name",
                ),
            })?
            .to_os_string();
        let created = match mode {
            StoreMode::ReadWrite => files::create(&dir, &name, &path)?,
            StoreMode::ReadOnly => false,
        };
        let cleanup = |e: StoreError| {
            if created {
                files::remove_created(&dir, &name);
            }
            e
        };
        // Locked from the check until this store is counted in it.
        let in_use = files::open_stores();
        let key = match files::check(&dir, &name, &path, mode, &in_use).map_err(cleanup)? {
            Some(key) => key,
            None => {
                drop(in_use);
                return Self::in_memory(&path);
            }
        };
        let guard = OpenStore::enter(in_use, key);
        let opened = Self::open_sqlite(&dir, &path, &name, mode).map_err(cleanup)?;
        Ok(Store { path, conn: Mutex::new(opened), _dir: Some(dir), _open: Some(guard) })
    }

    fn open_sqlite(
        dir: &OwnedFd,
        path: &Path,
        name: &std::ffi::OsStr,
        mode: StoreMode,
    ) -> Result<Connection, StoreError> {
        let sq = |op| {
            let path = path.to_path_buf();
            move |source| StoreError::Sqlite { path, op, source }
        };
        let flags = match mode {
            StoreMode::ReadWrite => {
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
            }
            StoreMode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = crate::sys::open_sqlite_in(dir, name, path, flags)
            .map_err(|source| {
                let path = path.to_path_buf();
                StoreError::Io { path, op: "register the SQLite VFS", source }
            })?
            .map_err(sq("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sq("set busy timeout"))?;
        // Before anything that writes: `journal_mode=WAL` rewrites the header.
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sq("read schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::FutureSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if mode == StoreMode::ReadOnly {
            return Ok(conn);
        }
        enable_wal(&conn, path)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            .map_err(sq("set pragmas"))?;
        // Short-lived processes (each CLI call) would otherwise checkpoint and delete the
        // WAL at close, and the next one re-create it: two fsyncs per invocation for
        // nothing. Checkpoints still happen automatically as the WAL grows.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(sq("disable checkpoint on close"))?;
        if found < SCHEMA_VERSION {
            migrate(&mut conn, path)?;
        }
        Ok(conn)
    }

    /// An empty, migrated store in memory (read-only views of a home without a store).
    fn in_memory(path: &Path) -> Result<Store, StoreError> {
        let sq = |op| {
            let path = path.to_path_buf();
            move |source| StoreError::Sqlite { path, op, source }
        };
        let mut conn = Connection::open_in_memory().map_err(sq("open in memory"))?;
        conn.execute_batch("PRAGMA foreign_keys=ON;").map_err(sq("set pragmas"))?;
        migrate(&mut conn, path)?;
        Ok(Store { path: path.to_path_buf(), conn: Mutex::new(conn), _dir: None, _open: None })
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
}
