//! Starting an exec's command: pipes, or a pty whose slave is the controlling terminal
//! of the command's new session; each command in a process group of its own.

use std::io;
use std::process::Stdio;
use std::sync::Arc;

use boxsock_core::echo::echo;
use boxsock_core::proto::{ErrorCode, Response, WinSize};

use super::ExecSpec;
use crate::conn::error;
use crate::groups::{GroupGuard, State, kill_exec};
use crate::pty::{self, PtyMaster};
use crate::user::Credentials;

/// A started command. Its group is forgotten when it is dropped, unless processes the
/// command left behind still live in it (a shutdown kills them).
pub(super) struct Started<'a> {
    // Fields drop in this order: the group is checked, then the child is dropped
    // (killed if still running), then the pty closes.
    _group: GroupGuard<'a>,
    pub(super) child: tokio::process::Child,
    pub(super) master: Option<Arc<PtyMaster>>,
    pub(super) pid: u32,
    pub(super) pgid: i32,
}

impl Started<'_> {
    /// Kill the command's group (and its terminal's foreground group) and reap it.
    pub(super) async fn kill(&mut self) {
        kill_exec(self.master.as_deref(), self.pgid);
        let _ = self.child.wait().await;
    }
}

/// Start `spec`'s command, recording its group in `state`; or the answer saying why it
/// did not start.
pub(super) fn start<'a>(spec: &ExecSpec, state: &'a State) -> Result<Started<'a>, Response> {
    let program = check(spec)?;
    // Resolved before anything starts: a user that does not resolve runs nothing.
    let creds = match spec.user.as_deref() {
        Some(u) => Some(crate::user::resolve(std::path::Path::new("/"), u).map_err(|e| {
            tracing::info!(program = %program, error = %e, "cannot resolve the user");
            error(ErrorCode::BadRequest, e.to_string())
        })?),
        None => None,
    };
    if let Some(c) = creds.as_ref() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if me != 0 && c.uid != me {
            let msg = format!(
                "user {}: the agent runs as uid {me}, not root, so it cannot run commands \
                 as uid {}",
                echo(spec.user.as_deref().unwrap_or_default()),
                c.uid
            );
            return Err(error(ErrorCode::BadRequest, msg));
        }
    }
    if let Some(c) = creds.as_ref() {
        if let Some(msg) = unmapped(c) {
            let msg = format!("user {}: {msg}", echo(spec.user.as_deref().unwrap_or_default()));
            return Err(error(ErrorCode::BadRequest, msg));
        }
    }
    let limits = rlimits(&spec.rlimits)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&spec.argv[1..]).envs(spec.env.iter().map(|(k, v)| (k, v))).kill_on_drop(true);
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let master = match spec.tty {
        Some(size) => Some(on_pty(&mut cmd, size, &spec.env)?),
        None => {
            on_pipes(&mut cmd, spec.want_stdin);
            None
        }
    };
    // Before the user switch: raising a hard limit needs the agent's rights.
    if !limits.is_empty() {
        with_rlimits(&mut cmd, limits);
    }
    // Last, so that the session and its terminal are set up with the agent's rights.
    if let Some(c) = creds.as_ref() {
        as_user(&mut cmd, c, &spec.env);
    }
    let spawned = cmd.spawn();
    // Close our copies of the pty slave: the master reads EOF when the command's go.
    drop(cmd);
    let child = spawned.map_err(|e| {
        tracing::info!(program = %program, error = %e, "cannot spawn");
        spawn_error(program, spec.cwd.as_deref(), spec.user.as_deref(), &e)
    })?;
    let Some(pid) = child.id() else {
        let msg = format!("{program:?} ended before it had a pid");
        return Err(error(ErrorCode::Internal, msg));
    };
    let pgid = pid as i32;
    state.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(pgid);
    tracing::info!(
        pid,
        program = %program,
        args = spec.argv.len() - 1,
        tty = spec.tty.is_some(),
        uid = creds.as_ref().map(|c| c.uid),
        "exec started"
    );
    Ok(Started { _group: GroupGuard { state, pgid }, child, master, pid, pgid })
}

/// The resource limits of a request, by number; or why they cannot be set: an
/// unknown resource, a soft limit above its hard limit, too many.
fn rlimits(
    asked: &[boxsock_core::proto::Rlimit],
) -> Result<Vec<(libc::c_int, libc::rlimit)>, Response> {
    if asked.len() > boxsock_core::proto::MAX_RLIMITS {
        let msg = format!(
            "{} resource limits: at most {}",
            asked.len(),
            boxsock_core::proto::MAX_RLIMITS
        );
        return Err(error(ErrorCode::BadRequest, msg));
    }
    let mut out = Vec::new();
    for r in asked {
        let Some(n) = r.number() else {
            let msg =
                format!("resource limit {}: not a resource of this system", echo(&r.resource));
            return Err(error(ErrorCode::BadRequest, msg));
        };
        if r.soft > r.hard {
            let msg = format!(
                "resource limit {}: soft {} is above hard {}",
                echo(&r.resource),
                r.soft,
                r.hard
            );
            return Err(error(ErrorCode::BadRequest, msg));
        }
        out.push((n, libc::rlimit { rlim_cur: r.soft, rlim_max: r.hard }));
    }
    Ok(out)
}

/// Set `limits` in the child before exec (a failure fails the spawn: the command never
/// runs without them).
fn with_rlimits(cmd: &mut tokio::process::Command, limits: Vec<(libc::c_int, libc::rlimit)>) {
    // SAFETY: the closure only calls setrlimit, async-signal-safe, on data captured
    // before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (n, l) in &limits {
                if libc::setrlimit(*n as _, l) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The program to run, once the request is known to be runnable.
fn check(spec: &ExecSpec) -> Result<&str, Response> {
    let Some(program) = spec.argv.first() else {
        return Err(error(ErrorCode::BadRequest, "exec with an empty argv"));
    };
    if let Some(d) = spec.cwd.as_deref().filter(|d| !d.starts_with('/')) {
        let msg = format!("working directory {} is not absolute", echo(d));
        return Err(error(ErrorCode::BadRequest, msg));
    }
    Ok(program)
}

/// Run the command as `c`: supplementary groups, then the group, then the user, in
/// the child before exec (a failure fails the spawn: the command never runs as the
/// agent's user instead); `HOME` is the user's unless the exec's environment sets it.
/// std's `uid`/`gid` are not used because std sets them before any `pre_exec` runs and
/// offers no stable `setgroups`; the order here is the one that can succeed.
fn as_user(cmd: &mut tokio::process::Command, c: &Credentials, env: &[(String, String)]) {
    if !env.iter().any(|(k, _)| k == "HOME") {
        cmd.env("HOME", &c.home);
    }
    let (uid, gid, groups) = (c.uid, c.gid, c.groups.clone());
    // In a user namespace whose setgroups is denied (a rootless sandbox box), no
    // supplementary group can be set, and none but gid 0 is mapped: the command keeps
    // the agent's (the runtime user's own, unmapped).
    let set_groups = !setgroups_denied();
    // SAFETY: the closure only makes async-signal-safe system calls (geteuid,
    // setgroups, setgid, setuid) on data captured before the fork; it allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            // An agent that is not root can only "become" itself: setgroups would
            // fail, and setgid/setuid to its own ids succeed.
            if set_groups
                && libc::geteuid() == 0
                && libc::setgroups(groups.len(), groups.as_ptr()) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// stdin (when asked for), stdout and stderr are pipes; the command leads a new process
/// group. No `pre_exec` (unless a user is given), so the spawn keeps `posix_spawn`'s
/// semantics.
fn on_pipes(cmd: &mut tokio::process::Command, want_stdin: bool) {
    cmd.stdin(if want_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
}

/// The command's stdio is a new pty of `size`, its controlling terminal in a session of
/// its own (so its group is its session's); returns the master.
fn on_pty(
    cmd: &mut tokio::process::Command,
    size: WinSize,
    env: &[(String, String)],
) -> Result<Arc<PtyMaster>, Response> {
    let pty = pty::open(size)
        .map_err(|e| error(ErrorCode::Internal, format!("cannot open a pty: {e}")))?;
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
    Ok(Arc::new(pty.master))
}

/// The error frame for a command that could not be started, with its kind: not found
/// (ENOENT: the program or the working directory), permission denied (EACCES,
/// ENOEXEC), or another reason.
fn spawn_error(program: &str, cwd: Option<&str>, user: Option<&str>, e: &io::Error) -> Response {
    let code = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => ErrorCode::NotFound,
        (io::ErrorKind::PermissionDenied, _) | (_, Some(libc::ENOEXEC | libc::EACCES)) => {
            ErrorCode::PermissionDenied
        }
        _ => ErrorCode::Spawn,
    };
    let at = cwd.map(|d| format!(" in {}", echo(d))).unwrap_or_default();
    let who = user.map(|u| format!(" as user {}", echo(u))).unwrap_or_default();
    error(code, format!("cannot run {}{at}{who}: {e}", echo(program)))
}

/// Whether `/proc/self/setgroups` says `deny` (a user namespace made by a user who is
/// not root: decision 0026).
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Why `c`'s uid or gid cannot be switched to in the agent's user namespace (not in
/// `/proc/self/uid_map` / `gid_map`), or `None`. Unreadable maps: no answer here (the
/// switch itself then says).
fn unmapped(c: &Credentials) -> Option<String> {
    for (what, id, file) in
        [("uid", c.uid, "/proc/self/uid_map"), ("gid", c.gid, "/proc/self/gid_map")]
    {
        let Ok(map) = std::fs::read_to_string(file) else { continue };
        if !id_mapped(&map, id) {
            return Some(format!(
                "{what} {id} is not mapped in the box's user namespace (its {file}: {}); \
                 a rootless sandbox box maps only root",
                echo(map.split_whitespace().collect::<Vec<_>>().join(" ").as_str())
            ));
        }
    }
    None
}

/// Whether `id` falls in a range of a `uid_map`/`gid_map` text (`inside outside count`
/// per line). A line that does not parse maps nothing.
fn id_mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        matches!(f.as_slice(), [inside, _, count] if *inside <= id as u64 && (id as u64) < inside + count)
    })
}

#[cfg(test)]
mod map_tests {
    use super::id_mapped;

    #[test]
    fn a_rootless_map_maps_only_zero_and_the_initial_one_everything() {
        let rootless = "         0      65534          1\n";
        assert!(id_mapped(rootless, 0));
        assert!(!id_mapped(rootless, 1000));
        assert!(!id_mapped(rootless, 65534));
        let initial = "         0          0 4294967295\n";
        assert!(
            id_mapped(initial, 0) && id_mapped(initial, 1000) && id_mapped(initial, u32::MAX - 1)
        );
        assert!(!id_mapped("garbage\n", 0));
    }
}
