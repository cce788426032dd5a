//! The CLI's docker/podman conventions (issue 13, point 3), with the real binary, the
//! host backend, real agents and temp homes.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxsock::{CreateOptions, Runtime};
use boxsock_test_support::{Need, skip};
use common::{
    Env, agent_dir, json, never_ready_agent, ok, pid_running, run, stderr, stdout, tree, wait_until,
};
use serde_json::Value;

/// [`common::boxsock_in`] on the host backend and without `NO_COLOR`.
fn boxsock_in(env: &Env, helper_dir: &Path) -> Command {
    let mut c = common::boxsock_in(env, helper_dir);
    c.env("BOXSOCK_BACKEND", "host").env_remove("NO_COLOR");
    c
}

fn boxsock(env: &Env) -> Command {
    boxsock_in(env, &agent_dir())
}

fn ids(v: &Value) -> Vec<String> {
    v["boxes"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_owned()).collect()
}

fn create(env: &Env, name: Option<&str>) -> String {
    let mut c = boxsock(env);
    c.arg("create");
    if let Some(n) = name {
        c.args(["--name", n]);
    }
    ok(&mut c).trim().to_owned()
}

fn rm_all(env: &Env) {
    for id in ids(&json(boxsock(env).args(["ls", "-a", "--json"]))) {
        ok(boxsock(env).args(["rm", "-f", &id]));
    }
}

#[test]
fn usage_errors_exit_125_and_help_and_version_exit_0() {
    let env = Env::new();
    for args in [
        &["frobnicate"][..],
        &["ls", "--bogus"],
        &["run", "--rm"],
        &["run", "-d", "--", "true"],
        &["run", "-d", "--rm"],
        &["start"],
        &[],
    ] {
        let o = run(boxsock(&env).args(args));
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}: a usage error says why");
    }
    for args in [&["--help"][..], &["--version"], &["ls", "--help"]] {
        let o = run(boxsock(&env).args(args));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty());
    }
    assert!(!env.home.exists(), "a usage error created the home");
}

#[test]
fn commands_that_cannot_run_exit_127_or_126_and_signals_128_plus_n() {
    let env = Env::new();
    let o = run(boxsock(&env).args(["run", "--rm", "--", "no-such-command-xyz"]));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("cannot run \"no-such-command-xyz\": command not found"), "{err}");
    assert!(!err.contains("Spawn") && !err.contains("agent error"), "internals leak: {err}");

    // Not executable (no x bit for anyone: refused even to root).
    let d = env.root.path().join("notexec");
    std::fs::write(&d, "#!/bin/sh\necho hi\n").unwrap();
    let o = run(boxsock(&env).args(["run", "--rm", "--"]).arg(&d));
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));

    for (sig, code) in [("TERM", 143), ("KILL", 137)] {
        let o =
            run(boxsock(&env).args(["run", "--rm", "--", "sh", "-c", &format!("kill -{sig} $$")]));
        assert_eq!(o.status.code(), Some(code), "SIG{sig}: {}", stderr(&o));
    }
    // boxsock's own failures are 125, for every verb.
    for args in [
        &["start", "nosuch"][..],
        &["exec", "nosuch", "--", "true"],
        &["inspect", "nosuch"],
        &["logs", "nosuch"],
    ] {
        let o = run(boxsock(&env).args(args));
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
    }
    assert!(ids(&json(boxsock(&env).args(["ls", "-a", "--json"]))).is_empty());
}

#[test]
fn run_leaves_a_stopped_box_and_run_d_a_running_one() {
    let env = Env::new();
    let o =
        run(boxsock(&env).args(["run", "--name", "once", "--", "sh", "-c", "echo out; exit 3"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    let i = json(boxsock(&env).args(["inspect", "--json", "once"]));
    assert_eq!(i["state"], "stopped", "like an exited container: {i}");
    assert!(i["pid"].is_null(), "{i}");
    assert!(
        ids(&json(boxsock(&env).args(["ls", "--json"]))).is_empty(),
        "ls shows running boxes only"
    );
    assert_eq!(ids(&json(boxsock(&env).args(["ls", "-a", "--json"]))).len(), 1);

    let id = ok(boxsock(&env).args(["run", "-d", "--name", "bg"])).trim().to_owned();
    assert_eq!(id.len(), 12, "{id}");
    let i = json(boxsock(&env).args(["inspect", "--json", &id]));
    assert_eq!(i["state"], "running", "{i}");
    assert!(pid_running(i["pid"].as_i64().unwrap() as i32));
    assert_eq!(ok(boxsock(&env).args(["exec", "bg", "--", "echo", "hi"])), "hi\n");
    rm_all(&env);
}

#[test]
fn interrupting_run_prints_the_id_and_leaves_the_box_stopped() {
    let env = Env::new();
    let child = boxsock(&env)
        .args(["run", "--name", "int", "--", "sleep", "1000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = 0;
    wait_until("the box to run", || {
        let o = run(boxsock(&env).args(["inspect", "--json", "int"]));
        o.status.success() && {
            let i: Value = serde_json::from_slice(&o.stdout).unwrap();
            agent = i["pid"].as_i64().unwrap_or(0) as i32;
            i["state"] == "running"
        }
    });
    // Give the exec a moment to reach the agent.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let i = json(boxsock(&env).args(["inspect", "--json", "int"]));
    let id = i["id"].as_str().unwrap();
    assert!(stderr(&o).contains(id), "the id is said: {}", stderr(&o));
    assert_eq!(i["state"], "stopped", "{i}");
    assert!(!pid_running(agent), "agent {agent} still running");
    rm_all(&env);
}

#[test]
fn env_key_alone_passes_the_host_value_through_and_an_absent_one_is_not_set() {
    let env = Env::new();
    let script = "echo \"${PASS_ME-unset}|${NOT_ON_HOST_XYZ-unset}|$GIVEN\"";
    let out = ok(boxsock(&env).env("PASS_ME", "from host").env_remove("NOT_ON_HOST_XYZ").args([
        "run",
        "--rm",
        "-e",
        "PASS_ME",
        "-e",
        "NOT_ON_HOST_XYZ",
        "-e",
        "GIVEN=x=y",
        "--",
        "sh",
        "-c",
        script,
    ]));
    assert_eq!(out, "from host|unset|x=y\n");
}

/// A reader of a child's stdout into a shared buffer.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

#[test]
fn logs_prints_the_box_log_and_follow_ends_when_the_box_stops() {
    let env = Env::new();
    let id = ok(boxsock(&env).args(["run", "-d"])).trim().to_owned();
    let log =
        json(boxsock(&env).args(["inspect", "--json", &id]))["log"].as_str().unwrap().to_owned();
    let append = |s: &str| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(s.as_bytes())
            .unwrap();
    };
    append("first marker line\n");
    let out = ok(boxsock(&env).args(["logs", &id[..6]]));
    assert!(out.ends_with("first marker line\n"), "{out:?}");
    assert_eq!(out.as_bytes(), std::fs::read(&log).unwrap(), "the whole log, as is");

    let mut f = boxsock(&env).args(["logs", "-f", &id]).stdout(Stdio::piped()).spawn().unwrap();
    let buf = collect(f.stdout.take().unwrap());
    wait_until("the existing log", || {
        String::from_utf8_lossy(&buf.lock().unwrap()).contains("first marker")
    });
    append("second marker line\n");
    wait_until("the appended line", || {
        String::from_utf8_lossy(&buf.lock().unwrap()).contains("second marker line")
    });
    assert!(f.try_wait().unwrap().is_none(), "-f ended while the box runs");
    ok(boxsock(&env).args(["stop", &id]));
    let start = Instant::now();
    loop {
        if let Some(st) = f.try_wait().unwrap() {
            assert!(st.success(), "{st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "logs -f did not end after the box stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rm_all(&env);
}

#[test]
fn ls_filters_aligns_and_shows_boxes_exactly_as_inspect_does() {
    let env = Env::new();
    let a = create(&env, Some("a-rather-long-box-name"));
    let b = create(&env, None);
    ok(boxsock(&env).args(["start", &b]));

    assert_eq!(ok(boxsock(&env).args(["ls", "-q"])), format!("{b}\n"), "running only, ids only");
    assert_eq!(
        ok(boxsock(&env).args(["ps", "-a", "-q"])),
        format!("{a}\n{b}\n"),
        "ps is ls; -a adds stopped/created"
    );
    let table = ok(boxsock(&env).args(["ls", "-a"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    // Every column starts at the same offset in every line.
    for col in ["NAME", "STATE", "STRATEGY", "BACKEND"] {
        let at = lines[0].find(col).unwrap();
        for l in &lines[1..] {
            let row = l.as_bytes();
            assert!(row[at] != b' ' && row[at - 1] == b' ', "column {col} misaligned:\n{table}");
        }
    }
    let state_at = lines[0].find("STATE").unwrap();
    assert!(lines[1][state_at..].starts_with("created"), "{table}");
    assert!(lines[2][state_at..].starts_with("running"), "{table}");

    let l = json(boxsock(&env).args(["ls", "-a", "--json"]));
    for (n, id) in [&a, &b].into_iter().enumerate() {
        let i = json(boxsock(&env).args(["inspect", "--json", id]));
        assert_eq!(l["boxes"][n], i, "ls --json and inspect --json show the same box");
    }
    // Several ids: an array, in order.
    let both = json(boxsock(&env).args(["inspect", "--json", &b, &a]));
    assert_eq!(
        both.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect::<Vec<_>>(),
        vec![b.as_str(), a.as_str()]
    );
    rm_all(&env);
}

fn assert_no_result_enums(v: &Value) {
    match v {
        Value::Object(m) => {
            assert!(!m.contains_key("Ok") && !m.contains_key("Err"), "a Rust Result leaked: {v}");
            m.values().for_each(assert_no_result_enums);
        }
        Value::Array(a) => a.iter().for_each(assert_no_result_enums),
        _ => {}
    }
}

#[test]
fn backends_and_doctor_json_have_no_rust_result_enums() {
    let env = Env::new();
    let b = json(boxsock(&env).args(["backends", "--json"]));
    assert_no_result_enums(&b);
    let host = b.as_array().unwrap().iter().find(|x| x["name"] == "host").unwrap();
    let pairing = host["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["strategy"] == "short-symlink")
        .unwrap();
    assert_eq!(pairing["compatible"], true, "{host}");
    assert!(pairing["reason"].is_null());
    let d = json(boxsock(&env).args(["doctor", "--json"]));
    assert_no_result_enums(&d);
    assert_eq!(d["backends"], b, "doctor shows backends in the same shape");
}

#[test]
fn unique_id_prefixes_and_several_ids_work_and_each_failure_is_reported() {
    let env = Env::new();
    let a = create(&env, None);
    let b = create(&env, None);
    let (pa, pb) = (&a[..8], &b[..8]);
    assert_ne!(pa, pb, "12 random base62 chars share 8 with odds of 2^-47");
    assert_eq!(ok(boxsock(&env).args(["start", pa, pb])), format!("{a}\n{b}\n"));
    // Starting a running box succeeds and changes nothing.
    let pid = json(boxsock(&env).args(["inspect", "--json", pa]))["pid"].clone();
    assert_eq!(ok(boxsock(&env).args(["start", pa])), format!("{a}\n"));
    assert_eq!(json(boxsock(&env).args(["inspect", "--json", &a]))["pid"], pid);
    assert_eq!(ok(boxsock(&env).args(["exec", pb, "--", "echo", "via prefix"])), "via prefix\n");

    // One bad id among good ones: the good ones are done, each failure said once.
    let o = run(boxsock(&env).args(["stop", pa, "nosuchbox", pb]));
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stdout(&o), format!("{a}\n{b}\n"));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("nosuchbox"), "{err}");
    for id in [&a, &b] {
        assert_eq!(json(boxsock(&env).args(["inspect", "--json", id]))["state"], "stopped");
    }
    let o = run(boxsock(&env).args(["inspect", pa, "nosuchbox"]));
    assert_eq!(o.status.code(), Some(125));
    assert!(stdout(&o).contains(&a));
    assert_eq!(ok(boxsock(&env).args(["rm", pa, pb])), format!("{a}\n{b}\n"));
    assert!(ids(&json(boxsock(&env).args(["ls", "-a", "--json"]))).is_empty());
}

#[test]
fn a_failed_start_prints_its_error_once_and_logs_are_never_coloured_off_a_terminal() {
    let env = Env::new();
    let fake = never_ready_agent(env.root.path(), "never-ready");
    let id = ok(boxsock_in(&env, &fake).arg("create")).trim().to_owned();
    let o = run(boxsock_in(&env, &fake).args(["--ready-timeout", "0.5", "start", &id]));
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.starts_with("boxsock: ") && err.contains("readiness"), "{err}");
    assert!(!err.contains("WARN"), "the error is printed once, not also logged: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("boxsock: ")).count(), 1, "{err}");

    // Logs at debug on a pipe: no ANSI escapes.
    let o = run(boxsock(&env).env("RUST_LOG", "debug").arg("create"));
    assert!(o.status.success());
    ok(boxsock(&env).args(["rm", stdout(&o).trim()]));
    assert!(!o.stderr.is_empty(), "debug logs expected");
    assert!(!o.stderr.contains(&0x1b), "colour on a pipe: {}", stderr(&o));
    ok(boxsock(&env).args(["rm", "-f", &id]));
}

/// `script` gives the command a terminal; stderr then goes to it.
fn on_a_terminal(env: &Env, extra_env: &[(&str, &str)]) -> Option<Vec<u8>> {
    if Command::new("script").arg("--version").output().is_err() {
        skip(
            Need::Program { name: "script", package: "bsdutils" },
            "no `script` to give boxsock a terminal",
        );
        return None;
    }
    // `create` logs at debug ("created").
    let cmd = format!("{} create", env!("CARGO_BIN_EXE_boxsock"));
    let mut c = boxsock(env);
    c.env("RUST_LOG", "debug");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    // `Command` for script itself, with boxsock's environment.
    let mut s = Command::new("script");
    s.args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::null());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    let o = s.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    Some(o.stdout)
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = Env::new();
    let Some(coloured) = on_a_terminal(&env, &[]) else { return };
    assert!(
        coloured.contains(&0x1b),
        "debug logs on a terminal are coloured: {}",
        String::from_utf8_lossy(&coloured)
    );
    let plain = on_a_terminal(&env, &[("NO_COLOR", "1")]).unwrap();
    assert!(!plain.is_empty());
    assert!(!plain.contains(&0x1b), "NO_COLOR: {}", String::from_utf8_lossy(&plain));
}

#[test]
fn an_invalid_rust_log_is_reported_and_the_verb_still_runs() {
    let env = Env::new();
    let o = run(boxsock(&env).env("RUST_LOG", "boxsock=notalevel").args(["ls"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("RUST_LOG") && err.contains("invalid log filter") && err.contains("notalevel"),
        "{err}"
    );
}

#[test]
fn read_only_verbs_change_nothing_and_sweep_reports_what_the_opening_sweep_removed() {
    let env = Env::new();
    let id = create(&env, Some("keep"));
    // A dangling link of a box that is gone (a crash, a temp home): what a sweep removes.
    let dangling = env.per_uid_dir().join("Gone12345678");
    std::os::unix::fs::symlink(
        env.root.path().join("no/such/home/boxes/Gone12345678/sockets"),
        &dangling,
    )
    .unwrap();
    // The box's own link deleted (a /tmp cleaner): what an ensure would recreate.
    std::fs::remove_file(env.per_uid_dir().join(&id)).unwrap();
    let before = (tree(&env.home), tree(&env.link_base));
    for args in [
        &["ls"][..],
        &["ls", "-a", "--json"],
        &["inspect", "keep"],
        &["inspect", "--json", &id],
        &["logs", "keep"],
        &["doctor"],
        &["doctor", "--json"],
        &["backends"],
    ] {
        ok(boxsock(&env).args(args));
        assert_eq!((tree(&env.home), tree(&env.link_base)), before, "{args:?} changed something");
    }
    assert!(!env.home.join("abstract-socket.key").exists());
    let doctor = ok(boxsock(&env).args(["--strategy", "abstract", "doctor"]));
    assert!(!doctor.is_empty());
    assert!(!env.home.join("abstract-socket.key").exists(), "doctor created the abstract secret");

    // `sweep` opens for writing (its opening sweep removes the dangling link) and says so.
    let out = ok(boxsock(&env).arg("sweep"));
    assert!(out.contains("Gone12345678"), "{out}");
    assert!(std::fs::symlink_metadata(&dangling).is_err());
    rm_all(&env);
}

#[test]
fn doctor_on_a_missing_home_says_so_and_creates_nothing() {
    let env = Env::new();
    let out = ok(boxsock(&env).arg("doctor"));
    assert!(out.contains("home does not exist"), "{out}");
    let j = json(boxsock(&env).args(["doctor", "--json"]));
    assert_eq!(j["home_exists"], false);
    assert!(!env.home.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_held_by_a_library_runtime_is_listed_at_once() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    rt.start(b.id.as_str()).await.unwrap();
    // This process holds the home exclusively; the CLI (default --lock-wait 30 s) reads it.
    for args in [&["ls", "-q"][..], &["inspect", "--json", b.id.as_str()]] {
        let start = Instant::now();
        let o = tokio::task::spawn_blocking({
            let mut c = boxsock(&env);
            c.args(args);
            move || c.output().unwrap()
        })
        .await
        .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(start.elapsed() < Duration::from_secs(3), "{args:?} waited {:?}", start.elapsed());
        assert!(stdout(&o).contains(b.id.as_str()), "{args:?}: {}", stdout(&o));
    }
    // The library: starting a running box returns it as it is.
    let again = rt.start(b.id.as_str()).await.unwrap();
    assert_eq!(again.process, rt.get(b.id.as_str()).unwrap().process);
    assert_eq!(again.state, boxsock::BoxState::Running);
    // A writing verb still waits for it (and says who holds the home).
    let o = run(boxsock(&env).args(["--lock-wait", "0", "stop", b.id.as_str()]));
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains(&format!("pid {}", std::process::id())), "{}", stderr(&o));
    rt.stop(b.id.as_str(), None).await.unwrap();
    rt.remove(b.id.as_str(), false).await.unwrap();
}

/// `inspect` shows the entry the strategy keeps for a box and `doctor` the directory
/// those entries live in, so a user reading a short socket path can find both; with
/// `direct` there is neither.
#[test]
fn inspect_shows_the_box_binding_and_doctor_the_binding_directory() {
    let env = Env::new();
    let id = create(&env, None);
    ok(boxsock(&env).args(["start", &id]));
    let info = json(boxsock(&env).args(["inspect", "--json", &id]));
    let binding = info["binding"].as_str().unwrap_or_else(|| panic!("no binding in {info}"));
    let target =
        std::fs::read_link(binding).unwrap_or_else(|e| panic!("{binding} is not a link: {e}"));
    assert_eq!(target, env.home.join("boxes").join(&id).join("sockets"), "{binding}");
    let text = ok(boxsock(&env).args(["inspect", &id]));
    assert!(text.contains(&format!("binding:   {binding}")), "{text}");

    let doctor = json(boxsock(&env).args(["doctor", "--json"]));
    let strategies = doctor["strategies"].as_array().expect("strategies");
    let by_name = |n: &str| {
        strategies.iter().find(|s| s["name"] == n).unwrap_or_else(|| panic!("no {n} in {doctor}"))
    };
    let dir = by_name("short-symlink")["binding_dir"]
        .as_str()
        .expect("short-symlink has a binding directory");
    assert_eq!(
        Path::new(binding).parent(),
        Some(Path::new(dir)),
        "the link lives in the directory doctor shows"
    );
    assert!(by_name("direct")["binding_dir"].is_null(), "direct keeps no shared directory");

    let direct = ok(boxsock(&env).args(["create", "--strategy", "direct"])).trim().to_owned();
    let info = json(boxsock(&env).args(["inspect", "--json", &direct]));
    assert!(info["binding"].is_null(), "direct keeps no entry: {info}");
    rm_all(&env);
}
