//! The process engines supervise.
//!
//! `create` spawns it (this binary again, `supervise ID`), in a session of its own,
//! with the command's stdio (the engine's pipes, or the pty's other end), and writes
//! its pid to `--pid-file`. When `create` exits, the engine (conmon, containerd's shim:
//! child subreapers) inherits it, reaps it and reads its status: the container's.
//!
//! 1. It starts the box and says so on its ready descriptor (3); `create` returns.
//! 2. It waits for `start` (one byte on `start.fifo`). A signal before that
//!    (`kill` of a created container) stops the box and ends it: 128+N.
//! 3. It runs the box's command with its own stdio (a pty in the box when the
//!    container has a terminal), forwards every signal `kill` writes on `ctl.fifo` and
//!    every signal it receives itself to the command, and the window size on SIGWINCH.
//! 4. When the command ends it stops the box and exits with the command's status,
//!    128+N for a signal.
//!
//! `exec --detach` spawns the same loop for one command (`supervise-exec ID`), its
//! process read from descriptor 4: the engine's exec pid.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};

use boxsock::boxsock_core::echo;
use boxsock::exec::Stdio;
use boxsock::{Command, Runtime, RuntimeError, SpawnErrorKind};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};

use crate::OciError;
use crate::ops::Ctx;
use crate::spec::ProcessSpec;
use crate::state::ContainerId;

/// Where the supervisor says it is ready (`ok`) or why it is not.
pub const READY_FD: RawFd = 3;
/// Where an exec supervisor reads its process (JSON of [`ProcessSpec`]).
pub const SPEC_FD: RawFd = 4;
/// The most of a process spec read from [`SPEC_FD`].
const MAX_SPEC: u64 = 4 << 20;

/// The signals a supervisor forwards to its command when it receives them itself.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// The ready descriptor: written once, then closed.
struct Ready(Option<std::fs::File>);

impl Ready {
    fn take() -> Ready {
        // SAFETY: descriptor 3 was handed by `create`/`exec` (the core's `Spawn`
        // placed it); nothing else in this process owns it.
        Ready(Some(unsafe { std::fs::File::from_raw_fd(READY_FD) }))
    }

    fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"ok\n");
        }
    }

    fn fail(&mut self, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(msg.as_bytes());
        }
    }
}

/// What the caller of a supervisor reads from its ready pipe: `Ok` once it reported
/// ready, its message otherwise (or `None` when it died without one).
pub fn read_ready(mut r: std::fs::File) -> Result<(), Option<String>> {
    let mut buf = Vec::new();
    let _ = (&mut r).take(64 * 1024).read_to_end(&mut buf);
    match buf.as_slice() {
        b"ok\n" => Ok(()),
        [] => Err(None),
        m => Err(Some(String::from_utf8_lossy(m).into_owned())),
    }
}

/// Signals from `kill` (`ctl.fifo`: native-endian `i32`s) and received by this process.
struct Signals {
    ctl: Option<pipe::Receiver>,
    own: Vec<(libc::c_int, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new(ctl: Option<pipe::Receiver>) -> std::io::Result<Signals> {
        let mut own = Vec::new();
        for &s in FORWARDED {
            own.push((s, signal(SignalKind::from_raw(s))?));
        }
        Ok(Signals { ctl, own })
    }

    /// The next signal; `None` when `ctl.fifo` failed (never while it is held open).
    async fn next(&mut self) -> Option<libc::c_int> {
        let own = futures_lite_select(&mut self.own);
        let ctl = async {
            match self.ctl.as_mut() {
                Some(c) => {
                    let mut b = [0u8; 4];
                    match c.read_exact(&mut b).await {
                        Ok(_) => Some(i32::from_ne_bytes(b)),
                        Err(_) => None,
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = own => Some(s),
            s = ctl => s,
        }
    }
}

/// The first of several signal streams to fire.
async fn futures_lite_select(
    own: &mut [(libc::c_int, tokio::signal::unix::Signal)],
) -> libc::c_int {
    std::future::poll_fn(|cx| {
        for (n, s) in own.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*n);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// `supervise ID`: the container's supervisor; returns its exit status.
pub async fn main_supervisor(ctx: &Ctx, id: &ContainerId, tty: bool) -> i32 {
    let root = &ctx.root;
    let mut ready = Ready::take();
    let setup = async {
        let c = root.load(id)?;
        let open = |p: std::path::PathBuf| {
            pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&p)
                .map_err(|e| OciError::io("open", p, e))
        };
        let start = open(c.start_fifo())?;
        let ctl = open(c.ctl_fifo())?;
        let rt = crate::ops::open_runtime(ctx).await?;
        rt.start(&c.record.box_id).await?;
        let signals = Signals::new(Some(ctl)).map_err(|e| OciError::io("watch signals", "", e))?;
        Ok::<_, OciError>((c, start, signals, rt))
    };
    let (c, mut start, mut signals, rt) = match setup.await {
        Ok(s) => s,
        Err(e) => {
            ready.fail(&e.to_string());
            return 1;
        }
    };
    let box_id = c.record.box_id.clone();
    if tty {
        // The pty's other end is stdio: make it this session's terminal, so the
        // engine's resizes of the master arrive as SIGWINCH.
        // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is open.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) };
    }
    ready.ok();
    let mut byte = [0u8; 1];
    let before = loop {
        tokio::select! {
            r = start.read_exact(&mut byte) => match r {
                Ok(_) => break None,
                Err(e) => {
                    tracing::error!(error = %e, "start.fifo failed");
                    break Some(libc::SIGKILL);
                }
            },
            s = signals.next() => match s {
                // What would not end runc's waiting init does not end this either: the
                // engine resizing the pty (SIGWINCH) before `start`, a SIGCONT.
                Some(n) if !ends_a_process(n) => continue,
                s => break Some(s.unwrap_or(libc::SIGKILL)),
            },
        }
    };
    if let Some(sig) = before {
        // Killed before it started: like runc's init, it ends by that signal.
        stop(&rt, &box_id).await;
        return 128 + sig;
    }
    let code = match rt.main_command(&box_id) {
        Ok(command) => run(command, tty, None, &mut signals).await,
        Err(e) => {
            let (msg, code) = spawn_failure(&e, None);
            eprintln!("boxsock-oci: {msg}");
            code
        }
    };
    stop(&rt, &box_id).await;
    code
}

/// Whether `signal`'s default action ends a process (not one that is ignored, or stops
/// or continues it).
fn ends_a_process(signal: libc::c_int) -> bool {
    !matches!(
        signal,
        libc::SIGWINCH
            | libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

/// `supervise-exec ID`: one command of `exec --detach`; returns its exit status.
pub async fn exec_supervisor(ctx: &Ctx, id: &ContainerId) -> i32 {
    let root = &ctx.root;
    let mut ready = Ready::take();
    // SAFETY: descriptor 4 was handed by `exec` (the core's `Spawn` placed it);
    // nothing else in this process owns it.
    let spec_in = unsafe { std::fs::File::from_raw_fd(SPEC_FD) };
    let mut buf = Vec::new();
    let _ = spec_in.take(MAX_SPEC).read_to_end(&mut buf);
    let spec: ProcessSpec = match serde_json::from_slice(&buf) {
        Ok(s) => s,
        Err(e) => {
            ready.fail(&format!("the exec's process: {e}"));
            return 1;
        }
    };
    let setup = async {
        let c = root.load(id)?;
        let rt = crate::ops::open_runtime(ctx).await?;
        let signals = Signals::new(None).map_err(|e| OciError::io("watch signals", "", e))?;
        Ok::<_, OciError>((c, rt, signals))
    };
    let (c, rt, mut signals) = match setup.await {
        Ok(s) => s,
        Err(e) => {
            ready.fail(&e.to_string());
            return 1;
        }
    };
    if spec.terminal {
        // SAFETY: as in `main_supervisor`.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) };
    }
    let command = command_of(&rt, &c.record.box_id, &spec);
    run(command, spec.terminal, Some(&mut ready), &mut signals).await
}

/// Run `command` attached to this process's stdio (a non-detached `exec`): its
/// status.
pub async fn run_attached(command: Command<'_>, tty: bool) -> i32 {
    match Signals::new(None) {
        Ok(mut signals) => run(command, tty, None, &mut signals).await,
        Err(e) => {
            eprintln!("boxsock-oci: cannot watch signals: {e}");
            125
        }
    }
}

/// `rt.command` for an exec's process.
pub fn command_of<'rt>(rt: &'rt Runtime, box_id: &str, spec: &ProcessSpec) -> Command<'rt> {
    let p = &spec.process;
    let mut command = rt.command(box_id, p.argv[0].clone());
    command.args(p.argv[1..].iter().cloned()).envs(p.env.iter().cloned());
    if let Some(cwd) = &p.cwd {
        command.current_dir(cwd.clone());
    }
    if let Some(u) = &p.user {
        command.user(u.clone());
    }
    for r in &p.rlimits {
        command.rlimit(r.resource.clone(), r.soft, r.hard);
    }
    command
}

/// Run `command` with this process's stdio, forwarding signals; its status (128+N
/// for a signal). `ready`, when given, hears `ok` once it runs, or why it could not.
async fn run(
    mut command: Command<'_>,
    tty: bool,
    mut ready: Option<&mut Ready>,
    signals: &mut Signals,
) -> i32 {
    let program = command.get_program().to_owned();
    command.stdin(Stdio::Inherit).stdout(Stdio::Inherit).stderr(Stdio::Inherit);
    if tty {
        let (rows, cols) = window_size().unwrap_or((24, 80));
        command.tty(true).window_size(rows, cols);
    }
    let mut child = match command.spawn().await {
        Ok(c) => c,
        Err(e) => {
            let (msg, code) = spawn_failure(&e, Some(&program));
            match ready.as_mut() {
                Some(r) => r.fail(&msg),
                None => eprintln!("boxsock-oci: {msg}"),
            }
            return code;
        }
    };
    if let Some(r) = ready {
        r.ok();
    }
    let control = child.control();
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            sig = signals.next() => match sig {
                Some(libc::SIGWINCH) if tty => {
                    if let Some((rows, cols)) = window_size() {
                        let _ = control.resize(rows, cols);
                    }
                }
                Some(n) => {
                    let _ = control.signal(n);
                }
                None => {}
            },
        }
    };
    match status {
        Ok(s) => s.shell_code(),
        // The agent answers a command it cannot start with an error instead of its
        // exit: said here, on the command's stderr, with a shell's status.
        Err(e) => {
            let (msg, code) = spawn_failure(&e, Some(&program));
            eprintln!("boxsock-oci: {msg}");
            code
        }
    }
}

/// What a failed spawn says, and its status: 127 when the command was not found and
/// 126 when it cannot be executed (as a shell does, and in the words engines look for:
/// podman maps "executable file not found" to 127 and "permission denied" to 126),
/// else 125.
pub fn spawn_failure(e: &RuntimeError, program: Option<&str>) -> (String, i32) {
    let p = program.map(|p| echo::echo(p).to_string()).unwrap_or_else(|| "the command".into());
    match e.spawn_error() {
        Some(SpawnErrorKind::NotFound) => {
            (format!("exec: {p}: executable file not found in $PATH ({e})"), 127)
        }
        Some(SpawnErrorKind::PermissionDenied) => {
            (format!("exec: {p}: permission denied ({e})"), 126)
        }
        _ => (e.to_string(), 125),
    }
}

/// Stop the box, saying why not if it cannot be.
async fn stop(rt: &Runtime, box_id: &str) {
    if let Err(e) = rt.stop(box_id, None).await {
        eprintln!("boxsock-oci: stopping box {box_id}: {e}");
    }
}

/// The window size of stdio's terminal.
fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a
    // live local; fd 0 is open (or the call fails with EBADF).
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ as _, &mut ws as *mut libc::winsize) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}
