//! The strategy and backend crates this facade offers, linked.
//!
//! `inventory` collects only the registrations of crates that are linked, and rustc
//! links no dependency that nothing names. Each line below names one crate, so its
//! `inventory::submit!` reaches [`builtin_strategies`](crate::builtin_strategies) and
//! [`builtin_backends`](crate::builtin_backends); an optional crate is named under the
//! feature that turns its dependency on. This is the one list: every binary, test and
//! bench takes its registries from the facade. `tests/workspace/tests/registry.rs`
//! fails, naming the crate, when a registering crate under `strategies/` or
//! `backends/` has no line here (docs/strategies.md, "Adding a strategy").

use boxsock_abstract as _;
use boxsock_direct as _;
use boxsock_host as _;
#[cfg(feature = "libkrun")]
use boxsock_libkrun as _;
use boxsock_sandbox as _;
use boxsock_short_symlink as _;
#[cfg(feature = "boxsock-xdg-hashed")]
use boxsock_xdg_hashed as _;
