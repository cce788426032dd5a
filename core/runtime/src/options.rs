//! The runtime's API types: how a runtime is opened ([`RuntimeOptions`], [`Access`]),
//! what a box is created with ([`CreateOptions`]) and where an exec's streams go
//! ([`ExecIo`]).

use std::time::Duration;

use boxsock_core::backend::BackendConfig;
use boxsock_core::binding::StrategyConfig;
use boxsock_core::registry::{BackendRegistration, Registry, StrategyRegistration};

use crate::lock::LockMode;
#[allow(unused_imports)] // rustdoc links
use crate::{Runtime, RuntimeError};

/// Whether a runtime may change its home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create the home if missing, recover, create / start / stop / remove boxes.
    ReadWrite,
    /// Look only (`ls`, `inspect`): nothing is created, deleted, recovered, swept or
    /// tightened; a missing home is [`RuntimeError::NoHome`]; every change is
    /// [`RuntimeError::ReadOnly`].
    ReadOnly,
}

/// How a [`Runtime`] is built. The registries are values, so the core never names a
/// strategy or backend crate; the `boxsock` crate supplies the built-in ones.
#[derive(Debug)]
pub struct RuntimeOptions {
    /// Strategies that may be used.
    pub strategies: Registry<StrategyRegistration>,
    /// Backends that may be used.
    pub backends: Registry<BackendRegistration>,
    /// Configuration every strategy is built from (tests point `base_dir` at a temp dir).
    pub strategy_config: StrategyConfig,
    /// Configuration every backend is built from.
    pub backend_config: BackendConfig,
    /// How the home is shared with other processes.
    pub lock_mode: LockMode,
    /// How long to wait for a busy home before [`RuntimeError::HomeBusy`]; `None` fails
    /// at once.
    pub lock_wait: Option<Duration>,
    /// How long `start` waits for the agent's readiness.
    pub ready_timeout: Duration,
    /// Each step of `stop` (graceful, SIGTERM) waits at most this long.
    pub stop_timeout: Duration,
    /// Watch running boxes' processes while the runtime is alive.
    pub health_monitor: bool,
    /// Whether the runtime may change the home (default [`Access::ReadWrite`]).
    pub access: Access,
    /// When recovery runs at open, also remove boxes whose auto-remove owner
    /// ([`CreateOptions::auto_remove_owner`]) is gone. The CLI turns it off for
    /// read-only verbs; [`Runtime::remove_abandoned`] does it on demand.
    pub remove_abandoned_at_open: bool,
}

impl RuntimeOptions {
    /// Defaults: exclusive lock failing fast, 10 s readiness, 5 s per stop step, health
    /// monitor on, strategies under `/tmp`.
    pub fn new(
        strategies: Registry<StrategyRegistration>,
        backends: Registry<BackendRegistration>,
    ) -> Self {
        RuntimeOptions {
            strategies,
            backends,
            strategy_config: StrategyConfig::default(),
            backend_config: BackendConfig::default(),
            lock_mode: LockMode::Exclusive,
            lock_wait: None,
            ready_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(5),
            health_monitor: true,
            access: Access::ReadWrite,
            remove_abandoned_at_open: true,
        }
    }
}

impl Clone for RuntimeOptions {
    fn clone(&self) -> Self {
        RuntimeOptions {
            // `Registry` is `Clone` only for `Clone` entries; its entries are `&'static`.
            strategies: Registry::from_entries("strategy", self.strategies.iter()),
            backends: Registry::from_entries("backend", self.backends.iter()),
            strategy_config: self.strategy_config.clone(),
            backend_config: self.backend_config.clone(),
            lock_mode: self.lock_mode,
            lock_wait: self.lock_wait,
            ready_timeout: self.ready_timeout,
            stop_timeout: self.stop_timeout,
            health_monitor: self.health_monitor,
            access: self.access,
            remove_abandoned_at_open: self.remove_abandoned_at_open,
        }
    }
}

/// Where an exec's input comes from and its output goes.
pub struct ExecIo<'a> {
    /// Stdin to forward, if any (forwarded until EOF, then closed); otherwise the
    /// command reads `/dev/null`.
    pub stdin: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + 'static>>,
    /// Called with each stdout chunk, in order.
    pub stdout: &'a mut (dyn FnMut(&[u8]) + Send),
    /// Called with each stderr chunk, in order.
    pub stderr: &'a mut (dyn FnMut(&[u8]) + Send),
}

impl std::fmt::Debug for ExecIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo").field("stdin", &self.stdin.is_some()).finish_non_exhaustive()
    }
}
