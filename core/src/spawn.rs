//! One way to start a box's helper process (the host agent, the libkrun shim, passt):
//! in its own session, with exactly stdio and the descriptors it is handed, returning
//! an [`OwnedProcess`] whose identity and pidfd were captured at spawn.
//!
//! Between fork and exec the child (in this order): `setsid`; copies every handed
//! source to a close-on-exec temporary numbered above every target, then `dup2`s each
//! temporary onto its target (which clears `FD_CLOEXEC` there); then
//! [`cloexec_except`](crate::fds::cloexec_except) the targets. Going through
//! temporaries makes any permutation safe: a source may carry another's target number
//! (a swap, a chain), and placing one never clobbers a source not yet placed.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::echo;
use crate::process::OwnedProcess;

/// Why a process could not be started. Every variant names the program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// A descriptor was to be handed at stdio's numbers (0, 1, 2).
    #[error(
        "cannot start {}: descriptor number {target} is stdio's; \
         handed descriptors go at 3 or above",
        echo::path(program)
    )]
    StdioTarget {
        /// The program.
        program: PathBuf,
        /// The target number.
        target: RawFd,
    },
    /// Two descriptors were to be handed at one number.
    #[error("cannot start {}: two descriptors are handed at number {target}", echo::path(program))]
    DuplicateTarget {
        /// The program.
        program: PathBuf,
        /// The target number.
        target: RawFd,
    },
    /// Its log file could not be opened.
    #[error(
        "cannot start {}: cannot open its log {}: {source}",
        echo::path(program),
        echo::path(path)
    )]
    Log {
        /// The program.
        program: PathBuf,
        /// The log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// fork/exec failed (no such program, not executable, a failed `setsid` or
    /// descriptor placement in the child…).
    #[error("cannot start {}: {source}", echo::path(program))]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It started, but what it was to read on stdin could not be written (it has been
    /// killed and reaped).
    #[error("{} (pid {pid}) started, but writing its stdin failed: {source}", echo::path(program))]
    Stdin {
        /// The program.
        program: PathBuf,
        /// Its pid (now reaped).
        pid: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It started, but its identity (pidfd, start time) could not be captured (it has
    /// been killed and reaped).
    #[error("{} started, but its identity could not be read: {source}", echo::path(program))]
    Identity {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The program that was to be started.
    pub fn program(&self) -> &Path {
        match self {
            SpawnError::StdioTarget { program, .. }
            | SpawnError::DuplicateTarget { program, .. }
            | SpawnError::Log { program, .. }
            | SpawnError::Spawn { program, .. }
            | SpawnError::Stdin { program, .. }
            | SpawnError::Identity { program, .. } => program,
        }
    }

    /// The OS error, or (for the checks made before forking) an `InvalidInput` one
    /// saying what was wrong; for `BackendError::Spawn`, which names the program itself.
    pub fn into_io(self) -> io::Error {
        match self {
            SpawnError::Spawn { source, .. } => source,
            SpawnError::Log { path, source, .. } => io::Error::new(
                source.kind(),
                format!("cannot open its log {}: {source}", echo::path(&path)),
            ),
            SpawnError::Stdin { pid, source, .. } => {
                io::Error::new(source.kind(), format!("pid {pid}: writing its stdin: {source}"))
            }
            SpawnError::Identity { source, .. } => {
                io::Error::new(source.kind(), format!("reading its identity: {source}"))
            }
            e @ (SpawnError::StdioTarget { .. } | SpawnError::DuplicateTarget { .. }) => {
                let text = e.to_string();
                io::Error::new(io::ErrorKind::InvalidInput, text)
            }
        }
    }
}

/// A process to start (see the module documentation). Descriptors handed with
/// [`Spawn::hand`] are borrowed until [`Spawn::spawn`] returns.
#[derive(Debug)]
pub struct Spawn<'a> {
    program: PathBuf,
    cmd: Command,
    handed: Vec<(BorrowedFd<'a>, RawFd)>,
    stdin_bytes: Option<Vec<u8>>,
}

impl<'a> Spawn<'a> {
    /// `program`, with stdin, stdout and stderr `/dev/null` until set, and the caller's
    /// environment.
    pub fn new(program: impl AsRef<Path>) -> Self {
        let program = program.as_ref().to_path_buf();
        let mut cmd = Command::new(&program);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        Spawn { program, cmd, handed: Vec::new(), stdin_bytes: None }
    }

    /// One argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.cmd.args(args);
        self
    }

    /// Environment variables added to the caller's.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    /// No environment but what [`Spawn::envs`] adds (a sandboxed process must not see
    /// the caller's).
    pub fn env_clear(&mut self) -> &mut Self {
        self.cmd.env_clear();
        self
    }

    /// Run `hook` in the forked child before everything this helper does there
    /// (`setsid`, descriptor placement) and before exec; a backend that builds the
    /// child's namespaces and root (the `sandbox` backend) does it here, so the
    /// process it returns is the one it prepared.
    ///
    /// # Safety
    ///
    /// As for [`CommandExt::pre_exec`]: `hook` runs in a copy of a possibly
    /// multi-threaded process between fork and exec, so it must only make
    /// async-signal-safe calls (raw system calls on data built before the fork).
    pub unsafe fn pre_exec<F>(&mut self, hook: F) -> &mut Self
    where
        F: FnMut() -> io::Result<()> + Send + Sync + 'static,
    {
        // SAFETY: the caller upholds `pre_exec`'s contract (see this function's).
        unsafe { self.cmd.pre_exec(hook) };
        self
    }

    /// stdin.
    pub fn stdin(&mut self, stdin: Stdio) -> &mut Self {
        self.cmd.stdin(stdin);
        self.stdin_bytes = None;
        self
    }

    /// stdin is a pipe that receives `bytes` once the process has started, then is
    /// closed. A failed write kills and reaps the process ([`SpawnError::Stdin`]).
    pub fn stdin_bytes(&mut self, bytes: Vec<u8>) -> &mut Self {
        self.cmd.stdin(Stdio::piped());
        self.stdin_bytes = Some(bytes);
        self
    }

    /// stdout.
    pub fn stdout(&mut self, stdout: Stdio) -> &mut Self {
        self.cmd.stdout(stdout);
        self
    }

    /// stderr.
    pub fn stderr(&mut self, stderr: Stdio) -> &mut Self {
        self.cmd.stderr(stderr);
        self
    }

    /// stdout and stderr appended to `path` (created 0644 if missing, as `>>` does).
    pub fn log_file(&mut self, path: &Path) -> Result<&mut Self, SpawnError> {
        let log_err = |source| SpawnError::Log {
            program: self.program.clone(),
            path: path.to_path_buf(),
            source,
        };
        let out = OpenOptions::new().create(true).append(true).open(path).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        self.cmd.stdout(out).stderr(err);
        Ok(self)
    }

    /// Hand `fd` to the process at descriptor number `target` (3 or more). The same
    /// source may be handed at several targets; a target only once.
    pub fn hand(&mut self, fd: BorrowedFd<'a>, target: RawFd) -> &mut Self {
        self.handed.push((fd, target));
        self
    }

    /// Start it: returns once it has been exec'ed (an exec failure is an error here,
    /// naming the program).
    pub fn spawn(&mut self) -> Result<OwnedProcess, SpawnError> {
        let program = self.program.clone();
        let targets: Vec<RawFd> = self.handed.iter().map(|(_, t)| *t).collect();
        for (i, &target) in targets.iter().enumerate() {
            if target < 3 {
                return Err(SpawnError::StdioTarget { program, target });
            }
            if targets[..i].contains(&target) {
                return Err(SpawnError::DuplicateTarget { program, target });
            }
        }
        let sources: Vec<RawFd> = self.handed.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
        // Temporaries go above every target, so no temporary is a target.
        let floor = targets.iter().copied().max().map_or(3, |m| m + 1);
        let mut temps: Vec<RawFd> = vec![-1; targets.len()];
        let keep = targets.clone();
        let placed = targets.clone();
        // SAFETY: the closure runs in the forked child before exec. It calls only
        // setsid(2), fcntl(2), dup2(2) and `cloexec_except` (close_range(2) or
        // fcntl(2)), which are async-signal-safe; it allocates nothing (the vectors were
        // built before the fork and are only indexed) and touches no lock. Every source
        // descriptor is borrowed for 'a, so it stays open in the parent until `spawn`
        // returns.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                for (temp, &src) in temps.iter_mut().zip(&sources) {
                    *temp = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor);
                    if *temp == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (&temp, &target) in temps.iter().zip(&targets) {
                    if libc::dup2(temp, target) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                crate::fds::cloexec_except(&keep)
            });
        }
        let mut child = self
            .cmd
            .spawn()
            .map_err(|source| SpawnError::Spawn { program: program.clone(), source })?;
        let stdin = child.stdin.take();
        let process = OwnedProcess::from_child(child)
            .map_err(|source| SpawnError::Identity { program: program.clone(), source })?;
        if let Some(bytes) = self.stdin_bytes.take() {
            let written = match stdin {
                Some(mut s) => s.write_all(&bytes),
                None => Err(io::Error::other("no stdin pipe")),
            };
            if let Err(source) = written {
                let pid = process.pid();
                process.kill_and_reap();
                return Err(SpawnError::Stdin { program, pid, source });
            }
        }
        let pid = process.pid();
        tracing::debug!(program = %echo::path(&program), pid, handed = ?placed, "spawned");
        Ok(process)
    }
}

#[cfg(test)]
mod tests;
