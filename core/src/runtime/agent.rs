//! The runtime's side of the agent protocol ([`crate::proto`]) over one connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::proto::{self, ErrorCode, Frame, ProtoError, Request, Response};

/// What went wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A frame could not be read or written.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// The agent answered with an error.
    #[error("agent error ({code:?}): {message}")]
    Remote {
        /// Its kind.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The agent answered something that does not fit the request.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
    /// The agent did not answer in time.
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        AgentError::Proto(ProtoError::Io(e))
    }
}

/// Where an exec's output goes.
pub struct ExecIo<'a> {
    /// Stdin to forward, if any (forwarded until EOF, then `StdinEof`).
    pub stdin: Option<Box<dyn AsyncRead + Unpin + Send + 'static>>,
    /// Receives stdout chunks.
    pub stdout: &'a mut (dyn AsyncWrite + Unpin + Send),
    /// Receives stderr chunks.
    pub stderr: &'a mut (dyn AsyncWrite + Unpin + Send),
}

impl std::fmt::Debug for ExecIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo").field("stdin", &self.stdin.is_some()).finish_non_exhaustive()
    }
}

fn unexpected(f: Frame<Response>) -> AgentError {
    match f {
        Frame::Control(Response::Error { code, message }) => AgentError::Remote { code, message },
        other => AgentError::Unexpected(format!("{other:?}")),
    }
}

async fn control(stream: &mut UnixStream) -> Result<Response, AgentError> {
    match proto::read_frame::<Response, _>(stream).await? {
        Frame::Control(Response::Error { code, message }) => Err(AgentError::Remote { code, message }),
        Frame::Control(r) => Ok(r),
        other => Err(unexpected(other)),
    }
}

/// Send `Hello` and check the answer.
pub async fn hello(stream: &mut UnixStream) -> Result<u32, AgentError> {
    proto::write_frame(stream, &Frame::Control(Request::Hello { version: proto::VERSION })).await?;
    match control(stream).await? {
        Response::Hello { pid, .. } => Ok(pid),
        other => Err(AgentError::Unexpected(format!("{other:?} in answer to hello"))),
    }
}

/// `Hello` then `Ping`.
pub async fn ping(mut stream: UnixStream) -> Result<(), AgentError> {
    hello(&mut stream).await?;
    proto::write_frame(&mut stream, &Frame::Control(Request::Ping)).await?;
    match control(&mut stream).await? {
        Response::Pong => Ok(()),
        other => Err(AgentError::Unexpected(format!("{other:?} in answer to ping"))),
    }
}

/// `Hello` then `Shutdown`; waits for `ShuttingDown`.
pub async fn shutdown(mut stream: UnixStream) -> Result<(), AgentError> {
    hello(&mut stream).await?;
    proto::write_frame(&mut stream, &Frame::Control(Request::Shutdown)).await?;
    match control(&mut stream).await {
        Ok(Response::ShuttingDown) => Ok(()),
        // The agent may exit before the answer is read: that is a successful shutdown.
        Err(AgentError::Proto(ProtoError::Closed | ProtoError::Truncated)) => Ok(()),
        Err(AgentError::Proto(ProtoError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(other) => Err(AgentError::Unexpected(format!("{other:?} in answer to shutdown"))),
        Err(e) => Err(e),
    }
}

/// `Hello` then `Exec`; streams output into `io` and returns the exit code.
pub async fn exec(
    mut stream: UnixStream,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    io: ExecIo<'_>,
) -> Result<i32, AgentError> {
    hello(&mut stream).await?;
    let has_stdin = io.stdin.is_some();
    proto::write_frame(&mut stream, &Frame::Control(Request::Exec { argv, env, stdin: has_stdin })).await?;
    let (mut rd, wr) = stream.into_split();
    // Without stdin the write half is kept here until the answer is read (dropping it
    // would shut the connection down for writing: the agent would take the client as
    // gone).
    let mut idle_wr = Some(wr);
    let pump = io.stdin.map(|mut stdin| {
        let mut wr = idle_wr.take().expect("write half present");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stdin.read(&mut buf).await?;
                if n == 0 {
                    proto::write_frame::<Request, _>(&mut wr, &Frame::StdinEof).await?;
                    // Keep the write half open until the answer is read: dropping it
                    // shuts the connection down for writing, which the agent takes as
                    // the client going away. The task is aborted after the answer.
                    std::future::pending::<()>().await;
                }
                proto::write_frame::<Request, _>(&mut wr, &Frame::Stdin(buf[..n].to_vec())).await?;
            }
            #[allow(unreachable_code)]
            Ok::<_, std::io::Error>(())
        })
    });
    let result = loop {
        match proto::read_frame::<Response, _>(&mut rd).await {
            Ok(Frame::Stdout(b)) => io.stdout.write_all(&b).await?,
            Ok(Frame::Stderr(b)) => io.stderr.write_all(&b).await?,
            Ok(Frame::Control(Response::Exit { code })) => break Ok(code),
            Ok(other) => break Err(unexpected(other)),
            Err(e) => break Err(e.into()),
        }
    };
    if let Some(p) = pump {
        // The command ended: whatever stdin was still pending is no longer wanted.
        p.abort();
    }
    drop(idle_wr);
    io.stdout.flush().await?;
    io.stderr.flush().await?;
    result
}
