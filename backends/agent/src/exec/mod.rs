//! One `Exec` request: start the command ([`spawn`]), relay the client's frames to it
//! ([`input`]) and its output to the client ([`output`]), then answer with its exit,
//! or kill it when the client goes away or sends something invalid.

mod input;
mod output;
mod spawn;

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use boxsock_core::proto::{self, Frame, Response, WinSize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::conn::send;
use crate::groups::State;
use input::{ConnEvent, Input};
use output::Output;

/// One exec request, as received.
pub(crate) struct ExecSpec {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) want_stdin: bool,
    pub(crate) cwd: Option<String>,
    /// With a pty of this initial size.
    pub(crate) tty: Option<WinSize>,
    /// As this user (a spec resolved in the box's root); `None`: the agent's own.
    pub(crate) user: Option<String>,
    /// With these resource limits.
    pub(crate) rlimits: Vec<boxsock_core::proto::Rlimit>,
}

/// How the running phase of an exec ended.
enum Ended {
    /// The command's main process ended.
    Exited(io::Result<ExitStatus>),
    /// The connection ended or went bad while the command ran.
    Conn(ConnEvent),
    /// Writing a frame to the client failed: the client is gone.
    WriteFailed(Option<io::Error>),
}

/// Run `spec` for the client on `rd`/`wr`; returns once the command has ended or been
/// killed, and the client has been answered (when it is still there).
pub(crate) async fn exec<R, W>(
    rd: &mut R,
    wr: &mut W,
    spec: ExecSpec,
    state: &State,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut cmd = match spawn::start(&spec, state) {
        Ok(c) => c,
        Err(answer) => return send(wr, answer).await,
    };
    let (output, frames) = Output::start(&mut cmd.child, cmd.master.as_ref());
    let mut input = Input::new(&mut cmd, spec.want_stdin);
    let last = {
        // Output frames go through one channel so that each stream keeps its order and
        // `Exit` comes after every output frame.
        let mut writer = Box::pin(write_frames(wr, frames));
        let ended = tokio::select! {
            status = cmd.child.wait() => Ended::Exited(status),
            ev = input.relay(rd) => Ended::Conn(ev),
            // The writer only ends early on a write error.
            w = &mut writer => Ended::WriteFailed(w.err()),
        };
        match ended {
            Ended::Exited(status) => Some(exited(status?, output, writer.as_mut(), cmd.pid).await?),
            Ended::WriteFailed(error) => {
                tracing::info!(pid = cmd.pid, error = ?error, "client went away; killing the command");
                cmd.kill().await;
                None
            }
            Ended::Conn(ConnEvent::Gone) => {
                tracing::info!(pid = cmd.pid, "client went away; killing the command");
                cmd.kill().await;
                None
            }
            Ended::Conn(ConnEvent::Bad(answer)) => {
                tracing::warn!(pid = cmd.pid, answer = ?answer, "bad frame during exec; killing the command");
                cmd.kill().await;
                output.close().await;
                writer.as_mut().await?;
                Some(answer)
            }
        }
    };
    match last {
        Some(answer) => send(wr, answer).await,
        None => Ok(()),
    }
}

/// The command ended with `status`: forward what output is left (within
/// [`OUTPUT_GRACE`](crate::OUTPUT_GRACE)), then the `Exit` answer.
async fn exited<F>(
    status: ExitStatus,
    output: Output,
    writer: std::pin::Pin<&mut F>,
    pid: u32,
) -> io::Result<Response>
where
    F: Future<Output = io::Result<()>>,
{
    let signal = status.signal();
    let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    output.finish(writer, pid).await?;
    tracing::info!(pid, code, signal, "exec ended");
    Ok(Response::Exit { code, signal })
}

/// Write every queued output frame to the client, until every sender is gone.
async fn write_frames<W>(wr: &mut W, mut frames: mpsc::Receiver<Frame<Response>>) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some(f) = frames.recv().await {
        proto::write_frame(wr, &f).await?;
    }
    Ok(())
}
