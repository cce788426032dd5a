//! podman (Debian's podman and conmon, rootful) with `--runtime <path>/boxsock-oci`:
//! `run --rm`, `run -d` with `exec`, `logs`, `stop`, `kill` and `rm`, `run -it` through a
//! pty, exit codes 0, 3 and 137, `-v` (read, written, `:ro` refused) and `-p` (a page
//! served in the container, read from the host). The image is loaded offline from an
//! OCI archive the test builds (engines.rs).
//!
//! Every scenario runs twice in the same run: `boxsock_oci::*` under the runtime under
//! test, and `runc::*` under Debian's runc, the positive control that proves the
//! harness and the scenario on a known-good runtime.

mod common;
#[path = "common/engines.rs"]
#[macro_use]
mod engines;

use std::path::Path;

use engines::{Podman, Terminal, code, eventually, free_port, http_get, stderr, stdout};

under_both_runtimes!(
    run_rm_prints_the_output,
    detached_exec_logs_stop_kill_rm,
    exit_codes_pass_through,
    run_it_through_a_pty,
    volumes_are_read_written_and_ro_refused,
    a_published_port_serves_the_containers_page,
);

/// `podman run --rm IMAGE echo hi` prints `hi`, and the container is gone after.
fn run_rm_prints_the_output(runtime: &Path) {
    let Some(p) = Podman::new(runtime) else { return };
    let o = p.run(&["--rm"], &["echo", "hi"]);
    code("podman run --rm IMAGE echo hi", &o, 0);
    assert_eq!(stdout(&o), "hi\n", "stderr: {}", stderr(&o));
    assert_eq!(p.ok(&["ps", "--all", "--quiet"]), "", "--rm left a container");
}

/// The life of a detached container: `run -d`, `logs`, `exec` (output, a write the next
/// exec reads back, an exit code), `kill -s USR1` (caught), `stop` (SIGTERM, caught:
/// exit 0), `rm`; a second one `kill`ed (137) and `rm`ed, a third `rm -f`ed running.
fn detached_exec_logs_stop_kill_rm(runtime: &Path) {
    let Some(p) = Podman::new(runtime) else { return };
    let script = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 0' TERM; \
                  echo started; while :; do sleep 0.1; done";
    let o = p.run(&["-d", "--name", "one"], &["sh", "-c", script]);
    code("podman run -d", &o, 0);
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 64, "run -d printed {:?}", stdout(&o));
    let logs = |name: &str| p.ok(&["logs", name]);
    eventually("`started` in podman logs", || logs("one").contains("started").then_some(()));
    assert_eq!(p.inspect("one", "{{.State.Status}}"), "running");

    let o = p.podman(&["exec", "one", "sh", "-c", "echo exec-$((6*7))"]);
    code("podman exec", &o, 0);
    assert_eq!(stdout(&o), "exec-42\n");
    let o = p.podman(&["exec", "one", "sh", "-c", "echo written-by-exec > /tmp/f"]);
    code("podman exec (write)", &o, 0);
    assert_eq!(p.ok(&["exec", "one", "cat", "/tmp/f"]), "written-by-exec");
    code("podman exec sh -c 'exit 5'", &p.podman(&["exec", "one", "sh", "-c", "exit 5"]), 5);

    p.ok(&["kill", "--signal", "USR1", "one"]);
    eventually("`got-usr1` in podman logs", || logs("one").contains("got-usr1").then_some(()));
    assert_eq!(p.inspect("one", "{{.State.Status}}"), "running", "USR1 was caught");

    p.ok(&["stop", "--time", "60", "one"]);
    assert_eq!(p.inspect("one", "{{.State.Status}}"), "exited");
    assert_eq!(p.inspect("one", "{{.State.ExitCode}}"), "0", "{}", logs("one"));
    assert!(logs("one").contains("got-term"), "SIGTERM not delivered: {}", logs("one"));
    p.ok(&["rm", "one"]);

    let o = p.run(&["-d", "--name", "two"], &["sleep", "1000"]);
    code("podman run -d (two)", &o, 0);
    p.ok(&["kill", "two"]);
    assert_eq!(p.ok(&["wait", "two"]), "137");
    assert_eq!(p.inspect("two", "{{.State.ExitCode}}"), "137");
    p.ok(&["rm", "two"]);

    let o = p.run(&["-d", "--name", "three"], &["sleep", "1000"]);
    code("podman run -d (three)", &o, 0);
    p.ok(&["rm", "--force", "--time", "0", "three"]);
    assert_eq!(p.ok(&["ps", "--all", "--quiet"]), "", "rm left a container");
}

/// `podman run` exits with the command's status: 0, 3, and 137 when `podman kill`
/// kills the running container (SIGKILL: 128 + 9).
fn exit_codes_pass_through(runtime: &Path) {
    let Some(p) = Podman::new(runtime) else { return };
    code("podman run --rm IMAGE true", &p.run(&["--rm"], &["true"]), 0);
    code("podman run --rm IMAGE sh -c 'exit 3'", &p.run(&["--rm"], &["sh", "-c", "exit 3"]), 3);

    let log = p.dir().join("run-k.log");
    let mut c = p.command(&Podman::run_args(&["--rm", "--name", "k"], &["sleep", "1000"]));
    let f = std::fs::File::create(&log).unwrap();
    c.stdout(f.try_clone().unwrap()).stderr(f);
    let mut run = c.spawn().unwrap();
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut seen;
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(Some(s)) = run.try_wait() {
            panic!("podman run exited ({s}) before it was killed: {}", output());
        }
        let o = p.podman(&["inspect", "--format", "{{.State.Status}}", "k"]);
        seen = format!("{}{}", stdout(&o).trim(), stderr(&o).trim());
        if seen == "running" {
            break;
        }
        assert!(t0.elapsed() < engines::LIMIT, "never running: {seen}; {}", output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    p.ok(&["kill", "k"]);
    let status = engines::wait_limited(&mut run, engines::LIMIT);
    assert_eq!(status.and_then(|s| s.code()), Some(137), "podman run: {}", output());
}

/// `podman run -it IMAGE sh` on a terminal: a prompt, a typed command's echo and output,
/// a terminal inside, and `exit 7` is podman's exit code.
fn run_it_through_a_pty(runtime: &Path) {
    let Some(p) = Podman::new(runtime) else { return };
    let mut t = Terminal::spawn(p.command(&Podman::run_args(&["--rm", "-it"], &["sh"])));
    t.wait_for("shell prompt", |s| s.contains("# "));
    t.type_in(b"[ -t 0 ] && echo tty-$((6*7))\n");
    // The shell's echo of the line, then its output on a line of its own.
    t.wait_for("the typed line's output", |s| {
        s.contains("tty-$((6*7))") && s.contains("tty-42\r\n")
    });
    t.type_in(b"exit 7\n");
    assert_eq!(t.wait_exit(), Some(7), "{:?}", t.text());
}

/// `-v HOST:/data` is read and written from the container; `-v HOST:/ro:ro` is read and
/// its writes are refused (the rw write in the same run shows writes can land).
fn volumes_are_read_written_and_ro_refused(runtime: &Path) {
    let Some(p) = Podman::new(runtime) else { return };
    let rw = p.dir().join("rw");
    let ro = p.dir().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("in"), "from-the-host\n").unwrap();
    std::fs::write(ro.join("in"), "read-only-in\n").unwrap();
    let script = "cat /data/in /ro/in; echo from-the-container > /data/out; \
                  if echo x > /ro/x; then echo ro-WRITTEN; else echo ro-refused; fi";
    let v_rw = format!("{}:/data", rw.display());
    let v_ro = format!("{}:/ro:ro", ro.display());
    let o = p.run(&["--rm", "-v", &v_rw, "-v", &v_ro], &["sh", "-c", script]);
    code("podman run -v", &o, 0);
    let out = stdout(&o);
    assert!(out.contains("from-the-host\n"), "{out}");
    assert!(out.contains("read-only-in\n"), "{out}");
    assert!(out.contains("ro-refused"), "a write to a :ro volume: {out}");
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "from-the-container\n");
    assert!(!ro.join("x").exists(), "the :ro volume was written");
}

/// `-p PORT:80` with busybox httpd in the container: the host reads, on
/// 127.0.0.1:PORT, a page the container wrote (into its own layer) after it started.
fn a_published_port_serves_the_containers_page(runtime: &Path) {
    let Some(p) = Podman::new(runtime) else { return };
    let token = format!("page-{}", p.dir().file_name().unwrap().to_string_lossy());
    let script = format!("echo {token} > /www/index.html && exec httpd -f -p 80 -h /www");
    // A port free a moment ago can be taken before podman binds it: try a few.
    let mut last = String::new();
    let port = (0..5)
        .find_map(|_| {
            let port = free_port();
            let publish = format!("{port}:80");
            let o = p.run(&["-d", "--name", "web", "-p", &publish], &["sh", "-c", &script]);
            if o.status.success() {
                return Some(port);
            }
            last = stderr(&o);
            let _ = p.podman(&["rm", "--force", "--time", "0", "web"]);
            None
        })
        .unwrap_or_else(|| panic!("podman run -p failed 5 times: {last}"));
    let page =
        eventually("the page on 127.0.0.1", || http_get(port).filter(|r| r.contains(&token)));
    assert!(page.starts_with("HTTP/1."), "{page}");
    p.ok(&["rm", "--force", "--time", "0", "web"]);
}
