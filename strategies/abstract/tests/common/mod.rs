//! Helpers for tests that need a second process: fork a child that runs only raw libc
//! calls on data prepared before the fork (safe in a multi-threaded test binary), drop
//! it to `nobody`, and wait for it with a timeout.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// Exit code a child uses for "this machine cannot run the test" (e.g. unshare denied).
pub const SKIP: i32 = 77;

/// Whether the test runs as root (needed to drop to another uid or to unshare).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A `sockaddr_un` for an abstract name, built before forking.
pub struct RawAddr {
    /// The address.
    pub addr: libc::sockaddr_un,
    /// Its length (family + NUL + name).
    pub len: libc::socklen_t,
}

impl RawAddr {
    /// `\0name`.
    pub fn abstract_name(name: &[u8]) -> RawAddr {
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        assert!(name.len() < addr.sun_path.len());
        for (i, b) in name.iter().enumerate() {
            addr.sun_path[i + 1] = *b as libc::c_char;
        }
        let len =
            (std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len()) as libc::socklen_t;
        RawAddr { addr, len }
    }

    /// As a `sockaddr` pointer for bind/connect.
    pub fn ptr(&self) -> *const libc::sockaddr {
        (&raw const self.addr).cast()
    }
}

/// In a child: drop to `nobody` for real (groups, gid, uid). Returns false on failure.
pub fn drop_to_nobody() -> bool {
    // SAFETY: plain syscalls with valid arguments (an empty group list).
    unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(NOBODY) == 0
            && libc::setuid(NOBODY) == 0
            && libc::getuid() == NOBODY
            && libc::geteuid() == NOBODY
    }
}

/// Serialises the tests of one binary that fork or that assert a name became free: a
/// child forked by one test would otherwise inherit (and keep bound) another test's
/// sockets for a moment.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A forked child, killed and reaped on drop unless waited for.
pub struct Child {
    /// Its pid.
    pub pid: libc::pid_t,
    reaped: bool,
}

impl Child {
    /// Wait up to 20 s for it to exit and return its exit code (128 + signal if killed).
    pub fn wait(mut self) -> i32 {
        self.reaped = true;
        wait_child(self.pid)
    }

    /// SIGKILL it.
    pub fn kill(&self) {
        kill(self.pid);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            kill(self.pid);
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// Fork; the child closes every descriptor above 2 except `keep`, runs `f` (raw libc
/// calls only) and `_exit`s with its result.
pub fn fork_child(keep: &[libc::c_int], f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only closes descriptors, runs `f`, which by contract makes raw
    // syscalls on memory prepared before the fork, and `_exit`s without running
    // destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        for fd in 3..4096 {
            if !keep.contains(&fd) {
                // SAFETY: closing descriptors in the child, which owns its copies.
                unsafe { libc::close(fd) };
            }
        }
        let code = f();
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

/// Wait up to 20 s for `pid` to exit and return its exit code (killing it on timeout).
fn wait_child(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            return 128 + libc::WTERMSIG(status);
        }
        assert!(r == 0, "waitpid: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            kill(pid);
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("child {pid} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL a child we forked.
fn kill(pid: libc::pid_t) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A pipe (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds points to two c_ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned two new descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Wait until `fd` is readable (or hung up), up to `timeout`.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    n == 1
}

/// Read one byte from a pipe, waiting up to 10 s; None on timeout or EOF.
pub fn read_byte(fd: &OwnedFd) -> Option<u8> {
    use std::os::fd::AsFd;
    if !wait_readable(fd.as_fd(), Duration::from_secs(10)) {
        return None;
    }
    let mut b = 0u8;
    // SAFETY: reading one byte into a valid buffer.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut b).cast(), 1) };
    (n == 1).then_some(b)
}

/// In a child: write one byte to a pipe.
pub fn write_byte(fd: libc::c_int, b: u8) {
    // SAFETY: writing one byte from a valid buffer.
    unsafe { libc::write(fd, (&raw const b).cast(), 1) };
}

/// In a child: a stream socket with a 10 s receive timeout, or -1.
pub fn stream_socket() -> libc::c_int {
    // SAFETY: plain syscalls; the timeval outlives the call.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s >= 0 {
            let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        s
    }
}

/// The errno of the last failed call (in a child).
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A tracing writer into a shared buffer, to assert on what a library logs.
#[derive(Clone, Default)]
pub struct LogBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Run `f` with a subscriber (everything at debug and above, no colours) writing here,
    /// as the calling thread's default.
    pub fn capture<T>(&self, f: impl FnOnce() -> T) -> T {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::with_default(sub, f)
    }
}
