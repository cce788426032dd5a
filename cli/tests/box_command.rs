//! A box's own command and user (decision 0020), on real boxes of the `host` backend:
//! `exec -u`, `create -u`, `create -- CMD` with `start -a`, `inspect`, and the library's
//! `Runtime::command(..).user(..)`, `CreateOptions::builder().command(..)` and
//! `Runtime::main_command`.
//!
//! The host backend's agent is a host process with no box root: a user's name
//! resolves against the host's own /etc/passwd and /etc/group (in a libkrun guest,
//! against the box's: the VM tier's `image-user` scenario). The tests run as root (as
//! CI does), so the agent can switch to any user.

mod common;

use std::collections::BTreeSet;

use boxsock::{CreateOptions, Runtime, RuntimeError};
use boxsock_test_support::{Need, skip};
use common::{Env, boxsock, json, ok, run, stderr, stdout};

/// Only root can switch users; CI runs as root.
fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(Need::Root, "switching users needs root");
    false
}

/// `name`'s passwd entry on this host: (uid, gid, home).
fn passwd_entry(name: &str) -> (u32, u32, String) {
    let text = std::fs::read_to_string("/etc/passwd").unwrap();
    let f: Vec<&str> = text
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[0] == name)
        .unwrap_or_else(|| panic!("no {name} in /etc/passwd"));
    (f[2].parse().unwrap(), f[3].parse().unwrap(), f[5].to_owned())
}

/// The gids /etc/group lists `name` in, with `primary`.
fn groups_of(name: &str, primary: u32) -> BTreeSet<u32> {
    let text = std::fs::read_to_string("/etc/group").unwrap();
    let mut set: BTreeSet<u32> = text
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .collect();
    set.insert(primary);
    set
}

fn gids(s: &str) -> BTreeSet<u32> {
    s.split_whitespace().map(|g| g.parse().unwrap()).collect()
}

fn host_box(env: &Env, extra: &[&str]) -> String {
    let mut c = boxsock(env);
    c.args(["--backend", "host", "create"]).args(extra);
    ok(&mut c).trim().to_owned()
}

#[test]
fn exec_u_runs_as_a_uid_a_uid_gid_or_a_name_with_its_groups_and_home() {
    if !need_root() {
        return;
    }
    let env = Env::new();
    let id = host_box(&env, &[]);
    ok(boxsock(&env).args(["start", &id]));
    let exec = |args: &[&str]| {
        let mut c = boxsock(&env);
        c.args(["exec"]).args(args);
        c
    };
    // Without -u: the agent's user (root here).
    assert_eq!(ok(&mut exec(&[&id, "--", "id", "-u"])).trim(), "0");
    // A numeric uid that has an entry: its gid, and no supplementary group of root's.
    let (nobody_uid, nobody_gid, nobody_home) = passwd_entry("nobody");
    assert_eq!(nobody_uid, 65534);
    let out = ok(&mut exec(&["-u", "65534", &id, "--", "sh", "-c", "id -u; id -g; id -G"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!((lines[0], lines[1]), ("65534", nobody_gid.to_string().as_str()), "{out}");
    assert_eq!(gids(lines[2]), groups_of("nobody", nobody_gid), "{out}");
    // uid:gid: exactly that group, no supplementary ones.
    let out = ok(&mut exec(&["-u", "65534:65534", &id, "--", "sh", "-c", "id -u; id -G"]));
    assert_eq!(out, "65534\n65534\n");
    // A name: its entry's uid, groups and HOME (unless the exec sets HOME).
    let out = ok(&mut exec(&["-u", "nobody", &id, "--", "sh", "-c", "id -un; echo $HOME"]));
    assert_eq!(out, format!("nobody\n{nobody_home}\n"));
    let out =
        ok(&mut exec(&["-u", "nobody", "-e", "HOME=/x", &id, "--", "sh", "-c", "echo $HOME"]));
    assert_eq!(out, "/x\n");
    // root by name: its supplementary groups from /etc/group.
    let out = ok(&mut exec(&["-u", "root", &id, "--", "id", "-G"]));
    assert_eq!(gids(&out), groups_of("root", 0));
    // A uid without an entry: gid 0 and HOME=/ (docker's rules).
    let out = ok(&mut exec(&["-u", "4242", &id, "--", "sh", "-c", "id -u; id -g; echo $HOME"]));
    assert_eq!(out, "4242\n0\n/\n");
    // With a tty too.
    let out = ok(&mut exec(&["-t", "-u", "65534", &id, "--", "id", "-u"]));
    assert_eq!(out.trim(), "65534");
}

#[test]
fn an_unknown_user_or_group_is_a_clear_error_and_nothing_runs() {
    if !need_root() {
        return;
    }
    let env = Env::new();
    let id = host_box(&env, &[]);
    ok(boxsock(&env).args(["start", &id]));
    let marker = env.root.path().join("ran");
    let touch = format!("touch {}", marker.display());
    for (user, says) in [
        ("no-such-user-here", "no user named \"no-such-user-here\""),
        ("nobody:no-such-group", "no group named \"no-such-group\""),
        ("65534:", "an empty user or group name"),
    ] {
        let o = run(boxsock(&env).args(["exec", "-u", user, &id, "--", "sh", "-c", &touch]));
        assert_eq!(o.status.code(), Some(125), "{user}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{user}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
        assert!(!marker.exists(), "{user}: the command ran");
    }
    // A box created with an unknown user: its command does not run either.
    let bad = host_box(&env, &["-u", "no-such-user-here", "--", "sh", "-c", &touch]);
    let o = run(boxsock(&env).args(["start", "-a", &bad]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("no user named \"no-such-user-here\""), "{}", stderr(&o));
    assert!(!marker.exists(), "the box's command ran");
}

#[test]
fn create_u_is_the_user_of_the_boxs_command_and_of_every_exec_without_u() {
    if !need_root() {
        return;
    }
    let env = Env::new();
    let id = host_box(&env, &["-u", "65534:65534", "--", "sh", "-c", "id -u; id -G; exit 3"]);
    let o = run(boxsock(&env).args(["start", "-a", &id]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "65534\n65534\n");
    // The box is stopped once its command ended, like an exited container.
    let i = json(boxsock(&env).args(["inspect", "--json", &id]));
    assert_eq!(i["state"], "stopped", "{i}");
    assert_eq!(i["process"]["user"], "65534:65534", "{i}");
    assert_eq!(i["process"]["argv"][0], "sh", "{i}");
    // Later execs run as the box's user unless they name their own.
    ok(boxsock(&env).args(["start", &id]));
    assert_eq!(ok(boxsock(&env).args(["exec", &id, "--", "id", "-u"])).trim(), "65534");
    assert_eq!(ok(boxsock(&env).args(["exec", "-u", "0", &id, "--", "id", "-u"])).trim(), "0");
    // `run -u` without an image.
    let o = run(boxsock(&env).args([
        "--backend",
        "host",
        "run",
        "--rm",
        "-u",
        "4242",
        "--",
        "id",
        "-u",
    ]));
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "4242\n"), "{}", stderr(&o));
}

#[test]
fn create_with_a_command_stores_it_and_start_a_runs_it_with_its_env_and_workdir() {
    let env = Env::new();
    let dir = env.root.path().join("work");
    std::fs::create_dir(&dir).unwrap();
    let id = host_box(
        &env,
        &[
            "--name",
            "job",
            "-e",
            "GREETING=hi",
            "-w",
            dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo $GREETING from $(pwd); echo err >&2; exit 7",
        ],
    );
    // inspect shows it, as JSON and as text.
    let i = json(boxsock(&env).args(["inspect", "--json", "job"]));
    assert_eq!(i["state"], "created");
    assert_eq!(
        i["process"]["argv"],
        serde_json::json!(["sh", "-c", "echo $GREETING from $(pwd); echo err >&2; exit 7"])
    );
    assert_eq!(i["process"]["cwd"], dir.to_str().unwrap());
    let text = ok(boxsock(&env).args(["inspect", "job"]));
    assert!(text.contains("command:   [\"sh\",\"-c\""), "{text}");
    // start -a runs it, attached, and exits with its status; again after a stop.
    for _ in 0..2 {
        let o = run(boxsock(&env).args(["start", "-a", "job"]));
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("hi from {}\n", dir.display()));
        assert_eq!(stderr(&o), "err\n");
        assert_eq!(json(boxsock(&env).args(["inspect", "--json", &id]))["state"], "stopped");
    }
    // An exec without -w runs in the box's working directory, as `docker exec` does;
    // -w still wins.
    ok(boxsock(&env).args(["start", &id]));
    let o = run(boxsock(&env).args(["exec", "job", "--", "pwd"]));
    assert_eq!(stdout(&o), format!("{}\n", dir.display()), "{}", stderr(&o));
    let o = run(boxsock(&env).args(["exec", "-w", "/", "job", "--", "pwd"]));
    assert_eq!(stdout(&o), "/\n", "{}", stderr(&o));
    ok(boxsock(&env).args(["stop", "job"]));
    // -i forwards stdin to it.
    let cat = host_box(&env, &["--", "tr", "a-z", "A-Z"]);
    let mut child = boxsock(&env)
        .args(["start", "-a", "-i", &cat])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"loud\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "LOUD\n"));
}

#[test]
fn start_a_of_a_box_without_a_command_or_already_running_says_so_and_starts_nothing() {
    let env = Env::new();
    let id = host_box(&env, &[]);
    let o = run(boxsock(&env).args(["start", "-a", &id]));
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("has no command of its own"), "{}", stderr(&o));
    assert_eq!(json(boxsock(&env).args(["inspect", "--json", &id]))["state"], "created");
    let text = ok(boxsock(&env).args(["inspect", &id]));
    assert!(!text.contains("command:"), "{text}");

    let job = host_box(&env, &["--", "true"]);
    ok(boxsock(&env).args(["start", &job]));
    let o = run(boxsock(&env).args(["start", "-a", &job]));
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    let o = run(boxsock(&env).args(["start", "-a", &id, &job]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("takes one box, not 2"), "{}", stderr(&o));
    // -w without a command is refused, as is a relative one.
    let o = run(boxsock(&env).args(["--backend", "host", "create", "-w", "/tmp"]));
    assert!(stderr(&o).contains("needs a command"), "{}", stderr(&o));
    let o = run(boxsock(&env).args(["--backend", "host", "create", "-w", "rel", "--", "true"]));
    assert!(stderr(&o).contains("is not absolute"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_stores_a_boxs_command_and_runs_commands_as_a_user() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let root = need_root();
    let mut b = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("host")
        .command(["sh", "-c", "echo $A; id -u"])
        .command_env("A", "from the box's command");
    if root {
        b = b.user("65534");
    }
    let rec = rt.create(b.build()).await.unwrap();
    let id = rec.id.to_string();
    assert_eq!(rt.get(&id).unwrap().config.process.argv[0], "sh");
    rt.start(&id).await.unwrap();
    let out = rt.main_command(&id).unwrap().output().await.unwrap();
    let uid = if root { "65534" } else { "" };
    if root {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("from the box's command\n{uid}\n")
        );
        let out = rt.command(&id, "id").arg("-u").user("4242:4243").output().await.unwrap();
        assert_eq!(out.stdout, b"4242\n");
        let out = rt.command(&id, "id").arg("-u").output().await.unwrap();
        assert_eq!(out.stdout, b"65534\n", "the box's user is the default");
    }
    // A box without one: NoCommand.
    let plain = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    assert!(matches!(rt.main_command(plain.id.as_str()), Err(RuntimeError::NoCommand { .. })));
    // Refused at create: a relative workdir, an empty user.
    let bad = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("host")
        .command(["true"])
        .command_cwd("rel");
    assert!(matches!(rt.create(bad.build()).await, Err(RuntimeError::BadProcess { .. })));
    rt.remove(&id, true).await.unwrap();
}
