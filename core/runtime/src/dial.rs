//! Dialling a box's agent: through the box's held binding (re-checked cheaply at each
//! dial), or a freshly opened one, checking the listener is the box's recorded process.
//! The blocking part (the store, `ensure`, which may wait on a
//! strategy's lock, and the connect) runs on tokio's blocking pool, never on the
//! executor: one box's slow `ensure` must not stall another box's exec.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use boxsock_core::boxbinding::Opening;
use boxsock_core::catalogue;
use boxsock_core::error::BindingError;

use crate::agent_client::AgentClient;
use crate::state::BoxState;
use crate::store::BoxRecord;
use crate::{Inner, RuntimeError, home};

impl Inner {
    pub(crate) async fn connect_agent(
        self: &Arc<Self>,
        id_or_name: &str,
    ) -> Result<(BoxRecord, AgentClient, String), RuntimeError> {
        self.writable("dial a box")?;
        let name = id_or_name.to_owned();
        let (rec, dialled) = self
            .blocking(move |inner| {
                let rec = inner.record(&name)?;
                if rec.state != BoxState::Running {
                    return Err(RuntimeError::NotRunning { id: rec.id, state: rec.state });
                }
                home::check_box_dirs(inner.home_fd.as_fd(), &inner.layout, &rec.id)?;
                let dialled = inner.dial_agent_blocking(&rec);
                Ok((rec, dialled))
            })
            .await?;
        match dialled.and_then(|(std, address)| Self::client(&rec, std, address)) {
            Ok((client, address)) => Ok((rec, client, address)),
            Err(e) => {
                // A refused connection to a box recorded as running whose process is
                // gone (no health monitor was watching): record the truth and say so.
                if let Some(h) = self.handle_for(&rec) {
                    if !h.is_alive() {
                        self.on_exit(&rec.id, &h).await;
                        let id = rec.id.clone();
                        let state = self
                            .blocking(move |inner| inner.record(id.as_str()))
                            .await
                            .map(|r| r.state)
                            .unwrap_or(BoxState::Stopped);
                        return Err(RuntimeError::NotRunning { id: rec.id, state });
                    }
                }
                Err(e)
            }
        }
    }

    /// Dial a box's agent through its strategy, whatever its recorded state. Runs
    /// `ensure` first: a binding removed behind our back (a /tmp cleaner) heals here.
    pub(crate) async fn dial_agent(
        self: &Arc<Self>,
        rec: &BoxRecord,
    ) -> Result<(AgentClient, String), RuntimeError> {
        let r = rec.clone();
        let (std, address) = self.blocking(move |inner| inner.dial_agent_blocking(&r)).await?;
        Self::client(rec, std, address)
    }

    fn client(
        rec: &BoxRecord,
        std: UnixStream,
        address: String,
    ) -> Result<(AgentClient, String), RuntimeError> {
        let client = AgentClient::connect(std).map_err(|source| RuntimeError::Agent {
            id: rec.id.clone(),
            address: address.clone(),
            source,
        })?;
        Ok((client, address))
    }

    /// The blocking part of a dial: connect through the binding held for the box's
    /// process (its cheap re-check first: nothing is dialled through a directory its
    /// link no longer names), else open the box (`ensure`: a binding removed behind
    /// our back, by a /tmp cleaner, heals here) and hold what was opened. Returns the
    /// connected socket and the agent's displayed address.
    fn dial_agent_blocking(&self, rec: &BoxRecord) -> Result<(UnixStream, String), RuntimeError> {
        // The listener must be the box's recorded process (the agent, or the VMM that
        // maps the agent's vsock port), of an allowed uid.
        let pid = rec.process.map(|p| p.pid);
        if let Some(held) = self.held_binding(&rec.id, pid) {
            match held.connect(&catalogue::AGENT, pid) {
                Ok(s) => return Ok((s, held.address(&catalogue::AGENT)?.display_string())),
                Err(e @ BindingError::PeerRejected { .. }) => return Err(e.into()),
                // The name changed under the held directory (a cleaner, a swapped link),
                // or the listener is gone: the held binding is not used again. The box
                // is opened afresh, through every check of a first open.
                Err(e) => {
                    tracing::debug!(
                        box_id = %rec.id,
                        error = %e,
                        "held binding refused at use; opening the box again"
                    );
                    self.drop_binding(&rec.id);
                }
            }
        }
        let strategy = self.strategy(&rec.config.strategy)?;
        let binding = self.open_binding(strategy, &rec.id, Opening::Use, &[catalogue::AGENT])?;
        // One address per dial: the error text and the connect use this one.
        let address = binding.address(&catalogue::AGENT)?.display_string();
        let std = binding.connect(&catalogue::AGENT, pid)?;
        if rec.state == BoxState::Running {
            self.hold_binding(&rec.id, pid, binding);
        }
        Ok((std, address))
    }
}
