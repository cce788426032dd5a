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
    match proto::read_frame::<Request, _>(rd).await {
        Ok(Frame::Control(Request::Hello { version })) if version == proto::VERSION => {
            send(wr, Response::Hello { version: proto::VERSION, pid: state.pid }).await?;
        }
        Ok(Frame::Control(Request::Hello { version })) => {
            tracing::warn!(theirs = version, ours = proto::VERSION, "protocol version mismatch");
            let msg = format!(
                "agent speaks protocol version {}, the client speaks version {version}",
                proto::VERSION
            );
            return send(wr, error(ErrorCode::Version, msg)).await;
        }
        Ok(other) => {
            return send(
                wr,
                error(
                    ErrorCode::BadRequest,
                    format!("expected hello first, got {}", describe(&other)),
                ),
            )
            .await;
        }
        Err(e) => return reject(wr, e).await,
    }
    match proto::read_frame::<Request, _>(rd).await {
        Ok(Frame::Control(Request::Ping {})) => send(wr, Response::Pong {}).await,
        Ok(Frame::Control(Request::Shutdown {})) => {
            tracing::info!("shutdown requested");
            let r = send(wr, Response::ShuttingDown {}).await;
            state.stop.send_replace(true);
            r
        }
        Ok(Frame::Control(Request::Exec { argv, env, stdin, cwd, tty, winsize })) => {
            let tty = tty.then(|| winsize.unwrap_or_default());
            exec(rd, wr, ExecSpec { argv, env, want_stdin: stdin, cwd, tty }, state).await
        }
        Ok(other) => {
            send(
                wr,
                error(
                    ErrorCode::BadRequest,
                    format!("expected a request, got {}", describe(&other)),
                ),
            )
            .await
        }
        Err(e) => reject(wr, e).await,
    }
}

async fn reject<W: AsyncWrite + Unpin>(wr: &mut W, e: ProtoError) -> io::Result<()> {
    match answer_to(&e) {
        Some(answer) => {
            tracing::warn!(error = %e, "bad frame; closing the connection");
            send(wr, answer).await
        }
        None => {
            tracing::debug!(error = %e, "peer went away");
            Ok(())
        }
    }
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
