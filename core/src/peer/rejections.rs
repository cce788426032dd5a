//! The rejection log of a [`PeerPolicy`](super::PeerPolicy): every rejection counted
//! exactly, the log rate-limited (a few samples per interval, then one summary).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::PeerCred;
use crate::address::SocketAddress;

/// Rejections logged one by one per interval before the rest are summarised.
pub const REJECTION_LOG_SAMPLES: u64 = 5;

/// The interval of the rejection log's rate limit.
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The rejection count and log that a policy shares with its clones.
#[derive(Debug, Default)]
pub(super) struct Shared {
    rejected: AtomicU64,
    log: Mutex<RejectionWindow>,
}

/// What the rejection log has done in the current interval.
#[derive(Debug, Default)]
struct RejectionWindow {
    /// Start of the interval; `None` before the first rejection.
    started: Option<Instant>,
    /// Rejections logged one by one in this interval.
    sampled: u64,
    /// Rejections counted but not logged in this interval.
    suppressed: u64,
    /// The last suppressed rejection: socket, address, peer (if it had credentials).
    last: Option<(String, String, Option<PeerCred>)>,
}

impl RejectionWindow {
    /// Log the summary of suppressed rejections, if any, and start a new interval.
    fn flush(&mut self, now: Instant) {
        if self.suppressed > 0 {
            let interval_s = self.started.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
            let (socket, address, cred) = self.last.take().unwrap_or_default();
            tracing::warn!(
                socket,
                address,
                more = self.suppressed,
                interval_s,
                last_peer_uid = ?cred.map(|c| c.uid),
                last_peer_pid = ?cred.map(|c| c.pid),
                "{} more peers rejected in the last {interval_s:.1} s",
                self.suppressed
            );
        }
        *self = RejectionWindow { started: Some(now), ..RejectionWindow::default() };
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let log = self.log.get_mut().unwrap_or_else(|p| p.into_inner());
        log.flush(Instant::now());
    }
}

impl Shared {
    /// Rejections counted so far.
    pub(super) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Log the summary of suppressed rejections now, if any.
    pub(super) fn flush(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).flush(Instant::now());
    }

    /// Count one rejection and log it, rate-limited; `expected_pid` is the policy's.
    pub(super) fn note(
        &self,
        socket: &str,
        address: &SocketAddress,
        cred: Option<PeerCred>,
        expected_pid: Option<i32>,
        why: &'static str,
    ) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut w = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match w.started {
            Some(s) if now.duration_since(s) < REJECTION_LOG_INTERVAL => {}
            _ => w.flush(now),
        }
        if w.sampled < REJECTION_LOG_SAMPLES {
            w.sampled += 1;
            let last_sample = w.sampled == REJECTION_LOG_SAMPLES;
            drop(w);
            match cred {
                Some(c) => {
                    tracing::warn!(socket, address = %address, peer_pid = c.pid, peer_uid = c.uid, expected_pid = ?expected_pid, "{why}")
                }
                None => tracing::warn!(socket, address = %address, "{why}"),
            }
            if last_sample {
                tracing::warn!(
                    socket,
                    interval_s = REJECTION_LOG_INTERVAL.as_secs(),
                    "further rejected peers in this interval are counted and summarised, not logged one by one"
                );
            }
        } else {
            w.suppressed += 1;
            w.last = Some((socket.to_owned(), address.display_string(), cred));
        }
    }
}
