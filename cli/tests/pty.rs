//! `boxsock exec -t` / `run -t` driven through a real pty (`openpty`): the client's
//! stdin, stdout and stderr are the pty's slave, which is its controlling terminal, and
//! the test plays the user on the master. Host backend, real boxes.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, LIMIT, boxsock, ok};
use nix::sys::termios::{self, LocalFlags, Termios};

fn running_box(env: &Env) -> String {
    let id = ok(boxsock(env).args(["--backend", "host", "create"])).trim().to_owned();
    ok(boxsock(env).args(["start", &id]));
    id
}

/// A pty whose slave is the controlling terminal of a spawned `boxsock`, and what
/// appeared on its master.
struct Terminal {
    master: std::fs::File,
    slave: OwnedFd,
    screen: Arc<Mutex<Vec<u8>>>,
    child: Child,
    /// The pty's termios before `boxsock` was spawned (read after the spawn, it races
    /// with the client entering raw mode on a loaded machine).
    initial: Termios,
}

impl Terminal {
    fn spawn(mut cmd: Command) -> Terminal {
        let ws = libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(&ws, None).unwrap();
        let initial = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        let s = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        cmd.stdin(s(&pty.slave)).stdout(s(&pty.slave)).stderr(s(&pty.slave));
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe calls on the
        // child's own descriptors.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        // Reads until the test ends (the test keeps a slave open, so no EOF comes).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal { master, slave: pty.slave, screen, child, initial }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !pred(&self.text()) {
            assert!(Instant::now() < deadline, "no {what} on the terminal: {:?}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    fn termios(&self) -> Termios {
        termios::tcgetattr(self.slave.as_fd()).unwrap()
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one `winsize` from a live local; the fd is the open
        // master. The kernel sends SIGWINCH to the terminal's foreground group.
        let r = unsafe {
            libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws as *const libc::winsize)
        };
        assert_eq!(r, 0);
    }

    fn wait_exit(&mut self) -> (i32, Duration) {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s.code().unwrap_or(-1), t.elapsed());
            }
            assert!(t.elapsed() < LIMIT, "boxsock did not exit: {:?}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn same(a: &Termios, b: &Termios) -> bool {
    a.input_flags == b.input_flags
        && a.output_flags == b.output_flags
        && a.control_flags == b.control_flags
        && a.local_flags == b.local_flags
        && a.control_chars == b.control_chars
}

#[test]
fn exec_it_gives_a_shell_prompt_echoes_resizes_and_restores_the_terminal() {
    let env = Env::new();
    let id = running_box(&env);
    let mut cmd = boxsock(&env);
    cmd.args(["exec", "-it", &id, "--", "/bin/sh", "-i"]);
    let mut t = Terminal::spawn(cmd);
    let before = t.initial.clone();
    t.wait_for("shell prompt", |s| s.contains("# ") || s.contains("$ "));
    // The client's terminal is raw while the command runs: no local echo, no line
    // editing, no signals from Ctrl-C.
    let raw = t.termios();
    assert!(
        !raw.local_flags.intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG),
        "{:?}",
        raw.local_flags
    );
    t.type_in(b"echo round-$((40+2)); stty size\n");
    t.wait_for("echo round trip and the initial size", |s| {
        s.contains("round-42") && s.contains("24 80")
    });
    t.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    t.type_in(b"stty size\n");
    t.wait_for("the new size after SIGWINCH", |s| s.contains("40 120"));
    t.type_in(b"exit 5\n");
    assert_eq!(t.wait_exit().0, 5, "{}", t.text());
    assert!(same(&before, &t.termios()), "terminal not restored");
}

#[test]
fn run_it_ctrl_c_reaches_the_command_which_exits_130_and_the_terminal_is_restored() {
    let env = Env::new();
    let mut cmd = boxsock(&env);
    cmd.args([
        "--backend",
        "host",
        "run",
        "--rm",
        "-it",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 30",
    ]);
    let mut t = Terminal::spawn(cmd);
    let before = t.initial.clone();
    t.wait_for("the command to start", |s| s.contains("started"));
    std::thread::sleep(Duration::from_millis(300));
    t.type_in(b"\x03");
    let (code, took) = t.wait_exit();
    assert_eq!(code, 130, "{}", t.text());
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(same(&before, &t.termios()), "terminal not restored");
}

#[test]
fn exec_it_without_a_terminal_is_refused_like_docker() {
    let env = Env::new();
    let id = running_box(&env);
    let o = boxsock(&env).args(["exec", "-it", &id, "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the input device is not a TTY"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // -t alone needs no terminal on stdin: the command still gets a pty.
    let o = boxsock(&env).args(["exec", "-t", &id, "--", "tty"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/dev/pts/"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn sigint_to_exec_without_t_is_forwarded_to_the_command() {
    let env = Env::new();
    let id = running_box(&env);
    let mut child = boxsock(&env)
        .args([
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    out.read_to_end(&mut seen).unwrap();
    let status = child.wait().unwrap();
    assert!(
        String::from_utf8_lossy(&seen).contains("got-int"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(status.code(), Some(5));
}

#[test]
fn exec_and_run_w_set_the_working_directory() {
    let env = Env::new();
    let id = running_box(&env);
    let o = boxsock(&env).args(["exec", "-w", "/tmp", &id, "--", "pwd"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "/tmp\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = boxsock(&env)
        .args(["--backend", "host", "run", "--rm", "--workdir", "/usr", "--", "pwd"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "/usr\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A directory that does not exist is "not found" (127), naming it.
    let o = boxsock(&env).args(["exec", "-w", "/no/such/dir", &id, "--", "pwd"]).output().unwrap();
    assert_eq!(o.status.code(), Some(127), "{}", String::from_utf8_lossy(&o.stderr));
}
