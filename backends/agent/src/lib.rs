//! The boxsock in-box agent, as a library (the `boxsock-agent` binary is a thin
//! command line over [`run`]).
//!
//! The agent listens on the box's `agent` address, tells the runtime it is ready by
//! sending one `Response::Ready` frame on the `ready` address, then serves the
//! protocol of [`boxsock_core::proto`] on every accepted connection, concurrently:
//! `Ping`, `Exec` (stdout/stderr streamed as frames, stdin fed from frames, exit code
//! or 128 + signal), and `Shutdown`.
//!
//! With a non-empty `allow_uids` (the runtime passes it for strategies whose addresses
//! the filesystem does not protect, such as `abstract`), every accepted connection and
//! the ready listener are checked with `SO_PEERCRED`; a peer whose uid is not listed is
//! dropped and logged.
//!
//! Inside a libkrun guest the addresses are `vsock://<port>` (see [`vsock`]): the
//! agent listens on the agent port on every CID and dials the host (CID 2) on the
//! ready port. vsock carries no peer credentials, so `allow_uids` together with a
//! vsock address is refused ([`AgentError::VsockPeerCheck`]); there the VM boundary and
//! the host-side 0700 socket directory protect the agent.
//!
//! Input never makes it panic: a malformed frame is answered with an
//! `Error { code: BadFrame }` frame, that connection is closed, and the others go on.
//!
//! Every command runs in its own process group. Background processes a command leaves
//! in its group keep running after its exec ends (as under `docker exec`); on
//! shutdown (a `Shutdown` request, or SIGTERM/SIGINT through [`run`]) the agent stops
//! accepting, kills every group it started that still has members, removes its own
//! socket file (only if it is still the one it bound) and returns. A process that
//! leaves its group (`setsid`) escapes this; so does everything if the agent is
//! SIGKILLed, which is why the runtime should ask for a shutdown first.
//!
//! One job per module: `config` (the addresses and whom it trusts), `inherited` (the
//! descriptors it was handed), `agent` (listening, readiness, the accept loop), `conn`
//! (one connection's protocol), `exec` (one command: spawn, input, output), `groups`
//! (the process groups it started and the stop signal), `user` (whom an exec runs as,
//! from the box's `/etc/passwd` and `/etc/group`), [`pty`].

// First: on a platform other than Linux the build stops here (docs/platforms.md).
mod sys;

#[cfg(target_os = "linux")]
pub use sys::linux::{guestnet, guestroot, vsock};
pub mod pty;

mod agent;
mod config;
mod conn;
mod error;
mod exec;
mod groups;
mod inherited;
mod user;

use std::time::Duration;

pub use agent::Agent;
pub use config::{AddressError, AgentAddress, AgentConfig, parse_address};
pub use error::AgentError;
pub use groups::StopHandle;
pub use inherited::check_inherited;
pub use vsock::VsockAddress;

/// How long, after a command's main process ended, the agent keeps forwarding output
/// that processes it left behind still write to the inherited pipes. After that the
/// `Exit` frame is sent anyway, so a stray background process cannot hang an exec.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Bind, notify readiness, and serve until shutdown, SIGTERM or SIGINT: the whole
/// life of the `boxsock-agent` process. Must be called inside a tokio runtime.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let agent = Agent::bind(config)?;
    // Installed before notifying: from readiness on, SIGTERM is graceful.
    let signals = stop_on_signals(agent.stop_handle());
    if let Err(e) = agent.notify_ready() {
        agent.remove_own_socket();
        return Err(e);
    }
    let r = agent.serve().await;
    if let Some(s) = signals {
        s.abort();
    }
    r
}

/// Stop the agent (through `stop`) on SIGTERM or SIGINT; `None` when the handlers
/// cannot be installed.
fn stop_on_signals(stop: StopHandle) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => Some(tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
            stop.stop();
        })),
        _ => {
            tracing::warn!(
                "cannot install signal handlers; only a Shutdown request stops the agent gracefully"
            );
            None
        }
    }
}
