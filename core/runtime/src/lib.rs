//! boxsock runtime: boxes' lifecycle over a home, a strategy and a backend.
//!
//! This crate sits on [`boxsock_core`] (the vocabulary and the seams) and adds what only
//! the runtime needs: the lifecycle below, the SQLite [`store`] with its [`state`]
//! machine, [`process`] identity, and [`agent_client`], the async client of the agent
//! protocol. Neither the in-box agent nor the libkrun shim links it (nor SQLite).
//!
//! [`Runtime::open`] creates and locks the home, opens the store, sweeps every
//! strategy's leftovers and recovers state (see [`OpenReport`]). Then:
//!
//! - [`Runtime::create`] validates everything **before touching disk** — name, strategy,
//!   backend, platform, compatibility, the `sun_path` budget of every address the box
//!   will use including names the backend derives, then the backend's availability
//!   ([`Backend::available_for_launch`]) — then makes the directories, the row, the
//!   binding and the backend's files ([`Backend::prepare`]: a guest root), undoing all
//!   of it on failure.
//! - [`Runtime::start`] binds `ready` through the strategy, launches through the
//!   backend, records the process identity and its companions' (passt…) and waits for
//!   the agent's `Ready` frame (an accept, not a poll). A timeout, an early exit of the
//!   box process or of a companion stops the box, kills its companions and reports the
//!   tail of its log (and, for a companion, of the logs beside it).
//! - [`Runtime::exec`] / [`Runtime::ping`] re-`ensure` the binding, then dial the
//!   agent through the strategy.
//! - [`Runtime::stop`]: agent `Shutdown`, then SIGTERM, then SIGKILL, each bounded; the
//!   state becomes `Stopped` only once the process is really gone.
//! - [`Runtime::remove`]: stop if forced, release the binding, delete the directory,
//!   delete the row — in that order, so an interrupted removal is finished by recovery.
//!
//! A health monitor (one task per running box, waiting on its pidfd) turns a box whose
//! process died into `Unhealthy`, then `Stopped`, recording the exit. The pid reported,
//! watched and signalled is one [`ProcessIdentity`].
//!
//! Companions ([`boxsock_core::backend::Launched::companions`]) live exactly as long as their
//! box's process: recorded with the box (pid + start time, store table `companions`),
//! killed and reaped on stop, remove, a failed start, the box process's death, and by
//! recovery for any box that is not running after a crash.

pub mod agent_client;
mod create_options;
mod crash;
mod error;
pub mod home;
mod info;
mod lock;
pub mod process;
mod recovery;
pub mod squat;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::task::AbortHandle;

pub use crate::agent_client::ClientError;
pub use create_options::{CreateOptions, CreateOptionsBuilder};
pub use crash::{CRASH_ENV, CRASH_STEPS};
pub use error::RuntimeError;
pub use info::{BackendReport, BoxInfo, CompanionInfo, DoctorReport, SocketReport, StrategyReport, doctor};
pub use lock::{LockGuard, LockMode};
pub use recovery::{OpenReport, Recovered};

use boxsock_core::address::SocketAddress;
use boxsock_core::backend::{AddressNeeds, Availability, Backend, BackendConfig, LaunchSpec};
use boxsock_core::binding::{SocketBinding, StrategyConfig};
use boxsock_core::budget::{self, Platform};
use boxsock_core::catalogue::{self, SocketSpec};
use boxsock_core::error::BindingError;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;
use crate::process::{ProcessHandle, ProcessIdentity};
use crate::agent_client::AgentClient;
use boxsock_core::registry::{BackendRegistration, BuildError, Registry, StrategyRegistration};
use crate::state::BoxState;
use crate::store::{BoxConfig, BoxRecord, Listing, Store, StoreMode};

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
    pub fn new(strategies: Registry<StrategyRegistration>, backends: Registry<BackendRegistration>) -> Self {
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

/// How long `stop` waits after SIGKILL before giving up.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a companion gets after SIGTERM before SIGKILL.
const COMPANION_TERM_WAIT: Duration = Duration::from_secs(2);
/// Lines of the box log quoted in start errors.
const LOG_TAIL_LINES: usize = 20;

/// A runtime over one home. Cheap to clone: clones share one home lock, store,
/// health monitor and caches (an `Arc` inside), so an embedder can hand one to each
/// task.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: BoxLayout,
    /// The home, opened and checked at open; box directories are re-checked from it.
    home_fd: OwnedFd,
    options: RuntimeOptions,
    store: Store,
    strategies: Mutex<HashMap<String, Arc<dyn SocketBinding>>>,
    backends: Mutex<HashMap<String, Arc<dyn Backend>>>,
    procs: Mutex<HashMap<BoxId, Arc<ProcessHandle>>>,
    watchers: Mutex<HashMap<BoxId, AbortHandle>>,
    /// The lifetime lock of an exclusive runtime.
    _home_lock: Option<LockGuard>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, w) in self.watchers.get_mut().unwrap_or_else(|e| e.into_inner()).drain() {
            w.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sockets of a box of `backend`, with `ready` added if the backend did not list
/// it (the runtime always binds it).
pub fn socket_specs(backend: &dyn Backend, network: bool) -> Vec<SocketSpec> {
    let mut specs = backend.sockets(network);
    if !specs.iter().any(|s| s.name == catalogue::READY.name) {
        specs.push(catalogue::READY);
    }
    specs
}

/// Check every address of `specs` (own and derived names) for box `id`, returning the
/// own addresses by logical name. A miss is [`BindingError::PathTooLong`] labelled with
/// the socket (and the derived name, when that is what missed).
pub fn check_addresses(
    strategy: &dyn SocketBinding,
    layout: &BoxLayout,
    id: &BoxId,
    specs: &[SocketSpec],
) -> Result<BTreeMap<String, SocketAddress>, BindingError> {
    let mut own = BTreeMap::new();
    for spec in specs {
        for (i, (label, file)) in spec.all_file_names().into_iter().enumerate() {
            let addr = strategy.address(layout, id, &file).map_err(|e| match e {
                BindingError::PathTooLong { path, len, limit, .. } => BindingError::PathTooLong { socket: label.clone(), path, len, limit },
                e => e,
            })?;
            budget::check(&label, &addr, Platform::current())?;
            if i == 0 {
                own.insert(spec.name.to_owned(), addr);
            }
        }
    }
    Ok(own)
}

/// Whether `strategy` can serve `backend`, with the reason when not.
pub fn compatibility(strategy: &dyn SocketBinding, backend: &dyn Backend) -> Result<(), String> {
    let caps = strategy.capabilities();
    if backend.address_needs() == AddressNeeds::PathOnly && !caps.path_addressable {
        return Err(format!(
            "backend {:?} hands socket paths to its VMM, which cannot use the non-filesystem addresses strategy {:?} gives out; use a path strategy such as short-symlink",
            backend.name(),
            strategy.name()
        ));
    }
    Ok(())
}

fn tail_lines(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if tail.is_empty() { format!("(log {} is empty)", path.display()) } else { tail }
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Index of the first of `handles` to exit; never resolves when there are none.
async fn first_exit(handles: &[ProcessHandle]) -> usize {
    if handles.is_empty() {
        std::future::pending::<()>().await;
    }
    let mut waits: Vec<_> = handles.iter().map(|h| Box::pin(h.wait_exit())).collect();
    std::future::poll_fn(|cx| {
        for (i, w) in waits.iter_mut().enumerate() {
            if w.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The tails of the companions' logs: every file beside the box log (a backend writes
/// its companions' logs there, e.g. libkrun's `passt.log`), each under its name.
fn companion_logs(box_log: &Path) -> String {
    let Some(dir) = box_log.parent() else { return String::new() };
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p != box_log && p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let parts: Vec<String> = names.iter().map(|p| format!("{}:\n{}", p.display(), tail_lines(p, LOG_TAIL_LINES))).collect();
    if parts.is_empty() { format!("(no companion log in {})", dir.display()) } else { parts.join("\n") }
}

/// Remove the `ready` socket file of a box. Only in the real directory under the home,
/// never through the strategy's alias: a path in /tmp may lead somewhere else by now,
/// and the alias names the same file when it is intact.
fn remove_ready_file(_strategy: &dyn SocketBinding, layout: &BoxLayout, id: &BoxId) {
    use std::os::unix::fs::FileTypeExt;
    let real = layout.sockets_dir(id).join(catalogue::READY.file_name());
    if std::fs::symlink_metadata(&real).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(real);
    }
}

/// The verified socket directory of a box for this operation, refusing a path strategy
/// that does not provide one (its binds and dials would re-resolve a path string).
fn verified_dir(strategy: &dyn SocketBinding, layout: &BoxLayout, id: &BoxId, file: &str) -> Result<Option<boxsock_core::sockdir::SocketDir>, BindingError> {
    let dir = match strategy.socket_dir(layout, id) {
        // The binding vanished since `ensure` (a /tmp cleaner): heal once, look again.
        Err(BindingError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            strategy.ensure(layout, id)?;
            strategy.socket_dir(layout, id)?
        }
        other => other?,
    };
    if dir.is_none() {
        if let SocketAddress::Path(p) = strategy.address(layout, id, file)? {
            return Err(BindingError::Unsupported {
                strategy: strategy.name().to_owned(),
                what: format!("binding or dialling {}", p.display()),
                reason: "a path strategy must provide a verified socket directory (SocketBinding::socket_dir); re-resolving the path string lets whoever can change a directory on it receive the connection".into(),
            });
        }
    }
    Ok(dir)
}

/// The uids a box's processes accept as peers: the owner, then the embedder's extras.
fn peer_uids(config: &StrategyConfig) -> Vec<u32> {
    let mut v = vec![config.uid];
    v.extend(config.allowed_peer_uids.iter().copied().filter(|u| *u != config.uid));
    v
}

/// Remove every socket file left in a box's real socket directory. Only for a box that
/// has no process any more (just recorded `Stopped`): whatever is bound there is stale,
/// e.g. the `agent.sock` of an agent killed with SIGKILL. Only sockets are removed.
fn remove_stale_socket_files(layout: &BoxLayout, id: &BoxId) {
    let dir = layout.sockets_dir(id);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        use std::os::unix::fs::FileTypeExt;
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::debug!(box_id = %id, path = %e.path().display(), "removed a stale socket file"),
                Err(err) => tracing::debug!(box_id = %id, path = %e.path().display(), error = %err, "could not remove a stale socket file"),
            }
        }
    }
}

struct ReadyCleanup<'a> {
    strategy: &'a dyn SocketBinding,
    layout: &'a BoxLayout,
    id: &'a BoxId,
}

impl Drop for ReadyCleanup<'_> {
    fn drop(&mut self) {
        remove_ready_file(self.strategy, self.layout, self.id);
    }
}

/// Remove what a failed open of a new home made: the home (this open created it 0700
/// moments ago, so only this user can have written in it), then the ancestors it
/// created, each only if empty. Not while another process holds the home's lock: it
/// may have adopted the new home meanwhile.
fn undo_created_home(layout: &BoxLayout, created: &[PathBuf]) {
    let lock_path = layout.lock_path();
    let guard = match std::fs::symlink_metadata(&lock_path) {
        Ok(_) => match lock::try_exclusive(&lock_path) {
            Ok(Some(g)) => Some(g),
            _ => return,
        },
        Err(_) => None,
    };
    if created.last().is_some_and(|h| h == layout.home()) {
        if let Err(e) = std::fs::remove_dir_all(layout.home()) {
            tracing::warn!(home = %layout.home().display(), error = %e, "cannot remove the home this failed open created");
        }
    }
    drop(guard);
    for d in created.iter().rev() {
        match std::fs::remove_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %d.display(), error = %e, "cannot remove a directory this failed open created")
            }
            _ => {}
        }
    }
}

impl Runtime {
    /// Open the runtime over `home` (created 0700 if missing). See the module docs.
    ///
    /// The home is made absolute first (no symlink resolution), then checked
    /// ([`home`]): its ancestors, itself and `boxes/` on opened descriptors, and that it
    /// is a home (marker or store) or empty. With [`Access::ReadOnly`] nothing is
    /// created or changed. An open that fails removes the home it created.
    pub async fn open(home: impl Into<PathBuf>, options: RuntimeOptions) -> Result<(Runtime, OpenReport), RuntimeError> {
        let given: PathBuf = home.into();
        // Before anything checks: a relative home passed `direct`'s budget at create and
        // then failed every start.
        let home = std::path::absolute(&given).map_err(|e| RuntimeError::Io { op: "make absolute", path: given.clone(), source: e })?;
        let opened = home::open_home(&home, options.access == Access::ReadWrite)?;
        let created = opened.created;
        match Self::open_checked(home.clone(), opened.fd, options).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if !created.is_empty() {
                    undo_created_home(&BoxLayout::new(&home), &created);
                }
                Err(e)
            }
        }
    }

    async fn open_checked(home: PathBuf, home_fd: OwnedFd, options: RuntimeOptions) -> Result<(Runtime, OpenReport), RuntimeError> {
        let layout = BoxLayout::new(&home);
        let writable = options.access == Access::ReadWrite;
        let store_name = "boxsock.db";
        debug_assert_eq!(layout.store_path(), home.join(store_name));
        home::classify(home_fd.as_fd(), &home, store_name)?;
        let mut recovery_lock = None;
        let mut home_lock = None;
        if writable {
            home::write_marker(home_fd.as_fd(), &home)?;
            home::tighten_home(home_fd.as_fd(), &home);
            home::ensure_dir_at(home_fd.as_fd(), std::ffi::OsStr::new("boxes"), &layout.boxes_dir())?;
            let lock_path = layout.lock_path();
            match options.lock_mode {
                LockMode::Exclusive => home_lock = Some(lock::acquire(&home, &lock_path, true, options.lock_wait).await?),
                LockMode::Shared => {
                    // Wait for an exclusive holder like any operation would, then recover
                    // only if nobody is mid-operation right now.
                    drop(lock::acquire(&home, &lock_path, false, options.lock_wait).await?);
                    recovery_lock = lock::try_exclusive(&lock_path)?;
                }
            }
        } else {
            home::check_dir_at(home_fd.as_fd(), std::ffi::OsStr::new("boxes"), &layout.boxes_dir(), false)?;
            lock::wait_unlocked_read_only(&home, &layout.lock_path(), options.lock_wait).await?;
        }
        let store_dir = home_fd.try_clone().map_err(|e| RuntimeError::Io { op: "duplicate the descriptor of", path: home.clone(), source: e })?;
        let store = Store::open_at(store_dir, &layout.store_path(), if writable { StoreMode::ReadWrite } else { StoreMode::ReadOnly })?;
        let health = options.health_monitor && writable;
        let rt = Runtime {
            inner: Arc::new(Inner {
                layout,
                home_fd,
                options,
                store,
                strategies: Mutex::new(HashMap::new()),
                backends: Mutex::new(HashMap::new()),
                procs: Mutex::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
                _home_lock: home_lock,
            }),
        };
        let mut report = OpenReport::default();
        let may_recover = rt.inner._home_lock.is_some() || recovery_lock.is_some();
        if may_recover {
            report.swept = rt.inner.sweep_all();
            recovery::recover(&rt.inner, &mut report).await?;
        } else {
            report.recovery_skipped = true;
            if writable {
                tracing::debug!(home = %home.display(), "another process is mid-operation on this home; recovery skipped");
            }
        }
        drop(recovery_lock);
        if health {
            // Watch every box recorded as running (recovery confirmed they are alive).
            for rec in rt.inner.store.list()?.boxes {
                if rec.state == BoxState::Running {
                    if let Some(h) = rt.inner.handle_for(&rec) {
                        rt.inner.watch(&rec.id, h);
                    }
                }
            }
        }
        Ok((rt, report))
    }

    /// The home's layout.
    pub fn layout(&self) -> &BoxLayout {
        &self.inner.layout
    }

    /// The options it was opened with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    /// The store (read access for tools and tests).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The strategy registered as `name`, built with the runtime's configuration.
    pub fn strategy(&self, name: &str) -> Result<Arc<dyn SocketBinding>, RuntimeError> {
        self.inner.strategy(name)
    }

    /// The backend registered as `name`, built with the runtime's configuration.
    pub fn backend(&self, name: &str) -> Result<Arc<dyn Backend>, RuntimeError> {
        self.inner.backend(name)
    }

    /// Every box (good rows), plus corrupt rows reported by id.
    pub fn list(&self) -> Result<Listing, RuntimeError> {
        let mut listing = self.inner.store.list()?;
        if self.inner.options.access == Access::ReadOnly {
            for rec in &mut listing.boxes {
                self.inner.observe(rec);
            }
        }
        Ok(listing)
    }

    /// The box with this id or name.
    pub fn get(&self, id_or_name: &str) -> Result<BoxRecord, RuntimeError> {
        self.inner.record(id_or_name)
    }

    /// Create a box. Nothing is written unless every check passes; a failure after
    /// that undoes what was made.
    pub async fn create(&self, opts: CreateOptions) -> Result<BoxRecord, RuntimeError> {
        let inner = &self.inner;
        if let Some(name) = &opts.name {
            BoxId::parse(name).map_err(RuntimeError::InvalidName)?;
        }
        for (what, chosen) in [("strategy", &opts.strategy), ("backend", &opts.backend)] {
            if chosen.is_empty() {
                return Err(RuntimeError::Unchosen { what });
            }
        }
        let strategy = inner.strategy(&opts.strategy)?;
        let backend = inner.backend(&opts.backend)?;
        let mut opts = opts;
        opts.settings = create_options::canonical_settings(opts.settings)?;
        backend.check_settings(&opts.settings)?;
        let caps = strategy.capabilities();
        if !caps.supported_here() {
            return Err(BindingError::Unsupported {
                strategy: opts.strategy.clone(),
                what: format!("platform {}", Platform::current().name()),
                reason: format!("it supports {:?}", caps.platforms),
            }
            .into());
        }
        // Compatibility first: it does not depend on the machine, so it is the more
        // fundamental answer.
        compatibility(&*strategy, &*backend).map_err(|reason| RuntimeError::Incompatible {
            strategy: opts.strategy.clone(),
            backend: opts.backend.clone(),
            reason,
        })?;
        // The budget next: it depends only on the home, the strategy and the backend's
        // sockets, so a home too deep for this strategy is said first, whatever the
        // machine can run.
        let id = BoxId::generate();
        check_addresses(&*strategy, &inner.layout, &id, &socket_specs(&*backend, opts.network))?;
        if let Availability::Unavailable { reason } = backend.available_for_launch() {
            return Err(RuntimeError::BackendUnavailable { backend: opts.backend.clone(), reason });
        }
        if let Some(name) = &opts.name {
            if let Some((by, _)) = inner.store.resolve(name)? {
                return Err(crate::store::StoreError::NameTaken { name: name.clone(), by }.into());
            }
        }

        let _op = inner.op_lock().await?;
        let config = BoxConfig { strategy: opts.strategy, backend: opts.backend, network: opts.network, env: opts.env, settings: opts.settings };
        let rec = Store::new_record(id.clone(), opts.name, config);
        // Journal, then directory (marker first), then row: recovery deletes only a
        // directory both prove it made.
        home::journal_create(inner.home_fd.as_fd(), &inner.layout, &id)?;
        if let Err(e) = boxsock_core::boxdir::create_new_box_dir(&inner.layout, &id) {
            if e.source.kind() != std::io::ErrorKind::AlreadyExists || e.path != inner.layout.box_dir(&id) {
                let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
            }
            home::journal_done(&inner.layout, &id);
            return Err(RuntimeError::Io { op: "create box directory", path: e.path, source: e.source });
        }
        crash::point("create:dirs");
        if let Err(e) = inner.store.insert_owned(&rec, opts.auto_remove_owner) {
            let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
            home::journal_done(&inner.layout, &id);
            return Err(e.into());
        }
        home::journal_done(&inner.layout, &id);
        crash::point("create:row");
        let ensured = inner.ensure_binding(strategy.clone(), &id);
        let strategy = match &ensured {
            Ok(s) => s.clone(),
            Err(_) => strategy,
        };
        let prepared = ensured.map(drop).and_then(|()| backend.prepare(&inner.layout, &id).map_err(RuntimeError::from));
        if let Err(e) = prepared {
            let _ = strategy.release(&inner.layout, &id);
            let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
            let _ = inner.store.delete(id.as_str());
            return Err(e);
        }
        crash::point("create:ensured");
        tracing::debug!(box_id = %id, strategy = strategy.name(), backend = backend.name(), "created");
        Ok(rec)
    }

    /// Start a box (`Created` or `Stopped`) and wait for its agent's readiness.
    pub async fn start(&self, id_or_name: &str) -> Result<BoxRecord, RuntimeError> {
        let inner = &self.inner;
        let _op = inner.op_lock().await?;
        let rec = inner.record(id_or_name)?;
        inner.start_locked(rec).await
    }

    /// Run `argv` in a running box, streaming its output into `io`; returns its exit
    /// code (or 128 + signal).
    pub async fn exec(&self, id_or_name: &str, argv: Vec<String>, env: Vec<(String, String)>, io: ExecIo<'_>) -> Result<i32, RuntimeError> {
        let (rec, client, address) = self.inner.connect_agent(id_or_name).await?;
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        client
            .exec(&argv, &env, io.stdin, io.stdout, io.stderr)
            .await
            .map_err(|source| RuntimeError::Agent { id: rec.id, address, source })
    }

    /// Check that a running box's agent answers.
    pub async fn ping(&self, id_or_name: &str) -> Result<(), RuntimeError> {
        let (rec, client, address) = self.inner.connect_agent(id_or_name).await?;
        client.ping().await.map(drop).map_err(|source| RuntimeError::Agent { id: rec.id, address, source })
    }

    /// Stop a box: graceful, then SIGTERM, then SIGKILL, each bounded by `timeout`
    /// (default: the runtime's `stop_timeout`). A box without a process is returned as
    /// is.
    pub async fn stop(&self, id_or_name: &str, timeout: Option<Duration>) -> Result<BoxRecord, RuntimeError> {
        let inner = &self.inner;
        let _op = inner.op_lock().await?;
        let rec = inner.record(id_or_name)?;
        inner.stop_locked(rec, timeout.unwrap_or(inner.options.stop_timeout)).await
    }

    /// Remove a box: refuse a running one unless `force` (then stop it), release its
    /// binding, delete its directory and its row. With `force`, a corrupt row is
    /// removed too. Returns the id removed.
    pub async fn remove(&self, id_or_name: &str, force: bool) -> Result<String, RuntimeError> {
        let inner = &self.inner;
        let _op = inner.op_lock().await?;
        let (raw_id, rec) = inner.store.resolve(id_or_name)?.ok_or_else(|| RuntimeError::NotFound(id_or_name.to_owned()))?;
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) if !force => return Err(e.into()),
            Err(e) => {
                tracing::warn!(box_id = %raw_id, error = %e, "force-removing a corrupt box row");
                if let Ok(id) = BoxId::parse(&raw_id) {
                    inner.release_everywhere(&id);
                    let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
                }
                inner.store.delete(&raw_id)?;
                return Ok(raw_id);
            }
        };
        if rec.state.has_process() {
            let alive = inner.handle_for(&rec).is_some_and(|h| h.is_alive());
            if alive && !force {
                return Err(RuntimeError::StillRunning { id: rec.id, state: rec.state });
            }
            inner.stop_locked(rec.clone(), inner.options.stop_timeout).await?;
        }
        inner.stop_companions(&rec.id, &[]).await;
        inner.purge(&rec.id, &rec.config.strategy, force)?;
        Ok(raw_id)
    }

    /// Everything about one box, with every socket's live address, length and limit.
    pub fn inspect(&self, id_or_name: &str) -> Result<BoxInfo, RuntimeError> {
        let mut rec = self.inner.record(id_or_name)?;
        self.inner.observe(&mut rec);
        Ok(info::inspect(&self.inner, rec))
    }

    /// Run every strategy's sweep now. In [`LockMode::Shared`] this waits (up to
    /// `lock_wait`) for exclusive use of the home.
    pub async fn sweep(&self) -> Result<Vec<(String, Result<boxsock_core::binding::SweepReport, String>)>, RuntimeError> {
        let inner = &self.inner;
        inner.writable("sweep")?;
        let _g = match inner.options.lock_mode {
            LockMode::Exclusive => None,
            LockMode::Shared => Some(lock::acquire(inner.layout.home(), &inner.layout.lock_path(), true, inner.options.lock_wait).await?),
        };
        Ok(inner.sweep_all())
    }

    /// Stop and remove every box whose auto-remove owner
    /// ([`CreateOptions::auto_remove_owner`]) is gone, now. In [`LockMode::Shared`]
    /// this waits (up to `lock_wait`) for exclusive use of the home. Returns the ids
    /// removed.
    pub async fn remove_abandoned(&self) -> Result<Vec<BoxId>, RuntimeError> {
        let inner = &self.inner;
        let _g = match inner.options.lock_mode {
            LockMode::Exclusive => None,
            LockMode::Shared => Some(lock::acquire(inner.layout.home(), &inner.layout.lock_path(), true, inner.options.lock_wait).await?),
        };
        recovery::remove_abandoned(inner).await
    }

    /// The process handle the runtime holds for a box (what it watches and signals).
    pub fn process(&self, id_or_name: &str) -> Result<Option<Arc<ProcessHandle>>, RuntimeError> {
        let rec = self.inner.record(id_or_name)?;
        Ok(self.inner.handle_for(&rec))
    }

    /// Close the runtime: stop watching (boxes keep running) and release the home.
    pub fn close(self) {
        drop(self);
    }
}

impl Inner {
    fn strategy(&self, name: &str) -> Result<Arc<dyn SocketBinding>, RuntimeError> {
        if let Some(s) = lock(&self.strategies).get(name) {
            return Ok(s.clone());
        }
        let s = self.options.strategies.build(name, &self.strategy_config()).map_err(build_err)?;
        lock(&self.strategies).insert(name.to_owned(), s.clone());
        Ok(s)
    }

    /// The configuration strategies are built from: the embedder's, with the home's
    /// recorded fallback binding directory when the default one was squatted.
    fn strategy_config(&self) -> StrategyConfig {
        let mut c = self.options.strategy_config.clone();
        if c.binding_dir.is_none() {
            c.binding_dir = squat::recorded(&self.layout, &c);
        }
        if self.options.access == Access::ReadOnly {
            c.read_only = true;
        }
        c
    }

    /// `strategy.ensure`, falling back to a private, unpredictable binding directory
    /// when the default per-user directory is squatted by another user (see [`squat`]).
    /// Returns the strategy to use from here on (rebuilt after a fallback).
    fn ensure_binding(&self, strategy: Arc<dyn SocketBinding>, id: &BoxId) -> Result<Arc<dyn SocketBinding>, RuntimeError> {
        let err = match strategy.ensure(&self.layout, id) {
            Ok(()) => return Ok(strategy),
            Err(e) => e,
        };
        let config = self.strategy_config();
        let squatter = if config.binding_dir.is_none() && squat::is_squat_refusal(&err, &config) { squat::squatter(&config) } else { None };
        let Some(uid) = squatter else {
            return Err(err.into());
        };
        squat::fall_back(&self.layout, &config, uid)?;
        lock(&self.strategies).clear();
        let rebuilt = self.strategy(strategy.name())?;
        rebuilt.ensure(&self.layout, id)?;
        Ok(rebuilt)
    }

    fn backend(&self, name: &str) -> Result<Arc<dyn Backend>, RuntimeError> {
        if let Some(b) = lock(&self.backends).get(name) {
            return Ok(b.clone());
        }
        let b = self.options.backends.build(name, &self.options.backend_config).map_err(build_err)?;
        lock(&self.backends).insert(name.to_owned(), b.clone());
        Ok(b)
    }

    fn record(&self, id_or_name: &str) -> Result<BoxRecord, RuntimeError> {
        match self.store.resolve(id_or_name)? {
            None => Err(RuntimeError::NotFound(id_or_name.to_owned())),
            Some((_, r)) => r.map_err(RuntimeError::Store),
        }
    }

    /// Refuse a change in a read-only runtime.
    fn writable(&self, op: &'static str) -> Result<(), RuntimeError> {
        match self.options.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(RuntimeError::ReadOnly { home: self.layout.home().to_path_buf(), op }),
        }
    }

    async fn op_lock(&self) -> Result<Option<LockGuard>, RuntimeError> {
        self.writable("create, start, stop or remove boxes")?;
        match self.options.lock_mode {
            LockMode::Exclusive => Ok(None),
            LockMode::Shared => {
                Ok(Some(lock::acquire(self.layout.home(), &self.layout.lock_path(), false, self.options.lock_wait).await?))
            }
        }
    }

    fn sweep_all(&self) -> Vec<(String, Result<boxsock_core::binding::SweepReport, String>)> {
        let mut out = Vec::new();
        for reg in self.options.strategies.iter() {
            let r = self.strategy(reg.name).map_err(|e| e.to_string()).and_then(|s| {
                if !s.capabilities().supported_here() {
                    return Ok(Default::default());
                }
                s.sweep(&self.layout).map_err(|e| e.to_string())
            });
            match &r {
                Ok(rep) if !rep.removed.is_empty() => {
                    tracing::info!(strategy = reg.name, removed = rep.removed.len(), "swept leftover bindings")
                }
                Err(e) => tracing::warn!(strategy = reg.name, error = %e, "sweep failed"),
                _ => {}
            }
            out.push((reg.name.to_owned(), r));
        }
        out
    }

    /// Release a box's binding with every strategy (when its own is unknown).
    fn release_everywhere(&self, id: &BoxId) {
        for reg in self.options.strategies.iter() {
            if let Ok(s) = self.strategy(reg.name) {
                if let Err(e) = s.release(&self.layout, id) {
                    tracing::warn!(box_id = %id, strategy = reg.name, error = %e, "release failed");
                }
            }
        }
    }

    /// The handle on a box's recorded process: the one this runtime holds, or a new one
    /// from the recorded identity.
    /// For a read-only runtime, which records nothing: show a box whose recorded
    /// process is gone as what the next writing open will record, `Stopped` with its
    /// exit code where the kernel still has it. The store is not touched.
    fn observe(&self, rec: &mut BoxRecord) {
        if self.options.access != Access::ReadOnly || !rec.state.has_process() {
            return;
        }
        let handle = self.handle_for(rec);
        if handle.as_ref().is_some_and(|h| h.is_alive()) {
            return;
        }
        tracing::debug!(box_id = %rec.id, recorded = %rec.state, "recorded process is gone; shown as stopped (recorded at the next writing command)");
        rec.state = BoxState::Stopped;
        if let Some(code) = handle.and_then(|h| h.exit_code()) {
            rec.exit_code = Some(code);
        }
        rec.process = None;
    }

    fn handle_for(&self, rec: &BoxRecord) -> Option<Arc<ProcessHandle>> {
        let ident = rec.process?;
        let mut procs = lock(&self.procs);
        if let Some(h) = procs.get(&rec.id) {
            if h.identity() == ident {
                return Some(h.clone());
            }
        }
        let h = Arc::new(ProcessHandle::open_group_leader(ident));
        procs.insert(rec.id.clone(), h.clone());
        Some(h)
    }

    fn forget_process(&self, id: &BoxId) {
        lock(&self.procs).remove(id);
        if let Some(w) = lock(&self.watchers).remove(id) {
            w.abort();
        }
    }

    /// Stop a box's companions: the recorded ones and `extra` (known to a start that
    /// could not record them). SIGTERM to each (and its process group: companions run
    /// in their own session), then SIGKILL; each is waited for (and reaped when it is
    /// our child). The record is cleared afterwards. Never signals a process whose
    /// start time differs from the recorded one.
    async fn stop_companions(&self, id: &BoxId, extra: &[ProcessIdentity]) {
        let mut all = self.store.companions(id.as_str()).unwrap_or_else(|e| {
            tracing::warn!(box_id = %id, error = %e, "cannot read the recorded companions");
            Vec::new()
        });
        for e in extra {
            if !all.contains(e) {
                all.push(*e);
            }
        }
        if all.is_empty() {
            return;
        }
        for ident in &all {
            let h = ProcessHandle::open_group_leader(*ident);
            if h.is_alive() {
                for (sig, wait) in [(Signal::SIGTERM, COMPANION_TERM_WAIT), (Signal::SIGKILL, KILL_WAIT)] {
                    let _ = h.signal_group(sig);
                    let _ = h.signal(sig);
                    if h.wait_gone(wait).await {
                        break;
                    }
                }
            }
            if h.is_alive() {
                tracing::error!(box_id = %id, pid = ident.pid, "companion process survived SIGKILL");
            } else {
                tracing::debug!(box_id = %id, pid = ident.pid, exit_code = ?h.exit_code(), "companion stopped");
            }
        }
        match self.store.set_companions(id, &[]) {
            Ok(()) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(box_id = %id, error = %e, "cannot clear the recorded companions"),
        }
    }

    /// [`Inner::stop_companions`] for synchronous callers (the box process just died):
    /// SIGKILL at once, then reap what is our child for a short while.
    fn kill_companions_now(&self, id: &BoxId) {
        let Ok(all) = self.store.companions(id.as_str()) else { return };
        if all.is_empty() {
            return;
        }
        for ident in &all {
            let h = ProcessHandle::open_group_leader(*ident);
            let _ = h.signal_group(Signal::SIGKILL);
            let _ = h.signal(Signal::SIGKILL);
            let deadline = std::time::Instant::now() + Duration::from_millis(200);
            while h.is_alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            tracing::debug!(box_id = %id, pid = ident.pid, alive = h.is_alive(), "companion killed with its box");
        }
        let _ = self.store.set_companions(id, &[]);
    }

    /// Watch a running box's process; on exit, Running → Unhealthy → Stopped.
    fn watch(self: &Arc<Self>, id: &BoxId, handle: Arc<ProcessHandle>) {
        if !self.options.health_monitor {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(self);
        let box_id = id.clone();
        let task = tokio::spawn(async move {
            handle.wait_exit().await;
            if let Some(inner) = weak.upgrade() {
                inner.on_exit(&box_id, &handle);
            }
        });
        if let Some(old) = lock(&self.watchers).insert(id.clone(), task.abort_handle()) {
            old.abort();
        }
    }

    fn on_exit(&self, id: &BoxId, handle: &ProcessHandle) {
        let exit = handle.exit_code();
        // Only a box that is supposed to be running is unhealthy; a stop or a failed
        // start in progress handles its own process.
        if self.store.transition(id, Some(&[BoxState::Running]), BoxState::Unhealthy, |r| r.exit_code = exit).is_err() {
            return;
        }
        tracing::warn!(box_id = %id, pid = handle.identity().pid, exit_code = ?exit, "box process died");
        self.kill_companions_now(id);
        let _ = self.store.transition(id, Some(&[BoxState::Unhealthy]), BoxState::Stopped, |r| r.process = None);
        if let Ok(rec) = self.record(id.as_str()) {
            if let Ok(s) = self.strategy(&rec.config.strategy) {
                remove_ready_file(&*s, &self.layout, id);
            }
        }
        remove_stale_socket_files(&self.layout, id);
        lock(&self.procs).remove(id);
        lock(&self.watchers).remove(id);
    }

    async fn start_locked(self: &Arc<Self>, rec: BoxRecord) -> Result<BoxRecord, RuntimeError> {
        let id = rec.id.clone();
        // Not only at create: somebody may have changed them since.
        home::check_box_dirs(self.home_fd.as_fd(), &self.layout, &id)?;
        let strategy = self.strategy(&rec.config.strategy)?;
        let backend = self.backend(&rec.config.backend)?;
        if let Availability::Unavailable { reason } = backend.available_for_launch() {
            return Err(RuntimeError::BackendUnavailable { backend: rec.config.backend.clone(), reason });
        }
        // Before the addresses are derived: a squatted binding directory changes them.
        let strategy = self.ensure_binding(strategy, &id)?;
        let specs = socket_specs(&*backend, rec.config.network);
        // Fail fast, before the state changes; the addresses used are derived again
        // below, after `prepare_start` (a strategy may rotate them per start).
        check_addresses(&*strategy, &self.layout, &id, &specs)?;
        self.store
            .transition(&id, Some(&[BoxState::Created, BoxState::Stopped]), BoxState::Starting, |r| {
                r.process = None;
                r.exit_code = None;
            })
            .map_err(RuntimeError::from_store)?;
        crash::point("start:starting");
        let mut launched: Option<Arc<ProcessHandle>> = None;
        let mut companions: Vec<ProcessIdentity> = Vec::new();
        let result = match strategy
            .prepare_start(&self.layout, &id)
            .and_then(|()| check_addresses(&*strategy, &self.layout, &id, &specs))
        {
            Ok(addresses) => self.launch_and_wait(&rec, &*strategy, &*backend, addresses, &mut launched, &mut companions).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                crash::point("start:ready");
                let rec = self
                    .store
                    .transition(&id, Some(&[BoxState::Starting]), BoxState::Running, |_| {})
                    .map_err(RuntimeError::from_store);
                match rec {
                    Ok(rec) => {
                        crash::point("start:running");
                        if let Some(h) = launched {
                            self.watch(&id, h);
                        }
                        tracing::debug!(box_id = %id, pid = ?rec.process.map(|p| p.pid), "running");
                        Ok(rec)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                tracing::warn!(box_id = %id, error = %e, "start failed; stopping the box");
                if let Some(h) = &launched {
                    let _ = h.signal_group(Signal::SIGKILL);
                    let _ = h.signal(Signal::SIGKILL);
                    if !h.wait_gone(KILL_WAIT).await {
                        tracing::error!(box_id = %id, pid = h.identity().pid, "box process survived SIGKILL");
                    }
                }
                self.stop_companions(&id, &companions).await;
                let exit = launched.as_ref().and_then(|h| h.exit_code());
                let _ = self.store.transition(&id, Some(&[BoxState::Starting]), BoxState::Stopped, |r| {
                    r.process = None;
                    r.exit_code = exit;
                });
                lock(&self.procs).remove(&id);
                Err(e)
            }
        }
    }

    async fn launch_and_wait(
        &self,
        rec: &BoxRecord,
        strategy: &dyn SocketBinding,
        backend: &dyn Backend,
        addresses: BTreeMap<String, SocketAddress>,
        launched_out: &mut Option<Arc<ProcessHandle>>,
        companions_out: &mut Vec<ProcessIdentity>,
    ) -> Result<(), RuntimeError> {
        let id = &rec.id;
        let layout = &self.layout;
        strategy.ensure(layout, id)?;
        let ready_file = catalogue::READY.file_name();
        // One verified directory for the whole start: the runtime binds `ready` through
        // it and the backend hands it to the box's processes.
        let socket_dir = verified_dir(strategy, layout, id, &ready_file)?;
        let bound = match &socket_dir {
            Some(d) => d.bind_stream(&ready_file, strategy.peer_policy())?,
            None => strategy.bind_stream(layout, id, &ready_file)?,
        };
        let listener = bound
            .into_tokio()
            .map_err(|e| RuntimeError::Io { op: "register ready listener", path: layout.sockets_dir(id), source: e })?;
        let _cleanup = ReadyCleanup { strategy, layout, id };
        let mut addresses = addresses;
        if addresses.get(catalogue::READY.name).is_some_and(|a| a != listener.address()) {
            // The strategy rotated the box's names while binding (a squatted name):
            // hand the backend the names derived now.
            tracing::debug!(box_id = %id, ready = %listener.address(), "addresses changed while binding ready; deriving them again");
            for (name, addr) in addresses.iter_mut() {
                *addr = strategy.address(layout, id, &format!("{name}.sock"))?;
            }
        }
        crash::point("start:bound");
        let ready_addr = listener.address().display_string();
        let spec = LaunchSpec {
            id: id.clone(),
            layout: layout.clone(),
            addresses,
            log_file: layout.log_file(id),
            network: rec.config.network,
            policy: strategy.policy_paths(layout, id)?,
            env: rec.config.env.clone(),
            socket_dir,
            peer_uids: peer_uids(&self.options.strategy_config),
            settings: rec.config.settings.clone(),
        };
        let launched = backend.launch(&spec)?;
        // Companions first: whatever happens to the box process below, the failure path
        // of `start` knows them.
        let mut companion_gone_at_launch = None;
        for &pid in &launched.companions {
            match ProcessIdentity::of(pid) {
                Ok(ident) => companions_out.push(ident),
                Err(e) => {
                    tracing::warn!(box_id = %id, pid, error = %e, "companion already gone at launch");
                    companion_gone_at_launch.get_or_insert(pid);
                }
            }
        }
        let log_tail = || tail_lines(&layout.log_file(id), LOG_TAIL_LINES);
        let companion_exited = |pid: i32, exit_code: Option<i32>| RuntimeError::CompanionExited {
            id: id.clone(),
            pid,
            exit_code,
            logs: companion_logs(&layout.log_file(id)),
            log_tail: log_tail(),
        };
        if let Some(pid) = companion_gone_at_launch {
            return Err(companion_exited(pid, None));
        }
        // A companion (passt…) that dies before the box is ready fails the start at once:
        // the VMM cannot come up without it, and would otherwise be waited on in vain.
        let companion_handles: Vec<ProcessHandle> = companions_out.iter().map(|c| ProcessHandle::open(*c)).collect();
        let ident = match ProcessIdentity::of(launched.pid) {
            Ok(i) => i,
            Err(_) => {
                return Err(RuntimeError::ExitedBeforeReady {
                    id: id.clone(),
                    pid: launched.pid,
                    exit_code: None,
                    address: ready_addr,
                    log_tail: log_tail(),
                });
            }
        };
        let handle = Arc::new(ProcessHandle::open_group_leader(ident));
        *launched_out = Some(handle.clone());
        lock(&self.procs).insert(id.clone(), handle.clone());
        // Recorded once both are known to the failure path, so a store error here
        // still kills them; recovery finds them after a crash from here on.
        if !companions_out.is_empty() {
            self.store.set_companions(id, companions_out)?;
            tracing::debug!(box_id = %id, companions = ?companions_out, "companions recorded");
        }
        self.store.set_process(id, Some(ident))?;
        crash::point("start:launched");
        tracing::debug!(box_id = %id, pid = ident.pid, ready = %ready_addr, "launched; waiting for readiness");

        let timeout = self.options.ready_timeout;
        // A connection that closes without a frame (a stale-socket probe, a stray
        // client of the same uid) is not the agent: keep waiting for the real one.
        let ready = async {
            loop {
                let (mut s, cred) = listener.accept().await?;
                // Only the box's own process may say it is ready (the agent; for a VM,
                // the VMM relaying the guest), not another process of an allowed uid.
                if let Some(c) = cred.filter(|c| c.pid != ident.pid) {
                    tracing::warn!(box_id = %id, peer_pid = c.pid, peer_uid = c.uid, expected_pid = ident.pid, "ready connection from a process that is not the box's; ignored");
                    continue;
                }
                match agent_client::read_ready(&mut s).await {
                    Err(agent_client::ClientError::Proto(boxsock_core::proto::ProtoError::Closed)) => {
                        tracing::debug!(box_id = %id, "empty connection on the ready socket; still waiting");
                    }
                    other => break other,
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, ready) => match r {
                Err(_) => Err(RuntimeError::ReadyTimeout {
                    id: id.clone(),
                    waited_for: format!("agent readiness on {ready_addr}"),
                    after: timeout,
                    log_tail: log_tail(),
                }),
                Ok(Ok(info)) => {
                    tracing::debug!(box_id = %id, agent_pid = info.pid, version = info.version, "agent ready");
                    Ok(())
                }
                Ok(Err(e)) => Err(RuntimeError::Agent { id: id.clone(), address: ready_addr, source: e }),
            },
            _ = handle.wait_exit() => Err(RuntimeError::ExitedBeforeReady {
                id: id.clone(),
                pid: ident.pid,
                exit_code: handle.exit_code(),
                address: ready_addr,
                log_tail: log_tail(),
            }),
            i = first_exit(&companion_handles) => {
                let h = &companion_handles[i];
                Err(companion_exited(h.identity().pid, h.exit_code()))
            }
        }
    }

    async fn connect_agent(&self, id_or_name: &str) -> Result<(BoxRecord, AgentClient, String), RuntimeError> {
        self.writable("dial a box")?;
        let rec = self.record(id_or_name)?;
        if rec.state != BoxState::Running {
            return Err(RuntimeError::NotRunning { id: rec.id, state: rec.state });
        }
        home::check_box_dirs(self.home_fd.as_fd(), &self.layout, &rec.id)?;
        match self.dial_agent(&rec) {
            Ok((client, address)) => Ok((rec, client, address)),
            Err(e) => {
                // A refused connection to a box recorded as running whose process is
                // gone (no health monitor was watching): record the truth and say so.
                if let Some(h) = self.handle_for(&rec) {
                    if !h.is_alive() {
                        self.on_exit(&rec.id, &h);
                        let state = self.record(rec.id.as_str()).map(|r| r.state).unwrap_or(BoxState::Stopped);
                        return Err(RuntimeError::NotRunning { id: rec.id, state });
                    }
                }
                Err(e)
            }
        }
    }

    /// Dial a box's agent through its strategy, whatever its recorded state. Runs
    /// `ensure` first: a binding removed behind our back (a /tmp cleaner) heals here.
    fn dial_agent(&self, rec: &BoxRecord) -> Result<(AgentClient, String), RuntimeError> {
        let strategy = self.ensure_binding(self.strategy(&rec.config.strategy)?, &rec.id)?;
        let file = catalogue::AGENT.file_name();
        let addr = strategy.address(&self.layout, &rec.id, &file)?;
        let address = addr.display_string();
        // The listener must be the box's recorded process (the agent, or the VMM that
        // maps the agent's vsock port), of an allowed uid.
        let policy = match rec.process {
            Some(p) => strategy.peer_policy().with_pid(p.pid),
            None => strategy.peer_policy(),
        };
        let std = match verified_dir(&*strategy, &self.layout, &rec.id, &file)? {
            Some(dir) => dir.connect_stream(&file, &policy)?,
            None => boxsock_core::peer::connect_stream_at(&addr, &file, &policy)?,
        };
        let client = AgentClient::connect(std)
            .map_err(|source| RuntimeError::Agent { id: rec.id.clone(), address: address.clone(), source })?;
        Ok((client, address))
    }

    async fn stop_locked(self: &Arc<Self>, rec: BoxRecord, timeout: Duration) -> Result<BoxRecord, RuntimeError> {
        let id = rec.id.clone();
        if !rec.state.has_process() {
            // Companions left by an interrupted cleanup go now.
            self.stop_companions(&id, &[]).await;
            return Ok(rec);
        }
        let was = rec.state;
        if was != BoxState::Stopping {
            self.store
                .transition(&id, Some(&[BoxState::Starting, BoxState::Running, BoxState::Unhealthy]), BoxState::Stopping, |_| {})
                .map_err(RuntimeError::from_store)?;
        }
        crash::point("stop:stopping");
        if let Some(w) = lock(&self.watchers).remove(&id) {
            w.abort();
        }
        let handle = self.handle_for(&rec);
        if let Some(h) = &handle {
            self.terminate(&rec, h, was == BoxState::Running, timeout).await?;
        }
        self.stop_companions(&id, &[]).await;
        crash::point("stop:terminated");
        let exit = handle.as_ref().and_then(|h| h.exit_code());
        let rec = self
            .store
            .transition(&id, Some(&[BoxState::Stopping]), BoxState::Stopped, |r| {
                r.process = None;
                if exit.is_some() {
                    r.exit_code = exit;
                }
            })
            .map_err(RuntimeError::from_store)?;
        crash::point("stop:stopped");
        if let Ok(s) = self.strategy(&rec.config.strategy) {
            remove_ready_file(&*s, &self.layout, &id);
        }
        remove_stale_socket_files(&self.layout, &id);
        lock(&self.procs).remove(&id);
        tracing::debug!(box_id = %id, exit_code = ?exit, "stopped");
        Ok(rec)
    }

    /// Make the process gone: graceful shutdown (if `graceful`), SIGTERM, SIGKILL.
    async fn terminate(&self, rec: &BoxRecord, h: &ProcessHandle, graceful: bool, timeout: Duration) -> Result<(), RuntimeError> {
        let id = &rec.id;
        if !h.is_alive() {
            return Ok(());
        }
        if graceful {
            let asked = async {
                let (client, address) = self.dial_agent(rec)?;
                client.shutdown().await.map_err(|source| RuntimeError::Agent { id: id.clone(), address, source })
            };
            match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(())) => {
                    if h.wait_gone(timeout).await {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => tracing::debug!(box_id = %id, error = %e, "graceful shutdown failed"),
                Err(_) => tracing::debug!(box_id = %id, "graceful shutdown timed out"),
            }
        }
        for (sig, wait) in [(Signal::SIGTERM, timeout), (Signal::SIGKILL, KILL_WAIT)] {
            let _ = h.signal_group(sig);
            let _ = h.signal(sig);
            if h.wait_gone(wait).await {
                return Ok(());
            }
            tracing::debug!(box_id = %id, pid = h.identity().pid, signal = %sig, "still alive");
        }
        Err(RuntimeError::StopFailed { id: id.clone(), pid: h.identity().pid, waited: KILL_WAIT })
    }

    /// Release the binding, delete the directory, delete the row — in that order.
    fn purge(&self, id: &BoxId, strategy: &str, force: bool) -> Result<(), RuntimeError> {
        self.forget_process(id);
        match self.strategy(strategy) {
            Ok(s) => {
                if let Err(e) = s.release(&self.layout, id) {
                    if !force {
                        return Err(e.into());
                    }
                    tracing::warn!(box_id = %id, error = %e, "release failed; removing anyway (force)");
                }
            }
            Err(e) => {
                tracing::warn!(box_id = %id, strategy, error = %e, "strategy unavailable; releasing with every strategy");
                self.release_everywhere(id);
            }
        }
        crash::point("remove:released");
        boxsock_core::boxdir::remove_box_dir(&self.layout, id)
            .map_err(|e| RuntimeError::Io { op: "remove box directory", path: self.layout.box_dir(id), source: e })?;
        crash::point("remove:dir-removed");
        self.store.delete(id.as_str())?;
        crash::point("remove:row-deleted");
        tracing::debug!(box_id = %id, "removed");
        Ok(())
    }
}

fn build_err(e: BuildError) -> RuntimeError {
    match e {
        BuildError::Registry(r) => RuntimeError::Registry(r),
        BuildError::Strategy(b) => RuntimeError::Binding(b),
        BuildError::Backend(b) => RuntimeError::Backend(b),
    }
}
