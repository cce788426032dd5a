//! The row codec: a box as stored ([`BoxRecord`], its [`BoxConfig`] as JSON) and the
//! decoding of a raw row, which reports a corrupt row with its id instead of failing.

use serde::{Deserialize, Serialize};

use boxsock_core::backend::BoxSettings;
use boxsock_core::id::BoxId;

use super::StoreError;
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
    /// The box's own process and user (decision 0020); rows written before it load
    /// with none. Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "BoxProcess::is_empty")]
    pub process: BoxProcess,
}

/// A box's main process, stored with it at create (decision 0020): what `run` runs and
/// `start --attach` runs again, and the user every command of the box runs as unless
/// it names its own (docker's `Config.User`, the default of `exec` too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BoxProcess {
    /// argv of the box's command; empty: the box has none (commands run only by
    /// `exec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The command's environment, on top of the box's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// The command's working directory in the box (absolute), and every `exec`'s
    /// without one of its own (as `docker exec`); `None`: the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The user (`uid`, `uid:gid`, `name`, `name:group`, resolved in the box) the
    /// command and every `exec` without a user of its own run as; `None`: the
    /// agent's user (root in a guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The resource limits the command starts with (an OCI bundle's
    /// `process.rlimits`); not those of other commands of the box.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<boxsock_core::proto::Rlimit>,
}

impl BoxProcess {
    /// A process running `argv` (the first element looked up on the box's `PATH`).
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        BoxProcess { argv: argv.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    /// Whether nothing is set (no command, no user).
    pub fn is_empty(&self) -> bool {
        *self == BoxProcess::default()
    }

    /// Whether the box has a command of its own.
    pub fn has_command(&self) -> bool {
        !self.argv.is_empty()
    }
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

/// A row found by [`Store::resolve`](super::Store::resolve): its id column (the row may be corrupt) and its
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

/// The result of [`Store::list`](super::Store::list): the good rows, and the bad ones with their errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// Rows that loaded, ordered by creation time.
    pub boxes: Vec<BoxRecord>,
    /// Rows that did not.
    pub bad: Vec<BadRow>,
}

pub(super) const COLUMNS: &str =
    "id, name, state, config, pid, start_time, exit_code, created_at_ms, updated_at_ms";

/// A raw row, before decoding.
pub(super) struct RawRow {
    pub(super) id: String,
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
    pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
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

    pub(super) fn decode(self) -> Result<BoxRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { id: self.id.clone(), reason };
        let id = BoxId::parse(&self.id).map_err(|e| corrupt(e.to_string()))?;
        let state = self.state.parse::<BoxState>().map_err(|e| corrupt(e.to_string()))?;
        let config: BoxConfig =
            serde_json::from_str(&self.config).map_err(|e| corrupt(format!("config JSON: {e}")))?;
        if let Some(root) = config.settings.rootfs.as_deref().filter(|r| !r.is_absolute()) {
            return Err(corrupt(format!(
                "settings.rootfs {} is not an absolute path",
                boxsock_core::echo::path(root)
            )));
        }
        let process = match (self.pid, self.start_time) {
            (Some(pid), Some(st)) => Some(ProcessIdentity {
                pid: i32::try_from(pid).map_err(|_| corrupt(format!("pid {pid} out of range")))?,
                start_time: u64::try_from(st)
                    .map_err(|_| corrupt(format!("start time {st} out of range")))?,
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
