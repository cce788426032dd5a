//! The pty of an exec with `tty`: the master side held by the agent (non-blocking,
//! driven by tokio), and the setup of the slave as the command's controlling terminal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;

use boxsock_core::proto::WinSize;
use tokio::io::unix::AsyncFd;

/// The agent's side of a command's pty.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

/// A new pty: the master, and the slave as the command's three standard streams.
#[derive(Debug)]
pub struct NewPty {
    /// The master, for the agent.
    pub master: PtyMaster,
    /// The slave, once per standard stream (each a duplicate).
    pub stdio: [Stdio; 3],
}

fn winsize(size: WinSize) -> libc::winsize {
    libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 }
}

/// Open a pty of `size`. The master is non-blocking and close-on-exec; the slave is
/// handed out as three `Stdio`s, so the caller's copy is closed once the command is
/// spawned (the master then sees EOF/EIO when the command and its children close it).
pub fn open(size: WinSize) -> io::Result<NewPty> {
    let pair = nix::pty::openpty(&winsize(size), None).map_err(io::Error::from)?;
    for fd in [&pair.master, &pair.slave] {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    let flags = nix::fcntl::fcntl(pair.master.as_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(pair.master.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(io::Error::from)?;
    let out = pair.slave.try_clone()?;
    let err = pair.slave.try_clone()?;
    let stdio = [Stdio::from(pair.slave), Stdio::from(out), Stdio::from(err)];
    // SAFETY: the `OwnedFd` is a valid open descriptor that `AsyncFd` owns from here
    // on; nothing else closes or replaces it.
    let fd = unsafe { AsyncFd::register(pair.master)? };
    Ok(NewPty { master: PtyMaster { fd }, stdio })
}

/// Make the command a session leader whose controlling terminal is its stdin (the
/// pty slave). For `pre_exec`: only async-signal-safe calls.
pub fn become_session_leader() -> io::Result<()> {
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe system calls on the
    // child's own descriptors; no memory is shared or allocated.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl PtyMaster {
    /// Read what the command wrote. `Ok(0)` once every slave descriptor is closed
    /// (Linux reports that as EIO, which is turned into end-of-file here).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref().as_fd(), buf).map_err(io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Type `data` into the terminal.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Set the window size (the kernel sends SIGWINCH to the foreground group).
    pub fn resize(&self, size: WinSize) -> io::Result<()> {
        let ws = winsize(size);
        // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points to a
        // live local; the descriptor is the open pty master.
        let r = unsafe {
            libc::ioctl(
                self.fd.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ as _,
                &ws as *const libc::winsize,
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The terminal's foreground process group (where Ctrl-C would go).
    pub fn foreground(&self) -> Option<i32> {
        nix::unistd::tcgetpgrp(self.fd.get_ref().as_fd()).ok().map(|p| p.as_raw())
    }
}
