//! The commands, as runc has them. Each returns what it prints; `main` prints it.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxsock::boxsock_core::atomic::AtomicWrite;
use boxsock::boxsock_core::echo;
use boxsock::boxsock_core::process::OwnedProcess;
use boxsock::boxsock_core::spawn::Spawn;
use boxsock::{
    BackendConfig, CreateOptions, LockMode, ProcessIdentity, Runtime, RuntimeOptions,
    builtin_backends, builtin_strategies,
};
use nix::sys::stat::Mode;

use crate::OciError;
use crate::spec::{BoxSpec, ProcessSpec};
use crate::state::{Container, ContainerId, Record, StateRoot, Status};
use crate::supervise::{READY_FD, SPEC_FD, read_ready};

/// What every command knows: the root, and how to run this binary again (the
/// supervisors) with the same global options.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `--root`.
    pub root: StateRoot,
    /// This executable.
    pub exe: PathBuf,
    /// The global options to pass on (`--root`, `--log`, `--log-format`, `--debug`,
    /// `--backend-option`, `--helper-dir`).
    pub global_args: Vec<OsString>,
    /// The backends' options and helper directory (`--backend-option`, `--helper-dir`).
    pub backend_config: BackendConfig,
    /// `--ready-timeout` (the runtime's default when `None`).
    pub ready_timeout: Option<Duration>,
}

impl Ctx {
    /// A context for `root`, running `exe` for supervisors.
    pub fn new(root: StateRoot, exe: PathBuf, global_args: Vec<OsString>) -> Ctx {
        Ctx {
            root,
            exe,
            global_args,
            backend_config: BackendConfig::default(),
            ready_timeout: None,
        }
    }
}

/// Open boxsock's home under the root, as the CLI does (a lock per operation, so
/// every `boxsock-oci` process and supervisor works on it at once).
pub async fn open_runtime(ctx: &Ctx) -> Result<Runtime, OciError> {
    let root = &ctx.root;
    root.ensure()?;
    let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    o.backend_config = ctx.backend_config.clone();
    if let Some(t) = ctx.ready_timeout {
        o.ready_timeout = t;
    }
    o.lock_mode = LockMode::Shared;
    o.lock_wait = Some(Duration::from_secs(30));
    o.health_monitor = false;
    let (rt, _) = Runtime::open(root.home(), o).await?;
    Ok(rt)
}

/// `create`'s arguments.
#[derive(Debug, Clone)]
pub struct CreateArgs {
    /// The container id.
    pub id: String,
    /// `--bundle`.
    pub bundle: PathBuf,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds`.
    pub preserve_fds: i32,
}

/// `create`: the box made and started, its supervisor waiting for `start`.
pub async fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), OciError> {
    let id = ContainerId::new(&a.id)?;
    if a.preserve_fds != 0 {
        return Err(OciError::Unsupported {
            field: "--preserve-fds".into(),
            reason: format!(
                "{}: a box's command gets stdio only (its agent spawns it inside the box)",
                a.preserve_fds
            ),
        });
    }
    let spec = BoxSpec::load(&a.bundle)?;
    for what in &spec.ignored {
        tracing::debug!(container = %id, field = %what, "ignored");
    }
    if spec.process.terminal && a.console_socket.is_none() {
        return Err(OciError::Usage(
            "process.terminal is true: a --console-socket is needed to receive the pty".into(),
        ));
    }
    // runc sets the limits in the container's first process; the box's agent sets them
    // in the command before exec (they are the box process's). A sandbox box's agent
    // runs with docker's capabilities, without the one that raises a hard limit: so on
    // the sandbox they are also set here, failing as runc fails, and the supervisor
    // and the box inherit them. Not on libkrun: the VMM on the host must not take an
    // engine's open-file limit (a guest's agent is root in its own kernel).
    if spec.backend == "sandbox" {
        set_rlimits(&spec.process.process.rlimits)?;
    }
    let dir = ctx.root.claim(&id)?;
    let mut made = Made { dir: Some(dir.clone()), box_id: None };
    let result = create_in(ctx, &id, &a, &spec, &dir, &mut made).await;
    if result.is_err() {
        made.undo(ctx).await;
    }
    result
}

/// What a failed `create` removes: its directory, its box.
struct Made {
    dir: Option<PathBuf>,
    box_id: Option<String>,
}

impl Made {
    async fn undo(self, ctx: &Ctx) {
        if let Some(b) = self.box_id {
            if let Ok(rt) = open_runtime(ctx).await {
                if let Err(e) = rt.remove(&b, true).await {
                    tracing::warn!(box_id = %b, error = %e, "cannot remove the box of a failed create");
                }
            }
        }
        if let Some(d) = self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

async fn create_in(
    ctx: &Ctx,
    id: &ContainerId,
    a: &CreateArgs,
    spec: &BoxSpec,
    dir: &Path,
    made: &mut Made,
) -> Result<(), OciError> {
    let rt = open_runtime(ctx).await?;
    let mut b = CreateOptions::builder()
        .strategy(boxsock::DEFAULT_STRATEGY)
        .backend(spec.backend.clone())
        .rootfs(spec.rootfs.clone())
        .process(spec.process.process.clone());
    for v in &spec.volumes {
        b = b.volume(v.clone());
    }
    if let Some(n) = spec.cpus {
        b = b.cpus(n);
    }
    if let Some(m) = spec.memory {
        b = b.memory(m);
    }
    if let Some(h) = &spec.hostname {
        b = b.hostname(h.clone());
    }
    if let Some(ns) = &spec.network_namespace {
        b = b.network_namespace(ns.clone());
    }
    let rec = rt.create(b.build()).await?;
    made.box_id = Some(rec.id.to_string());
    drop(rt);
    let mut c = Container {
        dir: dir.to_owned(),
        record: Record {
            id: id.to_string(),
            box_id: rec.id.to_string(),
            bundle: spec.bundle.clone(),
            annotations: spec.annotations.clone(),
            created: crate::state::now(),
            supervisor: None,
            started: false,
        },
    };
    c.save()?;
    for fifo in [c.start_fifo(), c.ctl_fifo()] {
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
            .map_err(|e| OciError::io("make the FIFO", &fifo, e.into()))?;
    }
    let pty = match (&a.console_socket, spec.process.terminal) {
        (Some(sock), true) => Some(console::open_and_send(sock, spec.process.console_size)?),
        _ => None,
    };
    let mut args = ctx.global_args.clone();
    args.extend(["supervise".into(), id.as_str().into()]);
    if pty.is_some() {
        args.push("--tty".into());
    }
    let sup = spawn_supervisor(ctx, id, &args, pty.as_ref(), None)?;
    c.record.supervisor = Some(sup.identity());
    c.save()?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, sup.pid())?;
    }
    Ok(())
}

/// Spawn this binary with `args` in a session of its own, its stdio ours (or `pty`'s
/// other end), a ready pipe at 3 (and `spec` at 4); wait until it says it is ready.
fn spawn_supervisor(
    ctx: &Ctx,
    id: &ContainerId,
    args: &[OsString],
    pty: Option<&OwnedFd>,
    spec: Option<&[u8]>,
) -> Result<OwnedProcess, OciError> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| OciError::io("make a pipe", "", e.into()))?;
    let (spec_r, spec_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| OciError::io("make a pipe", "", e.into()))?;
    let mut s = Spawn::new(&ctx.exe);
    s.args(args);
    if let Some(p) = pty {
        let io = |what| {
            p.try_clone().map(std::process::Stdio::from).map_err(|e| OciError::io(what, "pty", e))
        };
        s.stdin(io("dup")?).stdout(io("dup")?).stderr(io("dup")?);
    } else {
        s.stdin(std::process::Stdio::inherit())
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit());
    }
    s.hand(ready_w.as_fd(), READY_FD);
    if spec.is_some() {
        s.hand(spec_r.as_fd(), SPEC_FD);
    }
    let sup = s
        .spawn()
        .map_err(|e| OciError::Supervisor { id: id.to_string(), reason: e.to_string() })?;
    drop(ready_w);
    drop(spec_r);
    if let Some(bytes) = spec {
        let mut w = File::from(spec_w);
        let _ = w.write_all(bytes);
    } else {
        drop(spec_w);
    }
    match read_ready(File::from(ready_r)) {
        Ok(()) => Ok(sup),
        Err(msg) => {
            let pid = sup.pid();
            sup.kill_and_reap();
            Err(OciError::Supervisor {
                id: id.to_string(),
                reason: msg.unwrap_or_else(|| format!("its supervisor (pid {pid}) exited")),
            })
        }
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), OciError> {
    AtomicWrite::new(0o644)
        .without_fsync()
        .write(path, pid.to_string().as_bytes())
        .map(drop)
        .map_err(|e| OciError::io("write the pid file", path, e.into()))
}

/// Set `limits` on this process, failing as runc does, naming the limit and what the
/// host allows.
pub fn set_rlimits(limits: &[boxsock::boxsock_core::proto::Rlimit]) -> Result<(), OciError> {
    for l in limits {
        // Every name comes from oci-spec's closed list, which this system has.
        let Some(n) = l.number() else { continue };
        let lim = libc::rlimit { rlim_cur: l.soft, rlim_max: l.hard };
        // SAFETY: setrlimit reads one `rlimit` through the pointer, a live local.
        let r = unsafe { libc::setrlimit(n as _, &lim) };
        if r != 0 {
            let errno = nix::errno::Errno::last();
            let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes one `rlimit` through the pointer, a live local.
            unsafe { libc::getrlimit(n as _, &mut cur) };
            let show = |v: u64| match v {
                libc::RLIM_INFINITY => "unlimited".to_owned(),
                v => v.to_string(),
            };
            return Err(OciError::Rlimit {
                name: l.resource.clone(),
                soft: l.soft,
                hard: l.hard,
                cur_soft: show(cur.rlim_cur),
                cur_hard: show(cur.rlim_max),
                errno,
            });
        }
    }
    Ok(())
}

/// `start`: the supervisor runs the command.
pub fn start(ctx: &Ctx, id: &str) -> Result<(), OciError> {
    let id = ContainerId::new(id)?;
    let mut c = ctx.root.load(&id)?;
    match c.status() {
        Status::Created => {}
        s => {
            return Err(OciError::WrongStatus {
                id: id.to_string(),
                status: s.as_str(),
                what: "only a created container can be started".into(),
            });
        }
    }
    write_fifo(&c, &c.start_fifo(), b"s")?;
    c.record.started = true;
    c.save()
}

/// Write to one of the supervisor's FIFOs; a FIFO nobody holds is a supervisor gone.
fn write_fifo(c: &Container, path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(OciError::WrongStatus {
                id: c.record.id.clone(),
                status: "stopped",
                what: "the container is not running".into(),
            });
        }
        Err(e) => return Err(OciError::io("open", path, e)),
    };
    f.write_all(bytes).map_err(|e| OciError::io("write", path, e))
}

/// `state`: the OCI state, JSON.
pub fn state(ctx: &Ctx, id: &str) -> Result<String, OciError> {
    let c = ctx.root.load(&ContainerId::new(id)?)?;
    Ok(serde_json::to_string_pretty(&c.oci_state()).expect("a state serialises"))
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`).
pub fn parse_signal(s: &str) -> Result<i32, OciError> {
    let bad = || OciError::Usage(format!("{}: not a signal", echo::echo(s)));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map(|s| s as i32).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| bad())
}

/// `kill`: the signal to the command in the box (to the supervisor of a created
/// container, which ends by it).
pub fn kill(ctx: &Ctx, id: &str, signal: &str) -> Result<(), OciError> {
    let id = ContainerId::new(id)?;
    let sig = parse_signal(signal)?;
    let c = ctx.root.load(&id)?;
    live(&c, "the container is not running")?;
    write_fifo(&c, &c.ctl_fifo(), &sig.to_ne_bytes())
}

/// `delete`: the box removed, the container forgotten. A running one only with
/// `--force` (its supervisor killed first).
pub async fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<(), OciError> {
    let id = ContainerId::new(id)?;
    let c = match ctx.root.load(&id) {
        // As runc: --force of a container that does not exist succeeds (engines clean up
        // after a failed create with it); a directory without a record is a create that
        // was killed before writing one, removed with it.
        Err(OciError::NotFound { .. }) if force => {
            let dir = ctx.root.dir(&id);
            return match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(OciError::io("remove", dir, e))
                }
                _ => Ok(()),
            };
        }
        r => r?,
    };
    let status = c.status();
    if status == Status::Running && !force {
        return Err(OciError::WrongStatus {
            id: id.to_string(),
            status: status.as_str(),
            what: "stop it first, or delete --force".into(),
        });
    }
    if let (Status::Created | Status::Running | Status::Creating, Some(s)) =
        (status, c.record.supervisor)
    {
        kill_supervisor(s);
    }
    let rt = open_runtime(ctx).await?;
    match rt.remove(&c.record.box_id, true).await {
        Ok(_) => {}
        Err(boxsock::RuntimeError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::remove_dir_all(&c.dir).map_err(|e| OciError::io("remove", &c.dir, e))
}

/// SIGKILL the supervisor (pid and start time checked through its pidfd) and wait
/// until it is gone (its parent reaps it).
fn kill_supervisor(s: ProcessIdentity) {
    let h = boxsock::ProcessHandle::open(s);
    let _ = h.signal(nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    while s.probe() == boxsock::Liveness::Alive && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `Ok` when `c` is created or running (its supervisor alive), else why not.
fn live(c: &Container, what: &str) -> Result<(), OciError> {
    match c.status() {
        Status::Created | Status::Running => Ok(()),
        s => Err(OciError::WrongStatus {
            id: c.record.id.clone(),
            status: s.as_str(),
            what: what.into(),
        }),
    }
}

/// `exec`'s arguments.
#[derive(Debug, Clone)]
pub struct ExecArgs {
    /// The container.
    pub id: String,
    /// The process (`--process`, or the command line's).
    pub process: ProcessSpec,
    /// `--detach`.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
}

/// `exec`: a command in a created or running container. Detached, its supervisor's pid
/// goes to `--pid-file` and this returns once it runs; else its status.
pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32, OciError> {
    let id = ContainerId::new(&a.id)?;
    let c = ctx.root.load(&id)?;
    live(&c, "exec needs a created or running container")?;
    if a.process.terminal && a.console_socket.is_none() && a.detach {
        return Err(OciError::Usage(
            "--tty with --detach: a --console-socket is needed to receive the pty".into(),
        ));
    }
    set_rlimits(&a.process.process.rlimits)?;
    let pty = match (&a.console_socket, a.process.terminal) {
        (Some(sock), true) => Some(console::open_and_send(sock, a.process.console_size)?),
        _ => None,
    };
    if a.detach || pty.is_some() {
        let mut args = ctx.global_args.clone();
        args.extend(["supervise-exec".into(), id.as_str().into()]);
        let json = serde_json::to_vec(&a.process).expect("a process serialises");
        let sup = spawn_supervisor(ctx, &id, &args, pty.as_ref(), Some(&json))?;
        if let Some(p) = &a.pid_file {
            write_pid_file(p, sup.pid())?;
        }
        if a.detach {
            return Ok(0);
        }
        // Attached to a pty the engine holds: wait for the supervisor here.
        let sup_pid = sup.pid();
        return Ok(wait_child(sup_pid));
    }
    if let Some(p) = &a.pid_file {
        write_pid_file(p, std::process::id() as i32)?;
    }
    let rt = open_runtime(ctx).await?;
    let command = crate::supervise::command_of(&rt, &c.record.box_id, &a.process);
    Ok(crate::supervise::run_attached(command, a.process.terminal).await)
}

/// Reap our child `pid`: its status, 128+N for a signal.
fn wait_child(pid: i32) -> i32 {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
        _ => 1,
    }
}

/// `features`: what this runtime supports (the runtime spec's features.md), JSON.
pub fn features() -> String {
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::state::OCI_VERSION,
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "private",
                         "rprivate", "slave", "rslave", "shared", "rshared"],
        "linux": {
            "namespaces": ["pid", "network", "ipc", "uts", "mount", "cgroup"],
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": true },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
        },
        "annotations": {
            "io.boxsock.backend": crate::spec::BACKENDS.join(","),
            "io.boxsock.version": env!("CARGO_PKG_VERSION"),
        },
    });
    serde_json::to_string_pretty(&v).expect("features serialise")
}

/// `ps`: the host processes of the container: the supervisor, and the box's (its
/// agent and what runs under it, or its VMM). `json` prints the pids as a JSON array.
pub async fn ps(ctx: &Ctx, id: &str, json: bool) -> Result<String, OciError> {
    let id = ContainerId::new(id)?;
    let c = ctx.root.load(&id)?;
    let mut pids = Vec::new();
    if let (Status::Created | Status::Running, Some(s)) = (c.status(), c.record.supervisor) {
        pids.push(s.pid);
    }
    let rt = open_runtime(ctx).await?;
    if let Ok(Some(h)) = rt.process(&c.record.box_id) {
        let root = h.identity().pid;
        pids.push(root);
        pids.extend(descendants(root));
    }
    if json {
        return Ok(serde_json::to_string(&pids).expect("pids serialise"));
    }
    let mut out = String::from("PID CMD\n");
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmd: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| echo::bytes(s).to_string())
            .collect();
        out.push_str(&format!("{p} {}\n", cmd.join(" ")));
    }
    Ok(out)
}

/// Every descendant of `pid`, from `/proc/*/stat`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            // `pid (comm) state ppid …`: comm may hold anything but not past the last ')'.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i32>().ok());
            if let Some(pp) = ppid {
                parent.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out.sort();
    out
}

/// `list`: id, status, pid and bundle of every container.
pub fn list(ctx: &Ctx) -> Result<String, OciError> {
    let mut out = String::from("ID PID STATUS BUNDLE CREATED\n");
    for id in ctx.root.ids()? {
        let Ok(cid) = ContainerId::new(&id) else { continue };
        let Ok(c) = ctx.root.load(&cid) else { continue };
        let st = c.oci_state();
        out.push_str(&format!(
            "{} {} {} {} {}\n",
            id,
            st["pid"],
            st["status"].as_str().unwrap_or(""),
            echo::path(&c.record.bundle),
            c.record.created
        ));
    }
    Ok(out)
}

/// The pty of a container or exec with a terminal: its master goes to the engine's
/// console socket (`SCM_RIGHTS`, as runc sends it), its other end is the supervisor's
/// stdio.
pub mod console {
    use std::io::IoSlice;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::path::Path;

    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use nix::sys::termios;

    use crate::OciError;

    /// Open a pty (`size` its first window size), send its master to `socket`, and
    /// return its other end, in raw mode (the box's own pty does the line discipline).
    pub fn open_and_send(socket: &Path, size: Option<(u16, u16)>) -> Result<OwnedFd, OciError> {
        let ws = size.map(|(r, c)| nix::pty::Winsize {
            ws_row: r,
            ws_col: c,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty = nix::pty::openpty(ws.as_ref(), None)
            .map_err(|e| OciError::io("open a pty for", socket, e.into()))?;
        let mut t = termios::tcgetattr(&pty.slave)
            .map_err(|e| OciError::io("read the pty's mode for", socket, e.into()))?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t)
            .map_err(|e| OciError::io("set the pty's mode for", socket, e.into()))?;
        let name = nix::unistd::ttyname(&pty.slave).unwrap_or_default();
        let stream = connect(socket)?;
        let fds = [pty.master.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let payload = name.as_os_str().as_encoded_bytes();
        let payload = if payload.is_empty() { b"pty".as_slice() } else { payload };
        sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(payload)], &cmsg, MsgFlags::empty(), None)
            .map_err(|e| OciError::io("send the pty to the console socket", socket, e.into()))?;
        Ok(pty.slave)
    }

    /// Connect to a socket by path, through its directory when the path is longer than
    /// `sun_path` allows.
    fn connect(socket: &Path) -> Result<UnixStream, OciError> {
        match UnixStream::connect(socket) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
                    return Err(OciError::io("connect to the console socket", socket, e));
                };
                let d = std::fs::File::open(dir)
                    .map_err(|e| OciError::io("open the console socket's directory", dir, e))?;
                let short = Path::new("/proc/self/fd").join(d.as_raw_fd().to_string()).join(name);
                UnixStream::connect(&short)
                    .map_err(|e| OciError::io("connect to the console socket", socket, e))
            }
            Err(e) => Err(OciError::io("connect to the console socket", socket, e)),
        }
    }
}
