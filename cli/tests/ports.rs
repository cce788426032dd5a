//! Issue 21 items 3 and 4 at the command line, host tier: published ports stored with
//! the box (network implied), shown by `ls` and `inspect`, handed to passt as forwards
//! at `start` in another process, and a host port held by another process failing the
//! start at once, naming the port and the holder; `--cpus`/`--memory` beyond what
//! libkrun can boot refused at create.
//!
//! Real parts: the real `boxsock` binary on temp homes, the real shim configuring the
//! real libkrun (`configure_only=true`: nothing boots here), the real passt (behind a
//! wrapper that records its argv), a real listener held by a child process (busybox
//! `httpd`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, agent_and_shim_dir, run, text};
use serde_json::Value;

fn boxsock(env: &Env) -> Command {
    common::boxsock_in(env, &agent_and_shim_dir())
}

fn find(name: &str) -> Option<PathBuf> {
    let p = std::env::var_os("PATH")?;
    std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.exists())
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    std::fs::read_to_string("/proc/net/tcp").unwrap().contains(&needle)
}

struct Holding(Child);
impl Drop for Holding {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const KRUN: [&str; 6] = [
    "--backend",
    "libkrun",
    "--strategy",
    "short-symlink",
    "--backend-option",
    "configure_only=true",
];

/// `-p` without `--network` gives the box a network; the ports are stored (seen by
/// `inspect --json` and `ls` from other processes); `start` in another process hands
/// passt one `--tcp-ports ADDR/HOST:BOX` per mapping (recorded by a wrapper that then
/// runs the real passt, which really binds them before the shim is started).
#[test]
fn ports_are_stored_shown_and_forwarded_by_passt() {
    let Some(passt) = find("passt") else {
        boxsock_test_support::skip(
            boxsock_test_support::Need::Program { name: "passt", package: "passt" },
            "passt forwards the ports",
        );
        return;
    };
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let argv = d.path().join("passt-argv");
    let wrapper = d.path().join("passt-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\nexec {} \"$@\"\n",
            argv.display(),
            passt.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let (a, b) = (free_tcp_port(), free_tcp_port());
    let o = run(boxsock(&env).args(KRUN).args([
        "create",
        "-p",
        &format!("{a}:80"),
        "-p",
        &format!("[::1]:{b}:53/udp"),
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();

    let info: Value =
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", &id])).stdout)
            .unwrap();
    assert_eq!(info["network"], true, "-p implies the network: {info}");
    let ports = info["settings"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{info}");
    assert_eq!(
        (
            &ports[0]["host_ip"],
            &ports[0]["host_port"],
            &ports[0]["box_port"],
            &ports[0]["protocol"]
        ),
        (&Value::from("127.0.0.1"), &Value::from(a), &Value::from(80), &Value::from("tcp")),
        "{info}"
    );
    assert_eq!(
        (&ports[1]["host_ip"], &ports[1]["protocol"]),
        (&Value::from("::1"), &Value::from("udp"))
    );

    let ls = text(&run(boxsock(&env).args(["ls", "-a"])).stdout);
    assert!(ls.lines().next().unwrap().ends_with("PORTS"), "{ls}");
    assert!(ls.contains(&format!("127.0.0.1:{a}->80/tcp, [::1]:{b}->53/udp")), "{ls}");
    let shown = text(&run(boxsock(&env).args(["inspect", &id])).stdout);
    assert!(shown.contains(&format!("ports:     127.0.0.1:{a}->80/tcp")), "{shown}");

    let o = run(boxsock(&env).args(KRUN).args([
        "--backend-option",
        &format!("passt={}", wrapper.display()),
        "--ready-timeout",
        "600",
        "start",
        &id,
    ]));
    assert_eq!(
        o.status.code(),
        Some(125),
        "configure_only never reports ready: {}",
        text(&o.stderr)
    );
    let got = std::fs::read_to_string(&argv).expect("passt was started");
    let got: Vec<&str> = got.lines().collect();
    let forwards: Vec<&str> = got.iter().copied().skip_while(|a| !a.ends_with("-ports")).collect();
    assert_eq!(
        forwards,
        ["--tcp-ports", &format!("127.0.0.1/{a}:80"), "--udp-ports", &format!("::1/{b}:53")],
        "{got:?}"
    );
    // The shim got the network (passt's other end).
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.home.join("boxes").join(&id).join("shim-spec.json")).unwrap(),
    )
    .unwrap();
    assert!(spec["net"].is_object(), "{spec}");
}

/// A host port held by another process fails `start` at once (before passt or the
/// shim runs), naming the address, port, protocol and the holder's pid and command;
/// with the holder gone the same box starts as far as configure_only goes (the
/// control: the refusal was the port's).
#[test]
fn a_host_port_in_use_fails_start_naming_it_and_its_holder() {
    let Some(busybox) = find("busybox") else {
        boxsock_test_support::skip(
            boxsock_test_support::Need::Program { name: "busybox", package: "busybox-static" },
            "busybox holds the port",
        );
        return;
    };
    let env = Env::new();
    let port = free_tcp_port();
    let o = run(boxsock(&env).args(KRUN).args(["create", "-p", &format!("{port}:80")]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let holder = Holding(
        Command::new(&busybox)
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h", "/"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listening(port) {
        assert!(Instant::now() < deadline, "httpd never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = run(boxsock(&env).args(KRUN).args(["--ready-timeout", "600", "start", &id]));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "started on a taken port");
    for want in [
        format!("127.0.0.1:{port}/tcp"),
        "already in use".to_owned(),
        format!("held by pid {}", holder.0.id()),
        "httpd".to_owned(),
    ] {
        assert!(err.contains(&want), "{want:?} not in {err}");
    }
    let spec = env.home.join("boxes").join(&id).join("shim-spec.json");
    assert!(!spec.exists(), "the shim ran although the port was taken");
    let state: Value =
        serde_json::from_slice(&run(boxsock(&env).args(["inspect", "--json", &id])).stdout)
            .unwrap();
    assert_eq!(state["state"], "stopped", "{state}");

    drop(holder);
    let o = run(boxsock(&env).args(KRUN).args(["--ready-timeout", "600", "start", &id]));
    assert!(!text(&o.stderr).contains("in use"), "{}", text(&o.stderr));
    assert!(spec.exists(), "control: with the port free the shim runs");
}

/// `--cpus` and `--memory` beyond what libkrun boots are refused at create, naming the
/// value and the limit; nothing is written.
#[test]
fn cpus_and_memory_libkrun_cannot_boot_are_refused_at_create() {
    let env = Env::new();
    for (args, says) in [
        (["--cpus", "255"], vec!["vcpus", "255", "1..=254"]),
        (["--memory", "32m"], vec!["ram_mib", "32 MiB", "at least 64"]),
        (["--memory", "64t"], vec!["ram_mib", "more than this host's memory"]),
    ] {
        let o = run(boxsock(&env).args(KRUN).arg("create").args(args));
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted");
        for s in says {
            assert!(err.contains(s), "{args:?}: {s:?} not in {err}");
        }
        assert!(env.box_dirs().is_empty(), "{args:?} left a box");
    }
    let o = run(boxsock(&env).args(KRUN).args(["create", "--cpus", "254", "--memory", "300m"]));
    assert!(o.status.success(), "control: {}", text(&o.stderr));
}
