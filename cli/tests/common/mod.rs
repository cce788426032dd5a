//! Shared helpers of the runtime's integration tests: temp homes and link bases (never
//! the shared `/tmp/boxsock-<uid>`), the real `boxsock-agent`, fake agents.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use boxsock::{
    BackendConfig, LockMode, RuntimeOptions, StrategyConfig, builtin_backends, builtin_strategies,
};

/// Generous bound for waits that must not hang a test.
pub const LIMIT: Duration = Duration::from_secs(30);

/// `target/<profile>`, holding a built `boxsock-agent` (built once if missing:
/// `cargo test -p boxsock` does not build other packages' binaries).
pub fn agent_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

/// `target/<profile>` with `boxsock-agent` and an up-to-date `boxsock-krun-shim`
/// (`cargo test -p boxsock` builds neither), for tests of the libkrun backend.
pub fn agent_and_shim_dir() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = agent_dir();
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "boxsock-libkrun", "--bin", "boxsock-krun-shim"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "building boxsock-krun-shim failed");
        assert!(dir.join("boxsock-krun-shim").exists());
        dir
    })
    .clone()
}

/// The real `boxsock` binary on `env`'s home and link base with helpers from
/// `helper_dir`, stdin `/dev/null`, and none of the caller's `BOXSOCK_STRATEGY`,
/// `BOXSOCK_BACKEND`, `BOXSOCK_AGENT` or `RUST_LOG`.
pub fn boxsock_in(env: &Env, helper_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_boxsock"));
    c.env("BOXSOCK_HOME", &env.home)
        .env("BOXSOCK_LINK_BASE", &env.link_base)
        .env("BOXSOCK_HELPER_DIR", helper_dir)
        .env_remove("BOXSOCK_STRATEGY")
        .env_remove("BOXSOCK_BACKEND")
        .env_remove("BOXSOCK_AGENT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// [`boxsock_in`] with the real agent ([`agent_dir`]).
pub fn boxsock(env: &Env) -> Command {
    boxsock_in(env, &agent_dir())
}

/// Run to the end, output captured.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("boxsock runs")
}

/// Bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Its stdout as text.
pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

/// Its stderr as text.
pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// Run, assert success (showing stderr if not), and return stdout.
pub fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed ({}): {}", o.status, stderr(&o));
    stdout(&o)
}

/// [`ok`], parsed as JSON.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&ok(cmd)).expect("valid JSON")
}

/// Every entry under `dir` (relative path, file type and mode, size of files, bytes of
/// small files, target of links), sorted: what "changed nothing" compares.
pub fn tree(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let content = if m.is_file() && m.len() < 64 {
                format!("{:?}", std::fs::read(&p).unwrap())
            } else {
                String::new()
            };
            let target =
                std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default();
            out.push(format!(
                "{rel} {:o} {} {content} {target}",
                m.mode(),
                if m.is_dir() { 0 } else { m.len() }
            ));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A temp home (optionally padded to a given depth) and a temp link base.
pub struct Env {
    pub root: tempfile::TempDir,
    pub home: PathBuf,
    pub link_base: PathBuf,
}

impl Env {
    /// Home `<tmp>/home`.
    pub fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let link_base = root.path().join("links");
        std::fs::create_dir(&link_base).unwrap();
        Env { root, home, link_base }
    }

    /// A home at least `min_len` bytes long.
    pub fn deep(min_len: usize) -> Env {
        let mut e = Env::new();
        let mut h = e.root.path().join("home");
        while h.as_os_str().len() < min_len {
            h.push("a-deliberately-deep-directory-level");
        }
        e.home = h;
        e
    }
}

/// A test that leaves a box running (a detached box outlives the CLI that started it)
/// would leave its agent behind: when the env goes, every box of its home is removed by
/// force through the real binary (errors ignored: some tests break their home on
/// purpose).
impl Drop for Env {
    fn drop(&mut self) {
        if !self.home.join("boxsock.db").exists() {
            return;
        }
        let boxsock = || {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_boxsock"));
            c.env("BOXSOCK_HOME", &self.home)
                .env("BOXSOCK_LINK_BASE", &self.link_base)
                .env_remove("BOXSOCK_STRATEGY")
                .env_remove("RUST_LOG")
                .args(["--lock-wait", "2"])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c
        };
        let Ok(out) = boxsock().args(["ls", "-a", "-q"]).output() else { return };
        let ids: Vec<String> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let _ = boxsock()
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

impl Env {
    /// Runtime options for this env: builtin registries, links under the temp base,
    /// the real agent, exclusive lock.
    pub fn options(&self) -> RuntimeOptions {
        self.options_with_helpers(agent_dir())
    }

    /// Like [`Env::options`] with another helper directory (a fake agent).
    pub fn options_with_helpers(&self, helper_dir: PathBuf) -> RuntimeOptions {
        let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
        o.strategy_config =
            StrategyConfig { base_dir: self.link_base.clone(), ..StrategyConfig::default() };
        o.backend_config = BackendConfig { helper_dir: Some(helper_dir), ..Default::default() };
        o.lock_mode = LockMode::Exclusive;
        o
    }

    /// The per-uid directory of the short-symlink strategy.
    pub fn per_uid_dir(&self) -> PathBuf {
        StrategyConfig { base_dir: self.link_base.clone(), ..StrategyConfig::default() }
            .per_uid_dir()
    }

    /// Entries left in the per-uid link directory.
    pub fn links(&self) -> Vec<String> {
        match std::fs::read_dir(self.per_uid_dir()) {
            Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Entries left under `<home>/boxes`.
    pub fn box_dirs(&self) -> Vec<String> {
        match std::fs::read_dir(self.home.join("boxes")) {
            Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A directory holding a fake `boxsock-agent`: a shell script that prints `marker` to
/// its log and never reports ready.
pub fn never_ready_agent(dir: &Path, marker: &str) -> PathBuf {
    let d = dir.join("fake-helpers");
    std::fs::create_dir_all(&d).unwrap();
    let script = d.join("boxsock-agent");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho '{marker}'\necho \"pid=$$ args: $*\"\nexec sleep 1000\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Poll `cond` until true or [`LIMIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}
