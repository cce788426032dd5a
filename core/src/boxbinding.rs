//! [`BoxBinding`]: one box's sockets, opened once by its strategy
//! ([`SocketBinding::open_box`]) and held while they are used.
//!
//! Opening runs the strategy's per-box work once — `prepare_start` (at a start) and
//! `ensure` — derives the addresses of the sockets asked for (every own and derived name
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
use std::sync::Arc;

use crate::address::SocketAddress;
use crate::binding::{PolicyPath, SocketBinding};
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
    /// ([`SocketBinding::prepare_start`]; `abstract` draws a fresh epoch). Never for a
    /// box whose process is running: its sockets would become unreachable by name.
    Start,
    /// To use the box as it is (dial, create, tests).
    Use,
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

    /// Whether the binding may still be used: the name it was opened through leads to
    /// the directory it holds ([`SocketDir::recheck`]). Called by the provided
    /// `listen`, `listen_datagram` and `connect` before each use.
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
    match (b.dir(), addr) {
        (Some(d), _) => {
            b.check()?;
            Ok(Some(d))
        }
        (None, SocketAddress::Path(p)) => Err(BindingError::Unsupported {
            strategy: "(this binding)".into(),
            what: format!("binding or dialling {}", crate::echo::path(p)),
            reason: concat!(
                "a path address needs a verified socket directory (SocketBinding::socket_dir); ",
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

/// The binding of a strategy whose per-box state is its verified directory (every path
/// strategy): [`SocketBinding::open_box`] is one line, `Held::open(self, …)`.
#[derive(Debug)]
pub struct Held {
    strategy: Arc<dyn SocketBinding>,
    layout: BoxLayout,
    id: BoxId,
    addresses: BTreeMap<String, SocketAddress>,
    dir: Option<SocketDir>,
    peer: PeerPolicy,
}

impl Held {
    /// Open box `id` through `strategy`'s per-box primitives, each once:
    /// `prepare_start` (for [`Opening::Start`]), `ensure`, the addresses of `sockets`
    /// (budget-checked), `socket_dir` and `peer_policy`. A strategy that gives path
    /// addresses and no verified directory is refused ([`BindingError::Unsupported`]).
    pub fn open(
        strategy: Arc<dyn SocketBinding>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError> {
        if opening == Opening::Start {
            strategy.prepare_start(layout, id)?;
        }
        strategy.ensure(layout, id)?;
        let addresses = derive_addresses(|f| strategy.address(layout, id, f), sockets)?;
        let dir = strategy.socket_dir(layout, id)?;
        if dir.is_none() && strategy.capabilities().path_addressable {
            return Err(BindingError::Unsupported {
                strategy: strategy.name().to_owned(),
                what: format!("opening box {id}"),
                reason: concat!(
                    "a path strategy must provide a verified socket directory ",
                    "(SocketBinding::socket_dir); re-resolving the path string lets whoever ",
                    "can change a directory on it receive the connection"
                )
                .into(),
            });
        }
        let peer = strategy.peer_policy();
        Ok(Arc::new(Held {
            strategy,
            layout: layout.clone(),
            id: id.clone(),
            addresses,
            dir,
            peer,
        }))
    }
}

impl BoxBinding for Held {
    fn id(&self) -> &BoxId {
        &self.id
    }

    fn address(&self, socket: &Socket) -> Result<SocketAddress, BindingError> {
        if let Some(a) = self.addresses.get(socket.name) {
            return Ok(a.clone());
        }
        let own =
            derive_addresses(|f| self.strategy.address(&self.layout, &self.id, f), &[*socket])?;
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

    fn policy_paths(&self) -> Result<Vec<PolicyPath>, BindingError> {
        self.strategy.policy_paths(&self.layout, &self.id)
    }

    fn release(&self) -> Result<(), BindingError> {
        self.strategy.release(&self.layout, &self.id)
    }
}
