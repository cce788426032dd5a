//! The [`SocketBinding`] trait: how a box's sockets get short, safe addresses.
//!
//! A strategy turns (home, box id, socket file name) into a [`SocketAddress`] that fits
//! `sun_path` and that only the box's owner can reach. The runtime opens each box once
//! ([`SocketBinding::open_box`]) and binds, dials and hands addresses to the box through
//! the [`BoxBinding`] it gets; it asks the strategy itself only stateless questions
//! (`capabilities`, `sweep`, `binding_dir`, `shared_dir`, `binding_path`, the addresses
//! `inspect` shows) and `release` of a box it holds no binding of.
//!
//! The per-box methods (`ensure`, `address`, `socket_dir`, `prepare_start`,
//! `peer_policy`, `policy_paths`, `release`) are the strategy's primitives: [`Held`]
//! calls each once when a box is opened, and the conformance kit checks each.
//!
//! ## Contract (checked by the `boxsock-conformance` kit)
//! - `address` is pure arithmetic plus a budget check: it never touches the disk for
//!   path strategies, and fails with [`BindingError::PathTooLong`] (naming the socket,
//!   the address, its length and the limit) instead of returning an address that does
//!   not fit.
//! - `ensure` is idempotent and safe under concurrent callers, in threads and processes.
//!   In the steady state it should cost about one syscall.
//! - `release` removes what `ensure` made and nothing else; it is idempotent.
//! - `sweep` removes leftovers of dead boxes of *this* home, never a live box's binding
//!   and never another home's.
//! - Nothing about an address is persisted: it is derived again at every use.
//! - Path strategies hand out a [`SocketDir`] ([`SocketBinding::socket_dir`]): the
//!   box's socket directory opened and verified (owner, mode, identity) at the time of
//!   use, through which every bind and connect goes. Binding or connecting by the
//!   address string re-resolves directories others may change between a check and the
//!   use; a [`BoxBinding`] therefore goes through its directory whenever it holds one,
//!   and refuses a path address without one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::address::SocketAddress;
#[allow(unused_imports)] // documentation links
use crate::boxbinding::Held;
use crate::boxbinding::{BoxBinding, Opening};
use crate::budget::Platform;
use crate::catalogue::Socket;
use crate::error::BindingError;
use crate::id::BoxId;
use crate::layout::BoxLayout;
use crate::peer::PeerPolicy;
use crate::sockdir::SocketDir;

/// Configuration every strategy is built from. Strategies ignore what they do not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyConfig {
    /// Short base directory for binding links (default `/tmp`; deliberately not
    /// `$TMPDIR`, which a child may not inherit and which is long on macOS).
    pub base_dir: PathBuf,
    /// Prefix of the per-uid directory: `<base_dir>/<prefix>-<uid>`.
    pub prefix: String,
    /// The owner's uid (default: the effective uid).
    pub uid: u32,
    /// Extra uids allowed to talk to box sockets where the strategy checks peer
    /// credentials (the owner is always allowed). Default: none.
    pub allowed_peer_uids: Vec<u32>,
    /// Use exactly this per-user directory instead of `<base_dir>/<prefix>-<uid>`, with
    /// no fallback (an embedder's own private directory; xdg-hashed's per-home
    /// directories). Default: none: the strategy uses its [`fallback::SharedDir`].
    pub binding_dir: Option<PathBuf>,
    /// Create nothing on disk: set for `doctor` and read-only runtimes (`ls`,
    /// `inspect`), which may look at a directory that is not a home. A strategy that
    /// needs per-home state it does not find (the `abstract` strategy's key) derives
    /// addresses of the right length from throwaway state, never written. Default: false.
    pub read_only: bool,
}

impl StrategyConfig {
    /// Default prefix of the per-uid directory.
    pub const DEFAULT_PREFIX: &'static str = "boxsock";

    /// `<base_dir>/<prefix>-<uid>`, or [`StrategyConfig::binding_dir`] when set.
    pub fn per_uid_dir(&self) -> PathBuf {
        match &self.binding_dir {
            Some(d) => d.clone(),
            None => self.default_per_uid_dir(),
        }
    }

    /// `<base_dir>/<prefix>-<uid>`, the predictable name.
    pub fn default_per_uid_dir(&self) -> PathBuf {
        self.base_dir.join(format!("{}-{}", self.prefix, self.uid))
    }
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            base_dir: PathBuf::from("/tmp"),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            uid: nix::unistd::geteuid().as_raw(),
            allowed_peer_uids: Vec::new(),
            binding_dir: None,
            read_only: false,
        }
    }
}

/// How other local users are kept away from a box's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrossUserProtection {
    /// A 0700 directory owned by the owner on the path to every socket.
    DirectoryMode,
    /// Every accept and connect checks the peer's credentials (`SO_PEERCRED`).
    PeerCredentials,
    /// Both.
    Both,
}

/// What a strategy can and cannot do. The conformance kit picks checks by these, and
/// the runtime refuses a strategy/backend pair that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Addresses are filesystem paths a third party (a VMM, a proxy) can be handed.
    pub path_addressable: bool,
    /// Something appears on the filesystem for each socket.
    pub filesystem_visible: bool,
    /// Listeners and connectors check peer credentials (the filesystem does not protect
    /// these addresses).
    pub peer_credentials: bool,
    /// Addresses are scoped to the network namespace (abstract sockets).
    pub netns_scoped: bool,
    /// Every address fits `sun_path` whatever the length of the home.
    pub home_length_independent: bool,
    /// How other users are kept out.
    pub cross_user: CrossUserProtection,
    /// Platforms the strategy works on.
    pub platforms: &'static [Platform],
}

impl Capabilities {
    /// Whether the strategy works on the platform this binary runs on.
    pub fn supported_here(&self) -> bool {
        self.platforms.contains(&Platform::current())
    }
}

/// What kind of filesystem object a policy path is, stated by the strategy (never read
/// back from disk: a link reaped by a /tmp cleaner must still get directory grants).
///
/// Serialised in snake case (`directory`, `symlink_to_directory`, `file`): the libkrun
/// shim receives policy paths as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyIntent {
    /// A real directory.
    Directory,
    /// A symlink whose target is a directory; a sandbox keeps the leaf literal and
    /// canonicalises only its parent.
    SymlinkToDirectory {
        /// The directory the link points to.
        target: PathBuf,
    },
    /// A regular file.
    File,
}

/// Access a sandboxed process needs on a policy path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAccess {
    /// Read only (a secret, a config file).
    Read,
    /// Create, bind, connect and unlink sockets beneath (directory intent).
    Sockets,
}

/// One path a sandbox must allow for the box's sockets to work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PolicyPath {
    /// The path as sockets are addressed through it.
    pub path: PathBuf,
    /// What it is.
    pub intent: PolicyIntent,
    /// What is needed.
    pub access: PolicyAccess,
}

/// What a [`SocketBinding::sweep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Leftovers removed.
    pub removed: Vec<PathBuf>,
    /// Entries examined and kept (live bindings, other homes', foreign files).
    pub kept: usize,
}

/// A socket strategy. See the module documentation for the contract.
pub trait SocketBinding: Send + Sync + fmt::Debug {
    /// The registered name (`short-symlink`, `direct`, `abstract`…).
    fn name(&self) -> &str;

    /// Open box `id`'s sockets for use: run the per-box work once (`prepare_start` for
    /// [`Opening::Start`], `ensure`), derive the addresses of `sockets` (every own and
    /// derived name budget-checked), and hold the verified directory, the per-start
    /// state and the peer policy in the returned [`BoxBinding`], through which the
    /// runtime binds, dials and hands addresses to the box (decision 0014).
    ///
    /// A strategy whose per-box state is its verified directory writes one line:
    /// `Held::open(self, layout, id, opening, sockets)` ([`Held`]).
    fn open_box(
        self: Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError>;

    /// What this strategy can do.
    fn capabilities(&self) -> Capabilities;

    /// Make the box's sockets reachable at their addresses. Idempotent; safe under
    /// concurrent callers in threads and processes. Requires the box's socket directory
    /// (`<home>/boxes/<id>/sockets`) to exist where the strategy uses it.
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError>;

    /// The address of socket `file_name` (e.g. `agent.sock`, or a derived name) of box
    /// `id`. Fails with [`BindingError::PathTooLong`] if it would not fit.
    fn address(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file_name: &str,
    ) -> Result<SocketAddress, BindingError>;

    /// Remove what `ensure` made for this box. Idempotent.
    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError>;

    /// Remove leftovers of dead boxes of this home: never a live box's binding, never
    /// another home's.
    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError>;

    /// What a sandbox must allow for this box's sockets, with directory intent explicit.
    fn policy_paths(&self, layout: &BoxLayout, id: &BoxId)
    -> Result<Vec<PolicyPath>, BindingError>;

    /// The shared per-user directory in which `ensure` creates its entries (for
    /// `short-symlink`, `<base>/<prefix>-<uid>`), if the strategy has one. `doctor`
    /// shows it; the conformance kit attacks it (squatting, wrong modes), so a strategy
    /// that has one must say so here.
    fn binding_dir(&self) -> Option<PathBuf> {
        None
    }

    /// The predictable directory the strategy keeps in a shared base (`/tmp`), if it
    /// has one, whatever it uses now. Another user can take that name first, so a
    /// strategy must never let that stop a box: it falls back through
    /// [`fallback::SharedDir`] (the conformance kit squats this directory as uid 65534
    /// and runs a box). Default: [`SocketBinding::binding_dir`].
    fn shared_dir(&self) -> Option<PathBuf> {
        self.binding_dir()
    }

    /// The filesystem entry `ensure` creates for this box (for `short-symlink`, the
    /// link), if any. `release` removes exactly this. `inspect` shows it; the
    /// conformance kit swaps and deletes it.
    fn binding_path(&self, _layout: &BoxLayout, _id: &BoxId) -> Option<PathBuf> {
        None
    }

    /// Called by the runtime once per start of box `id`, after the box has moved to
    /// `Starting` and before it derives the addresses it binds and hands to the
    /// backend. A strategy whose addresses carry a per-start component (`abstract`)
    /// replaces it here, so that addresses seen during an earlier run (in an old argv,
    /// in `/proc/net/unix`) lead nowhere, and a name bound by someone else after `stop`
    /// cannot block the next start. What it records must live where only the owner can
    /// change it, so every process of the home derives the same addresses afterwards.
    ///
    /// Never call it for a box whose process is running: its sockets would become
    /// unreachable by name. Default: nothing (path strategies need no rotation).
    fn prepare_start(&self, _layout: &BoxLayout, _id: &BoxId) -> Result<(), BindingError> {
        Ok(())
    }

    /// Which peers listeners and connectors accept. Strategies whose addresses are not
    /// protected by the filesystem return a checking policy.
    fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy::unchecked()
    }

    /// The box's socket directory, opened now and verified on the descriptor: a
    /// directory owned by the configured uid, writable by nobody else, and the very
    /// `<home>/boxes/<id>/sockets` (device + inode). Every bind and connect of a path
    /// strategy goes through it (see [`SocketDir`]); the runtime hands it to the
    /// backend, which hands it to its children. Requires `ensure` to have run.
    ///
    /// Strategies whose addresses are not paths return `Ok(None)` (the default). A
    /// `path_addressable` strategy must return one: the conformance kit checks it, and
    /// the runtime refuses to bind or dial a path without it.
    fn socket_dir(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Option<SocketDir>, BindingError> {
        let _ = (layout, id);
        Ok(None)
    }
}

/// The shared-directory fallback, also reachable as `boxsock_core::fallback`.
pub use crate::fallback;

/// Ensure the box's real socket directory exists, as a helper for strategies:
/// returns [`BindingError::MissingSocketDir`] when it does not.
pub fn require_socket_dir(layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
    let dir = layout.sockets_dir(id);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(BindingError::Occupied { path: dir, found: "not a directory".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(BindingError::MissingSocketDir { id: id.to_string(), path: dir })
        }
        Err(e) => Err(BindingError::io("stat", dir, e)),
    }
}

/// Join `file_name` (validated) onto `dir`.
pub fn socket_path(dir: &Path, file_name: &str) -> Result<PathBuf, BindingError> {
    crate::catalogue::validate_file_name(file_name).map_err(|e| BindingError::Invalid {
        what: "socket file name".into(),
        reason: e.to_string(),
    })?;
    Ok(dir.join(file_name))
}
