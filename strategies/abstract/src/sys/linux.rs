//! The `abstract` strategy on Linux.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use boxsock_core::binding::{CrossUserProtection, PolicyIntent};
use boxsock_core::peer::PeerPolicy;
use boxsock_core::{
    BindingError, BoxId, BoxLayout, Capabilities, Platform, PolicyAccess, PolicyPath, SocketAddress, SocketBinding,
    StrategyConfig, SweepReport, budget, catalogue,
};

use crate::name::Deriver;
use crate::secret::{self, SECRET_FILE, Secret};
use crate::NAME;

/// Build from a configuration (the registered constructor).
pub fn build(config: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Abstract::new(config)))
}

/// The `abstract` strategy. Holds a cache of per-home secrets (so [`SocketBinding::address`]
/// is a map lookup and one HMAC) and one [`PeerPolicy`] whose rejection counter all its
/// listeners and connectors share.
#[derive(Debug)]
pub struct Abstract {
    uid: u32,
    policy: PeerPolicy,
    secrets: RwLock<HashMap<PathBuf, Arc<Keyed>>>,
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
        Abstract { uid: config.uid, policy: PeerPolicy::allow_uids(uids), secrets: RwLock::new(HashMap::new()) }
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
        let secret = secret::load_or_create(&path, nix::unistd::geteuid().as_raw(), cached.as_ref().map(|k| &k.secret))?;
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
                    path = %path.display(),
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

    /// Creates the home's secret if needed and re-validates it on disk (owner, mode,
    /// not a symlink). A secret deleted while this instance uses it is written back
    /// from memory, so running boxes keep their names. Nothing else: abstract names need
    /// no filesystem entry.
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.load(layout)?;
        tracing::debug!(box_id = %id, strategy = NAME, "ensured");
        Ok(())
    }

    /// `@boxsock/<uid>/<hex>`. Loads (or creates) the home's secret on first use, then
    /// serves it from the cache.
    fn address(&self, layout: &BoxLayout, id: &BoxId, file_name: &str) -> Result<SocketAddress, BindingError> {
        catalogue::validate_file_name(file_name)
            .map_err(|reason| BindingError::Invalid { what: "socket file name".into(), reason })?;
        let keyed = self.keyed(layout)?;
        let addr = SocketAddress::Abstract(keyed.deriver.derive(id.as_str(), file_name));
        budget::check(file_name, &addr, Platform::Linux)?;
        Ok(addr)
    }

    /// Nothing to remove: the kernel frees an abstract name when the last descriptor of
    /// the socket bound to it closes, so a dead box's names are free already.
    fn release(&self, _layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        tracing::debug!(box_id = %id, strategy = NAME, "released (nothing on disk)");
        Ok(())
    }

    /// Nothing to sweep, for the same reason as [`SocketBinding::release`]. The secret
    /// is the home's, not a box's, and is kept.
    fn sweep(&self, _layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        Ok(SweepReport::default())
    }

    /// Only the secret file, read-only: a sandboxed process that derives addresses
    /// needs it; sockets themselves involve no path. (Landlock's abstract-socket scope
    /// is a separate matter: see `docs/strategies.md`.)
    fn policy_paths(&self, layout: &BoxLayout, _id: &BoxId) -> Result<Vec<PolicyPath>, BindingError> {
        Ok(vec![PolicyPath { path: Self::secret_path(layout), intent: PolicyIntent::File, access: PolicyAccess::Read }])
    }

    fn peer_policy(&self) -> PeerPolicy {
        self.policy.clone()
    }

    /// Binds with `SO_PASSCRED` on, so every datagram carries its sender's credentials
    /// and [`boxsock_core::peer::recv_checked`] can check it.
    fn bind_datagram(&self, layout: &BoxLayout, id: &BoxId, file_name: &str) -> Result<UnixDatagram, BindingError> {
        let addr = self.address(layout, id, file_name)?;
        // Create, enable SO_PASSCRED, then bind: no datagram can arrive without it.
        let sock = UnixDatagram::unbound().map_err(|e| BindingError::io("create datagram socket for", addr.display_string(), e))?;
        boxsock_core::peer::set_pass_cred(sock.as_fd())
            .map_err(|e| BindingError::io("enable SO_PASSCRED on", addr.display_string(), e))?;
        bind_dgram(&sock, &addr).map_err(|e| BindingError::io("bind", addr.display_string(), e))?;
        tracing::debug!(box_id = %id, socket = file_name, address = %addr, "bound datagram");
        Ok(sock)
    }
}

/// `bind(2)` an already created datagram socket at an abstract name (std only binds at
/// creation, before `SO_PASSCRED` could be set).
fn bind_dgram(sock: &UnixDatagram, addr: &SocketAddress) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let SocketAddress::Abstract(name) = addr else {
        return Err(std::io::Error::other("not an abstract address"));
    };
    let ua = nix::sys::socket::UnixAddr::new_abstract(name)?;
    nix::sys::socket::bind(sock.as_raw_fd(), &ua)?;
    Ok(())
}
