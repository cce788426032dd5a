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
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use boxsock::boxsock_runtime::store::StoreError;
use boxsock::boxsock_runtime::{CRASH_ENV, CRASH_STEPS};
use boxsock::{
    BackendConfig, BindingError, BoxId, BoxLayout, BoxState, CreateOptions, ExecIo, LockMode,
    Runtime, RuntimeError, RuntimeOptions, SocketAddress, StrategyConfig, builtin_backends,
    builtin_strategies,
};
use boxsock_conformance::util::ByFile;
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
    boxsock_host::dev::built_binaries(&["boxsock", "boxsock-agent"])
}

/// A temp home and a temp link base.
struct Env {
    root: tempfile::TempDir,
    home: PathBuf,
    link_base: PathBuf,
}

impl Env {
    fn new() -> Env {
        Env::at(tempfile::tempdir().unwrap(), None)
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
    assert_eq!(
        o.status.signal(),
        Some(9),
        "{step}: the crash hook did not fire ({}): {}",
        o.status,
        stderr(&o)
    );
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

/// Reopen the home through the CLI (`sweep`, a writing verb, which recovers; `ls` is
/// read-only and changes nothing) and check that every box tells the truth: rows and
/// directories match one to one, every link belongs to a box and resolves, a box with a
/// process has it alive, a box without one has no live process and no socket file, and
/// nothing is left mid-transition. Returns (id, state).
fn reopen_and_check_truthful(env: &Env, ctx: &str) -> Vec<(String, String)> {
    ok(env.cli().arg("sweep"));
    let l = json(env.cli().args(["ls", "-a", "--json"]));
    assert!(l["bad"].as_array().unwrap().is_empty(), "{ctx}: corrupt rows: {l}");
    let mut out = Vec::new();
    for b in l["boxes"].as_array().unwrap() {
        let id = b["id"].as_str().unwrap().to_owned();
        let state = b["state"].as_str().unwrap().to_owned();
        let pid = b["pid"].as_i64().map(|p| p as i32);
        match state.as_str() {
            "running" => {
                let pid = pid.unwrap_or_else(|| panic!("{ctx}: running box {id} without a pid"));
                assert!(pid_running(pid), "{ctx}: box {id} recorded running but pid {pid} is gone");
                assert_eq!(
                    socket_files(env, &id),
                    ["agent.sock"],
                    "{ctx}: sockets of running box {id}"
                );
            }
            "created" | "stopped" => {
                assert_eq!(pid, None, "{ctx}: {state} box {id} has a pid");
                assert!(
                    processes_mentioning(&id).is_empty(),
                    "{ctx}: {state} box {id} has live processes"
                );
                assert!(
                    socket_files(env, &id).is_empty(),
                    "{ctx}: {state} box {id} left sockets {:?}",
                    socket_files(env, &id)
                );
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
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.is_dir()),
            "{ctx}: link {} dangles",
            p.display()
        );
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
    let l = json(env.cli().args(["ls", "-a", "--json"]));
    assert!(
        l["boxes"].as_array().unwrap().is_empty() && l["bad"].as_array().unwrap().is_empty(),
        "{ctx}: rows left: {l}"
    );
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
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn exec_out(rt: &Runtime, id: &str, argv: &[&str]) -> Result<(i32, String), RuntimeError> {
    let mut out = Vec::<u8>::new();
    let (mut on_out, mut on_err) = (|b: &[u8]| out.extend_from_slice(b), |_: &[u8]| {});
    let code = rt
        .exec(
            id,
            argv.iter().map(|s| s.to_string()).collect(),
            vec![],
            ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err },
        )
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

/// The row of `id` as stored (read from the database file, without opening a runtime,
/// which would recover): (state, recorded pid).
fn stored(env: &Env, id: &str) -> Option<(String, Option<i32>)> {
    let store = boxsock::boxsock_runtime::store::Store::open(env.home.join("boxsock.db")).unwrap();
    let l = store.list().unwrap();
    l.boxes
        .iter()
        .find(|b| b.id.as_str() == id)
        .map(|b| (b.state.to_string(), b.process.map(|p| p.pid)))
}

/// What the home looks like right after the CLI died at `step`, before anyone reopens
/// it: proves the hook fired where its name says.
fn assert_left_at(env: &Env, step: &str, id: &str) {
    let row = stored(env, id);
    let state = row.as_ref().map(|(s, _)| s.as_str());
    let pid = row.as_ref().and_then(|(_, p)| *p);
    let dir = env.home.join("boxes").join(id).is_dir();
    let link = std::fs::symlink_metadata(env.per_uid_dir().join(id)).is_ok();
    // What a start binds before launching: the host backend's `agent.sock` (handed to
    // the agent); it has no `ready.sock` (readiness goes on an inherited channel).
    let files = socket_files(env, id);
    let ready = files.iter().any(|f| f == "agent.sock");
    let expect = |ok: bool, what: &str| {
        assert!(
            ok,
            "{step}: expected {what}; found row {row:?}, dir {dir}, link {link}, socket files {files:?}"
        )
    };
    match step {
        "create:dirs" => expect(dir && row.is_none() && !link, "a directory without a row"),
        "create:row" => {
            expect(dir && state == Some("created") && !link, "a created row without a link")
        }
        "create:ensured" => {
            expect(dir && state == Some("created") && link, "a created row with its link")
        }
        "start:starting" => expect(
            state == Some("starting") && pid.is_none() && files.is_empty(),
            "starting, nothing bound",
        ),
        "start:bound" => expect(
            state == Some("starting") && pid.is_none() && ready,
            "starting, the agent's agent.sock bound by the runtime",
        ),
        "start:launched" | "start:ready" => {
            expect(state == Some("starting") && pid.is_some(), "starting with a recorded process")
        }
        "start:running" => expect(
            state == Some("running") && pid.is_some_and(pid_running),
            "running with a live process",
        ),
        "stop:stopping" => expect(
            state == Some("stopping") && pid.is_some_and(pid_running),
            "stopping, process alive",
        ),
        "stop:terminated" => expect(
            state == Some("stopping") && pid.is_some_and(|p| !pid_running(p)),
            "stopping, process gone",
        ),
        "stop:stopped" => expect(state == Some("stopped") && pid.is_none(), "stopped"),
        "remove:released" => {
            expect(dir && row.is_some() && !link, "row and directory without the link")
        }
        "remove:dir-removed" => {
            expect(!dir && row.is_some() && !link, "a row without its directory")
        }
        "remove:row-deleted" => expect(!dir && row.is_none() && !link, "nothing"),
        other => panic!("no expectation for step {other}"),
    }
}

/// After a crash: reopen, check, then use and remove every box. Returns "step → state".
fn recover_and_finish(env: &Env, step: &str, ids: &[&str]) -> String {
    let boxes = reopen_and_check_truthful(env, step);
    for id in ids {
        if !boxes.iter().any(|(b, _)| b == id) {
            assert!(
                processes_mentioning(id).is_empty(),
                "{step}: processes of vanished box {id} left"
            );
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
            assert_left_at(&env, step, ids[0]);
            seen.push(recover_and_finish(&env, step, &ids));
        }
        assert_eq!(seen.len(), 3);
        Outcome::Passed(format!(
            "the CLI died (SIGKILL) at every step, leaving on disk exactly what the step implies; after reopening: {} (a directory without its row is removed); every box then started, ran a command and was removed, leaving no row, directory, link, socket or process",
            seen.join("; ")
        ))
    }
);

scenario!(
    crash_during_start_at_every_step,
    "Faults",
    "kill -9 `boxsock start` at each step (starting recorded, the box's listeners bound, box launched, agent ready, running recorded), then reopen",
    {
        let env = Env::new();
        let mut seen = Vec::new();
        for step in steps("start") {
            let id = create(&env);
            crash_at(env.cli().args(["start", &id]), step);
            assert_left_at(&env, step, &id);
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
            "the CLI died (SIGKILL) at every step, leaving on disk exactly what the step implies; after reopening: {} (a box whose starter died before `running` was recorded has its process killed and is stopped; one recorded running keeps its live process); each then ran a command and was removed, leaving nothing",
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
            assert_left_at(&env, step, &id);
            let boxes = reopen_and_check_truthful(&env, step);
            assert_eq!(boxes, [(id.clone(), "stopped".to_owned())], "{step}");
            wait_until("the box process to be gone", || !pid_running(pid));
            seen.push(recover_and_finish(&env, step, &[&id]));
        }
        assert_eq!(seen.len(), 3);
        Outcome::Passed(format!(
            "the CLI died (SIGKILL) at every step, leaving on disk exactly what the step implies; after reopening: {} (a box left `stopping` has its process killed); each restarted, ran a command and was removed, leaving nothing",
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
            assert_left_at(&env, step, &id);
            assert!(!pid_running(pid), "{step}: rm -f stops the box before removing it");
            seen.push(recover_and_finish(&env, step, &[&id]));
        }
        assert_eq!(seen.len(), 3);
        Outcome::Passed(format!(
            "the CLI died (SIGKILL) at every step, leaving on disk exactly what the step implies; after reopening: {} (a row whose directory is gone is an interrupted removal and is finished); the rest were started, used and removed, leaving nothing",
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
                "starting" => crash_at(
                    env.cli_with(&fake).args(["--ready-timeout", "60", "start", &id]),
                    "start:launched",
                ),
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
                        let (rt, _) = Runtime::open(&env.home, env.options(LockMode::Exclusive))
                            .await
                            .unwrap();
                        rt.store()
                            .execute_raw(&format!(
                                "UPDATE boxes SET state = 'unhealthy' WHERE id = '{id}'"
                            ))
                            .unwrap();
                        rt.close();
                    });
                }
                _ => unreachable!(),
            }
            seen.push(state);
            // The row's pid, read from the store file directly: opening a runtime would
            // recover (and kill) the box before we do.
            let listing = boxsock::boxsock_runtime::store::Store::open(env.home.join("boxsock.db"))
                .unwrap()
                .list()
                .unwrap();
            let rec = listing.boxes.iter().find(|b| b.id.as_str() == id).unwrap();
            assert_eq!(rec.state.to_string(), state, "the box is {state} before the kill");
            let pid = rec.process.map(|p| p.pid);
            let pid = pid.unwrap_or_else(|| panic!("{state}: no process recorded"));
            assert!(pid_running(pid), "{state}: box process {pid} not running before the kill");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
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

// ---------------------------------------------------------------------------------------
// Cleaners
// ---------------------------------------------------------------------------------------

scenario!(
    cleaner_deletes_the_per_uid_binding_directory_while_boxes_run,
    "Faults",
    "`rm -rf` the whole per-uid link directory while 3 boxes run, then `exec` in each (through a long-lived runtime, then through the CLI)",
    {
        let env = Env::new();
        let ids: Vec<String> = block_on(async {
            let (rt, _) = Runtime::open(&env.home, env.options(LockMode::Exclusive)).await.unwrap();
            let mut ids = Vec::new();
            for _ in 0..3 {
                let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
                rt.start(b.id.as_str()).await.unwrap();
                ids.push(b.id.to_string());
            }
            std::fs::remove_dir_all(env.per_uid_dir()).unwrap(); // what a /tmp cleaner does
            assert!(!env.per_uid_dir().exists());
            for id in &ids {
                assert_eq!(
                    exec_out(&rt, id, &["echo", id]).await.unwrap(),
                    (0, format!("{id}\n")),
                    "exec after the cleaner"
                );
            }
            rt.close();
            ids
        });
        let mode = std::fs::symlink_metadata(env.per_uid_dir()).unwrap();
        assert!(mode.is_dir() && mode.permissions().mode() & 0o777 == 0o700, "recreated 0700");
        assert_eq!(env.links(), ids.iter().cloned().collect::<BTreeSet<_>>(), "every link healed");
        // Again, with short-lived CLI processes.
        std::fs::remove_dir_all(env.per_uid_dir()).unwrap();
        for id in &ids {
            assert_eq!(ok(env.cli().args(["exec", id, "--", "echo", "again"])), "again\n");
        }
        assert_eq!(env.links().len(), 3);
        reopen_and_check_truthful(&env, "after the cleaner");
        for id in &ids {
            ok(env.cli().args(["rm", "-f", id]));
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_nothing_left(&env, &refs, "cleaner");
        Outcome::Passed(
            "every exec healed its link (the directory came back 0700 with one link per box), through a long-lived runtime and through the CLI; rm -f then left nothing".into(),
        )
    }
);

scenario!(
    deleting_a_box_sockets_directory_is_a_clear_error_and_rm_f_cleans_up,
    "Faults",
    "delete a running box's real `sockets/` directory, then `exec`, then `rm -f`",
    {
        let env = Env::new();
        let (variant, cli_err) = block_on(async {
            let (rt, _) = Runtime::open(&env.home, env.options(LockMode::Exclusive)).await.unwrap();
            let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
            let id = b.id.to_string();
            let pid = rt.start(&id).await.unwrap().process.unwrap().pid;
            let sockets = rt.layout().sockets_dir(&b.id);
            std::fs::remove_dir_all(&sockets).unwrap();
            let e = exec_out(&rt, &id, &["true"]).await.unwrap_err();
            let variant = match &e {
                RuntimeError::Binding(BindingError::MissingSocketDir { id: eid, path }) => {
                    assert_eq!((eid.as_str(), path), (id.as_str(), &sockets));
                    "Binding(MissingSocketDir)"
                }
                other => panic!("expected MissingSocketDir, got {other:?}"),
            };
            assert!(
                e.to_string().contains(sockets.to_str().unwrap())
                    && e.to_string().contains("does not exist"),
                "{e}"
            );
            assert!(pid_running(pid), "a failed exec does not kill the box");
            rt.close();
            // The CLI says the same in one line.
            let o = env.cli().args(["exec", &id, "--", "true"]).output().unwrap();
            assert_eq!(o.status.code(), Some(125));
            let err = stderr(&o);
            assert!(
                err.starts_with("boxsock: ")
                    && err.contains(sockets.to_str().unwrap())
                    && err.trim_end().lines().count() == 1,
                "{err}"
            );
            ok(env.cli().args(["rm", "-f", &id]));
            assert!(!pid_running(pid), "rm -f left the box process {pid}");
            assert_nothing_left(&env, &[&id], "rm -f after the sockets dir was deleted");
            (
                variant,
                err.replace(sockets.to_str().unwrap(), "<home>/boxes/<id>/sockets")
                    .replace(&id, "<id>"),
            )
        });
        Outcome::Passed(format!(
            "exec failed with {variant} naming the box and the directory (CLI, exit 125: `{}`); the box kept running; `rm -f` stopped it and left no row, directory, link or process",
            cli_err.trim_end()
        ))
    }
);

// ---------------------------------------------------------------------------------------
// Disk trouble (root only)
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted at a temp dir, lazily unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount, or say why not (for the skip reason).
    fn mount(dir: &Path, opts: &str) -> Result<Tmpfs, String> {
        use nix::mount::{MsFlags, mount};
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root to mount a tmpfs".into());
        }
        std::fs::create_dir_all(dir).unwrap();
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts),
        )
        .map_err(|e| format!("cannot mount a tmpfs here: {e}"))?;
        Ok(Tmpfs { dir: dir.to_owned() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A bind mount of `src` at `dir` that can be flipped read-only, unmounted on drop.
struct Bind {
    dir: PathBuf,
}

impl Bind {
    fn new(src: &Path, dir: &Path) -> Bind {
        use nix::mount::{MsFlags, mount};
        std::fs::create_dir_all(dir).unwrap();
        mount(Some(src), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind mount");
        Bind { dir: dir.to_owned() }
    }

    fn set_read_only(&self, ro: bool) {
        use nix::mount::{MsFlags, mount};
        let mut f = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if ro {
            f |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, &self.dir, None::<&str>, f, None::<&str>).expect("remount");
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Rows and box directories agree one to one.
fn rows_match_dirs(rt: &Runtime, env: &Env, ctx: &str) -> BTreeSet<String> {
    let l = rt.list().unwrap();
    assert!(l.bad.is_empty(), "{ctx}: {:?}", l.bad);
    let rows: BTreeSet<String> = l.boxes.iter().map(|b| b.id.to_string()).collect();
    assert_eq!(
        env.box_dirs(),
        rows,
        "{ctx}: half-written box (directory without row or row without directory)"
    );
    rows
}

fn os_error_text(e: &dyn std::error::Error) -> String {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    let mut last = String::new();
    while let Some(c) = cur {
        last = c.to_string();
        cur = c.source();
    }
    // The OS's words only (the outer errors name the temp path).
    last.rsplit(": ").next().unwrap_or_default().to_owned()
}

scenario!(
    read_only_home,
    "Faults",
    "root: put a home with a running and a created box on a filesystem remounted read-only, use it, remount it read-write",
    { read_only_home_body() }
);

fn read_only_home_body() -> Outcome {
    // Mount points live in their own temp dir, dropped (removed) after the mounts.
    let mnt = tempfile::tempdir().unwrap();
    let backing = match Tmpfs::mount(&mnt.path().join("fs"), "size=16m,mode=0700") {
        Ok(t) => t,
        Err(reason) => return Outcome::Skipped(reason),
    };
    // The boxes are made through the tmpfs mount itself (their processes keep log files
    // open for writing there); the home is then used through a bind mount of it that
    // can be flipped read-only (a mount with writers cannot).
    let ro_dir = mnt.path().join("ro");
    let mut env = Env::at(tempfile::tempdir().unwrap(), Some(backing.dir.join("home")));
    let (running, created) = block_on(async {
        let (rt, _) = Runtime::open(&env.home, env.options(LockMode::Exclusive)).await.unwrap();
        let a = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        rt.start(a.id.as_str()).await.unwrap();
        let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        rt.close();
        (a.id.to_string(), b.id.to_string())
    });
    let bind = Bind::new(&backing.dir, &ro_dir);
    env.home = bind.dir.join("home");
    let before = json(env.cli().args(["ls", "-a", "--json"]));
    bind.set_read_only(true);
    // The library: a clear error naming the path and the OS error.
    let e = block_on(Runtime::open(&env.home, env.options(LockMode::Shared))).unwrap_err();
    let lock = env.home.join("boxsock.lock");
    match &e {
        RuntimeError::Io { path, source, .. } => {
            assert_eq!(path, &lock);
            assert_eq!(source.raw_os_error(), Some(libc_erofs()), "{e}");
        }
        other => panic!("expected Io naming the lock file, got {other:?}"),
    }
    let lib_msg = e.to_string();
    assert!(
        lib_msg.contains(lock.to_str().unwrap()) && lib_msg.contains("Read-only file system"),
        "{lib_msg}"
    );
    // The CLI: `ls` is read-only and still lists the boxes...
    let listed = json(env.cli().args(["ls", "-a", "--json"]));
    assert_eq!(listed["boxes"], before["boxes"], "ls on a read-only home");
    // ...and every verb that writes fails the same way, in one line, and writes nothing.
    for args in
        [&["--backend", "host", "create"][..], &["start", &created], &["rm", "-f", &running]]
    {
        let o = env.cli().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains(lock.to_str().unwrap())
                && err.contains("Read-only file system")
                && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // The running box is untouched by all that.
    let pid = before["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == running.as_str())
        .unwrap()["pid"]
        .as_i64()
        .unwrap() as i32;
    assert!(pid_running(pid));
    bind.set_read_only(false);
    let after = json(env.cli().args(["ls", "-a", "--json"]));
    assert_eq!(before["boxes"], after["boxes"], "the store is intact");
    reopen_and_check_truthful(&env, "after remounting read-write");
    assert_eq!(ok(env.cli().args(["exec", &running, "--", "echo", "still"])), "still\n");
    ok(env.cli().args(["rm", "-f", &running]));
    use_and_remove(&env, &created, "created", "created box after rw");
    assert_nothing_left(&env, &[&running, &created], "read-only home");
    // Unmount before the mount points' temp dir goes.
    drop(bind);
    drop(backing);
    drop(mnt);
    Outcome::Passed(format!(
        "`ls` (read-only) listed both boxes; every writing open failed before writing anything: Io `{}`; the running box kept running; after remounting read-write both boxes listed unchanged, the running one answered exec, the created one started, and both were removed",
        lib_msg.replace(lock.to_str().unwrap(), "<home>/boxsock.lock")
    ))
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

/// Fill the filesystem of `dir` with one file until ENOSPC.
fn fill_blocks(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    p
}

/// Use every inode of the filesystem of `dir`.
fn fill_inodes(dir: &Path) -> PathBuf {
    let d = dir.join("inodes");
    std::fs::create_dir(&d).unwrap();
    for i in 0.. {
        match std::fs::File::create(d.join(i.to_string())) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
            Err(e) => panic!("filling inodes: {e}"),
        }
    }
    d
}

scenario!(
    full_home_filesystem,
    "Faults",
    "root: a home on a small tmpfs with a running and a created box; fill its blocks, then its inodes; create, start, exec; free the space",
    { full_home_filesystem_body() }
);

fn full_home_filesystem_body() -> Outcome {
    let mnt = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&mnt.path().join("fs"), "size=8m,nr_inodes=400,mode=0700") {
        Ok(t) => t,
        Err(reason) => return Outcome::Skipped(reason),
    };
    let env = Env::at(tempfile::tempdir().unwrap(), Some(fs.dir.join("home")));
    let observed = block_on(async {
        let (rt, _) = Runtime::open(&env.home, env.options(LockMode::Exclusive)).await.unwrap();
        let a = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        rt.start(a.id.as_str()).await.unwrap();
        let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        let before = rows_match_dirs(&rt, &env, "before");
        let mut observed = Vec::new();

        // 1. No free blocks.
        let filler = fill_blocks(&fs.dir);
        let e = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap_err();
        let what = match &e {
            RuntimeError::Store(StoreError::Sqlite { path, .. }) => {
                assert_eq!(path, &env.home.join("boxsock.db"));
                "Store(Sqlite)"
            }
            RuntimeError::Io { path, source, .. } => {
                assert!(path.starts_with(&env.home), "{e}");
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{e}");
                "Io"
            }
            other => panic!("expected a store or I/O error, got {other:?}"),
        };
        let msg = e.to_string();
        assert!(
            msg.contains(env.home.to_str().unwrap())
                && (msg.contains("full") || msg.contains("No space left")),
            "{msg}"
        );
        assert_eq!(rows_match_dirs(&rt, &env, "blocks full"), before, "nothing half-written");
        assert_eq!(
            exec_out(&rt, a.id.as_str(), &["echo", "ok"]).await.unwrap(),
            (0, "ok\n".into()),
            "a running box still works"
        );
        observed.push(format!("blocks full: create failed with {what} `{}`", os_error_text(&e)));
        std::fs::remove_file(&filler).unwrap();

        // 2. No free inodes.
        let inodes = fill_inodes(&fs.dir);
        let e = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap_err();
        match &e {
            RuntimeError::Io { op, path, source } => {
                // The create journal entry is the first thing a create writes.
                assert!(["create journal entry", "create box directory"].contains(op), "{e}");
                assert!(
                    path.starts_with(env.home.join("boxes"))
                        || path.starts_with(env.home.join("journal")),
                    "{e}"
                );
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{e}");
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert_eq!(rows_match_dirs(&rt, &env, "inodes full"), before, "nothing half-written");
        // Starting the created box needs a log file: refused clearly, the box left startable.
        let se = rt.start(b.id.as_str()).await;
        let start_seen = match &se {
            Ok(_) => "start succeeded".to_owned(),
            Err(e) => {
                assert!(
                    e.to_string().contains("No space left on device")
                        || e.to_string().contains("full"),
                    "{e}"
                );
                let st = rt.get(b.id.as_str()).unwrap().state;
                assert!(
                    matches!(st, BoxState::Created | BoxState::Stopped),
                    "a failed start leaves {st}"
                );
                "start failed naming ENOSPC, box left startable".to_owned()
            }
        };
        assert_eq!(exec_out(&rt, a.id.as_str(), &["echo", "ok"]).await.unwrap().1, "ok\n");
        observed.push(format!("inodes full: create failed with Io `create box directory <home>/boxes/<id>: …: {}`; {start_seen}", os_error_text(&e)));
        std::fs::remove_dir_all(&inodes).unwrap();

        // 3. Space freed: everything works again.
        assert_eq!(rows_match_dirs(&rt, &env, "freed"), before);
        if rt.get(b.id.as_str()).unwrap().state != BoxState::Running {
            rt.start(b.id.as_str()).await.unwrap();
        }
        let c = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        rt.start(c.id.as_str()).await.unwrap();
        for id in [&a.id, &b.id, &c.id] {
            assert_eq!(exec_out(&rt, id.as_str(), &["echo", "ok"]).await.unwrap().1, "ok\n");
            rt.remove(id.as_str(), true).await.unwrap();
        }
        rt.close();
        observed
    });
    assert_nothing_left(&env, &[], "full disk");
    // Unmount before the mount point's temp dir goes.
    drop(fs);
    drop(mnt);
    Outcome::Passed(format!(
        "{}; nothing half-written (rows and box directories matched after each failure); the running box answered exec throughout; after freeing space the boxes started, a new one was created, and all were removed",
        observed.join("; ")
    ))
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

const WORKERS: usize = 8;
const PER_WORKER: usize = 50;

/// Worker of `eight_processes_times_fifty_boxes_on_one_home`: run only as a child
/// process of it, with the home and link base in the environment. Creates its 50 boxes
/// (all alive at once), checks each, then removes them; prints the ids.
#[test]
#[ignore = "worker process for eight_processes_times_fifty_boxes_on_one_home"]
fn faults_shared_home_worker() {
    let home =
        PathBuf::from(std::env::var_os("BOXSOCK_FAULTS_HOME").expect("run by the parent test"));
    let links =
        PathBuf::from(std::env::var_os("BOXSOCK_FAULTS_LINKS").expect("run by the parent test"));
    block_on(async {
        let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
        o.strategy_config = StrategyConfig { base_dir: links, ..StrategyConfig::default() };
        o.lock_mode = LockMode::Shared;
        o.lock_wait = Some(LIMIT);
        o.health_monitor = false;
        let (rt, _) = Runtime::open(&home, o).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..PER_WORKER {
            let mut c = CreateOptions::new("short-symlink", "host");
            c.name = Some(format!("w{}-{i}", std::process::id()));
            let b = rt.create(c).await.unwrap();
            assert_eq!(rt.get(b.name.as_deref().unwrap()).unwrap().id, b.id);
            ids.push(b.id);
        }
        let s = rt.strategy("short-symlink").unwrap();
        for id in &ids {
            let link = s.binding_path(rt.layout(), id).unwrap();
            assert!(
                std::fs::metadata(&link).is_ok_and(|m| m.is_dir()),
                "{} does not resolve",
                link.display()
            );
        }
        for id in &ids {
            rt.remove(id.as_str(), false).await.unwrap();
            println!("BOX {id}");
        }
    });
}

scenario!(
    eight_processes_times_fifty_boxes_on_one_home,
    "Faults",
    "8 processes each create 50 boxes (all alive at once), check their links, then remove them, on one home through the library (shared home lock, decision 0003)",
    {
        let env = Env::new();
        std::fs::create_dir_all(&env.home).unwrap();
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "faults::faults_shared_home_worker",
                        "--ignored",
                        "--test-threads",
                        "1",
                        "--nocapture",
                    ])
                    .env("BOXSOCK_FAULTS_HOME", &env.home)
                    .env("BOXSOCK_FAULTS_LINKS", &env.link_base)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ids = BTreeSet::new();
        for w in workers {
            let o = w.wait_with_output().unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "worker failed: {out}{}", stderr(&o));
            assert!(out.contains("1 passed"), "the worker did not run: {out}");
            ids.extend(
                out.lines()
                    .filter_map(|l| l.split_once("BOX ").map(|(_, id)| id.trim()))
                    .map(str::to_owned),
            );
        }
        assert_eq!(ids.len(), WORKERS * PER_WORKER, "every box got its own id");
        // Strict leftovers: no row (good or corrupt), no box directory, no link, no
        // temporary link, nothing in the link base but the per-uid directory, no process.
        assert!(env.box_dirs().is_empty(), "leaked dirs: {:?}", env.box_dirs());
        assert!(env.links().is_empty(), "leaked links: {:?}", env.links());
        assert_eq!(
            names_in(&env.link_base),
            BTreeSet::from([env.per_uid_dir().file_name().unwrap().to_string_lossy().into_owned()])
        );
        let store =
            boxsock::boxsock_runtime::store::Store::open(env.home.join("boxsock.db")).unwrap();
        let l = store.list().unwrap();
        assert!(l.boxes.is_empty() && l.bad.is_empty(), "rows left: {l:?}");
        let home_entries = names_in(&env.home);
        for e in &home_entries {
            assert!(
                [
                    "boxes",
                    ".boxsock-home",
                    "journal",
                    "boxsock.db",
                    "boxsock.db-wal",
                    "boxsock.db-shm",
                    "boxsock.lock"
                ]
                .contains(&e.as_str()),
                "unexpected {e} in the home"
            );
        }
        Outcome::Passed(format!(
            "all {} boxes created (distinct ids and names, every link resolving) and removed by {WORKERS} concurrent processes; afterwards no row, box directory, link or temporary link was left",
            WORKERS * PER_WORKER
        ))
    }
);

scenario!(
    sixty_four_threads_ensure_one_binding_with_every_strategy,
    "Faults",
    "64 threads (half sharing one strategy instance, half with their own) ensure the same box's binding at once, 20 times each, with every strategy; then dial it from all 64",
    {
        let mut done = Vec::new();
        for reg in builtin_strategies().iter() {
            let env = Env::new();
            let config = env.strategy_config();
            let shared = builtin_strategies().build(reg.name, &config).unwrap();
            if !shared.capabilities().supported_here() {
                continue;
            }
            let layout = BoxLayout::new(&env.home);
            std::fs::create_dir_all(&env.home).unwrap();
            let id = BoxId::generate();
            boxsock::boxsock_core::boxdir::create_box_dirs(&layout, &id).unwrap();
            let barrier = Arc::new(Barrier::new(64));
            let threads: Vec<_> = (0..64)
                .map(|i| {
                    let s = if i % 2 == 0 {
                        shared.clone()
                    } else {
                        builtin_strategies().build(reg.name, &config).unwrap()
                    };
                    let (barrier, layout, id) = (barrier.clone(), layout.clone(), id.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..20 {
                            s.ensure(&layout, &id)?;
                        }
                        Ok::<_, BindingError>(s)
                    })
                })
                .collect();
            let instances: Vec<_> = threads
                .into_iter()
                .map(|t| t.join().unwrap().unwrap_or_else(|e| panic!("{}: ensure: {e}", reg.name)))
                .collect();
            if let Some(dir) = shared.binding_dir() {
                assert_eq!(
                    names_in(&dir),
                    BTreeSet::from([id.to_string()]),
                    "{}: exactly one entry, no temporary",
                    reg.name
                );
                let link = shared.binding_path(&layout, &id).unwrap();
                assert!(
                    std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
                    "{}",
                    reg.name
                );
                let (a, b) = (
                    std::fs::metadata(&link).unwrap(),
                    std::fs::metadata(layout.sockets_dir(&id)).unwrap(),
                );
                use std::os::unix::fs::MetadataExt;
                assert_eq!(
                    (a.dev(), a.ino()),
                    (b.dev(), b.ino()),
                    "{}: the link resolves to the box",
                    reg.name
                );
            }
            // The binding works for all of them.
            let listener = shared.bind_stream(&layout, &id, "agent.sock").unwrap();
            let addr = listener.address().clone();
            let dialers: Vec<_> = instances
                .into_iter()
                .map(|s| {
                    let (layout, id) = (layout.clone(), id.clone());
                    std::thread::spawn(move || {
                        s.connect_stream(&layout, &id, "agent.sock").map(drop)
                    })
                })
                .collect();
            for _ in 0..64 {
                listener
                    .accept()
                    .unwrap_or_else(|e| panic!("{}: accept at {addr:?}: {e}", reg.name));
            }
            for d in dialers {
                d.join().unwrap().unwrap_or_else(|e| panic!("{}: connect: {e}", reg.name));
            }
            drop(listener);
            shared.release(&layout, &id).unwrap();
            if let Some(dir) = shared.binding_dir() {
                assert!(
                    names_in(&dir).is_empty(),
                    "{}: release left {:?}",
                    reg.name,
                    names_in(&dir)
                );
            }
            if matches!(addr, SocketAddress::Path(_)) {
                let _ = std::fs::remove_file(layout.sockets_dir(&id).join("agent.sock"));
            }
            done.push(reg.name);
        }
        assert!(done.len() >= 3, "{done:?}");
        Outcome::Passed(format!(
            "for {}: all 1280 ensures succeeded, one binding entry resulted (no temporary left), all 64 threads connected through it, and release removed it",
            done.join(", ")
        ))
    }
);

scenario!(
    sweeping_while_another_process_creates_and_starts_boxes,
    "Faults",
    "while one thread runs `boxsock create` + `start` 10 times, `boxsock sweep` (which also recovers at open) loops on the same home and a strategy sweep of another home loops on the same link base; then exec in every box",
    {
        let env = Env::new();
        let other_home = BoxLayout::new(env.root.path().join("other-home"));
        std::fs::create_dir_all(other_home.boxes_dir()).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cli_sweeper = {
            let (stop, mut cmd) = (stop.clone(), env.cli());
            cmd.arg("sweep");
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let o = cmd.output().unwrap();
                    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
                    n += 1;
                }
                n
            })
        };
        let lib_sweeper = {
            let stop = stop.clone();
            let s = builtin_strategies().build("short-symlink", &env.strategy_config()).unwrap();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.sweep(&other_home).unwrap();
                    n += 1;
                }
                n
            })
        };
        let mut ids = Vec::new();
        for _ in 0..10 {
            let id = create(&env);
            ok(env.cli().args(["start", &id]));
            ids.push(id);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (n_cli, n_lib) = (cli_sweeper.join().unwrap(), lib_sweeper.join().unwrap());
        assert!(n_cli > 0 && n_lib > 0, "the sweepers ran ({n_cli}, {n_lib})");
        // No live box lost its binding: every link is there and every box answers.
        assert_eq!(
            env.links(),
            ids.iter().cloned().collect::<BTreeSet<_>>(),
            "links of live boxes"
        );
        for id in &ids {
            assert_eq!(ok(env.cli().args(["exec", id, "--", "echo", id])), format!("{id}\n"));
        }
        let boxes = reopen_and_check_truthful(&env, "after sweeping");
        assert!(boxes.iter().all(|(_, s)| s == "running") && boxes.len() == 10, "{boxes:?}");
        for id in &ids {
            ok(env.cli().args(["rm", "-f", id]));
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_nothing_left(&env, &refs, "sweep vs create");
        Outcome::Passed(
            "all 10 boxes were created and started while both sweepers ran; every link survived and every box answered exec; all were then removed, leaving nothing".into(),
        )
    }
);

scenario!(
    killing_a_run_rm_client_leaves_its_box_only_until_the_next_writing_command,
    "Faults",
    "kill -9 `boxsock run --rm -- sleep …` and its lifeline (the backstop's case: `a_killed_run_rm_client_takes_its_box_with_it` has the lifeline alive) while its command runs; then a read-only `ls` and `inspect`; then `sweep` (and, on a second box, `create`)",
    {
        let mut seen = Vec::new();
        for next in [&["sweep"][..], &["--backend", "host", "create"]] {
            let env = Env::new();
            let marker = format!("{}.{}", std::process::id(), next.len());
            let client = env
                .cli()
                .args(["--backend", "host", "run", "--rm", "--", "sleep", &marker])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Killed if an assertion fails before the test kills it.
            struct Reaped(std::process::Child);
            impl Drop for Reaped {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let client = Reaped(client);
            let command = format!("sleep\0{marker}\0");
            let command_runs = || {
                processes_mentioning(&marker).into_iter().any(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c == command.as_bytes())
                })
            };
            let deadline = Instant::now() + LIMIT;
            while !command_runs() {
                assert!(Instant::now() < deadline, "the command never ran");
                std::thread::sleep(Duration::from_millis(10));
            }
            let ids: Vec<String> = env.box_dirs().into_iter().collect();
            assert_eq!(ids.len(), 1, "{ids:?}");
            let id = ids[0].clone();
            let agent =
                json(env.cli().args(["inspect", "--json", &id]))["pid"].as_i64().unwrap() as i32;
            // The lifeline first (a child of the client running `boxsock … __lifeline`):
            // alive, it would remove the box at once.
            let lifelines: Vec<i32> = processes_mentioning("__lifeline")
                .into_iter()
                .filter(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.windows(id.len()).any(|w| w == id.as_bytes()))
                })
                .collect();
            assert_eq!(lifelines.len(), 1, "the client's lifeline: {lifelines:?}");
            let sigkill = nix::sys::signal::Signal::SIGKILL;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(lifelines[0]), sigkill).unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(client.0.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            drop(client);
            // Read-only verbs delete nothing.
            ok(env.cli().arg("ls"));
            assert_eq!(json(env.cli().args(["inspect", "--json", &id]))["state"], "running");
            assert!(pid_running(agent) && env.links().contains(&id));
            ok(env.cli().args(next));
            let deadline = Instant::now() + LIMIT;
            while pid_running(agent) || command_runs() {
                assert!(
                    Instant::now() < deadline,
                    "{next:?}: the abandoned box's processes survived"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let listed = json(env.cli().args(["ls", "-a", "--json"]));
            assert!(
                listed["boxes"].as_array().unwrap().iter().all(|b| b["id"] != id.as_str()),
                "{listed}"
            );
            assert!(
                !env.links().contains(&id) && !env.box_dirs().contains(&id),
                "{next:?}: link or directory left"
            );
            for b in listed["boxes"].as_array().unwrap() {
                ok(env.cli().args(["rm", "-f", b["id"].as_str().unwrap()]));
            }
            seen.push(format!("`{}`", next.last().unwrap()));
        }
        Outcome::Passed(format!(
            "after the kill the box kept running through `ls` and `inspect` (read-only verbs delete nothing); the next {} removed it: no row, directory, link, agent or command left",
            seen.join(" and the next ")
        ))
    }
);
