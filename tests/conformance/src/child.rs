//! Subprocess roles: checks that need other *processes* (not forked copies of a
//! multithreaded process) re-execute the test binary itself, filtered to the test that is
//! running, with an environment variable naming the role. When the kit runs a check and
//! finds that variable, it plays the role and exits with [`CHILD_OK`] instead.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::ByFile;
use boxsock_core::{BoxId, BoxLayout, SocketBinding, StrategyConfig};

/// Names the role: `<strategy>\t<check>`.
pub const ENV_ROLE: &str = "BOXSOCK_KIT_CHILD";
/// The role's arguments, one per line.
pub const ENV_ARGS: &str = "BOXSOCK_KIT_CHILD_ARGS";
/// Exit code of a child that played its role successfully (0 would mean the test ran
/// normally, which a parent must not mistake for success).
pub const CHILD_OK: i32 = 42;
/// Exit code of a child whose role failed.
pub const CHILD_FAILED: i32 = 43;

/// A role request found in the environment.
#[derive(Debug, Clone)]
pub struct ChildRequest {
    /// Strategy name.
    pub strategy: String,
    /// Check name.
    pub check: String,
    /// Arguments.
    pub args: Vec<String>,
}

/// The role request of this process, if it is a kit child.
pub fn request() -> Option<ChildRequest> {
    let role = std::env::var(ENV_ROLE).ok()?;
    let (strategy, check) = role.split_once('\t')?;
    let args = std::env::var(ENV_ARGS).unwrap_or_default().lines().map(str::to_owned).collect();
    Some(ChildRequest { strategy: strategy.to_owned(), check: check.to_owned(), args })
}

/// The arguments of the concurrent-ensure role.
#[derive(Debug, Clone)]
pub struct EnsureArgs {
    /// The strategy configuration.
    pub config: StrategyConfig,
    /// The home.
    pub home: PathBuf,
    /// The box.
    pub id: String,
    /// Start when this file appears.
    pub go: PathBuf,
    /// How many times to ensure.
    pub iterations: usize,
}

impl EnsureArgs {
    /// Encode as lines.
    pub fn encode(&self) -> Vec<String> {
        vec![
            self.config.base_dir.display().to_string(),
            self.config.prefix.clone(),
            self.config.uid.to_string(),
            self.home.display().to_string(),
            self.id.clone(),
            self.go.display().to_string(),
            self.iterations.to_string(),
        ]
    }

    /// Decode from lines.
    pub fn decode(args: &[String]) -> Option<Self> {
        let [base, prefix, uid, home, id, go, n] = args else { return None };
        Some(EnsureArgs {
            config: StrategyConfig {
                base_dir: base.into(),
                prefix: prefix.clone(),
                uid: uid.parse().ok()?,
                allowed_peer_uids: Vec::new(),
                binding_dir: None,
                read_only: false,
            },
            home: home.into(),
            id: id.clone(),
            go: go.into(),
            iterations: n.parse().ok()?,
        })
    }
}

/// The name of the running test, as libtest names its thread; `None` outside libtest.
pub fn current_test_name() -> Option<String> {
    let t = std::thread::current();
    let name = t.name()?;
    if name == "main" { None } else { Some(name.to_owned()) }
}

/// Re-execute this test binary, filtered to the running test, as a child playing
/// `check` for `strategy`.
pub fn spawn_self(
    test: &str,
    strategy: &str,
    check: &str,
    args: &[String],
) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_ROLE, format!("{strategy}\t{check}"))
        .env(ENV_ARGS, args.join("\n"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// Wait until `n` racers announced readiness next to `go` (at most 60 s), giving up early
/// if one of `children` has already exited.
pub fn wait_ready(go: &std::path::Path, n: usize, children: &mut [Child]) -> Result<(), String> {
    let dir = go.parent().ok_or("go file has no parent")?;
    let stem = format!("{}.ready-", go.file_name().and_then(|f| f.to_str()).unwrap_or("go"));
    let start = Instant::now();
    loop {
        let count = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
            .count();
        if count >= n {
            return Ok(());
        }
        if let Some(st) = children.iter_mut().find_map(|c| c.try_wait().ok().flatten()) {
            return Err(format!("a racer exited ({st}) before all {n} were ready"));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("only {count} of {n} racers became ready"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait for `child` at most `timeout`, killing it after. Returns (exit code, stderr).
pub fn wait_bounded(mut child: Child, timeout: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for child: {e}"),
        }
    };
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status.and_then(|s| s.code()), err)
}

/// The concurrent-ensure role: announce readiness (a `<go>.ready-*` file), wait for the go
/// file, then ensure `iterations` times.
pub fn run_ensure_role(strategy: &Arc<dyn SocketBinding>, args: &EnsureArgs) -> Result<(), String> {
    let layout = BoxLayout::new(&args.home);
    let id = BoxId::parse(&args.id).map_err(|e| e.to_string())?;
    // Say we are ready, so the parent starts everyone at once.
    let ready = args.go.with_extension(format!(
        "ready-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&ready, b"").map_err(|e| format!("write {}: {e}", ready.display()))?;
    let start = Instant::now();
    while !args.go.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("go file {} never appeared", args.go.display()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..args.iterations {
        strategy
            .ensure(&layout, &id)
            .map_err(|e| format!("ensure #{i} in pid {}: {e} ({e:?})", std::process::id()))?;
    }
    Ok(())
}

/// Names the test that a re-executed test binary runs in a process of its own (see
/// [`in_own_process`]).
pub const ENV_OWN_PROCESS: &str = "BOXSOCK_OWN_PROCESS";

/// Run `body`, a test that changes process-wide state (the umask, the working
/// directory, environment variables, signal dispositions, rlimits, the subreaper flag),
/// in a process of its own: no other test of the binary runs while that state is
/// changed, and nothing of it outlives the test.
///
/// In the test process it re-executes this test binary filtered to the running test
/// (`--exact`, one thread) with [`ENV_OWN_PROCESS`] naming it, prints the child's output
/// (libtest shows it when the test fails) and panics unless the child exited
/// [`CHILD_OK`]. In that child it runs `body` and exits [`CHILD_OK`]: a child whose
/// filter matched no test exits 0, which is never taken for success.
pub fn in_own_process(body: impl FnOnce()) {
    let test = current_test_name().expect("in_own_process is called inside a libtest test thread");
    match std::env::var(ENV_OWN_PROCESS) {
        Ok(t) if t == test => {
            body();
            std::process::exit(CHILD_OK);
        }
        // Another test's own process (or a process it started): never re-execute again.
        Ok(t) => panic!("{test}: running inside the own process of {t}"),
        Err(_) => {}
    }
    // Output goes to a file, not a pipe: processes the test leaves behind (a box's agent)
    // could hold a pipe open and hang the wait.
    let out = tempfile::NamedTempFile::new().expect("a temp file for the child's output");
    let file = || out.reopen().expect("reopen the child's output file");
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new(exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_OWN_PROCESS, &test)
        .stdin(Stdio::null())
        .stdout(file())
        .stderr(file())
        .status()
        .unwrap_or_else(|e| panic!("{test}: cannot re-execute the test binary: {e}"));
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    eprint!("{output}");
    assert_eq!(
        status.code(),
        Some(CHILD_OK),
        "{test} failed in its own process ({status}); its output:\n{output}"
    );
}
