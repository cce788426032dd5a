//! `boxsock`: a micro-VM box runtime whose sockets never hit the `sun_path` limit.
//!
//! This crate is the facade for embedders and the home of the `boxsock` binary. It
//! re-exports what an embedder needs from `boxsock-core` and `boxsock-runtime` and names every built-in
//! strategy and backend crate, so their registrations are linked:
//!
//! ```no_run
//! # async fn demo() -> Result<(), boxsock::RuntimeError> {
//! use boxsock::{CreateOptions, Runtime, RuntimeOptions, builtin_backends, builtin_strategies};
//! let options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
//! let (rt, _report) = Runtime::open("/srv/boxes", options).await?;
//! let b = rt.create(CreateOptions::new("short-symlink", "host")).await?;
//! rt.start(b.id.as_str()).await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;

pub use boxsock_core;
pub use boxsock_runtime;
pub use boxsock_core::backend::{Availability, BackendConfig, BoxSettings, Isolation};
pub use boxsock_core::registry::Named;
pub use boxsock_runtime::process::{Liveness, ProcessHandle, ProcessIdentity};
pub use boxsock_core::registry::{BackendRegistration, Registry, StrategyRegistration};
pub use boxsock_runtime::{
    Access, BoxInfo, ClientError, CompanionInfo, CreateOptions, CreateOptionsBuilder, DoctorReport, ExecIo, LockMode, OpenReport, Runtime, RuntimeError,
    RuntimeOptions,
    doctor,
};
pub use boxsock_runtime::exec::{self, Child, Command, ExitStatus, Output, SpawnErrorKind};
pub use boxsock_runtime::state::BoxState;
pub use boxsock_runtime::store::{BoxConfig, BoxRecord, Listing};
pub use boxsock_core::{BindingError, BoxId, BoxLayout, SocketAddress, StrategyConfig};

// Name every strategy and backend crate so `inventory` links their registrations.
use boxsock_abstract as _;
use boxsock_direct as _;
use boxsock_host as _;
#[cfg(feature = "libkrun")]
use boxsock_libkrun as _;
use boxsock_short_symlink as _;

/// The default strategy.
pub const DEFAULT_STRATEGY: &str = boxsock_short_symlink::NAME;
/// The default backend: `libkrun` with the `libkrun` cargo feature (the default),
/// `host` without it.
#[cfg(feature = "libkrun")]
pub const DEFAULT_BACKEND: &str = boxsock_libkrun::NAME;
/// The default backend: `libkrun` with the `libkrun` cargo feature (the default),
/// `host` without it.
#[cfg(not(feature = "libkrun"))]
pub const DEFAULT_BACKEND: &str = boxsock_host::NAME;

/// Every built-in strategy, explicitly (no link-time collection).
pub fn builtin_strategies() -> Registry<StrategyRegistration> {
    Registry::from_entries(
        "strategy",
        [&boxsock_short_symlink::REGISTRATION, &boxsock_direct::REGISTRATION, &boxsock_abstract::REGISTRATION],
    )
}

/// Every built-in backend, explicitly (no link-time collection).
pub fn builtin_backends() -> Registry<BackendRegistration> {
    Registry::from_entries(
        "backend",
        [
            #[cfg(feature = "libkrun")]
            &boxsock_libkrun::REGISTRATION,
            &boxsock_host::REGISTRATION,
        ],
    )
}

/// The default home: `$BOXSOCK_HOME`, else `$XDG_DATA_HOME/boxsock`, else
/// `~/.local/share/boxsock`.
pub fn default_home() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("BOXSOCK_HOME")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("boxsock")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/boxsock")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registries_name_every_crate_and_match_inventory() {
        let s = builtin_strategies();
        s.check_unique().unwrap();
        assert_eq!(s.names(), ["abstract", "direct", "short-symlink"]);
        let b = builtin_backends();
        b.check_unique().unwrap();
        assert_eq!(b.names(), if cfg!(feature = "libkrun") { &["host", "libkrun"][..] } else { &["host"][..] });
        // Link-time collection sees the same names (the `use … as _` lines work).
        let collected = Registry::<StrategyRegistration>::collected();
        for n in s.names() {
            assert!(collected.get(n).is_ok(), "{n} not collected");
        }
        let collected = Registry::<BackendRegistration>::collected();
        for n in b.names() {
            assert!(collected.get(n).is_ok(), "{n} not collected");
        }
        assert!(s.get(DEFAULT_STRATEGY).is_ok() && b.get(DEFAULT_BACKEND).is_ok());
    }
}
