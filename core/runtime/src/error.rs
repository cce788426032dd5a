//! The runtime's error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::state::BoxState;
use crate::store::StoreError;
use boxsock_core::backend::BackendError;
use boxsock_core::error::BindingError;
use boxsock_core::id::{BoxId, IdError};
use boxsock_core::registry::RegistryError;

use crate::agent_client::ClientError;

/// What went wrong in a [`Runtime`](super::Runtime) operation. Every variant names the
/// box, socket, path or process involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Another runtime holds the home.
    #[error("home {} is in use by {}", boxsock_core::echo::path(home), match pid { Some(p) => format!("pid {p}"), None => "another process".to_string() })]
    HomeBusy {
        /// The home.
        home: PathBuf,
        /// The holder's pid, when it recorded one and is alive.
        pid: Option<i32>,
    },
    /// Another start, stop or remove of this box held it for longer than this one
    /// waits (see `lock::acquire_box`).
    #[error(
        "box {id} is busy: another start, stop or remove of it was still running after {waited:?}"
    )]
    BoxBusy {
        /// The box.
        id: String,
        /// How long this operation waited.
        waited: Duration,
    },
    /// Another process was still making this new home after the wait (see
    /// `home::InitLock`): it is stuck or stopped.
    #[error(
        "home {} is being made by another process, still after waiting {waited:?}; if no boxsock process is running, remove the empty home and try again",
        boxsock_core::echo::path(home)
    )]
    HomeInitialising {
        /// The home.
        home: PathBuf,
        /// How long this open waited.
        waited: Duration,
    },
    /// The home, an ancestor of it, or a directory or file inside it could be changed by
    /// another user (or is not what boxsock made): refused, never used.
    #[error("refusing home {}: {reason}", boxsock_core::echo::path(path))]
    InsecureHome {
        /// The directory or file found.
        path: PathBuf,
        /// What was found (owner, mode) and why it matters.
        reason: String,
    },
    /// A non-empty directory that is not a boxsock home (no `.boxsock-home`, no store):
    /// boxsock refuses to write into it.
    #[error(
        "{} is not a boxsock home: it is not empty (it holds {found}) and has neither .boxsock-home nor boxsock.db; refusing to write into it (use an empty or new directory)",
        boxsock_core::echo::path(path)
    )]
    NotAHome {
        /// The directory.
        path: PathBuf,
        /// Some of its entries.
        found: String,
    },
    /// [`CreateOptions`](crate::CreateOptions) without a strategy or a backend.
    #[error(
        "cannot create a box: no {what} chosen (CreateOptions::builder().{what}(\"<name>\") or .{what}_of::<Type>())"
    )]
    Unchosen {
        /// `strategy` or `backend`.
        what: &'static str,
    },
    /// A volume, port or size asked for at create is malformed, a volume's host
    /// directory is missing or not a directory, or two volumes share a guest path;
    /// nothing was written.
    #[error(transparent)]
    BadSetting(#[from] boxsock_core::settings::SettingError),
    /// The root filesystem asked for at create is not a usable directory.
    #[error("root filesystem {}: {reason}", boxsock_core::echo::path(path))]
    BadRootfs {
        /// The path as given.
        path: PathBuf,
        /// Why (missing, not a directory…).
        reason: String,
    },
    /// An image box for a backend that cannot run images
    /// ([`boxsock_core::backend::Backend::runs_images`]); nothing was written.
    #[error(
        "backend {backend:?} cannot run an image (it has no root of its own to show one as); {}",
        match capable.as_slice() {
            [] => "no registered backend can".to_owned(),
            names => format!("backends that can: {} (choose one with --backend)", names.join(", ")),
        }
    )]
    ImagesUnsupported {
        /// The backend asked for.
        backend: String,
        /// The registered backends that can run images, by name.
        capable: Vec<String>,
    },
    /// A box's image cannot be used (its root is missing, a bad digest).
    #[error("image {reference}: {reason}")]
    BadImage {
        /// The reference, echoed.
        reference: String,
        /// Why, naming the path.
        reason: String,
    },
    /// An image and a root filesystem directory given together.
    #[error("a box runs an image or a root filesystem directory (--rootfs), not both")]
    ImageAndRootfs,
    /// A read-only open of a home that does not exist.
    #[error("home {} does not exist", boxsock_core::echo::path(path))]
    NoHome {
        /// The home.
        path: PathBuf,
    },
    /// A change was asked of a runtime opened read-only.
    #[error("home {} was opened read-only: cannot {op}", boxsock_core::echo::path(home))]
    ReadOnly {
        /// The home.
        home: PathBuf,
        /// What was asked.
        op: &'static str,
    },
    /// A file system operation on the home failed.
    #[error("{op} {}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed (including corrupt rows and taken names).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image store failed (`Runtime::images`).
    #[error(transparent)]
    Image(#[from] boxsock_image::ImageError),
    /// An unknown or duplicate strategy or backend name.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A socket operation failed (including [`BindingError::PathTooLong`]).
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The strategy cannot serve the backend.
    #[error("strategy {strategy:?} cannot be used with backend {backend:?}: {reason}")]
    Incompatible {
        /// Strategy name.
        strategy: String,
        /// Backend name.
        backend: String,
        /// Why.
        #[source]
        reason: crate::sockets::Incompatibility,
    },
    /// The backend cannot run boxes here.
    #[error("backend {backend:?} is unavailable: {reason}")]
    BackendUnavailable {
        /// Backend name.
        backend: String,
        /// Why.
        reason: String,
    },
    /// A box name is not acceptable.
    #[error("invalid box name: {0}")]
    InvalidName(#[source] IdError),
    /// No box has this id or name.
    #[error("no box with id or name {}", boxsock_core::echo::echo(.0))]
    NotFound(String),
    /// The state machine refuses the change.
    #[error("box {id}: cannot go from {from} to {to}")]
    IllegalTransition {
        /// The box.
        id: BoxId,
        /// Its state.
        from: BoxState,
        /// The requested state.
        to: BoxState,
    },
    /// The operation needs a running box.
    #[error("box {id} is {state}, not running")]
    NotRunning {
        /// The box.
        id: BoxId,
        /// Its state.
        state: BoxState,
    },
    /// The box has no command of its own to run (created without one).
    #[error(
        "box {id} has no command of its own (it was created without one: give a command \
         after `--` at create, or run commands with exec)"
    )]
    NoCommand {
        /// The box.
        id: BoxId,
    },
    /// The box's own process (command, working directory, user) is not valid.
    #[error("the box's command: {reason}")]
    BadProcess {
        /// What is wrong, input echoed.
        reason: String,
    },
    /// Removing a box that is running needs `force`.
    #[error("box {id} is {state}; stop it first or remove with force (-f)")]
    StillRunning {
        /// The box.
        id: BoxId,
        /// Its state.
        state: BoxState,
    },
    /// The agent did not report ready in time. The box was stopped.
    #[error(
        "box {id}: timed out after {after:?} waiting for {waited_for}; the box was stopped.{} Last lines of its log:\n{log_tail}",
        crashed_sentence(kernel_crash)
    )]
    ReadyTimeout {
        /// The box.
        id: BoxId,
        /// What was awaited, with the address.
        waited_for: String,
        /// How long.
        after: Duration,
        /// The headline of the kernel crash the box's log shows since this start (a VM
        /// backend's guest console), if any.
        kernel_crash: Option<String>,
        /// The last lines of the box log.
        log_tail: String,
    },
    /// The box process exited before reporting ready.
    #[error("box {id}: its process (pid {pid}) exited with {} before reporting ready on {address}.{} Last lines of its log:\n{log_tail}", match exit_code { Some(c) => format!("code {c}"), None => "an unknown status".to_string() }, crashed_sentence(kernel_crash))]
    ExitedBeforeReady {
        /// The box.
        id: BoxId,
        /// Its pid.
        pid: i32,
        /// Its exit code, when known.
        exit_code: Option<i32>,
        /// The ready address.
        address: String,
        /// The headline of the kernel crash the box's log shows since this start.
        kernel_crash: Option<String>,
        /// The last lines of the box log.
        log_tail: String,
    },
    /// A companion of the box (its network proxy, e.g. passt) exited before the box
    /// was ready: the start fails at once instead of waiting out the ready timeout.
    #[error("box {id}: its companion process (pid {pid}) exited with {} before the box was ready. Its log:\n{logs}\nLast lines of the box log:\n{log_tail}", match exit_code { Some(c) => format!("code {c}"), None => "an unknown status".to_string() })]
    CompanionExited {
        /// The box.
        id: BoxId,
        /// The companion's pid.
        pid: i32,
        /// Its exit code, when known.
        exit_code: Option<i32>,
        /// The tails of the companion logs beside the box log.
        logs: String,
        /// The last lines of the box log.
        log_tail: String,
    },
    /// Talking to the agent failed.
    #[error("box {id}: agent at {address}: {source}")]
    Agent {
        /// The box.
        id: BoxId,
        /// The agent's address.
        address: String,
        /// What failed.
        #[source]
        source: ClientError,
    },
    /// The box's process survived SIGKILL for the whole bounded wait.
    #[error("box {id}: process {pid} is still alive after SIGKILL and {waited:?}")]
    StopFailed {
        /// The box.
        id: BoxId,
        /// Its pid.
        pid: i32,
        /// How long we waited after SIGKILL.
        waited: Duration,
    },
}

impl RuntimeError {
    pub(crate) fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::IllegalTransition { id, from, to } => {
                RuntimeError::IllegalTransition { id, from, to }
            }
            e => RuntimeError::Store(e),
        }
    }
}

/// " The kernel in the box crashed: <headline>." when its log shows that it did.
fn crashed_sentence(kernel_crash: &Option<String>) -> String {
    kernel_crash
        .as_deref()
        .map(|l| format!(" The kernel in the box crashed: {l}."))
        .unwrap_or_default()
}
