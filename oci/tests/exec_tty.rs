//! `exec` (detached as conmon and containerd's shim run it, and attached) and
//! terminals (`--console-socket`: the pty master arrives by `SCM_RIGHTS`), driven as a
//! subreaper engine does. One test in this binary: the subreaper flag is process-wide.

mod common;

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, ok, pid_of, reap};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// `create` then `start` of `id` running `args`; its supervisor's pid.
fn started(
    env: &Env,
    id: &str,
    args: &[&str],
    extra: serde_json::Value,
    sock: Option<&Path>,
) -> i32 {
    let b = env.bundle(id, args, extra);
    let pid_path = env.tmp.path().join(format!("{id}.pid"));
    let mut c = env.command(&["create", "--bundle", b.to_str().unwrap(), "--pid-file"]);
    c.arg(&pid_path);
    if let Some(s) = sock {
        c.arg("--console-socket").arg(s);
    }
    // Files, not pipes: the supervisor keeps create's stdio (an engine's pipes stay
    // open as long as the container runs).
    let (o, e) =
        (env.tmp.path().join(format!("{id}.out")), env.tmp.path().join(format!("{id}.err")));
    let st = c
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "create {id}: {}", std::fs::read_to_string(&e).unwrap());
    ok(&format!("start {id}"), &env.oci(&["start", id]));
    pid_of(&pid_path)
}

/// Accept one connection on `l` and take the descriptor it carries.
fn receive_fd(l: &UnixListener) -> OwnedFd {
    let (s, _) = l.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&s),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the descriptor was just received; nothing else owns it.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor received");
}

/// Read from the pty master until `want` shows up (or fail after `limit`).
fn read_until(master: &mut File, want: &str, limit: Duration) -> String {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < limit {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains(want) {
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the pty: {e}"),
        }
    }
    panic!("{want:?} not seen on the pty in {limit:?}: {:?}", String::from_utf8_lossy(&seen));
}

fn nonblocking(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, integer arguments only.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

#[test]
fn exec_and_terminals_as_an_engine_drives_them() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    let env = Env::new();
    let t = env.tmp.path();

    // A detached exec (--process, --pid-file): its supervisor is reparented to us and
    // exits with the command's status; its output is exec's stdout.
    let main = started(&env, "main", &["sleep", "1000"], serde_json::json!({}), None);
    let proc_json = t.join("proc.json");
    std::fs::write(
        &proc_json,
        serde_json::json!({
            "args": ["sh", "-c", "echo from-exec $FOO; pwd; ulimit -n; exit 5"],
            "rlimits": [{ "type": "RLIMIT_NOFILE", "soft": 444, "hard": 444 }],
            "env": ["PATH=/bin", "FOO=bar"],
            "cwd": "/tmp",
            "user": { "uid": 0, "gid": 0 },
        })
        .to_string(),
    )
    .unwrap();
    let exec_pid = t.join("exec.pid");
    let st = env
        .command(&["exec", "--detach", "--process", proc_json.to_str().unwrap(), "--pid-file"])
        .arg(&exec_pid)
        .arg("main")
        .stdout(File::create(t.join("exec.out")).unwrap())
        .stderr(File::create(t.join("exec.err")).unwrap())
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "exec: {}", std::fs::read_to_string(t.join("exec.err")).unwrap());
    let pid = pid_of(&exec_pid);
    assert_eq!(reap(pid, Duration::from_secs(30)), WaitStatus::Exited(Pid::from_raw(pid), 5));
    assert_eq!(std::fs::read_to_string(t.join("exec.out")).unwrap(), "from-exec bar\n/tmp\n444\n");

    // Attached: its status is exec's own.
    let out = env.oci(&["exec", "main", "sh", "-c", "echo attached; exit 4"]);
    assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(4), b"attached\n".as_slice()));

    // A command that is not there: 127, in the words engines look for.
    let out = env.oci(&["exec", "main", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found"), "{out:?}");
    // Detached, it is the supervisor's status (the agent reports a command it cannot
    // start as it reports an exit), and the words are on its stderr.
    let st = env
        .command(&["exec", "--detach", "--pid-file"])
        .arg(&exec_pid)
        .args(["main", "no-such-command"])
        .stdout(File::create(t.join("exec2.out")).unwrap())
        .stderr(File::create(t.join("exec2.err")).unwrap())
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let pid = pid_of(&exec_pid);
    assert_eq!(reap(pid, Duration::from_secs(30)), WaitStatus::Exited(Pid::from_raw(pid), 127));
    let err = std::fs::read_to_string(t.join("exec2.err")).unwrap();
    assert!(err.contains("executable file not found"), "{err}");

    // A container with a terminal: the master arrives on the console socket; what is
    // typed reaches the command through the box's pty, which echoes it.
    let sock = t.join("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let taker = std::thread::spawn(move || receive_fd(&l));
    let tty_extra = serde_json::json!({ "process": { "terminal": true } });
    let b = env.bundle("term", &["sh", "-c", "tty; read x; echo got:$x; exit 7"], tty_extra);
    let pid_path = t.join("term.pid");
    // With a terminal the supervisor's stdio is the pty: create's pipes close.
    let out = env
        .command(&["create", "--bundle", b.to_str().unwrap(), "--console-socket"])
        .arg(&sock)
        .arg("--pid-file")
        .arg(&pid_path)
        .arg("term")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    ok("create term", &out);
    let mut master = File::from(taker.join().unwrap());
    nonblocking(&master);
    ok("start term", &env.oci(&["start", "term"]));
    read_until(&mut master, "/dev/pts/", Duration::from_secs(30));
    master.write_all(b"typed\r").unwrap();
    let seen = read_until(&mut master, "got:typed", Duration::from_secs(30));
    assert!(seen.contains("typed"), "{seen:?}");
    let pid = pid_of(&pid_path);
    assert_eq!(reap(pid, Duration::from_secs(30)), WaitStatus::Exited(Pid::from_raw(pid), 7));

    // A terminal without a console socket is refused, naming what is missing, and
    // leaves nothing behind.
    let b = env.bundle("noterm", &["sh"], serde_json::json!({ "process": { "terminal": true } }));
    let out = env.oci(&["create", "--bundle", b.to_str().unwrap(), "noterm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--console-socket"), "{out:?}");
    let gone = env.oci(&["state", "noterm"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"), "{gone:?}");

    for id in ["main", "term"] {
        ok(&format!("delete {id}"), &env.oci(&["delete", "--force", id]));
    }
    assert_eq!(
        reap(main, Duration::from_secs(30)),
        WaitStatus::Signaled(Pid::from_raw(main), nix::sys::signal::Signal::SIGKILL, false)
    );
}
