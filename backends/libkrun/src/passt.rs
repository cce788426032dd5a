//! One passt per box: the network proxy libkrun connects to with
//! `krun_add_net_unixstream`. passt binds the `net` address itself.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use boxsock_core::process::OwnedProcess;
use boxsock_core::settings::PortMapping;
use boxsock_core::spawn::{Spawn, SpawnError};
use std::time::{Duration, Instant};

/// Default passt binary (found on `PATH`).
pub const DEFAULT_PASST: &str = "passt";
/// How long to wait for passt's socket to appear.
pub const DEFAULT_PASST_TIMEOUT: Duration = Duration::from_secs(5);

/// The descriptor at which passt inherits its end of the `net` socketpair.
pub const PASST_FD: i32 = 3;

/// How long [`Passt::start_fd`] watches passt for an early exit.
pub const PASST_SETTLE: Duration = Duration::from_millis(100);

/// Why passt could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasstError {
    /// The binary could not be executed.
    #[error("cannot start {}: {source}", boxsock_core::echo::path(binary))]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It exited before binding, or never bound.
    #[error(
        "{} did not bind {} ({what}); its output: {output}",
        boxsock_core::echo::path(binary),
        boxsock_core::echo::path(socket)
    )]
    NotBound {
        /// The binary.
        binary: PathBuf,
        /// The socket path.
        socket: PathBuf,
        /// "exited with …" or "timed out after …".
        what: String,
        /// What it wrote to stdout/stderr (tail).
        output: String,
    },
    /// Something that is not a socket occupies the path.
    #[error(
        "refusing to start passt: {} exists and is not a socket",
        boxsock_core::echo::path(path)
    )]
    Occupied {
        /// The path.
        path: PathBuf,
    },
    /// A published port could not be bound: found busy before passt ran, or passt
    /// exited (or never bound it) because another process took it first.
    #[error(
        "{cause}{}",
        output.as_deref().map(|o| format!("; passt's output: {o}")).unwrap_or_default()
    )]
    Port {
        /// Why, naming the address, port, protocol and holder.
        cause: crate::ports::PortError,
        /// What passt wrote (tail); `None` when it was not started (the check refused).
        output: Option<String>,
    },
    /// The output log could not be opened.
    #[error("cannot open passt log {}: {source}", boxsock_core::echo::path(path))]
    Log {
        /// The log path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running passt. Dropping it kills and reaps it, unless it was [`Passt::detach`]ed
/// (so an error or a panic between start and hand-over leaks nothing).
#[derive(Debug)]
pub struct Passt {
    process: Option<OwnedProcess>,
    pid: i32,
    socket: PathBuf,
}

impl Drop for Passt {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill_and_reap();
        }
    }
}

/// Reap `pid` (our child) if it has exited: how it ended.
fn try_wait(pid: i32) -> Option<String> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(format!("exited with exit status: {code}")),
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            Some(format!("exited with signal: {} ({sig})", sig as i32))
        }
        _ => None,
    }
}

/// passt's arguments for a box's network on descriptor [`PASST_FD`] (`--fd`, which
/// implies `--one-off`), running as `uid:gid`, forwarding `ports`
/// ([`crate::ports::passt_args`]).
pub fn fd_args(uid: u32, gid: u32, ports: &[PortMapping]) -> Vec<String> {
    let mut v = base_args(uid, gid);
    v.extend(["--fd".to_owned(), PASST_FD.to_string()]);
    v.extend(crate::ports::passt_args(ports));
    v
}

/// In the foreground, quiet, running as `uid:gid`.
fn base_args(uid: u32, gid: u32) -> Vec<String> {
    let mut v: Vec<String> = ["--foreground", "--quiet", "--runas"].map(String::from).into();
    v.push(format!("{uid}:{gid}"));
    v
}

/// The caller's effective uid and gid.
fn ids() -> (u32, u32) {
    (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
}

/// passt with `args` (which run it as the caller's uid/gid: it would otherwise drop to
/// `nobody`), stdout and stderr appended to `log`, in its own session, with
/// nothing inherited but stdio (and what the caller hands); with the log's length
/// before this run, where its output starts.
fn command<'a>(
    binary: &Path,
    log: &Path,
    args: Vec<String>,
) -> Result<(Spawn<'a>, u64), PasstError> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(log)
        .map_err(|source| PasstError::Log { path: log.to_path_buf(), source })?;
    let start_offset = out.metadata().map(|m| m.len()).unwrap_or(0);
    let err =
        out.try_clone().map_err(|source| PasstError::Log { path: log.to_path_buf(), source })?;
    let mut cmd = Spawn::new(binary);
    cmd.args(args).stdin(Stdio::null()).stdout(out.into()).stderr(err.into());
    Ok((cmd, start_offset))
}

impl Passt {
    /// Start `binary` bound at `socket`, in its own session, running as the caller's
    /// uid/gid (passt would otherwise drop to `nobody` before binding, and could not bind
    /// in the owner's 0700 directory). stdout and stderr go to `log`. Waits, at most
    /// `timeout`, until the socket exists.
    pub fn start(
        binary: &Path,
        socket: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<Passt, PasstError> {
        match std::fs::symlink_metadata(socket) {
            Ok(m) if m.file_type().is_socket() => {
                // A stale socket from a dead passt: it must go, or the wait below would
                // see it at once.
                let _ = std::fs::remove_file(socket);
            }
            Ok(_) => return Err(PasstError::Occupied { path: socket.to_path_buf() }),
            Err(_) => {}
        }
        let (uid, gid) = ids();
        let (mut cmd, start_offset) = command(binary, log, base_args(uid, gid))?;
        cmd.arg("--socket").arg(socket);
        let spawn_err =
            |e: SpawnError| PasstError::Spawn { binary: binary.to_path_buf(), source: e.into_io() };
        let mut passt = Passt::new(cmd.spawn().map_err(spawn_err)?, socket.to_path_buf());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(m) = std::fs::symlink_metadata(socket) {
                if m.file_type().is_socket() && is_listening(socket) {
                    tracing::debug!(pid = passt.pid, socket = %boxsock_core::echo::path(socket), "passt bound");
                    return Ok(passt);
                }
            }
            let what = match try_wait(passt.pid) {
                Some(how) => {
                    passt.process = None;
                    Some(how)
                }
                None if Instant::now() >= deadline => {
                    // Killed, not only let go: a passt that never bound must not outlive
                    // the start that gave up on it.
                    if let Some(p) = passt.process.take() {
                        p.kill_and_reap();
                    }
                    Some(format!("timed out after {timeout:?}"))
                }
                None => None,
            };
            if let Some(what) = what {
                return Err(PasstError::NotBound {
                    binary: binary.to_path_buf(),
                    socket: socket.to_path_buf(),
                    what,
                    output: read_tail(log, start_offset),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Start passt on one end of a connected socketpair (`--fd 3`): it serves exactly
    /// that connection and exits when it closes (`--fd` implies `--one-off`). Nothing is
    /// bound on the filesystem, so there is no path for anyone to redirect, and the
    /// other end goes to libkrun as a descriptor. passt closes the descriptors it
    /// inherits at startup except stdio and the one named by `--fd`, so a
    /// `/proc/self/fd` path could not reach it anyway.
    ///
    /// Returns once passt has run for `settle` without exiting (it has nothing to bind
    /// that could be waited for); an early exit is [`PasstError::NotBound`] with its
    /// output.
    pub fn start_fd(
        binary: &Path,
        end: std::os::fd::OwnedFd,
        log: &Path,
        settle: Duration,
    ) -> Result<Passt, PasstError> {
        Passt::start_fd_forwarding(binary, end, log, settle, &[], DEFAULT_PASST_TIMEOUT)
    }

    /// [`Passt::start_fd`] forwarding `ports` to the guest. Each port is checked free
    /// first ([`crate::ports::check_free`], naming its holder); then, past `settle`,
    /// this waits (at most `timeout`) until passt holds every one. passt exiting or
    /// never binding one (another process took it meanwhile) is [`PasstError::Port`],
    /// naming the holder when it can be read, with passt's output.
    pub fn start_fd_forwarding(
        binary: &Path,
        end: std::os::fd::OwnedFd,
        log: &Path,
        settle: Duration,
        ports: &[PortMapping],
        timeout: Duration,
    ) -> Result<Passt, PasstError> {
        use std::os::fd::AsFd;
        crate::ports::check_all_free(ports)
            .map_err(|cause| PasstError::Port { cause, output: None })?;
        let (uid, gid) = ids();
        let (mut cmd, start_offset) = command(binary, log, fd_args(uid, gid, ports))?;
        cmd.hand(end.as_fd(), PASST_FD);
        let spawned = cmd.spawn();
        drop(end);
        let socket = PathBuf::from(format!("fd:{PASST_FD}"));
        let spawn_err =
            |e: SpawnError| PasstError::Spawn { binary: binary.to_path_buf(), source: e.into_io() };
        let mut passt = Passt::new(spawned.map_err(spawn_err)?, socket.clone());
        let deadline = Instant::now() + settle;
        while Instant::now() < deadline {
            if let Some(how) = try_wait(passt.pid) {
                passt.process = None;
                // A port taken since the check: name it and its holder.
                if let Some(cause) = ports.iter().find_map(|p| crate::ports::check_free(p).err()) {
                    let output = Some(read_tail(log, start_offset));
                    return Err(PasstError::Port { cause, output });
                }
                return Err(PasstError::NotBound {
                    binary: binary.to_path_buf(),
                    socket,
                    what: how,
                    output: read_tail(log, start_offset),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let deadline = Instant::now() + timeout;
        for p in ports {
            loop {
                let exited = try_wait(passt.pid);
                if exited.is_some() {
                    passt.process = None;
                } else {
                    match crate::ports::holds_port(passt.pid, p) {
                        Some(true) => break,
                        // passt's descriptors are hidden from us (it made itself
                        // non-dumpable): the port busy while passt lives is the best
                        // sign left that passt holds it.
                        None if crate::ports::check_free(p).is_err() => break,
                        _ => {}
                    }
                }
                if exited.is_some() || Instant::now() >= deadline {
                    let output = Some(read_tail(log, start_offset));
                    let cause = match crate::ports::check_free(p) {
                        Err(cause) => cause,
                        Ok(()) => crate::ports::PortError::NotBound {
                            port: *p,
                            what: exited.unwrap_or_else(|| format!("timed out after {timeout:?}")),
                        },
                    };
                    return Err(PasstError::Port { cause, output });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        tracing::debug!(pid = passt.pid, ports = ports.len(), "passt serving its socketpair end");
        Ok(passt)
    }

    fn new(process: OwnedProcess, socket: PathBuf) -> Passt {
        Passt { pid: process.pid(), process: Some(process), socket }
    }

    /// passt's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The socket it bound.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kill it and reap it.
    pub fn kill(self) {
        drop(self);
    }

    /// Give up ownership: the caller owns (kills and reaps) the process. `None` once it
    /// has been reaped here.
    pub fn detach(mut self) -> Option<OwnedProcess> {
        self.process.take()
    }
}

/// Whether a socket bound at `path` is listening (passt binds, then listens: the file
/// appears before a connect can succeed). Linux: read `/proc/net/unix` (no side effect
/// on passt).
fn is_listening(path: &Path) -> bool {
    crate::sys::is_listening(path)
}

fn read_tail(log: &Path, from: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.take(4096).read_to_string(&mut s);
    }
    let s = s
        .lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if s.is_empty() { "(nothing)".into() } else { s }
}
