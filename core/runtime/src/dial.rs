//! Dialling a box's agent: re-`ensure` the binding, then connect through the verified
//! socket directory (or the strategy's abstract name), checking the listener is the
//! box's recorded process.

use std::os::fd::AsFd;

use boxsock_core::catalogue;

use crate::agent_client::AgentClient;
use crate::sockets::verified_dir;
use crate::state::BoxState;
use crate::store::BoxRecord;
use crate::{Inner, RuntimeError, home};

impl Inner {
    pub(crate) async fn connect_agent(&self, id_or_name: &str) -> Result<(BoxRecord, AgentClient, String), RuntimeError> {
        self.writable("dial a box")?;
        let rec = self.record(id_or_name)?;
        if rec.state != BoxState::Running {
            return Err(RuntimeError::NotRunning { id: rec.id, state: rec.state });
        }
        home::check_box_dirs(self.home_fd.as_fd(), &self.layout, &rec.id)?;
        match self.dial_agent(&rec) {
            Ok((client, address)) => Ok((rec, client, address)),
            Err(e) => {
                // A refused connection to a box recorded as running whose process is
                // gone (no health monitor was watching): record the truth and say so.
                if let Some(h) = self.handle_for(&rec) {
                    if !h.is_alive() {
                        self.on_exit(&rec.id, &h).await;
                        let state = self.record(rec.id.as_str()).map(|r| r.state).unwrap_or(BoxState::Stopped);
                        return Err(RuntimeError::NotRunning { id: rec.id, state });
                    }
                }
                Err(e)
            }
        }
    }

    /// Dial a box's agent through its strategy, whatever its recorded state. Runs
    /// `ensure` first: a binding removed behind our back (a /tmp cleaner) heals here.
    pub(crate) fn dial_agent(&self, rec: &BoxRecord) -> Result<(AgentClient, String), RuntimeError> {
        let strategy = self.ensure_binding(self.strategy(&rec.config.strategy)?, &rec.id)?;
        let file = catalogue::AGENT.file_name();
        let addr = strategy.address(&self.layout, &rec.id, &file)?;
        let address = addr.display_string();
        // The listener must be the box's recorded process (the agent, or the VMM that
        // maps the agent's vsock port), of an allowed uid.
        let policy = match rec.process {
            Some(p) => strategy.peer_policy().with_pid(p.pid),
            None => strategy.peer_policy(),
        };
        let std = match verified_dir(&*strategy, &self.layout, &rec.id, &file)? {
            Some(dir) => dir.connect_stream(&file, &policy)?,
            None => boxsock_core::peer::connect_stream_at(&addr, &file, &policy)?,
        };
        let client = AgentClient::connect(std)
            .map_err(|source| RuntimeError::Agent { id: rec.id.clone(), address: address.clone(), source })?;
        Ok((client, address))
    }
}
