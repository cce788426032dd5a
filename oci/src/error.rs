//! What can go wrong, with the facts to say so: the container, the path, the field.

use std::path::PathBuf;

use boxsock::RuntimeError;
use boxsock::boxsock_core::echo;

/// An error of a `boxsock-oci` command. Its text is what engines show their user
/// (conmon and containerd's shim read the `--log` file's `msg`), so every variant names
/// what it is about; input echoed back is escaped and bounded.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A container id that cannot name a directory.
    #[error("container id {}: {reason}", echo::echo(.id))]
    BadId {
        /// The id as given.
        id: String,
        /// Why.
        reason: String,
    },
    /// No container of this id under `--root` (engines look for "does not exist").
    #[error("container {} does not exist", echo::echo(.id))]
    NotFound {
        /// The id.
        id: String,
    },
    /// `create` of an id that is taken.
    #[error("container {} already exists", echo::echo(.id))]
    Exists {
        /// The id.
        id: String,
    },
    /// A command that needs another status (`start` of a running container…).
    #[error("container {} is {status}: {what}", echo::echo(.id))]
    WrongStatus {
        /// The id.
        id: String,
        /// Its OCI status now.
        status: &'static str,
        /// What cannot be done in that status.
        what: String,
    },
    /// The bundle or its `config.json` cannot be read or parsed.
    #[error("bundle {}: {reason}", echo::path(.bundle))]
    Bundle {
        /// The bundle directory.
        bundle: PathBuf,
        /// Why.
        reason: String,
    },
    /// A `config.json` or `process.json` field boxsock cannot honour.
    #[error("{field}: {reason}")]
    Unsupported {
        /// The field, as the runtime spec spells it (`linux.namespaces[2].path`).
        field: String,
        /// Why, and what to do instead where there is something.
        reason: String,
    },
    /// A command-line value that is not valid (a signal name, a flag combination).
    #[error("{0}")]
    Usage(String),
    /// A limit of `process.rlimits` that this host does not let the runtime set.
    #[error(
        "process.rlimits: {name} soft {soft} hard {hard}: cannot be set here ({errno}); this \
         host's limit for the runtime is soft {cur_soft} hard {cur_hard}"
    )]
    Rlimit {
        /// `RLIMIT_NOFILE`…
        name: String,
        /// Asked soft limit.
        soft: u64,
        /// Asked hard limit.
        hard: u64,
        /// The current soft limit.
        cur_soft: String,
        /// The current hard limit.
        cur_hard: String,
        /// What `setrlimit` said.
        errno: nix::errno::Errno,
    },
    /// The state directory or a file in it.
    #[error("{what} {}: {source}", echo::path(.path))]
    Io {
        /// What was being done (`create the state directory`…).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A container's record is not what this version writes.
    #[error("container {}: its state file {} is unreadable: {reason}", echo::echo(.id), echo::path(.path))]
    BadRecord {
        /// The id.
        id: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The supervisor of a container did not come up.
    #[error("container {}: {reason}", echo::echo(.id))]
    Supervisor {
        /// The id.
        id: String,
        /// What happened.
        reason: String,
    },
    /// boxsock's runtime.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl OciError {
    /// An [`OciError::Io`].
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io { what, path: path.into(), source }
    }
}
