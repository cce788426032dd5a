//! One accepted connection: the hello, one request (`Ping`, `Exec`, `Shutdown`), and
//! the answers to frames that are not what the protocol expects.

use std::io;
use std::sync::Arc;

use boxsock_core::proto::{self, ErrorCode, Frame, ProtoError, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::exec::{ExecSpec, exec};
use crate::groups::State;

pub(crate) async fn send<W: AsyncWrite + Unpin>(wr: &mut W, r: Response) -> io::Result<()> {
    proto::write_frame(wr, &Frame::Control(r)).await
}

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

/// The answer to a frame that could not be read, or `None` when the peer just went
/// away (nothing to answer).
pub(crate) fn answer_to(e: &ProtoError) -> Option<Response> {
    match e {
        ProtoError::Closed => None,
        ProtoError::Io(_) => None,
        e => Some(error(ErrorCode::BadFrame, e.to_string())),
    }
}

pub(crate) async fn handle_connection<R, W>(mut rd: R, mut wr: W, state: Arc<State>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(e) = serve_one(&mut rd, &mut wr, &state).await {
        tracing::debug!(error = %e, "connection ended with a write error");
    }
    let _ = wr.shutdown().await;
}

async fn serve_one<R, W>(rd: &mut R, wr: &mut W, state: &Arc<State>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(answer) = hello(rd).await {
        return match answer {
            Some(answer) => send(wr, answer).await,
            None => Ok(()),
        };
    }
    send(wr, Response::Hello { version: proto::VERSION, pid: state.pid }).await?;
    match proto::read_frame::<Request, _>(rd).await {
        Ok(Frame::Control(Request::Ping {})) => send(wr, Response::Pong {}).await,
        Ok(Frame::Control(Request::Shutdown {})) => {
            tracing::info!("shutdown requested");
            let r = send(wr, Response::ShuttingDown {}).await;
            state.stop.send_replace(true);
            r
        }
        Ok(Frame::Control(Request::Exec {
            argv,
            env,
            stdin,
            cwd,
            tty,
            winsize,
            user,
            rlimits,
        })) => {
            let tty = tty.then(|| winsize.unwrap_or_default());
            let spec = ExecSpec { argv, env, want_stdin: stdin, cwd, tty, user, rlimits };
            exec(rd, wr, spec, state).await
        }
        Ok(other) => {
            let msg = format!("expected a request, got {}", describe(&other));
            send(wr, error(ErrorCode::BadRequest, msg)).await
        }
        Err(e) => reject(wr, e).await,
    }
}

/// Read the client's `Hello`; `Err` holds the answer when it is not one of this
/// protocol version (`None`: the client went away, nothing to answer).
async fn hello<R: AsyncRead + Unpin>(rd: &mut R) -> Result<(), Option<Response>> {
    match proto::read_frame::<Request, _>(rd).await {
        Ok(Frame::Control(Request::Hello { version })) if version == proto::VERSION => Ok(()),
        Ok(Frame::Control(Request::Hello { version })) => {
            tracing::warn!(theirs = version, ours = proto::VERSION, "protocol version mismatch");
            let msg = format!(
                "agent speaks protocol version {}, the client speaks version {version}",
                proto::VERSION
            );
            Err(Some(error(ErrorCode::Version, msg)))
        }
        Ok(other) => {
            let msg = format!("expected hello first, got {}", describe(&other));
            Err(Some(error(ErrorCode::BadRequest, msg)))
        }
        Err(e) => Err(rejection(e)),
    }
}

async fn reject<W: AsyncWrite + Unpin>(wr: &mut W, e: ProtoError) -> io::Result<()> {
    match rejection(e) {
        Some(answer) => send(wr, answer).await,
        None => Ok(()),
    }
}

/// The answer to a frame that could not be read, logged; `None` when the peer just
/// went away.
fn rejection(e: ProtoError) -> Option<Response> {
    let answer = answer_to(&e);
    match &answer {
        Some(_) => tracing::warn!(error = %e, "bad frame; closing the connection"),
        None => tracing::debug!(error = %e, "peer went away"),
    }
    answer
}

pub(crate) fn describe(f: &Frame<Request>) -> String {
    match f {
        Frame::Control(Request::Hello { .. }) => "a second hello".into(),
        Frame::Control(r) => format!("{r:?}"),
        Frame::Stdout(_) => "a stdout frame".into(),
        Frame::Stderr(_) => "a stderr frame".into(),
        Frame::Stdin(_) => "a stdin frame".into(),
        Frame::StdinEof => "a stdin-eof frame".into(),
    }
}
