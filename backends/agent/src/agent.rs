//! The agent's listener (bound by itself, inherited, or a vsock port), its readiness
//! notification, and the accept loop.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxsock_core::SocketAddress;
use boxsock_core::error::BindingError;
use boxsock_core::peer::{self, AsyncListener, Listener, PeerPolicy};
use boxsock_core::proto::{self, Frame, Response};
use std::collections::HashSet;
use tokio::sync::watch;

use crate::config::{AgentAddress, AgentConfig};
use crate::conn::handle_connection;
use crate::error::AgentError;
use crate::groups::{State, StopHandle};
use crate::inherited::{check_distinct, inherited_socket};
use crate::vsock::{self, VsockAddress};

/// The policy of the agent's Unix listener: the allowed uids, or none (then an abstract
/// address, which the filesystem does not protect, is warned about).
fn peer_policy(allow_uids: &[u32], address: &SocketAddress) -> PeerPolicy {
    if !allow_uids.is_empty() {
        return PeerPolicy::allow_uids(allow_uids.iter().copied());
    }
    if matches!(address, SocketAddress::Abstract(_)) {
        tracing::warn!(
            address = %address,
            "abstract agent address without --allow-uid: any local process in this \
             network namespace can reach it"
        );
    }
    PeerPolicy::unchecked()
}

/// The listening socket: a Unix one (with its peer policy) or a vsock port.
#[derive(Debug)]
enum AnyListener {
    Unix(AsyncListener),
    Vsock(vsock::VsockListener),
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
        match &config.agent {
            AgentAddress::Unix(a) => Self::bind_unix(a.clone(), config, ready_channel, state),
            AgentAddress::Inherited(fd) => Self::adopt(*fd, config, ready_channel, state),
            AgentAddress::Vsock(v) => Self::bind_vsock(*v, config, ready_channel, state),
        }
    }

    /// Listen on the vsock port of `v` (no peer credentials there: unchecked).
    fn bind_vsock(
        v: VsockAddress,
        config: AgentConfig,
        ready_channel: Mutex<Option<UnixStream>>,
        state: Arc<State>,
    ) -> Result<Agent, AgentError> {
        let listener = vsock::VsockListener::bind(v.listen_cid(), v.port)
            .map_err(|source| AgentError::VsockBind { uri: v.to_uri(), source })?;
        tracing::info!(address = %v, cid = v.listen_cid(), port = v.port, "listening on vsock");
        let listener = AnyListener::Vsock(listener);
        let policy = PeerPolicy::unchecked();
        let bound_file = None;
        Ok(Agent { listener, config, policy, bound_file, ready_channel, state })
    }

    /// Bind `unix_agent` itself (replacing a stale socket file) and listen on it.
    fn bind_unix(
        unix_agent: SocketAddress,
        config: AgentConfig,
        ready_channel: Mutex<Option<UnixStream>>,
        state: Arc<State>,
    ) -> Result<Agent, AgentError> {
        let policy = peer_policy(&config.allow_uids, &unix_agent);
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
        let policy = peer_policy(&config.allow_uids, &address);
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
        let mut stream = self.ready_stream().map_err(fail)?;
        let frame = proto::encode(&Frame::Control(Response::Ready {
            version: proto::VERSION,
            pid: self.state.pid,
        }));
        stream.write_all(&frame).map_err(|e| fail(format!("write: {e}")))?;
        tracing::info!(address = %ready, pid = self.state.pid, "readiness sent");
        Ok(())
    }

    /// A stream to the ready address, with a write timeout; or why there is none.
    fn ready_stream(&self) -> Result<Box<dyn Write>, String> {
        let timeout = Duration::from_secs(10);
        match &self.config.ready {
            AgentAddress::Inherited(_) => {
                let s = self.take_ready_channel()?;
                s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                Ok(Box::new(s))
            }
            AgentAddress::Unix(a) => {
                let s =
                    peer::connect_stream_at(a, "ready", &self.policy).map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                Ok(Box::new(s))
            }
            AgentAddress::Vsock(v) => {
                let cid = v.connect_cid();
                if cid == vsock::CID_ANY {
                    return Err("VMADDR_CID_ANY cannot be dialled; name a CID or omit it for the \
                                host (2)"
                        .into());
                }
                let s = vsock::connect_blocking(cid, v.port, timeout)
                    .map_err(|e| format!("connect to CID {cid} port {}: {e}", v.port))?;
                Ok(Box::new(s))
            }
        }
    }

    /// The inherited ready channel (usable once), with the same peer check as a socket
    /// dialled by name: its other end must be held by an allowed uid (the runtime).
    fn take_ready_channel(&self) -> Result<UnixStream, String> {
        let s = self.ready_channel.lock().unwrap_or_else(|p| p.into_inner()).take();
        let s = s.ok_or("the ready channel was already used")?;
        if let Some(allowed) = self.policy.allowed_uids() {
            let cred = peer::peer_cred(s.as_fd()).map_err(|e| format!("peer credentials: {e}"))?;
            if !allowed.contains(&cred.uid) {
                let (uid, pid) = (cred.uid, cred.pid);
                return Err(format!("its peer is uid {uid} (pid {pid}), not one of {allowed:?}"));
            }
        }
        Ok(s)
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

    pub(crate) fn remove_own_socket(&self) {
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
