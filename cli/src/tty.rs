//! The terminal side of `run`/`exec`: raw mode (restored on every exit path), the
//! window size (at start and on SIGWINCH), and signals forwarded to the command.
//!
//! - With `-t`, the command runs on a pty in the box. When stdin is a terminal and
//!   `-i` is given, this terminal is put in raw mode, so Ctrl-C, Ctrl-Z and Ctrl-\ are
//!   plain bytes typed into the box's pty, whose line discipline turns them into
//!   SIGINT, SIGTSTP and SIGQUIT for the command's foreground group. The mode is
//!   restored when the guard drops (normal end, error, broken pipe), from the panic
//!   hook, and signals that would end this process (SIGINT, SIGTERM, SIGHUP) are caught
//!   and forwarded instead, so they end it through the normal path too.
//! - `-i -t` with a stdin that is not a terminal is refused as docker does ("the input
//!   device is not a TTY"), with status 125.
//! - Without `-t`, SIGINT, SIGTERM and SIGHUP received by this process are forwarded to
//!   the command's process group as signal frames; the command decides.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use nix::sys::termios::{self, SetArg, Termios};

/// The terminal state to put back, for the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is open for the life of the process (the standard library never
    // closes it), so a 'static borrow of it is sound.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// Whether fd 0 is a terminal.
pub fn stdin_is_tty() -> bool {
    termios::tcgetattr(stdin_fd()).is_ok()
}

/// The window size of whichever of stdin, stdout and stderr is a terminal.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in 0..=2 {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to
        // a live local; fds 0–2 are open (or the call fails with EBADF).
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ as _, &mut ws as *mut libc::winsize) };
        if r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// This terminal in raw mode until dropped.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Put stdin's terminal in raw mode and install the panic hook that restores it.
    pub fn enter() -> nix::Result<RawMode> {
        let saved = termios::tcgetattr(stdin_fd())?;
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved.clone());
        install_panic_hook();
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin_fd(), SetArg::TCSADRAIN, &raw)?;
        tracing::debug!("terminal in raw mode");
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore(&self.saved);
        SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// This terminal without echo (typed characters are not shown; the newline is) until
/// dropped: what a password prompt reads from. Restored like [`RawMode`]: on drop and
/// from the panic hook; the caller turns SIGINT and SIGTERM into a normal return.
#[derive(Debug)]
pub struct NoEcho {
    saved: Termios,
}

impl NoEcho {
    /// Turn echo off on stdin's terminal (line editing stays).
    pub fn enter() -> nix::Result<NoEcho> {
        use termios::LocalFlags;
        let saved = termios::tcgetattr(stdin_fd())?;
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved.clone());
        install_panic_hook();
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(stdin_fd(), SetArg::TCSAFLUSH, &quiet)?;
        Ok(NoEcho { saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        restore(&self.saved);
        SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn restore(t: &Termios) {
    if let Err(e) = termios::tcsetattr(stdin_fd().as_fd(), SetArg::TCSADRAIN, t) {
        tracing::warn!(error = %e, "cannot restore the terminal");
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(t) = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take() {
                restore(&t);
            }
            previous(info);
        }));
    });
}

/// Forward SIGINT, SIGTERM and SIGHUP to the command, and with a tty SIGWINCH as a
/// resize, until the returned task is aborted.
pub fn forward_signals(child: boxsock::exec::Control, tty: bool) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut winch)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
            signal(SignalKind::window_change()),
        ) else {
            tracing::warn!(
                "cannot install signal handlers; signals end boxsock instead of reaching the command"
            );
            return;
        };
        loop {
            let sig = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
                _ = hup.recv() => libc::SIGHUP,
                _ = winch.recv() => libc::SIGWINCH,
            };
            let sent = match sig {
                libc::SIGWINCH if tty => match window_size() {
                    Some((rows, cols)) => child.resize(rows, cols),
                    None => Ok(()),
                },
                libc::SIGWINCH => Ok(()),
                s => child.signal(s),
            };
            tracing::debug!(signal = sig, ok = sent.is_ok(), "forwarded");
            if sent.is_err() {
                return;
            }
        }
    })
}
