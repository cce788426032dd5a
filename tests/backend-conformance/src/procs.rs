//! Stray processes: what a box left behind.
//!
//! The kit makes its process a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so every
//! process a backend starts stays a descendant of the kit's process even after its
//! parent exits or it calls `setsid`: an orphan is re-parented to the kit, not to init.
//! A check takes a [`Snapshot`] of the live descendants before it starts a box; once the
//! box is stopped or removed, every live descendant not in the snapshot is a stray.
//! Zombies are dead and do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One live process: pid, start time (so a reused pid is a new process) and command.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// `/proc/<pid>/comm`.
    pub comm: String,
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.comm)
    }
}

/// Make this process a child subreaper (once; later calls do nothing). Returns whether
/// it is one, so a caller can say why it cannot look for strays.
pub fn become_subreaper() -> bool {
    use std::sync::OnceLock;
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes integer arguments only and
        // changes a flag of this process; it touches no memory of ours.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        r == 0
    })
}

/// pid → (ppid, state, start time, comm) of every process in `/proc`.
fn table() -> BTreeMap<i32, (i32, char, u64, String)> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses: split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // rest[0] = state (field 3), rest[1] = ppid (4), rest[19] = starttime (22).
        let (Some(state), Some(ppid), Some(start)) = (rest.first(), rest.get(1), rest.get(19))
        else {
            continue;
        };
        let (Some(state), Ok(ppid), Ok(start)) =
            (state.chars().next(), ppid.parse::<i32>(), start.parse::<u64>())
        else {
            continue;
        };
        out.insert(pid, (ppid, state, start, comm));
    }
    out
}

/// The live (non-zombie) descendants of this process.
pub fn live_descendants() -> BTreeSet<Proc> {
    let me = std::process::id() as i32;
    let t = table();
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, (ppid, ..)) in &t {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![me];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if let Some((_, state, start, comm)) = t.get(c) {
                if *state != 'Z' && *state != 'X' {
                    out.insert(Proc { pid: *c, start_time: *start, comm: comm.clone() });
                }
                todo.push(*c);
            }
        }
    }
    out
}

/// The live descendants at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeSet<Proc>);

impl Snapshot {
    /// Now.
    pub fn take() -> Snapshot {
        Snapshot(live_descendants())
    }

    /// Live descendants that were not there at the snapshot.
    pub fn strays(&self) -> Vec<Proc> {
        live_descendants().into_iter().filter(|p| !self.0.contains(p)).collect()
    }
}

/// SIGKILL each of `procs` (and its process group, when it leads one), so a failed check
/// leaves nothing running, and wait (at most 2 s) until they are dead. Never signals a
/// process whose start time changed.
pub fn kill_all(procs: &[Proc]) {
    let now = table();
    for p in procs {
        if now.get(&p.pid).is_some_and(|(_, _, start, _)| *start == p.start_time) {
            let pid = nix::unistd::Pid::from_raw(p.pid);
            if nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g == pid) {
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    // SIGKILL is delivered asynchronously: a process is still listed alive for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while procs.iter().any(|p| is_alive(p.pid, p.start_time))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `pid` (with this start time) is alive: present and not a zombie.
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    table()
        .get(&pid)
        .is_some_and(|(_, state, start, _)| *start == start_time && *state != 'Z' && *state != 'X')
}

/// The session id of `pid`.
pub fn session_of(pid: i32) -> Option<i32> {
    nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).ok().map(|p| p.as_raw())
}
