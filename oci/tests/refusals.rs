//! Bad input gets a clear error and leaves nothing: ids, bundles, limits, signals,
//! commands boxsock-oci does not have.

mod common;

use common::{Env, ok};

fn err(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing under the root but what an empty runtime has: no container directory, no
/// box.
fn nothing_left(env: &Env) {
    let containers = env.root.join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "containers left: {left:?}");
    let boxes: Vec<_> = std::fs::read_dir(env.root.join("home/boxes"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(boxes.is_empty(), "boxes left: {boxes:?}");
}

#[test]
fn bad_ids_are_refused_and_nothing_is_written_outside_the_root() {
    let env = Env::new();
    let b = env.bundle("b", &["true"], serde_json::json!({}));
    let long = "a".repeat(256);
    for (id, words) in [
        ("../escape", "starts with '.'"),
        ("a/b", "'/' is not allowed"),
        ("a b", "' ' is not allowed"),
        (long.as_str(), "256 bytes, more than the 255 allowed"),
        ("bad\u{1b}[2Jid", "\\u{1b}"),
    ] {
        let e = err(&env.oci(&["create", "--bundle", b.to_str().unwrap(), id]));
        assert!(e.contains(words), "{id:?}: {e}");
        assert!(!e.contains('\u{1b}'), "a control character reached the terminal: {e:?}");
    }
    assert!(!env.tmp.path().join("run/escape").exists());
    nothing_left(&env);
}

#[test]
fn a_failed_create_names_the_cause_and_leaves_nothing() {
    let env = Env::new();
    // A limit above what this host lets the runtime set: named, with the host's.
    let hard = 1u64 << 40;
    let b = env.bundle(
        "lim",
        &["true"],
        serde_json::json!({ "process": { "rlimits": [
            { "type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard } ] } }),
    );
    let e = err(&env.oci(&["create", "--bundle", b.to_str().unwrap(), "lim"]));
    assert!(e.contains("RLIMIT_NOFILE") && e.contains(&hard.to_string()), "{e}");
    assert!(e.contains("this host's limit"), "{e}");
    // A root that is not there: the backend's words, the path named.
    let b =
        env.bundle("noroot", &["true"], serde_json::json!({ "root": { "path": "/no/such/root" } }));
    let e = err(&env.oci(&["create", "--bundle", b.to_str().unwrap(), "noroot"]));
    assert!(e.contains("/no/such/root"), "{e}");
    // A bundle without config.json.
    let e = err(&env.oci(&["create", "--bundle", env.tmp.path().to_str().unwrap(), "nocfg"]));
    assert!(e.contains("config.json"), "{e}");
    // --preserve-fds: a box's command gets stdio only.
    let b = env.bundle("fds", &["true"], serde_json::json!({}));
    let e =
        err(&env.oci(&["create", "--preserve-fds", "2", "--bundle", b.to_str().unwrap(), "fds"]));
    assert!(e.contains("--preserve-fds"), "{e}");
    nothing_left(&env);
    // The log file gets the same error as runc writes it (conmon and containerd's shim
    // read `msg` back).
    let log = env.tmp.path().join("log.json");
    let out = env
        .command(&["--log", log.to_str().unwrap(), "--log-format", "json", "state", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().lines().last().unwrap())
            .unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"), "{line}");
}

#[test]
fn commands_on_missing_or_wrong_status_containers_are_refused() {
    let env = Env::new();
    for args in
        [&["start", "nope"][..], &["kill", "nope", "TERM"], &["delete", "nope"], &["state", "nope"]]
    {
        let e = err(&env.oci(args));
        assert!(e.contains("container \"nope\" does not exist"), "{args:?}: {e}");
    }
    // --systemd-cgroup is accepted (a box's cgroup is its backend's).
    let e = err(&env.oci(&["--systemd-cgroup", "state", "nope"]));
    assert!(e.contains("does not exist"), "{e}");
    // As runc: delete --force of a container that does not exist succeeds silently.
    let out = env.oci(&["delete", "--force", "nope"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let e = err(&env.oci(&["kill", "nope", "NOSUCHSIG"]));
    assert!(e.contains("\"NOSUCHSIG\": not a signal"), "{e}");
    let e = err(&env.oci(&["pause", "nope"]));
    assert!(e.contains("pause: not supported by boxsock-oci"), "{e}");
    let e = err(&env.oci(&["--log-format", "xml", "state", "x"]));
    assert!(e.contains("expected text or json"), "{e}");
    // clap's own errors reach the terminal without a control character.
    let e = err(&env.oci(&["state", "a", "b\u{1b}[2J"]));
    assert!(!e.contains('\u{1b}'), "{e:?}");

    // A running container: a second create of its id, start, and delete without
    // --force are refused; delete --force removes it all.
    let b = env.bundle("run", &["sleep", "1000"], serde_json::json!({}));
    let files = |n: &str| std::fs::File::create(env.tmp.path().join(n)).unwrap();
    let st = env
        .command(&["create", "--bundle", b.to_str().unwrap(), "run"])
        .stdout(files("run.out"))
        .stderr(files("run.err"))
        .status()
        .unwrap();
    assert!(st.success());
    let e = err(&env.oci(&["create", "--bundle", b.to_str().unwrap(), "run"]));
    assert!(e.contains("container \"run\" already exists"), "{e}");
    ok("start", &env.oci(&["start", "run"]));
    let e = err(&env.oci(&["start", "run"]));
    assert!(e.contains("is running"), "{e}");
    let e = err(&env.oci(&["delete", "run"]));
    assert!(e.contains("delete --force"), "{e}");
    let pid = env.state("run")["pid"].as_i64().unwrap() as i32;
    ok("delete --force", &env.oci(&["delete", "--force", "run"]));
    // Its supervisor is gone (a zombie until whoever inherited it reaps it), and so is
    // everything it had.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "supervisor {pid} still alive: {stat}");
    nothing_left(&env);
}
