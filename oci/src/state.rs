//! The state directory under `--root`.
//!
//! ```text
//! <root>/                      0700
//!   home/                      boxsock's home: boxsock.db, boxes/<box>/… (its socket
//!                              strategy keeps every box socket short, however deep)
//!   containers/<id>/           0700, one per container, made by `create` (mkdir: an
//!                              id is taken once)
//!     state.json               the record (box, bundle, annotations, supervisor)
//!     start.fifo, ctl.fifo     0600 FIFOs the supervisor holds open: `start` writes
//!                              one byte, `kill` a signal number (no socket path, so
//!                              no sun_path limit, and only the owner can open them)
//! ```
//!
//! A container's status is derived, never stored: no supervisor yet is `creating`; the
//! supervisor alive (same pid and start time) is `created` until `start`, then
//! `running`; the supervisor gone (or a zombie) is `stopped`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use boxsock::ProcessIdentity;
use boxsock::boxsock_core::atomic::AtomicWrite;
use boxsock::boxsock_core::process::Liveness;
use serde::{Deserialize, Serialize};

use crate::OciError;

/// The longest container id (one path component).
pub const MAX_ID_BYTES: usize = 255;
/// The OCI runtime spec version this runtime reports.
pub const OCI_VERSION: &str = "1.2.0";

/// A valid container id: `[A-Za-z0-9_+.-]`, not starting with `.` or `-`, at most
/// [`MAX_ID_BYTES`] bytes (runc's rule, bounded to one directory name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerId(String);

impl ContainerId {
    /// Check `id`.
    pub fn new(id: &str) -> Result<ContainerId, OciError> {
        let bad = |reason: String| OciError::BadId { id: id.to_owned(), reason };
        if id.is_empty() {
            return Err(bad("empty".into()));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(bad(format!("{} bytes, more than the {MAX_ID_BYTES} allowed", id.len())));
        }
        if id.starts_with(['.', '-']) {
            return Err(bad("starts with '.' or '-'".into()));
        }
        if let Some(c) =
            id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-')))
        {
            return Err(bad(format!("{c:?} is not allowed (letters, digits, _ + . - only)")));
        }
        Ok(ContainerId(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--root`.
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
}

/// A container's OCI status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `create` has not finished.
    Creating,
    /// Its supervisor waits for `start`.
    Created,
    /// Started, its supervisor alive.
    Running,
    /// Its supervisor has exited.
    Stopped,
}

impl Status {
    /// As the OCI state spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// What `create` records of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The container id.
    pub id: String,
    /// The box's id in the home.
    pub box_id: String,
    /// The bundle, absolute.
    pub bundle: PathBuf,
    /// `config.json`'s annotations.
    pub annotations: BTreeMap<String, String>,
    /// When `create` began (RFC 3339).
    pub created: String,
    /// The supervisor, once it is up.
    pub supervisor: Option<ProcessIdentity>,
    /// Whether `start` has been given.
    pub started: bool,
}

/// A container: its directory and record.
#[derive(Debug, Clone)]
pub struct Container {
    /// `<root>/containers/<id>`.
    pub dir: PathBuf,
    /// Its record.
    pub record: Record,
}

impl StateRoot {
    /// `--root`, or the default: `/run/boxsock-oci` for root, else
    /// `$XDG_RUNTIME_DIR/boxsock-oci` (as runc's `/run/runc` and
    /// `$XDG_RUNTIME_DIR/runc`).
    pub fn new(root: Option<PathBuf>) -> Result<StateRoot, OciError> {
        let root = match root {
            Some(r) => r,
            None if nix::unistd::geteuid().is_root() => PathBuf::from("/run/boxsock-oci"),
            None => match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                Some(d) => PathBuf::from(d).join("boxsock-oci"),
                None => {
                    return Err(OciError::Usage(
                        "no --root, and XDG_RUNTIME_DIR is not set: pass --root".into(),
                    ));
                }
            },
        };
        let root = std::path::absolute(&root)
            .map_err(|e| OciError::io("make absolute the root", &root, e))?;
        Ok(StateRoot { root })
    }

    /// The root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// boxsock's home.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Make the root and `containers/` (0700) if missing, and check that no other user
    /// can change them: every directory above `containers/` owned by root or this user
    /// and, if writable by others, sticky; `containers/` this user's and writable by no
    /// one else (`boxsock_core::trust`, the rule of the home and the link base). Paths
    /// under it are then this user's alone, so they are used by name.
    pub fn ensure(&self) -> Result<(), OciError> {
        use boxsock::boxsock_core::trust;
        let dir = self.containers();
        let me = nix::unistd::geteuid().as_raw();
        let what = "boxsock-oci's state directory";
        // Before making anything: the nearest existing directory on the way, and all
        // above it, are trusted.
        let mut existing = dir.as_path();
        while std::fs::symlink_metadata(existing).is_err() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        let (_, st) = trust::open_dir(existing, me, what)
            .map_err(|e| OciError::Usage(format!("--root: {e}")))?;
        trust::check_dir(&st, me).map_err(|d| {
            OciError::Usage(format!(
                "--root: {}: {}",
                boxsock::boxsock_core::echo::path(existing),
                d.explain(what, me)
            ))
        })?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| OciError::io("create the state directory", &dir, e))?;
        self.trusted()
    }

    /// Check, without making anything, that no other user can change `containers/`
    /// (see [`StateRoot::ensure`]): every command that reads a record checks this
    /// first, so no record another user wrote (a supervisor pid `delete` would kill) is
    /// ever believed.
    pub fn trusted(&self) -> Result<(), OciError> {
        use boxsock::boxsock_core::trust;
        let dir = self.containers();
        let me = nix::unistd::geteuid().as_raw();
        let what = "boxsock-oci's state directory";
        let (_, st) =
            trust::open_dir(&dir, me, what).map_err(|e| OciError::Usage(format!("--root: {e}")))?;
        if st.st_uid != me || st.st_mode & 0o022 != 0 {
            return Err(OciError::Usage(format!(
                "--root: {} is owned by uid {} with mode {:o}: it must be uid {me}'s and \
                 writable by no one else",
                boxsock::boxsock_core::echo::path(&dir),
                st.st_uid,
                st.st_mode & 0o7777
            )));
        }
        Ok(())
    }

    /// Make a new container's directory: the id is taken here, once.
    pub fn claim(&self, id: &ContainerId) -> Result<PathBuf, OciError> {
        self.ensure()?;
        let dir = self.containers().join(id.as_str());
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(OciError::Exists { id: id.to_string() })
            }
            Err(e) => Err(OciError::io("create the container's directory", &dir, e)),
        }
    }

    /// A container's directory (whether or not it exists).
    pub fn dir(&self, id: &ContainerId) -> PathBuf {
        self.containers().join(id.as_str())
    }

    /// Load a container.
    pub fn load(&self, id: &ContainerId) -> Result<Container, OciError> {
        match std::fs::symlink_metadata(self.containers()) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(OciError::NotFound { id: id.to_string() });
            }
            _ => self.trusted()?,
        }
        let dir = self.dir(id);
        let path = dir.join("state.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(OciError::NotFound { id: id.to_string() });
            }
            Err(e) => return Err(OciError::io("read", &path, e)),
        };
        let record: Record = serde_json::from_slice(&text).map_err(|e| OciError::BadRecord {
            id: id.to_string(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if record.id != id.as_str() {
            return Err(OciError::BadRecord {
                id: id.to_string(),
                path,
                reason: format!("it is the record of {:?}", record.id),
            });
        }
        Ok(Container { dir, record })
    }

    /// The ids of every container with a directory, sorted.
    pub fn ids(&self) -> Result<Vec<String>, OciError> {
        let dir = self.containers();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OciError::io("list", &dir, e)),
        };
        let mut ids: Vec<String> =
            rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        ids.sort();
        Ok(ids)
    }
}

impl Container {
    /// Write the record (atomically).
    pub fn save(&self) -> Result<(), OciError> {
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec(&self.record).expect("a record serialises");
        AtomicWrite::new(0o600)
            .without_fsync()
            .write(&path, &bytes)
            .map(drop)
            .map_err(|e| OciError::io("write", &path, e.into()))
    }

    /// Its status now.
    pub fn status(&self) -> Status {
        match self.record.supervisor {
            None => Status::Creating,
            Some(s) => match s.probe() {
                Liveness::Alive if self.record.started => Status::Running,
                Liveness::Alive => Status::Created,
                Liveness::Zombie | Liveness::Gone => Status::Stopped,
            },
        }
    }

    /// The start FIFO.
    pub fn start_fifo(&self) -> PathBuf {
        self.dir.join("start.fifo")
    }

    /// The control FIFO (signals for the command).
    pub fn ctl_fifo(&self) -> PathBuf {
        self.dir.join("ctl.fifo")
    }

    /// The OCI state (`state`'s output).
    pub fn oci_state(&self) -> serde_json::Value {
        let status = self.status();
        let pid = match (status, self.record.supervisor) {
            (Status::Created | Status::Running, Some(s)) => s.pid,
            _ => 0,
        };
        serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.record.id,
            "status": status.as_str(),
            "pid": pid,
            "bundle": self.record.bundle,
            "annotations": self.record.annotations,
            "created": self.record.created,
        })
    }
}

/// Now, in RFC 3339.
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}
