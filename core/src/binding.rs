//! The [`SocketBinding`] trait: how a box's sockets get short, safe addresses.
//!
//! A strategy turns (home, box id, socket file name) into a [`SocketAddress`] that fits
//! `sun_path` and that only the box's owner can reach. The trait asks only what is the
//! strategy's, not a box's (`name`, `capabilities`, `sweep`, `binding_dir`,
//! `shared_dir`), and opens boxes ([`SocketBinding::open_box`]); everything about one box
//! is asked of the [`BoxBinding`] that hands out (decision 0017). Path strategies
//! implement the smaller [`PathStrategy`] and get the rest from the core.
//!
//! ## Contract (checked by the `boxsock-conformance` kit, through `open_box`)
//! - A binding's [`BoxBinding::derive`] is pure arithmetic plus a budget check: it
//!   never touches the disk for path strategies, and fails with
//!   [`BindingError::PathTooLong`] (naming the socket, the address, its length and the
//!   limit) instead of returning an address that does not fit.
//! - Opening a box (`ensure`) is idempotent and safe under concurrent callers, in
//!   threads and processes. In the steady state it should cost about one syscall.
//! - `release` removes what opening made and nothing else; it is idempotent.
//! - `sweep` removes leftovers of dead boxes of *this* home, never a live box's binding
//!   and never another home's.
//! - Nothing about an address is persisted: it is derived again at every open.
//! - Path strategies hold a [`SocketDir`] ([`BoxBinding::dir`]): the box's socket
//!   directory opened and verified (owner, mode, identity), through which every bind
//!   and connect goes, re-checked before each use. Binding or connecting by the address
//!   string re-resolves directories others may change between a check and the use; a
//!   [`BoxBinding`] therefore goes through its directory whenever it holds one, and
//!   refuses a path address without one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[allow(unused_imports)] // documentation links
use crate::address::SocketAddress;
use crate::boxbinding::{BoxBinding, Held, Opening};
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

/// A socket strategy: the stateless questions, and [`SocketBinding::open_box`], which
/// hands out the per-box object ([`BoxBinding`]) every per-box question is asked of.
/// See the module documentation for the contract.
///
/// A path strategy does not implement this trait itself: it implements
/// [`PathStrategy`] (where a box's directory is addressed, make it, open it) and gets
/// this one, `open_box` included, from the core's blanket implementation. A strategy
/// with other per-box state (`abstract`) implements it and its own [`BoxBinding`].
pub trait SocketBinding: Send + Sync + fmt::Debug {
    /// The registered name (`short-symlink`, `direct`, `abstract`…).
    fn name(&self) -> &str;

    /// What this strategy can do.
    fn capabilities(&self) -> Capabilities;

    /// Open box `id`'s sockets: run the per-box work once (for [`Opening::Start`] the
    /// per-start renewal; for `Start` and `Use` `ensure` and the verified directory; for
    /// [`Opening::Inspect`] nothing on disk is made, opened or checked), derive the
    /// addresses of `sockets` (every own and derived name budget-checked, through the
    /// binding's one derivation, [`BoxBinding::derive`]), and hold the verified
    /// directory, the per-start state and the peer policy in the returned
    /// [`BoxBinding`] (decision 0014). Every per-box question — addresses, binds,
    /// dials, policy paths, the binding path, release — is asked of it (decision 0017).
    fn open_box(
        self: Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError>;

    /// Remove leftovers of dead boxes of this home: never a live box's binding, never
    /// another home's.
    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError>;

    /// The shared per-user directory in which opening a box creates its entries (for
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
}

impl dyn SocketBinding {
    /// Open box `id` to look at it ([`Opening::Inspect`]: nothing on disk is made,
    /// opened or checked): its addresses, policy paths and binding path, as a process
    /// that holds no binding of the box sees them.
    pub fn inspect_box(
        self: &Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Arc<dyn BoxBinding>, BindingError> {
        self.clone().open_box(layout, id, Opening::Inspect, &[])
    }

    /// Remove what opening box `id` made (the link), for a box nobody holds a binding
    /// of (removal in another process, recovery, a failed create). Idempotent.
    pub fn release_box(
        self: &Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<(), BindingError> {
        self.inspect_box(layout, id)?.release()
    }
}

/// A strategy whose addresses are paths into one directory per box (every path
/// strategy: `direct`, `short-symlink`, `xdg-hashed`): it says through which path a
/// box's directory is addressed, makes that path lead to it, and opens it verified.
/// The core does the rest once for all of them — the addresses
/// ([`path_address`](crate::boxbinding::path_address)), the per-box object ([`Held`])
/// and [`SocketBinding`] itself (a blanket implementation whose `open_box` is
/// `Held::open`) — so no path strategy writes `open_box` (decision 0017).
///
/// The per-box methods are called by [`Held`], once per open, and by the strategy's
/// own crate; the runtime and the conformance kit go through `open_box`.
pub trait PathStrategy: Send + Sync + fmt::Debug + 'static {
    /// The registered name.
    fn name(&self) -> &str;

    /// What this strategy can do (`path_addressable: true`).
    fn capabilities(&self) -> Capabilities;

    /// See [`SocketBinding::sweep`].
    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError>;

    /// See [`SocketBinding::binding_dir`].
    fn binding_dir(&self) -> Option<PathBuf> {
        None
    }

    /// See [`SocketBinding::shared_dir`].
    fn shared_dir(&self) -> Option<PathBuf> {
        self.binding_dir()
    }

    /// The directory box `id`'s sockets are addressed through: `short-symlink`'s link
    /// `<per-uid dir>/<id>`, `direct`'s `<home>/boxes/<id>/sockets`. Arithmetic on the
    /// home and the id (and the home's recorded fallback): nothing is made or checked.
    fn socket_base(&self, layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError>;

    /// Make [`PathStrategy::socket_base`] lead to the box's socket directory.
    /// Idempotent; safe under concurrent callers in threads and processes; about one
    /// syscall in the steady state. Requires `<home>/boxes/<id>/sockets` to exist
    /// ([`BindingError::MissingSocketDir`] otherwise).
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError>;

    /// The box's socket directory, opened now through the strategy's path and verified
    /// on the descriptor: owned by the configured uid, writable by nobody else, and the
    /// very `<home>/boxes/<id>/sockets` (device + inode). Every bind and connect goes
    /// through it ([`SocketDir`]). Called after `ensure`.
    fn open_dir(&self, layout: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError>;

    /// Remove what `ensure` made for this box, and nothing else. Idempotent.
    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError>;

    /// What a sandbox must allow for this box's sockets, with directory intent
    /// explicit (never read back from disk: a link reaped by a cleaner still gets
    /// directory grants).
    fn policy_paths(&self, layout: &BoxLayout, id: &BoxId)
    -> Result<Vec<PolicyPath>, BindingError>;

    /// Which peers listeners and connectors accept (the owner and the embedder's
    /// `allowed_peer_uids`).
    fn peer_policy(&self) -> PeerPolicy;

    /// The filesystem entry `ensure` creates for this box (the link), if any;
    /// `release` removes exactly this. `inspect` shows it; the kit swaps and deletes it.
    fn binding_path(&self, _layout: &BoxLayout, _id: &BoxId) -> Option<PathBuf> {
        None
    }
}

/// Every path strategy is a [`SocketBinding`]; its boxes are [`Held`].
impl<T: PathStrategy> SocketBinding for T {
    fn name(&self) -> &str {
        PathStrategy::name(self)
    }

    fn capabilities(&self) -> Capabilities {
        PathStrategy::capabilities(self)
    }

    fn open_box(
        self: Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError> {
        Held::open(self, layout, id, opening, sockets)
    }

    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        PathStrategy::sweep(self, layout)
    }

    fn binding_dir(&self) -> Option<PathBuf> {
        PathStrategy::binding_dir(self)
    }

    fn shared_dir(&self) -> Option<PathBuf> {
        PathStrategy::shared_dir(self)
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
