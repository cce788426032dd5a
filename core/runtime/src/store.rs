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

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, openat};
use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, fchmod, fchmodat, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use boxsock_core::backend::BoxSettings;
use boxsock_core::echo::echo;
use boxsock_core::id::BoxId;
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
    /// The backend settings that define the box (vcpus, memory, root filesystem),
    /// used by every start (schema v4; rows of older versions load with the defaults).
    /// `rootfs` is the user's directory, canonicalised at create: not a socket path.
    #[serde(default)]
    pub settings: BoxSettings,
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
    #[error("store {}: {op}: {source}", boxsock_core::echo::path(path))]
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
        "store {} has schema version {found}, newer than this boxsock understands (at most {supported}); upgrade boxsock, the store was not modified",
        boxsock_core::echo::path(path)
    )]
    FutureSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A file system operation on the store's files failed.
    #[error("store {}: {op}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A store file is not one this user can trust (a symlink, not a regular file, or
    /// owned by another user): somebody else could read or change the boxes' secrets.
    #[error("store {}: refusing to use it: {reason}", boxsock_core::echo::path(path))]
    Insecure {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
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
    /// An id prefix that starts several boxes' ids.
    #[error("{} is the start of several box ids ({}): give more of the id", echo(prefix), candidates.join(", "))]
    AmbiguousPrefix {
        /// The prefix given.
        prefix: String,
        /// Every id it starts.
        candidates: Vec<String>,
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
    // 4: the backend settings that define a box (vcpus, memory, root filesystem) live
    // in the config JSON as `settings`; rows of older versions get the defaults written
    // out. Rows whose config is not a JSON object are left as they are (reported as
    // corrupt when read, never fatal).
    "UPDATE boxes SET config = json_set(config, '$.settings', json('{}'))
        WHERE json_valid(config) AND json_type(config) = 'object' AND json_type(config, '$.settings') IS NULL;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

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

/// The VFS that keeps `/proc/self/fd/<n>/<name>` as SQLite's full path name.
#[cfg(target_os = "linux")]
mod fd_vfs {
    use std::ffi::{CStr, c_char, c_int};
    use std::sync::OnceLock;

    use rusqlite::ffi;

    /// The registered name.
    pub(super) const NAME: &CStr = c"boxsock-fd";
    /// Names kept as they are; everything else goes to the default VFS.
    pub(super) const PREFIX: &[u8] = b"/proc/self/fd/";

    type FullPathname = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int, *mut c_char) -> c_int;
    static BASE_FULL_PATHNAME: OnceLock<FullPathname> = OnceLock::new();
    static REGISTERED: OnceLock<Result<(), VfsError>> = OnceLock::new();

    /// Why the `boxsock-fd` VFS could not be registered.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub(crate) enum VfsError {
        /// `sqlite3_vfs_find(NULL)` found no default VFS.
        #[error("SQLite has no default VFS")]
        NoDefault,
        /// The default VFS lacks the method this one wraps.
        #[error("the default VFS has no xFullPathname")]
        NoFullPathname,
        /// `sqlite3_vfs_register` failed.
        #[error("sqlite3_vfs_register failed with code {code}")]
        Register {
            /// SQLite's result code.
            code: c_int,
        },
    }

    unsafe extern "C" fn full_pathname(vfs: *mut ffi::sqlite3_vfs, z_path: *const c_char, n_out: c_int, z_out: *mut c_char) -> c_int {
        // SAFETY: SQLite passes a NUL-terminated file name.
        let path = unsafe { CStr::from_ptr(z_path) }.to_bytes_with_nul();
        if path.starts_with(PREFIX) {
            if path.len() > usize::try_from(n_out).unwrap_or(0) {
                return ffi::SQLITE_CANTOPEN;
            }
            // SAFETY: z_out holds n_out bytes (the xFullPathname contract) and the name,
            // NUL included, is no longer than that; the buffers do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(z_path, z_out, path.len()) };
            return ffi::SQLITE_OK;
        }
        match BASE_FULL_PATHNAME.get() {
            // SAFETY: the default VFS's own method, called with its own contract.
            Some(f) => unsafe { f(vfs, z_path, n_out, z_out) },
            None => ffi::SQLITE_ERROR,
        }
    }

    /// Register the VFS once per process (idempotent).
    pub(super) fn register() -> Result<(), VfsError> {
        REGISTERED
            .get_or_init(|| {
                // SAFETY: a null name asks for the default VFS; sqlite3_vfs_find
                // initialises SQLite first. A registered VFS is never freed.
                let base = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
                if base.is_null() {
                    return Err(VfsError::NoDefault);
                }
                // SAFETY: `base` points to a live, registered sqlite3_vfs (plain data and
                // function pointers); we copy it and never write through `base`.
                let mut vfs: ffi::sqlite3_vfs = unsafe { std::ptr::read(base) };
                let Some(f) = vfs.xFullPathname else { return Err(VfsError::NoFullPathname) };
                let _ = BASE_FULL_PATHNAME.set(f);
                // Everything else (pAppData included, which the unix VFS's xOpen uses)
                // stays the default VFS's.
                vfs.zName = NAME.as_ptr();
                vfs.pNext = std::ptr::null_mut();
                vfs.xFullPathname = Some(full_pathname);
                let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
                // SAFETY: `vfs` lives for the rest of the process, as SQLite requires;
                // makeDflt = 0 leaves the default VFS the default.
                let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
                if rc == ffi::SQLITE_OK { Ok(()) } else { Err(VfsError::Register { code: rc }) }
            })
            .clone()
    }
}

/// The schema version recorded in a SQLite file's header (`user_version`, a big-endian
/// 32-bit integer at offset 60), if `header` is one.
fn header_user_version(header: &[u8]) -> Option<i64> {
    if header.len() < 64 || !header.starts_with(b"SQLite format 3\0") {
        return None;
    }
    Some(i64::from(i32::from_be_bytes([header[60], header[61], header[62], header[63]])))
}

fn read_header(fd: &OwnedFd) -> std::io::Result<Vec<u8>> {
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
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(sq("read journal mode"))?;
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
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline => {
                tracing::debug!(path = %path.display(), "another connection is switching the store to WAL; retrying");
                std::thread::sleep(step);
                step = (step * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(sq("enable WAL")(e)),
        }
    }
}

/// The store files (device, inode) that a [`Store`] of this process has open, with how
/// many: [`Store::open_at`] never opens (and so never closes) a descriptor of one.
type OpenStores = std::collections::HashMap<(u64, u64), usize>;

fn open_stores() -> std::sync::MutexGuard<'static, OpenStores> {
    static OPEN: std::sync::OnceLock<Mutex<OpenStores>> = std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Store`]'s entry in [`open_stores`], removed when the store (its connection
/// first: the field order of `Store`) is dropped.
#[derive(Debug)]
struct OpenStore((u64, u64));

impl Drop for OpenStore {
    fn drop(&mut self) {
        let mut open = open_stores();
        if let Some(n) = open.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

/// Check that a store file's `lstat` is a regular file of ours.
fn secure_stat(st: &nix::sys::stat::FileStat, path: &Path) -> Result<(), StoreError> {
    let euid = nix::unistd::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(StoreError::Insecure { path: path.to_path_buf(), reason: format!("not a regular file (mode {:o})", st.st_mode) });
    }
    if st.st_uid != euid {
        return Err(StoreError::Insecure {
            path: path.to_path_buf(),
            reason: format!("owned by uid {}, not by this user (uid {euid})", st.st_uid),
        });
    }
    Ok(())
}

/// Make a store file 0600 with `chmod` if it is not (files of an older boxsock).
fn tighten(st: &nix::sys::stat::FileStat, path: &Path, chmod: impl FnOnce() -> nix::Result<()>) -> Result<(), StoreError> {
    if st.st_mode & 0o777 != 0o600 {
        chmod().map_err(|e| StoreError::Io { path: path.to_path_buf(), op: "make 0600", source: e.into() })?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sq = |op| {
        let path = path.to_path_buf();
        move |source| StoreError::Sqlite { path, op, source }
    };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq("begin migration"))?;
    // Re-read inside the write lock: another process may have migrated meanwhile.
    let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq("read schema version"))?;
    if v > SCHEMA_VERSION {
        return Err(StoreError::FutureSchema { path: path.to_path_buf(), found: v, supported: SCHEMA_VERSION });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.execute_batch(m).map_err(sq("migrate"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(sq("write schema version"))?;
        tracing::debug!(path = %boxsock_core::echo::path(path), version = i + 1, "store migrated");
    }
    tx.commit().map_err(sq("commit migration"))
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
        let state = self.state.parse::<BoxState>().map_err(|e| corrupt(e.to_string()))?;
        let config: BoxConfig = serde_json::from_str(&self.config).map_err(|e| corrupt(format!("config JSON: {e}")))?;
        if let Some(root) = config.settings.rootfs.as_deref().filter(|r| !r.is_absolute()) {
            return Err(corrupt(format!("settings.rootfs {} is not an absolute path", boxsock_core::echo::path(root))));
        }
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
        let dir = nix::fcntl::open(parent, crate::sys::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| StoreError::Io { path: path.to_path_buf(), op: "open the directory of", source: e.into() })?;
        Self::open_at(dir, path, StoreMode::ReadWrite)
    }

    /// Open the store whose file is `path`'s last component inside the directory `dir`
    /// (an opened descriptor: SQLite reaches the file through it, never by resolving
    /// `path` again; `path` is what messages name).
    pub fn open_at(dir: OwnedFd, path: &Path, mode: StoreMode) -> Result<Store, StoreError> {
        let path = path.to_path_buf();
        let io = |op: &'static str| {
            let path = path.clone();
            move |e: nix::errno::Errno| StoreError::Io { path, op, source: e.into() }
        };
        let name = path
            .file_name()
            .ok_or_else(|| StoreError::Io {
                path: path.clone(),
                op: "name",
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the store path has no file name"),
            })?
            .to_os_string();
        let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let created = match mode {
            StoreMode::ReadWrite => {
                let excl = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | nofollow;
                match openat(dir.as_fd(), name.as_os_str(), excl, Mode::from_bits_truncate(0o600)) {
                    Ok(f) => {
                        let st = fstat(&f).map_err(io("inspect"))?;
                        secure_stat(&st, &path).and_then(|()| tighten(&st, &path, || fchmod(&f, Mode::from_bits_truncate(0o600))))?;
                        // A file this open created: no connection of this process has
                        // it, so closing this descriptor drops nobody's lock.
                        true
                    }
                    Err(nix::errno::Errno::EEXIST) => false,
                    Err(e) => return Err(io("create")(e)),
                }
            }
            StoreMode::ReadOnly => false,
        };
        let cleanup = |e: StoreError| {
            if created {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut n = name.clone();
                    n.push(suffix);
                    let _ = unlinkat(dir.as_fd(), n.as_os_str(), UnlinkatFlags::NoRemoveDir);
                }
            }
            e
        };
        // Existing files are checked by `fstatat` on the directory, never opened here:
        // closing any descriptor of a file drops every POSIX lock this process holds on
        // it, so checking a store that another `Store` of this process has open (a
        // second runtime on the home, a read-only one) would silently take that
        // connection's SQLite locks away, and another process could then reset the
        // shared WAL index under it (SIGBUS) or write beside it.
        let in_use = open_stores();
        let checked = (|| {
            let st = match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) if mode == StoreMode::ReadOnly => return Ok(None),
                Err(e) => return Err(io("inspect")(e)),
            };
            secure_stat(&st, &path)?;
            let key = (st.st_dev, st.st_ino);
            if mode == StoreMode::ReadWrite {
                tighten(&st, &path, || fchmodat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(0o600), FchmodatFlags::FollowSymlink))?;
            }
            // The schema version before SQLite sees the file (`journal_mode=WAL` and a
            // migration write): read through a descriptor only when no store of this
            // process has the file open; otherwise that store read it, and the version
            // SQLite reports is checked again before any write (`open_sqlite`).
            if !in_use.contains_key(&key) {
                let file = openat(dir.as_fd(), name.as_os_str(), OFlag::O_RDONLY | nofollow, Mode::empty()).map_err(io("open"))?;
                let same = fstat(&file).map(|f| (f.st_dev, f.st_ino) == key).unwrap_or(false);
                let header = read_header(&file).map_err(|e| StoreError::Io { path: path.clone(), op: "read header", source: e })?;
                drop(file);
                if !same {
                    return Err(StoreError::Insecure { path: path.clone(), reason: "it was replaced while being checked".into() });
                }
                if let Some(found) = header_user_version(&header) {
                    if found > SCHEMA_VERSION {
                        return Err(StoreError::FutureSchema { path: path.clone(), found, supported: SCHEMA_VERSION });
                    }
                }
            }
            if mode == StoreMode::ReadWrite {
                for suffix in ["-wal", "-shm"] {
                    let mut n = name.clone();
                    n.push(suffix);
                    let p = PathBuf::from(format!("{}{suffix}", path.display()));
                    match fstatat(dir.as_fd(), n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            secure_stat(&st, &p)?;
                            tighten(&st, &p, || fchmodat(dir.as_fd(), n.as_os_str(), Mode::from_bits_truncate(0o600), FchmodatFlags::FollowSymlink))?;
                        }
                        Err(nix::errno::Errno::ENOENT) => {}
                        Err(e) => return Err(StoreError::Io { path: p, op: "inspect", source: e.into() }),
                    }
                }
            }
            Ok(Some(key))
        })();
        let key = match checked.map_err(cleanup)? {
            Some(key) => key,
            None => {
                drop(in_use);
                return Self::in_memory(&path);
            }
        };
        let mut in_use = in_use;
        *in_use.entry(key).or_insert(0) += 1;
        drop(in_use);
        let guard = OpenStore(key);
        let opened = Self::open_sqlite(&dir, &path, &name, mode).map_err(cleanup)?;
        Ok(Store { path, conn: Mutex::new(opened), _dir: Some(dir), _open: Some(guard) })
    }

    fn open_sqlite(dir: &OwnedFd, path: &Path, name: &std::ffi::OsStr, mode: StoreMode) -> Result<Connection, StoreError> {
        let sq = |op| {
            let path = path.to_path_buf();
            move |source| StoreError::Sqlite { path, op, source }
        };
        let flags = match mode {
            StoreMode::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            StoreMode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        #[cfg(target_os = "linux")]
        let mut conn = {
            fd_vfs::register().map_err(|reason| StoreError::Io {
                path: path.to_path_buf(),
                op: "register the SQLite VFS",
                source: std::io::Error::other(reason),
            })?;
            let short = Path::new(std::str::from_utf8(fd_vfs::PREFIX).unwrap_or("/proc/self/fd/"))
                .join(dir.as_raw_fd().to_string())
                .join(name);
            Connection::open_with_flags_and_vfs(&short, flags, fd_vfs::NAME).map_err(sq("open"))?
        };
        #[cfg(not(target_os = "linux"))]
        let mut conn = {
            let _ = (dir, name);
            Connection::open_with_flags(path, flags).map_err(sq("open"))?
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sq("set busy timeout"))?;
        // Before anything that writes: `journal_mode=WAL` rewrites the header.
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq("read schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::FutureSchema { path: path.to_path_buf(), found, supported: SCHEMA_VERSION });
        }
        if mode == StoreMode::ReadOnly {
            return Ok(conn);
        }
        enable_wal(&conn, path)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;").map_err(sq("set pragmas"))?;
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
        let mut stmt = conn.prepare("SELECT id FROM boxes ORDER BY id").map_err(self.sq("list box ids"))?;
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

    /// Run raw SQL (tests only: inserting legacy rows, corrupting rows). Only with the
    /// `test-support` feature.
    #[cfg(any(test, feature = "test-support"))]
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.conn().execute_batch(sql).map_err(self.sq("execute"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BoxConfig {
        BoxConfig { strategy: "short-symlink".into(), backend: "host".into(), network: false, env: vec![], settings: BoxSettings::default() }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("boxsock.db")).unwrap();
        (d, s)
    }

    #[test]
    fn a_unique_id_prefix_resolves_an_ambiguous_one_names_the_candidates_and_names_win() {
        let (_d, s) = store();
        let a = Store::new_record(BoxId::parse("abc111").unwrap(), None, cfg());
        let b = Store::new_record(BoxId::parse("abc222").unwrap(), None, cfg());
        // A box whose *name* is a prefix of the others' ids.
        let c = Store::new_record(BoxId::parse("zzz999").unwrap(), Some("abc1".into()), cfg());
        for r in [&a, &b, &c] {
            s.insert(r).unwrap();
        }
        assert_eq!(s.resolve("abc2").unwrap().unwrap().0, "abc222");
        assert_eq!(s.resolve("abc222").unwrap().unwrap().0, "abc222");
        assert_eq!(s.resolve("abc1").unwrap().unwrap().0, "zzz999", "a name wins over an id prefix");
        assert_eq!(s.resolve("abc11").unwrap().unwrap().0, "abc111");
        match s.resolve("abc") {
            Err(StoreError::AmbiguousPrefix { prefix, candidates }) => {
                assert_eq!(prefix, "abc");
                assert_eq!(candidates, vec!["abc111".to_owned(), "abc222".to_owned()]);
            }
            other => panic!("expected AmbiguousPrefix, got {other:?}"),
        }
        let msg = s.resolve("abc").unwrap_err().to_string();
        assert!(msg.contains("abc111") && msg.contains("abc222"), "{msg}");
        assert!(s.resolve("").unwrap().is_none());
        assert!(s.resolve("x").unwrap().is_none());
        // Exact lookups (what a new name must not collide with) take no prefixes.
        assert!(s.resolve_exact("abc2").unwrap().is_none());
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

    /// Issue 10: `PRAGMA journal_mode=WAL` used to run before the version check,
    /// rewriting the header of a newer store and creating `-wal` and `-shm`.
    #[test]
    fn future_schema_is_refused_before_any_write_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch("CREATE TABLE future (x); INSERT INTO future VALUES (1);").unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        let before = std::fs::read(&p).unwrap();
        for mode in [StoreMode::ReadWrite, StoreMode::ReadOnly] {
            let dir = nix::fcntl::open(d.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
            match Store::open_at(dir, &p, mode) {
                Err(StoreError::FutureSchema { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
                other => panic!("expected FutureSchema, got {other:?}"),
            }
            assert_eq!(std::fs::read(&p).unwrap(), before, "{mode:?}: the store's bytes changed");
            let mut names: Vec<String> =
                std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            assert_eq!(names, ["boxsock.db"], "{mode:?}: files appeared next to the store");
        }
    }

    /// A directory path of exactly `len` bytes under `base` (components of at most 200
    /// bytes), created.
    fn deep_dir(base: &Path, len: usize) -> PathBuf {
        let mut p = base.to_path_buf();
        while p.as_os_str().len() < len {
            let left = len - p.as_os_str().len() - 1;
            let n = if left > 200 { 200.min(left - 2) } else { left.max(1) };
            p.push("d".repeat(n));
        }
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Issue 10: SQLite's unix VFS limits path names to 512 bytes, so a home of 494
    /// bytes or more could not open its store. The store must open however deep.
    #[test]
    fn a_store_opens_however_deep_its_directory() {
        let d = tempfile::tempdir().unwrap();
        for len in [600, 2000, 4000] {
            let dir = deep_dir(d.path(), len);
            assert_eq!(dir.as_os_str().len(), len);
            let p = dir.join("boxsock.db");
            let s = Store::open(&p).unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            let rec = Store::new_record(BoxId::generate(), None, cfg());
            s.insert(&rec).unwrap();
            drop(s);
            let s = Store::open(&p).unwrap();
            assert_eq!(s.list().unwrap().boxes, vec![rec]);
            let mode: String = s.conn().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "wal");
            assert!(dir.join("boxsock.db-wal").exists(), "the WAL lives next to the store");
            let ro = Store::open_at(
                nix::fcntl::open(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap(),
                &p,
                StoreMode::ReadOnly,
            )
            .unwrap();
            assert_eq!(ro.list().unwrap().boxes.len(), 1);
            assert!(ro.execute_raw("DELETE FROM boxes").is_err(), "a read-only store refuses writes");
        }
    }

    #[test]
    fn a_read_only_store_of_a_missing_file_is_empty_and_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.db");
        let dir = nix::fcntl::open(d.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let s = Store::open_at(dir, &p, StoreMode::ReadOnly).unwrap();
        assert!(s.list().unwrap().boxes.is_empty());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_open_that_fails_removes_the_store_it_created() {
        let d = tempfile::tempdir().unwrap();
        // A directory where the WAL would go: refused after the database was created.
        std::fs::create_dir(d.path().join("boxsock.db-wal")).unwrap();
        match Store::open(d.path().join("boxsock.db")) {
            Err(StoreError::Insecure { path, .. }) => assert_eq!(path, d.path().join("boxsock.db-wal")),
            other => panic!("expected Insecure, got {other:?}"),
        }
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("boxsock.db-wal")], "the new database was left behind");
    }

    #[test]
    fn a_symlinked_store_is_refused_and_a_failed_create_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.db");
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert!(matches!(Store::open(&p), Err(StoreError::Io { .. } | StoreError::Insecure { .. })));
        std::fs::remove_file(&p).unwrap();
        // A store that cannot be opened as SQLite (garbage) is left as found.
        std::fs::write(&p, vec![7u8; 4096]).unwrap();
        assert!(Store::open(&p).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), vec![7u8; 4096]);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("boxsock.db")]);
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

    /// Schema v4 (issue 13): a v3 store migrates; its rows gain explicit default
    /// settings, a row whose config is not JSON stays as it was (reported, not fatal),
    /// and settings written now round-trip so a later `start` boots the same box.
    #[test]
    fn a_version_3_store_migrates_to_v4_and_box_settings_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.db");
        {
            let c = Connection::open(&p).unwrap();
            for m in &MIGRATIONS[..3] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 3).unwrap();
            c.execute_batch(
                r#"INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms)
                   VALUES ('old3', NULL, 'stopped', '{"strategy":"short-symlink","backend":"host","network":false,"env":[]}', 1, 1);
                   INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms)
                   VALUES ('bad3', NULL, 'stopped', 'not json {', 1, 1);"#,
            )
            .unwrap();
        }
        let s = Store::open(&p).unwrap();
        let v: i64 = s.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 4);
        let raw: String = s.conn().query_row("SELECT config FROM boxes WHERE id = 'old3'", [], |r| r.get(0)).unwrap();
        assert!(raw.contains(r#""settings":{}"#), "{raw}");
        assert_eq!(s.get(&BoxId::parse("old3").unwrap()).unwrap().unwrap().config, cfg());
        let bad: String = s.conn().query_row("SELECT config FROM boxes WHERE id = 'bad3'", [], |r| r.get(0)).unwrap();
        assert_eq!(bad, "not json {");
        let listing = s.list().unwrap();
        assert_eq!(listing.boxes.len(), 1);
        assert_eq!(listing.bad.len(), 1, "{:?}", listing.bad);

        let mut config = cfg();
        config.backend = "libkrun".into();
        config.settings.vcpus = Some(2);
        config.settings.ram_mib = Some(1024);
        config.settings.rootfs = Some(PathBuf::from("/srv/roots/busybox"));
        let rec = Store::new_record(BoxId::generate(), None, config.clone());
        s.insert(&rec).unwrap();
        drop(s);
        let s = Store::open(&p).unwrap();
        assert_eq!(s.get(&rec.id).unwrap().unwrap().config, config);
    }

    /// A stored rootfs that is not absolute cannot be what create canonicalised: the
    /// row is reported corrupt with the path, and the others still list.
    #[test]
    fn a_relative_stored_rootfs_is_a_reported_corrupt_row() {
        let (_d, s) = store();
        s.conn()
            .execute_batch(
                r#"INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms)
                   VALUES ('rel', NULL, 'stopped', '{"strategy":"direct","backend":"libkrun","settings":{"rootfs":"roots/x"}}', 1, 1);
                   INSERT INTO boxes (id, name, state, config, created_at_ms, updated_at_ms)
                   VALUES ('badvcpu', NULL, 'stopped', '{"strategy":"direct","backend":"libkrun","settings":{"vcpus":300}}', 1, 1);"#,
            )
            .unwrap();
        let listing = s.list().unwrap();
        assert!(listing.boxes.is_empty());
        let reasons: Vec<String> = listing.bad.iter().map(|b| format!("{}: {}", b.id, b.error)).collect();
        assert!(reasons.iter().any(|r| r.contains("rel") && r.contains("roots/x") && r.contains("not an absolute path")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("badvcpu") && r.contains("300")), "{reasons:?}");
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
