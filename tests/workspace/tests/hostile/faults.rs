//! Faults: crashes at every step, /tmp cleaners, disk trouble, concurrency.
//!
//! Real processes (the `boxsock` CLI and `boxsock-agent` on the host backend), real
//! SQLite files, real sockets and links, all in temp homes and temp link bases (never the
//! shared `/tmp/boxsock-<uid>`). Crashes are injected with the runtime's
//! `BOXSOCK_TEST_CRASH_AT=<step>` hook, which SIGKILLs the CLI at a named step.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use boxsock::boxsock_core::runtime::{CRASH_ENV, CRASH_STEPS};
use boxsock::boxsock_core::store::StoreError;
use boxsock::{
    BackendConfig, BindingError, BoxId, BoxLayout, BoxState, CreateOptions, ExecIo, LockMode, Runtime, RuntimeError,
    RuntimeOptions, SocketAddress, StrategyConfig, builtin_backends, builtin_strategies,
};
use boxsock_tests::reliability::Outcome;
use boxsock_tests::scenario;
use serde_json::Value;

/// Generous bound for waits that must not hang a test.
const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `target/<profile>`, holding an up-to-date `boxsock` and `boxsock-agent`. `cargo test
/// -p boxsock-tests` does not build other packages' binaries, and a stale `boxsock`
/// would lack the crash hook, so build them once per test process (a no-op when fresh).
fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "boxsock", "-p", "boxsock-agent", "--bins"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let st = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().unwrap();
        assert!(st.success(), "building boxsock and boxsock-agent failed");
        for b in ["boxsock", "boxsock-agent"] {
            assert!(profile_dir.join(b).exists(), "no {b} in {}", profile_dir.display());
        }
        profile_dir
    })
    .clone()
}

/// A temp home and a temp link base.
struct Env {
    root: tempfile::TempDir,
    home: PathBuf,
    link_base: PathBuf,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        Env::at(root, None)
    }

    /// A link base under `root`, and the home at `home` (default `<root>/home`).
    fn at(root: tempfile::TempDir, home: Option<PathBuf>) -> Env {
        let home = home.unwrap_or_else(|| root.path().join("home"));
        let link_base = root.path().join("links");
        std::fs::create_dir_all(&link_base).unwrap();
        Env { root, home, link_base }
    }

    fn strategy_config(&self) -> StrategyConfig {
        StrategyConfig { base_dir: self.link_base.clone(), ..StrategyConfig::default() }
    }

    fn per_uid_dir(&self) -> PathBuf {
        self.strategy_config().per_uid_dir()
    }

    /// The CLI on this home, with the real agent.
    fn cli(&self) -> Command {
        self.cli_with(&bin_dir())
    }

    /// The CLI on this home with another helper directory (a fake agent).
    fn cli_with(&self, helper_dir: &Path) -> Command {
        let mut c = Command::new(bin_dir().join("boxsock"));
        c.env("BOXSOCK_HOME", &self.home)
            .env("BOXSOCK_LINK_BASE", &self.link_base)
            .env("BOXSOCK_HELPER_DIR", helper_dir)
            .env_remove("BOXSOCK_STRATEGY")
            .env_remove("BOXSOCK_BACKEND")
            .env_remove(CRASH_ENV)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Library options: builtin registries, links under the temp base, the real agent.
    fn options(&self, mode: LockMode) -> RuntimeOptions {
        let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
        o.strategy_config = self.strategy_config();
        o.backend_config = BackendConfig { helper_dir: Some(bin_dir()), ..Default::default() };
        o.lock_mode = mode;
        o.lock_wait = Some(LIMIT);
        o
    }

    /// Entries of the per-uid link directory.
    fn links(&self) -> BTreeSet<String> {
        names_in(&self.per_uid_dir())
    }

    /// Entries under `<home>/boxes`.
    fn box_dirs(&self) -> BTreeSet<String> {
        names_in(&self.home.join("boxes"))
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run, require success, return stdout.
fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().expect("boxsock runs");
    assert!(o.status.success(), "{cmd:?} failed ({}): {}", o.status, stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(cmd: &mut Command) -> Value {
    serde_json::from_str(&ok(cmd)).expect("valid JSON")
}

/// Run with the crash hook at `step`; require that the process died of SIGKILL (the
/// hook fired at that step).
fn crash_at(cmd: &mut Command, step: &str) {
    let o = cmd.env(CRASH_ENV, step).output().expect("boxsock runs");
    assert_eq!(o.status.signal(), Some(9), "{step}: the crash hook did not fire ({}): {}", o.status, stderr(&o));
}

fn steps(verb: &str) -> Vec<&'static str> {
    CRASH_STEPS.iter().copied().filter(|s| s.starts_with(&format!("{verb}:"))).collect()
}

/// Whether a process with this pid exists and is not a zombie.
fn pid_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Live (non-zombie) processes whose command line mentions `needle` (a box id: the host
/// backend passes the box's addresses, which contain it, to the agent).
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
                && pid_running(pid)
        })
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Socket files left in a box's real socket directory.
fn socket_files(env: &Env, id: &str) -> Vec<String> {
    let dir = env.home.join("boxes").join(id).join("sockets");
    match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Reopen the home through the CLI (`ls --json`, which recovers) and check that every
/// box tells the truth: rows and directories match one to one, every link belongs to a
/// box and resolves, a box with a process has it alive, a box without one has no live
/// process and no socket file, and nothing is left mid-transition. Returns (id, state).
fn reopen_and_check_truthful(env: &Env, ctx: &str) -> Vec<(String, String)> {
    let l = json(env.cli().args(["ls", "--json"]));
    assert!(l["bad"].as_array().unwrap().is_empty(), "{ctx}: corrupt rows: {l}");
    let mut out = Vec::new();
    for b in l["boxes"].as_array().unwrap() {
        let id = b["id"].as_str().unwrap().to_owned();
        let state = b["state"].as_str().unwrap().to_owned();
        let pid = b["process"]["pid"].as_i64().map(|p| p as i32);
        match state.as_str() {
            "running" => {
                let pid = pid.unwrap_or_else(|| panic!("{ctx}: running box {id} without a pid"));
                assert!(pid_running(pid), "{ctx}: box {id} recorded running but pid {pid} is gone");
                assert_eq!(socket_files(env, &id), ["agent.sock"], "{ctx}: sockets of running box {id}");
            }
            "created" | "stopped" => {
                assert_eq!(pid, None, "{ctx}: {state} box {id} has a pid");
                assert!(processes_mentioning(&id).is_empty(), "{ctx}: {state} box {id} has live processes");
                assert!(socket_files(env, &id).is_empty(), "{ctx}: {state} box {id} left sockets {:?}", socket_files(env, &id));
            }
            other => panic!("{ctx}: box {id} left in state {other} after recovery"),
        }
        out.push((id, state));
    }
    let rows: BTreeSet<String> = out.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(env.box_dirs(), rows, "{ctx}: box directories and rows differ");
    for link in env.links() {
        assert!(rows.contains(&link), "{ctx}: link {link} belongs to no box");
        let p = env.per_uid_dir().join(&link);
        assert!(std::fs::metadata(&p).is_ok_and(|m| m.is_dir()), "{ctx}: link {} dangles", p.display());
    }
    out
}

/// Start (if needed), exec, and remove a box through the CLI; then nothing of it is left.
fn use_and_remove(env: &Env, id: &str, state: &str, ctx: &str) {
    if state != "running" {
        assert_eq!(ok(env.cli().args(["start", id])).trim(), id, "{ctx}");
    }
    assert_eq!(ok(env.cli().args(["exec", id, "--", "echo", "alive"])), "alive\n", "{ctx}");
    ok(env.cli().args(["rm", "-f", id]));
    assert_nothing_left(env, &[id], ctx);
}

/// No row, directory, link, or process of any of `ids` (and no row or directory at all).
fn assert_nothing_left(env: &Env, ids: &[&str], ctx: &str) {
    let l = json(env.cli().args(["ls", "--json"]));
    assert!(l["boxes"].as_array().unwrap().is_empty() && l["bad"].as_array().unwrap().is_empty(), "{ctx}: rows left: {l}");
    assert!(env.box_dirs().is_empty(), "{ctx}: box dirs left: {:?}", env.box_dirs());
    assert!(env.links().is_empty(), "{ctx}: links left: {:?}", env.links());
    for id in ids {
        let ps = processes_mentioning(id);
        assert!(ps.is_empty(), "{ctx}: processes of box {id} left: {ps:?}");
    }
}

fn create(env: &Env) -> String {
    ok(env.cli().args(["--backend", "host", "create"])).trim().to_owned()
}

fn pid_of(env: &Env, id: &str) -> i32 {
    json(env.cli().args(["inspect", id, "--json"]))["pid"].as_i64().expect("a pid") as i32
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

async fn exec_out(rt: &Runtime, id: &str, argv: &[&str]) -> Result<(i32, String), RuntimeError> {
    let mut out = Vec::<u8>::new();
    let (mut on_out, mut on_err) = (|b: &[u8]| out.extend_from_slice(b), |_: &[u8]| {});
    let code = rt
        .exec(id, argv.iter().map(|s| s.to_string()).collect(), vec![], ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err })
        .await?;
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}

/// A directory holding a fake `boxsock-agent` that never reports ready.
fn never_ready_agent(dir: &Path) -> PathBuf {
    let d = dir.join("fake-helpers");
    std::fs::create_dir_all(&d).unwrap();
    let script = d.join("boxsock-agent");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

// ---------------------------------------------------------------------------------------
// Crash at every step
// ---------------------------------------------------------------------------------------

/// After a crash: reopen, check, then use and remove every box. Returns "step → state".
fn recover_and_finish(env: &Env, step: &str, ids: &[&str]) -> String {
    let boxes = reopen_and_check_truthful(env, step);
    for id in ids {
        if !boxes.iter().any(|(b, _)| b == id) {
            assert!(processes_mentioning(id).is_empty(), "{step}: processes of vanished box {id} left");
        }
    }
    let states: Vec<String> = boxes.iter().map(|(_, s)| s.clone()).collect();
    for (id, state) in &boxes {
        use_and_remove(env, id, state, step);
    }
    assert_nothing_left(env, ids, step);
    format!("{step} → {}", if states.is_empty() { "gone".to_owned() } else { states.join(",") })
}

scenario!(
    crash_during_create_at_every_step,
    "Faults",
    "kill -9 `boxsock create` at each step (dirs made, row written, binding made), then reopen",
    {
        let env = Env::new();
        let mut seen = Vec::new();
        for step in steps("create") {
            crash_at(env.cli().args(["--backend", "host", "create"]), step);
            let dirs: Vec<String> = env.box_dirs().into_iter().collect();
            assert_eq!(dirs.len(), 1, "{step}: the crashed create left {dirs:?}");
            let ids: Vec<&str> = dirs.iter().map(String::as_str).collect();
            seen.push(recover_and_finish(&env, step, &ids));
        }
        assert_eq!(seen.len(), 3);
        Outcome::Passed(format!(
            "the CLI died at every step; after reopening: {} (a directory without its row is removed); every box then started, ran a command and was removed, leaving no row, directory, link, socket or process",
            seen.join("; ")
        ))
    }
);

scenario!(
    crash_during_start_at_every_step,
    "Faults",
    "kill -9 `boxsock start` at each step (starting recorded, ready bound, box launched, agent ready, running recorded), then reopen",
    {
        let env = Env::new();
        let mut seen = Vec::new();
        for step in steps("start") {
            let id = create(&env);
            crash_at(env.cli().args(["start", &id]), step);
            let rec = json(env.cli().args(["inspect", &id, "--json"]));
            let pid = rec["pid"].as_i64().map(|p| p as i32);
            let r = recover_and_finish(&env, step, &[&id]);
            if let Some(pid) = pid {
                assert!(!pid_running(pid), "{step}: box process {pid} survived");
            }
            seen.push(r);
        }
        assert_eq!(seen.len(), 5);
        Outcome::Passed(format!(
            "the CLI died at every step; after reopening: {} (a box whose starter died before `running` was recorded has its process killed and is stopped; one recorded running keeps its live process); each then ran a command and was removed, leaving nothing",
            seen.join("; ")
        ))
    }
);

scenario!(
    crash_during_stop_at_every_step,
    "Faults",
    "kill -9 `boxsock stop` of a running box at each step (stopping recorded, process gone, stopped recorded), then reopen",
    {
        let env = Env::new();
        let mut seen = Vec::new();
        for step in steps("stop") {
            let id = create(&env);
            ok(env.cli().args(["start", &id]));
            let pid = pid_of(&env, &id);
            crash_at(env.cli().args(["stop", &id]), step);
            let boxes = reopen_and_check_truthful(&env, step);
            assert_eq!(boxes, [(id.clone(), "stopped".to_owned())], "{step}");
            wait_until("the box process to be gone", || !pid_running(pid));
            seen.push(recover_and_finish(&env, step, &[&id]));
        }
        assert_eq!(seen.len(), 3);
        Outcome::Passed(format!(
            "the CLI died at every step; after reopening: {} (a box left `stopping` has its process killed); each restarted, ran a command and was removed, leaving nothing",
            seen.join("; ")
        ))
    }
);

scenario!(
    crash_during_remove_at_every_step,
    "Faults",
    "kill -9 `boxsock rm -f` of a running box at each step (binding released, directory deleted, row deleted), then reopen",
    {
        let env = Env::new();
        let mut seen = Vec::new();
        for step in steps("remove") {
            let id = create(&env);
            ok(env.cli().args(["start", &id]));
            let pid = pid_of(&env, &id);
            crash_at(env.cli().args(["rm", "-f", &id]), step);
            assert!(!pid_running(pid), "{step}: rm -f stops the box before removing it");
            seen.push(recover_and_finish(&env, step, &[&id]));
        }
        assert_eq!(seen.len(), 3);
        Outcome::Passed(format!(
            "the CLI died at every step; after reopening: {} (a row whose directory is gone is an interrupted removal and is finished); the rest were started, used and removed, leaving nothing",
            seen.join("; ")
        ))
    }
);

scenario!(
    killing_the_box_process_in_every_state,
    "Faults",
    "kill -9 the box process while its box is starting, running, stopping and unhealthy (the runtime not running), then reopen",
    {
        let env = Env::new();
        let fake = never_ready_agent(env.root.path());
        let mut seen = Vec::new();
        for state in ["starting", "running", "stopping", "unhealthy"] {
            let id = create(&env);
            match state {
                // The starter died after launching; the process waits forever for nothing.
                "starting" => crash_at(env.cli_with(&fake).args(["--ready-timeout", "60", "start", &id]), "start:launched"),
                "running" => {
                    ok(env.cli().args(["start", &id]));
                }
                "stopping" => {
                    ok(env.cli().args(["start", &id]));
                    crash_at(env.cli().args(["stop", &id]), "stop:stopping");
                }
                "unhealthy" => {
                    ok(env.cli().args(["start", &id]));
                    // Only a live runtime's monitor writes `unhealthy`; write it as one
                    // would have just before dying.
                    block_on(async {
                        let (rt, _) = Runtime::open(&env.home, env.options(LockMode::Exclusive)).await.unwrap();
                        rt.store().execute_raw(&format!("UPDATE boxes SET state = 'unhealthy' WHERE id = '{id}'")).unwrap();
                        rt.close();
                    });
                }
                _ => unreachable!(),
            }
            seen.push(state);
            // The row's pid, read from the store file directly: opening a runtime would
            // recover (and kill) the box before we do.
            let listing = boxsock::boxsock_core::store::Store::open(env.home.join("boxsock.db")).unwrap().list().unwrap();
            let rec = listing.boxes.iter().find(|b| b.id.as_str() == id).unwrap();
            assert_eq!(rec.state.to_string(), state, "the box is {state} before the kill");
            let pid = rec.process.map(|p| p.pid);
            let pid = pid.unwrap_or_else(|| panic!("{state}: no process recorded"));
            assert!(pid_running(pid), "{state}: box process {pid} not running before the kill");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
            wait_until("the box process to die", || !pid_running(pid));
            let boxes = reopen_and_check_truthful(&env, state);
            assert_eq!(boxes, [(id.clone(), "stopped".to_owned())], "{state}");
            use_and_remove(&env, &id, "stopped", state);
        }
        Outcome::Passed(format!(
            "in every state ({}) the next open recorded the box stopped with no pid, no live process and no socket file; each then started again, ran a command and was removed, leaving nothing",
            seen.join(", ")
        ))
    }
);
