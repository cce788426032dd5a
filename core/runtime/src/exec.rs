//! Running commands in a box, in the style of `tokio::process::Command`.
//!
//! ```no_run
//! # async fn f(rt: &boxsock_runtime::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! let out = rt.command("web", "sh").arg("-c").arg("echo hi; exit 3").output().await?;
//! assert_eq!((out.status.code(), &out.stdout[..]), (Some(3), &b"hi\n"[..]));
//!
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let mut child = rt.command("web", "/bin/sh").tty(true).stdin(boxsock_runtime::exec::Stdio::Piped).spawn().await?;
//! child.stdin.take().unwrap().write_all(b"stty size; exit\n").await?;
//! child.resize(50, 132)?;
//! let mut screen = Vec::new();
//! child.stdout.take().unwrap().read_to_end(&mut screen).await?;
//! let status = child.wait().await?;
//! # Ok(()) }
//! ```
//!
//! A command's life is one agent connection: dropping the [`Child`] (or the future
//! of [`Command::output`]) closes it, and the agent kills the command's process group.
//! With [`Command::tty`] the command runs on a pty in the box, as the controlling
//! terminal of a new session; its stdout and stderr then arrive merged on stdout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use boxsock_core::proto::{ErrorCode, WinSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

use crate::agent_client::{ClientError, ExecEvent, ExecReader, ExecRequest, ExecWriter};
use crate::{Runtime, RuntimeError};

/// Buffer between the session and a piped stream of the [`Child`].
const PIPE_BUFFER: usize = 64 * 1024;
/// Stdin chunks queued for the agent (each at most [`PIPE_BUFFER`]).
const STDIN_QUEUE: usize = 4;

/// Where a standard stream of the command goes (or comes from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// Nothing (`/dev/null` in the box for stdin; output is discarded).
    Null,
    /// A stream of the [`Child`] ([`Child::stdin`], [`Child::stdout`],
    /// [`Child::stderr`]).
    Piped,
    /// This process's own stdin, stdout or stderr. Stdin is read by a thread that
    /// lives as long as this process's stdin stays open.
    Inherit,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<i32>,
}

impl ExitStatus {
    /// Its exit code; `None` when a signal killed it.
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The status as a shell reports it: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 128,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

impl From<crate::agent_client::ExitReport> for ExitStatus {
    fn from(r: crate::agent_client::ExitReport) -> Self {
        match r.signal {
            Some(s) => ExitStatus { code: None, signal: Some(s) },
            None => ExitStatus { code: Some(r.code), signal: None },
        }
    }
}

/// What [`Command::output`] (and [`AgentClient::exec_output`](crate::agent_client::AgentClient::exec_output)) collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout (with a tty: everything the terminal showed).
    pub stdout: Vec<u8>,
    /// Its stderr (empty with a tty).
    pub stderr: Vec<u8>,
}

/// Why a command could not be started in the box (see [`RuntimeError::spawn_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnErrorKind {
    /// The program (or the working directory) does not exist. A shell reports 127.
    NotFound,
    /// The program cannot be executed (permissions, not an executable). A shell
    /// reports 126.
    PermissionDenied,
    /// Another reason.
    Other,
}

impl RuntimeError {
    /// When the command of an exec could not be started, why.
    pub fn spawn_error(&self) -> Option<SpawnErrorKind> {
        match self {
            RuntimeError::Agent { source: ClientError::Agent { code, .. }, .. } => match code {
                ErrorCode::NotFound => Some(SpawnErrorKind::NotFound),
                ErrorCode::PermissionDenied => Some(SpawnErrorKind::PermissionDenied),
                ErrorCode::Spawn => Some(SpawnErrorKind::Other),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The session of a [`Child`] has ended, so it cannot be signalled or resized.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the exec session of {} in box {box_id} has ended", boxsock_core::echo::echo(program))]
pub struct SessionEnded {
    /// The box.
    pub box_id: String,
    /// The program.
    pub program: String,
}

impl From<SessionEnded> for io::Error {
    fn from(e: SessionEnded) -> Self {
        io::Error::new(io::ErrorKind::BrokenPipe, e)
    }
}

/// A command to run in a box. Made by [`Runtime::command`].
#[derive(Debug)]
pub struct Command<'rt> {
    rt: &'rt Runtime,
    box_id: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    tty: Option<WinSize>,
    user: Option<String>,
    rlimits: Vec<boxsock_core::proto::Rlimit>,
}

impl Runtime {
    /// A command running `program` (looked up on the box's `PATH`) in the running box
    /// `id_or_name`. Nothing happens until [`Command::output`] or [`Command::spawn`].
    pub fn command(&self, id_or_name: &str, program: impl Into<String>) -> Command<'_> {
        Command {
            rt: self,
            box_id: id_or_name.to_owned(),
            argv: vec![program.into()],
            env: Vec::new(),
            cwd: None,
            stdin: None,
            stdout: None,
            stderr: None,
            tty: None,
            user: None,
            rlimits: Vec::new(),
        }
    }

    /// The box's own command (stored at create: [`crate::CreateOptions::process`]),
    /// with its environment and working directory, ready to run in the running box;
    /// [`RuntimeError::NoCommand`] when the box has none. Streams and tty are the
    /// caller's to choose, as for [`Runtime::command`].
    pub fn main_command(&self, id_or_name: &str) -> Result<Command<'_>, RuntimeError> {
        let rec = self.get(id_or_name)?;
        let p = rec.config.process;
        let Some((program, args)) = p.argv.split_first() else {
            return Err(RuntimeError::NoCommand { id: rec.id });
        };
        let mut c = self.command(rec.id.as_str(), program.clone());
        c.args(args.iter().cloned()).envs(p.env);
        if let Some(d) = p.cwd {
            c.current_dir(d);
        }
        c.rlimits = p.rlimits;
        Ok(c)
    }
}

impl<'rt> Command<'rt> {
    /// The program (`argv[0]`).
    pub fn get_program(&self) -> &str {
        &self.argv[0]
    }

    /// Add an argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.argv.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable (on top of the agent's environment).
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Set environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The working directory in the box (absolute). Default: the box's own
    /// ([`crate::BoxProcess::cwd`], an image's `WorkingDir` or `create -w`), else the
    /// agent's.
    pub fn current_dir(&mut self, dir: impl Into<String>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Where stdin comes from. Default: [`Stdio::Null`] for `output`, [`Stdio::Inherit`]
    /// for `spawn` (as `tokio::process::Command`).
    pub fn stdin(&mut self, cfg: Stdio) -> &mut Self {
        self.stdin = Some(cfg);
        self
    }

    /// Where stdout goes. Default: [`Stdio::Piped`] for `output`, [`Stdio::Inherit`] for
    /// `spawn`.
    pub fn stdout(&mut self, cfg: Stdio) -> &mut Self {
        self.stdout = Some(cfg);
        self
    }

    /// Where stderr goes. Default: [`Stdio::Piped`] for `output`, [`Stdio::Inherit`] for
    /// `spawn`.
    pub fn stderr(&mut self, cfg: Stdio) -> &mut Self {
        self.stderr = Some(cfg);
        self
    }

    /// Run on a pty in the box (default size 24×80; see [`Command::window_size`]).
    pub fn tty(&mut self, tty: bool) -> &mut Self {
        self.tty = tty.then(|| self.tty.unwrap_or_default());
        self
    }

    /// Run on a pty of this size.
    pub fn window_size(&mut self, rows: u16, cols: u16) -> &mut Self {
        self.tty = Some(WinSize { rows, cols });
        self
    }

    /// Run as this user (`uid`, `uid:gid`, `name`, `name:group`), resolved by the
    /// agent against the box's own `/etc/passwd` and `/etc/group` (docker's rules; a
    /// name it does not find fails the spawn, nothing runs). Default: the box's user
    /// ([`crate::BoxProcess::user`]), else the agent's (root in a guest).
    pub fn user(&mut self, spec: impl Into<String>) -> &mut Self {
        self.user = Some(spec.into());
        self
    }

    /// Start the command with this resource limit (`RLIMIT_NOFILE`…, soft and hard;
    /// `u64::MAX` is unlimited), set by the agent before exec and before any user
    /// switch. A limit the box cannot set fails the spawn; an agent that predates
    /// limits refuses the request. Repeatable.
    pub fn rlimit(&mut self, resource: impl Into<String>, soft: u64, hard: u64) -> &mut Self {
        let resource = resource.into();
        self.rlimits.retain(|r| r.resource != resource);
        self.rlimits.push(boxsock_core::proto::Rlimit { resource, soft, hard });
        self
    }

    /// The request, with the box's own process's user and working directory
    /// ([`crate::BoxProcess`]) where this command sets none, as `docker exec` does.
    fn request(&self, stdin: Stdio, box_process: &crate::BoxProcess) -> ExecRequest {
        ExecRequest {
            argv: self.argv.clone(),
            env: self.env.clone(),
            stdin: stdin != Stdio::Null,
            cwd: self.cwd.clone().or_else(|| box_process.cwd.clone()),
            tty: self.tty,
            user: self.user.clone().or_else(|| box_process.user.clone()),
            rlimits: self.rlimits.clone(),
        }
    }

    /// Dial the agent and send the request; returns the session and how to name its
    /// failures (box id and agent address).
    async fn start(&self, stdin: Stdio) -> Result<(ExecWriter, ExecReader, Fail), RuntimeError> {
        let (rec, client, address) = self.rt.inner.connect_agent(&self.box_id).await?;
        let request = self.request(stdin, &rec.config.process);
        let fail = Fail { id: rec.id, address };
        match client.start_exec(request).await {
            Ok((w, r)) => Ok((w, r, fail)),
            Err(source) => Err(fail.error(source)),
        }
    }

    /// Run the command to its end and collect its output. Stdin defaults to nothing
    /// (`Piped` is taken as an empty stdin).
    pub async fn output(&mut self) -> Result<Output, RuntimeError> {
        let stdin = self.stdin.unwrap_or(Stdio::Null);
        let mut child = self
            .spawn_with(
                stdin,
                self.stdout.unwrap_or(Stdio::Piped),
                self.stderr.unwrap_or(Stdio::Piped),
            )
            .await?;
        drop(child.stdin.take());
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut stdout).await;
            }
        };
        let read_err = async {
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut stderr).await;
            }
        };
        let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
        Ok(Output { status: status?, stdout, stderr })
    }

    /// Run the command and wait for its end (streams default to inherited).
    pub async fn status(&mut self) -> Result<ExitStatus, RuntimeError> {
        self.spawn().await?.wait().await
    }

    /// Start the command and return its handle once the agent took the request. The
    /// agent reports a command it cannot start (not found, not executable) as the
    /// error of [`Child::wait`].
    pub async fn spawn(&mut self) -> Result<Child, RuntimeError> {
        self.spawn_with(
            self.stdin.unwrap_or(Stdio::Inherit),
            self.stdout.unwrap_or(Stdio::Inherit),
            self.stderr.unwrap_or(Stdio::Inherit),
        )
        .await
    }

    async fn spawn_with(
        &self,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Child, RuntimeError> {
        let (writer, reader, fail) = self.start(stdin).await?;
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        // Stdin goes through a small bounded channel: a fast producer waits for the
        // agent instead of filling memory.
        let (data_tx, data_rx) = mpsc::channel(STDIN_QUEUE);
        let (child_stdin, stdin_pump) = match stdin {
            Stdio::Piped => {
                let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
                (Some(ChildStdin { inner: ours }), Some(Input::Pipe(theirs)))
            }
            Stdio::Inherit => (None, Some(Input::Inherit)),
            Stdio::Null => (None, None),
        };
        if let Some(input) = stdin_pump {
            input.start(data_tx);
        }
        let (child_stdout, out_sink) = sink(stdout, Sink::Stdout);
        let (child_stderr, err_sink) = sink(stderr, Sink::Stderr);
        let driver =
            tokio::spawn(drive(writer, reader, ctl_rx, data_rx, out_sink, err_sink, fail.clone()));
        tracing::debug!(box_id = %self.box_id, program = %self.argv[0], tty = self.tty.is_some(), "exec spawned");
        Ok(Child {
            stdin: child_stdin,
            stdout: child_stdout,
            stderr: child_stderr,
            ctl: ctl_tx,
            driver: Some(driver),
            status: None,
            ended: SessionEnded { box_id: fail.id.to_string(), program: self.argv[0].clone() },
            fail,
        })
    }
}

/// Names a session's failures: the box and its agent's address.
#[derive(Debug, Clone)]
struct Fail {
    id: boxsock_core::id::BoxId,
    address: String,
}

impl Fail {
    fn error(&self, source: ClientError) -> RuntimeError {
        RuntimeError::Agent { id: self.id.clone(), address: self.address.clone(), source }
    }
}

/// A control message for the session's writer.
#[derive(Debug)]
enum Ctl {
    Stdin(Vec<u8>),
    StdinEof,
    Signal(i32),
    Resize(WinSize),
}

enum Input {
    Pipe(DuplexStream),
    Inherit,
}

impl Input {
    fn start(self, tx: mpsc::Sender<Ctl>) {
        match self {
            Input::Pipe(mut from) => {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; PIPE_BUFFER];
                    loop {
                        match from.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(Ctl::Stdin(buf[..n].to_vec())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(Ctl::StdinEof).await;
                });
            }
            // A blocking read of this process's stdin, on a thread of its own: a task
            // of tokio's blocking pool would hold up the runtime's shutdown until the
            // next line of input.
            Input::Inherit => {
                let spawned =
                    std::thread::Builder::new().name("boxsock-stdin".into()).spawn(move || {
                        use std::io::Read;
                        let mut buf = vec![0u8; PIPE_BUFFER];
                        let mut stdin = io::stdin().lock();
                        loop {
                            match stdin.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if tx.blocking_send(Ctl::Stdin(buf[..n].to_vec())).is_err() {
                                        return;
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(_) => break,
                            }
                        }
                        let _ = tx.blocking_send(Ctl::StdinEof);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start the stdin thread; the command's stdin stays empty");
                }
            }
        }
    }
}

/// Where the session writes one output stream.
enum Sink {
    Discard,
    Pipe(DuplexStream),
    Stdout,
    Stderr,
}

fn sink<T: From<DuplexStream>>(cfg: Stdio, inherit: Sink) -> (Option<T>, Sink) {
    match cfg {
        Stdio::Null => (None, Sink::Discard),
        Stdio::Inherit => (None, inherit),
        Stdio::Piped => {
            let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
            (Some(T::from(ours)), Sink::Pipe(theirs))
        }
    }
}

impl Sink {
    /// Write a chunk; a reader that went away (a dropped pipe) turns this sink into a
    /// discard, so the command still runs to its end.
    async fn write(&mut self, b: &[u8]) {
        let r = match self {
            Sink::Discard => Ok(()),
            Sink::Pipe(p) => p.write_all(b).await,
            // Plain blocking writes, as `print!` does (the crate does not take tokio's
            // `io-std`).
            Sink::Stdout => {
                use std::io::Write;
                let mut o = io::stdout().lock();
                o.write_all(b).and_then(|()| o.flush())
            }
            Sink::Stderr => {
                use std::io::Write;
                io::stderr().lock().write_all(b)
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "output reader went away; discarding the rest");
            *self = Sink::Discard;
        }
    }
}

async fn drive(
    mut writer: ExecWriter,
    mut reader: ExecReader,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    mut data: mpsc::Receiver<Ctl>,
    mut out: Sink,
    mut err: Sink,
    fail: Fail,
) -> Result<ExitStatus, RuntimeError> {
    let send = async {
        let mut data_open = true;
        loop {
            // Signals and resizes go before queued input (Ctrl-C while a paste streams).
            let c = tokio::select! {
                biased;
                c = ctl.recv() => match c { Some(c) => c, None => break },
                c = data.recv(), if data_open => match c {
                    Some(c) => c,
                    None => { data_open = false; continue }
                },
            };
            let r = match c {
                Ctl::Stdin(b) => writer.stdin(&b).await,
                Ctl::StdinEof => writer.stdin_eof().await,
                Ctl::Signal(s) => writer.signal(s).await,
                Ctl::Resize(w) => writer.resize(w).await,
            };
            // The command may have ended and the agent closed: the answer is still
            // readable, so keep reading it.
            if let Err(e) = r {
                tracing::debug!(error = %e, "stopped writing to the agent");
                break;
            }
        }
        // Keep the write half open until the answer is read: closing it tells the
        // agent the client went away, and it kills the command.
        std::future::pending::<()>().await
    };
    let receive = async {
        loop {
            match reader.next().await {
                Ok(ExecEvent::Stdout(b)) => out.write(&b).await,
                Ok(ExecEvent::Stderr(b)) => err.write(&b).await,
                Ok(ExecEvent::Exit(report)) => return Ok(ExitStatus::from(report)),
                Err(e) => return Err(fail.error(e)),
            }
        }
    };
    tokio::select! {
        r = receive => r,
        () = send => unreachable!("the sender never ends"),
    }
}

/// The command's stdin, when [`Stdio::Piped`]. Dropping (or shutting) it closes the
/// command's stdin.
#[derive(Debug)]
pub struct ChildStdin {
    inner: DuplexStream,
}

/// The command's stdout, when [`Stdio::Piped`].
#[derive(Debug)]
pub struct ChildStdout {
    inner: DuplexStream,
}

/// The command's stderr, when [`Stdio::Piped`].
#[derive(Debug)]
pub struct ChildStderr {
    inner: DuplexStream,
}

impl From<DuplexStream> for ChildStdout {
    fn from(inner: DuplexStream) -> Self {
        ChildStdout { inner }
    }
}

impl From<DuplexStream> for ChildStderr {
    fn from(inner: DuplexStream) -> Self {
        ChildStderr { inner }
    }
}

impl AsyncWrite for ChildStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for ChildStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncRead for ChildStderr {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A command running in a box. Dropping it ends the session, and the agent kills the
/// command's process group.
#[derive(Debug)]
pub struct Child {
    /// Its stdin, with [`Stdio::Piped`].
    pub stdin: Option<ChildStdin>,
    /// Its stdout, with [`Stdio::Piped`]. Read it (or drop it) while waiting: a full
    /// pipe holds the session up, as with any child process.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, with [`Stdio::Piped`].
    pub stderr: Option<ChildStderr>,
    ctl: mpsc::UnboundedSender<Ctl>,
    driver: Option<tokio::task::JoinHandle<Result<ExitStatus, RuntimeError>>>,
    status: Option<ExitStatus>,
    ended: SessionEnded,
    fail: Fail,
}

/// Sends signals and resizes to a [`Child`]'s command from elsewhere (a signal
/// handler task) while the child is being waited for.
#[derive(Debug, Clone)]
pub struct Control {
    ctl: mpsc::UnboundedSender<Ctl>,
    ended: SessionEnded,
}

impl Control {
    /// See [`Child::signal`].
    pub fn signal(&self, signal: i32) -> Result<(), SessionEnded> {
        self.ctl.send(Ctl::Signal(signal)).map_err(|_| self.ended.clone())
    }

    /// See [`Child::resize`].
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), SessionEnded> {
        self.ctl.send(Ctl::Resize(WinSize { rows, cols })).map_err(|_| self.ended.clone())
    }
}

impl Child {
    /// A [`Control`] of this command, usable while [`Child::wait`] runs.
    pub fn control(&self) -> Control {
        Control { ctl: self.ctl.clone(), ended: self.ended.clone() }
    }

    /// Deliver signal `signal` (a number, e.g. `libc::SIGINT`) to the command's process
    /// group, or with a tty to the terminal's foreground group.
    pub fn signal(&self, signal: i32) -> Result<(), SessionEnded> {
        self.ctl.send(Ctl::Signal(signal)).map_err(|_| self.ended.clone())
    }

    /// Resize the command's terminal (ignored without a tty); the foreground group gets
    /// SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), SessionEnded> {
        self.ctl.send(Ctl::Resize(WinSize { rows, cols })).map_err(|_| self.ended.clone())
    }

    /// Send SIGKILL to the command's process group.
    pub fn kill(&self) -> Result<(), SessionEnded> {
        self.signal(libc::SIGKILL)
    }

    /// Close stdin (as `tokio::process::Child::wait` does) and wait for the command's
    /// end. An agent error (the command could not be started: see
    /// [`RuntimeError::spawn_error`]) is returned here. Later calls return the same
    /// status.
    pub async fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        drop(self.stdin.take());
        if let Some(s) = self.status {
            return Ok(s);
        }
        let Some(driver) = self.driver.as_mut() else {
            return Err(self.fail.error(ClientError::Io(self.ended.clone().into())));
        };
        let r = match driver.await {
            Ok(r) => r,
            Err(e) => Err(self.fail.error(ClientError::Io(io::Error::other(e)))),
        };
        self.driver = None;
        if let Ok(s) = &r {
            self.status = Some(*s);
        }
        r
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}
