//! The hidden lifeline verb: the guardian `run --rm` starts (see `crate::lifeline`),
//! once its client is gone without disarming it.

use crate::args::Global;
use crate::home::Writes;
use crate::{Failure, exit, lifeline};

/// Remove the box of a `run --rm` client that died.
pub(crate) async fn lifeline(
    g: &Global,
    box_id: String,
    owner_pid: i32,
    owner_start: u64,
) -> Result<u8, Failure> {
    // Only reached once the client is gone without disarming (see `main`).
    let id = boxsock::BoxId::parse(&box_id).map_err(|e| {
        let echoed = boxsock::boxsock_core::echo::echo(&box_id);
        Failure(format!("box id {echoed}: {e}"), exit::FAILED)
    })?;
    let owner = boxsock::ProcessIdentity { pid: owner_pid, start_time: owner_start };
    // The pipe ends when the client's descriptors are closed, a moment before the
    // kernel has the process exited: wait for that (its pidfd), or the client
    // would still count as alive.
    if !boxsock::ProcessHandle::open(owner).wait_gone(lifeline::CLIENT_EXIT_WAIT).await {
        let waited = lifeline::CLIENT_EXIT_WAIT;
        return Err(Failure(
            format!(
                "box {id}: the `run --rm` client (pid {owner_pid}) closed its lifeline \
                 but is still running {waited:?} later; the box is left to it"
            ),
            exit::FAILED,
        ));
    }
    // Its own box only: other abandoned boxes are the next writing command's.
    let rt = g.open(Writes::No).await?;
    match rt.remove_owned(&id, owner).await {
        Ok(boxsock::OwnedRemoval::OwnerAlive) => Err(Failure(
            format!(
                "box {id}: its `run --rm` client (pid {owner_pid}) still runs; \
                 the box is left to it"
            ),
            exit::FAILED,
        )),
        Ok(done) => {
            tracing::info!(box_id = %id, outcome = ?done, "run --rm client gone");
            Ok(0)
        }
        Err(e) => Err(Failure(
            format!(
                "removing box {id} after its `run --rm` client died: {e} \
                 (the next writing command removes it)"
            ),
            exit::FAILED,
        )),
    }
}
