//! `boxsock-oci` driven as containerd's runc shim and conmon drive runc: this test
//! process is a child subreaper (as they are), so the supervisor whose pid `create`
//! writes is reparented to it when `create` exits, and its wait status is the
//! container's exit status. One test in this binary: the subreaper flag is
//! process-wide.

mod common;

use std::fs::File;
use std::time::Duration;

use common::{Env, ok, pid_of, reap};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// Create `id` of `bundle` with its stdout and stderr in files; the supervisor's pid.
fn create(env: &Env, id: &str, bundle: &std::path::Path) -> i32 {
    let pid_path = env.tmp.path().join(format!("{id}.pid"));
    let out = env
        .command(&["create", "--bundle", bundle.to_str().unwrap(), "--pid-file"])
        .arg(&pid_path)
        .arg(id)
        .stdout(File::create(env.tmp.path().join(format!("{id}.out"))).unwrap())
        .stderr(File::create(env.tmp.path().join(format!("{id}.err"))).unwrap())
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    let err = std::fs::read_to_string(env.tmp.path().join(format!("{id}.err"))).unwrap();
    assert!(out.success(), "create {id}: {out:?}: {err}");
    pid_of(&pid_path)
}

fn output(env: &Env, id: &str) -> String {
    std::fs::read_to_string(env.tmp.path().join(format!("{id}.out"))).unwrap()
}

#[test]
fn an_engine_creates_starts_signals_and_deletes_containers() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    let env = Env::new();
    assert!(env.root.as_os_str().len() > 108, "--root is deeper than sun_path");

    // create → created, the pid the supervisor's; start → its command runs; the
    // supervisor exits with its status; then stopped, and delete forgets it.
    let b = env.bundle(
        "hi",
        &["sh", "-c", "echo hi; hostname"],
        serde_json::json!({ "hostname": "box", "annotations": { "org.example/k": "v" } }),
    );
    let pid = create(&env, "hi", &b);
    let st = env.state("hi");
    assert_eq!((st["status"].as_str(), st["pid"].as_i64()), (Some("created"), Some(pid.into())));
    assert_eq!(st["bundle"].as_str(), b.to_str());
    assert_eq!(st["annotations"]["org.example/k"], "v");
    ok("start", &env.oci(&["start", "hi"]));
    assert_eq!(reap(pid, Duration::from_secs(30)), WaitStatus::Exited(Pid::from_raw(pid), 0));
    assert_eq!(output(&env, "hi"), "hi\nbox\n");
    assert_eq!(env.state("hi")["status"], "stopped");
    ok("delete", &env.oci(&["delete", "hi"]));
    let gone = env.oci(&["state", "hi"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"), "{gone:?}");

    // Exit statuses pass through.
    // process.rlimits are the command's.
    let b = env.bundle(
        "three",
        &["sh", "-c", "ulimit -n; exit 3"],
        serde_json::json!({ "process": { "rlimits": [
            { "type": "RLIMIT_NOFILE", "soft": 555, "hard": 555 } ] } }),
    );
    let pid = create(&env, "three", &b);
    // A created container outlives what would not end runc's waiting init: conmon
    // resizes the pty (SIGWINCH to the supervisor) before `start`, and `kill ID WINCH`.
    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGWINCH).unwrap();
    ok("kill WINCH", &env.oci(&["kill", "three", "WINCH"]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(env.state("three")["status"], "created");
    ok("start", &env.oci(&["start", "three"]));
    assert_eq!(reap(pid, Duration::from_secs(30)), WaitStatus::Exited(Pid::from_raw(pid), 3));
    assert_eq!(output(&env, "three"), "555\n");
    ok("delete", &env.oci(&["delete", "three"]));

    // kill delivers the signal to the command in the box: 128+N.
    let b = env.bundle("sleeper", &["sleep", "1000"], serde_json::json!({}));
    let pid = create(&env, "sleeper", &b);
    ok("start", &env.oci(&["start", "sleeper"]));
    assert_eq!(env.state("sleeper")["status"], "running");
    // ps: the supervisor, the box's agent and the command under it (containerd's
    // `ctr task ps` reads the JSON array).
    let out = env.oci(&["ps", "--format", "json", "sleeper"]);
    ok("ps", &out);
    let pids: Vec<i32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pids.first(), Some(&pid), "{pids:?}");
    let comms: Vec<String> = pids
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
        .collect();
    assert!(comms.iter().any(|c| c.trim() == "sleep"), "{comms:?}");
    let listed = String::from_utf8(env.oci(&["list"]).stdout).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("sleeper ") && l.contains("running")), "{listed}");
    ok("kill", &env.oci(&["kill", "sleeper", "KILL"]));
    assert_eq!(reap(pid, Duration::from_secs(30)), WaitStatus::Exited(Pid::from_raw(pid), 137));
    let again = env.oci(&["kill", "sleeper", "TERM"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not running"), "{again:?}");
    ok("delete", &env.oci(&["delete", "sleeper"]));

    // features: the runtime spec's JSON, naming the backend annotation.
    let out = env.oci(&["features"]);
    ok("features", &out);
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert_eq!(f["annotations"]["io.boxsock.backend"], "sandbox,libkrun");
}
