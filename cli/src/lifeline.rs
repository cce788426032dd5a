//! `run --rm`'s lifeline (decision 0012): a guardian process that removes the box when
//! the client dies before removing it itself (`kill -9`, an OOM kill, a crash).
//!
//! Before the box is created, `run --rm` chooses its id and starts this same executable
//! as `boxsock <global options> __lifeline --box <id> --owner-pid <pid> --owner-start
//! <t>`, in a session of its own (a signal to the client's process group or terminal
//! does not reach it), holding at [`FD`] the read end of a pipe whose write end only
//! the client holds (close-on-exec, so no box process inherits it either). The
//! guardian blocks in one `read`:
//!
//! - the client removed the box (or never made one) and writes [`DISARM`]: the
//!   guardian exits at once, having opened nothing;
//! - the pipe ends without it (end of file: every descriptor of the client is closed,
//!   so the client is gone and none of its threads still works on the box): the
//!   guardian opens the home like any writing command and calls
//!   [`boxsock::Runtime::remove_owned`], which removes only a box tied to that client.
//!
//! The store's auto-remove owner stays as the backstop for a guardian that was itself
//! killed: the next writing command removes the box.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use boxsock::{BoxId, ProcessIdentity};

/// The hidden verb the guardian runs as.
pub(crate) const VERB: &str = "__lifeline";

/// The descriptor the guardian holds the pipe's read end at.
pub(crate) const FD: RawFd = 3;

/// The byte the client writes once it has dealt with its box itself.
const DISARM: u8 = b'D';

/// How long the guardian waits, after the pipe ended, for the client's process to be
/// gone (the kernel closes a dying process's descriptors before it has exited).
pub(crate) const CLIENT_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the lifeline could not be started, or its descriptor not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LifelineError {
    /// `pipe2` failed.
    #[error("cannot make the lifeline's pipe: {0}")]
    Pipe(#[source] nix::errno::Errno),
    /// The running executable cannot be named.
    #[error("cannot find the boxsock executable to start the lifeline: {0}")]
    Exe(#[source] io::Error),
    /// Spawning the guardian failed.
    #[error("cannot start the lifeline {exe}: {source}")]
    Spawn { exe: String, source: io::Error },
    /// The guardian was not started by `run --rm` (descriptor [`FD`] is not a pipe).
    #[error(
        "descriptor {fd} is not a pipe: `boxsock {VERB}` is started by `run --rm`, never by hand"
    )]
    NotAPipe { fd: RawFd },
}

/// The client's end of a started lifeline.
#[derive(Debug)]
pub(crate) struct Lifeline {
    write: std::fs::File,
}

impl Lifeline {
    /// Start the guardian of box `id`, created next by this process (`owner`).
    /// `global` are the global options it opens the home with (the client's own).
    pub(crate) fn spawn(
        global: Vec<OsString>,
        id: &BoxId,
        owner: ProcessIdentity,
    ) -> Result<Lifeline, LifelineError> {
        // Both ends close-on-exec: the read end is moved to FD in the guardian only.
        let t = std::time::Instant::now();
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LifelineError::Pipe)?;
        let exe = std::env::current_exe().map_err(LifelineError::Exe)?;
        let mut cmd = Command::new(&exe);
        cmd.args(global)
            .arg(VERB)
            .arg("--box")
            .arg(id.as_str())
            .arg("--owner-pid")
            .arg(owner.pid.to_string())
            .arg("--owner-start")
            .arg(owner.start_time.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // stderr is inherited: a removal that fails after the client died is said there.
        let read_fd = read.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setsid(2), dup2(2), fcntl(2) and close_range(2) (`cloexec_except`), which are
        // async-signal-safe; it allocates nothing and takes no lock. `read_fd` stays open
        // in the parent (`read`) until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session: a SIGKILL (or SIGINT, SIGHUP) of the client's process
                // group or terminal does not reach the guardian.
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                if read_fd == FD {
                    if libc::fcntl(FD, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(read_fd, FD) == -1 {
                    // dup2 clears FD_CLOEXEC on the new descriptor.
                    return Err(io::Error::last_os_error());
                }
                boxsock::boxsock_core::fds::cloexec_except(&[FD])
            });
        }
        let child = cmd.spawn().map_err(|source| LifelineError::Spawn {
            exe: boxsock::boxsock_core::echo::path(&exe).to_string(),
            source,
        })?;
        // Not waited for: it outlives this process only on the path where this process
        // is killed, and is reaped by whoever inherits it.
        drop(child);
        drop(read);
        tracing::debug!(box_id = %id, spawn_us = t.elapsed().as_micros(), "lifeline started");
        Ok(Lifeline { write: std::fs::File::from(write) })
    }

    /// The box is dealt with (removed, or never created): tell the guardian, which then
    /// exits without opening anything.
    pub(crate) fn disarm(mut self) {
        // A guardian that is gone (killed) needs no word: EPIPE is ignored.
        let _ = self.write.write_all(&[DISARM]);
    }
}

/// How the client's side of the pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client disarmed the lifeline: nothing to do.
    Disarmed,
    /// The client is gone without disarming it.
    ClientGone,
}

/// In the guardian: block until the client disarms the lifeline or is gone.
pub(crate) fn wait() -> Result<End, LifelineError> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes the `stat` buffer it is given, which is valid and large
    // enough; a descriptor that is not open is EBADF.
    if unsafe { libc::fstat(FD, st.as_mut_ptr()) } == -1 {
        return Err(LifelineError::NotAPipe { fd: FD });
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(LifelineError::NotAPipe { fd: FD });
    }
    // SAFETY: FD is open (fstat succeeded), is the pipe `run --rm` handed over, and
    // nothing else in this process owns it: it is taken before anything else opens a
    // descriptor that could reuse the number.
    let mut pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(FD) });
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte) {
            Ok(1) if byte[0] == DISARM => return Ok(End::Disarmed),
            // Nothing else is ever written; anything else is not a disarm.
            Ok(1) => continue,
            Ok(_) => return Ok(End::ClientGone),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A pipe that cannot be read says nothing about the client: treat it as
            // gone; the removal itself checks that the client is.
            Err(_) => return Ok(End::ClientGone),
        }
    }
}
