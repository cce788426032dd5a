//! The `boxsock` binary end to end: real processes, temp homes and link bases.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxsock::{Runtime, RuntimeError};
use boxsock_test_support::{Unmakeable, skip_allowed};
use common::{
    Env, LIMIT, agent_dir, boxsock, boxsock_in, json, ok, pid_running, run, stderr, stdout, tree,
    wait_until,
};

fn assert_nothing_left(env: &Env) {
    let l = json(boxsock(env).args(["ls", "-a", "--json"]));
    assert_eq!(l["boxes"].as_array().unwrap().len(), 0, "{l}");
    assert!(env.links().is_empty(), "links left: {:?}", env.links());
    assert!(env.box_dirs().is_empty(), "box dirs left: {:?}", env.box_dirs());
}

#[test]
fn run_in_a_home_deeper_than_200_bytes_prints_output_and_exits_with_the_status() {
    let env = Env::deep(201);
    assert!(env.home.as_os_str().len() > 200);
    let o = run(boxsock(&env).args([
        "--backend",
        "host",
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "echo hello from $0; echo oops >&2; exit 7",
    ]));
    assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from sh\n");
    assert_eq!(stderr(&o), "oops\n", "nothing but the command's stderr (no logs)");
    assert_nothing_left(&env);

    // stdin is forwarded with -i.
    let mut child = boxsock(&env)
        .args(["--backend", "host", "run", "--rm", "-i", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), "SHOUT\n");
    assert_nothing_left(&env);
}

#[test]
fn the_verbs_take_ids_or_names_and_inspect_reports_the_live_process_and_sockets() {
    let env = Env::deep(120);
    let id =
        ok(boxsock(&env).args(["--backend", "host", "create", "--name", "web"])).trim().to_owned();
    assert_eq!(id.len(), 12, "{id}");
    assert_eq!(ok(boxsock(&env).args(["start", "web"])).trim(), id);
    assert_eq!(ok(boxsock(&env).args(["exec", "web", "--", "echo", "in", "box"])), "in box\n");
    let o = run(boxsock(&env).args(["exec", &id, "--", "sh", "-c", "exit 42"]));
    assert_eq!(o.status.code(), Some(42));

    let i = json(boxsock(&env).args(["inspect", "web", "--json"]));
    assert_eq!(i["id"], id.as_str());
    assert_eq!(i["state"], "running");
    assert_eq!(i["strategy"], "short-symlink");
    assert_eq!(i["backend"], "host");
    let pid = i["pid"].as_i64().unwrap() as i32;
    assert!(pid_running(pid) && i["alive"] == true);
    assert!(i["start_time"].as_u64().is_some());
    let sockets = i["sockets"].as_array().unwrap();
    // The host agent reports readiness on an inherited channel: no `ready` socket.
    assert!(!sockets.iter().any(|s| s["socket"] == "ready"), "{i}");
    {
        let s = sockets
            .iter()
            .find(|s| s["socket"] == "agent")
            .unwrap_or_else(|| panic!("agent missing: {i}"));
        let addr = s["address"].as_str().unwrap();
        assert!(addr.starts_with(env.per_uid_dir().to_str().unwrap()), "{addr}");
        assert_eq!(s["bytes"].as_u64().unwrap() as usize, addr.len());
        assert_eq!(s["limit"], 108);
        assert_eq!(s["fits"], true);
    }
    let human = ok(boxsock(&env).args(["inspect", &id]));
    assert!(human.contains(&format!("pid {pid}")) && human.contains("agent.sock"), "{human}");

    let l = json(boxsock(&env).args(["ls", "-a", "--json"]));
    assert_eq!(l["boxes"][0]["id"], id.as_str());
    assert_eq!(l["boxes"][0]["name"], "web");
    let table = ok(boxsock(&env).arg("ls"));
    assert!(table.lines().nth(1).unwrap().starts_with(&id), "{table}");

    // A running box needs -f.
    let o = run(boxsock(&env).args(["rm", "web"]));
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("-f"), "{}", stderr(&o));
    assert_eq!(ok(boxsock(&env).args(["stop", "web"])).trim(), id);
    assert!(!pid_running(pid), "stopped box's process {pid} still running");
    assert_eq!(json(boxsock(&env).args(["inspect", "web", "--json"]))["state"], "stopped");
    assert_eq!(ok(boxsock(&env).args(["rm", "web"])).trim(), id);
    assert_nothing_left(&env);
}

#[test]
fn errors_are_one_line_on_stderr_and_leave_nothing_behind() {
    let env = Env::new();
    for (args, code, needle) in [
        (&["start", "nosuchbox"][..], 125, "nosuchbox"),
        (&["exec", "nosuchbox", "--", "true"][..], 125, "nosuchbox"),
        (&["rm", "nosuchbox"][..], 125, "nosuchbox"),
        (&["inspect", "nosuchbox"][..], 125, "nosuchbox"),
        (&["--backend", "host", "create", "--name", "../evil"][..], 125, "invalid box name"),
        (
            &["--backend", "host", "--strategy", "nope", "create"][..],
            125,
            "unknown strategy \"nope\"",
        ),
        (
            &["--backend", "host", "run", "--name", "bad name", "--", "true"][..],
            125,
            "invalid box name",
        ),
    ] {
        let o = run(boxsock(&env).args(args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.starts_with("boxsock: ") && err.contains(needle), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: stdout {:?}", stdout(&o));
    }
    assert_nothing_left(&env);
    assert!(!env.home.join("evil").exists() && !env.root.path().join("evil").exists());
    // A verb naming a box in a home that does not exist does not create the home.
    let missing = env.root.path().join("typo-home");
    for args in [&["start", "x"][..], &["inspect", "x"], &["rm", "x"], &["ls"]] {
        let o = run(boxsock(&env).arg("--home").arg(&missing).args(args));
        if args[0] != "ls" {
            assert_eq!(o.status.code(), Some(125), "{args:?}");
            assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
        }
        assert!(!missing.exists(), "{args:?} created the home");
    }
}

#[tokio::test]
async fn the_default_backend_when_unavailable_says_why_and_suggests_host() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let avail = rt.backend("libkrun").unwrap().available();
    rt.close();
    if avail == boxsock::Availability::Available {
        skip_allowed(Unmakeable::KvmAvailable, "libkrun is available on this machine");
        return;
    }
    let o = run(boxsock(&env).arg("create"));
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("libkrun") && err.contains("unavailable") && err.contains("--backend host"),
        "{err}"
    );
    assert_nothing_left(&env);
}

#[tokio::test]
async fn a_busy_home_is_a_clear_error_naming_the_holder() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    // A writing verb (read-only ones do not wait: conventions.rs).
    let o = run(boxsock(&env).args(["--lock-wait", "0", "--backend", "host", "create"]));
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains(&format!("is in use by pid {}", std::process::id())), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
    rt.close();
    ok(boxsock(&env).args(["--lock-wait", "0", "ls"]));
}

#[test]
fn doctor_reports_every_strategy_socket_and_backend() {
    let env = Env::deep(160);
    let d = json(boxsock(&env).args(["doctor", "--json"]));
    assert_eq!(d["home_bytes"].as_u64().unwrap() as usize, env.home.as_os_str().len());
    let strat = |n: &str| {
        d["strategies"].as_array().unwrap().iter().find(|s| s["name"] == n).unwrap().clone()
    };
    assert_eq!(strat("short-symlink")["all_fit"], true);
    let direct = strat("direct");
    assert_eq!(direct["all_fit"], false, "a 160-byte home cannot fit direct paths");
    let agent =
        direct["sockets"].as_array().unwrap().iter().find(|s| s["socket"] == "agent").unwrap();
    assert!(
        agent["bytes"].as_u64().unwrap() > 107 && agent["error"].as_str().unwrap().contains("108"),
        "{agent}"
    );
    // Derived names are listed (libkrun declares some), each with its own verdict.
    let ss = strat("short-symlink");
    assert!(
        ss["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["socket"].as_str().unwrap().contains("derived")),
        "{ss}"
    );
    let host = d["backends"].as_array().unwrap().iter().find(|b| b["name"] == "host").unwrap();
    assert_eq!(host["available"], true);
    assert!(host["isolation"].as_str().unwrap().contains("no isolation"));
    // The sandbox says what it checked: each feature a box is made of, with a finding.
    #[cfg(target_os = "linux")]
    {
        let sb = d["backends"].as_array().unwrap().iter().find(|b| b["name"] == "sandbox").unwrap();
        let probes: Vec<&str> =
            sb["probes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        for n in ["namespaces", "user namespaces", "cgroups", "seccomp", "landlock", "pasta"] {
            assert!(probes.contains(&n), "sandbox probes lack {n}: {sb}");
        }
    }
    let human = ok(boxsock(&env).arg("doctor"));
    #[cfg(target_os = "linux")]
    assert!(human.contains("\n  seccomp: ok, docker's default profile"), "{human}");
    assert!(human.contains("strategy direct: SOME ADDRESSES DO NOT FIT"), "{human}");
    assert!(human.contains("strategy short-symlink: every address fits"), "{human}");
    // Doctor never creates the home.
    assert!(!env.home.exists());
    let names = ok(boxsock(&env).arg("strategies"));
    for n in ["short-symlink", "direct", "abstract"] {
        assert!(names.contains(n), "{names}");
    }
    // The binary's lists are the facade's one registry: every strategy in it is listed
    // by `strategies` and reported by `doctor`, with no list in the CLI to keep in step.
    let registry = boxsock::builtin_strategies().names();
    let listed: Vec<String> = json(boxsock(&env).args(["strategies", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, registry, "`boxsock strategies --json` lists the registry, in name order");
    let doctored: Vec<&str> =
        d["strategies"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for n in &registry {
        assert!(doctored.contains(n), "doctor does not report strategy {n}: {doctored:?}");
    }
    // Every backend of the registry, with no count to keep in step.
    let b = json(boxsock(&env).args(["backends", "--json"]));
    assert_eq!(b.as_array().unwrap().len(), boxsock::builtin_backends().names().len());
}

/// The example third-party strategy (strategies/xdg-hashed: its crate plus one line in
/// cli/Cargo.toml) works through the binary like a built-in: listed, doctored, and a box
/// under a deep home runs, inspects and is removed, its sockets under
/// `$XDG_RUNTIME_DIR/boxsock/<hash of the home>/<id>`.
#[test]
fn the_example_strategy_added_by_one_line_runs_a_box_under_xdg_runtime_dir() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::deep(160);
    let xdg = env.root.path().join("run");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cmd = |args: &[&str]| {
        let mut c = boxsock(&env);
        c.env("XDG_RUNTIME_DIR", &xdg)
            .args(["--strategy", "xdg-hashed", "--backend", "host"])
            .args(args);
        c
    };
    let listed = ok(&mut cmd(&["strategies"]));
    assert!(listed.lines().any(|l| l.starts_with("xdg-hashed ")), "{listed}");
    let d = json(&mut cmd(&["doctor", "--json"]));
    let s = d["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xdg-hashed")
        .unwrap_or_else(|| panic!("doctor: {d}"))
        .clone();
    assert_eq!(s["all_fit"], true, "{s}");

    let id = ok(&mut cmd(&["create", "--name", "x"])).trim().to_owned();
    ok(&mut cmd(&["start", "x"]));
    assert_eq!(ok(&mut cmd(&["exec", "x", "--", "echo", "via", "xdg"])), "via xdg\n");
    let i = json(&mut cmd(&["inspect", "x", "--json"]));
    assert_eq!(i["strategy"], "xdg-hashed");
    let home_dir = xdg.join("boxsock").join(boxsock_xdg_hashed::home_hash(&env.home));
    let agent = i["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["socket"] == "agent")
        .unwrap_or_else(|| panic!("{i}"));
    assert_eq!(
        agent["address"].as_str().unwrap(),
        home_dir.join(&id).join("agent.sock").to_str().unwrap(),
        "{i}"
    );
    assert!(std::fs::symlink_metadata(home_dir.join(&id)).unwrap().file_type().is_symlink());
    ok(&mut cmd(&["rm", "-f", "x"]));
    assert!(std::fs::symlink_metadata(home_dir.join(&id)).is_err(), "the link outlived its box");
    assert_nothing_left(&env);
}

#[test]
fn eight_processes_creating_and_removing_at_once_all_succeed() {
    let env = Env::new();
    const PER: usize = 10;
    let script = format!(
        "for i in $(seq {PER}); do id=$(\"$0\" --backend host create) || exit 1; \"$0\" rm \"$id\" >/dev/null || exit 2; done",
    );
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = Command::new("sh");
            c.args(["-c", &script, env!("CARGO_BIN_EXE_boxsock")])
                .env("BOXSOCK_HOME", &env.home)
                .env("BOXSOCK_LINK_BASE", &env.link_base)
                .env("BOXSOCK_HELPER_DIR", agent_dir())
                .env_remove("RUST_LOG")
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "a worker failed ({}): {}", o.status, stderr(&o));
    }
    assert_nothing_left(&env);
}

#[test]
fn killing_the_cli_mid_start_then_reopening_leaves_a_truthful_state_and_no_leak() {
    let env = Env::new();
    let fake = common::never_ready_agent(env.root.path(), "never-ready");
    let id = ok(boxsock_in(&env, &fake).args(["--backend", "host", "create"])).trim().to_owned();
    let mut start = boxsock_in(&env, &fake)
        .args(["--ready-timeout", "60", "start", &id])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until the CLI has launched the box process and recorded it.
    let mut pid = 0;
    wait_until("the box process to be recorded", || {
        let i = json(boxsock(&env).args(["inspect", &id, "--json"]));
        match (i["state"].as_str(), i["pid"].as_i64()) {
            (Some("starting"), Some(p)) => {
                pid = p as i32;
                true
            }
            _ => false,
        }
    });
    assert!(pid_running(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(start.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    start.wait().unwrap();
    assert!(pid_running(pid), "the box process outlives its starter (it is detached)");

    // A read-only verb changes nothing, not even an abandoned start.
    let i = json(boxsock(&env).args(["inspect", &id, "--json"]));
    assert_eq!(
        (i["state"].as_str(), i["pid"].as_i64()),
        (Some("starting"), Some(pid as i64)),
        "{i}"
    );
    assert!(pid_running(pid), "a read-only verb killed the box process");
    // The next writing open recovers: the box is stopped, its process killed, its ready
    // socket gone.
    ok(boxsock(&env).arg("sweep"));
    let i = json(boxsock(&env).args(["inspect", &id, "--json"]));
    assert_eq!(i["state"], "stopped", "{i}");
    assert!(i["pid"].is_null());
    let deadline = Instant::now() + LIMIT;
    while pid_running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pid_running(pid), "abandoned box process {pid} still running");
    assert!(!env.home.join("boxes").join(&id).join("sockets/ready.sock").exists());
    ok(boxsock(&env).args(["rm", &id]));
    assert_nothing_left(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_sees_what_the_cli_made() -> Result<(), RuntimeError> {
    let env = Env::new();
    let id = ok(boxsock(&env).args([
        "--backend",
        "host",
        "--strategy",
        "abstract",
        "create",
        "--name",
        "shared",
    ]))
    .trim()
    .to_owned();
    ok(boxsock(&env).args(["start", "shared"]));
    let (rt, report) = Runtime::open(&env.home, env.options()).await?;
    assert!(report.recovered.is_empty(), "{report:?}");
    assert_eq!(rt.get("shared")?.id.as_str(), id);
    rt.ping("shared").await?;
    rt.remove("shared", true).await?;
    rt.close();
    assert_nothing_left(&env);
    Ok(())
}

/// Pids of running processes whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && pid_running(*pid)
        })
        .collect()
}

#[test]
fn interrupting_run_rm_removes_the_box_and_its_command() {
    let env = Env::new();
    let marker = format!("{}.{}", std::process::id(), 4242);
    let mut child = boxsock(&env)
        .args(["--backend", "host", "run", "--rm", "--", "sleep", &marker])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the command to run in the box", || !pids_running(&["sleep", &marker]).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "boxsock run did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    // The SIGINT is forwarded to the command (a signal frame), which dies of it: 130.
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    wait_until("the command to be gone", || pids_running(&["sleep", &marker]).is_empty());
    assert_nothing_left(&env);
}

/// A host box started through the binary whose process is then SIGKILLed with no
/// runtime watching; its id.
fn start_a_box_and_kill_its_process(env: &Env) -> String {
    let id = ok(boxsock(env).args(["--backend", "host", "create"])).trim().to_owned();
    ok(boxsock(env).args(["start", &id]));
    let pid = json(boxsock(env).args(["inspect", &id, "--json"]))["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    wait_until("the box process to die", || !pid_running(pid));
    id
}

#[test]
fn exec_in_a_box_whose_process_died_reports_it_stopped() {
    let env = Env::new();
    let id = start_a_box_and_kill_its_process(&env);
    // No runtime was watching; the next command finds out (recovery at open, or the
    // refused connection) and says the box is stopped, not "connection refused".
    let o = run(boxsock(&env).args(["exec", &id, "--", "true"]));
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("is stopped, not running"), "{}", stderr(&o));
    assert_eq!(json(boxsock(&env).args(["inspect", &id, "--json"]))["state"], "stopped");
    ok(boxsock(&env).args(["rm", &id]));
    assert_nothing_left(&env);
}

/// Issue 10, item 1: `mkdir -p T/boxes/photos; echo x > T/boxes/photos/a.jpg;
/// boxsock --home T ls` deleted `photos/` (recovery ran on every open and removed every
/// box-like directory without a row; a fresh store has no rows).
#[test]
fn a_read_only_verb_in_a_directory_that_is_not_a_home_deletes_and_creates_nothing() {
    let env = Env::new();
    let t = env.root.path().join("T");
    std::fs::create_dir_all(t.join("boxes/photos")).unwrap();
    std::fs::write(t.join("boxes/photos/a.jpg"), b"x\n").unwrap();
    let before = tree(&t);
    for args in [&["ls"][..], &["ls", "-a", "--json"], &["inspect", "photos"]] {
        let o = run(boxsock(&env).arg("--home").arg(&t).args(args));
        assert_eq!(tree(&t), before, "{args:?} changed {}: {}", t.display(), stderr(&o));
        if args[0] == "ls" {
            assert_eq!(o.status.code(), Some(125), "{args:?}");
            assert!(
                stderr(&o).contains("is not a boxsock home")
                    && stderr(&o).contains(t.to_str().unwrap()),
                "{}",
                stderr(&o)
            );
        }
    }
    assert_eq!(std::fs::read(t.join("boxes/photos/a.jpg")).unwrap(), b"x\n");
    // `doctor` changes nothing either, not even the abstract strategy's key (it reports
    // names of the right length from a throwaway key), and still checks every strategy.
    let report = json(boxsock(&env).arg("--home").arg(&t).args(["doctor", "--json"]));
    assert_eq!(tree(&t), before, "doctor changed {}", t.display());
    let abs = report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "abstract")
        .expect("abstract in doctor");
    assert!(
        abs["sockets"]
            .as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(|r| r["fits"] == true)),
        "doctor reports abstract addresses without a key on disk: {abs}"
    );
    let missing_home = env.root.path().join("not-yet");
    ok(boxsock(&env).arg("--home").arg(&missing_home).arg("doctor"));
    assert!(!missing_home.exists(), "doctor created the home it was asked about");
    // Writing into it is refused, naming it; still nothing changes.
    for args in [
        &["--backend", "host", "create"][..],
        &["sweep"],
        &["--backend", "host", "run", "--", "true"],
    ] {
        let o = run(boxsock(&env).arg("--home").arg(&t).args(args));
        assert!(!o.status.success(), "{args:?} wrote into a directory that is not a home");
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "{} is not a boxsock home",
                boxsock::boxsock_core::echo::path(&t)
            )) && err.contains("boxes"),
            "{args:?}: {err}"
        );
        assert_eq!(tree(&t), before, "{args:?} changed {}", t.display());
    }
    // A missing home: `ls` says so and creates nothing.
    let missing = env.root.path().join("typo");
    let o = run(boxsock(&env).arg("--home").arg(&missing).arg("ls"));
    assert!(o.status.success());
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists());
}

/// Issue 10, item 1: recovery removes a directory without a row only when the create
/// journal and the directory's marker prove an interrupted create made it.
#[test]
fn recovery_leaves_a_box_like_directory_it_did_not_create() {
    let env = Env::new();
    let id = ok(boxsock(&env).args(["--backend", "host", "create"])).trim().to_owned();
    let home = &env.home;
    assert!(home.join(".boxsock-home").is_file());
    // Somebody's own directory, named like a box, and a copy of a real box directory
    // (marker included) that no create journalled.
    std::fs::create_dir_all(home.join("boxes/photos")).unwrap();
    std::fs::write(home.join("boxes/photos/a.jpg"), b"x\n").unwrap();
    let copy = home.join("boxes/copiedbox1");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join(".boxsock-box"), b"").unwrap();
    let before = tree(&home.join("boxes"));
    ok(boxsock(&env).arg("sweep"));
    ok(boxsock(&env).args(["--backend", "host", "create"]));
    let after = tree(&home.join("boxes"));
    for entry in &before {
        assert!(after.contains(entry), "recovery removed {entry}");
    }
    let l = json(boxsock(&env).args(["ls", "-a", "--json"]));
    assert_eq!(l["boxes"].as_array().unwrap().len(), 2, "{l}");
    ok(boxsock(&env).args(["rm", &id]));
    assert!(home.join("boxes/photos/a.jpg").is_file() && copy.is_dir());
}

/// Issue 10, item 5: `--strategy direct` with a relative home passed the budget check
/// at create, then every start failed ("must be absolute").
#[test]
fn a_relative_home_works_with_the_direct_strategy() {
    let env = Env::new();
    let cmd = |args: &[&str]| {
        let mut c = boxsock(&env);
        c.env_remove("BOXSOCK_HOME")
            .current_dir(env.root.path())
            .args(["--home", "rel/home", "--strategy", "direct", "--backend", "host"])
            .args(args);
        c
    };
    let id = ok(&mut cmd(&["create"])).trim().to_owned();
    ok(&mut cmd(&["start", &id]));
    assert_eq!(ok(&mut cmd(&["exec", &id, "--", "echo", "relative"])), "relative\n");
    let i = json(&mut cmd(&["inspect", &id, "--json"]));
    let agent =
        i["sockets"].as_array().unwrap().iter().find(|s| s["socket"] == "agent").unwrap().clone();
    let addr = agent["address"].as_str().unwrap();
    assert!(addr.starts_with(env.root.path().join("rel/home").to_str().unwrap()), "{addr}");
    ok(&mut cmd(&["rm", "-f", &id]));
    let d = json(&mut cmd(&["doctor", "--json"]));
    assert_eq!(d["home"].as_str().unwrap(), env.root.path().join("rel/home").to_str().unwrap());
}

/// A home exactly `len` bytes long under the env's root (components of ≤ 200 bytes).
fn home_of(env: &Env, len: usize) -> std::path::PathBuf {
    let mut p = env.root.path().join("home");
    while p.as_os_str().len() < len {
        let left = len - p.as_os_str().len() - 1;
        let n = if left > 200 { 200.min(left - 2) } else { left.max(1) };
        p.push("h".repeat(n));
    }
    assert_eq!(p.as_os_str().len(), len);
    p
}

/// Issue 10, item 3: the store failed to open at 494 bytes ("unable to open database
/// file": SQLite's unix VFS limits path names to 512 bytes), for every strategy.
#[test]
fn homes_of_600_2000_and_near_path_max_bytes_create_start_exec_and_rm() {
    for len in [600, 2000, 4000] {
        for strategy in ["short-symlink", "abstract"] {
            let mut env = Env::new();
            env.home = home_of(&env, len);
            let args = ["--strategy", strategy, "--backend", "host"];
            let id = ok(boxsock(&env).args(args).arg("create")).trim().to_owned();
            ok(boxsock(&env).args(args).args(["start", &id]));
            assert_eq!(
                ok(boxsock(&env).args(args).args(["exec", &id, "--", "echo", "deep"])),
                "deep\n",
                "{len} {strategy}"
            );
            ok(boxsock(&env).args(args).args(["rm", "-f", &id]));
            assert_nothing_left(&env);
            assert!(
                env.home.join("boxsock.db").is_file(),
                "{len} {strategy}: the store lives in the home"
            );
        }
    }
}

/// A pipe whose reader is already gone: the first write to it fails with `EPIPE`.
fn closed_pipe() -> Stdio {
    let (rd, wr) = nix::unistd::pipe().unwrap();
    drop(rd);
    Stdio::from(wr)
}

/// Wait for `child` at most [`LIMIT`]; kill it and fail if it does not end.
fn wait_bounded(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_verb_exits_quietly_with_141_on_a_closed_stdout_and_never_panics() {
    let env = Env::new();
    let id = ok(boxsock(&env).args(["--backend", "host", "create"])).trim().to_owned();
    ok(boxsock(&env).args(["start", &id]));
    let verbs: Vec<Vec<&str>> = vec![
        vec!["doctor"],
        vec!["doctor", "--json"],
        vec!["ls"],
        vec!["ls", "-a", "--json"],
        vec!["inspect", &id],
        vec!["inspect", "--json", &id],
        vec!["strategies"],
        vec!["strategies", "--json"],
        vec!["backends"],
        vec!["backends", "--json"],
        vec!["sweep"],
        vec!["exec", &id, "--", "echo", "hi"],
        vec!["--backend", "host", "run", "--rm", "--", "echo", "hi"],
    ];
    for args in &verbs {
        let mut child =
            boxsock(&env).args(args).stdout(closed_pipe()).stderr(Stdio::piped()).spawn().unwrap();
        let status = wait_bounded(&mut child, &format!("{args:?}"));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert_eq!(status.code(), Some(141), "{args:?}: {status}: {err}");
        assert!(err.is_empty(), "{args:?}: not quiet: {err}");
    }
    // A closed stderr: the error has nowhere to go, the status still says it.
    let mut child =
        boxsock(&env).args(["inspect", "nosuchbox"]).stderr(closed_pipe()).spawn().unwrap();
    assert_eq!(wait_bounded(&mut child, "inspect with a closed stderr").code(), Some(125));
    // `rm` with a closed stdout still removes every box it was given.
    let second = ok(boxsock(&env).args(["--backend", "host", "create"])).trim().to_owned();
    let mut child =
        boxsock(&env).args(["rm", "-f", &id, &second]).stdout(closed_pipe()).spawn().unwrap();
    assert_eq!(wait_bounded(&mut child, "rm with a closed stdout").code(), Some(141));
    assert_nothing_left(&env);
}

#[test]
fn exec_whose_stdout_closes_early_kills_the_command_and_exits_141() {
    use std::io::{BufRead, Read};
    let env = Env::new();
    let id = ok(boxsock(&env).args(["--backend", "host", "create"])).trim().to_owned();
    ok(boxsock(&env).args(["start", &id]));
    // `boxsock exec ID -- yes | head -c 10`, with the command's pid on the first line.
    let mut child = boxsock(&env)
        .args(["exec", &id, "--", "sh", "-c", "echo $$; exec yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid: i32 =
        line.trim().parse().unwrap_or_else(|_| panic!("first line is not a pid: {line:?}"));
    let mut ten = [0u8; 10];
    out.read_exact(&mut ten).unwrap();
    assert_eq!(&ten, b"y\ny\ny\ny\ny\n");
    assert!(pid_running(pid));
    drop(out);
    let status = wait_bounded(&mut child, "exec whose stdout closed");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(141), "{status}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    wait_until("the command in the box to be killed", || !pid_running(pid));
    // The box itself goes on.
    assert_eq!(ok(boxsock(&env).args(["exec", &id, "--", "echo", "still", "up"])), "still up\n");
    ok(boxsock(&env).args(["rm", "-f", &id]));
    assert_nothing_left(&env);
}

#[test]
fn an_argv_over_the_frame_limit_names_its_size_and_the_limit() {
    let env = Env::new();
    let id = ok(boxsock(&env).args(["--backend", "host", "create"])).trim().to_owned();
    ok(boxsock(&env).args(["start", &id]));
    // 11 arguments of 100 000 bytes: 1.1 MB, over the 1 MiB frame (one argument may
    // be at most 128 KiB on Linux).
    let big = "a".repeat(100_000);
    let o =
        run(boxsock(&env).args(["exec", &id, "--", "true"]).args(std::iter::repeat_n(&big, 11)));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("frame limit of 1048576 bytes") && err.contains("exec request"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert!(err.len() < 400, "the error echoes the argv: {} bytes", err.len());
    // The box is unharmed.
    assert_eq!(ok(boxsock(&env).args(["exec", &id, "--", "echo", "ok"])), "ok\n");
    ok(boxsock(&env).args(["rm", "-f", &id]));
    assert_nothing_left(&env);
}

#[test]
fn errors_echo_at_most_64_bytes_of_input_and_its_length() {
    let env = Env::new();
    ok(boxsock(&env).arg("ls")); // the home exists: the runtime's own errors answer
    let long = "x".repeat(5000);
    // 64 bytes of it (80 characters for an invalid id), then its length.
    let cut = |err: &str| {
        err.contains(&format!("\"{}", "x".repeat(64))) && err.contains("\"… (5000 bytes)")
    };
    for args in [
        vec!["inspect", long.as_str()],
        vec!["exec", long.as_str(), "--", "true"],
        vec!["rm", long.as_str()],
        vec!["start", long.as_str()],
        vec!["--backend", "host", "create", "--name", long.as_str()],
        vec!["--backend", "host", "--strategy", long.as_str(), "create"],
        vec!["--backend", long.as_str(), "create"],
    ] {
        let o = run(boxsock(&env).args(&args));
        let err = stderr(&o);
        assert!(!o.status.success(), "{:?}", &args[..args.len().min(3)]);
        assert!(cut(&err), "{:?}: {err}", &args[..args.len().min(3)]);
        assert!(err.len() < 400, "{:?}: {} bytes: {err}", &args[..args.len().min(3)], err.len());
    }
    // And in a home that does not exist (the CLI's own message).
    let o = run(boxsock(&env)
        .arg("--home")
        .arg(env.root.path().join("missing"))
        .args(["inspect", &long]));
    assert!(cut(&stderr(&o)) && stderr(&o).len() < 400, "{}", stderr(&o));
}

/// The one child of `client` running `boxsock … __lifeline` (`run --rm`'s lifeline).
fn lifeline_of(client: i32) -> i32 {
    let children: Vec<i32> = std::fs::read_dir(format!("/proc/{client}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__lifeline"))
        })
        .collect();
    assert_eq!(children.len(), 1, "the lifeline of client {client}: {children:?}");
    children[0]
}

#[test]
fn run_rm_starts_a_lifeline_in_its_own_session_that_holds_only_its_pipe_and_ends_with_it() {
    let env = Env::new();
    // `sleep 1.<pid>5`: a second and a bit, and a number no other test uses.
    let marker = format!("1.{}5", std::process::id());
    let mut client = boxsock(&env)
        .args(["--backend", "host", "run", "--rm", "--", "sleep", &marker])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the command to run in the box", || !pids_running(&["sleep", &marker]).is_empty());
    let lifeline = lifeline_of(client.id() as i32);
    let stat = std::fs::read_to_string(format!("/proc/{lifeline}/stat")).unwrap();
    // After the command's closing parenthesis: state, ppid, pgrp, session.
    let after_comm = stat.rsplit_once(')').unwrap().1;
    let session: i32 = after_comm.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, lifeline, "the lifeline leads a session of its own: {stat}");
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{lifeline}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap().to_string_lossy().into_owned();
            (e.file_name().to_string_lossy().parse().unwrap(), target)
        })
        .collect();
    fds.sort();
    let numbers: Vec<i32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "stdio and its pipe, nothing else: {fds:?}");
    assert!(fds[3].1.starts_with("pipe:"), "{fds:?}");
    let status = client.wait().unwrap();
    assert!(status.success(), "{status}");
    // Disarmed by the client's normal end: it exits at once, with nothing to do.
    wait_until("the lifeline to exit after its client", || !pid_running(lifeline));
    assert_nothing_left(&env);
}

#[test]
fn a_run_rm_client_killed_with_sigkill_leaves_nothing_after_the_next_writing_command() {
    for (n, next) in
        [&["sweep"][..], &["--backend", "host", "create"], &["exec", "other", "--", "true"]]
            .into_iter()
            .enumerate()
    {
        let env = Env::new();
        if next[0] == "exec" {
            ok(boxsock(&env).args(["--backend", "host", "create", "--name", "other"]));
            ok(boxsock(&env).args(["start", "other"]));
        }
        let marker = format!("{}.{}", std::process::id(), 5150 + n);
        let mut client = boxsock(&env)
            .args(["--backend", "host", "run", "--rm", "--", "sleep", &marker])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the command to run in the box", || {
            !pids_running(&["sleep", &marker]).is_empty()
        });
        let boxes =
            json(boxsock(&env).args(["ls", "-a", "--json"]))["boxes"].as_array().unwrap().clone();
        let b = boxes.iter().find(|b| b["name"].is_null()).expect("the run --rm box").clone();
        let id = b["id"].as_str().unwrap().to_owned();
        let agent =
            json(boxsock(&env).args(["inspect", "--json", &id]))["pid"].as_i64().unwrap() as i32;
        assert!(pid_running(agent) && env.links().contains(&id));

        // The backstop's case: the client's lifeline is killed first (alive, it removes
        // the box at once; the hostile suite's `a_killed_run_rm_client_takes_its_box_with_it`).
        let lifeline = lifeline_of(client.id() as i32);
        let sigkill = nix::sys::signal::Signal::SIGKILL;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(lifeline), sigkill).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(client.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        client.wait().unwrap();
        // Read-only verbs delete nothing: the box is still there, still running.
        let i = json(boxsock(&env).args(["inspect", "--json", &id]));
        assert_eq!(i["state"], "running", "{next:?}: {i}");
        assert!(pid_running(agent), "{next:?}: a read-only verb stopped the box");

        ok(boxsock(&env).args(next));
        let l = json(boxsock(&env).args(["ls", "-a", "--json"]));
        assert!(
            l["boxes"].as_array().unwrap().iter().all(|b| b["id"] != id.as_str()),
            "{next:?}: box {id} left: {l}"
        );
        wait_until("the abandoned box's agent to be gone", || !pid_running(agent));
        wait_until("the abandoned box's command to be gone", || {
            pids_running(&["sleep", &marker]).is_empty()
        });
        assert!(!env.links().contains(&id), "{next:?}: link {id} left: {:?}", env.links());
        assert!(!env.box_dirs().contains(&id), "{next:?}: dir {id} left");
        // Nothing else was touched.
        if next[0] == "exec" {
            assert_eq!(
                json(boxsock(&env).args(["inspect", "--json", "other"]))["state"],
                "running"
            );
        }
        for b in l["boxes"].as_array().unwrap() {
            ok(boxsock(&env).args(["rm", "-f", b["id"].as_str().unwrap()]));
        }
        assert_nothing_left(&env);
    }
}

/// `ls` and `inspect` record nothing (issue 10), but they must not show a dead box as
/// running either: they report what they observe, and the next writing command records
/// it (and cleans what the dead process left).
#[test]
fn read_only_verbs_show_a_dead_box_stopped_without_recording_it() {
    let env = Env::new();
    let id = start_a_box_and_kill_its_process(&env);
    let before = tree(&env.home);
    let i = json(boxsock(&env).args(["inspect", &id, "--json"]));
    assert_eq!(i["state"], "stopped", "{i}");
    assert!(i["pid"].is_null(), "a dead process is not reported: {i}");
    let l = json(boxsock(&env).args(["ls", "-a", "--json"]));
    assert_eq!(l["boxes"][0]["state"], "stopped", "{l}");
    // Nothing was recorded or cleaned (the dead agent's socket file is still there), and
    // the store still says running. (Compared before this test opens the store itself.)
    let no_shm = |t: Vec<String>| t.into_iter().filter(|e| !e.contains("-shm")).collect::<Vec<_>>();
    assert_eq!(no_shm(tree(&env.home)), no_shm(before), "a read-only verb changed the home");
    let store = rusqlite::Connection::open(env.home.join("boxsock.db")).unwrap();
    let recorded: String =
        store.query_row("SELECT state FROM boxes WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(recorded, "running");
    drop(store);
    // The next writing command records it.
    ok(boxsock(&env).arg("sweep"));
    let store = rusqlite::Connection::open(env.home.join("boxsock.db")).unwrap();
    let recorded: String =
        store.query_row("SELECT state FROM boxes WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(recorded, "stopped");
    drop(store);
    ok(boxsock(&env).args(["rm", &id]));
    assert_nothing_left(&env);
}
