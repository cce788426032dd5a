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
//! assert_eq!((out.code, &out.stdout[..]), (0, &b"hi\n"[..]));
//! # Ok(()) }
//! ```
//!
//! Every call must run inside a tokio runtime. No call has a built-in timeout; wrap
//! it in `tokio::time::timeout` where a deadline matters (an `exec` lasts as long as
//! its command).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use boxsock_core::proto::{self, ErrorCode, Frame, ProtoError, Request, Response};

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
    /// The agent speaks another protocol version.
    #[error("agent speaks protocol version {theirs}, this runtime speaks {ours}")]
    Version {
        /// Our version ([`proto::VERSION`]).
        ours: u32,
        /// The agent's version, when it said.
        theirs: String,
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

/// What [`AgentClient::exec_output`] collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code, or 128 + signal number.
    pub code: i32,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
}

/// One connection to the agent. See the module documentation.
#[derive(Debug)]
pub struct AgentClient {
    stream: UnixStream,
    info: Option<AgentInfo>,
}

impl AgentClient {
    /// Wrap a connected stream (dialled through the strategy). Must be called inside a
    /// tokio runtime. No bytes are exchanged yet.
    pub fn connect(stream: std::os::unix::net::UnixStream) -> Result<Self, ClientError> {
        stream.set_nonblocking(true)?;
        Ok(AgentClient { stream: UnixStream::from_std(stream)?, info: None })
    }

    /// Exchange `Hello`s (once; later calls return the first answer). A version the
    /// agent refuses is [`ClientError::Version`].
    pub async fn hello(&mut self) -> Result<AgentInfo, ClientError> {
        if let Some(info) = self.info {
            return Ok(info);
        }
        proto::write_frame(&mut self.stream, &Frame::Control(Request::Hello { version: proto::VERSION })).await?;
        let info = match self.read_control("hello").await? {
            Response::Hello { version, pid } if version == proto::VERSION => AgentInfo { version, pid },
            Response::Hello { version, .. } => {
                return Err(ClientError::Version { ours: proto::VERSION, theirs: version.to_string() });
            }
            Response::Error { code: ErrorCode::Version, message } => {
                return Err(ClientError::Version { ours: proto::VERSION, theirs: message });
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
        mut self,
        argv: &[impl AsRef<str>],
        env: &[(&str, &str)],
        stdin: Option<S>,
        mut on_stdout: O,
        mut on_stderr: E,
    ) -> Result<i32, ClientError>
    where
        S: AsyncRead + Unpin,
        O: FnMut(&[u8]),
        E: FnMut(&[u8]),
    {
        self.hello().await?;
        let request = Request::Exec {
            argv: argv.iter().map(|a| a.as_ref().to_owned()).collect(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            stdin: stdin.is_some(),
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

        let (mut rd, mut wr) = self.stream.into_split();
        let feed = async move {
            if let Some(mut input) = stdin {
                let mut buf = vec![0u8; STDIN_CHUNK];
                loop {
                    let n = input.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    proto::write_frame(&mut wr, &Frame::<Request>::Stdin(buf[..n].to_vec())).await?;
                }
                proto::write_frame(&mut wr, &Frame::<Request>::StdinEof).await?;
            }
            // Keep the write half open until the answer is read: dropping it would
            // shut the connection down for writing, which the agent takes as the
            // client going away.
            std::future::pending::<io::Result<()>>().await
        };
        let answer = async {
            loop {
                match proto::read_frame::<Response, _>(&mut rd).await? {
                    Frame::Stdout(b) => on_stdout(&b),
                    Frame::Stderr(b) => on_stderr(&b),
                    Frame::Control(Response::Exit { code }) => return Ok(code),
                    Frame::Control(Response::Error { code, message }) => return Err(ClientError::Agent { code, message }),
                    Frame::Control(other) => return Err(unexpected("exit", other)),
                    other => return Err(ClientError::Unexpected { expected: "exit", got: format!("{other:?}") }),
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
    /// `None`) and the output collected in memory.
    pub async fn exec_output(
        self,
        argv: &[impl AsRef<str>],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ClientError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let code = self
            .exec(argv, env, stdin, |b| stdout.extend_from_slice(b), |b| stderr.extend_from_slice(b))
            .await?;
        Ok(ExecOutput { code, stdout, stderr })
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

fn unexpected(expected: &'static str, got: Response) -> ClientError {
    ClientError::Unexpected { expected, got: format!("{got:?}") }
}

/// Read the readiness notification the agent sends on the `ready` socket, from a
/// connection the runtime accepted there. Returns the agent's version and pid.
pub async fn read_ready(stream: &mut UnixStream) -> Result<AgentInfo, ClientError> {
    match proto::read_frame::<Response, _>(stream).await? {
        Frame::Control(Response::Ready { version, pid }) if version == proto::VERSION => Ok(AgentInfo { version, pid }),
        Frame::Control(Response::Ready { version, .. }) => {
            Err(ClientError::Version { ours: proto::VERSION, theirs: version.to_string() })
        }
        other => Err(ClientError::Unexpected { expected: "ready", got: format!("{other:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answer the client's hello with `answer` from the other end of a socket pair.
    async fn client_against(answer: Response) -> (AgentClient, tokio::task::JoinHandle<Frame<Request>>) {
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
        let (mut c, server) = client_against(Response::Hello { version: proto::VERSION, pid: 42 }).await;
        assert_eq!(c.hello().await.unwrap(), AgentInfo { version: proto::VERSION, pid: 42 });
        assert_eq!(server.await.unwrap(), Frame::Control(Request::Hello { version: proto::VERSION }));
        // Cached: no second exchange.
        assert_eq!(c.hello().await.unwrap().pid, 42);
    }

    #[tokio::test]
    async fn version_refusals_and_other_versions_are_version_errors() {
        let (mut c, _s) =
            client_against(Response::Error { code: ErrorCode::Version, message: "agent speaks 9".into() }).await;
        assert!(matches!(c.hello().await, Err(ClientError::Version { ours: proto::VERSION, theirs }) if theirs.contains('9')));
        let (mut c, _s) = client_against(Response::Hello { version: proto::VERSION + 1, pid: 1 }).await;
        assert!(matches!(c.hello().await, Err(ClientError::Version { .. })));
    }

    #[tokio::test]
    async fn unexpected_answers_and_early_close_are_errors() {
        let (c, _s) = client_against(Response::Pong {}).await;
        assert!(matches!(c.ping().await, Err(ClientError::Unexpected { expected: "hello", .. })));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        let err = AgentClient::connect(ours).unwrap().ping().await.unwrap_err();
        assert!(matches!(err, ClientError::Io(_) | ClientError::Proto(ProtoError::Closed)), "{err}");
    }

    #[tokio::test]
    async fn an_exec_request_over_the_frame_limit_is_refused_before_sending_naming_size_and_limit() {
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
        assert!(msg.contains(&proto::MAX_FRAME.to_string()) && msg.contains("exec request"), "{msg}");
        // Only the hello went out.
        assert_eq!(server.await.unwrap(), Frame::Control(Request::Hello { version: proto::VERSION }));
    }
}
