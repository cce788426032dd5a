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

// First: on a platform other than Linux the build stops here (docs/platforms.md).
mod sys;

pub mod agent_client;
mod cleanup;
mod companions;
mod crash;
mod create_options;
mod dial;
mod error;
pub mod exec;
pub mod home;
mod info;
mod kill;
mod lifeline;
mod lock;
mod monitor;
mod options;
pub mod process;
mod recovery;
mod sockets;
pub mod squat;
mod start;
pub mod state;
mod stop;
pub mod store;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

pub use crate::agent_client::ClientError;
pub use crash::{CRASH_ENV, CRASH_STEPS};
pub use create_options::{CreateOptions, CreateOptionsBuilder};
pub use error::RuntimeError;
pub use exec::{Child, Command, ExitStatus, Output, SpawnErrorKind};
pub use info::{
    BackendReport, BoxInfo, CompanionInfo, DoctorReport, PairingError, SocketReport,
    StrategyReport, doctor,
};
pub use lifeline::OwnedRemoval;
pub use lock::{LockGuard, LockMode};
pub use options::{Access, ExecIo, RuntimeOptions};
pub use recovery::{OpenReport, Recovered, SweepError};
pub use sockets::{Incompatibility, check_addresses, compatibility, socket_specs};
pub use store::BoxProcess;

use crate::process::ProcessHandle;
use crate::state::BoxState;
use crate::store::{BoxConfig, BoxRecord, Listing, Store, StoreMode};
use boxsock_core::backend::{Availability, Backend};
use boxsock_core::binding::{SocketBinding, StrategyConfig};
use boxsock_core::boxbinding::{BoxBinding, Opening};
use boxsock_core::budget::Platform;
use boxsock_core::catalogue::Socket;
use boxsock_core::error::BindingError;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;
use boxsock_core::registry::BuildError;

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
    /// The opened binding of each running box this runtime started or dialled, with
    /// the pid of the process it was held for: dials go through it (decision 0014).
    bindings: Mutex<HashMap<BoxId, HeldBinding>>,
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

/// A box's binding and the pid of the process it is held for.
type HeldBinding = (Option<i32>, Arc<dyn BoxBinding>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
impl Runtime {
    /// Open the runtime over `home` (created 0700 if missing). See the module docs.
    ///
    /// The home is made absolute first (no symlink resolution), then checked
    /// ([`home`]): its ancestors, itself and `boxes/` on opened descriptors, and that it
    /// is a home (marker or store) or empty. With [`Access::ReadOnly`] nothing is
    /// created or changed.
    ///
    /// Any number of processes may open (create, upgrade) one home at once: a home
    /// without its marker is made under its initialisation lock ([`home::InitLock`]),
    /// so exactly one process makes it and the others wait for it (milliseconds). The
    /// first open of a new home that fails removes the home it made.
    pub async fn open(
        home: impl Into<PathBuf>,
        options: RuntimeOptions,
    ) -> Result<(Runtime, OpenReport), RuntimeError> {
        let given: PathBuf = home.into();
        // Before anything checks: a relative home passed `direct`'s budget at create and
        // then failed every start.
        let home = std::path::absolute(&given).map_err(|e| RuntimeError::Io {
            op: "make absolute",
            path: given.clone(),
            source: e,
        })?;
        let writable = options.access == Access::ReadWrite;
        let wait = options.lock_wait.unwrap_or_default().max(home::INIT_WAIT);
        let (opened, mut init) = loop {
            let opened = home::open_home(&home, writable)?;
            // Exclusive only to make a home: one with its marker is only waited for.
            let exclusive = writable && !home::has_marker(opened.fd.as_fd());
            if let Some(init) = home::init_lock(opened.fd.as_fd(), &home, exclusive, wait).await? {
                break (opened, init);
            }
        };
        let created = opened.created;
        let mut made = false;
        match Self::open_checked(home.clone(), opened.fd, options, &mut init, &mut made).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // Only the open that made the home, still holding it exclusively (nobody
                // else has used it), removes it; and only if it created the directory.
                if made && init.held() && created.last().is_some_and(|h| *h == home) {
                    cleanup::undo_created_home(&home, &created);
                }
                Err(e)
            }
        }
    }

    async fn open_checked(
        home: PathBuf,
        home_fd: OwnedFd,
        options: RuntimeOptions,
        init: &mut home::InitLock,
        made: &mut bool,
    ) -> Result<(Runtime, OpenReport), RuntimeError> {
        let layout = BoxLayout::new(&home);
        let writable = options.access == Access::ReadWrite;
        let store_name = "boxsock.db";
        debug_assert_eq!(layout.store_path(), home.join(store_name));
        let kind = home::classify(home_fd.as_fd(), &home, store_name)?;
        if writable && !(init.exclusive && kind == home::HomeKind::Empty) {
            // A home already (or another process's first open finished making it): the
            // rest is idempotent, and holding the lock would only delay other opens.
            init.release();
        }
        *made = writable && init.held();
        let mut recovery_lock = None;
        let mut home_lock = None;
        if writable {
            // The marker first: whatever else of the home another process sees, it
            // sees the marker too (`home::classify`).
            home::write_marker(home_fd.as_fd(), &home)?;
            home::tighten_home(home_fd.as_fd(), &home);
            home::ensure_dir_at(
                home_fd.as_fd(),
                std::ffi::OsStr::new("boxes"),
                &layout.boxes_dir(),
            )?;
            let lock_path = layout.lock_path();
            match options.lock_mode {
                LockMode::Exclusive => {
                    home_lock =
                        Some(lock::acquire(&home, &lock_path, true, options.lock_wait).await?)
                }
                LockMode::Shared => {
                    // Wait for an exclusive holder like any operation would, then recover
                    // only if nobody is mid-operation right now.
                    drop(lock::acquire(&home, &lock_path, false, options.lock_wait).await?);
                    recovery_lock = lock::try_exclusive(&lock_path)?;
                }
            }
        } else {
            home::check_dir_at(
                home_fd.as_fd(),
                std::ffi::OsStr::new("boxes"),
                &layout.boxes_dir(),
                false,
            )?;
            // No home lock and no wait for a runtime: a read-only open changes nothing,
            // and reading the WAL-mode store beside a writer (even an exclusive runtime)
            // is safe (decision 0003). Only a first open still making the home is
            // waited for: the shared initialisation lock, held until the store is open.
        }
        let store_dir = home_fd.try_clone().map_err(|e| RuntimeError::Io {
            op: "duplicate the descriptor of",
            path: home.clone(),
            source: e,
        })?;
        let store = Store::open_at(
            store_dir,
            &layout.store_path(),
            if writable { StoreMode::ReadWrite } else { StoreMode::ReadOnly },
        )?;
        if !writable {
            init.release();
        }
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
                bindings: Mutex::new(HashMap::new()),
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
                tracing::debug!(home = %boxsock_core::echo::path(&home), "another process is mid-operation on this home; recovery skipped");
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

    /// The home's image store (`<home>/images`), its records in this home's SQLite
    /// store (decision 0019): `rmi` is refused while a box is pinned to the image, and
    /// `prune` keeps what boxes are pinned to. Records an `images.json` there held are
    /// moved in at the first open.
    ///
    /// A read-only runtime ([`Access::ReadOnly`]) opens it for reading only
    /// ([`boxsock_image::ImageStore::open_read_only`]): nothing is created, swept or
    /// moved, as for every read-only verb.
    pub fn images(&self) -> Result<boxsock_image::ImageStore, RuntimeError> {
        let records = Arc::new(store::HomeRecords::of_runtime(self.clone()));
        let dir = self.inner.layout.home().join("images");
        if self.inner.options.access == Access::ReadOnly {
            return Ok(boxsock_image::ImageStore::open_read_only(dir, records));
        }
        Ok(boxsock_image::ImageStore::open_with_records(dir, records)?)
    }

    /// Every box (good rows), plus corrupt rows reported by id.
    ///
    /// Also lets go of the bindings held for boxes that another process stopped or
    /// removed meanwhile (no row, or a row whose process is not the one the binding was
    /// held for): a long-lived runtime that lists holds nothing for dead boxes.
    pub fn list(&self) -> Result<Listing, RuntimeError> {
        let mut listing = self.inner.store.list()?;
        if self.inner.options.access == Access::ReadOnly {
            for rec in &mut listing.boxes {
                self.inner.observe(rec);
            }
        }
        let live: HashMap<&BoxId, Option<i32>> =
            listing.boxes.iter().map(|r| (&r.id, r.process.map(|p| p.pid))).collect();
        lock(&self.inner.bindings).retain(|id, (pid, _)| live.get(id) == Some(pid));
        Ok(listing)
    }

    /// How many box bindings this runtime holds (decision 0014), for tests and
    /// `doctor`-style reports.
    pub fn held_bindings(&self) -> usize {
        lock(&self.inner.bindings).len()
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
        // A box that joins a network namespace (an engine's) has no network of its own:
        // neither `network` nor published ports, which would turn one on below.
        if let Some(ns) = &opts.settings.network_namespace {
            let own = if opts.network {
                Some("a network of its own (network) was asked for too")
            } else if !opts.settings.ports.is_empty() {
                Some("ports are published, which needs a network of the box's own")
            } else {
                None
            };
            if let Some(why) = own {
                return Err(boxsock_core::settings::SettingError {
                    setting: "network namespace",
                    input: boxsock_core::echo::path(ns).to_string(),
                    reason: format!(
                        "the box joins it instead of having a network, but {why}; choose one"
                    ),
                }
                .into());
            }
        }
        // A published port is served through the box's network (docker's `-p` implies
        // one too): a box asked to publish gets it, rather than an error (decision 0024).
        if !opts.settings.ports.is_empty() && !opts.network {
            tracing::info!(ports = opts.settings.ports.len(), "published ports: network on");
            opts.network = true;
        }
        if opts.settings.image.is_some() {
            if opts.settings.rootfs.is_some() {
                return Err(RuntimeError::ImageAndRootfs);
            }
            if !backend.runs_images() {
                return Err(RuntimeError::ImagesUnsupported {
                    backend: opts.backend.clone(),
                    capable: inner.image_backends(),
                });
            }
        }
        create_options::check_process(&opts.process)?;
        opts.settings = create_options::canonical_settings(opts.settings)?;
        if let Some(image) = &opts.settings.image {
            create_options::check_image_root(&inner.layout, image)?;
        }
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
        let id = opts.id.clone().unwrap_or_else(BoxId::generate);
        check_addresses(&strategy, &inner.layout, &id, &socket_specs(&*backend, opts.network))?;
        if let Availability::Unavailable { reason } = backend.available_for_launch() {
            return Err(RuntimeError::BackendUnavailable { backend: opts.backend.clone(), reason });
        }
        if opts.id.is_some() && inner.store.resolve_exact(id.as_str())?.is_some() {
            return Err(crate::store::StoreError::IdTaken { id }.into());
        }
        if let Some(name) = &opts.name {
            if let Some((by, _)) = inner.store.resolve_exact(name)? {
                return Err(crate::store::StoreError::NameTaken { name: name.clone(), by }.into());
            }
        }

        let _op = inner.op_lock().await?;
        let config = BoxConfig {
            strategy: opts.strategy,
            backend: opts.backend,
            network: opts.network,
            env: opts.env,
            settings: opts.settings,
            process: opts.process,
        };
        let rec = Store::new_record(id.clone(), opts.name, config);
        // Journal, then directory (marker first), then row: recovery deletes only a
        // directory both prove it made.
        home::journal_create(inner.home_fd.as_fd(), &inner.layout, &id)?;
        if let Err(e) = boxsock_core::boxdir::create_new_box_dir(&inner.layout, &id) {
            if e.source.kind() != std::io::ErrorKind::AlreadyExists
                || e.path != inner.layout.box_dir(&id)
            {
                let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
            }
            home::journal_done(&inner.layout, &id);
            return Err(RuntimeError::Io {
                op: "create box directory",
                path: e.path,
                source: e.source,
            });
        }
        crash::point("create:dirs");
        if let Err(e) = inner.store.insert_owned(&rec, opts.auto_remove_owner) {
            let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
            home::journal_done(&inner.layout, &id);
            return Err(e.into());
        }
        home::journal_done(&inner.layout, &id);
        crash::point("create:row");
        let ensured = {
            let (s, id) = (strategy.clone(), id.clone());
            inner.blocking(move |i| i.open_binding(s, &id, Opening::Use, &[]).map(drop)).await
        };
        let prepared =
            ensured.and_then(|()| backend.prepare(&inner.layout, &id).map_err(RuntimeError::from));
        if let Err(e) = prepared {
            let _ = strategy.release_box(&inner.layout, &id);
            let _ = boxsock_core::boxdir::remove_box_dir(&inner.layout, &id);
            let _ = inner.store.delete(id.as_str());
            return Err(e);
        }
        crash::point("create:ensured");
        tracing::debug!(box_id = %id, strategy = strategy.name(), backend = backend.name(), "created");
        Ok(rec)
    }

    /// Start a box (`Created` or `Stopped`) and wait for its agent's readiness. A box
    /// already running (its process alive) is returned as it is.
    pub async fn start(&self, id_or_name: &str) -> Result<BoxRecord, RuntimeError> {
        let inner = &self.inner;
        let _op = inner.op_lock().await?;
        let rec = inner.record(id_or_name)?;
        let _box = inner.box_lock(&rec.id).await?;
        // Read again: another process may have started, stopped or removed it meanwhile.
        let rec = inner.record(rec.id.as_str())?;
        // A running box whose process is alive is left as it is (like `docker start`).
        if rec.state == BoxState::Running && inner.handle_for(&rec).is_some_and(|h| h.is_alive()) {
            return Ok(rec);
        }
        inner.start_locked(rec).await
    }

    /// Run `argv` in a running box, streaming its output into `io`; returns its exit
    /// code (or 128 + signal). It runs as the box's user ([`BoxProcess::user`]), if any.
    pub async fn exec(
        &self,
        id_or_name: &str,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        io: ExecIo<'_>,
    ) -> Result<i32, RuntimeError> {
        let (rec, client, address) = self.inner.connect_agent(id_or_name).await?;
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        client
            .with_user(rec.config.process.user.clone())
            .exec(&argv, &env, io.stdin, io.stdout, io.stderr)
            .await
            .map_err(|source| RuntimeError::Agent { id: rec.id, address, source })
    }

    /// Check that a running box's agent answers.
    pub async fn ping(&self, id_or_name: &str) -> Result<(), RuntimeError> {
        let (rec, client, address) = self.inner.connect_agent(id_or_name).await?;
        client.ping().await.map(drop).map_err(|source| RuntimeError::Agent {
            id: rec.id,
            address,
            source,
        })
    }

    /// Stop a box: graceful, then SIGTERM, then SIGKILL, each bounded by `timeout`
    /// (default: the runtime's `stop_timeout`). A box without a process is returned as
    /// is.
    pub async fn stop(
        &self,
        id_or_name: &str,
        timeout: Option<Duration>,
    ) -> Result<BoxRecord, RuntimeError> {
        let inner = &self.inner;
        let _op = inner.op_lock().await?;
        let rec = inner.record(id_or_name)?;
        let _box = inner.box_lock(&rec.id).await?;
        let rec = inner.record(rec.id.as_str())?;
        inner.stop_locked(rec, timeout.unwrap_or(inner.options.stop_timeout)).await
    }

    /// Remove a box: refuse a running one unless `force` (then stop it), release its
    /// binding, delete its directory and its row. With `force`, a corrupt row is
    /// removed too. Returns the id removed.
    pub async fn remove(&self, id_or_name: &str, force: bool) -> Result<String, RuntimeError> {
        let inner = &self.inner;
        let _op = inner.op_lock().await?;
        let (raw_id, rec) = inner
            .store
            .resolve(id_or_name)?
            .ok_or_else(|| RuntimeError::NotFound(id_or_name.to_owned()))?;
        let _box = match &rec {
            Ok(rec) => Some(inner.box_lock(&rec.id).await?),
            Err(_) => None,
        };
        // Read again under the box's lock: a start that held it has recorded its process.
        let (raw_id, rec) = inner
            .store
            .resolve(&raw_id)?
            .ok_or_else(|| RuntimeError::NotFound(id_or_name.to_owned()))?;
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
        if let Ok(backend) = inner.backend(&rec.config.backend) {
            backend.removing(&inner.layout, &rec.id);
        }
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
    pub async fn sweep(
        &self,
    ) -> Result<Vec<(String, Result<boxsock_core::binding::SweepReport, SweepError>)>, RuntimeError>
    {
        let inner = &self.inner;
        inner.writable("sweep")?;
        let _g = match inner.options.lock_mode {
            LockMode::Exclusive => None,
            LockMode::Shared => Some(
                lock::acquire(
                    inner.layout.home(),
                    &inner.layout.lock_path(),
                    true,
                    inner.options.lock_wait,
                )
                .await?,
            ),
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
            LockMode::Shared => Some(
                lock::acquire(
                    inner.layout.home(),
                    &inner.layout.lock_path(),
                    true,
                    inner.options.lock_wait,
                )
                .await?,
            ),
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

    /// The configuration strategies are built from: the embedder's (a strategy finds
    /// the home's recorded fallback directory itself, through the core's `fallback`).
    fn strategy_config(&self) -> StrategyConfig {
        let mut c = self.options.strategy_config.clone();
        if self.options.access == Access::ReadOnly {
            c.read_only = true;
        }
        c
    }

    /// Open box `id`'s binding (`ensure`, and `prepare_start` for a start, run once by
    /// the strategy), with the addresses of `sockets` derived and budget-checked. A
    /// squatted shared directory does not fail it: the strategy falls back through the
    /// core's `fallback` (see [`squat`] for what `doctor` shows).
    pub(crate) fn open_binding(
        &self,
        strategy: Arc<dyn SocketBinding>,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, RuntimeError> {
        Ok(strategy.open_box(&self.layout, id, opening, sockets)?)
    }

    /// The binding this runtime holds for box `id`'s process `pid`, if any.
    pub(crate) fn held_binding(&self, id: &BoxId, pid: Option<i32>) -> Option<Arc<dyn BoxBinding>> {
        lock(&self.bindings).get(id).filter(|(p, _)| *p == pid).map(|(_, b)| b.clone())
    }

    /// Hold `binding` for box `id`'s process `pid` (replacing any other).
    pub(crate) fn hold_binding(&self, id: &BoxId, pid: Option<i32>, binding: Arc<dyn BoxBinding>) {
        lock(&self.bindings).insert(id.clone(), (pid, binding));
    }

    /// Drop the binding held for box `id` (its process is gone, or the binding failed).
    pub(crate) fn drop_binding(&self, id: &BoxId) {
        lock(&self.bindings).remove(id);
    }

    /// Run blocking work on tokio's blocking pool, never on the executor: a strategy's
    /// `ensure` (which may wait up to 5 s on its lock), the store (SQLite behind a
    /// mutex, with a busy timeout) and connects. The CLI runs a current-thread runtime,
    /// where blocking the executor would stall every other box's exec, pump and
    /// readiness wait.
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> T {
        let inner = self.clone();
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(v) => v,
            // The work panicked (a bug): propagate it as if it had run here. A blocking
            // task is never cancelled while its runtime runs.
            Err(e) => std::panic::resume_unwind(
                e.try_into_panic().unwrap_or_else(|e| Box::new(e.to_string())),
            ),
        }
    }

    fn backend(&self, name: &str) -> Result<Arc<dyn Backend>, RuntimeError> {
        if let Some(b) = lock(&self.backends).get(name) {
            return Ok(b.clone());
        }
        let b =
            self.options.backends.build(name, &self.options.backend_config).map_err(build_err)?;
        lock(&self.backends).insert(name.to_owned(), b.clone());
        Ok(b)
    }

    /// The registered backends that can run images (each built to ask it; one that
    /// cannot be built is left out).
    fn image_backends(&self) -> Vec<String> {
        let names: Vec<&str> = self.options.backends.names();
        names
            .into_iter()
            .filter(|n| self.backend(n).is_ok_and(|b| b.runs_images()))
            .map(str::to_owned)
            .collect()
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
            Access::ReadOnly => {
                Err(RuntimeError::ReadOnly { home: self.layout.home().to_path_buf(), op })
            }
        }
    }

    /// The box's operation lock (`lock::acquire_box`), waited for at most as long as
    /// another start (readiness) or stop (three escalation steps) can hold it.
    async fn box_lock(&self, id: &BoxId) -> Result<lock::BoxLock, RuntimeError> {
        let wait =
            self.options.ready_timeout + self.options.stop_timeout * 3 + Duration::from_secs(5);
        lock::acquire_box(&self.layout.box_dir(id), id.as_str(), wait).await
    }

    async fn op_lock(&self) -> Result<Option<LockGuard>, RuntimeError> {
        self.writable("create, start, stop or remove boxes")?;
        match self.options.lock_mode {
            LockMode::Exclusive => Ok(None),
            LockMode::Shared => Ok(Some(
                lock::acquire(
                    self.layout.home(),
                    &self.layout.lock_path(),
                    false,
                    self.options.lock_wait,
                )
                .await?,
            )),
        }
    }

    fn sweep_all(&self) -> Vec<(String, Result<boxsock_core::binding::SweepReport, SweepError>)> {
        let mut out = Vec::new();
        for reg in self.options.strategies.iter() {
            let r = self
                .strategy(reg.name)
                .map_err(|e| SweepError::Strategy(Box::new(e)))
                .and_then(|s| {
                    if !s.capabilities().supported_here() {
                        return Ok(Default::default());
                    }
                    Ok(s.sweep(&self.layout)?)
                });
            match &r {
                Ok(rep) if !rep.removed.is_empty() => {
                    tracing::info!(
                        strategy = reg.name,
                        removed = rep.removed.len(),
                        "swept leftover bindings"
                    )
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
                if let Err(e) = s.release_box(&self.layout, id) {
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
        self.drop_binding(id);
        if let Some(w) = lock(&self.watchers).remove(id) {
            w.abort();
        }
    }
}

fn build_err(e: BuildError) -> RuntimeError {
    match e {
        BuildError::Registry(r) => RuntimeError::Registry(r),
        BuildError::Strategy(b) => RuntimeError::Binding(b),
        BuildError::Backend(b) => RuntimeError::Backend(b),
    }
}
