//! `boxsock`: a micro-VM box runtime whose sockets never hit the `sun_path` limit.
//!
//! This crate is the facade for embedders and the home of the `boxsock` binary. It
//! re-exports what an embedder needs from `boxsock-core` and `boxsock-runtime`, and links every
//! strategy and backend crate it depends on (one line each in `src/linked.rs`), so
//! [`builtin_strategies`] and [`builtin_backends`] hold them all:
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
pub use boxsock_core::backend::{Availability, BackendConfig, BoxSettings, Isolation};
pub use boxsock_core::registry::Named;
pub use boxsock_core::registry::{BackendRegistration, Registry, StrategyRegistration};
pub use boxsock_core::settings::{ByteSize, PortMapping, Protocol, SettingError, Volume};
pub use boxsock_core::{BindingError, BoxId, BoxLayout, SocketAddress, StrategyConfig};
pub use boxsock_image;
pub use boxsock_runtime;
pub use boxsock_runtime::exec::{self, Child, Command, ExitStatus, Output, SpawnErrorKind};
pub use boxsock_runtime::process::{Liveness, ProcessHandle, ProcessIdentity};
pub use boxsock_runtime::state::BoxState;
pub use boxsock_runtime::store::{BoxConfig, BoxProcess, BoxRecord, Listing};
pub use boxsock_runtime::{
    Access, BoxInfo, ClientError, CompanionInfo, CreateOptions, CreateOptionsBuilder, DoctorReport,
    ExecIo, LockMode, OpenReport, OwnedRemoval, Runtime, RuntimeError, RuntimeOptions, doctor,
};

mod linked;
/// Escaping what boxsock's programs print themselves (the CLI, `boxsock-oci`).
pub mod term;

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

/// Every strategy linked into this program, sorted by name: each one the facade
/// depends on (see `src/linked.rs`), and any other crate the program names that registers
/// one. The single registry the CLI, the tests and the benches use.
pub fn builtin_strategies() -> Registry<StrategyRegistration> {
    sorted("strategy", Registry::<StrategyRegistration>::collected())
}

/// Every backend linked into this program, sorted by name (as [`builtin_strategies`]).
pub fn builtin_backends() -> Registry<BackendRegistration> {
    sorted("backend", Registry::<BackendRegistration>::collected())
}

/// `inventory`'s order is the link order; listings should not depend on it.
fn sorted<R: boxsock_core::registry::Registration>(
    kind: &'static str,
    r: Registry<R>,
) -> Registry<R> {
    let mut v: Vec<&'static R> = r.iter().collect();
    v.sort_by_key(|e| e.name());
    Registry::from_entries(kind, v)
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
    fn builtin_registries_hold_every_built_in_once_sorted() {
        let s = builtin_strategies();
        s.check_unique().unwrap();
        for n in ["abstract", "direct", "short-symlink"] {
            assert!(s.get(n).is_ok(), "strategy {n} not registered: {:?}", s.names());
        }
        let listed: Vec<&str> = s.iter().map(|r| r.name).collect();
        assert_eq!(listed, s.names(), "listed in name order, each once");
        let b = builtin_backends();
        b.check_unique().unwrap();
        assert!(b.get("host").is_ok(), "{:?}", b.names());
        // The libkrun backend is linked exactly when its feature is on (its line in
        // linked.rs is under that feature).
        assert_eq!(b.get("libkrun").is_ok(), cfg!(feature = "libkrun"), "{:?}", b.names());
        assert!(s.get(DEFAULT_STRATEGY).is_ok() && b.get(DEFAULT_BACKEND).is_ok());
    }
}
