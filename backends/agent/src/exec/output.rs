//! The command's output: one task per stream (stdout, stderr, or the pty) turning
//! reads into frames on one channel, and the end of it once the command exited.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use boxsock_core::proto::{Frame, Response};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::OUTPUT_GRACE;
use crate::pty::PtyMaster;

/// Size of one stdout/stderr read (and so the largest output frame body).
const OUTPUT_CHUNK: usize = 32 * 1024;

/// The running output pumps and the channel's sender they were given copies of.
pub(super) struct Output {
    tx: mpsc::Sender<Frame<Response>>,
    pumps: JoinSet<()>,
}

impl Output {
    /// Start a pump for each of the child's output pipes and for the pty; the receiver
    /// gets their frames.
    pub(super) fn start(
        child: &mut tokio::process::Child,
        master: Option<&Arc<PtyMaster>>,
    ) -> (Output, mpsc::Receiver<Frame<Response>>) {
        let (tx, frames) = mpsc::channel::<Frame<Response>>(32);
        let mut pumps = JoinSet::new();
        if let Some(out) = child.stdout.take() {
            pumps.spawn(pump(out, tx.clone(), Frame::Stdout));
        }
        if let Some(err) = child.stderr.take() {
            pumps.spawn(pump(err, tx.clone(), Frame::Stderr));
        }
        if let Some(m) = master {
            pumps.spawn(pump_pty(m.clone(), tx.clone()));
        }
        (Output { tx, pumps }, frames)
    }

    /// The command exited: let the pumps reach EOF (they may be blocked on a full
    /// channel, so `writer` keeps writing meanwhile), but not longer than
    /// [`OUTPUT_GRACE`]; then let `writer` flush what is queued.
    pub(super) async fn finish<F>(self, mut writer: Pin<&mut F>, pid: u32) -> io::Result<()>
    where
        F: Future<Output = io::Result<()>>,
    {
        let Output { tx, mut pumps } = self;
        drop(tx);
        let mut writer_done = false;
        tokio::select! {
            _ = drain(&mut pumps, pid) => {}
            w = &mut writer => { w?; writer_done = true; }
        }
        // Every pump is finished or aborted, so every sender is gone: the writer
        // flushes what is queued and ends.
        pumps.shutdown().await;
        if !writer_done {
            writer.await?;
        }
        Ok(())
    }

    /// Stop every pump and drop the sender, so the writer ends after what is queued.
    pub(super) async fn close(self) {
        let Output { tx, mut pumps } = self;
        pumps.shutdown().await;
        drop(tx);
    }
}

/// Wait for every pump to end, for at most [`OUTPUT_GRACE`]; then abort the rest.
async fn drain(pumps: &mut JoinSet<()>, pid: u32) {
    let deadline = tokio::time::sleep(OUTPUT_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            j = pumps.join_next() => if j.is_none() { break },
            _ = &mut deadline => {
                tracing::info!(pid, "output still open after the command ended; sending exit");
                pumps.abort_all();
                break;
            }
        }
    }
}

async fn pump_pty(from: Arc<PtyMaster>, tx: mpsc::Sender<Frame<Response>>) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(Frame::Stdout(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "pty read failed");
                return;
            }
        }
    }
}

async fn pump<R>(
    mut from: R,
    tx: mpsc::Sender<Frame<Response>>,
    wrap: fn(Vec<u8>) -> Frame<Response>,
) where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(wrap(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "output read failed");
                return;
            }
        }
    }
}
