//! `--network`: `pasta` (Debian's `passt` package, as rootless podman uses it) connects
//! the box's network namespace to the host's network: an interface with the host's
//! address and routes (`--config-net`), traffic carried by pasta as the host's own
//! connections; the gateway's address reaches the host's loopback. No port of the host
//! is forwarded into the box (`-t none -u none`), nor of the box to the host
//! (`-T none -U none`).
//!
//! pasta is a companion of the box (the runtime kills and reaps it with the box). It is
//! pointed at the box's namespace by a file: pasta cannot open `/proc/<pid>/ns/net`
//! itself once it has isolated itself, so it is started in a mount namespace of its own
//! where that namespace is bound onto `<box>/sandbox/netns` (gone with pasta; nothing
//! is mounted in the runtime's namespace). `launch` returns once the box has its
//! default route, so a box is ready only with its network.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxsock_core::backend::{BackendError, OwnedProcess};
use boxsock_core::echo;
use boxsock_core::spawn::Spawn;

use crate::NAME;

/// How long `launch` waits for pasta to configure the box's network.
pub const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// pasta: the `pasta` option, else `pasta` on `$PATH`.
pub fn pasta_binary(option: Option<&String>) -> PathBuf {
    option.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("pasta"))
}

/// Start pasta on the network namespace of `pid` (the box's agent); wait until the
/// box has a default route. `netns_file` is an existing empty file in the box's
/// directory; `log` pasta's log.
pub fn start(
    pasta: &Path,
    pid: i32,
    netns_file: &Path,
    log: &Path,
) -> Result<OwnedProcess, BackendError> {
    let spawn_err = |e| BackendError::spawn(NAME, e);
    let source = CString::new(format!("/proc/{pid}/ns/net")).unwrap_or_default();
    let target = CString::new(netns_file.as_os_str().as_bytes()).unwrap_or_default();
    let mut cmd = Spawn::new(pasta);
    cmd.args(["--foreground", "--quiet", "--runas", "0", "--config-net"])
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none", "--netns"])
        .arg(netns_file)
        .log_file(log)
        .map_err(spawn_err)?;
    let hook = move || {
        // SAFETY: raw unshare(2) and mount(2) on strings built before the fork.
        let failed = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == -1
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == -1
                || libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == -1
        };
        if failed { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    };
    // SAFETY: the hook makes only raw system calls on data built before the fork.
    unsafe { cmd.pre_exec(hook) };
    let pasta_proc = cmd.spawn().map_err(spawn_err)?;
    let route = PathBuf::from(format!("/proc/{pid}/net/route"));
    let deadline = Instant::now() + NET_TIMEOUT;
    loop {
        if has_default_route(&route) {
            return Ok(pasta_proc);
        }
        let exited = !pasta_proc.identity().is_alive();
        if exited || Instant::now() >= deadline {
            pasta_proc.kill_and_reap();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(BackendError::Spawn {
                backend: NAME.into(),
                what: echo::path(pasta).to_string(),
                source: std::io::Error::other(format!(
                    "{} before the box had a default route (log {}: {})",
                    if exited { "pasta exited" } else { "timed out" },
                    echo::path(log),
                    echo::echo(&tail)
                )),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has_default_route(route: &Path) -> bool {
    std::fs::read_to_string(route)
        .map(|t| t.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")))
        .unwrap_or(false)
}
