//! The client's frames while a command runs: stdin to the command (pipe or pty),
//! `Signal` to its group (or its terminal's foreground group), `Resize` to its pty.

use std::sync::Arc;

use boxsock_core::proto::{self, ErrorCode, Frame, Request, Response, WinSize};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::spawn::Started;
use crate::conn::{answer_to, describe, error};
use crate::pty::PtyMaster;

/// What the connection did while a command ran.
pub(super) enum ConnEvent {
    /// The client closed the connection.
    Gone,
    /// The client sent something invalid; answer this and stop.
    Bad(Response),
}

/// Where stdin frames go.
enum Stdin {
    Pipe(tokio::process::ChildStdin),
    Pty(Arc<PtyMaster>),
}

/// The command's side of the client's frames.
pub(super) struct Input {
    stdin: Option<Stdin>,
    want_stdin: bool,
    master: Option<Arc<PtyMaster>>,
    pid: u32,
    pgid: i32,
}

impl Input {
    /// Takes the command's stdin pipe (or, with a tty and stdin asked for, its pty).
    pub(super) fn new(cmd: &mut Started<'_>, want_stdin: bool) -> Self {
        let stdin = match &cmd.master {
            Some(m) if want_stdin => Some(Stdin::Pty(m.clone())),
            _ => cmd.child.stdin.take().map(Stdin::Pipe),
        };
        let master = cmd.master.clone();
        Input { stdin, want_stdin, master, pid: cmd.pid, pgid: cmd.pgid }
    }

    /// Relay frames until the client goes away or sends something invalid. Reading
    /// goes on after stdin's end (or when no stdin was asked for), to notice the client
    /// going away.
    pub(super) async fn relay<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> ConnEvent {
        loop {
            let frame = match proto::read_frame::<Request, _>(rd).await {
                Ok(f) => f,
                Err(e) => return answer_to(&e).map_or(ConnEvent::Gone, ConnEvent::Bad),
            };
            if let Err(answer) = self.on_frame(frame).await {
                return ConnEvent::Bad(answer);
            }
        }
    }

    /// One frame; `Err` is the answer to a frame that has no place here.
    async fn on_frame(&mut self, frame: Frame<Request>) -> Result<(), Response> {
        match frame {
            Frame::Stdin(b) if self.want_stdin => self.write(&b).await,
            // A terminal stays open: end-of-input there is the user's Ctrl-D.
            Frame::StdinEof if self.want_stdin => {
                if matches!(self.stdin, Some(Stdin::Pipe(_))) {
                    self.stdin = None;
                }
            }
            Frame::Control(Request::Signal { signal }) => self.signal(signal)?,
            Frame::Control(Request::Resize { rows, cols }) => self.resize(rows, cols),
            other => {
                let msg = format!("unexpected {} while a command runs", describe(&other));
                return Err(error(ErrorCode::BadRequest, msg));
            }
        }
        Ok(())
    }

    /// Feed `data` to the command; once it closed its stdin, drop the rest.
    async fn write(&mut self, data: &[u8]) {
        let written = match self.stdin.as_mut() {
            Some(Stdin::Pipe(p)) => p.write_all(data).await,
            Some(Stdin::Pty(m)) => m.write_all(data).await,
            None => Ok(()),
        };
        if let Err(e) = written {
            tracing::debug!(pid = self.pid, error = %e, "command stdin closed");
            self.stdin = None;
        }
    }

    /// Deliver `signal` where the terminal would send it (its foreground group), or
    /// without a tty to the command's group.
    fn signal(&self, signal: i32) -> Result<(), Response> {
        let Ok(sig) = nix::sys::signal::Signal::try_from(signal) else {
            let msg = format!("signal {signal} is not a signal number of this system");
            return Err(error(ErrorCode::BadRequest, msg));
        };
        let target = self.master.as_ref().and_then(|m| m.foreground()).unwrap_or(self.pgid);
        let pid = self.pid;
        match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(target), sig) {
            Ok(()) => tracing::debug!(pid, pgid = target, signal = %sig, "signal delivered"),
            Err(e) => {
                tracing::debug!(pid, pgid = target, signal = %sig, error = %e, "signal not delivered")
            }
        }
        Ok(())
    }

    /// Resize the command's terminal (no-op without one).
    fn resize(&self, rows: u16, cols: u16) {
        if let Some(m) = &self.master {
            if let Err(e) = m.resize(WinSize { rows, cols }) {
                tracing::debug!(pid = self.pid, rows, cols, error = %e, "resize failed");
            }
        }
    }
}
