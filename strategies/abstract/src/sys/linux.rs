//! The `abstract` strategy on Linux.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use boxsock_core::binding::{CrossUserProtection, PolicyIntent};
use boxsock_core::boxbinding::derive_addresses;
use boxsock_core::peer::{Listener, PeerPolicy};
use boxsock_core::{
    BindingError, BoxBinding, BoxId, BoxLayout, Capabilities, Opening, Platform, PolicyAccess,
    PolicyPath, Socket, SocketAddress, SocketBinding, StrategyConfig, SweepReport, budget,
    catalogue,
};

use crate::NAME;
use crate::diag;
use crate::epoch::{self, EPOCH_FILE, Epoch, Stamp};
use crate::name::Deriver;
use crate::secret::{self, SECRET_FILE, Secret};

/// How many fresh names a bind tries after finding its name taken, before giving up.
pub const MAX_ROTATIONS: usize = 3;

/// Build from a configuration (the registered constructor).
pub fn build(config: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Abstract::new(config)))
}

/// The `abstract` strategy. Holds a cache of per-home secrets and of per-box epochs (so
/// [`Abstract::address`] is a map lookup, one `lstat` of the box's epoch file and
/// one HMAC) and one [`PeerPolicy`] whose rejection counter all its listeners and
/// connectors share.
#[derive(Debug)]
pub struct Abstract {
    uid: u32,
    /// Create nothing on disk (`StrategyConfig::read_only`).
    read_only: bool,
    policy: PeerPolicy,
    secrets: RwLock<HashMap<PathBuf, Arc<Keyed>>>,
    /// Epoch file path -> the epoch read from it and the stamp of the file read.
    epochs: RwLock<HashMap<PathBuf, (Epoch, Stamp)>>,
}

impl boxsock_core::registry::Named for Abstract {
    const NAME: &'static str = NAME;
}

/// A home's secret and the name deriver keyed with it for this instance's uid.
#[derive(Debug)]
struct Keyed {
    secret: Secret,
    deriver: Deriver,
}

impl Abstract {
    /// A strategy for `config.uid`, accepting peers of that uid and of
    /// `config.allowed_peer_uids`.
    pub fn new(config: &StrategyConfig) -> Self {
        let uids = std::iter::once(config.uid).chain(config.allowed_peer_uids.iter().copied());
        Abstract {
            uid: config.uid,
            read_only: config.read_only,
            policy: PeerPolicy::allow_uids(uids),
            secrets: RwLock::new(HashMap::new()),
            epochs: RwLock::new(HashMap::new()),
        }
    }

    /// The per-start epoch file of a box: `<home>/boxes/<id>/abstract-epoch`.
    pub fn epoch_path(layout: &BoxLayout, id: &BoxId) -> PathBuf {
        layout.box_dir(id).join(EPOCH_FILE)
    }

    /// The box's current epoch, as on disk now (one `lstat` when the cache is fresh).
    fn current_epoch(&self, layout: &BoxLayout, id: &BoxId) -> Result<Option<Epoch>, BindingError> {
        let path = Self::epoch_path(layout, id);
        let Some(stamp) = epoch::stamp(&path)? else {
            self.epochs.write().unwrap_or_else(|p| p.into_inner()).remove(&path);
            return Ok(None);
        };
        if let Some((e, s)) = self.epochs.read().unwrap_or_else(|p| p.into_inner()).get(&path) {
            if *s == stamp {
                return Ok(Some(*e));
            }
        }
        let loaded = epoch::load(&path, nix::unistd::geteuid().as_raw())?;
        let mut map = self.epochs.write().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Some((e, s)) => {
                map.insert(path, (e, s));
                Ok(Some(e))
            }
            None => {
                map.remove(&path);
                Ok(None)
            }
        }
    }

    /// Give the box a fresh epoch, so all its names change.
    fn rotate(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        let path = Self::epoch_path(layout, id);
        let (e, s) = epoch::rotate(&path)?;
        self.epochs.write().unwrap_or_else(|p| p.into_inner()).insert(path, (e, s));
        Ok(())
    }

    /// Bind `file_name` of box `id` with `bind`. If the name is taken (`EADDRINUSE`:
    /// someone bound it before us), log who holds it, give the box a fresh epoch and
    /// try the new name, up to [`MAX_ROTATIONS`] times. A bind can only find its name
    /// taken if the name leaked (an argv, `/proc/net/unix`) since the box's last
    /// rotation, and the fresh name has not. A name held by a live socket of an allowed
    /// uid (the box itself, still running) is not rotated away: that bind fails with
    /// `EADDRINUSE` as before. A holder whose uid the kernel does not report counts as
    /// foreign.
    fn bind_recovering<T>(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file_name: &str,
        bind: impl Fn(&std::os::unix::net::SocketAddr) -> io::Result<T>,
    ) -> Result<(T, SocketAddress), BindingError> {
        let mut squatters = Vec::new();
        let mut last = None;
        for attempt in 0..=MAX_ROTATIONS {
            let addr = self.address(layout, id, file_name)?;
            let std_addr =
                addr.to_std().map_err(|e| BindingError::io("encode address", &addr, e))?;
            match bind(&std_addr) {
                Ok(s) => {
                    if attempt > 0 {
                        tracing::info!(box_id = %id, socket = file_name, address = %addr, rotations = attempt, "bound at a fresh name");
                    }
                    return Ok((s, addr));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    let who = squatter(&addr);
                    let ours = who.as_ref().and_then(|h| h.uid).is_some_and(|u| {
                        self.policy.allowed_uids().is_some_and(|allowed| allowed.contains(&u))
                    });
                    if ours {
                        // A live socket of the owner (or an allowed uid): the box is
                        // running or another start is binding. Rotating would orphan it.
                        tracing::debug!(box_id = %id, socket = file_name, address = %addr, holder = ?who, "name held by an allowed uid; not rotating");
                        return Err(BindingError::io("bind", &addr, e));
                    }
                    tracing::warn!(
                        box_id = %id,
                        socket = file_name,
                        address = %addr,
                        squatter_uid = ?who.as_ref().and_then(|h| h.uid),
                        squatter_inode = ?who.as_ref().map(|h| h.inode),
                        squatter_pid = ?who.as_ref().and_then(|h| h.pid),
                        "abstract name already bound by another socket; rotating the box's names"
                    );
                    squatters.push(describe(&addr, who.as_ref()));
                    if attempt == MAX_ROTATIONS {
                        last = Some(addr);
                        break;
                    }
                    if let Err(e) = self.rotate(layout, id) {
                        return Err(BindingError::Occupied {
                            path: PathBuf::from(addr.display_string()),
                            found: format!(
                                "{}; could not move box {id} to fresh names: {e}",
                                squatters.join("; ")
                            ),
                        });
                    }
                }
                Err(e) => return Err(BindingError::io("bind", &addr, e)),
            }
        }
        Err(BindingError::Occupied {
            path: PathBuf::from(last.map(|a| a.display_string()).unwrap_or_default()),
            found: format!(
                "socket {file_name} of box {id}: each of {} fresh names was already bound: {}",
                squatters.len(),
                squatters.join("; ")
            ),
        })
    }

    /// The secret file of a home: `<home>/abstract-socket.key`.
    pub fn secret_path(layout: &BoxLayout) -> PathBuf {
        layout.home_file(SECRET_FILE)
    }

    fn cached(&self, home: &Path) -> Option<Arc<Keyed>> {
        self.secrets.read().unwrap_or_else(|p| p.into_inner()).get(home).cloned()
    }

    /// Read (or create) the home's secret from disk, validate it and cache it.
    fn load(&self, layout: &BoxLayout) -> Result<Arc<Keyed>, BindingError> {
        let path = Self::secret_path(layout);
        let cached = self.cached(layout.home());
        let owner = nix::unistd::geteuid().as_raw();
        let secret = if self.read_only {
            match secret::load_existing(&path, owner)? {
                Some(s) => s,
                // Names of the right length from a key never written: this instance
                // only reports (doctor, ls, inspect); it binds and dials nothing.
                None => match cached {
                    Some(old) => return Ok(old),
                    None => {
                        tracing::debug!(path = %boxsock_core::echo::path(&path), "no abstract-socket secret; read-only, so addresses are derived from a throwaway key");
                        secret::throwaway()
                    }
                },
            }
        } else {
            secret::load_or_create(&path, owner, cached.as_ref().map(|k| &k.secret))?
        };
        if let Some(old) = cached {
            if old.secret == secret {
                return Ok(old);
            }
        }
        let fresh = Arc::new(Keyed { deriver: Deriver::new(&secret.0, self.uid), secret });
        let mut map = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = map.get(layout.home()) {
            if old.secret != fresh.secret {
                tracing::warn!(
                    path = %boxsock_core::echo::path(&path),
                    "the abstract-socket secret changed on disk; sockets bound under the old one are no longer reachable by name"
                );
            }
        }
        map.insert(layout.home().to_path_buf(), fresh.clone());
        Ok(fresh)
    }

    fn keyed(&self, layout: &BoxLayout) -> Result<Arc<Keyed>, BindingError> {
        match self.cached(layout.home()) {
            Some(s) => Ok(s),
            None => self.load(layout),
        }
    }
}

impl SocketBinding for Abstract {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            path_addressable: false,
            filesystem_visible: false,
            peer_credentials: true,
            netns_scoped: true,
            home_length_independent: true,
            cross_user: CrossUserProtection::PeerCredentials,
            platforms: &[Platform::Linux],
        }
    }

    /// Nothing to sweep, for the same reason as [`Abstract::release`]. The secret
    /// is the home's, not a box's, and is kept.
    fn sweep(&self, _layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        Ok(SweepReport::default())
    }

    fn open_box(
        self: Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError> {
        match opening {
            Opening::Start => {
                self.prepare_start(layout, id)?;
                self.ensure(layout, id)?;
            }
            Opening::Use => self.ensure(layout, id)?,
            Opening::Inspect => {}
        }
        let policy = self.policy.clone();
        let b = AbstractBox {
            strategy: self,
            layout: layout.clone(),
            id: id.clone(),
            policy,
            inspect_only: opening == Opening::Inspect,
            sockets: sockets.to_vec(),
            held: RwLock::new(None),
        };
        // A box opened to inspect for no socket (to release it, or to see its binding
        // path) reads the home's key only when an address is asked for: releasing needs
        // none, and a home too deep for the key's path must still be released.
        if opening != Opening::Inspect || !sockets.is_empty() {
            b.load()?;
        }
        Ok(Arc::new(b))
    }
}

/// The per-box work of the strategy, which its box binding (`AbstractBox`) calls (and
/// the crate's own tests); the runtime and the conformance kit go through `open_box`.
impl Abstract {
    /// Creates the home's secret if needed and re-validates it on disk (owner, mode,
    /// not a symlink), and re-reads the box's epoch if it changed. A secret deleted while this instance uses it is written back
    /// from memory, so running boxes keep their names. Nothing else: abstract names need
    /// no filesystem entry.
    pub fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.load(layout)?;
        self.current_epoch(layout, id)?;
        tracing::debug!(box_id = %id, strategy = NAME, "ensured");
        Ok(())
    }

    /// `@boxsock/<uid>/<hex>`, derived from the home's secret, the box id, the box's
    /// current epoch (if it has one) and the socket name. Loads (or creates) the home's
    /// secret on first use, then serves it from the cache; the epoch is re-read only
    /// when its file changed (one `lstat`), so every process agrees on the names of the
    /// box's current start.
    pub fn address(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file_name: &str,
    ) -> Result<SocketAddress, BindingError> {
        let keyed = self.keyed(layout)?;
        derive_with(&keyed, id, self.current_epoch(layout, id)?.as_ref(), file_name)
    }

    /// Nothing to remove: the kernel frees an abstract name when the last descriptor of
    /// the socket bound to it closes, so a dead box's names are free already.
    pub fn release(&self, _layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        tracing::debug!(box_id = %id, strategy = NAME, "released (nothing on disk)");
        Ok(())
    }

    /// Only the secret file, read-only: a sandboxed process that derives addresses
    /// needs it; sockets themselves involve no path. (Landlock's abstract-socket scope
    /// is a separate matter: see `docs/strategies.md`.)
    pub fn policy_paths(
        &self,
        layout: &BoxLayout,
        _id: &BoxId,
    ) -> Result<Vec<PolicyPath>, BindingError> {
        Ok(vec![PolicyPath {
            path: Self::secret_path(layout),
            intent: PolicyIntent::File,
            access: PolicyAccess::Read,
        }])
    }

    /// A fresh random epoch in `<home>/boxes/<id>/abstract-epoch` (0600): every name
    /// of the box changes, so names seen during an earlier run (an old argv,
    /// `/proc/net/unix`) reach nothing, and names another user bound after `stop` are
    /// simply not used again.
    pub fn prepare_start(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.rotate(layout, id)?;
        tracing::debug!(box_id = %id, strategy = NAME, "rotated the box's abstract names for this start");
        Ok(())
    }

    /// The policy every listener and connector of this instance enforces.
    pub fn peer_policy(&self) -> PeerPolicy {
        self.policy.clone()
    }

    /// Binds at the box's current name; a name found taken is reported (with the
    /// holder's uid, inode and pid from `sock_diag`) and the box's names are rotated
    /// (see `bind_recovering`).
    pub fn bind_stream(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file_name: &str,
    ) -> Result<Listener, BindingError> {
        let (l, addr) = self.bind_recovering(layout, id, file_name, UnixListener::bind_addr)?;
        tracing::debug!(box_id = %id, socket = file_name, address = %addr, "bound stream");
        Ok(Listener::new(l, addr, file_name.to_owned(), self.policy.clone()))
    }

    /// Binds with `SO_PASSCRED` on, so every datagram carries its sender's credentials
    /// and [`boxsock_core::peer::recv_checked`] can check it.
    pub fn bind_datagram(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file_name: &str,
    ) -> Result<UnixDatagram, BindingError> {
        // Create, enable SO_PASSCRED, then bind: no datagram can arrive without it.
        let (sock, addr) = self.bind_recovering(layout, id, file_name, |a| {
            let sock = UnixDatagram::unbound()?;
            boxsock_core::peer::set_pass_cred(sock.as_fd())?;
            bind_dgram(&sock, a)?;
            Ok(sock)
        })?;
        tracing::debug!(box_id = %id, socket = file_name, address = %addr, "bound datagram");
        Ok(sock)
    }

    /// Connect to `file_name` of box `id` at its current name, checking the listener's
    /// credentials against the strategy's policy.
    pub fn connect_stream(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file_name: &str,
    ) -> Result<UnixStream, BindingError> {
        let addr = self.address(layout, id, file_name)?;
        boxsock_core::peer::connect_stream_at(&addr, file_name, &self.policy)
    }
}

/// An address of box `id` from a home's key and the box's epoch: no I/O.
fn derive_with(
    keyed: &Keyed,
    id: &BoxId,
    epoch: Option<&Epoch>,
    file_name: &str,
) -> Result<SocketAddress, BindingError> {
    catalogue::validate_file_name(file_name).map_err(|e| BindingError::Invalid {
        what: "socket file name".into(),
        reason: e.to_string(),
    })?;
    let addr = SocketAddress::Abstract(keyed.deriver.derive_in(id.as_str(), epoch, file_name));
    budget::check(file_name, &addr, Platform::Linux)?;
    Ok(addr)
}

/// The key, epoch and addresses an opened box holds.
#[derive(Debug)]
struct HeldNames {
    keyed: Arc<Keyed>,
    epoch: Option<Epoch>,
    addresses: BTreeMap<String, SocketAddress>,
}

/// An opened box of the `abstract` strategy: its home's key, its epoch and the names
/// derived from them, held; a bind that finds its name squatted moves the box to a
/// fresh epoch and derives the held names again (the only place they change).
#[derive(Debug)]
struct AbstractBox {
    strategy: Arc<Abstract>,
    layout: BoxLayout,
    id: BoxId,
    policy: PeerPolicy,
    /// Opened with [`Opening::Inspect`]: every use is refused.
    inspect_only: bool,
    sockets: Vec<Socket>,
    /// Loaded at the open, or at the first address asked of a box opened to inspect.
    held: RwLock<Option<HeldNames>>,
}

impl AbstractBox {
    /// Read the home's key and the box's epoch, and derive the held names.
    fn load(&self) -> Result<(), BindingError> {
        let keyed = self.strategy.keyed(&self.layout)?;
        let epoch = self.strategy.current_epoch(&self.layout, &self.id)?;
        let derive = |f: &str| derive_with(&keyed, &self.id, epoch.as_ref(), f);
        let addresses = derive_addresses(derive, &self.sockets)?;
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            *held = Some(HeldNames { keyed, epoch, addresses });
        }
        Ok(())
    }

    /// `f` of the held names, loading them first if the box was opened without.
    fn names<T>(&self, f: impl FnOnce(&HeldNames) -> T) -> Result<T, BindingError> {
        if let Some(h) = self.held.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(f(h));
        }
        self.load()?;
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        Ok(f(held.as_ref().expect("loaded above")))
    }

    /// After a bind rotated the epoch: take the new one and derive every name again.
    fn follow_rotation(&self) -> Result<(), BindingError> {
        let epoch = self.strategy.current_epoch(&self.layout, &self.id)?;
        let keyed = self.names(|h| h.keyed.clone())?;
        let addresses =
            derive_addresses(|f| derive_with(&keyed, &self.id, epoch.as_ref(), f), &self.sockets)?;
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        *held = Some(HeldNames { keyed, epoch, addresses });
        Ok(())
    }
}

impl BoxBinding for AbstractBox {
    fn id(&self) -> &BoxId {
        &self.id
    }

    fn derive(&self, file_name: &str) -> Result<SocketAddress, BindingError> {
        self.names(|h| derive_with(&h.keyed, &self.id, h.epoch.as_ref(), file_name))?
    }

    fn address(&self, socket: &Socket) -> Result<SocketAddress, BindingError> {
        if let Some(a) = self.names(|h| h.addresses.get(socket.name).cloned())? {
            return Ok(a);
        }
        let own = derive_addresses(|f| self.derive(f), &[*socket])?;
        own.into_values().next().ok_or_else(|| BindingError::Invalid {
            what: "socket".into(),
            reason: format!("no address derived for {socket}"),
        })
    }

    fn check(&self) -> Result<(), BindingError> {
        match self.inspect_only {
            true => Err(boxsock_core::boxbinding::inspect_only(&self.id, "binding or dialling")),
            false => Ok(()),
        }
    }

    fn addresses(&self) -> BTreeMap<String, SocketAddress> {
        // Loaded at the open, unless opened to inspect for no socket: then none are held.
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.as_ref().map(|h| h.addresses.clone()).unwrap_or_default()
    }

    fn peer_policy(&self) -> &PeerPolicy {
        &self.policy
    }

    fn policy_paths(&self) -> Result<Vec<PolicyPath>, BindingError> {
        self.strategy.policy_paths(&self.layout, &self.id)
    }

    fn release(&self) -> Result<(), BindingError> {
        self.strategy.release(&self.layout, &self.id)
    }

    /// Binds at the box's held name; a name found squatted moves the box to fresh
    /// names (see `bind_recovering`), which this binding then holds.
    fn listen(&self, socket: &Socket) -> Result<Listener, BindingError> {
        self.check()?;
        let held = self.address(socket)?;
        let l = self.strategy.bind_stream(&self.layout, &self.id, &socket.file_name())?;
        if *l.address() != held {
            self.follow_rotation()?;
        }
        Ok(l)
    }

    fn listen_datagram(&self, socket: &Socket) -> Result<UnixDatagram, BindingError> {
        self.check()?;
        let held = self.address(socket)?;
        let sock = self.strategy.bind_datagram(&self.layout, &self.id, &socket.file_name())?;
        let now = self.strategy.address(&self.layout, &self.id, &socket.file_name())?;
        if now != held {
            self.follow_rotation()?;
        }
        Ok(sock)
    }
}

/// Who holds `addr`, per `sock_diag`; `None` when it cannot tell.
fn squatter(addr: &SocketAddress) -> Option<diag::Holder> {
    let SocketAddress::Abstract(name) = addr else {
        return None;
    };
    match diag::holders(name) {
        Ok(mut hs) => hs.pop(),
        Err(e) => {
            tracing::debug!(address = %addr, error = %e, "sock_diag could not name the holder");
            None
        }
    }
}

fn describe(addr: &SocketAddress, who: Option<&diag::Holder>) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    match who {
        Some(h) => format!(
            "{addr} held by uid {} (socket inode {}, pid {})",
            opt(h.uid.map(|u| u.to_string())),
            h.inode,
            opt(h.pid.map(|p| p.to_string()))
        ),
        None => format!("{addr} held by an unknown socket"),
    }
}

/// `bind(2)` an already created datagram socket at an abstract address (std only binds
/// at creation, before `SO_PASSCRED` could be set).
fn bind_dgram(sock: &UnixDatagram, addr: &std::os::unix::net::SocketAddr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::linux::net::SocketAddrExt;
    let name =
        addr.as_abstract_name().ok_or_else(|| io::Error::other("not an abstract address"))?;
    let ua = nix::sys::socket::UnixAddr::new_abstract(name)?;
    nix::sys::socket::bind(sock.as_raw_fd(), &ua)?;
    Ok(())
}
