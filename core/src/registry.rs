//! Registries of strategies and backends.
//!
//! Each strategy or backend crate `inventory::submit!`s a small const registration
//! (name, summary, constructor fn), typetag-style. [`Registry::collected`] gathers what
//! was linked; [`Registry::from_entries`] builds one explicitly, without link-time
//! collection. Lookup of a name registered twice is an error, never a silent pick.
//!
//! **Linking rule:** a crate nothing names is not linked, and its registrations vanish.
//! The facade `boxsock` names every strategy and backend crate it depends on (one
//! `use … as _;` line each in its `src/linked.rs`), so `boxsock::builtin_strategies()` and
//! `builtin_backends()` hold every strategy and backend it depends on; binaries, tests
//! and benches take their lists from there. A program that registers a crate the
//! facade does not depend on names it itself (`use my_strategy as _;`).

use std::fmt;
use std::sync::Arc;

use crate::backend::{Backend, BackendConfig, BackendError};
use crate::binding::{SocketBinding, StrategyConfig};
use crate::error::BindingError;

/// A registered strategy.
#[derive(Debug)]
pub struct StrategyRegistration {
    /// Unique name (`short-symlink`).
    pub name: &'static str,
    /// One line for `boxsock strategies`.
    pub summary: &'static str,
    /// Constructor.
    pub build: fn(&StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError>,
}

/// A registered backend.
#[derive(Debug)]
pub struct BackendRegistration {
    /// Unique name (`host`, `libkrun`).
    pub name: &'static str,
    /// One line for `boxsock backends`.
    pub summary: &'static str,
    /// Constructor.
    pub build: fn(&BackendConfig) -> Result<Arc<dyn Backend>, BackendError>,
}

inventory::collect!(StrategyRegistration);
inventory::collect!(BackendRegistration);

/// A strategy or backend type and the name it registers under, so an embedder can
/// choose it by type (`CreateOptions::builder().strategy_of::<ShortSymlink>()`)
/// instead of spelling the name. Every built-in strategy and backend implements it
/// with its crate's `NAME`.
pub trait Named {
    /// The registered name.
    const NAME: &'static str;
}

/// Something with a registered name.
pub trait Registration: fmt::Debug + Sync + 'static {
    /// The name.
    fn name(&self) -> &'static str;
    /// The summary.
    fn summary(&self) -> &'static str;
}

impl Registration for StrategyRegistration {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
}

impl Registration for BackendRegistration {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No entry has that name.
    #[error("unknown {kind} {}; known: {}", crate::echo::echo(.name), known.join(", "))]
    Unknown {
        /// "strategy" or "backend".
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<&'static str>,
    },
    /// More than one entry has that name (two crates registered it).
    #[error("{kind} {name:?} is registered {count} times; refusing to pick one")]
    Duplicate {
        /// "strategy" or "backend".
        kind: &'static str,
        /// The name.
        name: String,
        /// How many entries carry it.
        count: usize,
    },
}

/// A set of registrations of one kind.
#[derive(Debug, Clone)]
pub struct Registry<R: 'static> {
    kind: &'static str,
    entries: Vec<&'static R>,
}

impl<R: Registration> Registry<R> {
    /// A registry of exactly these entries, in this order.
    pub fn from_entries(kind: &'static str, entries: impl IntoIterator<Item = &'static R>) -> Self {
        Registry { kind, entries: entries.into_iter().collect() }
    }

    /// Look up `name`. A name registered twice is [`RegistryError::Duplicate`].
    pub fn get(&self, name: &str) -> Result<&'static R, RegistryError> {
        let mut found = self.entries.iter().filter(|e| e.name() == name);
        let first = found.next();
        let more = found.count();
        match first {
            None => Err(RegistryError::Unknown {
                kind: self.kind,
                name: name.to_owned(),
                known: self.names(),
            }),
            Some(_) if more > 0 => Err(RegistryError::Duplicate {
                kind: self.kind,
                name: name.to_owned(),
                count: more + 1,
            }),
            Some(e) => Ok(e),
        }
    }

    /// Distinct names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.entries.iter().map(|e| e.name()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every entry, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &'static R> + '_ {
        self.entries.iter().copied()
    }

    /// Fails on the first name registered more than once.
    pub fn check_unique(&self) -> Result<(), RegistryError> {
        for n in self.names() {
            self.get(n)?;
        }
        Ok(())
    }
}

impl Registry<StrategyRegistration> {
    /// Every strategy linked into this binary.
    pub fn collected() -> Self {
        Self::from_entries("strategy", inventory::iter::<StrategyRegistration>)
    }

    /// Look up and build a strategy.
    pub fn build(
        &self,
        name: &str,
        config: &StrategyConfig,
    ) -> Result<Arc<dyn SocketBinding>, BuildError> {
        let reg = self.get(name)?;
        (reg.build)(config).map_err(BuildError::Strategy)
    }
}

impl Registry<BackendRegistration> {
    /// Every backend linked into this binary.
    pub fn collected() -> Self {
        Self::from_entries("backend", inventory::iter::<BackendRegistration>)
    }

    /// Look up and build a backend.
    pub fn build(
        &self,
        name: &str,
        config: &BackendConfig,
    ) -> Result<Arc<dyn Backend>, BuildError> {
        let reg = self.get(name)?;
        (reg.build)(config).map_err(BuildError::Backend)
    }
}

/// Why building a registered entry failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The lookup failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The strategy's constructor failed.
    #[error(transparent)]
    Strategy(BindingError),
    /// The backend's constructor failed.
    #[error(transparent)]
    Backend(BackendError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
        Err(BindingError::Unsupported {
            strategy: "t".into(),
            what: "build".into(),
            reason: "test".into(),
        })
    }
    static A: StrategyRegistration =
        StrategyRegistration { name: "a", summary: "first", build: fail };
    static A2: StrategyRegistration =
        StrategyRegistration { name: "a", summary: "second", build: fail };
    static B: StrategyRegistration = StrategyRegistration { name: "b", summary: "b", build: fail };

    #[test]
    fn lookup_unknown_and_duplicate() {
        let r = Registry::from_entries("strategy", [&A, &B]);
        assert_eq!(r.get("b").unwrap().summary, "b");
        assert_eq!(r.names(), ["a", "b"]);
        let e = r.get("zz").unwrap_err();
        assert!(matches!(&e, RegistryError::Unknown { known, .. } if known == &["a", "b"]), "{e}");
        let r = Registry::from_entries("strategy", [&A, &B, &A2]);
        assert!(matches!(r.get("a"), Err(RegistryError::Duplicate { count: 2, .. })));
        assert!(r.check_unique().is_err());
        assert!(r.get("b").is_ok());
    }
}
