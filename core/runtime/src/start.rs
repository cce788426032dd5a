//! `start`: bind `ready`, launch through the backend, record the process and its
//! companions, wait for the agent's `Ready` frame; on failure, kill what was launched.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use boxsock_core::backend::{Availability, Backend, BoxSockets, LaunchSpec, Readiness};
use boxsock_core::boxbinding::{BoxBinding, Opening};
use boxsock_core::catalogue::{self, Binder, SocketSpec};
use boxsock_core::error::BindingError;
use boxsock_core::peer::{AsyncListener, Listener};

use crate::cleanup::{self, ReadyCleanup};
use crate::kill::{self, KILL_WAIT};
use crate::process::{ProcessHandle, ProcessIdentity};
use crate::sockets::{check_addresses, socket_specs};
use crate::state::BoxState;
use crate::store::BoxRecord;
use crate::{Inner, RuntimeError, agent_client, crash, home, lock};

/// Lines of the box log quoted in start errors.
const LOG_TAIL_LINES: usize = 20;

impl Inner {
    pub(crate) async fn start_locked(
        self: &Arc<Self>,
        rec: BoxRecord,
    ) -> Result<BoxRecord, RuntimeError> {
        let id = rec.id.clone();
        // The checks, `ensure` (which may wait on the strategy's lock) and the store run
        // on the blocking pool, off the executor.
        let r = rec.clone();
        let (strategy, backend, specs) = self
            .blocking(move |i| {
                let id = &r.id;
                // Not only at create: somebody may have changed them since.
                home::check_box_dirs(i.home_fd.as_fd(), &i.layout, id)?;
                let strategy = i.strategy(&r.config.strategy)?;
                let backend = i.backend(&r.config.backend)?;
                if let Availability::Unavailable { reason } = backend.available_for_launch() {
                    return Err(RuntimeError::BackendUnavailable {
                        backend: r.config.backend.clone(),
                        reason,
                    });
                }
                let specs = socket_specs(&*backend, r.config.network);
                // Fail fast on the budget, before the state changes (pure arithmetic);
                // the box is opened for the start below, once it is `Starting`.
                check_addresses(&strategy, &i.layout, id, &specs)?;
                i.store
                    .transition(
                        id,
                        Some(&[BoxState::Created, BoxState::Stopped]),
                        BoxState::Starting,
                        |r| {
                            r.process = None;
                            r.exit_code = None;
                        },
                    )
                    .map_err(RuntimeError::from_store)?;
                Ok((strategy, backend, specs))
            })
            .await?;
        crash::point("start:starting");
        let mut launched: Option<Arc<ProcessHandle>> = None;
        let mut companions: Vec<ProcessIdentity> = Vec::new();
        // The box's binding for this start: `prepare_start` and `ensure` run once, every
        // address is derived once, and the verified directory, the per-start state and
        // the peer policy are held. `ensure` may wait on the strategy's lock: off the
        // executor.
        let opened = {
            let (s, id, specs) = (strategy.clone(), id.clone(), specs.clone());
            self.blocking(move |i| i.open_binding(s, &id, Opening::Start, &specs)).await
        };
        let held = opened.as_ref().ok().cloned();
        let result = match opened {
            Ok(binding) => {
                let (l, c) = (&mut launched, &mut companions);
                self.launch_and_wait(&rec, &binding, &*backend, &specs, l, c).await
            }
            Err(e) => Err(e),
        };
        // Ready, and still ours to run: another process may have stopped or removed the
        // box meanwhile (the transition then fails), and then what this start launched
        // is killed like after any failure, not left running under no row.
        let result = result.and_then(|()| {
            crash::point("start:ready");
            self.store
                .transition(&id, Some(&[BoxState::Starting]), BoxState::Running, |_| {})
                .map_err(RuntimeError::from_store)
        });
        match result {
            Ok(rec) => {
                crash::point("start:running");
                if let Some(b) = held {
                    // Dials go through it while this process runs (decision 0014).
                    self.hold_binding(&id, rec.process.map(|p| p.pid), b);
                }
                if let Some(h) = launched {
                    self.watch(&id, h);
                }
                tracing::debug!(box_id = %id, pid = ?rec.process.map(|p| p.pid), "running");
                Ok(rec)
            }
            Err(e) => {
                // Debug, not warn: the error is returned to the caller, who reports it
                // (once).
                tracing::debug!(box_id = %id, error = %e, "start failed; stopping the box");
                if let Some(h) = &launched {
                    if !kill::escalate(h, &kill::kill_now(KILL_WAIT)).await {
                        tracing::error!(box_id = %id, pid = h.identity().pid, "box process survived SIGKILL");
                    }
                }
                self.stop_companions(&id, &companions).await;
                let exit = launched.as_ref().and_then(|h| h.exit_code());
                let _ = self.store.transition(
                    &id,
                    Some(&[BoxState::Starting]),
                    BoxState::Stopped,
                    |r| {
                        r.process = None;
                        r.exit_code = exit;
                    },
                );
                lock(&self.procs).remove(&id);
                self.drop_binding(&id);
                // What the runtime bound for the box (its handed listeners) and what a
                // killed process left: a stopped box has no socket files.
                cleanup::remove_socket_files(self.home_fd.as_fd(), &self.layout, &id);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch_and_wait(
        self: &Arc<Self>,
        rec: &BoxRecord,
        binding: &Arc<dyn BoxBinding>,
        backend: &dyn Backend,
        specs: &[SocketSpec],
        launched_out: &mut Option<Arc<ProcessHandle>>,
        companions_out: &mut Vec<ProcessIdentity>,
    ) -> Result<(), RuntimeError> {
        let id = &rec.id;
        let layout = &self.layout;
        let channel = backend.readiness() == Readiness::Channel;
        // What the runtime binds: `ready` (unless the box reports on a channel) and
        // every socket it hands to the box's process, never by name.
        let to_bind: Vec<&SocketSpec> = specs
            .iter()
            .filter(|s| s.binder == Binder::Handed || (s.name == catalogue::READY.name && !channel))
            .collect();
        let _cleanup = ReadyCleanup { home: self.home_fd.as_fd(), layout, id };
        let mut bound = bind_all(&**binding, &to_bind)?;
        crash::point("start:bound");
        let (ready, ready_channel) = match bound.remove(catalogue::READY.name) {
            Some(l) => {
                let l = l.into_tokio().map_err(|e| RuntimeError::Io {
                    op: "register ready listener",
                    path: layout.sockets_dir(id),
                    source: e,
                })?;
                (ReadyWait::Listener(l), None)
            }
            None => {
                let pair = std::os::unix::net::UnixStream::pair()
                    .and_then(|(ours, theirs)| {
                        ours.set_nonblocking(true)?;
                        Ok((tokio::net::UnixStream::from_std(ours)?, theirs))
                    })
                    .map_err(|e| RuntimeError::Io {
                        op: "make the ready channel",
                        path: layout.sockets_dir(id),
                        source: e,
                    })?;
                (ReadyWait::Channel(pair.0), Some(Arc::new(std::os::fd::OwnedFd::from(pair.1))))
            }
        };
        let ready_addr = match &ready {
            ReadyWait::Listener(l) => l.address().display_string(),
            ReadyWait::Channel(_) => "the ready channel (an inherited descriptor)".to_owned(),
        };
        let spec = LaunchSpec {
            id: id.clone(),
            layout: layout.clone(),
            sockets: BoxSockets {
                handed: bound.into_iter().map(|(n, l)| (n, Arc::new(l))).collect(),
                ready_channel,
                // The box's addresses as they are after binding (a squatted name moves
                // the box to fresh ones), its verified directory and its one peer
                // policy: the runtime's listeners and the box's processes admit the
                // same peers.
                ..BoxSockets::view(&**binding)
            },
            log_file: layout.log_file(id),
            network: rec.config.network,
            policy: binding.policy_paths()?,
            env: rec.config.env.clone(),
            settings: rec.config.settings.clone(),
        };
        // Where this start's part of the (appended) box log begins.
        let log_start = std::fs::metadata(layout.log_file(id)).map(|m| m.len()).unwrap_or(0);
        let launched = backend.launch(&spec);
        // The runtime's copies of what it handed (listeners, the box's end of the ready
        // channel) close now: a box process that dies must leave no listener behind it
        // in the runtime, and the channel reads end-of-file once it is gone.
        drop(spec);
        let launched = launched?;
        // Companions first: whatever happens to the box process below, the failure path
        // of `start` knows them. Identities and pidfds come as captured at spawn: no
        // `/proc` read here that a reused pid could answer.
        let companion_handles: Vec<ProcessHandle> =
            launched.companions.into_iter().map(|c| ProcessHandle::from_owned(c, false)).collect();
        companions_out.extend(companion_handles.iter().map(ProcessHandle::identity));
        let log_tail = || tail_lines(&layout.log_file(id), LOG_TAIL_LINES);
        let kernel_crash = || kernel_crash(&layout.log_file(id), log_start);
        let companion_exited = |pid: i32, exit_code: Option<i32>| RuntimeError::CompanionExited {
            id: id.clone(),
            pid,
            exit_code,
            logs: companion_logs(&layout.log_file(id)),
            log_tail: log_tail(),
        };
        // A companion (passt…) that dies before the box is ready fails the start at once
        // (below, also one already gone): the VMM cannot come up without it, and would
        // otherwise be waited on in vain.
        let handle = Arc::new(ProcessHandle::from_owned(launched.process, true));
        let ident = handle.identity();
        *launched_out = Some(handle.clone());
        lock(&self.procs).insert(id.clone(), handle.clone());
        // Recorded once both are known to the failure path, so a store error here
        // still kills them; recovery finds them after a crash from here on.
        if !companions_out.is_empty() {
            self.store.set_companions(id, companions_out)?;
            tracing::debug!(box_id = %id, companions = ?companions_out, "companions recorded");
        }
        self.store.set_process(id, Some(ident))?;
        crash::point("start:launched");
        tracing::debug!(box_id = %id, pid = ident.pid, ready = %ready_addr, "launched; waiting for readiness");

        let timeout = self.options.ready_timeout;
        // A connection that closes without a frame (a stale-socket probe, a stray
        // client of the same uid) is not the agent: keep waiting for the real one.
        let ready = async {
            let listener = match ready {
                ReadyWait::Listener(l) => l,
                // Only the box's process holds the other end (the runtime made the pair
                // and closed its copy of that end after launch): possession is the
                // check. End-of-file means the process is gone or never wrote;
                // its exit (raced below) or the timeout reports it.
                ReadyWait::Channel(mut s) => {
                    use agent_client::ClientError;
                    use boxsock_core::proto::ProtoError;
                    return match agent_client::read_ready(&mut s).await {
                        Err(ClientError::Proto(ProtoError::Closed)) => std::future::pending().await,
                        // The pid is the sender's own word, but a frame naming another
                        // process means the backend handed the channel on, or reported
                        // the wrong process: not the box's readiness.
                        // A process that is PID 1 of its own namespace (`sandbox`)
                        // knows itself by its pid there: the innermost `NSpid`.
                        Ok(info)
                            if i64::from(info.pid) != i64::from(ident.pid)
                                && Some(i64::from(info.pid)) != innermost_pid(ident.pid) =>
                        {
                            Err(ClientError::Unexpected {
                                expected: "a Ready frame from the box's process",
                                got: format!(
                                    "Ready from pid {} on the ready channel; the box's process is pid {}",
                                    info.pid, ident.pid
                                ),
                            })
                        }
                        other => other,
                    };
                }
            };
            loop {
                let (mut s, cred) = listener.accept().await?;
                // Only the box's own process may say it is ready (the agent; for a VM,
                // the VMM relaying the guest), not another process of an allowed uid.
                // A strategy whose policy checks nothing hands out no credentials: read
                // them here, and ignore a peer whose credentials cannot be read.
                let cred = match cred {
                    Some(c) => c,
                    None => match boxsock_core::peer::peer_cred(s.as_fd()) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(box_id = %id, error = %e, "ready connection whose peer credentials cannot be read; ignored");
                            continue;
                        }
                    },
                };
                if cred.pid != ident.pid {
                    tracing::warn!(box_id = %id, peer_pid = cred.pid, peer_uid = cred.uid, expected_pid = ident.pid, "ready connection from a process that is not the box's; ignored");
                    continue;
                }
                match agent_client::read_ready(&mut s).await {
                    Err(agent_client::ClientError::Proto(
                        boxsock_core::proto::ProtoError::Closed,
                    )) => {
                        tracing::debug!(box_id = %id, "empty connection on the ready socket; still waiting");
                    }
                    other => break other,
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, ready) => match r {
                Err(_) => Err(RuntimeError::ReadyTimeout {
                    id: id.clone(),
                    waited_for: format!("agent readiness on {ready_addr}"),
                    after: timeout,
                    kernel_crash: kernel_crash(),
                    log_tail: log_tail(),
                }),
                Ok(Ok(info)) => {
                    tracing::debug!(box_id = %id, agent_pid = info.pid, version = info.version, "agent ready");
                    Ok(())
                }
                Ok(Err(e)) => Err(RuntimeError::Agent { id: id.clone(), address: ready_addr, source: e }),
            },
            _ = handle.wait_exit() => Err(RuntimeError::ExitedBeforeReady {
                id: id.clone(),
                pid: ident.pid,
                exit_code: handle.exit_code(),
                address: ready_addr,
                kernel_crash: kernel_crash(),
                log_tail: log_tail(),
            }),
            i = first_exit(&companion_handles) => {
                // A box process that ends takes its companions with it (passt exits
                // when the VMM's end of its socket closes), and which exit is seen
                // first is a race: when the box's process ends too, within a moment,
                // it is the cause and is reported as such.
                if tokio::time::timeout(COMPANION_EXIT_GRACE, handle.wait_exit()).await.is_ok() {
                    return Err(RuntimeError::ExitedBeforeReady {
                        id: id.clone(),
                        pid: ident.pid,
                        exit_code: handle.exit_code(),
                        address: ready_addr,
                        kernel_crash: kernel_crash(),
                        log_tail: log_tail(),
                    });
                }
                let h = &companion_handles[i];
                Err(companion_exited(h.identity().pid, h.exit_code()))
            }
        }
    }
}

/// How long a companion's exit before readiness waits for the box's process to be seen
/// exiting too (then the box's exit is what `start` reports).
const COMPANION_EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// `pid`'s number in its innermost PID namespace (the last field of `NSpid` in
/// `/proc/<pid>/status`), for a box process that is the init of a namespace of its own.
/// The process is the runtime's unreaped child here, so its pid cannot have been reused.
fn innermost_pid(pid: i32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Where the runtime waits for the box's `Ready` frame.
enum ReadyWait {
    /// The `ready` socket it bound ([`Readiness::Socket`]).
    Listener(AsyncListener),
    /// Its end of the socket pair whose other end the box's process inherited
    /// ([`Readiness::Channel`]).
    Channel(tokio::net::UnixStream),
}

/// How many times the runtime binds a start's listeners afresh when a bind moved the
/// box to fresh names after others were bound (each time needs another squatted name).
const MAX_REBINDS: usize = 4;

/// Bind every socket of `sockets` through the box's binding. When a bind moved the
/// box to fresh names (a squatted name) after an earlier one was bound, the earlier
/// one sits at a name nobody derives any more: all are bound again, so every listener
/// of the start is at the box's current names.
fn bind_all(
    binding: &dyn BoxBinding,
    sockets: &[&SocketSpec],
) -> Result<BTreeMap<String, Listener>, BindingError> {
    let id = binding.id();
    let mut attempt = 0;
    loop {
        let mut bound = BTreeMap::new();
        for socket in sockets {
            bound.insert(socket.name.to_owned(), binding.listen(socket)?);
        }
        let now = binding.addresses();
        let stale = bound.iter().any(|(name, l)| now.get(name).is_some_and(|a| a != l.address()));
        attempt += 1;
        if !stale {
            return Ok(bound);
        }
        if attempt > MAX_REBINDS {
            let names: Vec<String> =
                bound.iter().map(|(n, l)| format!("{n} at {}", l.address())).collect();
            return Err(BindingError::Occupied {
                path: PathBuf::from(names.join(", ")),
                found: format!(
                    "box {id}: its names kept moving while its listeners were bound ({attempt} tries)"
                ),
            });
        }
        tracing::info!(
            box_id = %id,
            attempt,
            "the box's names moved while binding its listeners; binding them again"
        );
    }
}

fn tail_lines(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if tail.is_empty() {
                format!("(log {} is empty)", boxsock_core::echo::path(path))
            } else {
                tail
            }
        }
        Err(e) => format!("(no log at {}: {e})", boxsock_core::echo::path(path)),
    }
}

/// How a Linux kernel's console begins the report of a crash (an oops or a panic).
const KERNEL_CRASH_HEADLINES: [&str; 5] =
    ["Kernel panic - not syncing", "BUG: ", "Oops", "general protection fault", "kernel BUG at"];
/// Bytes of the box log searched for a kernel crash, and of the headline quoted.
const KERNEL_CRASH_SCAN: u64 = 1 << 20;
const KERNEL_CRASH_HEADLINE_MAX: usize = 200;

/// The headline of the first kernel crash in the box log from byte `from` on (a VM
/// backend logs its guest's console there): the line after its `[ seconds]` stamp,
/// quoted, bounded and with control characters escaped. `None` when there is none, or no log.
fn kernel_crash(path: &Path, from: u64) -> Option<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    f.take(KERNEL_CRASH_SCAN).read_to_end(&mut bytes).ok()?;
    kernel_crash_in(&String::from_utf8_lossy(&bytes))
}

fn kernel_crash_in(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix('[')?;
        let (stamp, msg) = rest.split_once(']')?;
        let stamp = stamp.trim();
        let (secs, frac) = stamp.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(secs) || !digits(frac) {
            return None;
        }
        let msg = msg.strip_prefix(' ')?.trim_end();
        KERNEL_CRASH_HEADLINES.iter().any(|h| msg.starts_with(h)).then(|| {
            let mut end = msg.len().min(KERNEL_CRASH_HEADLINE_MAX);
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            let ellipsis = if end < msg.len() { "…" } else { "" };
            format!("{:?}{ellipsis}", &msg[..end])
        })
    })
}

/// Index of the first of `handles` to exit; never resolves when there are none.
async fn first_exit(handles: &[ProcessHandle]) -> usize {
    if handles.is_empty() {
        std::future::pending::<()>().await;
    }
    let mut waits: Vec<_> = handles.iter().map(|h| Box::pin(h.wait_exit())).collect();
    std::future::poll_fn(|cx| {
        for (i, w) in waits.iter_mut().enumerate() {
            if w.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The tails of the companions' logs: every file beside the box log (a backend writes
/// its companions' logs there, e.g. libkrun's `passt.log`), each under its name.
fn companion_logs(box_log: &Path) -> String {
    let Some(dir) = box_log.parent() else { return String::new() };
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p != box_log && p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let parts: Vec<String> = names
        .iter()
        .map(|p| format!("{}:\n{}", boxsock_core::echo::path(p), tail_lines(p, LOG_TAIL_LINES)))
        .collect();
    if parts.is_empty() {
        format!("(no companion log in {})", boxsock_core::echo::path(dir))
    } else {
        parts.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest console of a libkrun box whose kernel crashed while it booted (CI,
    /// 2026-12-07: a page fault in `mt_find` under the TCG-emulated nested SVM), after
    /// an earlier, clean start in the same (appended) log.
    const EARLIER: &str = "[    0.000000] Linux version 6.12.113\n[    0.512000] Run /init as init process\nboxsock-agent: ready\n";
    const CRASHED: &str = "[    0.000000] Linux version 6.12.113\n\
[    1.790112] BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
[    1.791000] #PF: supervisor read access in kernel mode\n\
[    1.792000] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI\n\
[    1.856654] RIP: 0010:mt_find+0x87/0x3c0\n\
[    1.893344] reboot: Failed to start orderly reboot: forcing the issue\n";

    #[test]
    fn a_kernel_crash_is_found_from_this_starts_part_of_the_log_and_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("box.log");
        std::fs::write(&log, format!("{EARLIER}{CRASHED}")).unwrap();
        assert_eq!(
            kernel_crash(&log, EARLIER.len() as u64).as_deref(),
            Some(r#""BUG: kernel NULL pointer dereference, address: 0000000000000008""#)
        );
        // A crash before this start's offset is not this start's.
        std::fs::write(&log, format!("{CRASHED}{EARLIER}")).unwrap();
        assert_eq!(kernel_crash(&log, CRASHED.len() as u64), None);
        assert_eq!(kernel_crash(&dir.path().join("missing.log"), 0), None);
    }

    #[test]
    fn only_a_stamped_kernel_headline_counts_and_it_is_bounded_and_escaped() {
        assert_eq!(kernel_crash_in(EARLIER), None);
        // Output of the box's own programs that merely says the words.
        assert_eq!(kernel_crash_in("BUG: in my program\nOops\n[x] Oops\n[ 1.0]BUG: \n"), None);
        assert_eq!(
            kernel_crash_in("[    2.5] Kernel panic - not syncing: Attempted to kill init!\n")
                .as_deref(),
            Some(r#""Kernel panic - not syncing: Attempted to kill init!""#)
        );
        let long = format!("[12.000001] general protection fault \u{1b}[31m{}\n", "é".repeat(300));
        let q = kernel_crash_in(&long).unwrap();
        assert!(q.starts_with(r#""general protection fault \u{1b}[31m"#), "{q}");
        assert!(q.ends_with('…') && q.len() < 260, "{} bytes: {q}", q.len());
    }
}
