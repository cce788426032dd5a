//! The process groups the agent started, the stop signal, and how a command's group is
//! killed: every command runs in a group of its own, which a shutdown or a client gone
//! kills.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::pty;

/// Shared state of one agent: its pid, the process groups it started, the stop signal.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) pid: u32,
    pub(crate) groups: Mutex<HashSet<i32>>,
    pub(crate) stop: watch::Sender<bool>,
}

impl State {
    pub(crate) fn kill_all(&self) {
        let groups: Vec<i32> =
            self.groups.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for pgid in groups {
            kill_group(pgid);
        }
    }
}

fn kill_group(pgid: i32) {
    match nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        Ok(()) => tracing::debug!(pgid, "killed process group"),
        Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "cannot kill process group"),
    }
}

/// Asks a serving agent to stop, from outside (a signal handler, a test).
#[derive(Debug, Clone)]
pub struct StopHandle(pub(crate) Arc<State>);

impl StopHandle {
    /// Stop the agent: [`Agent::serve`](crate::Agent::serve) stops accepting, kills what it spawned and
    /// returns.
    pub fn stop(&self) {
        self.0.stop.send_replace(true);
    }
}

/// When an exec ends, forgets its process group if nothing is left in it. Processes
/// the command left running in the background keep the group alive; it stays in the
/// set, so a shutdown kills them.
pub(crate) struct GroupGuard<'a> {
    pub(crate) state: &'a State,
    pub(crate) pgid: i32,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        let mut groups = self.state.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|&g| group_alive(g));
        if group_alive(self.pgid) {
            tracing::debug!(
                pgid = self.pgid,
                "command left processes behind; they live until shutdown"
            );
        }
    }
}

/// Kill an exec's process group and, with a tty, the terminal's foreground group
/// first (a job the shell moved to a group of its own; it may ignore SIGHUP).
pub(crate) fn kill_exec(master: Option<&pty::PtyMaster>, pgid: i32) {
    if let Some(fg) = master.and_then(|m| m.foreground()).filter(|&fg| fg != pgid) {
        kill_group(fg);
    }
    kill_group(pgid);
}

fn group_alive(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}
