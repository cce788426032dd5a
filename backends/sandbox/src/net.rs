//! `--network`: `pasta` (Debian's `passt` package, as rootless podman uses it) connects
//! the box's network namespace to the host's network: an interface with the host's
//! address and routes (`--config-net`), traffic carried by pasta as the host's own
//! connections; the gateway's address reaches the host's loopback. Only the published
//! ports (`-p`) are forwarded from the host into the box (`-t ADDR/HOST_PORT:BOX_PORT`,
//! `-u` for UDP, bound on loopback unless the user named an address: decision 0024),
//! else none (`-t none -u none`); no port of the box's namespace reaches the host's
//! (`-T none -U none`). Each published port is checked free before pasta starts, naming
//! its holder ([`boxsock_core::ports`], shared with libkrun's passt), and `start`
//! returns only once pasta holds every one.
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
use boxsock_core::ports::{self, PortError};
use boxsock_core::settings::{PortMapping, Protocol};
use boxsock_core::spawn::Spawn;

use crate::NAME;

/// How long `launch` waits for pasta to configure the box's network.
pub const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// pasta: the `pasta` option, else `pasta` on `$PATH`.
pub fn pasta_binary(option: Option<&String>) -> PathBuf {
    option.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("pasta"))
}

/// pasta's forwarding options: each published port, else `none`, per protocol; and
/// nothing from the box's namespace to the host's.
pub fn forward_args(published: &[PortMapping]) -> Vec<String> {
    let mut v = ports::passt_args(published);
    for (proto, flag) in [(Protocol::Tcp, "-t"), (Protocol::Udp, "-u")] {
        if !published.iter().any(|p| p.protocol == proto) {
            v.extend([flag.to_owned(), "none".to_owned()]);
        }
    }
    v.extend(["-T", "none", "-U", "none"].map(String::from));
    v
}

/// [`BackendError::Port`] for `cause`, naming the port and why (its holder).
pub(crate) fn port_error(cause: PortError) -> BackendError {
    BackendError::Port { backend: NAME.into(), port: *cause.port(), reason: cause.to_string() }
}

/// Start pasta on the network namespace of `pid` (the box's agent), forwarding
/// `published`; wait until the box has a default route and pasta holds every port.
/// A port that cannot be bound is [`BackendError::Port`], naming it and its holder.
/// `netns_file` is an existing empty file in the box's directory; `log` pasta's log.
/// `rootless`: the box has its own user namespace, which pasta joins.
pub fn start(
    pasta: &Path,
    pid: i32,
    netns_file: &Path,
    log: &Path,
    published: &[PortMapping],
    rootless: bool,
) -> Result<OwnedProcess, BackendError> {
    ports::check_all_free(published).map_err(port_error)?;
    let spawn_err = |e| BackendError::spawn(NAME, e);
    let source = CString::new(format!("/proc/{pid}/ns/net")).unwrap_or_default();
    let target = CString::new(netns_file.as_os_str().as_bytes()).unwrap_or_default();
    let mut cmd = Spawn::new(pasta);
    cmd.args(["--foreground", "--quiet"]);
    if rootless {
        // Not root: pasta joins the box's user and network namespaces by their /proc
        // files, opened before it isolates itself (no bind mount: that needs root).
        cmd.arg("--config-net")
            .args(forward_args(published))
            .arg("--userns")
            .arg(format!("/proc/{pid}/ns/user"))
            .arg("--netns")
            .arg(format!("/proc/{pid}/ns/net"));
    } else {
        cmd.args(["--runas", "0", "--config-net"])
            .args(forward_args(published))
            .arg("--netns")
            .arg(netns_file);
    }
    cmd.log_file(log).map_err(spawn_err)?;
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
    if !rootless {
        // SAFETY: the hook makes only raw system calls on data built before the fork.
        unsafe { cmd.pre_exec(hook) };
    }
    let pasta_proc = cmd.spawn().map_err(spawn_err)?;
    let route = PathBuf::from(format!("/proc/{pid}/net/route"));
    let deadline = Instant::now() + NET_TIMEOUT;
    let mut waiting = published.iter();
    let mut port = waiting.next();
    let mut routed = false;
    loop {
        routed = routed || has_default_route(&route);
        while let Some(p) = port.filter(|_| routed) {
            match ports::holds_port(pasta_proc.pid(), p) {
                Some(true) => port = waiting.next(),
                // pasta's descriptors hidden from us: the port busy while it lives is
                // the best sign left that it holds it.
                None if ports::check_free(p).is_err() => port = waiting.next(),
                _ => break,
            }
        }
        if routed && port.is_none() {
            return Ok(pasta_proc);
        }
        let exited = !pasta_proc.identity().is_alive();
        if exited || Instant::now() >= deadline {
            pasta_proc.kill_and_reap();
            // A port taken between the check and pasta's bind: name it and its holder.
            if let Some(cause) = published.iter().find_map(|p| ports::check_free(p).err()) {
                return Err(port_error(cause));
            }
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            let what = if routed {
                "before it held every published port"
            } else {
                "before the box had a default route"
            };
            return Err(BackendError::Spawn {
                backend: NAME.into(),
                what: echo::path(pasta).to_string(),
                source: std::io::Error::other(format!(
                    "{} {what} (log {}: {})",
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

/// Rootless, pasta opens `/dev/net/tun` in the box's user namespace, where a device
/// owned by an unmapped user (root) opens only if its mode lets everybody: `Err` says
/// why it does not here.
pub fn rootless_tun() -> Result<(), String> {
    let tun = Path::new("/dev/net/tun");
    match std::fs::metadata(tun) {
        Err(e) => Err(format!("{} is missing ({e})", tun.display())),
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o006 == 0o006 {
                Ok(())
            } else {
                Err(format!(
                    "{} is mode {mode:04o}: only its owner may open it, and in the box's \
                     user namespace nobody is (pasta needs it)",
                    tun.display()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ports: &[&str]) -> String {
        let ports: Vec<PortMapping> = ports.iter().map(|p| p.parse().unwrap()).collect();
        forward_args(&ports).join(" ")
    }

    #[test]
    fn pasta_forwards_exactly_the_published_ports() {
        assert_eq!(args(&[]), "-t none -u none -T none -U none");
        assert_eq!(
            args(&["8080:80"]),
            "--tcp-ports 127.0.0.1/8080:80 -u none -T none -U none",
            "loopback unless an address is given; no UDP forwarded"
        );
        assert_eq!(
            args(&["0.0.0.0:8080:80", "[::1]:5353:53/udp"]),
            "--tcp-ports 0.0.0.0/8080:80 --udp-ports ::1/5353:53 -T none -U none"
        );
    }
}
