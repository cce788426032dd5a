//! A small async client of the in-box agent protocol ([`boxsock_core::proto`]).
//!
//! The protocol carries one request per connection, so the request methods
//! ([`AgentClient::ping`], [`AgentClient::exec`], [`AgentClient::shutdown`]) consume the
//! client. Each performs the `Hello` exchange first if [`AgentClient::hello`] was not
//! called.
//!
//! The caller dials the agent itself (through its strategy, which enforces the peer
//! policy) and hands the connected `std` stream over:
//!
//! ```no_run
//! # async fn f(stream: std::os::unix::net::UnixStream) -> Result<(), boxsock_runtime::agent_client::ClientError> {
//! use boxsock_runtime::agent_client::AgentClient;
//! let out = AgentClient::connect(stream)?.exec_output(&["sh", "-c", "echo hi"], &[("K", "v")], None).await?;
//! assert_eq!((out.status.code(), &out.stdout[..]), (Some(0), &b"hi\n"[..]));
//! # Ok(()) }
//! ```
//!
//! Every call must run inside a tokio runtime. No call has a built-in timeout; wrap
//! it in `tokio::time::timeout` where a deadline matters (an `exec` lasts as long as
//! its command).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use boxsock_core::proto::{self, ErrorCode, Frame, ProtoError, Request, Response, WinSize};

use crate::exec::{ExitStatus, Output};

/// Largest stdin chunk sent in one frame.
const STDIN_CHUNK: usize = 64 * 1024;

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be set up or written.
    #[error("agent connection: {0}")]
    Io(#[from] io::Error),
    /// A frame from the agent could not be read (including the agent closing the
    /// connection early: [`ProtoError::Closed`] / [`ProtoError::Truncated`]).
    #[error("agent protocol: {0}")]
    Proto(#[from] ProtoError),
    /// The agent speaks another protocol version (an agent from an older or newer
    /// boxsock than this client).
    #[error("agent speaks protocol {}, this client needs {ours}{}", theirs.map_or_else(|| "of another version".to_owned(), |v| v.to_string()), detail.as_deref().map(|d| format!(" (agent said: {d})")).unwrap_or_default())]
    Version {
        /// Our version ([`proto::VERSION`]).
        ours: u32,
        /// The agent's version, when it said (in its `Hello`, or in its refusal).
        theirs: Option<u32>,
        /// The agent's refusal message, when it refused our hello.
        detail: Option<String>,
    },
    /// The agent answered with an error frame.
    #[error("agent error ({code:?}): {message}")]
    Agent {
        /// Its kind.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A request does not fit in one protocol frame; nothing was sent.
    #[error(
        "{what} is {bytes} bytes encoded, over the agent protocol's frame limit of {limit} bytes (pass large data on stdin instead)"
    )]
    TooLarge {
        /// What was too large ("exec request (argv and environment)").
        what: &'static str,
        /// Its encoded size (tag + JSON body).
        bytes: usize,
        /// [`proto::MAX_FRAME`].
        limit: usize,
    },
    /// The agent sent something the protocol does not allow at this point.
    #[error("unexpected message from agent while waiting for {expected}: {got}")]
    Unexpected {
        /// What we waited for.
        expected: &'static str,
        /// What came, debug-printed.
        got: String,
    },
}

/// What the agent said in its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentInfo {
    /// Its protocol version.
    pub version: u32,
    /// Its pid.
    pub pid: u32,
}

/// An exec request: what [`AgentClient::start_exec`] sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// argv; `argv[0]` is looked up on the box's `PATH`.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Whether stdin frames will follow (otherwise the command reads `/dev/null`, or
    /// with a tty a terminal nobody types into).
    pub stdin: bool,
    /// Working directory (absolute).
    pub cwd: Option<String>,
    /// Run on a pty of this initial size.
    pub tty: Option<WinSize>,
    /// Run as this user (`uid`, `uid:gid`, `name`, `name:group`), resolved by the agent
    /// in the box; `None`: the agent's own user.
    pub user: Option<String>,
    /// Resource limits the command starts with (set by the agent before exec).
    pub rlimits: Vec<proto::Rlimit>,
}

/// The end of a command, as the agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitReport {
    /// Exit code, or 128 + signal.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

/// One event of a running exec, from [`ExecReader::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Stdout bytes (with a tty: everything the terminal showed).
    Stdout(Vec<u8>),
    /// Stderr bytes.
    Stderr(Vec<u8>),
    /// The command ended; nothing follows.
    Exit(ExitReport),
}

/// The sending half of an exec session.
#[derive(Debug)]
pub struct ExecWriter {
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl ExecWriter {
    /// Send stdin bytes (in frames of at most 64 KiB).
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(STDIN_CHUNK) {
            proto::write_frame(&mut self.wr, &Frame::<Request>::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Close the command's stdin (ignored with a tty).
    pub async fn stdin_eof(&mut self) -> Result<(), ClientError> {
        Ok(proto::write_frame(&mut self.wr, &Frame::<Request>::StdinEof).await?)
    }

    /// Deliver signal `signal` to the command's process group (with a tty, to the
    /// terminal's foreground group).
    pub async fn signal(&mut self, signal: i32) -> Result<(), ClientError> {
        Ok(proto::write_frame(&mut self.wr, &Frame::Control(Request::Signal { signal })).await?)
    }

    /// Resize the command's terminal (ignored without a tty).
    pub async fn resize(&mut self, size: WinSize) -> Result<(), ClientError> {
        Ok(proto::write_frame(
            &mut self.wr,
            &Frame::Control(Request::Resize { rows: size.rows, cols: size.cols }),
        )
        .await?)
    }
}

/// The receiving half of an exec session.
#[derive(Debug)]
pub struct ExecReader {
    rd: tokio::net::unix::OwnedReadHalf,
}

impl ExecReader {
    /// The next output chunk, or the exit. An agent error (the command could not be
    /// started: [`ErrorCode::NotFound`], [`ErrorCode::PermissionDenied`],
    /// [`ErrorCode::Spawn`]) is [`ClientError::Agent`].
    pub async fn next(&mut self) -> Result<ExecEvent, ClientError> {
        match proto::read_frame::<Response, _>(&mut self.rd).await? {
            Frame::Stdout(b) => Ok(ExecEvent::Stdout(b)),
            Frame::Stderr(b) => Ok(ExecEvent::Stderr(b)),
            Frame::Control(Response::Exit { code, signal }) => {
                Ok(ExecEvent::Exit(ExitReport { code, signal }))
            }
            Frame::Control(Response::Error { code, message }) => {
                Err(ClientError::Agent { code, message })
            }
            Frame::Control(other) => Err(unexpected("exit", other)),
            other => Err(ClientError::Unexpected { expected: "exit", got: format!("{other:?}") }),
        }
    }
}

/// One connection to the agent. See the module documentation.
#[derive(Debug)]
pub struct AgentClient {
    stream: UnixStream,
    info: Option<AgentInfo>,
    /// The user of [`AgentClient::exec`]'s command ([`AgentClient::with_user`]).
    user: Option<String>,
}

impl AgentClient {
    /// Wrap a connected stream (dialled through the strategy). Must be called inside a
    /// tokio runtime. No bytes are exchanged yet.
    pub fn connect(stream: std::os::unix::net::UnixStream) -> Result<Self, ClientError> {
        stream.set_nonblocking(true)?;
        Ok(AgentClient { stream: UnixStream::from_std(stream)?, info: None, user: None })
    }

    /// Run [`AgentClient::exec`]'s and [`AgentClient::exec_output`]'s commands as this
    /// user (see [`ExecRequest::user`]); `None`: the agent's own.
    pub fn with_user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }

    /// Exchange `Hello`s (once; later calls return the first answer). A version the
    /// agent refuses is [`ClientError::Version`].
    pub async fn hello(&mut self) -> Result<AgentInfo, ClientError> {
        if let Some(info) = self.info {
            return Ok(info);
        }
        proto::write_frame(
            &mut self.stream,
            &Frame::Control(Request::Hello { version: proto::VERSION }),
        )
        .await?;
        let info = match self.read_control("hello").await? {
            Response::Hello { version, pid } if version == proto::VERSION => {
                AgentInfo { version, pid }
            }
            Response::Hello { version, .. } => {
                return Err(ClientError::Version {
                    ours: proto::VERSION,
                    theirs: Some(version),
                    detail: None,
                });
            }
            Response::Error { code: ErrorCode::Version, message } => {
                let theirs = version_in_refusal(&message);
                return Err(ClientError::Version {
                    ours: proto::VERSION,
                    theirs,
                    detail: Some(boxsock_core::echo::echo(&message).to_string()),
                });
            }
            other => return Err(unexpected("hello", other)),
        };
        self.info = Some(info);
        Ok(info)
    }

    /// Liveness check: `Ping` → `Pong`. Returns what the agent said in its `Hello`.
    pub async fn ping(mut self) -> Result<AgentInfo, ClientError> {
        let info = self.hello().await?;
        proto::write_frame(&mut self.stream, &Frame::Control(Request::Ping {})).await?;
        match self.read_control("pong").await? {
            Response::Pong {} => Ok(info),
            other => Err(unexpected("pong", other)),
        }
    }

    /// Ask the agent to stop: `Shutdown` → `ShuttingDown`. The agent then kills what it
    /// spawned and exits; the caller watches the process for the end.
    pub async fn shutdown(mut self) -> Result<(), ClientError> {
        self.hello().await?;
        proto::write_frame(&mut self.stream, &Frame::Control(Request::Shutdown {})).await?;
        match self.read_control("shutting_down").await? {
            Response::ShuttingDown {} => Ok(()),
            other => Err(unexpected("shutting_down", other)),
        }
    }

    /// Run `argv` in the box with `env` added to the agent's environment, and return
    /// its exit code (128 + signal number when a signal killed it).
    ///
    /// `stdin`, when given, is copied to the command and closed at its end; otherwise
    /// the command's stdin is `/dev/null`. Output is handed to `on_stdout` /
    /// `on_stderr` chunk by chunk as it arrives, in order within each stream. An empty
    /// argv or a command that cannot be started is [`ClientError::Agent`] with
    /// [`ErrorCode::BadRequest`] / [`ErrorCode::Spawn`]; argv and environment that do
    /// not fit in one frame ([`proto::MAX_FRAME`]) are [`ClientError::TooLarge`], before
    /// anything is sent.
    ///
    /// Dropping the returned future closes the connection, and the agent then kills
    /// the command's process group: that is how a caller stops a command (the CLI does
    /// when its stdout closes).
    pub async fn exec<S, O, E>(
        self,
        argv: &[impl AsRef<str>],
        env: &[(&str, &str)],
        stdin: Option<S>,
        on_stdout: O,
        on_stderr: E,
    ) -> Result<i32, ClientError>
    where
        S: AsyncRead + Unpin,
        O: FnMut(&[u8]),
        E: FnMut(&[u8]),
    {
        Ok(self.exec_report(argv, env, stdin, on_stdout, on_stderr).await?.code)
    }

    /// [`AgentClient::exec`] on the [`AgentClient::start_exec`] session, returning the
    /// whole exit report.
    async fn exec_report<S, O, E>(
        self,
        argv: &[impl AsRef<str>],
        env: &[(&str, &str)],
        stdin: Option<S>,
        mut on_stdout: O,
        mut on_stderr: E,
    ) -> Result<ExitReport, ClientError>
    where
        S: AsyncRead + Unpin,
        O: FnMut(&[u8]),
        E: FnMut(&[u8]),
    {
        let request = ExecRequest {
            argv: argv.iter().map(|a| a.as_ref().to_owned()).collect(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            stdin: stdin.is_some(),
            user: self.user.clone(),
            ..ExecRequest::default()
        };
        let (mut wr, mut rd) = self.start_exec(request).await?;
        let feed = async move {
            if let Some(mut input) = stdin {
                let mut buf = vec![0u8; STDIN_CHUNK];
                loop {
                    let n = input.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    wr.stdin(&buf[..n]).await?;
                }
                wr.stdin_eof().await?;
            }
            // Keep the write half open until the answer is read: dropping it would
            // shut the connection down for writing, which the agent takes as the
            // client going away.
            std::future::pending::<Result<(), ClientError>>().await
        };
        let answer = async {
            loop {
                match rd.next().await? {
                    ExecEvent::Stdout(b) => on_stdout(&b),
                    ExecEvent::Stderr(b) => on_stderr(&b),
                    ExecEvent::Exit(exit) => return Ok(exit),
                }
            }
        };
        tokio::pin!(feed, answer);
        let mut feeding = true;
        loop {
            tokio::select! {
                r = &mut answer => return r,
                r = &mut feed, if feeding => {
                    feeding = false;
                    // A stdin write can fail because the command ended and the agent
                    // closed; the answer (exit or error) is still readable.
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "stopped feeding stdin to the agent");
                    }
                }
            }
        }
    }

    /// [`AgentClient::exec`] with stdin from a byte slice (or `/dev/null` for
    /// `None`) and the output collected in memory, in the shape
    /// [`Command::output`](crate::exec::Command::output) returns.
    pub async fn exec_output(
        self,
        argv: &[impl AsRef<str>],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Result<Output, ClientError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exit = self
            .exec_report(
                argv,
                env,
                stdin,
                |b| stdout.extend_from_slice(b),
                |b| stderr.extend_from_slice(b),
            )
            .await?;
        Ok(Output { status: ExitStatus::from(exit), stdout, stderr })
    }

    /// Hello, then send an exec request (refused before sending when over the frame
    /// limit).
    async fn send_exec(&mut self, request: ExecRequest) -> Result<(), ClientError> {
        self.hello().await?;
        let ExecRequest { argv, env, stdin, cwd, tty, user, rlimits } = request;
        let request = Request::Exec {
            argv,
            env,
            stdin,
            cwd,
            tty: tty.is_some(),
            winsize: tty,
            user,
            rlimits,
        };
        // Check the size before sending: an oversized frame is refused by the agent,
        // which closes the connection mid-write (a bare "Broken pipe").
        let frame = proto::encode(&Frame::Control(request));
        if frame.len() - 4 > proto::MAX_FRAME {
            return Err(ClientError::TooLarge {
                what: "exec request (argv and environment)",
                bytes: frame.len() - 4,
                limit: proto::MAX_FRAME,
            });
        }
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Start a command and hand back both directions of the session: the
    /// [`ExecWriter`] sends stdin, signals and resizes, the [`ExecReader`] yields
    /// output and finally the exit. Dropping both closes the connection, which makes
    /// the agent kill the command.
    pub async fn start_exec(
        mut self,
        request: ExecRequest,
    ) -> Result<(ExecWriter, ExecReader), ClientError> {
        self.send_exec(request).await?;
        let (rd, wr) = self.stream.into_split();
        Ok((ExecWriter { wr }, ExecReader { rd }))
    }

    async fn read_control(&mut self, expected: &'static str) -> Result<Response, ClientError> {
        match proto::read_frame::<Response, _>(&mut self.stream).await? {
            Frame::Control(Response::Error { code, message }) if code != ErrorCode::Version => {
                Err(ClientError::Agent { code, message })
            }
            Frame::Control(r) => Ok(r),
            other => Err(ClientError::Unexpected { expected, got: format!("{other:?}") }),
        }
    }
}

/// The agent's own version in its refusal of our hello. Every agent so far words it
/// "agent speaks protocol version N, …".
fn version_in_refusal(message: &str) -> Option<u32> {
    let rest = message.strip_prefix("agent speaks protocol version ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn unexpected(expected: &'static str, got: Response) -> ClientError {
    ClientError::Unexpected { expected, got: format!("{got:?}") }
}

/// Read the readiness notification the agent sends on the `ready` socket, from a
/// connection the runtime accepted there. Returns the agent's version and pid.
pub async fn read_ready(stream: &mut UnixStream) -> Result<AgentInfo, ClientError> {
    match proto::read_frame::<Response, _>(stream).await? {
        Frame::Control(Response::Ready { version, pid }) if version == proto::VERSION => {
            Ok(AgentInfo { version, pid })
        }
        Frame::Control(Response::Ready { version, .. }) => {
            Err(ClientError::Version { ours: proto::VERSION, theirs: Some(version), detail: None })
        }
        other => Err(ClientError::Unexpected { expected: "ready", got: format!("{other:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answer the client's hello with `answer` from the other end of a socket pair.
    async fn client_against(
        answer: Response,
    ) -> (AgentClient, tokio::task::JoinHandle<Frame<Request>>) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut theirs = UnixStream::from_std(theirs).unwrap();
        let server = tokio::spawn(async move {
            let hello = proto::read_frame::<Request, _>(&mut theirs).await.unwrap();
            proto::write_frame(&mut theirs, &Frame::Control(answer)).await.unwrap();
            hello
        });
        (AgentClient::connect(ours).unwrap(), server)
    }

    #[tokio::test]
    async fn hello_sends_our_version_and_reads_the_agents() {
        let (mut c, server) =
            client_against(Response::Hello { version: proto::VERSION, pid: 42 }).await;
        assert_eq!(c.hello().await.unwrap(), AgentInfo { version: proto::VERSION, pid: 42 });
        assert_eq!(
            server.await.unwrap(),
            Frame::Control(Request::Hello { version: proto::VERSION })
        );
        // Cached: no second exchange.
        assert_eq!(c.hello().await.unwrap().pid, 42);
    }

    #[tokio::test]
    async fn version_refusals_and_other_versions_are_version_errors() {
        let (mut c, _s) = client_against(Response::Error {
            code: ErrorCode::Version,
            message: "agent speaks 9".into(),
        })
        .await;
        assert!(
            matches!(c.hello().await, Err(ClientError::Version { ours: proto::VERSION, theirs: None, detail: Some(d) }) if d.contains('9'))
        );
        let (mut c, _s) =
            client_against(Response::Hello { version: proto::VERSION + 1, pid: 1 }).await;
        assert!(matches!(c.hello().await, Err(ClientError::Version { .. })));
    }

    /// A version-1 agent (the last one before pty exec) refuses our hello with exactly
    /// this frame; the error names both versions.
    #[tokio::test]
    async fn a_v1_agent_is_a_clear_error_naming_both_versions() {
        let v1_refusal = "agent speaks protocol version 1, the runtime sent version 2";
        let (mut c, server) = client_against(Response::Error {
            code: ErrorCode::Version,
            message: v1_refusal.into(),
        })
        .await;
        let err = c.hello().await.unwrap_err();
        assert!(matches!(err, ClientError::Version { ours: 2, theirs: Some(1), .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("agent speaks protocol 1, this client needs 2"), "{msg}");
        assert_eq!(server.await.unwrap(), Frame::Control(Request::Hello { version: 2 }));
        // A v1 agent's readiness frame is refused the same way at start.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut theirs = tokio::net::UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        proto::write_frame(&mut theirs, &Frame::Control(Response::Ready { version: 1, pid: 7 }))
            .await
            .unwrap();
        let mut ours = tokio::net::UnixStream::from_std({
            ours.set_nonblocking(true).unwrap();
            ours
        })
        .unwrap();
        let err = read_ready(&mut ours).await.unwrap_err();
        assert!(
            err.to_string().starts_with("agent speaks protocol 1, this client needs 2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unexpected_answers_and_early_close_are_errors() {
        let (c, _s) = client_against(Response::Pong {}).await;
        assert!(matches!(c.ping().await, Err(ClientError::Unexpected { expected: "hello", .. })));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        let err = AgentClient::connect(ours).unwrap().ping().await.unwrap_err();
        assert!(
            matches!(err, ClientError::Io(_) | ClientError::Proto(ProtoError::Closed)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_exec_request_over_the_frame_limit_is_refused_before_sending_naming_size_and_limit()
    {
        let (c, server) = client_against(Response::Hello { version: proto::VERSION, pid: 1 }).await;
        let big = vec!["a".repeat(100_000); 11];
        let err = c.exec_output(&big, &[], None).await.unwrap_err();
        match &err {
            ClientError::TooLarge { bytes, limit, .. } => {
                assert!(*bytes > 1_100_000 && *limit == proto::MAX_FRAME, "{err}");
            }
            other => panic!("expected TooLarge, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&proto::MAX_FRAME.to_string()) && msg.contains("exec request"),
            "{msg}"
        );
        // Only the hello went out.
        assert_eq!(
            server.await.unwrap(),
            Frame::Control(Request::Hello { version: proto::VERSION })
        );
    }
}
