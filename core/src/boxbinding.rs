//! [`BoxBinding`]: one box's sockets, opened once by its strategy
//! ([`SocketBinding::open_box`]) and held while they are used.
//!
//! Opening runs the strategy's per-box work once — the per-start renewal (at a start:
//! `abstract`'s epoch) and `ensure` — derives the addresses of the sockets asked for (every own and derived name
//! checked against the budget), and holds what every later use needs: the verified
//! [`SocketDir`] (path strategies), the strategy's per-start state (the `abstract`
//! epoch) and the [`PeerPolicy`]. Nothing is derived again at the point of use.
//!
//! Every listen and connect of a held binding first re-checks, cheaply, that the name
//! it was opened through still leads to the directory it holds
//! ([`BoxBinding::check`]: one `fstatat` of the link for short-symlink). A link swapped
//! after the binding was opened is refused at use; it is never followed and the held
//! directory is not used past it (decision 0014).
//!
//! "Bind or connect through the verified directory, else at the address" is written
//! once, in the provided methods of [`BoxBinding`]; a path address without a verified
//! directory is refused there.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::address::SocketAddress;
#[allow(unused_imports)] // documentation links
use crate::binding::SocketBinding;
use crate::binding::{PathStrategy, PolicyPath};
use crate::budget::{self, Platform};
use crate::catalogue::Socket;
use crate::error::BindingError;
use crate::id::BoxId;
use crate::layout::BoxLayout;
use crate::peer::{Listener, PeerPolicy};
use crate::sockdir::SocketDir;

/// Why a box's binding is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opening {
    /// For a start of the box: the strategy's per-start state is renewed first
    /// (`abstract` draws a fresh epoch, so names seen during an earlier run lead
    /// nowhere). Never for a box whose process is running: its sockets would become
    /// unreachable by name.
    Start,
    /// To use the box as it is (dial, create, tests).
    Use,
    /// To look at the box, or release it: its addresses (each budget-checked), policy
    /// paths and binding path, as a process that holds nothing sees them. Nothing on
    /// disk is made, opened or checked (no `ensure`, no directory), so read-only verbs
    /// (`inspect`, `doctor`) and the budget check before a start may use it; the
    /// binding refuses to listen or connect ([`BindingError::Unsupported`]).
    Inspect,
}

/// One box's sockets, held. See the module documentation.
///
/// A strategy whose per-box state is its verified directory gets every method from
/// [`Held`]; a strategy with more state (`abstract`: the epoch and its rotation on a
/// squatted name) implements the required methods and overrides `listen` where it
/// binds differently.
pub trait BoxBinding: Send + Sync + fmt::Debug {
    /// The box.
    fn id(&self) -> &BoxId;

    /// The address of socket file `file_name` (`agent.sock`, or a name a binder
    /// derives) of this box: the strategy's one derivation, pure arithmetic on what the
    /// binding holds plus the budget check. Fails with [`BindingError::PathTooLong`]
    /// (naming `file_name`) when it does not fit, [`BindingError::Invalid`] for a name
    /// that is not one file name. Every address the binding holds was made by it.
    fn derive(&self, file_name: &str) -> Result<SocketAddress, BindingError>;

    /// The address of `socket`, as derived when the binding was opened (or, for a
    /// socket it was not opened for, derived and budget-checked now). Fails with
    /// [`BindingError::PathTooLong`] naming the socket when it does not fit.
    fn address(&self, socket: &Socket) -> Result<SocketAddress, BindingError>;

    /// The addresses of the sockets the binding was opened for, by logical name, as
    /// they are now (a rotation on a squatted name changes them).
    fn addresses(&self) -> BTreeMap<String, SocketAddress>;

    /// Who may be a peer on every socket of the box.
    fn peer_policy(&self) -> &PeerPolicy;

    /// The verified socket directory every bind and connect goes through (path
    /// strategies); `None` for addresses that are not paths.
    fn dir(&self) -> Option<&SocketDir> {
        None
    }

    /// What a sandbox must allow for the box's sockets, with directory intent explicit.
    fn policy_paths(&self) -> Result<Vec<PolicyPath>, BindingError>;

    /// Remove what opening made (the link); idempotent. The binding is not used after.
    fn release(&self) -> Result<(), BindingError>;

    /// The filesystem entry opening made for this box (short-symlink's link), if any:
    /// what `release` removes, what `inspect` shows.
    fn binding_path(&self) -> Option<PathBuf> {
        None
    }

    /// Whether the binding may still be used: the name it was opened through leads to
    /// the directory it holds ([`SocketDir::recheck`]). Called by the provided
    /// `listen`, `listen_datagram` and `connect` before each use. A binding opened with
    /// [`Opening::Inspect`] refuses every use here.
    fn check(&self) -> Result<(), BindingError> {
        match self.dir() {
            Some(d) => d.recheck(),
            None => Ok(()),
        }
    }

    /// Bind a stream listener for `socket` (0600 through the verified directory, or at
    /// the address); it enforces [`BoxBinding::peer_policy`] on every accept. A stale
    /// socket file nobody listens on is replaced; a live one is an error.
    fn listen(&self, socket: &Socket) -> Result<Listener, BindingError> {
        let addr = self.address(socket)?;
        let file = socket.file_name();
        match through(self, &addr)? {
            Some(dir) => dir.bind_stream(&file, self.peer_policy().clone()),
            None => {
                let inner = crate::peer::bind_stream_at(&addr)?;
                Ok(Listener::new(inner, addr, file, self.peer_policy().clone()))
            }
        }
    }

    /// Bind a datagram socket for `socket` (see [`SocketDir::bind_datagram`]).
    fn listen_datagram(&self, socket: &Socket) -> Result<UnixDatagram, BindingError> {
        let addr = self.address(socket)?;
        match through(self, &addr)? {
            Some(dir) => dir.bind_datagram(&socket.file_name()),
            None => crate::peer::bind_datagram_at(&addr),
        }
    }

    /// Connect a stream to `socket`, checking the listener's credentials against the
    /// binding's policy and, where given, that it is process `pid` (`SO_PEERCRED`).
    fn connect(&self, socket: &Socket, pid: Option<i32>) -> Result<UnixStream, BindingError> {
        let addr = self.address(socket)?;
        let policy = match pid {
            Some(p) => self.peer_policy().clone().with_pid(p),
            None => self.peer_policy().clone(),
        };
        match through(self, &addr)? {
            Some(dir) => dir.connect_stream(&socket.file_name(), &policy),
            None => crate::peer::connect_stream_at(&addr, &socket.file_name(), &policy),
        }
    }

    /// The address of `socket` for a child that inherits [`BoxBinding::dir`] at
    /// descriptor `fd` (Linux: `/proc/self/fd/<fd>/<file>`); the address itself when it
    /// is not a path (abstract names). A path without a verified directory is refused.
    fn child_endpoint(&self, socket: &Socket, fd: RawFd) -> Result<SocketAddress, BindingError> {
        endpoint(self.dir(), self.address(socket)?, socket, fd)
    }
}

/// The address of `socket` (at `addr`) for a child holding `dir` at descriptor `fd`:
/// the one implementation behind [`BoxBinding::child_endpoint`] and
/// [`BoxSockets::child_endpoint`](crate::boxsockets::BoxSockets::child_endpoint).
pub(crate) fn endpoint(
    dir: Option<&SocketDir>,
    addr: SocketAddress,
    socket: &Socket,
    fd: RawFd,
) -> Result<SocketAddress, BindingError> {
    match (dir, &addr) {
        (Some(dir), SocketAddress::Path(_)) => dir.address_at(&socket.file_name(), fd),
        (None, SocketAddress::Path(p)) => Err(BindingError::Insecure {
            path: p.clone(),
            reason: concat!(
                "a path address without a verified socket directory would be ",
                "re-resolved by the box's process"
            )
            .into(),
        }),
        (_, SocketAddress::Abstract(_)) => Ok(addr),
    }
}

/// The directory a use goes through, re-checked; a path address without one refused.
fn through<'a, B: BoxBinding + ?Sized>(
    b: &'a B,
    addr: &SocketAddress,
) -> Result<Option<&'a SocketDir>, BindingError> {
    b.check()?;
    match (b.dir(), addr) {
        (Some(d), _) => Ok(Some(d)),
        (None, SocketAddress::Path(p)) => Err(BindingError::Unsupported {
            strategy: "(this binding)".into(),
            what: format!("binding or dialling {}", crate::echo::path(p)),
            reason: concat!(
                "a path address needs a verified socket directory (BoxBinding::dir); ",
                "re-resolving the path string lets whoever can change a directory on it ",
                "receive the connection"
            )
            .into(),
        }),
        (None, SocketAddress::Abstract(_)) => Ok(None),
    }
}

/// Every address (own and derived names) of `sockets` for box `id`, each checked
/// against the budget of this platform: the one place the runtime's addresses are
/// derived. Returns the own addresses by logical name; a miss is
/// [`BindingError::PathTooLong`] labelled with the socket (and the derived name).
pub fn derive_addresses(
    derive: impl Fn(&str) -> Result<SocketAddress, BindingError>,
    sockets: &[Socket],
) -> Result<BTreeMap<String, SocketAddress>, BindingError> {
    let mut own = BTreeMap::new();
    for d in each_address(derive, sockets) {
        let addr = d.address?;
        if d.own {
            own.insert(d.socket.name.to_owned(), addr);
        }
    }
    Ok(own)
}

/// One name of a socket and its address, or why it has none ([`each_address`]).
#[derive(Debug)]
pub struct Derived {
    /// The socket.
    pub socket: Socket,
    /// `agent`, or `net (derived: net.sock-krun.sock)`.
    pub label: String,
    /// The file name.
    pub file: String,
    /// Whether it is the socket's own name (not one its binder derives).
    pub own: bool,
    /// The address, checked against the budget of this platform.
    pub address: Result<SocketAddress, BindingError>,
}

/// Every name of `sockets` with its address or why it has none (budget included), in
/// catalogue order: what [`derive_addresses`] checks, one entry per name (`inspect`).
pub fn each_address(
    derive: impl Fn(&str) -> Result<SocketAddress, BindingError>,
    sockets: &[Socket],
) -> Vec<Derived> {
    let mut out = Vec::new();
    for spec in sockets {
        for (i, (label, file)) in spec.all_file_names().into_iter().enumerate() {
            let r = derive(&file)
                .map_err(|e| match e {
                    BindingError::PathTooLong { path, len, limit, .. } => {
                        BindingError::PathTooLong { socket: label.clone(), path, len, limit }
                    }
                    e => e,
                })
                .and_then(|a| budget::check(&label, &a, Platform::current()).map(|()| a));
            out.push(Derived { socket: *spec, label, file, own: i == 0, address: r });
        }
    }
    out
}

/// The address of `file_name` in the directory `base` a path strategy addresses a box's
/// sockets through, checked against the budget of this platform: the derivation of every
/// path strategy ([`BoxBinding::derive`] of [`Held`]).
pub fn path_address(base: &Path, file_name: &str) -> Result<SocketAddress, BindingError> {
    let addr = SocketAddress::Path(crate::binding::socket_path(base, file_name)?);
    budget::check(file_name, &addr, Platform::current())?;
    Ok(addr)
}

/// Refusal of a use of a binding opened with [`Opening::Inspect`].
pub fn inspect_only(id: &BoxId, what: &str) -> BindingError {
    BindingError::Unsupported {
        strategy: "(this binding)".into(),
        what: format!("{what} box {id}"),
        reason:
            "the binding was opened to look (Opening::Inspect): nothing was ensured or verified"
                .into(),
    }
}

/// The box binding of every path strategy ([`PathStrategy`]; the blanket
/// [`SocketBinding`] implementation's `open_box` is [`Held::open`]): the directory the
/// box's sockets are addressed through, the verified [`SocketDir`], the peer policy and
/// the addresses derived from them.
#[derive(Debug)]
pub struct Held {
    strategy: Arc<dyn PathStrategy>,
    layout: BoxLayout,
    id: BoxId,
    opening: Opening,
    /// [`PathStrategy::socket_base`], read once (after `ensure`, which may move the
    /// home to a fallback directory).
    base: PathBuf,
    addresses: BTreeMap<String, SocketAddress>,
    dir: Option<SocketDir>,
    peer: PeerPolicy,
}

impl Held {
    /// Open box `id` through `strategy`'s per-box methods, each once: for
    /// [`Opening::Start`] and [`Opening::Use`] `ensure` then `open_dir`; then
    /// `socket_base`, `peer_policy`, and the addresses of `sockets` (budget-checked).
    /// [`Opening::Inspect`] makes, opens and checks nothing.
    pub fn open(
        strategy: Arc<dyn PathStrategy>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError> {
        let dir = match opening {
            Opening::Start | Opening::Use => {
                strategy.ensure(layout, id)?;
                Some(strategy.open_dir(layout, id)?)
            }
            Opening::Inspect => None,
        };
        let mut held = Held {
            base: strategy.socket_base(layout, id)?,
            peer: strategy.peer_policy(),
            strategy,
            layout: layout.clone(),
            id: id.clone(),
            opening,
            addresses: BTreeMap::new(),
            dir,
        };
        held.addresses = derive_addresses(|f| held.derive(f), sockets)?;
        Ok(Arc::new(held))
    }
}

impl BoxBinding for Held {
    fn id(&self) -> &BoxId {
        &self.id
    }

    fn derive(&self, file_name: &str) -> Result<SocketAddress, BindingError> {
        path_address(&self.base, file_name)
    }

    fn address(&self, socket: &Socket) -> Result<SocketAddress, BindingError> {
        if let Some(a) = self.addresses.get(socket.name) {
            return Ok(a.clone());
        }
        let own = derive_addresses(|f| self.derive(f), &[*socket])?;
        own.into_values().next().ok_or_else(|| BindingError::Invalid {
            what: "socket".into(),
            reason: format!("no address derived for {socket}"),
        })
    }

    fn addresses(&self) -> BTreeMap<String, SocketAddress> {
        self.addresses.clone()
    }

    fn peer_policy(&self) -> &PeerPolicy {
        &self.peer
    }

    fn dir(&self) -> Option<&SocketDir> {
        self.dir.as_ref()
    }

    fn check(&self) -> Result<(), BindingError> {
        match (&self.dir, self.opening) {
            (_, Opening::Inspect) => Err(inspect_only(&self.id, "binding or dialling")),
            (Some(d), _) => d.recheck(),
            (None, _) => Ok(()),
        }
    }

    fn policy_paths(&self) -> Result<Vec<PolicyPath>, BindingError> {
        self.strategy.policy_paths(&self.layout, &self.id)
    }

    fn release(&self) -> Result<(), BindingError> {
        self.strategy.release(&self.layout, &self.id)
    }

    fn binding_path(&self) -> Option<PathBuf> {
        self.strategy.binding_path(&self.layout, &self.id)
    }
}
