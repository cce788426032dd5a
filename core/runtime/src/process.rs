//! Process identity: the one source of truth for "the box's process".
//!
//! A pid alone is not an identity: once the process is reaped the kernel may hand the
//! number to a stranger. A [`ProcessIdentity`] (the core's) is pid **plus** the process
//! start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot), and a
//! [`ProcessHandle`] adds a pidfd while the runtime holds it. A process a backend
//! launched arrives as an [`OwnedProcess`] (identity and pidfd captured at spawn) and
//! becomes a handle with [`ProcessHandle::from_owned`], with no second `/proc` read. Everything that reports,
//! watches or signals a box's process goes through these types, so the pid `inspect`
//! reports is the pid the health monitor watches and the pid `stop` kills.
//!
//! Rules:
//! - [`ProcessIdentity::is_alive`] is true only if `/proc/<pid>/stat` exists, its start
//!   time matches and it is not a zombie (`Z`) or dead (`X`): a zombie answers
//!   `kill(pid, 0)` but is not running.
//! - [`ProcessHandle::signal`] uses `pidfd_send_signal` when a pidfd is held (the kernel
//!   guarantees it reaches exactly that process); without one it re-reads the identity
//!   immediately before `kill`, and never signals a pid whose start time differs.
//! - Our own children are reaped (`waitpid(WNOHANG)`) whenever we look at them, so no
//!   zombie lingers; the exit status is kept.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use boxsock_core::process::{
    Liveness, OwnedProcess, ProcStat, ProcStatError, ProcessIdentity, StatError, parse_stat,
    read_stat,
};

/// Why a signal was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The process is gone (or the pid now belongs to a different process, which was
    /// left alone).
    #[error("process {pid} (start time {start_time}) is gone; not signalling")]
    Gone {
        /// The pid.
        pid: i32,
        /// The recorded start time.
        start_time: u64,
    },
    /// The system call failed.
    #[error("signal {signal} to pid {pid}: {source}")]
    Os {
        /// The pid.
        pid: i32,
        /// The signal.
        signal: Signal,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A process the runtime watches and may signal: identity plus, where the kernel
/// supports it, a pidfd.
#[derive(Debug)]
pub struct ProcessHandle {
    identity: ProcessIdentity,
    pidfd: Option<OwnedFd>,
    exit: Mutex<Option<i32>>,
    kill_group_on_exit: bool,
}

impl ProcessHandle {
    /// A handle on `identity`. Opens a pidfd and checks, after opening it, that the pid
    /// still has the recorded start time (so the pidfd cannot refer to a stranger that
    /// reused the pid). A process that is already gone yields `Ok` with no pidfd and
    /// [`ProcessHandle::liveness`] `Gone`.
    pub fn open(identity: ProcessIdentity) -> Self {
        let pidfd = match boxsock_core::process::pidfd_open(identity.pid) {
            Ok(fd) => match identity.probe() {
                Liveness::Gone => None,
                _ => Some(fd),
            },
            Err(e) => {
                tracing::debug!(pid = identity.pid, error = %e, "no pidfd; falling back to pid + start time checks");
                None
            }
        };
        ProcessHandle { identity, pidfd, exit: Mutex::new(None), kill_group_on_exit: false }
    }

    /// A handle on a process a backend launched: its identity and pidfd as captured at
    /// spawn, taken over as they are. `group_leader`: as [`Self::open_group_leader`].
    pub fn from_owned(process: OwnedProcess, group_leader: bool) -> Self {
        let (identity, pidfd) = process.into_parts();
        ProcessHandle { identity, pidfd, exit: Mutex::new(None), kill_group_on_exit: group_leader }
    }

    /// A handle on a box's main process, a session and process-group leader: when it is
    /// seen exited but not yet reaped (its pid cannot be reused yet), what is left of
    /// its process group is SIGKILLed before it is reaped, so nothing of the box
    /// outlives it.
    pub fn open_group_leader(identity: ProcessIdentity) -> Self {
        ProcessHandle { kill_group_on_exit: true, ..Self::open(identity) }
    }

    /// A handle on the live process `pid`, reading its start time now.
    pub fn from_pid(pid: i32) -> io::Result<Self> {
        Ok(Self::open(ProcessIdentity::of(pid)?))
    }

    /// The identity.
    pub fn identity(&self) -> ProcessIdentity {
        self.identity
    }

    /// Whether a pidfd is held.
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// The exit code, once reaped by this handle (status, or 128 + signal).
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reap the process if it is our exited child, keeping the exit code.
    pub fn try_reap(&self) -> Option<i32> {
        if let Some(c) = self.exit_code() {
            return Some(c);
        }
        let code = match nix::sys::wait::waitpid(
            Pid::from_raw(self.identity.pid),
            Some(WaitPidFlag::WNOHANG),
        ) {
            Ok(WaitStatus::Exited(_, c)) => Some(c),
            Ok(WaitStatus::Signaled(_, s, _)) => Some(128 + s as i32),
            _ => None,
        };
        if code.is_some() {
            *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = code;
        }
        code
    }

    /// What is at the pid now (reaping our zombie child, keeping its status).
    pub fn liveness(&self) -> Liveness {
        if self.exit_code().is_some() {
            return Liveness::Gone;
        }
        match read_stat(self.identity.pid) {
            Ok(Some(st)) if st.start_time == self.identity.start_time => {
                if matches!(st.state, 'Z' | 'X') {
                    if self.kill_group_on_exit && st.pgrp == self.identity.pid {
                        // The unreaped zombie holds the pid, so the group is still ours.
                        let _ = nix::sys::signal::killpg(
                            Pid::from_raw(self.identity.pid),
                            Signal::SIGKILL,
                        );
                    }
                    if self.try_reap().is_some() { Liveness::Gone } else { Liveness::Zombie }
                } else {
                    Liveness::Alive
                }
            }
            _ => Liveness::Gone,
        }
    }

    /// Whether the process is alive (not exited, not a zombie, not a stranger).
    pub fn is_alive(&self) -> bool {
        self.liveness() == Liveness::Alive
    }

    /// Send `signal` to exactly this process. Never reaches a process that reused the
    /// pid.
    pub fn signal(&self, signal: Signal) -> Result<(), SignalError> {
        let pid = self.identity.pid;
        let gone = || SignalError::Gone { pid, start_time: self.identity.start_time };
        if let Some(fd) = &self.pidfd {
            let Err(e) = crate::sys::pidfd_send_signal(fd, signal) else { return Ok(()) };
            return if e.raw_os_error() == Some(libc::ESRCH) {
                Err(gone())
            } else {
                Err(SignalError::Os { pid, signal, source: e })
            };
        }
        if self.liveness() != Liveness::Alive {
            return Err(gone());
        }
        nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|e| match e {
            nix::errno::Errno::ESRCH => gone(),
            e => SignalError::Os { pid, signal, source: e.into() },
        })
    }

    /// Send `signal` to the process group this process leads (the box process is a
    /// session leader, so its children are in the group). Sent only while the leader is
    /// verified to be this process (alive or an unreaped zombie, whose pid cannot be
    /// reused); otherwise [`SignalError::Gone`].
    pub fn signal_group(&self, signal: Signal) -> Result<(), SignalError> {
        let pid = self.identity.pid;
        let gone = SignalError::Gone { pid, start_time: self.identity.start_time };
        if self.exit_code().is_some() {
            return Err(gone);
        }
        match read_stat(pid) {
            Ok(Some(st)) if st.start_time == self.identity.start_time && st.pgrp == pid => {}
            _ => return Err(gone),
        }
        nix::sys::signal::killpg(Pid::from_raw(pid), signal).map_err(|e| match e {
            nix::errno::Errno::ESRCH => {
                SignalError::Gone { pid, start_time: self.identity.start_time }
            }
            e => SignalError::Os { pid, signal, source: e.into() },
        })
    }

    /// Wait until the process has exited (and, if it is our child, is reaped), up to
    /// `timeout`. Returns whether it is gone. With a pidfd this waits for the kernel's
    /// exit notification; without one it polls `/proc` at short intervals.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(fd) = &self.pidfd {
            // A duplicate per waiter: epoll refuses the same fd registered twice, and the
            // health monitor and `stop` may wait at the same time.
            let dup = fd.try_clone().ok();
            let afd = dup.and_then(|d| {
                // SAFETY: the AsyncFd takes ownership of `d`, an OwnedFd, which stays open
                // and refers to the same pidfd until the AsyncFd is dropped.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        d,
                        tokio::io::Interest::READABLE,
                    )
                }
                .ok()
            });
            if let Some(afd) = afd {
                let timed_out =
                    tokio::time::timeout_at(deadline.into(), afd.readable()).await.is_err();
                drop(afd);
                if timed_out {
                    return self.liveness() == Liveness::Gone;
                }
            }
        }
        let mut step = Duration::from_millis(1);
        loop {
            match self.liveness() {
                Liveness::Gone => return true,
                Liveness::Zombie => {
                    // Not our child (someone else must reap it) — it no longer runs.
                    return true;
                }
                Liveness::Alive => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(step.min(deadline - now)).await;
            step = (step * 2).min(Duration::from_millis(50));
        }
    }

    /// Wait, without a deadline, until the process has exited.
    pub async fn wait_exit(&self) {
        while !self.wait_gone(Duration::from_secs(3600)).await {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn stat_parsing_survives_hostile_comm() {
        let fields_after: String = (3..=30)
            .map(|n| {
                if n == 3 {
                    "S".to_string()
                } else if n == 22 {
                    "987654".into()
                } else if n == 5 {
                    "4242".into()
                } else {
                    n.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        for comm in ["bash", "a b", "x) S 1 2 (y", "((", ")"] {
            let text = format!("123 ({comm}) {fields_after}\n");
            let st = parse_stat(&text).unwrap();
            assert_eq!(
                st,
                ProcStat { state: 'S', pgrp: 4242, start_time: 987654 },
                "comm {comm:?}"
            );
        }
        assert_eq!(parse_stat("123 (x"), Err(StatError::NoCommEnd));
        assert_eq!(parse_stat("123 (x) S 1"), Err(StatError::Missing { field: 5 }));
        assert_eq!(parse_stat("123 (x) SS 1 2 3"), Err(StatError::State { found: "SS".into() }));
    }

    #[test]
    fn own_identity_is_alive_and_wrong_start_time_is_not() {
        let me = ProcessIdentity::current().unwrap();
        assert!(me.is_alive());
        let fake = ProcessIdentity { start_time: me.start_time + 1, ..me };
        assert_eq!(fake.probe(), Liveness::Gone);
    }

    #[tokio::test]
    async fn zombie_child_is_dead_and_gets_reaped_with_its_status() {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pid = child.id() as i32;
        let h = ProcessHandle::from_pid(pid).unwrap();
        assert!(h.wait_gone(Duration::from_secs(10)).await);
        assert_eq!(h.exit_code(), Some(7));
        assert!(!h.is_alive());
        assert!(
            read_stat(pid).unwrap().is_none()
                || read_stat(pid).unwrap().unwrap().start_time != h.identity().start_time
        );
        std::mem::forget(child); // already reaped by the handle
    }

    #[tokio::test]
    async fn signal_reaches_the_process_and_is_refused_once_gone() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let h = ProcessHandle::from_pid(child.id() as i32).unwrap();
        assert!(h.has_pidfd());
        assert!(h.is_alive());
        h.signal(Signal::SIGKILL).unwrap();
        assert!(h.wait_gone(Duration::from_secs(10)).await);
        assert_eq!(h.exit_code(), Some(128 + 9));
        assert!(matches!(h.signal(Signal::SIGKILL), Err(SignalError::Gone { .. })));
        std::mem::forget(child);
    }

    #[test]
    fn a_stranger_with_the_recorded_pid_is_never_signalled() {
        // We cannot force pid reuse, so build the situation: an identity whose pid is a
        // live unrelated process but whose start time is not that process's.
        let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
        let real = ProcessIdentity::of(stranger.id() as i32).unwrap();
        let recorded =
            ProcessIdentity { pid: real.pid, start_time: real.start_time.wrapping_sub(1) };
        let h = ProcessHandle::open(recorded);
        assert!(!h.has_pidfd(), "a pidfd must not be kept for a pid whose start time differs");
        assert!(!h.is_alive());
        assert!(matches!(h.signal(Signal::SIGKILL), Err(SignalError::Gone { .. })));
        assert!(matches!(h.signal_group(Signal::SIGKILL), Err(SignalError::Gone { .. })));
        std::thread::sleep(Duration::from_millis(50));
        assert!(stranger.try_wait().unwrap().is_none(), "the stranger was killed");
        assert!(real.is_alive());
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }
}
