//! The checks. Each drives the backend under test through a real runtime (see
//! [`Kit`]) and panics, naming the backend, the box and what was expected, when the
//! backend does not hold up its side of the [`Backend`](boxsock_core::Backend) contract.

use std::time::{Duration, Instant};

use boxsock_core::BoxId;
use boxsock_core::backend::AddressNeeds;
use boxsock_runtime::RuntimeError;
use boxsock_runtime::state::BoxState;
use nix::sys::signal::Signal;

use crate::Outcome;
use crate::kit::{ABSTRACT_STRATEGY, Kit, PATH_STRATEGY};
use crate::procs;

/// After SIGKILL of a box's process, the runtime has this long to record it `Stopped`.
const OBSERVE_EXIT: Duration = Duration::from_secs(10);
/// What the runtime waits after SIGKILL in `stop` (`KILL_WAIT`), plus slack for a busy
/// machine.
const KILL_SLACK: Duration = Duration::from_secs(8);

/// The box's process, alive, as `inspect` reports it: (pid, start time).
fn live_process(kit: &Kit, id: &BoxId) -> (i32, u64) {
    let info = kit.inspect(id);
    match (info.pid, info.start_time) {
        (Some(pid), Some(start)) if info.alive => (pid, start),
        _ => kit.fail(format!(
            "box {id} is {} but the runtime has no live process for it (pid {:?}, alive {})",
            info.state, info.pid, info.alive
        )),
    }
}

/// Launch and readiness: `Backend::launch` starts a process that binds `agent` and sends
/// `Ready` on `ready` from the pid it returned (the runtime admits readiness only from
/// that pid, and dials the agent only when its listener is that pid), the box is
/// `Running`, its process leads its own session (`Launched::process` is "a session
/// leader": the runtime signals its group) and `ping` answers.
pub fn launch_and_readiness(kit: &Kit) -> Outcome {
    let (rec, took) = kit.started(PATH_STRATEGY);
    let id = &rec.id;
    if rec.state != BoxState::Running {
        kit.fail(format!("box {id} started but is recorded {}", rec.state));
    }
    let (pid, _) = live_process(kit, id);
    match procs::session_of(pid) {
        Some(sid) if sid == pid => {}
        other => kit.fail(format!("box {id}: its process {pid} does not lead its own session (session {other:?}); Launched::process must be a session leader")),
    }
    if let Err(e) = kit.block_on(kit.runtime().ping(id.as_str())) {
        kit.fail(format!("box {id} is running but its agent does not answer ping: {e}"));
    }
    eprintln!("backend {}: box ready in {took:.2?}", kit.backend());
    Outcome::Passed
}

/// Exit and kill: `stop` (Shutdown, then SIGTERM, then SIGKILL) ends the box within
/// its bounds whatever the process does, the box is `Stopped` with no process, its
/// process is gone, and no process the box started is left alive.
pub fn stop_is_bounded_and_leaves_nothing(kit: &Kit) -> Outcome {
    let (rec, _) = kit.started(PATH_STRATEGY);
    let id = &rec.id;
    let (pid, start) = live_process(kit, id);
    let timeout = kit.target.stop_timeout;
    let t0 = Instant::now();
    let stopped = kit
        .block_on(kit.runtime().stop(id.as_str(), Some(timeout)))
        .unwrap_or_else(|e| kit.fail(format!("stop {id}: {e}")));
    let took = t0.elapsed();
    let bound = timeout * 2 + KILL_SLACK;
    if took > bound {
        kit.fail(format!(
            "stop of box {id} took {took:.2?}, more than 2 × {timeout:?} + {KILL_SLACK:?}"
        ));
    }
    if stopped.state != BoxState::Stopped || stopped.process.is_some() {
        kit.fail(format!(
            "box {id} after stop is {} with process {:?}; expected stopped without one",
            stopped.state, stopped.process
        ));
    }
    if procs::is_alive(pid, start) {
        kit.fail(format!("box {id} is recorded stopped but its process {pid} is alive"));
    }
    kit.assert_no_strays(&format!("after stop of box {id}"));
    eprintln!("backend {}: stop took {took:.2?}", kit.backend());
    Outcome::Passed
}

/// A box process killed with SIGKILL (a crashed VMM) is observed as exited: the runtime
/// records the box `Stopped` with exit code 137, and nothing the box started stays
/// alive (its companions, and children of its process).
pub fn killed_box_is_observed_exited(kit: &Kit) -> Outcome {
    let (rec, _) = kit.started(PATH_STRATEGY);
    let id = &rec.id;
    let (pid, start) = live_process(kit, id);
    let handle = match kit.runtime().process(id.as_str()) {
        Ok(Some(h)) => h,
        other => kit.fail(format!("box {id}: the runtime holds no process handle ({other:?})")),
    };
    if let Err(e) = handle.signal(Signal::SIGKILL) {
        kit.fail(format!("box {id}: cannot SIGKILL its process {pid}: {e}"));
    }
    if !kit.wait_state(id, BoxState::Stopped, OBSERVE_EXIT) {
        kit.fail(format!(
            "box {id}: its process {pid} was killed but the box is still {} after {OBSERVE_EXIT:?}",
            kit.record(id).state
        ));
    }
    let after = kit.record(id);
    if after.exit_code != Some(128 + libc::SIGKILL) {
        kit.fail(format!(
            "box {id}: killed with SIGKILL, recorded exit code {:?}, expected {}",
            after.exit_code,
            128 + libc::SIGKILL
        ));
    }
    if procs::is_alive(pid, start) {
        kit.fail(format!("box {id}: its process {pid} is alive after SIGKILL"));
    }
    kit.assert_no_strays(&format!("after the process of box {id} was killed"));
    Outcome::Passed
}

/// Log file: the box's output (console, the agent's log) reaches
/// `LaunchSpec::log_file`, the file `inspect` reports as the box log, by the time the
/// box is ready; and it is still there after stop.
pub fn log_file_receives_output(kit: &Kit) -> Outcome {
    let (rec, _) = kit.started(PATH_STRATEGY);
    let id = &rec.id;
    let info = kit.inspect(id);
    let expected = boxsock_core::BoxLayout::new(&kit.home).log_file(id);
    if std::path::Path::new(&info.log) != expected {
        kit.fail(format!(
            "box {id}: inspect reports log {} but the box log is {}",
            info.log,
            expected.display()
        ));
    }
    let size = |p: &std::path::Path| {
        std::fs::symlink_metadata(p).ok().filter(|m| m.file_type().is_file()).map(|m| m.len())
    };
    // Output may trail readiness a little (a guest console is flushed by the VMM).
    let deadline = Instant::now() + Duration::from_secs(5);
    while size(&expected).unwrap_or(0) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    match size(&expected) {
        Some(n) if n > 0 => {}
        Some(_) => kit.fail(format!("box {id} is ready but its log {} is empty: the box's output does not reach LaunchSpec::log_file", expected.display())),
        None => kit.fail(format!("box {id} is ready but its log {} is not a regular file", expected.display())),
    }
    kit.block_on(kit.runtime().stop(id.as_str(), None))
        .unwrap_or_else(|e| kit.fail(format!("stop {id}: {e}")));
    if size(&expected).unwrap_or(0) == 0 {
        kit.fail(format!("box {id}: its log {} is gone or empty after stop", expected.display()));
    }
    Outcome::Passed
}

/// Address needs: a [`AddressNeeds::PathOnly`] backend is refused an abstract strategy
/// at create, with an error naming both and nothing created; a
/// [`AddressNeeds::PathOrAbstract`] backend runs a box with abstract addresses (start,
/// ping, stop leave nothing behind).
pub fn address_needs_are_honoured(kit: &Kit) -> Outcome {
    let backend =
        kit.runtime().backend(kit.backend()).unwrap_or_else(|e| kit.fail(format!("build: {e}")));
    match backend.address_needs() {
        AddressNeeds::PathOnly => match kit.create(ABSTRACT_STRATEGY) {
            Ok(rec) => kit.fail(format!("a path-only backend was given box {} with strategy {ABSTRACT_STRATEGY}", rec.id)),
            Err(e @ RuntimeError::Incompatible { .. }) => {
                let msg = e.to_string();
                if !msg.contains(kit.backend()) || !msg.contains(ABSTRACT_STRATEGY) {
                    kit.fail(format!("the refusal does not name backend and strategy: {msg}"));
                }
                let listing = kit.runtime().list().unwrap_or_else(|e| kit.fail(format!("list: {e}")));
                if !listing.boxes.is_empty() {
                    kit.fail(format!("a refused create left {} box(es)", listing.boxes.len()));
                }
                Outcome::Passed
            }
            Err(e) => kit.fail(format!("a path-only backend with strategy {ABSTRACT_STRATEGY}: expected RuntimeError::Incompatible, got {e:?}")),
        },
        AddressNeeds::PathOrAbstract => {
            if !cfg!(target_os = "linux") {
                return Outcome::Skipped("abstract addresses exist on Linux only".into());
            }
            let (rec, _) = kit.started(ABSTRACT_STRATEGY);
            let id = &rec.id;
            if let Err(e) = kit.block_on(kit.runtime().ping(id.as_str())) {
                kit.fail(format!("box {id} with abstract addresses is running but its agent does not answer ping: {e}"));
            }
            kit.block_on(kit.runtime().stop(id.as_str(), None)).unwrap_or_else(|e| kit.fail(format!("stop {id}: {e}")));
            kit.assert_no_strays(&format!("after stop of box {id} (abstract addresses)"));
            Outcome::Passed
        }
    }
}

/// The companions `inspect` reports, each as (pid, start time); fails when one is dead
/// while its box runs.
fn live_companions(kit: &Kit, id: &BoxId) -> Vec<(i32, u64)> {
    let info = kit.inspect(id);
    for c in &info.companions {
        if !c.alive {
            kit.fail(format!("box {id} is running but its companion {} is not alive", c.pid));
        }
    }
    info.companions.iter().map(|c| (c.pid, c.start_time)).collect()
}

fn assert_companions_gone(kit: &Kit, id: &BoxId, companions: &[(i32, u64)], when: &str) {
    let alive: Vec<i32> =
        companions.iter().filter(|(p, s)| procs::is_alive(*p, *s)).map(|(p, _)| *p).collect();
    if !alive.is_empty() {
        kit.fail(format!("{when}, companions of box {id} are alive: {alive:?}"));
    }
    kit.assert_no_strays(when);
}

/// Companions reaped: every `Launched::companions` pid (as recorded, shown by
/// `inspect`) is gone, and nothing they started is left alive, after `stop`, after
/// `remove --force` of a running box, and after the box process dies. Skipped when the
/// backend launched no companions for the target's boxes (the host backend; libkrun
/// without a network).
pub fn companions_reaped(kit: &Kit) -> Outcome {
    // 1. stop
    let (rec, _) = kit.started(PATH_STRATEGY);
    let id = rec.id.clone();
    let companions = live_companions(kit, &id);
    if companions.is_empty() {
        return Outcome::Skipped(format!(
            "the backend launched no companions (network: {})",
            kit.target.network
        ));
    }
    kit.block_on(kit.runtime().stop(id.as_str(), None))
        .unwrap_or_else(|e| kit.fail(format!("stop {id}: {e}")));
    assert_companions_gone(kit, &id, &companions, &format!("after stop of box {id}"));

    // 2. remove --force of a running box
    let _ = kit.start(&id);
    let companions = live_companions(kit, &id);
    kit.block_on(kit.runtime().remove(id.as_str(), true))
        .unwrap_or_else(|e| kit.fail(format!("remove --force {id}: {e}")));
    assert_companions_gone(kit, &id, &companions, &format!("after remove --force of box {id}"));

    // 3. the box process dies
    let (rec, _) = kit.started(PATH_STRATEGY);
    let id = rec.id;
    let companions = live_companions(kit, &id);
    match kit.runtime().process(id.as_str()) {
        Ok(Some(h)) => {
            if let Err(e) = h.signal(Signal::SIGKILL) {
                kit.fail(format!("box {id}: cannot SIGKILL its process: {e}"));
            }
        }
        other => kit.fail(format!("box {id}: the runtime holds no process handle ({other:?})")),
    }
    if !kit.wait_state(&id, BoxState::Stopped, OBSERVE_EXIT) {
        kit.fail(format!(
            "box {id}: its process was killed but the box is still {} after {OBSERVE_EXIT:?}",
            kit.record(&id).state
        ));
    }
    assert_companions_gone(kit, &id, &companions, &format!("after the process of box {id} died"));
    Outcome::Passed
}
