//! [`BoxSockets`]: a box's sockets for one start, the view of its opened
//! [`BoxBinding`] ([`BoxSockets::view`]) carried to the backend in
//! [`LaunchSpec`](crate::backend::LaunchSpec).
//!
//! One value holds what every consumer of an address needs: the address itself (its
//! displayed form, for messages and for consumers that can only take a path string),
//! the verified socket directory path addresses are bound and dialled through, and the
//! box's [`PeerPolicy`], which the runtime's listeners and the box's processes (the
//! host agent's `--allow-uid`) both enforce. Nobody derives an address again, and no
//! backend rebuilds the peer policy from the address variant.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::address::SocketAddress;
use crate::boxbinding::BoxBinding;
use crate::catalogue::{self, Socket};
use crate::error::BindingError;
use crate::peer::{Listener, PeerPolicy};
use crate::sockdir::SocketDir;

/// A box's sockets for one start. See the module documentation.
#[derive(Debug, Clone)]
pub struct BoxSockets {
    /// Address of every socket of the box, by logical name (`agent`, `ready`, `net`…),
    /// as the strategy derived it for this start. Path addresses must not be bound or
    /// dialled by this string from a process boxsock controls: go through
    /// [`BoxSockets::dir`].
    pub addresses: BTreeMap<String, SocketAddress>,
    /// The box's socket directory, verified by the runtime at this start (path
    /// strategies; `None` for abstract names). A backend hands it to its processes as
    /// an inherited descriptor and gives them [`BoxSockets::child_endpoint`]s through
    /// it, so no process of the box re-resolves a path others can change.
    pub dir: Option<SocketDir>,
    /// Who may be a peer on every socket of the box (`SO_PEERCRED`): the strategy's
    /// policy, i.e. the owner plus the embedder's `allowed_peer_uids`. The runtime's
    /// listeners enforce it, and a backend passes the same uids to the box's processes.
    pub peer: PeerPolicy,
    /// The listeners the runtime bound for the box's process to accept on (sockets of
    /// [`Binder::Handed`](crate::catalogue::Binder::Handed)), by logical name, bound
    /// through the strategy with its peer policy. A backend hands each to its process
    /// as an inherited descriptor, never its name: a name in an argv or environment
    /// can be read from `/proc` and bound by another user first. The runtime closes
    /// its copies once [`Backend::launch`](crate::backend::Backend::launch) returns; a
    /// backend keeps none.
    pub handed: BTreeMap<String, Arc<Listener>>,
    /// The box's end of a connected stream socket pair on which its process sends the
    /// `Ready` frame, for a backend whose [`Readiness`](crate::backend::Readiness) is
    /// `Channel` (no `ready` socket is bound then); `None` otherwise. Handed like
    /// [`BoxSockets::handed`] and closed by the runtime after `launch` as well.
    pub ready_channel: Option<Arc<OwnedFd>>,
}

impl BoxSockets {
    /// The view of an opened box's binding for one launch: its addresses now, its
    /// verified directory and its peer policy, with nothing handed yet.
    pub fn view(binding: &dyn BoxBinding) -> Self {
        BoxSockets::new(binding.addresses(), binding.dir().cloned(), binding.peer_policy().clone())
    }

    /// Addresses, directory and policy, with nothing handed (no
    /// [`BoxSockets::handed`] listener, no ready channel).
    pub fn new(
        addresses: BTreeMap<String, SocketAddress>,
        dir: Option<SocketDir>,
        peer: PeerPolicy,
    ) -> Self {
        BoxSockets { addresses, dir, peer, handed: BTreeMap::new(), ready_channel: None }
    }

    /// The listener the runtime bound for logical socket `name`, to hand to the box's
    /// process, or [`BindingError::Invalid`] naming it.
    pub fn handed(&self, name: &str) -> Result<&Listener, BindingError> {
        self.handed.get(name).map(|l| &**l).ok_or_else(|| BindingError::Invalid {
            what: "socket name".into(),
            reason: format!(
                "no listener bound for socket {name:?} to hand to the box (handed: {:?})",
                self.handed.keys().collect::<Vec<_>>()
            ),
        })
    }

    /// The address of logical socket `name`, or [`BindingError::Invalid`] naming it.
    pub fn address(&self, name: &str) -> Result<&SocketAddress, BindingError> {
        self.addresses.get(name).ok_or_else(|| BindingError::Invalid {
            what: "socket name".into(),
            reason: format!(
                "no address for socket {name:?} among {:?}",
                self.addresses.keys().collect::<Vec<_>>()
            ),
        })
    }

    /// The agent's address.
    pub fn agent(&self) -> Result<&SocketAddress, BindingError> {
        self.address(catalogue::AGENT.name)
    }

    /// The readiness socket's address.
    pub fn ready(&self) -> Result<&SocketAddress, BindingError> {
        self.address(catalogue::READY.name)
    }

    /// The network socket's address, when the box has one.
    pub fn net(&self) -> Option<&SocketAddress> {
        self.addresses.get(catalogue::NET.name)
    }

    /// The uids a box's process must accept as peers, from [`BoxSockets::peer`];
    /// `None` when the policy checks no uid (a strategy whose filesystem permissions
    /// are the only check).
    pub fn peer_uids(&self) -> Option<&[u32]> {
        self.peer.allowed_uids()
    }

    /// The address of `socket` for a child that inherits [`BoxSockets::dir`] at
    /// descriptor `fd`: through the descriptor when there is a socket directory (Linux:
    /// `/proc/self/fd/<fd>/<file>`), otherwise the address itself (abstract names). A
    /// path address without a verified directory is refused ([`BindingError::Insecure`]).
    pub fn child_endpoint(&self, socket: &Socket, fd: i32) -> Result<SocketAddress, BindingError> {
        let addr = self.address(socket.name)?.clone();
        crate::boxbinding::endpoint(self.dir.as_ref(), addr, socket, fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets(addresses: &[(&str, SocketAddress)], peer: PeerPolicy) -> BoxSockets {
        let addresses = addresses.iter().map(|(n, a)| (n.to_string(), a.clone())).collect();
        BoxSockets::new(addresses, None, peer)
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it_and_net_is_optional() {
        let s =
            sockets(&[("agent", SocketAddress::Abstract(b"a".to_vec()))], PeerPolicy::unchecked());
        assert_eq!(s.agent().unwrap(), &SocketAddress::Abstract(b"a".to_vec()));
        match s.ready() {
            Err(BindingError::Invalid { reason, .. }) => {
                assert!(reason.contains("\"ready\"") && reason.contains("\"agent\""), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(s.net().is_none());
    }

    #[test]
    fn child_addresses_pass_abstract_names_and_refuse_a_path_without_a_verified_directory() {
        let s = sockets(
            &[
                ("agent", SocketAddress::Abstract(b"x".to_vec())),
                ("ready", SocketAddress::Path("/tmp/b/ready.sock".into())),
            ],
            PeerPolicy::unchecked(),
        );
        let agent = s.child_endpoint(&catalogue::AGENT, 3).unwrap();
        assert_eq!(agent, SocketAddress::Abstract(b"x".to_vec()));
        let ready = s.child_endpoint(&catalogue::READY, 3);
        assert!(matches!(ready, Err(BindingError::Insecure { .. })));
    }

    #[test]
    fn peer_uids_are_the_policy_s() {
        assert_eq!(
            sockets(&[], PeerPolicy::allow_uids([65534, 0])).peer_uids(),
            Some(&[0, 65534][..])
        );
        assert_eq!(sockets(&[], PeerPolicy::unchecked()).peer_uids(), None);
    }
}
