//! [`Kit`]: the world one check runs in: a fresh deep home, a temporary link base for
//! `short-symlink`, a real [`Runtime`] over the home whose only backend is the one
//! under test, and a snapshot of this process's live descendants (see [`procs`]).
//! Dropping it force-removes every box it made and kills any stray, so a failed check
//! leaves nothing running.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxsock_core::registry::{Registry, StrategyRegistration};
use boxsock_core::{BoxId, StrategyConfig};
use boxsock_runtime::BoxInfo;
use boxsock_runtime::state::BoxState;
use boxsock_runtime::store::BoxRecord;
use boxsock_runtime::{CreateOptions, Runtime, RuntimeError, RuntimeOptions};

use crate::Target;
use crate::procs::{self, Snapshot};

/// The strategy every check uses unless it says otherwise: the default, path addresses.
pub const PATH_STRATEGY: &str = boxsock_short_symlink::NAME;
/// The strategy of abstract addresses (Linux).
pub const ABSTRACT_STRATEGY: &str = boxsock_abstract::NAME;

/// Homes are at least this long, so the backend is checked where the project's point
/// lies: a home whose socket paths would not fit `sun_path` if bound directly.
pub const HOME_MIN_LEN: usize = 200;

static STRATEGIES: [&StrategyRegistration; 2] =
    [&boxsock_short_symlink::REGISTRATION, &boxsock_abstract::REGISTRATION];

/// The world of one check. See the module documentation.
#[derive(Debug)]
pub struct Kit {
    /// What is under test.
    pub target: Target,
    /// The check running in it.
    pub check: &'static str,
    /// The home (at least [`HOME_MIN_LEN`] bytes).
    pub home: PathBuf,
    /// Base directory of `short-symlink`'s per-user directory.
    pub link_base: PathBuf,
    _dir: tempfile::TempDir,
    rt: Option<tokio::runtime::Runtime>,
    runtime: Option<Runtime>,
    before: Snapshot,
}

impl Kit {
    /// A fresh world for `check` against `target`. Panics when it cannot be made.
    pub fn new(target: &Target, check: &'static str) -> Kit {
        let dir = tempfile::Builder::new()
            .prefix("bk")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("{check}: cannot make a temporary directory in /tmp: {e}"));
        let link_base = dir.path().join("l");
        std::fs::create_dir(&link_base)
            .unwrap_or_else(|e| panic!("{check}: cannot create {}: {e}", link_base.display()));
        let mut home = match &target.home_root {
            Some(root) => root.join(format!(
                "{check}-{}",
                dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("x")
            )),
            None => dir.path().join("home"),
        };
        while home.as_os_str().len() < HOME_MIN_LEN {
            home.push("a-deliberately-deep-directory-level");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{check}: cannot build a tokio runtime: {e}"));
        let mut options = RuntimeOptions::new(
            Registry::from_entries("strategy", STRATEGIES.iter().copied()),
            Registry::from_entries("backend", [target.registration]),
        );
        options.strategy_config =
            StrategyConfig { base_dir: link_base.clone(), ..StrategyConfig::default() };
        options.backend_config = target.config.clone();
        options.ready_timeout = target.ready_timeout;
        options.stop_timeout = target.stop_timeout;
        let before = Snapshot::take();
        let runtime = match rt.block_on(Runtime::open(&home, options)) {
            Ok((r, _)) => r,
            Err(e) => panic!("{check}: cannot open a runtime over {}: {e}", home.display()),
        };
        Kit {
            target: target.clone(),
            check,
            home,
            link_base,
            _dir: dir,
            rt: Some(rt),
            runtime: Some(runtime),
            before,
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.target.name()
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the kit's runtime lives until drop")
    }

    /// Run `fut` to completion on the kit's executor.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.as_ref().expect("the kit's executor lives until drop").block_on(fut)
    }

    /// Fail the check: panic with the backend and the check named.
    #[track_caller]
    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("backend {:?}, check {}: {msg}", self.backend(), self.check)
    }

    /// Create a box with `strategy` (the target's network setting).
    pub fn create(&self, strategy: &str) -> Result<BoxRecord, RuntimeError> {
        let mut opts = CreateOptions::new(strategy, self.backend());
        opts.network = self.target.network;
        self.block_on(self.runtime().create(opts))
    }

    /// Start box `id`, failing the check (with the box log's tail) when it does not
    /// become ready. Returns the record and how long the start took.
    pub fn start(&self, id: &BoxId) -> (BoxRecord, Duration) {
        let t0 = Instant::now();
        match self.block_on(self.runtime().start(id.as_str())) {
            Ok(rec) => (rec, t0.elapsed()),
            Err(e) => {
                self.fail(format!("box {id} did not start: {e}\nbox log:\n{}", self.log_tail(id)))
            }
        }
    }

    /// Create and start a box with `strategy`.
    pub fn started(&self, strategy: &str) -> (BoxRecord, Duration) {
        let rec = self
            .create(strategy)
            .unwrap_or_else(|e| self.fail(format!("create with strategy {strategy} failed: {e}")));
        self.start(&rec.id)
    }

    /// What `inspect` says of box `id`.
    pub fn inspect(&self, id: &BoxId) -> BoxInfo {
        self.runtime()
            .inspect(id.as_str())
            .unwrap_or_else(|e| self.fail(format!("inspect {id}: {e}")))
    }

    /// The box's record.
    pub fn record(&self, id: &BoxId) -> BoxRecord {
        self.runtime().get(id.as_str()).unwrap_or_else(|e| self.fail(format!("get {id}: {e}")))
    }

    /// Wait (polling, on the executor so the health monitor runs) until box `id` is in
    /// `state`, at most `limit`. Returns whether it got there.
    pub fn wait_state(&self, id: &BoxId, state: BoxState, limit: Duration) -> bool {
        self.block_on(async {
            let deadline = Instant::now() + limit;
            loop {
                if self.runtime().get(id.as_str()).is_ok_and(|r| r.state == state) {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Fail (after killing them) when processes started since the kit was made are
    /// still alive; `when` says at which point of the check.
    pub fn assert_no_strays(&self, when: &str) {
        // A process being killed needs a moment to be gone from /proc.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut strays = self.before.strays();
        while !strays.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            strays = self.before.strays();
        }
        if !strays.is_empty() {
            procs::kill_all(&strays);
            let list: Vec<String> = strays.iter().map(ToString::to_string).collect();
            self.fail(format!(
                "{when}, processes the box started are still alive (killed now): {}",
                list.join(", ")
            ));
        }
    }

    /// The last lines of box `id`'s log.
    pub fn log_tail(&self, id: &BoxId) -> String {
        let path = boxsock_core::BoxLayout::new(&self.home).log_file(id);
        match std::fs::read(&path) {
            Ok(b) => {
                let text = String::from_utf8_lossy(&b);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            Err(e) => format!("(no log at {}: {e})", path.display()),
        }
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        if let (Some(rt), Some(runtime)) = (self.rt.as_ref(), self.runtime.take()) {
            rt.block_on(async {
                if let Ok(listing) = runtime.list() {
                    for rec in listing.boxes {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(60),
                            runtime.remove(rec.id.as_str(), true),
                        )
                        .await;
                    }
                }
            });
            runtime.close();
        }
        procs::kill_all(&self.before.strays());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        // Homes under a caller's root are the kit's own (`<check>-<random>`).
        if self.target.home_root.is_some() {
            if let Some(top) = self.target.home_root.as_ref().and_then(|r| {
                self.home
                    .strip_prefix(r)
                    .ok()
                    .and_then(|rel| rel.components().next())
                    .map(|c| r.join(c))
            }) {
                let _ = std::fs::remove_dir_all(top);
            }
        }
    }
}
