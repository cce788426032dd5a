//! Peers in forked children: another user (`nobody`), another network namespace.
//!
//! The test process is multithreaded, so a forked child does only async-signal-safe work:
//! raw system calls on data prepared before the fork, one fixed-size report written to a
//! pipe, then `_exit`. The parent always reaps the child, with a bounded wait.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use boxsock_core::SocketAddress;

/// uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// How long a child may live before it is killed and the check fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// What a peer child saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerReport {
    /// Dropping privileges failed (errno).
    DropFailed(i32),
    /// `unshare(CLONE_NEWNET)` failed (errno).
    UnshareFailed(i32),
    /// `socket()`, `bind()` or `listen()` failed (errno).
    SocketFailed(i32),
    /// `connect()` failed (errno).
    ConnectRefused(i32),
    /// Connected, but the other end closed without sending anything.
    ClosedWithoutService,
    /// Connected and received data: the other end served us.
    Served,
    /// Connected, and nothing happened before the timeout.
    TimedOut,
    /// A listening child is ready.
    Listening,
    /// A datagram was sent.
    Sent,
    /// The child exited without a report (status as given by `waitpid`).
    NoReport(i32),
}

const R_DROP: i32 = 1;
const R_UNSHARE: i32 = 2;
const R_SOCKET: i32 = 3;
const R_CONNECT: i32 = 4;
const R_CLOSED: i32 = 5;
const R_SERVED: i32 = 6;
const R_TIMEOUT: i32 = 7;
const R_LISTENING: i32 = 8;
const R_SENT: i32 = 9;

fn decode(kind: i32, errno: i32) -> PeerReport {
    match kind {
        R_DROP => PeerReport::DropFailed(errno),
        R_UNSHARE => PeerReport::UnshareFailed(errno),
        R_SOCKET => PeerReport::SocketFailed(errno),
        R_CONNECT => PeerReport::ConnectRefused(errno),
        R_CLOSED => PeerReport::ClosedWithoutService,
        R_SERVED => PeerReport::Served,
        R_TIMEOUT => PeerReport::TimedOut,
        R_LISTENING => PeerReport::Listening,
        R_SENT => PeerReport::Sent,
        other => PeerReport::NoReport(other),
    }
}

/// A `sockaddr_un` prepared before the fork.
#[derive(Clone, Copy)]
struct RawAddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

fn raw_addr(a: &SocketAddress) -> RawAddr {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let (bytes, lead): (&[u8], usize) = match a {
        SocketAddress::Path(p) => (p.as_os_str().as_encoded_bytes(), 0),
        SocketAddress::Abstract(n) => (n.as_slice(), 1),
    };
    assert!(lead + bytes.len() < addr.sun_path.len(), "address {a} does not fit sun_path");
    for (i, b) in bytes.iter().enumerate() {
        addr.sun_path[lead + i] = *b as libc::c_char;
    }
    let len = match a {
        SocketAddress::Path(_) => offset + bytes.len() + 1,
        SocketAddress::Abstract(_) => offset + 1 + bytes.len(),
    };
    RawAddr { addr, len: len as libc::socklen_t }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Write the report and leave. Async-signal-safe.
fn report_exit(fd: RawFd, kind: i32, err: i32) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: writing a stack buffer to a pipe fd we own, then _exit; both are
    // async-signal-safe and touch no state shared with other threads.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(0)
    }
}

fn report(fd: RawFd, kind: i32, err: i32) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: writing a stack buffer to a pipe fd we own.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
    }
}

/// Drop to `nobody`. Async-signal-safe.
fn drop_to_nobody() -> Result<(), i32> {
    // SAFETY: plain credential system calls in the single-threaded child.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(NOBODY as libc::gid_t) != 0
            || libc::setuid(NOBODY as libc::uid_t) != 0
        {
            return Err(errno());
        }
        // Refuse to go on if the drop did not take.
        if libc::geteuid() != NOBODY as libc::uid_t {
            return Err(libc::EPERM);
        }
    }
    Ok(())
}

fn set_rcvtimeo(fd: RawFd, secs: i64) {
    let tv = libc::timeval { tv_sec: secs as libc::time_t, tv_usec: 0 };
    // SAFETY: setsockopt with a valid pointer to a timeval and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// Who the connecting child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Drops to uid/gid `nobody` (setgroups, setgid, setuid) before connecting.
    OtherUser,
    /// Moves into a fresh network namespace (`unshare(CLONE_NEWNET)`) before connecting.
    OtherNetns,
}

/// The child's body for [`connect_from_child`]. Async-signal-safe only.
fn connect_child(out: RawFd, kind: PeerKind, a: RawAddr) -> ! {
    let out = keep_only(out);
    match kind {
        PeerKind::OtherUser => {
            if let Err(e) = drop_to_nobody() {
                report_exit(out, R_DROP, e)
            }
        }
        PeerKind::OtherNetns => {
            if let Err(e) = sys::unshare_net() {
                report_exit(out, R_UNSHARE, e)
            }
        }
    }
    // SAFETY: ignoring SIGPIPE in the single-threaded child, so a send to a closed peer
    // reports instead of killing it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: raw socket calls on a fd this child owns and an address prepared before the
    // fork; recv into a stack buffer.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            report_exit(out, R_SOCKET, errno())
        }
        set_rcvtimeo(fd, 5);
        if libc::connect(fd, (&a.addr as *const libc::sockaddr_un).cast(), a.len) != 0 {
            report_exit(out, R_CONNECT, errno())
        }
        let b = [b'x'];
        libc::send(fd, b.as_ptr().cast(), 1, 0);
        let mut r = [0u8; 16];
        let n = libc::recv(fd, r.as_mut_ptr().cast(), r.len(), 0);
        if n > 0 {
            report_exit(out, R_SERVED, 0)
        }
        if n == 0 {
            report_exit(out, R_CLOSED, 0)
        }
        let e = errno();
        if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
            report_exit(out, R_TIMEOUT, e)
        }
        report_exit(out, R_CLOSED, e)
    }
}

/// The child's body for [`send_from_child`]. Async-signal-safe only.
fn send_child(out: RawFd, a: RawAddr, payload: &[u8]) -> ! {
    let out = keep_only(out);
    if let Err(e) = drop_to_nobody() {
        report_exit(out, R_DROP, e)
    }
    // SAFETY: raw socket calls on a fd this child owns, an address prepared before the
    // fork, and a payload borrowed from memory the fork copied.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            report_exit(out, R_SOCKET, errno())
        }
        let n = libc::sendto(
            fd,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&a.addr as *const libc::sockaddr_un).cast(),
            a.len,
        );
        if n < 0 {
            report_exit(out, R_CONNECT, errno())
        }
        report_exit(out, R_SENT, 0)
    }
}

/// Fork a child that drops to `nobody` and sends one datagram (`payload`) to `addr`.
pub fn send_from_child(addr: &SocketAddress, payload: &'static [u8]) -> PeerReport {
    let a = raw_addr(addr);
    let (rd, wr) = cloexec_pipe();
    let wr_raw = wr.as_raw_fd();
    // SAFETY: the child runs only async-signal-safe code (send_child) and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        send_child(wr_raw, a, payload)
    }
    drop(wr);
    let status = reap(pid, || {});
    match read_report(&rd, Duration::from_millis(100)) {
        Some((k, e)) => decode(k, e),
        None => PeerReport::NoReport(status),
    }
}

/// The child's body for [`listen_in_child`]. Async-signal-safe only.
fn listen_child(out: RawFd, a: RawAddr) -> ! {
    let out = keep_only(out);
    if let Err(e) = drop_to_nobody() {
        report_exit(out, R_DROP, e)
    }
    // SAFETY: raw socket calls on fds this child owns and an address prepared before the
    // fork.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            report_exit(out, R_SOCKET, errno())
        }
        if libc::bind(fd, (&a.addr as *const libc::sockaddr_un).cast(), a.len) != 0
            || libc::listen(fd, 8) != 0
        {
            report_exit(out, R_SOCKET, errno())
        }
        set_rcvtimeo(fd, 10);
        report(out, R_LISTENING, 0);
        let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
        if c >= 0 {
            set_rcvtimeo(c, 10);
            let mut r = [0u8; 16];
            while libc::recv(c, r.as_mut_ptr().cast(), r.len(), 0) > 0 {}
        }
        libc::_exit(0)
    }
}

fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
    sys::cloexec_pipe()
}

/// In a forked child: keep only the report pipe `out` (moved to descriptor 3) and close
/// every other descriptor inherited from the test process. Other tests' threads hold
/// sockets, abstract names and pipe ends there; a child that kept them would keep a name
/// bound, or a pipe from reaching EOF, after its owner closed it. Async-signal-safe.
fn keep_only(out: RawFd) -> RawFd {
    // SAFETY: dup2 onto descriptor 3 in the single-threaded child.
    if out != 3 && unsafe { libc::dup2(out, 3) } < 0 {
        // SAFETY: leaving the child without running destructors.
        unsafe { libc::_exit(2) }
    }
    sys::close_from(4);
    3
}

/// Close every descriptor above stderr that is a socket or a pipe, except `keep`.
/// Async-signal-safe (fstat and close on descriptor numbers up to the soft limit).
fn close_sockets_and_pipes(keep: i32) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit into a stack struct.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 16) as i32
    } else {
        1024
    };
    for fd in 3..max {
        if fd == keep {
            continue;
        }
        // SAFETY: fstat into a zeroed stack struct, then close of a descriptor this
        // child holds; neither allocates.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 {
                let kind = st.st_mode & libc::S_IFMT;
                if kind == libc::S_IFSOCK || kind == libc::S_IFIFO {
                    libc::close(fd);
                }
            }
        }
    }
}

/// Platform parts (crosvm habit: one module per platform, no cfg inside functions).
#[cfg(target_os = "linux")]
mod sys {
    use std::os::fd::OwnedFd;

    /// `unshare(CLONE_NEWNET)`. Async-signal-safe.
    pub(super) fn unshare_net() -> Result<(), i32> {
        // SAFETY: unshare of the network namespace in the single-threaded child.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 { Err(super::errno()) } else { Ok(()) }
    }

    /// A pipe whose ends are close-on-exec atomically (other threads spawn processes).
    pub(super) fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2")
    }

    /// Close every descriptor from `first` on. Async-signal-safe.
    pub(super) fn close_from(first: i32) {
        // SAFETY: close_range(2) with integer arguments closes this child's descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::os::fd::{AsRawFd, OwnedFd};

    /// Network namespaces exist only on Linux.
    pub(super) fn unshare_net() -> Result<(), i32> {
        Err(libc::ENOSYS)
    }

    /// A pipe, then close-on-exec (no pipe2 here; a concurrent spawn may inherit it
    /// briefly, which only delays EOF until that child execs).
    pub(super) fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        for fd in [&r, &w] {
            // SAFETY: fcntl on a fd we own, setting FD_CLOEXEC.
            unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        (r, w)
    }

    /// Close every descriptor from `first` on (up to 4096). Async-signal-safe.
    pub(super) fn close_from(first: i32) {
        for fd in first..4096 {
            // SAFETY: close on a descriptor number; a closed one gives EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

fn read_report(fd: &OwnedFd, timeout: Duration) -> Option<(i32, i32)> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if n <= 0 {
        return None;
    }
    let mut buf = [0u8; 8];
    // SAFETY: reading into a stack buffer of the given length from a fd we own.
    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if r != 8 {
        return None;
    }
    Some((
        i32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")),
        i32::from_ne_bytes(buf[4..].try_into().expect("4 bytes")),
    ))
}

/// Reap `pid`, calling `tick` while waiting; kill it after [`CHILD_TIMEOUT`].
fn reap(pid: libc::pid_t, mut tick: impl FnMut()) -> i32 {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        if r < 0 {
            panic!("waitpid({pid}): {}", std::io::Error::last_os_error());
        }
        if start.elapsed() > CHILD_TIMEOUT {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("peer child {pid} did not finish within {CHILD_TIMEOUT:?}; killed");
        }
        tick();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fork a child of `kind` that connects to `addr`, sends a byte and waits for an answer;
/// `tick` runs in the parent while it waits (to accept on a non-blocking listener).
pub fn connect_from_child(addr: &SocketAddress, kind: PeerKind, tick: impl FnMut()) -> PeerReport {
    let a = raw_addr(addr);
    let (rd, wr) = cloexec_pipe();
    let wr_raw = wr.as_raw_fd();
    // SAFETY: the child runs only async-signal-safe code (connect_child) and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        connect_child(wr_raw, kind, a)
    }
    drop(wr);
    let status = reap(pid, tick);
    match read_report(&rd, Duration::from_millis(100)) {
        Some((k, e)) => decode(k, e),
        None => PeerReport::NoReport(status),
    }
}

/// A listening child running as `nobody`; killed and reaped on drop.
#[derive(Debug)]
pub struct ListeningChild {
    pid: libc::pid_t,
}

impl Drop for ListeningChild {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: killing and reaping our own child; SIGKILL cannot be ignored, so the
        // blocking wait ends.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// Fork a child that drops to `nobody`, binds and listens at `addr`. Returns once it
/// listens, or the report of why it could not.
pub fn listen_in_child(addr: &SocketAddress) -> Result<ListeningChild, PeerReport> {
    let a = raw_addr(addr);
    let (rd, wr) = cloexec_pipe();
    let wr_raw = wr.as_raw_fd();
    // SAFETY: the child runs only async-signal-safe code (listen_child) and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        listen_child(wr_raw, a)
    }
    drop(wr);
    let child = ListeningChild { pid };
    match read_report(&rd, CHILD_TIMEOUT) {
        Some((R_LISTENING, _)) => Ok(child),
        Some((k, e)) => Err(decode(k, e)),
        None => Err(PeerReport::NoReport(-1)),
    }
}

/// The longest message [`in_child`] carries back.
const MESSAGE_MAX: usize = 1024;

/// Run `body` in a forked child and return what it returned: for a check that changes
/// process-wide state (the umask), which must not leak to the other checks and tests of
/// the process, and works however often one process runs the check.
///
/// The child is a copy of a multithreaded process and runs ordinary Rust code (the
/// strategy's bind): glibc makes `malloc` safe after `fork`, but a lock another thread
/// held at the fork (stderr's, a strategy's) would stay held, so the wait is bounded
/// ([`CHILD_TIMEOUT`], then the child is killed and this panics). Directory descriptors
/// are kept (the strategy may hold some: a cached directory); every inherited socket and
/// pipe other than the report pipe is closed first, because those belong to other tests'
/// threads: a copy held here would keep another test's listener alive after its owner
/// dropped it (its next bind of that name then meets a live socket, EADDRINUSE), or keep
/// its pipe from reaching EOF. A panic in `body` comes back as an `Err` with its message.
pub fn in_child(body: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (rd, wr) = cloexec_pipe();
    let wr_raw = wr.as_raw_fd();
    // SAFETY: the child runs `body`, writes one bounded message and _exits (never
    // returns into the test harness); see the function's documentation for what it may
    // block on, which the bounded wait below covers.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        close_sockets_and_pipes(wr_raw);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".into()))
        });
        let mut buf = [0u8; MESSAGE_MAX];
        let n = match &r {
            Ok(()) => 1,
            Err(m) => {
                buf[0] = 1;
                let m = m.as_bytes();
                let n = m.len().min(MESSAGE_MAX - 1);
                buf[1..=n].copy_from_slice(&m[..n]);
                n + 1
            }
        };
        // SAFETY: one write of a stack buffer (at most PIPE_BUF, so atomic) to our pipe,
        // then _exit without running the parent's destructors.
        unsafe {
            libc::write(wr_raw, buf.as_ptr().cast(), n);
            libc::_exit(0)
        }
    }
    drop(wr);
    let status = reap(pid, || {});
    let mut pfd = libc::pollfd { fd: rd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let mut buf = [0u8; MESSAGE_MAX];
    // SAFETY: poll on one valid pollfd, then a read into a stack buffer of its length;
    // the child's one write is complete (it has been reaped).
    let n = unsafe {
        if libc::poll(&mut pfd, 1, 100) <= 0 {
            0
        } else {
            libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        }
    };
    match n {
        n if n >= 1 && buf[0] == 0 => Ok(()),
        n if n >= 1 => Err(String::from_utf8_lossy(&buf[1..n as usize]).into_owned()),
        _ => Err(format!("the child left no report (wait status {status:#x})")),
    }
}
