//! Process identity, and the owned handle of a process a backend started.
//!
//! A pid alone is not an identity: once the process is reaped the kernel may hand the
//! number to a stranger. A [`ProcessIdentity`] is pid **plus** the process start time
//! (field 22 of `/proc/<pid>/stat`, in clock ticks since boot). It is what persists
//! (the runtime's store keeps it across runtime restarts).
//!
//! An [`OwnedProcess`] is what [`Backend::launch`](crate::Backend::launch) returns for
//! the box's process and each companion: the identity and a pidfd, both captured by
//! [`spawn`](crate::spawn) while the process is the spawner's unreaped child (its pid
//! cannot be reused before it is reaped, so neither can refer to a stranger). The
//! runtime takes both over as they are, with no second `/proc` read.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::wait::WaitPidFlag;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process, identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

/// The fields of `/proc/<pid>/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, `X`…
    pub state: char,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Why a `/proc/<pid>/stat` text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    /// No `)` closes the comm field.
    #[error("no ')' closing the comm field")]
    NoCommEnd,
    /// The text ends before field `field`.
    #[error("field {field} missing")]
    Missing {
        /// Field number (1-based, as in proc(5)).
        field: usize,
    },
    /// Field 3 (state) is not one character.
    #[error("field 3 (state) is {found:?}, not one character")]
    State {
        /// What was found.
        found: String,
    },
    /// A numeric field does not parse.
    #[error("field {field} ({name}): {source}")]
    Number {
        /// Field number.
        field: usize,
        /// Its name in proc(5).
        name: &'static str,
        /// The parse error.
        #[source]
        source: std::num::ParseIntError,
    },
}

/// Parse the contents of `/proc/<pid>/stat`.
///
/// The second field (`comm`) is in parentheses and may itself contain spaces and
/// parentheses, so the fields after it are located from the **last** `)`.
pub fn parse_stat(text: &str) -> Result<ProcStat, StatError> {
    let close = text.rfind(')').ok_or(StatError::NoCommEnd)?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).copied().ok_or(StatError::Missing { field: n });
    let state_s = field(3)?;
    let mut chars = state_s.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(StatError::State { found: state_s.to_owned() }),
    };
    let pgrp =
        field(5)?.parse().map_err(|source| StatError::Number { field: 5, name: "pgrp", source })?;
    let start_time = field(22)?.parse().map_err(|source| StatError::Number {
        field: 22,
        name: "starttime",
        source,
    })?;
    Ok(ProcStat { state, pgrp, start_time })
}

/// Read `/proc/<pid>/stat`. `Ok(None)` when there is no such process.
pub fn read_stat(pid: i32) -> io::Result<Option<ProcStat>> {
    if pid <= 0 {
        return Ok(None);
    }
    match crate::sys::read_stat_text(pid) {
        Ok(text) => parse_stat(&text).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, ProcStatError { pid, source: e })
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A `/proc/<pid>/stat` that does not parse, naming the pid (carried inside the
/// `io::Error` of [`read_stat`]).
#[derive(Debug, thiserror::Error)]
#[error("/proc/{pid}/stat: {source}")]
pub struct ProcStatError {
    /// The pid.
    pub pid: i32,
    /// Why.
    #[source]
    pub source: StatError,
}

/// What [`ProcessIdentity::probe`] found at the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The same process, running (any state but zombie/dead).
    Alive,
    /// The same process, exited but not yet reaped by its parent.
    Zombie,
    /// No process, or a different process (start time differs): ours is gone.
    Gone,
}

impl ProcessIdentity {
    /// The identity of the live process `pid`, now.
    pub fn of(pid: i32) -> io::Result<Self> {
        match read_stat(pid)? {
            Some(st) => Ok(ProcessIdentity { pid, start_time: st.start_time }),
            None => {
                Err(io::Error::new(io::ErrorKind::NotFound, format!("no process with pid {pid}")))
            }
        }
    }

    /// The identity of this process.
    pub fn current() -> io::Result<Self> {
        Self::of(std::process::id() as i32)
    }

    /// What is at our pid now. Never reaps.
    pub fn probe(&self) -> Liveness {
        match read_stat(self.pid) {
            Ok(Some(st)) if st.start_time == self.start_time => {
                if matches!(st.state, 'Z' | 'X') {
                    Liveness::Zombie
                } else {
                    Liveness::Alive
                }
            }
            _ => Liveness::Gone,
        }
    }

    /// Whether this process is alive (same start time, not a zombie). A zombie that is
    /// our child is reaped here (its status is discarded; a [`ProcessHandle`] keeps it).
    pub fn is_alive(&self) -> bool {
        match self.probe() {
            Liveness::Alive => true,
            Liveness::Zombie => {
                let _ =
                    nix::sys::wait::waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG));
                false
            }
            Liveness::Gone => false,
        }
    }
}

/// [`ProcessIdentity::adopt`] found no live process at the pid.
#[derive(Debug, thiserror::Error)]
#[error("no live process with pid {pid}")]
pub struct NoSuchProcess {
    /// The pid.
    pub pid: i32,
}

/// A process a backend started (the box's process or a companion): its identity and,
/// where the kernel has them, a pidfd on it. Owning it is owning the duty to reap the
/// process: whoever holds it (the runtime, once `launch` returns) signals, watches and
/// reaps it. Dropping it neither kills nor waits (as a std `Child`); a backend that
/// gives up on a process before returning it calls [`OwnedProcess::kill_and_reap`].
#[derive(Debug)]
pub struct OwnedProcess {
    identity: ProcessIdentity,
    pidfd: Option<OwnedFd>,
}

impl OwnedProcess {
    /// Take `child` over: its identity and pidfd are captured now, while it is our
    /// unreaped child (its pid cannot have been reused). The `Child` itself is dropped,
    /// which neither waits nor kills; its pipes close.
    /// If they cannot be read, the child is killed and reaped and the error returned.
    pub fn from_child(mut child: std::process::Child) -> io::Result<Self> {
        let pid = child.id() as i32;
        let captured = pidfd(pid).and_then(|pidfd| match read_stat(pid)? {
            Some(st) => Ok((ProcessIdentity { pid, start_time: st.start_time }, pidfd)),
            // Unreachable for an unreaped child (even a zombie has its stat).
            None => Err(io::Error::new(io::ErrorKind::NotFound, NoSuchProcess { pid })),
        });
        match captured {
            Ok((identity, pidfd)) => Ok(OwnedProcess { identity, pidfd }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Take over the live process `pid` that is **not** known to be our unreaped child
    /// (a process another process started and reported, e.g. by a pid file). The pidfd
    /// is opened first, then the start time read, then the pidfd checked not to have
    /// exited: while the process it refers to has not exited it holds the pid, so the
    /// start time read is its own. Prefer [`crate::spawn`], which needs no such check.
    pub fn adopt(pid: i32) -> io::Result<Self> {
        let gone = || io::Error::new(io::ErrorKind::NotFound, NoSuchProcess { pid });
        if pid <= 0 {
            return Err(gone());
        }
        let pidfd = match crate::sys::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(gone()),
            Err(e) => {
                tracing::debug!(pid, error = %e, "no pidfd; identity is pid + start time only");
                None
            }
        };
        let identity = ProcessIdentity::of(pid)?;
        if let Some(fd) = &pidfd {
            if crate::sys::pidfd_exited(fd.as_fd())? {
                return Err(gone());
            }
        }
        Ok(OwnedProcess { identity, pidfd })
    }

    /// The identity captured at spawn.
    pub fn identity(&self) -> ProcessIdentity {
        self.identity
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.identity.pid
    }

    /// The pidfd, if the kernel gave one.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Identity and pidfd, for the new owner (the runtime's process handle).
    pub fn into_parts(self) -> (ProcessIdentity, Option<OwnedFd>) {
        (self.identity, self.pidfd)
    }

    /// SIGKILL exactly this process (through the pidfd, else only while the pid still
    /// has the captured start time) and reap it if it is our child: for a backend's
    /// failure path, before the process was handed over.
    pub fn kill_and_reap(self) {
        let pid = Pid::from_raw(self.identity.pid);
        match &self.pidfd {
            Some(fd) => {
                let _ = crate::sys::pidfd_send_sigkill(fd.as_fd());
            }
            None => {
                if self.identity.probe() == Liveness::Alive {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// A pidfd of `pid` (`pidfd_open`, Linux ≥ 5.3).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    crate::sys::pidfd_open(pid)
}

fn pidfd(pid: i32) -> io::Result<Option<OwnedFd>> {
    match crate::sys::pidfd_open(pid) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            tracing::debug!(pid, error = %e, "no pidfd; the identity is pid + start time only");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_taken_over_has_its_identity_and_a_pidfd() {
        let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let p = OwnedProcess::from_child(child).unwrap();
        assert_eq!(p.identity(), ProcessIdentity::of(pid).unwrap());
        assert!(p.pidfd().is_some());
        let ident = p.identity();
        p.kill_and_reap();
        assert!(read_stat(pid).unwrap().is_none_or(|st| st.start_time != ident.start_time));
    }

    #[test]
    fn adopting_an_exited_process_is_refused() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // A zombie: its pid is still held, but it has exited.
        while read_stat(pid).unwrap().is_some_and(|st| st.state != 'Z') {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let e = OwnedProcess::adopt(pid).unwrap_err();
        assert!(e.to_string().contains(&format!("pid {pid}")), "{e}");
        child.wait().unwrap();
        assert!(OwnedProcess::adopt(pid).is_err());
    }
}
