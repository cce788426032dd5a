//! [`PeerPolicy`]: which peers may talk on a socket (uids, and where known the one
//! process), checked on a descriptor or on credentials received some other way.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use super::rejections::Shared;
use super::{PeerCred, peer_cred};
use crate::address::SocketAddress;
use crate::error::BindingError;

/// Which peers may talk on a socket, plus a shared counter of rejections.
///
/// Rejections are counted exactly ([`PeerPolicy::rejected`]) but logged rate-limited:
/// in each [`REJECTION_LOG_INTERVAL`](super::REJECTION_LOG_INTERVAL), the first
/// [`REJECTION_LOG_SAMPLES`](super::REJECTION_LOG_SAMPLES) rejections are logged one by
/// one with the peer's pid and uid, and the rest are summed into one warning, `"N more
/// peers rejected in the last T s"` (fields `more`, `interval_s`, `last_peer_uid`,
/// `last_peer_pid` of the last one not logged), written when the next rejection after
/// the interval arrives, on [`PeerPolicy::flush_rejection_log`], or when the last clone
/// of the policy is dropped. A flood of rejected connections therefore costs the log a
/// few lines per interval, not one line per connection.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allowed: Option<Arc<[u32]>>,
    /// The one process that may be at the other end (the box's recorded process), where
    /// known: a listener created by any other process is refused even with an allowed
    /// uid (another process of the owner is not the box).
    pid: Option<i32>,
    shared: Arc<Shared>,
}

impl PeerPolicy {
    fn with(allowed: Option<Arc<[u32]>>) -> Self {
        PeerPolicy { allowed, pid: None, shared: Arc::new(Shared::default()) }
    }

    /// No credential check (the filesystem protects the address).
    pub fn unchecked() -> Self {
        Self::with(None)
    }

    /// Only peers whose uid is in `uids` are accepted.
    pub fn allow_uids(uids: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = uids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self::with(Some(v.into()))
    }

    /// The same policy, also requiring the peer to be process `pid` (for a connect to
    /// a box's socket: the box's recorded process — the agent for the host backend, the
    /// shim for libkrun — created the listener). Turns an unchecked policy into one
    /// that checks the pid only.
    pub fn with_pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// The process the peer must be, if the policy names one.
    pub fn expected_pid(&self) -> Option<i32> {
        self.pid
    }

    /// Whether this policy checks anything.
    pub fn is_checked(&self) -> bool {
        self.allowed.is_some() || self.pid.is_some()
    }

    /// The allowed uids, if checked.
    pub fn allowed_uids(&self) -> Option<&[u32]> {
        self.allowed.as_deref()
    }

    /// How many peers this policy (and its clones) has rejected. Exact, whatever the
    /// log's rate limit dropped.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected()
    }

    /// Log the summary of rejections not logged individually since the last summary,
    /// if any, now. Long-running servers call this periodically so a flood that
    /// stopped is still reported before the next rejection (or exit).
    pub fn flush_rejection_log(&self) {
        self.shared.flush();
    }

    /// Count one rejection and log it, rate-limited (see the type's documentation).
    pub(super) fn note_rejection(
        &self,
        socket: &str,
        address: &SocketAddress,
        cred: Option<PeerCred>,
        why: &'static str,
    ) {
        self.shared.note(socket, address, cred, self.pid, why);
    }

    /// Check the peer on `fd`. On rejection, counts it and logs the peer's pid and uid
    /// (rate-limited).
    pub fn check(
        &self,
        fd: BorrowedFd<'_>,
        socket: &str,
        address: &SocketAddress,
    ) -> Result<Option<PeerCred>, BindingError> {
        if !self.is_checked() {
            return Ok(None);
        }
        let cred =
            peer_cred(fd).map_err(|e| BindingError::io("read peer credentials of", address, e))?;
        self.check_cred(cred, socket, address).map(Some)
    }

    /// Check credentials obtained some other way (for example `SCM_CREDENTIALS` on a
    /// datagram). An unchecked policy accepts everything. On rejection, counts it and
    /// logs the peer's pid and uid (rate-limited).
    pub fn check_cred(
        &self,
        cred: PeerCred,
        socket: &str,
        address: &SocketAddress,
    ) -> Result<PeerCred, BindingError> {
        let uid_ok = self.allowed.as_deref().is_none_or(|a| a.contains(&cred.uid));
        let pid_ok = self.pid.is_none_or(|p| p == cred.pid);
        if uid_ok && pid_ok {
            return Ok(cred);
        }
        self.note_rejection(socket, address, Some(cred), "rejected peer");
        Err(BindingError::PeerRejected {
            socket: socket.to_owned(),
            address: address.display_string(),
            pid: cred.pid,
            uid: cred.uid,
            allowed: self.allowed.as_deref().map(<[u32]>::to_vec).unwrap_or_default(),
            expected_pid: self.pid,
        })
    }
}
