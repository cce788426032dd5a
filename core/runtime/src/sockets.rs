//! A box's socket addresses: which sockets a box has, their addresses checked against
//! the `sun_path` budget (before a box is opened), whether a strategy can serve a
//! backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use boxsock_core::address::SocketAddress;
use boxsock_core::backend::{AddressNeeds, Backend, Readiness};
use boxsock_core::binding::SocketBinding;
use boxsock_core::boxbinding::Opening;
use boxsock_core::catalogue::{self, SocketSpec};
use boxsock_core::error::BindingError;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;

/// The sockets of a box of `backend`, with `ready` added if the backend did not list
/// it and its process reports readiness on a socket (the runtime binds it); a backend
/// of [`Readiness::Channel`] gets no `ready` socket.
pub fn socket_specs(backend: &dyn Backend, network: bool) -> Vec<SocketSpec> {
    let mut specs = backend.sockets(network);
    let listed = specs.iter().any(|s| s.name == catalogue::READY.name);
    if backend.readiness() == Readiness::Socket && !listed {
        specs.push(catalogue::READY);
    }
    specs
}

/// Check every address of `specs` (own and derived names) for box `id`, returning the
/// own addresses by logical name. A miss is [`BindingError::PathTooLong`] labelled with
/// the socket (and the derived name, when that is what missed).
///
/// Asked of the box's binding opened to look ([`Opening::Inspect`]: nothing is made,
/// opened or checked, so it may run before a start changes the box's state): the
/// addresses come from the same derivation as those the start's binding holds.
pub fn check_addresses(
    strategy: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
    specs: &[SocketSpec],
) -> Result<BTreeMap<String, SocketAddress>, BindingError> {
    Ok(strategy.clone().open_box(layout, id, Opening::Inspect, specs)?.addresses())
}

/// Why a strategy cannot serve a backend ([`compatibility`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatibility {
    /// The backend hands socket paths to its VMM; the strategy gives out addresses that
    /// are not in the filesystem.
    #[error(
        "backend {backend:?} hands socket paths to its VMM, which cannot use the non-filesystem addresses strategy {strategy:?} gives out; use a path strategy such as short-symlink"
    )]
    NeedsPaths {
        /// Strategy name.
        strategy: String,
        /// Backend name.
        backend: String,
    },
}

/// Serialised as its message (what `doctor --json` has always shown).
impl serde::Serialize for Incompatibility {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `strategy` can serve `backend`, with the reason when not.
pub fn compatibility(
    strategy: &dyn SocketBinding,
    backend: &dyn Backend,
) -> Result<(), Incompatibility> {
    let caps = strategy.capabilities();
    if backend.address_needs() == AddressNeeds::PathOnly && !caps.path_addressable {
        return Err(Incompatibility::NeedsPaths {
            strategy: strategy.name().to_owned(),
            backend: backend.name().to_owned(),
        });
    }
    Ok(())
}
