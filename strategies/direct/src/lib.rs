//! `direct`: the baseline strategy. Sockets bind at their real path,
//! `<home>/boxes/<id>/sockets/<name>`, with no indirection.
//!
//! It exists as the floor for the benches and to prove the budget check: for a deep home
//! opening a box (or asking its address) fails fast with [`BindingError::PathTooLong`] naming the
//! socket, the path, its length and the limit, instead of a truncated or silent bind.

use std::path::PathBuf;
use std::sync::Arc;

use boxsock_core::binding::{self, CrossUserProtection, PolicyIntent};
use boxsock_core::peer::PeerPolicy;
use boxsock_core::registry::StrategyRegistration;
use boxsock_core::{
    BindingError, BoxId, BoxLayout, Capabilities, PathStrategy, Platform, PolicyAccess, PolicyPath,
    SocketBinding, StrategyConfig, SweepReport,
};
use boxsock_core::{DirExpectation, SocketDir};

/// The registered name.
pub const NAME: &str = "direct";

/// The registration, also usable in explicit registries.
pub const REGISTRATION: StrategyRegistration = StrategyRegistration {
    name: NAME,
    summary: "no indirection: sockets bind at <home>/boxes/<id>/sockets/<name>; fails fast when that is too long (baseline)",
    build,
};

inventory::submit!(REGISTRATION);

fn build(config: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Direct::new(config)))
}

/// The `direct` strategy.
#[derive(Debug, Clone)]
pub struct Direct {
    uid: u32,
    allowed_peer_uids: Vec<u32>,
}

impl boxsock_core::registry::Named for Direct {
    const NAME: &'static str = NAME;
}

impl Default for Direct {
    /// The effective uid, no extra peers.
    fn default() -> Self {
        Direct::new(&StrategyConfig::default())
    }
}

impl Direct {
    /// A strategy for `config` (its uid and `allowed_peer_uids`; the base directory is
    /// not used).
    pub fn new(config: &StrategyConfig) -> Self {
        Direct { uid: config.uid, allowed_peer_uids: config.allowed_peer_uids.clone() }
    }
}

impl PathStrategy for Direct {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            path_addressable: true,
            filesystem_visible: true,
            peer_credentials: true,
            netns_scoped: false,
            home_length_independent: false,
            cross_user: CrossUserProtection::Both,
            platforms: &[Platform::Linux, Platform::MacOs],
        }
    }

    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        binding::require_socket_dir(layout, id).map(drop)
    }

    /// The real path, `<home>/boxes/<id>/sockets`.
    fn socket_base(&self, layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
        Ok(layout.sockets_dir(id))
    }

    /// `<home>/boxes/<id>/sockets` opened by its real path and verified on the
    /// descriptor (a directory owned by the uid, no group/other write). The address
    /// stays the real path (and fails fast when too long); binds and connects go
    /// through the held descriptor.
    fn open_dir(&self, layout: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError> {
        let dir = binding::require_socket_dir(layout, id)?;
        SocketDir::open(&dir, DirExpectation { owner: self.uid, identity: None })
    }

    /// The owner and the embedder's `allowed_peer_uids` (`SO_PEERCRED` on every accept
    /// and connect, besides the 0700 directory).
    fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy::allow_uids(
            std::iter::once(self.uid).chain(self.allowed_peer_uids.iter().copied()),
        )
    }

    fn release(&self, _layout: &BoxLayout, _id: &BoxId) -> Result<(), BindingError> {
        // Nothing was made outside the box directory, which the runtime removes.
        Ok(())
    }

    fn sweep(&self, _layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        Ok(SweepReport::default())
    }

    fn policy_paths(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Vec<PolicyPath>, BindingError> {
        Ok(vec![PolicyPath {
            path: layout.sockets_dir(id),
            intent: PolicyIntent::Directory,
            access: PolicyAccess::Sockets,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_home_fails_fast_naming_the_socket() {
        let layout = BoxLayout::new(format!("/{}", "h".repeat(120)));
        let id = BoxId::parse("abc").unwrap();
        let direct: Arc<dyn SocketBinding> = Arc::new(Direct::default());
        let err = direct.inspect_box(&layout, &id).unwrap().derive("agent.sock").unwrap_err();
        match err {
            BindingError::PathTooLong { socket, path, len, limit } => {
                assert_eq!(socket, "agent.sock");
                assert!(path.ends_with("/boxes/abc/sockets/agent.sock"));
                assert_eq!(len, path.len());
                assert_eq!(limit, Platform::current().sun_len());
            }
            other => panic!("wrong variant: {other}"),
        }
    }
}
