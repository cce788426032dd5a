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

// First: on a platform other than Linux the build stops here (docs/platforms.md).
mod sys;

#[cfg(target_os = "linux")]
pub use sys::linux::{guestnet, guestroot, vsock};
pub mod pty;

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxsock_core::SocketAddress;
use boxsock_core::error::BindingError;
use boxsock_core::peer::{self, AsyncListener, Listener, PeerPolicy};
use boxsock_core::proto::{self, ErrorCode, Frame, ProtoError, Request, Response, WinSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub use vsock::VsockAddress;

/// How long, after a command's main process ended, the agent keeps forwarding output
/// that processes it left behind still write to the inherited pipes. After that the
/// `Exit` frame is sent anyway, so a stray background process cannot hang an exec.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Size of one stdout/stderr read (and so the largest output frame body).
const OUTPUT_CHUNK: usize = 32 * 1024;

/// Why an agent address did not parse, for [`AgentError::Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A `vsock:` URI.
    #[error(transparent)]
    Vsock(#[from] vsock::VsockAddressError),
    /// A Unix socket URI.
    #[error(transparent)]
    Unix(#[from] boxsock_core::UriError),
}

/// An address on the agent's command line: a Unix socket address (path or abstract
/// name), or a vsock port inside a guest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentAddress {
    /// `unix:///abs/path` or `abstract:name`.
    Unix(SocketAddress),
    /// `vsock://<port>` or `vsock://<cid>:<port>`.
    Vsock(VsockAddress),
    /// A descriptor the agent inherited (`--agent-fd`, `--ready-fd`): a listening
    /// Unix stream socket for requests, a connected one for the readiness frame. The
    /// runtime bound or made it, so the agent is told no name.
    Inherited(RawFd),
}

impl AgentAddress {
    /// The URI form, as [`parse_address`] reads it.
    pub fn to_uri(&self) -> String {
        match self {
            AgentAddress::Unix(a) => a.to_uri(),
            AgentAddress::Vsock(v) => v.to_uri(),
            // Not parsed back: descriptors are given with `--agent-fd`/`--ready-fd`.
            AgentAddress::Inherited(fd) => format!("fd:{fd}"),
        }
    }

    /// The filesystem path, for a `unix://` address.
    pub fn as_path(&self) -> Option<&std::path::Path> {
        match self {
            AgentAddress::Unix(a) => a.as_path(),
            AgentAddress::Vsock(_) | AgentAddress::Inherited(_) => None,
        }
    }

    fn is_vsock(&self) -> bool {
        matches!(self, AgentAddress::Vsock(_))
    }
}

impl From<SocketAddress> for AgentAddress {
    fn from(a: SocketAddress) -> Self {
        AgentAddress::Unix(a)
    }
}

impl From<VsockAddress> for AgentAddress {
    fn from(a: VsockAddress) -> Self {
        AgentAddress::Vsock(a)
    }
}

impl fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAddress::Unix(a) => a.fmt(f),
            AgentAddress::Vsock(v) => v.fmt(f),
            AgentAddress::Inherited(fd) => write!(f, "inherited descriptor {fd}"),
        }
    }
}

/// What the agent serves and whom it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where to listen for requests.
    pub agent: AgentAddress,
    /// Where to send the readiness notification.
    pub ready: AgentAddress,
    /// Peer uids allowed on both sockets; empty means no credential check (the
    /// filesystem protects the addresses).
    pub allow_uids: Vec<u32>,
}

/// Why the agent could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command line names neither an address nor a descriptor for a socket.
    #[error("bad command line: {0}")]
    Usage(&'static str),
    /// An inherited descriptor (`--agent-fd`, `--ready-fd`) is not the socket it must
    /// be.
    #[error("descriptor {fd} ({flag}) cannot be used: {reason}")]
    Inherited {
        /// The descriptor number.
        fd: RawFd,
        /// The flag that named it.
        flag: &'static str,
        /// What it is instead (not open, not a socket, not listening…).
        reason: String,
    },
    /// A command-line address is not a valid URI.
    #[error("bad address {uri:?}: {source}")]
    Address {
        /// The URI as given.
        uri: String,
        /// What is wrong.
        #[source]
        source: AddressError,
    },
    /// `--allow-uid` was combined with a vsock address: vsock has no peer
    /// credentials, so the check could not be made.
    #[error(
        "--allow-uid cannot be checked on {uri}: vsock carries no peer credentials (the VM boundary and the host's 0700 socket directory protect it); drop --allow-uid"
    )]
    VsockPeerCheck {
        /// The vsock URI.
        uri: String,
    },
    /// The agent's vsock port could not be bound (no `AF_VSOCK` transport, port in
    /// use).
    #[error("cannot listen on agent address {uri}: {source}")]
    VsockBind {
        /// The vsock URI.
        uri: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The agent address could not be bound.
    #[error("cannot listen on agent address {address}: {source}")]
    Bind {
        /// The address, printable.
        address: String,
        /// What failed.
        #[source]
        source: BindingError,
    },
    /// The readiness notification could not be delivered.
    #[error("cannot notify readiness on {address}: {reason}")]
    Notify {
        /// The ready address, printable.
        address: String,
        /// What failed.
        reason: String,
    },
    /// Accepting connections failed for good.
    #[error("accept on {address}: {source}")]
    Accept {
        /// The agent address, printable.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Parse a command-line address: `unix:///abs/path`, `abstract:name`,
/// `vsock://<port>` or `vsock://<cid>:<port>` (port a u32, neither 0 nor
/// `VMADDR_PORT_ANY`). Errors are [`AgentError::Address`] naming the URI.
pub fn parse_address(uri: &str) -> Result<AgentAddress, AgentError> {
    let bad = |source| AgentError::Address { uri: uri.to_owned(), source };
    if uri.starts_with("vsock:") {
        return VsockAddress::parse(uri).map(AgentAddress::Vsock).map_err(|e| bad(e.into()));
    }
    SocketAddress::from_uri(uri).map(AgentAddress::Unix).map_err(|e| bad(e.into()))
}

/// The listening socket: a Unix one (with its peer policy) or a vsock port.
#[derive(Debug)]
enum AnyListener {
    Unix(AsyncListener),
    Vsock(vsock::VsockListener),
}

/// Shared state of one agent: its pid, the process groups it started, the stop signal.
#[derive(Debug)]
struct State {
    pid: u32,
    groups: Mutex<HashSet<i32>>,
    stop: watch::Sender<bool>,
}

impl State {
    fn kill_all(&self) {
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
pub struct StopHandle(Arc<State>);

impl StopHandle {
    /// Stop the agent: [`Agent::serve`] stops accepting, kills what it spawned and
    /// returns.
    pub fn stop(&self) {
        self.0.stop.send_replace(true);
    }
}

/// A bound agent. [`Agent::bind`], then [`Agent::notify_ready`], then [`Agent::serve`].
#[derive(Debug)]
pub struct Agent {
    listener: AnyListener,
    config: AgentConfig,
    policy: PeerPolicy,
    /// (dev, ino) of the socket file it bound, to remove only its own on exit.
    bound_file: Option<(u64, u64)>,
    /// The inherited ready channel (`--ready-fd`), taken over at bind and used once.
    ready_channel: Mutex<Option<UnixStream>>,
    state: Arc<State>,
}

impl Agent {
    /// Listen on `config.agent`. A stale socket file left by a dead agent is replaced;
    /// a live one is an error. A vsock address listens on its port (on every CID
    /// unless the URI names one). `allow_uids` with any vsock address is
    /// [`AgentError::VsockPeerCheck`]. Must be called inside a tokio runtime.
    pub fn bind(config: AgentConfig) -> Result<Agent, AgentError> {
        if !config.allow_uids.is_empty() {
            if let Some(v) = [&config.agent, &config.ready].into_iter().find(|a| a.is_vsock()) {
                return Err(AgentError::VsockPeerCheck { uri: v.to_uri() });
            }
        }
        check_distinct(&config)?;
        let (stop, _) = watch::channel(false);
        let state =
            Arc::new(State { pid: std::process::id(), groups: Mutex::new(HashSet::new()), stop });
        // Checked (and taken over) before anything is bound, so a bad ready descriptor
        // fails the start at once.
        let ready_channel = match &config.ready {
            AgentAddress::Inherited(fd) => {
                Some(UnixStream::from(inherited_socket(*fd, "--ready-fd", false)?))
            }
            _ => None,
        };
        let ready_channel = Mutex::new(ready_channel);
        let unix_agent = match &config.agent {
            AgentAddress::Unix(a) => a.clone(),
            AgentAddress::Inherited(fd) => {
                return Self::adopt(*fd, config, ready_channel, state);
            }
            AgentAddress::Vsock(v) => {
                let listener = vsock::VsockListener::bind(v.listen_cid(), v.port)
                    .map_err(|source| AgentError::VsockBind { uri: v.to_uri(), source })?;
                tracing::info!(address = %v, cid = v.listen_cid(), port = v.port, "listening on vsock");
                let listener = AnyListener::Vsock(listener);
                let policy = PeerPolicy::unchecked();
                let bound_file = None;
                return Ok(Agent { listener, config, policy, bound_file, ready_channel, state });
            }
        };
        let policy = if config.allow_uids.is_empty() {
            if matches!(unix_agent, SocketAddress::Abstract(_)) {
                tracing::warn!(address = %config.agent, "abstract agent address without --allow-uid: any local process in this network namespace can reach it");
            }
            PeerPolicy::unchecked()
        } else {
            PeerPolicy::allow_uids(config.allow_uids.iter().copied())
        };
        let bind_err = |source| AgentError::Bind { address: unix_agent.display_string(), source };
        let std_listener = peer::bind_stream_at(&unix_agent).map_err(bind_err)?;
        let bound_file = unix_agent
            .as_path()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| (m.dev(), m.ino()));
        let listener =
            Listener::new(std_listener, unix_agent.clone(), "agent".into(), policy.clone())
                .into_tokio()
                .map_err(|e| bind_err(BindingError::io("listen on", &unix_agent, e)))?;
        tracing::info!(address = %config.agent, checked = policy.is_checked(), "listening");
        let listener = AnyListener::Unix(listener);
        Ok(Agent { listener, config, policy, bound_file, ready_channel, state })
    }

    /// Serve on the listening socket inherited at `fd` (`--agent-fd`), with the same
    /// peer policy as a socket the agent binds itself.
    fn adopt(
        fd: RawFd,
        config: AgentConfig,
        ready_channel: Mutex<Option<UnixStream>>,
        state: Arc<State>,
    ) -> Result<Agent, AgentError> {
        let std_listener = UnixListener::from(inherited_socket(fd, "--agent-fd", true)?);
        let bad = |reason: String| AgentError::Inherited { fd, flag: "--agent-fd", reason };
        // listen(2) again: Linux records the caller's credentials on the listener
        // (`init_peercred`), and every later connect copies them, so a client's
        // SO_PEERCRED / SO_PEERPIDFD names this process, the box's, not the runtime that
        // bound it. The runtime's dial checks that pid.
        // SAFETY: listen(2) on a descriptor this agent owns (taken over just above).
        if unsafe { libc::listen(std_listener.as_raw_fd(), libc::SOMAXCONN) } == -1 {
            return Err(bad(format!("listen: {}", io::Error::last_os_error())));
        }
        let local = std_listener.local_addr().map_err(|e| bad(format!("getsockname: {e}")))?;
        let address = {
            use std::os::linux::net::SocketAddrExt;
            match (local.as_pathname(), local.as_abstract_name()) {
                (Some(p), _) => SocketAddress::Path(p.to_path_buf()),
                (None, Some(n)) => SocketAddress::Abstract(n.to_vec()),
                (None, None) => return Err(bad("it is not bound to an address".into())),
            }
        };
        let policy = if config.allow_uids.is_empty() {
            if matches!(address, SocketAddress::Abstract(_)) {
                tracing::warn!(
                    address = %address,
                    "abstract agent address without --allow-uid: any local process in this \
                     network namespace can reach it"
                );
            }
            PeerPolicy::unchecked()
        } else {
            PeerPolicy::allow_uids(config.allow_uids.iter().copied())
        };
        let listener = Listener::new(std_listener, address.clone(), "agent".into(), policy.clone())
            .into_tokio()
            .map_err(|e| bad(format!("cannot register it with the runtime: {e}")))?;
        tracing::info!(
            address = %config.agent,
            bound = %address,
            checked = policy.is_checked(),
            "listening on an inherited socket"
        );
        let (listener, bound_file) = (AnyListener::Unix(listener), None);
        Ok(Agent { listener, config, policy, bound_file, ready_channel, state })
    }

    /// The address it listens on.
    pub fn address(&self) -> &AgentAddress {
        &self.config.agent
    }

    /// A handle that stops [`Agent::serve`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.state.clone())
    }

    /// Connect to `config.ready` (checking the listener's uid when `allow_uids` is
    /// set; a vsock address goes to the host, CID 2, unless it names a CID) and send
    /// one `Ready { version, pid }` frame. Blocks briefly (a local connect and a small
    /// write, with a 10 s write timeout; vsock connects time out after the kernel's
    /// 2 s).
    pub fn notify_ready(&self) -> Result<(), AgentError> {
        let ready = &self.config.ready;
        let fail = |reason: String| AgentError::Notify { address: ready.to_string(), reason };
        let timeout = Duration::from_secs(10);
        let mut stream: Box<dyn Write> = match ready {
            AgentAddress::Inherited(_) => {
                let s = self.ready_channel.lock().unwrap_or_else(|p| p.into_inner()).take();
                let s = s.ok_or_else(|| fail("the ready channel was already used".into()))?;
                // The same peer check as on a socket dialled by name: the channel's
                // other end must be held by an allowed uid (the runtime).
                if let Some(allowed) = self.policy.allowed_uids() {
                    let cred = peer::peer_cred(s.as_fd())
                        .map_err(|e| fail(format!("peer credentials: {e}")))?;
                    if !allowed.contains(&cred.uid) {
                        let (uid, pid) = (cred.uid, cred.pid);
                        return Err(fail(format!(
                            "its peer is uid {uid} (pid {pid}), not one of {allowed:?}"
                        )));
                    }
                }
                s.set_write_timeout(Some(timeout)).map_err(|e| fail(e.to_string()))?;
                Box::new(s)
            }
            AgentAddress::Unix(a) => {
                let s = peer::connect_stream_at(a, "ready", &self.policy)
                    .map_err(|e| fail(e.to_string()))?;
                s.set_write_timeout(Some(timeout)).map_err(|e| fail(e.to_string()))?;
                Box::new(s)
            }
            AgentAddress::Vsock(v) => {
                let cid = v.connect_cid();
                if cid == vsock::CID_ANY {
                    return Err(fail(
                        "VMADDR_CID_ANY cannot be dialled; name a CID or omit it for the host (2)"
                            .into(),
                    ));
                }
                Box::new(
                    vsock::connect_blocking(cid, v.port, timeout)
                        .map_err(|e| fail(format!("connect to CID {cid} port {}: {e}", v.port)))?,
                )
            }
        };
        let frame = proto::encode(&Frame::Control(Response::Ready {
            version: proto::VERSION,
            pid: self.state.pid,
        }));
        stream.write_all(&frame).map_err(|e| fail(format!("write: {e}")))?;
        tracing::info!(address = %ready, pid = self.state.pid, "readiness sent");
        Ok(())
    }

    /// Serve connections until a `Shutdown` request or [`StopHandle::stop`]. Then kill
    /// every process group it started and remove its socket file.
    pub async fn serve(self) -> Result<(), AgentError> {
        let mut stop = self.state.stop.subscribe();
        // Rejected peers are logged rate-limited by the policy; this writes the summary
        // of a flood that has stopped without waiting for the next rejection.
        let mut flush = tokio::time::interval(peer::REJECTION_LOG_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break Ok(()),
                _ = flush.tick() => self.policy.flush_rejection_log(),
                accepted = self.accept() => match accepted {
                    Ok(()) => {}
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => break Err(AgentError::Accept { address: self.config.agent.to_string(), source: e }),
                },
            }
        };
        tracing::info!("shutting down");
        self.state.kill_all();
        self.remove_own_socket();
        result
    }

    /// Accept one connection and spawn its handler.
    async fn accept(&self) -> io::Result<()> {
        match &self.listener {
            AnyListener::Unix(l) => {
                let (stream, cred) = l.accept().await?;
                tracing::debug!(
                    peer_uid = cred.map(|c| c.uid),
                    peer_pid = cred.map(|c| c.pid),
                    "accepted"
                );
                let (rd, wr) = stream.into_split();
                tokio::spawn(handle_connection(rd, wr, self.state.clone()));
            }
            AnyListener::Vsock(l) => {
                let (stream, (cid, port)) = l.accept().await?;
                tracing::debug!(peer_cid = cid, peer_port = port, "accepted on vsock");
                let (rd, wr) = tokio::io::split(stream);
                tokio::spawn(handle_connection(rd, wr, self.state.clone()));
            }
        }
        Ok(())
    }

    fn remove_own_socket(&self) {
        let (Some(path), Some(bound)) = (self.config.agent.as_path(), self.bound_file) else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == bound => match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::debug!(path = %boxsock_core::echo::path(path), "removed own socket")
                }
                Err(e) => {
                    tracing::warn!(path = %boxsock_core::echo::path(path), error = %e, "cannot remove own socket")
                }
            },
            Ok(_) => {
                tracing::debug!(path = %boxsock_core::echo::path(path), "socket file was replaced; leaving it")
            }
            Err(_) => {}
        }
    }
}

/// Check every inherited descriptor of `config` (`--agent-fd`: a listening Unix stream
/// socket; `--ready-fd`: a connected one) without taking them over. The agent's binary
/// calls it first, before anything it does opens a descriptor (its tokio runtime's
/// epoll would take the number of one that was not inherited); [`Agent::bind`] checks
/// again and takes them over.
pub fn check_inherited(config: &AgentConfig) -> Result<(), AgentError> {
    check_distinct(config)?;
    let both = [(&config.agent, "--agent-fd", true), (&config.ready, "--ready-fd", false)];
    for (a, flag, listening) in both {
        if let AgentAddress::Inherited(fd) = a {
            check_socket(*fd, flag, listening)?;
        }
    }
    Ok(())
}

/// One descriptor cannot be both the listener and the ready channel (and would be
/// taken over twice).
fn check_distinct(config: &AgentConfig) -> Result<(), AgentError> {
    match (&config.agent, &config.ready) {
        (AgentAddress::Inherited(a), AgentAddress::Inherited(r)) if a == r => {
            Err(AgentError::Inherited {
                fd: *a,
                flag: "--agent-fd and --ready-fd",
                reason: "one descriptor cannot be both the listener and the ready channel".into(),
            })
        }
        _ => Ok(()),
    }
}

/// Take over inherited descriptor `fd` (named by `flag`) once it is known to be a Unix
/// stream socket that is listening (`listening`) or not ([`check_socket`]).
fn inherited_socket(fd: RawFd, flag: &'static str, listening: bool) -> Result<OwnedFd, AgentError> {
    check_socket(fd, flag, listening)?;
    // SAFETY: `fd` is open (checked), and the agent takes it over here exactly once (its
    // config names each descriptor once, checked in `Agent::bind`); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether inherited descriptor `fd` (named by `flag`) is a Unix stream socket that is
/// listening (`listening`) or not, and mark it close-on-exec. The error names the
/// descriptor and what it is instead.
fn check_socket(fd: RawFd, flag: &'static str, listening: bool) -> Result<(), AgentError> {
    let bad = |reason: String| AgentError::Inherited { fd, flag, reason };
    if fd < 3 {
        return Err(bad("descriptors 0, 1 and 2 are stdio".into()));
    }
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor number writes into the stack value passed; a
    // number that is not open is EBADF, and nothing is borrowed before it is known open.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBADF) => bad("it is not open".into()),
            _ => bad(format!("fstat: {e}")),
        });
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => None,
        libc::S_IFREG => Some("a regular file".to_owned()),
        libc::S_IFDIR => Some("a directory".to_owned()),
        libc::S_IFCHR => Some("a character device".to_owned()),
        libc::S_IFIFO => Some("a pipe".to_owned()),
        libc::S_IFBLK => Some("a block device".to_owned()),
        other => Some(format!(
            "a file of type {other:#o} (an epoll, event or other anonymous descriptor)"
        )),
    };
    if let Some(kind) = kind {
        return Err(bad(format!("it is {kind}, not a socket")));
    }
    // SAFETY: `fd` is open (fstat succeeded); borrowed only for these calls.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let opt = |name: &str, opt: libc::c_int| {
        sockopt_int(borrowed, opt).map_err(|e| bad(format!("{name}: {e}")))
    };
    let domain = opt("SO_DOMAIN", libc::SO_DOMAIN)?;
    if domain != libc::AF_UNIX {
        return Err(bad(format!("it is a socket of address family {domain}, not a Unix socket")));
    }
    let ty = opt("SO_TYPE", libc::SO_TYPE)?;
    if ty != libc::SOCK_STREAM {
        let what = if ty == libc::SOCK_DGRAM { "a datagram" } else { "not a stream" };
        return Err(bad(format!("it is {what} socket (type {ty}), not a stream socket")));
    }
    match (opt("SO_ACCEPTCONN", libc::SO_ACCEPTCONN)? != 0, listening) {
        (true, true) | (false, false) => {}
        (false, true) => {
            return Err(bad("it is a Unix stream socket that is not listening".into()));
        }
        (true, false) => return Err(bad("it is a listening socket, not a connected one".into())),
    }
    // Close-on-exec: nothing the agent was handed reaches a command.
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(|e| bad(format!("F_SETFD: {e}")))?;
    Ok(())
}

/// An integer `SOL_SOCKET` option of `fd`.
fn sockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the stack integer passed.
    let r = unsafe {
        let out = (&mut v as *mut libc::c_int).cast();
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, out, &mut len)
    };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(v) }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    )
}

/// Bind, notify readiness, and serve until shutdown, SIGTERM or SIGINT: the whole
/// life of the `boxsock-agent` process. Must be called inside a tokio runtime.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let agent = Agent::bind(config)?;
    // Install the handlers before notifying: from readiness on, SIGTERM is graceful.
    let stop = agent.stop_handle();
    let signals = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
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
    };
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

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, r: Response) -> io::Result<()> {
    proto::write_frame(wr, &Frame::Control(r)).await
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

/// The answer to a frame that could not be read, or `None` when the peer just went
/// away (nothing to answer).
fn answer_to(e: &ProtoError) -> Option<Response> {
    match e {
        ProtoError::Closed => None,
        ProtoError::Io(_) => None,
        e => Some(error(ErrorCode::BadFrame, e.to_string())),
    }
}

async fn handle_connection<R, W>(mut rd: R, mut wr: W, state: Arc<State>)
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

fn describe(f: &Frame<Request>) -> String {
    match f {
        Frame::Control(Request::Hello { .. }) => "a second hello".into(),
        Frame::Control(r) => format!("{r:?}"),
        Frame::Stdout(_) => "a stdout frame".into(),
        Frame::Stderr(_) => "a stderr frame".into(),
        Frame::Stdin(_) => "a stdin frame".into(),
        Frame::StdinEof => "a stdin-eof frame".into(),
    }
}

/// When an exec ends, forgets its process group if nothing is left in it. Processes
/// the command left running in the background keep the group alive; it stays in the
/// set, so a shutdown kills them.
struct GroupGuard<'a> {
    state: &'a State,
    pgid: i32,
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
fn kill_exec(master: Option<&pty::PtyMaster>, pgid: i32) {
    if let Some(fg) = master.and_then(|m| m.foreground()).filter(|&fg| fg != pgid) {
        kill_group(fg);
    }
    kill_group(pgid);
}

fn group_alive(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// What the connection did while a command ran.
enum ConnEvent {
    /// The client closed the connection.
    Gone,
    /// The client sent something invalid; answer this and stop.
    Bad(Response),
}

/// One exec request, as received.
struct ExecSpec {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    want_stdin: bool,
    cwd: Option<String>,
    /// With a pty of this initial size.
    tty: Option<WinSize>,
}

/// The error frame for a command that could not be started, with its kind: not found
/// (ENOENT: the program or the working directory), permission denied (EACCES,
/// ENOEXEC), or another reason.
fn spawn_error(program: &str, cwd: Option<&str>, e: &io::Error) -> Response {
    let code = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => ErrorCode::NotFound,
        (io::ErrorKind::PermissionDenied, _) | (_, Some(libc::ENOEXEC | libc::EACCES)) => {
            ErrorCode::PermissionDenied
        }
        _ => ErrorCode::Spawn,
    };
    use boxsock_core::echo::echo;
    let at = cwd.map(|d| format!(" in {}", echo(d))).unwrap_or_default();
    error(code, format!("cannot run {}{at}: {e}", echo(program)))
}

/// Where stdin frames go.
enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(Arc<pty::PtyMaster>),
}

async fn exec<R, W>(rd: &mut R, wr: &mut W, spec: ExecSpec, state: &Arc<State>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ExecSpec { argv, env, want_stdin, cwd, tty } = spec;
    let Some(program) = argv.first() else {
        return send(wr, error(ErrorCode::BadRequest, "exec with an empty argv")).await;
    };
    if let Some(d) = cwd.as_deref().filter(|d| !d.starts_with('/')) {
        let msg = format!("working directory {} is not absolute", boxsock_core::echo::echo(d));
        return send(wr, error(ErrorCode::BadRequest, msg)).await;
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..]).envs(env.iter().map(|(k, v)| (k, v))).kill_on_drop(true);
    if let Some(d) = &cwd {
        cmd.current_dir(d);
    }
    let master = match tty {
        Some(size) => {
            let pty = match pty::open(size) {
                Ok(p) => p,
                Err(e) => {
                    return send(wr, error(ErrorCode::Internal, format!("cannot open a pty: {e}")))
                        .await;
                }
            };
            let [i, o, e] = pty.stdio;
            cmd.stdin(i).stdout(o).stderr(e);
            // SAFETY: the closure only makes async-signal-safe system calls (setsid,
            // ioctl, close_range) in the forked child before exec.
            unsafe {
                cmd.pre_exec(pty::become_session_leader);
                // Its stdio is the pty slave, nothing else (see `main`: the agent's
                // inherited descriptors are close-on-exec already; this holds for an
                // embedder of `serve` too).
                cmd.pre_exec(|| boxsock_core::fds::cloexec_except(&[]));
            }
            if !env.iter().any(|(k, _)| k == "TERM") {
                cmd.env("TERM", "xterm");
            }
            Some(Arc::new(pty.master))
        }
        None => {
            cmd.stdin(if want_stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            None
        }
    };
    let spawned = cmd.spawn();
    // Close our copies of the pty slave: the master reads EOF when the command's go.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(program = %program, error = %e, "cannot spawn");
            return send(wr, spawn_error(program, cwd.as_deref(), &e)).await;
        }
    };
    let Some(pid) = child.id() else {
        return send(
            wr,
            error(ErrorCode::Internal, format!("{program:?} ended before it had a pid")),
        )
        .await;
    };
    let pgid = pid as i32;
    state.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(pgid);
    let _guard = GroupGuard { state, pgid };
    tracing::info!(pid, program = %program, args = argv.len() - 1, tty = tty.is_some(), "exec started");

    // Output frames go through one channel so that each stream keeps its order and
    // `Exit` comes after every output frame.
    let (tx, mut frames) = mpsc::channel::<Frame<Response>>(32);
    let mut pumps = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        pumps.spawn(pump(out, tx.clone(), Frame::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        pumps.spawn(pump(err, tx.clone(), Frame::Stderr));
    }
    if let Some(m) = &master {
        pumps.spawn(pump_pty(m.clone(), tx.clone()));
    }
    let mut child_stdin = match &master {
        Some(m) if want_stdin => Some(Input::Pty(m.clone())),
        _ => child.stdin.take().map(Input::Pipe),
    };

    let conn = async {
        // Feed stdin frames to the command; keep reading after EOF (or when no stdin
        // was asked for) to notice the client going away.
        loop {
            match proto::read_frame::<Request, _>(rd).await {
                Ok(Frame::Stdin(b)) if want_stdin => {
                    let written = match child_stdin.as_mut() {
                        Some(Input::Pipe(p)) => p.write_all(&b).await,
                        Some(Input::Pty(m)) => m.write_all(&b).await,
                        None => Ok(()),
                    };
                    if let Err(e) = written {
                        // The command closed its stdin; drop the rest.
                        tracing::debug!(pid, error = %e, "command stdin closed");
                        child_stdin = None;
                    }
                }
                // A terminal stays open: end-of-input there is the user's Ctrl-D.
                Ok(Frame::StdinEof) if want_stdin => {
                    if matches!(child_stdin, Some(Input::Pipe(_))) {
                        child_stdin = None;
                    }
                }
                Ok(Frame::Control(Request::Signal { signal })) => {
                    let Ok(sig) = nix::sys::signal::Signal::try_from(signal) else {
                        return ConnEvent::Bad(error(
                            ErrorCode::BadRequest,
                            format!("signal {signal} is not a signal number of this system"),
                        ));
                    };
                    // With a tty, the signal goes where the terminal would send it.
                    let target = master.as_ref().and_then(|m| m.foreground()).unwrap_or(pgid);
                    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(target), sig) {
                        Ok(()) => {
                            tracing::debug!(pid, pgid = target, signal = %sig, "signal delivered")
                        }
                        Err(e) => {
                            tracing::debug!(pid, pgid = target, signal = %sig, error = %e, "signal not delivered")
                        }
                    }
                }
                Ok(Frame::Control(Request::Resize { rows, cols })) => {
                    if let Some(m) = &master {
                        if let Err(e) = m.resize(WinSize { rows, cols }) {
                            tracing::debug!(pid, rows, cols, error = %e, "resize failed");
                        }
                    }
                }
                Ok(other) => {
                    let msg = format!("unexpected {} while a command runs", describe(&other));
                    return ConnEvent::Bad(error(ErrorCode::BadRequest, msg));
                }
                Err(e) => {
                    return match answer_to(&e) {
                        Some(a) => ConnEvent::Bad(a),
                        None => ConnEvent::Gone,
                    };
                }
            }
        }
    };

    let mut writer = Box::pin(async {
        while let Some(f) = frames.recv().await {
            proto::write_frame(wr, &f).await?;
        }
        io::Result::Ok(())
    });

    let main = async {
        tokio::select! {
            status = child.wait() => Ok(status),
            ev = conn => Err(ev),
        }
    };
    // Drive the writer while waiting for the command (or the connection) to end.
    let outcome = tokio::select! {
        o = main => o,
        w = &mut writer => {
            // The writer only ends early on a write error: the client is gone.
            tracing::info!(pid, error = ?w.err(), "client went away; killing the command");
            kill_exec(master.as_deref(), pgid);
            let _ = child.wait().await;
            return Ok(());
        }
    };

    match outcome {
        Ok(status) => {
            let status = status?;
            let signal = status.signal();
            let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
            // Let the pumps reach EOF (they may be blocked on a full channel, so
            // keep writing meanwhile), but not longer than the grace period.
            drop(tx);
            let drain = async {
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
            };
            let mut writer_done = false;
            tokio::select! {
                _ = drain => {}
                w = &mut writer => { w?; writer_done = true; }
            }
            // Every pump is finished or aborted, so every sender is gone: the writer
            // flushes what is queued and ends.
            pumps.shutdown().await;
            if !writer_done {
                (&mut writer).await?;
            }
            drop(writer);
            tracing::info!(pid, code, signal, "exec ended");
            send(wr, Response::Exit { code, signal }).await
        }
        Err(ConnEvent::Gone) => {
            tracing::info!(pid, "client went away; killing the command");
            kill_exec(master.as_deref(), pgid);
            let _ = child.wait().await;
            Ok(())
        }
        Err(ConnEvent::Bad(answer)) => {
            tracing::warn!(pid, answer = ?answer, "bad frame during exec; killing the command");
            kill_exec(master.as_deref(), pgid);
            let _ = child.wait().await;
            pumps.shutdown().await;
            drop(tx);
            (&mut writer).await?;
            drop(writer);
            send(wr, answer).await
        }
    }
}

async fn pump_pty(from: Arc<pty::PtyMaster>, tx: mpsc::Sender<Frame<Response>>) {
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
    R: tokio::io::AsyncRead + Unpin,
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
