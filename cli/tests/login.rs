//! `boxsock login` without `--password-stdin`: on a terminal it prompts for the password
//! with echo off (and restores the terminal, Ctrl-C included); on a stdin that is not a
//! terminal it refuses, naming `--password-stdin`. The terminal is a real pty made by
//! util-linux `script`, its input typed by the test once the prompt shows.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use base64::Engine as _;
use boxsock_test_support::{Need, skip};
use common::{Env, LIMIT, boxsock, run, stderr};

/// Run `script` on `shell` (a `sh -c` line, `$BOXSOCK` the binary), typing each of
/// `typed` once the output so far contains its trigger; returns everything the
/// terminal showed.
fn on_a_pty(env: &Env, shell: &str, typed: &[(&str, &[u8])]) -> String {
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", shell, "/dev/null"])
        .env("BOXSOCK", env!("CARGO_BIN_EXE_boxsock"))
        .env("BOXSOCK_HOME", &env.home)
        .env("BOXSOCK_LINK_BASE", &env.link_base)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + LIMIT;
    for (trigger, bytes) in typed {
        while !String::from_utf8_lossy(&seen).contains(trigger) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no {trigger:?} within {LIMIT:?}: {:?}", String::from_utf8_lossy(&seen))
            });
            seen.extend(chunk);
        }
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    while let Ok(chunk) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.extend(chunk);
    }
    let status = child.wait().unwrap();
    let shown = String::from_utf8_lossy(&seen).into_owned();
    assert!(status.success(), "script: {status}: {shown:?}");
    shown
}

fn have_script() -> bool {
    if Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    skip(Need::Program { name: "script", package: "util-linux" }, "script makes the pty");
    false
}

#[test]
fn login_on_a_terminal_prompts_without_echo_and_restores_the_terminal() {
    if !have_script() {
        return;
    }
    let env = Env::new();
    let shell = "\"$BOXSOCK\" login -u alice 127.0.0.1:5999; echo status=$?; \
                 stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\{0,1\\}echo'";
    let shown = on_a_pty(&env, shell, &[("Password: ", b"s3cret-word\n")]);
    assert!(!shown.contains("s3cret-word"), "the password was echoed: {shown:?}");
    assert!(shown.contains("status=0"), "{shown:?}");
    assert!(shown.lines().any(|l| l.trim() == "echo"), "echo is not back on: {shown:?}");
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.home.join("auth.json")).unwrap()).unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-word");
    assert_eq!(auth["auths"]["127.0.0.1:5999"]["auth"], want.as_str(), "{auth}");

    // The control: the same terminal shows what is typed when echo is on.
    let shown = on_a_pty(&env, "read line; echo got=$line", &[("", b"visible-word\n")]);
    assert_eq!(shown.matches("visible-word").count(), 2, "{shown:?}");

    // Ctrl-C at the prompt: 130, nothing stored, echo back on.
    let shell = "trap true INT; \"$BOXSOCK\" login -u bob 127.0.0.1:5998; echo status=$?; \
                 stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\{0,1\\}echo'";
    let shown = on_a_pty(&env, shell, &[("Password: ", b"\x03")]);
    assert!(shown.contains("status=130"), "{shown:?}");
    assert!(shown.lines().any(|l| l.trim() == "echo"), "echo is not back on: {shown:?}");
    let auth = std::fs::read_to_string(env.home.join("auth.json")).unwrap();
    assert!(!auth.contains("5998"), "{auth}");
}

#[test]
fn login_without_password_stdin_on_a_pipe_is_a_clear_error() {
    let env = Env::new();
    let o = run(boxsock(&env).args(["login", "-u", "alice", "127.0.0.1:5999"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("not one: pass --password-stdin"), "{}", stderr(&o));
    assert!(!env.home.join("auth.json").exists());
}
