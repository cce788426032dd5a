//! boxsock core: the vocabulary and the seams of the box runtime.
//!
//! This crate owns everything that every strategy and every backend shares:
//!
//! - [`id::BoxId`], the validated box identifier, and [`layout::BoxLayout`], the pure
//!   path arithmetic of a runtime home;
//! - [`catalogue`], the sockets a box has (who binds each, and which names the binder
//!   *derives* from it), and [`budget`], the `sun_path` arithmetic every address must pass;
//! - [`binding::SocketBinding`], the trait a socket strategy implements, with its
//!   [`address::SocketAddress`], [`binding::Capabilities`] and [`error::BindingError`];
//! - [`peer`], peer-credential checks for listeners and connectors that need them;
//! - [`registry`], link-time (`inventory`) and explicit registries of strategies and backends
//!   (the facade `boxsock` links the crates);
//! - [`backend::Backend`], the trait a VMM backend implements;
//! - [`proto`], the agent wire protocol (its async client lives in `boxsock-runtime`).
//!
//! The box lifecycle, the SQLite store, process identity and the agent client are the
//! `boxsock-runtime` crate, beside this one under `core/`: the in-box agent and the
//! libkrun shim depend on this crate alone, so they link neither SQLite nor the runtime.
//!
//! The core never names a concrete strategy or backend: it holds `dyn SocketBinding` and
//! `dyn Backend`. See `docs/ARCHITECTURE.md` for the codemap and the invariants.

// First: on a platform other than Linux the build stops here (docs/platforms.md).
mod sys;

pub mod address;
pub mod atomic;
pub mod backend;
pub mod binding;
pub mod boxbinding;
pub mod boxdir;
pub mod boxsockets;
pub mod budget;
pub mod catalogue;
pub mod echo;
pub mod error;
pub mod fallback;
pub mod fds;
pub mod helpers;
pub mod id;
pub mod layout;
pub mod peer;
pub mod ports;
pub mod process;
pub mod proto;
pub mod registry;
pub mod settings;
pub mod sockdir;
pub mod spawn;
pub mod trust;

pub use address::{SocketAddress, UriError};
pub use backend::Backend;
pub use binding::{
    Capabilities, PathStrategy, PolicyAccess, PolicyPath, SocketBinding, StrategyConfig,
    SweepReport,
};
pub use boxbinding::{BoxBinding, Held, Opening};
pub use budget::Platform;
pub use catalogue::{Binder, DerivedName, FileNameError, Socket, SocketKind, SocketSpec};
pub use error::BindingError;
pub use id::BoxId;
pub use layout::BoxLayout;
pub use sockdir::{DirExpectation, DirIdentity, SocketDir};
