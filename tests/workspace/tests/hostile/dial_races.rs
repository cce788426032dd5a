//! Issue 10, item 2: the runtime must never dial or bind by re-resolving a path string
//! after checking it. Each recipe of the issue, as a bounded race: a real attacker
//! (forked children that drop to `nobody`) keeps changing a directory on the path while
//! the runtime (host backend, real agent) starts boxes and runs execs. Every exec must
//! either run in the box or fail with an error; none may ever reach the attacker's
//! listener.

use boxsock_conformance::util::ByFile;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use boxsock::{CreateOptions, Runtime};
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;

use crate::attacks::{NEED_ROOT, NOBODY, World, cstr, exec_code, is_root, rt_options, tokio_rt};

/// How many starts the umask race tries at least.
const STARTS: usize = 25;

/// How many starts the umask race tries at most. Most are refused (the cleaner removes
/// the binding directory under them, or nobody's directory holds its name: issue 18.2),
/// so it takes this many for [`MIN_START_WINDOWS`] successful ones.
const MAX_START_ATTEMPTS: usize = 120 * STARTS;

/// How many execs each exec race tries at least.
const EXECS: usize = 300;

/// How many execs each exec race tries at most. In the cleaner race most are refused
/// (the cleaner removed the binding directory under them, or nobody's directory holds
/// its name: issue 18.2); on an idle machine about 1 in 30 ran, so [`MIN_WINDOWS`]
/// takes about 3 000 attempts, and refused ones are fast.
const MAX_EXECS: usize = 50 * EXECS;

/// How many of the real victim's dials (execs that ran in the box) must have had the
/// attacker's object in place at least once while they ran. A dialer that re-resolved the
/// path string in only 1 of 20 dials made in such a window would still have been caught
/// by 100 windows with a probability above 99 % (0.95^100 < 0.006); fewer windows would
/// not show that the real dialer resists the attack rather than missing it.
///
/// A window is counted only where the runtime works at that moment
/// ([`window_during`]): the flipped link base or `<base>/boxsock-<uid>`, and once the
/// runtime has seen that directory squatted and moved to its recorded fallback
/// `<base>/boxsock.<random>`, that fallback, which the attacker follows (its name is in
/// the listing of `<base>`) while the cleaner removes it too.
const MIN_WINDOWS: usize = 100;

/// How many successful starts under `umask 000` must have had the attacker's directory
/// in place at the directory the runtime was using, at least once while they ran (each start binds the box's
/// `agent.sock`, which it hands to the agent). A start that bound or dialled by the path string
/// lands in the attacker's directory whenever it does so inside such a window; the naive
/// binder beside it is hijacked in about 1 of 10 attempts at least, so 20 windows would
/// have caught a start path with that exposure with a probability near 0.88 per socket,
/// and a start binds or dials three.
const MIN_START_WINDOWS: usize = 20;

/// How many times the naive victim beside the real one must have been hijacked: proof
/// that the attack landed in this run, on code that trusts a path string.
const MIN_NAIVE_HIJACKS: usize = 5;

/// What a looping attacker child does until its deadline.
enum Program {
    /// Keep `link` flipping between `a` and `b` (symlink at `tmp`, renamed over `link`);
    /// counts the flips.
    Flip { link: CString, tmp: CString, a: CString, b: CString },
    /// Listen at `sock` (bound by the child), count connections that delivered at least
    /// one byte (an exec request reaching the attacker).
    Listen { sock: CString },
    /// The same, but the child keeps the owner's uid (another process of the owner).
    ListenAsOwner { sock: CString },
    /// Listen at `own/<id>/agent.sock`, and keep renaming `own` to the directory the
    /// runtime uses (whenever a cleaner has removed it) and back: first `target` (the
    /// per-user directory); once a fallback `<base>/boxsock.<10 random>` has appeared in
    /// a listing of `base` (which anyone can read), that name instead: the runtime never
    /// goes back from its recorded fallback.
    SwapIn { own: CString, sub: CString, sock: CString, target: CString, base: CString },
}

/// What an attacker child shares with the test, in a page mapped `MAP_SHARED` before
/// the fork: whether its object (the flipped link, its renamed directory) is in place
/// now, and how many times it has been put in place, per place ([`PER_UID`] or
/// [`FALLBACK`]). Both are conservative: `placed` is counted and `in_place` set *after*
/// the object is in place, and `in_place` is cleared *before* it is taken away, so a
/// window is never counted that did not exist.
#[repr(C)]
struct Shared {
    in_place: [AtomicI64; 2],
    placed: [AtomicI64; 2],
    /// A swapping attacker's requests received, by the place its directory was at when
    /// the connection was accepted or had just been (for the report).
    hits_at: [AtomicI64; 2],
}

/// The attacker's object is at the runtime's default directory (the flipped base link,
/// or `<base>/boxsock-<uid>`).
const PER_UID: usize = 0;
/// The attacker's directory is at the home's recorded fallback `<base>/boxsock.<random>`.
const FALLBACK: usize = 1;

/// A running attacker child; [`Attacker::finish`] stops it and returns its count.
struct Attacker {
    pid: libc::pid_t,
    rd: OwnedFd,
    /// Closing it tells the child to stop (it polls the other end).
    stop: Option<OwnedFd>,
    shared: *mut Shared,
}

/// Where the attacker's object stood at one moment.
#[derive(Clone, Copy)]
struct Mark {
    in_place: [bool; 2],
    placed: [i64; 2],
}

impl Mark {
    /// Whether the attacker's object was in place at `at` ([`PER_UID`] or [`FALLBACK`])
    /// at some moment between `self` and `later`.
    fn window_until(self, later: Mark, at: usize) -> bool {
        self.in_place[at] || later.placed[at] > self.placed[at]
    }
}

/// The home's recorded fallback binding directory (the record's first line), if the
/// runtime has moved to one.
fn recorded_fallback(home: &Path) -> Option<String> {
    let text = std::fs::read_to_string(home.join(boxsock_runtime::squat::RECORD)).ok()?;
    text.lines().next().map(str::to_owned)
}

/// Run `f` (a start or an exec of the runtime of `home`) and say whether the
/// attacker's object was in place, at some moment while it ran, at the directory the
/// runtime was using: the default one, or its recorded fallback once it moved there.
/// When the runtime moved during `f`, a window is counted only if nobody's directory
/// stood at the recorded fallback (by its owner, looked at) as `f` began: the runtime
/// met the attacker there and left (it replaces a squatted fallback, issue 18.2), where a
/// dialer re-resolving that path would have reached the attacker.
fn window_during<T>(attacker: &Attacker, home: &Path, f: impl FnOnce() -> T) -> (T, bool) {
    let (rec, before) = (recorded_fallback(home), attacker.mark());
    let squatted_at_start = rec.as_ref().is_some_and(|d| {
        std::fs::symlink_metadata(d)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == NOBODY)
    });
    let r = f();
    let (rec_after, after) = (recorded_fallback(home), attacker.mark());
    let at = if rec.is_some() { FALLBACK } else { PER_UID };
    (
        r,
        (rec == rec_after && before.window_until(after, at))
            || (rec != rec_after && squatted_at_start),
    )
}

/// Where the naive victims of the runtime of `home` dial or bind: the directory the
/// runtime uses now (`per_uid`, or its recorded fallback).
fn runtime_dir(home: &Path, per_uid: &Path) -> std::path::PathBuf {
    recorded_fallback(home).map_or_else(|| per_uid.to_owned(), |r| r.trim_end().into())
}

fn now_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a stack timespec; async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

fn sockaddr(p: &CString) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = p.as_bytes();
    assert!(b.len() < a.sun_path.len(), "test socket path too long");
    for (i, c) in b.iter().enumerate() {
        a.sun_path[i] = *c as libc::c_char;
    }
    (a, (std::mem::offset_of!(libc::sockaddr_un, sun_path) + b.len() + 1) as libc::socklen_t)
}

/// Bind and listen (non-blocking) at a prepared address; -1 on failure.
///
/// # Safety
/// Raw system calls only; called in the forked child.
unsafe fn listen_at(a: &(libc::sockaddr_un, libc::socklen_t)) -> RawFd {
    // SAFETY: plain system calls on a fresh socket and a prepared address.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        if fd < 0
            || libc::bind(fd, (&a.0 as *const libc::sockaddr_un).cast(), a.1) != 0
            || libc::listen(fd, 64) != 0
        {
            return -1;
        }
        fd
    }
}

/// Accept everything pending; count connections that carried bytes.
///
/// # Safety
/// Raw system calls only; called in the forked child.
unsafe fn drain(fd: RawFd, hits: &mut i64) {
    // SAFETY: accept/recv/close on descriptors this child owns, into a stack buffer.
    unsafe {
        loop {
            let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
            if c < 0 {
                return;
            }
            let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
            libc::setsockopt(
                c,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let mut buf = [0u8; 512];
            if libc::recv(c, buf.as_mut_ptr().cast(), buf.len(), 0) > 0 {
                *hits += 1;
            }
            libc::close(c);
        }
    }
}

/// Look for a fallback directory `boxsock.<10 random>` in the directory `base_fd` (a
/// listing anyone may read); copy its name, NUL-terminated, into `name`.
///
/// # Safety
/// Raw system calls only (no allocation: it runs in a forked child); called there.
unsafe fn find_fallback(base_fd: RawFd, name: &mut [u8; 256]) -> bool {
    const PREFIX: &[u8] = b"boxsock.";
    let want = "boxsock-4294967295".len();
    let mut buf = [0u8; 4096];
    // SAFETY: lseek and getdents64 on a directory descriptor this child owns, into a
    // stack buffer of the size passed.
    unsafe {
        libc::lseek(base_fd, 0, libc::SEEK_SET);
        loop {
            let n = libc::syscall(libc::SYS_getdents64, base_fd, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                return false;
            }
            let mut off = 0usize;
            // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
            while off + 19 <= n as usize {
                let reclen = usize::from(u16::from_ne_bytes([buf[off + 16], buf[off + 17]]));
                if reclen == 0 || off + reclen > n as usize {
                    return false;
                }
                let raw = &buf[off + 19..off + reclen];
                let len = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
                if len == want && raw.starts_with(PREFIX) {
                    name[..len].copy_from_slice(&raw[..len]);
                    name[len] = 0;
                    return true;
                }
                off += reclen;
            }
        }
    }
}

/// Whether the parent closed the stop pipe.
///
/// # Safety
/// Raw system calls only; called in the forked child.
unsafe fn stopped(stop: RawFd) -> bool {
    let mut p = libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

fn child(
    out: RawFd,
    stop: RawFd,
    prog: &Program,
    sock: Option<(libc::sockaddr_un, libc::socklen_t)>,
    until_ms: i64,
    shared: &Shared,
) -> ! {
    // SAFETY: credential and file system calls in the forked (single-threaded) child,
    // on data prepared before the fork; the child ends with _exit.
    unsafe {
        // Keep only the two pipes (moved to 100 and 101): descriptors inherited from
        // other tests' threads (their stop pipes) must not outlive this child's job.
        if libc::dup2(out, 100) < 0 || libc::dup2(stop, 101) < 0 {
            libc::_exit(2);
        }
        let (out, stop) = (100, 101);
        libc::syscall(libc::SYS_close_range, 3u32, 99u32, 0u32);
        libc::syscall(libc::SYS_close_range, 102u32, u32::MAX, 0u32);
        let dropped = matches!(prog, Program::ListenAsOwner { .. })
            || (libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(NOBODY as libc::gid_t) == 0
                && libc::setuid(NOBODY as libc::uid_t) == 0);
        if !dropped {
            let v: i64 = -1;
            libc::write(out, (&v as *const i64).cast(), 8);
            libc::_exit(1);
        }
        libc::umask(0);
        let mut hits: i64 = 0;
        let mut lfd = -1;
        // SwapIn: the base (absolute targets ignore it), and the fallback's name once seen.
        let mut base_fd = libc::AT_FDCWD;
        let mut fb_name = [0u8; 256];
        let mut followed = false;
        match prog {
            Program::Listen { .. } | Program::ListenAsOwner { .. } => {
                lfd = listen_at(sock.as_ref().expect("address"))
            }
            Program::SwapIn { own, sub, base, .. } => {
                libc::mkdir(own.as_ptr(), 0o777);
                libc::mkdir(sub.as_ptr(), 0o777);
                lfd = listen_at(sock.as_ref().expect("address"));
                base_fd =
                    libc::open(base.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
            }
            Program::Flip { .. } => {}
        }
        let ready: i64 = 0;
        libc::write(out, (&ready as *const i64).cast(), 8);
        let mut flip = false;
        while now_ms() < until_ms && !stopped(stop) {
            match prog {
                Program::Flip { link, tmp, a, b } => {
                    libc::unlink(tmp.as_ptr());
                    // `flip`: back to root's base `a`; else to the attacker's base `b`.
                    let to = if flip { a } else { b };
                    if flip {
                        shared.in_place[PER_UID].store(0, Ordering::SeqCst);
                    }
                    if libc::symlink(to.as_ptr(), tmp.as_ptr()) == 0
                        && libc::rename(tmp.as_ptr(), link.as_ptr()) == 0
                    {
                        hits += 1;
                        if !flip {
                            shared.placed[PER_UID].fetch_add(1, Ordering::SeqCst);
                            shared.in_place[PER_UID].store(1, Ordering::SeqCst);
                        }
                    }
                    flip = !flip;
                }
                Program::Listen { .. } | Program::ListenAsOwner { .. } => {
                    drain(lfd, &mut hits);
                    libc::usleep(200);
                }
                Program::SwapIn { own, target, .. } => {
                    // Follow the runtime: a squatted fallback is replaced by a fresh one,
                    // whose name shows in the listing in turn.
                    followed = find_fallback(base_fd, &mut fb_name) || followed;
                    let (at, to) = if followed {
                        (FALLBACK, fb_name.as_ptr().cast::<libc::c_char>())
                    } else {
                        (PER_UID, target.as_ptr())
                    };
                    // In place only briefly, as a racing attacker would: long stays
                    // would only make `ensure` refuse (it checks the owner).
                    let before = hits;
                    if libc::renameat(libc::AT_FDCWD, own.as_ptr(), base_fd, to) == 0 {
                        shared.placed[at].fetch_add(1, Ordering::SeqCst);
                        shared.in_place[at].store(1, Ordering::SeqCst);
                        drain(lfd, &mut hits);
                        libc::usleep(50);
                        drain(lfd, &mut hits);
                        shared.in_place[at].store(0, Ordering::SeqCst);
                        libc::renameat(base_fd, to, libc::AT_FDCWD, own.as_ptr());
                    }
                    drain(lfd, &mut hits);
                    shared.hits_at[at].fetch_add(hits - before, Ordering::SeqCst);
                    libc::usleep(100);
                }
            }
        }
        if lfd >= 0 {
            drain(lfd, &mut hits);
        }
        libc::write(out, (&hits as *const i64).cast(), 8);
        libc::_exit(0);
    }
}

impl Attacker {
    /// Fork the child, wait until it is set up (dropped, listening).
    fn start(prog: Program, limit: Duration) -> Attacker {
        let sock = match &prog {
            Program::Listen { sock }
            | Program::ListenAsOwner { sock }
            | Program::SwapIn { sock, .. } => Some(sockaddr(sock)),
            Program::Flip { .. } => None,
        };
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let (stop_rd, stop_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let until = now_ms() + limit.as_millis() as i64;
        // SAFETY: a fresh anonymous shared mapping of one page; checked below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(page != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let shared = page.cast::<Shared>();
        // SAFETY: the page is zeroed, page-aligned and large enough; all-zero atomics are
        // valid values.
        let shared_ref: &Shared = unsafe { &*shared };
        // SAFETY: the child runs only system calls and atomics on prepared data (`child`)
        // and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            drop(stop_wr);
            child(wr.as_raw_fd(), stop_rd.as_raw_fd(), &prog, sock, until, shared_ref);
        }
        drop((wr, stop_rd));
        let a = Attacker { pid, rd, stop: Some(stop_wr), shared };
        assert_eq!(a.read_i64(), Some(0), "the attacker child could not drop to nobody");
        a
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    /// Where the attacker's object stands now.
    fn mark(&self) -> Mark {
        // SAFETY: the shared page stays mapped until `self` is dropped.
        let s = unsafe { &*self.shared };
        let ld = |a: &AtomicI64| a.load(Ordering::SeqCst);
        Mark {
            in_place: [ld(&s.in_place[PER_UID]) != 0, ld(&s.in_place[FALLBACK]) != 0],
            placed: [ld(&s.placed[PER_UID]), ld(&s.placed[FALLBACK])],
        }
    }

    /// A swapping attacker's requests so far, at the per-user directory and at the
    /// fallback.
    fn hits_at(&self) -> [i64; 2] {
        // SAFETY: the shared page stays mapped until `self` is dropped.
        let s = unsafe { &*self.shared };
        [s.hits_at[PER_UID].load(Ordering::SeqCst), s.hits_at[FALLBACK].load(Ordering::SeqCst)]
    }

    fn read_i64(&self) -> Option<i64> {
        let mut b = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            // SAFETY: reading into a stack buffer from a pipe we own.
            let n =
                unsafe { libc::read(self.rd.as_raw_fd(), b[got..].as_mut_ptr().cast(), 8 - got) };
            if n <= 0 {
                return None;
            }
            got += n as usize;
        }
        Some(i64::from_ne_bytes(b))
    }

    /// Stop it now and return what it counted.
    fn finish(mut self) -> i64 {
        drop(self.stop.take());
        let v = self.read_i64().unwrap_or(-1);
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
        v
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if self.stop.take().is_some() {
            // Not finished (a failed assertion): stop the child now.
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        // SAFETY: unmapping the page mapped in `start`; no reference to it outlives self.
        unsafe { libc::munmap(self.shared.cast(), 4096) };
    }
}

fn mkdir_mode(p: &Path, mode: u32, owner: Option<u32>) {
    std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    if let Some(u) = owner {
        std::os::unix::fs::chown(p, Some(u), Some(u)).unwrap();
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The naive victim of the exec races: dials the agent by the path string, as the
/// runtime did before it held its directories open. `Some(true)` when the listener it
/// reached is nobody's (hijacked), `Some(false)` when it is root's, `None` when nothing
/// listened there. It sends nothing, so the attacker's count of requests stays the real
/// victim's.
fn naive_dial(path: &Path) -> Option<bool> {
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
    let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .expect("SO_PEERCRED");
    Some(cred.uid() == NOBODY)
}

/// What an exec race saw.
#[derive(Default)]
struct Race {
    /// Execs that ran in the box.
    ran: usize,
    /// Execs refused with an error.
    refused: usize,
    /// The first refusals.
    samples: Vec<String>,
    /// Refused execs while the attacker's object was in place at the runtime's directory
    /// (availability, reported; issue 18.2: a squatted fallback is not escaped).
    refused_in_window: usize,
    /// Execs that ran in the box while the attacker's object was in place at least once.
    windows: usize,
    /// The naive dialer's dials.
    naive: usize,
    /// Its dials that reached the attacker's listener.
    hijacked: usize,
}

/// Run execs of `true` on box `id` (the real victim), each followed by one dial of the
/// naive victim at `naive_path()` (where the runtime works now), until [`EXECS`] were
/// tried, [`MIN_WINDOWS`] ran in the box while the attacker's object was in place at the
/// runtime's directory ([`window_during`]), and the naive dialer was hijacked
/// [`MIN_NAIVE_HIJACKS`] times; at most [`MAX_EXECS`] execs. A nonzero exit status (a
/// forged reply) fails.
fn exec_race(
    tokio: &tokio::runtime::Runtime,
    rt: &Runtime,
    id: &str,
    attacker: &Attacker,
    naive_path: impl Fn() -> std::path::PathBuf,
) -> Race {
    let mut r = Race::default();
    let done = |r: &Race| {
        r.ran + r.refused >= EXECS && r.windows >= MIN_WINDOWS && r.hijacked >= MIN_NAIVE_HIJACKS
    };
    let home = rt.layout().home().to_owned();
    while !done(&r) && r.ran + r.refused < MAX_EXECS {
        let (res, window) =
            window_during(attacker, &home, || tokio.block_on(exec_code(rt, id, &["/bin/true"])));
        match res {
            Ok(0) => {
                r.ran += 1;
                r.windows += usize::from(window);
            }
            Ok(code) => panic!("an exec of /bin/true returned {code}: a forged reply?"),
            Err(e) => {
                r.refused += 1;
                r.refused_in_window += usize::from(window);
                if r.samples.len() < 2 {
                    r.samples.push(e.to_string());
                }
            }
        }
        r.naive += 1;
        r.hijacked += usize::from(naive_dial(&naive_path()) == Some(true));
    }
    r
}

/// The one pass condition of every exec race: the real victim never reached the
/// attacker (`hits`: requests the attacker's listener received), while the attack
/// demonstrably landed on the naive victim and was in place at the runtime's directory
/// during enough of the execs that ran. Refused execs are reported, not judged here.
fn assert_race(r: &Race, hits: i64, where_: &str) {
    assert_eq!(
        hits, 0,
        "{hits} exec request(s) reached the attacker's listener ({where_}{} ran, {} refused)",
        r.ran, r.refused
    );
    assert!(
        r.windows >= MIN_WINDOWS,
        "attack never landed where the runtime works: the attacker's object was in place at the runtime's directory during only {} of {} execs that ran (at least {MIN_WINDOWS} needed; {} refused, {} of them in such a window: {:?})",
        r.windows,
        r.ran,
        r.refused,
        r.refused_in_window,
        r.samples
    );
    assert!(
        r.hijacked >= MIN_NAIVE_HIJACKS,
        "the naive dialer was hijacked {} times in {} dials (at least {MIN_NAIVE_HIJACKS} needed): the attack did not land, so the run proves nothing",
        r.hijacked,
        r.naive
    );
}

/// The observed text of an exec race (`attack`: what the attacker did, with its count).
fn race_text(r: &Race, took: Duration, attack: &str) -> String {
    format!(
        "{} execs in {} s while {attack}: {} ran in the box, {} of them while the attacker's object was in place at the directory the runtime was using (at least {MIN_WINDOWS} required); {} refused, {} of them while it was in place there (first refusal: {}); 0 reached the attacker's listener. Beside it, a naive dialer (connect by the path string, in the directory the runtime was using) reached the attacker's listener {} times in {} dials (at least {MIN_NAIVE_HIJACKS} required)",
        measured(r.ran + r.refused),
        measured(format_args!("{:.1}", took.as_secs_f64())),
        measured(r.ran),
        measured(r.windows),
        measured(r.refused),
        measured(r.refused_in_window),
        measured(r.samples.first().map_or_else(|| "none".to_owned(), |s| format!("\"{s}\""))),
        measured(r.hijacked),
        measured(r.naive),
    )
}

scenario!(
    flipping_link_base_never_receives_an_exec,
    "Attacks",
    "the link base is `<base>/lnk` (base 1777), a symlink `nobody` owns and keeps flipping between root's real base and its own base holding `boxsock-<uid>/<id>/agent.sock`, its listener; creating a box (host backend) with that link base must be refused, naming uid 65534, and a naive dialer beside it (connect to `<base>/lnk/boxsock-<uid>/<id>/agent.sock` by the path string) must reach nobody's listener 5 times (at most 3 000 dials)",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let root = w.root.path();
            // The attacker's world: a base it owns, with the per-user dir and the box's
            // link name as real directories, and its listener at the agent's name.
            let evil = root.join("evilbase");
            mkdir_mode(&evil, 0o777, Some(NOBODY));
            // The link lives in the sticky, world-writable base (like /tmp), owned by
            // nobody, so nobody can replace it.
            let lnk = w.base.join("lnk");
            std::os::unix::fs::symlink(&w.base, &lnk).unwrap();
            std::os::unix::fs::lchown(&lnk, Some(NOBODY), Some(NOBODY)).unwrap();
            let mut opts = rt_options(&w);
            opts.strategy_config.base_dir = lnk.clone();
            let tokio = tokio_rt();
            let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), opts)).unwrap();
            // A link base another user can redirect is refused before anything is bound
            // or dialled (issue 18, point 5): that refusal is the one way to pass. The
            // attack is still run, against a naive dialer, to show it lands.
            let id = "victim";
            let err = match tokio.block_on(rt.create(CreateOptions::new("short-symlink", "host"))) {
                Ok(b) => panic!("a link base nobody owns and flips was accepted (box {})", b.id),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("65534"),
                "create was refused for another reason than the link's owner: {err}"
            );
            let real_dir = w.base.join(format!("boxsock-{}", nix::unistd::geteuid())).join(id);
            std::fs::create_dir_all(&real_dir).unwrap();
            let real = std::os::unix::net::UnixListener::bind(real_dir.join("agent.sock")).unwrap();
            let uid_dir = evil.join(format!("boxsock-{}", nix::unistd::geteuid()));
            mkdir_mode(&uid_dir, 0o777, Some(NOBODY));
            mkdir_mode(&uid_dir.join(id), 0o777, Some(NOBODY));
            let race = Duration::from_secs(120);
            let listener = Attacker::start(
                Program::Listen { sock: cstr(&uid_dir.join(id).join("agent.sock")) },
                race,
            );
            let flipper = Attacker::start(
                Program::Flip {
                    link: cstr(&lnk),
                    tmp: cstr(&w.base.join("lnk.tmp")),
                    a: cstr(&w.base),
                    b: cstr(&evil),
                },
                race,
            );
            let naive =
                lnk.join(format!("boxsock-{}", nix::unistd::geteuid())).join(id).join("agent.sock");
            let (mut dials, mut hijacked) = (0usize, 0usize);
            while hijacked < MIN_NAIVE_HIJACKS && dials < 10 * EXECS {
                dials += 1;
                hijacked += usize::from(naive_dial(&naive) == Some(true));
                std::thread::sleep(Duration::from_millis(1));
            }
            let flips = flipper.finish();
            let _ = listener.finish();
            drop(real);
            assert!(
                hijacked >= MIN_NAIVE_HIJACKS,
                "the naive dialer was hijacked {hijacked} times in {dials} dials (at least {MIN_NAIVE_HIJACKS} needed): the attack did not land, so the run proves nothing"
            );
            let err = err.replace(root.to_str().unwrap(), "<root>");
            Outcome::Passed(format!(
                "refused at create, before anything was bound or dialled: {err}. Beside it, while nobody flipped the link {} times, a naive dialer (connect by the path string) reached nobody's listener at least {MIN_NAIVE_HIJACKS} times",
                measured(flips)
            ))
        })()
    }
);

scenario!(
    cleaner_plus_renamed_attacker_dir_never_receives_an_exec,
    "Attacks",
    "default layout (base 1777): a cleaner (root) keeps deleting root's `<base>/boxsock-<uid>` and root's fallback directories `<base>/boxsock.*`, while `nobody` keeps renaming its own directory (holding `<id>/agent.sock`, its listener) into the directory the runtime uses and back: `<base>/boxsock-<uid>`, then, once a fallback name shows in the listing of `<base>`, that name (read again each round, so it follows the runtime from one fallback to the next); a running box (host backend) gets execs until 300 were tried, 100 ran in it while nobody's directory was in place at the directory the runtime was using (the per-user one, or the fallback recorded in `<home>/binding-dir`), and a naive dialer beside it (connect to `<that directory>/<id>/agent.sock` by the path string, after each exec) was hijacked 5 times (at most 15 000 execs); passes only if no request reached nobody's listener, with both minimums met (refused execs are counted and reported: the runtime replaces a squatted fallback, issue 18.2, but root's own cleaner removing it every 300 µs refuses some)",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let tokio = tokio_rt();
            let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
            let b = tokio.block_on(rt.create(CreateOptions::new("short-symlink", "host"))).unwrap();
            let id = b.id.to_string();
            tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("start: {e}"));
            let per_uid = w.per_uid();
            let own = w.base.join("nobodys");
            mkdir_mode(&own, 0o777, Some(NOBODY));
            mkdir_mode(&own.join(&id), 0o777, Some(NOBODY));
            let race = Duration::from_secs(120);
            let attacker = Attacker::start(
                Program::SwapIn {
                    own: cstr(&own),
                    sub: cstr(&own.join(&id)),
                    sock: cstr(&own.join(&id).join("agent.sock")),
                    target: cstr(&per_uid),
                    base: cstr(&w.base),
                },
                race,
            );
            let (stop, cleaner) = start_cleaner(&w.base, &per_uid, Duration::from_micros(300));
            let started = Instant::now();
            let home = w.layout.home().to_owned();
            let naive = || runtime_dir(&home, &per_uid).join(&id).join("agent.sock");
            let r = exec_race(&tokio, &rt, &id, &attacker, naive);
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            let removed = cleaner.join().unwrap();
            let [at_per_uid, at_fallback] = attacker.hits_at();
            let placed = attacker.mark().placed;
            let hits = attacker.finish();
            assert_race(
                &r,
                hits,
                &format!("{at_per_uid} at <base>/boxsock-<uid>, {at_fallback} at the fallback; "),
            );
            let _ = tokio.block_on(rt.remove(&id, true));
            Outcome::Passed(format!(
                "{}; {}",
                race_text(
                    &r,
                    took,
                    &format!(
                        "the cleaner removed root's binding directory (per-user or fallback) {} times",
                        measured(removed)
                    )
                ),
                binding_dir_text(&w, placed)
            ))
        })()
    }
);

/// Where the runtime of home `w` binds at the end of a race (its recorded fallback once it
/// saw the per-user directory squatted, or the per-user directory), and how many times
/// the attacker put its directory at each (`placed`, from its shared page).
fn binding_dir_text(w: &crate::attacks::World, placed: [i64; 2]) -> String {
    let at = if recorded_fallback(w.layout.home()).is_some() {
        "its recorded fallback <base>/boxsock.<random>"
    } else {
        "<base>/boxsock-<uid>"
    };
    format!(
        "the runtime's binding directory at the end: {}; nobody's directory was renamed into <base>/boxsock-<uid> {} times and into the fallback (its name read from the listing of <base>) {} times",
        measured(at),
        measured(placed[PER_UID]),
        measured(placed[FALLBACK])
    )
}

/// The cleaner (root, as a /tmp cleaner is): keeps removing root's per-user directory
/// `per_uid` and root's fallback directories `<base>/boxsock.*` (never the attacker's)
/// until told to stop; returns how many times it removed one.
fn start_cleaner(
    base: &Path,
    per_uid: &Path,
    period: Duration,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, base, per_uid) = (stop.clone(), base.to_owned(), per_uid.to_owned());
    let cleaner = std::thread::spawn(move || {
        let base_fd = nix::fcntl::open(
            &base,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open the base");
        let per_uid_name = per_uid.file_name().expect("per-user name").to_owned();
        let mut removed = 0u32;
        while !flag.load(Ordering::Relaxed) {
            let mut names = vec![per_uid_name.clone()];
            if let Ok(listing) = std::fs::read_dir(&base) {
                names.extend(listing.flatten().map(|e| e.file_name()).filter(|n| {
                    n.to_str().is_some_and(|n| {
                        n.starts_with("boxsock.") && n.len() == "boxsock-4294967295".len()
                    })
                }));
            }
            for n in names {
                removed += u32::from(clean_root_dir(base_fd.as_fd(), &n));
            }
            std::thread::sleep(period);
        }
        removed
    });
    (stop, cleaner)
}

/// Remove root's directory `name` in `base` and what it holds, if it is root's: opened
/// without following links and checked on the descriptor, emptied through it, then
/// removed by name, which fails if the attacker's (never empty) directory has been
/// renamed into the name meanwhile. So the cleaner never deletes the attacker's objects.
fn clean_root_dir(base: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> bool {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(mut dir) = nix::dir::Dir::openat(base, name, flags, nix::sys::stat::Mode::empty())
    else {
        return false;
    };
    if !nix::sys::stat::fstat(dir.as_fd()).is_ok_and(|st| st.st_uid == 0) {
        return false;
    }
    let entries: Vec<CString> = dir
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for e in &entries {
        // Root's binding directories hold links (and their temporaries) only.
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            e.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    nix::unistd::unlinkat(base, name, nix::unistd::UnlinkatFlags::RemoveDir).is_ok()
}

/// How many sockets the naive binder of the umask race binds after each start attempt.
const NAIVE_BINDS: usize = 10;

scenario!(
    own_process umask_000_start_never_binds_in_the_attackers_dir,
    "Attacks",
    "`umask 000` (in a process of its own); a cleaner (root) keeps deleting root's `<base>/boxsock-<uid>` and root's fallback directories `<base>/boxsock.*`, while `nobody` keeps renaming its own 0777 directory (with `<id>/` and a listener at `<id>/ready.sock`, where an agent that reported readiness by path would dial) into the directory the runtime uses (the per-user one, then the fallback once its name shows in the listing of `<base>`); the runtime starts and stops the box until 25 starts were tried and 20 succeeded while nobody's directory was in place at the directory the runtime was using (at most 3 000 attempts); after each start `nobody` dials the box's agent socket in the real directory, and a naive binder beside it binds 10 sockets at `<that directory>/<id>/naive-N.sock` by the path string (5 of them must land in nobody's directory); passes only if nothing of root's appeared in nobody's directory and its listener received nothing, with both minimums met (refused starts are counted and reported: root's own cleaner removing the directory under a start refuses some)",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let tokio = tokio_rt();
            let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
            let b = tokio.block_on(rt.create(CreateOptions::new("short-symlink", "host"))).unwrap();
            let id = b.id.to_string();
            let per_uid = w.per_uid();
            let own = w.base.join("nobodys");
            mkdir_mode(&own, 0o777, Some(NOBODY));
            mkdir_mode(&own.join(&id), 0o777, Some(NOBODY));
            // Held open: the attacker keeps renaming its directory, so it is read through
            // this descriptor, wherever its name is at the moment.
            let theirs = std::fs::File::open(own.join(&id)).expect("open the attacker's directory");
            let theirs_dir = std::path::PathBuf::from(format!("/proc/self/fd/{}", theirs.as_raw_fd()));
            let attacker = Attacker::start(
                Program::SwapIn {
                    own: cstr(&own),
                    sub: cstr(&own.join(&id)),
                    sock: cstr(&own.join(&id).join("ready.sock")),
                    target: cstr(&per_uid),
                    base: cstr(&w.base),
                },
                Duration::from_secs(120),
            );
            // A start takes a few milliseconds: a cleaner every 300 µs refused 99 % of
            // them (the fallback squatted, issue 18.2); every 2 ms still removes the
            // directory during most starts.
            let (stop, cleaner) = start_cleaner(&w.base, &per_uid, Duration::from_millis(2));
            let real_dir = w.layout.sockets_dir(&b.id);
            let real_agent = real_dir.join("agent.sock");
            // This test has a process of its own: umask 000 for the rest of it.
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            let (mut started, mut refused, mut windows, mut samples) = (0, 0, 0, Vec::<String>::new());
            let (mut naive, mut hijacked, mut in_attacker_dir, mut refused_in_window) = (0, 0, Vec::new(), 0);
            let done = |tried: usize, windows: usize, hijacked: usize| {
                tried >= STARTS && windows >= MIN_START_WINDOWS && hijacked >= MIN_NAIVE_HIJACKS
            };
            while !done(started + refused, windows, hijacked) && started + refused < MAX_START_ATTEMPTS {
                let (r, window) = window_during(&attacker, w.layout.home(), || tokio.block_on(rt.start(&id)));
                // Whatever happened, nothing of root's may be in the attacker's directory
                // (but the naive binder's sockets, counted and removed below).
                let listing = std::fs::read_dir(&theirs_dir).unwrap_or_else(|e| panic!("read the attacker's directory: {e}"));
                for e in listing {
                    let e = e.unwrap_or_else(|e| panic!("read the attacker's directory: {e}"));
                    let m = e.metadata().unwrap_or_else(|err| panic!("stat {:?} in the attacker's directory: {err}", e.file_name()));
                    if m.uid() != NOBODY {
                        let at = if recorded_fallback(w.layout.home()).is_some() { "the fallback" } else { "<base>/boxsock-<uid>" };
                        in_attacker_dir.push((e.file_name().to_string_lossy().into_owned(), at));
                    }
                }
                match r {
                    Ok(_) => {
                        started += 1;
                        windows += usize::from(window);
                        let m = std::fs::symlink_metadata(&real_agent).expect("agent.sock in the real socket directory");
                        assert_eq!(m.mode() & 0o777, 0o600, "agent.sock mode under umask 000");
                        let addr = boxsock_core::SocketAddress::Path(real_agent.clone());
                        let got = crate::attacks::nobody::run(&[crate::attacks::nobody::Act::ConnectSend(
                            crate::attacks::nobody::RawAddr::of(&addr),
                            b"\0".to_vec(),
                        )])
                        .unwrap();
                        assert!(got[0] <= 0, "nobody was served by the box's agent: {got:?}");
                        tokio.block_on(rt.stop(&id, None)).unwrap();
                    }
                    Err(e) => {
                        refused += 1;
                        refused_in_window += usize::from(window);
                        if samples.len() < 3 {
                            samples.push(e.to_string());
                        }
                    }
                }
                // The naive binder: binds by the path string, in the directory the runtime
                // uses now, trusting the start's ensure.
                for _ in 0..NAIVE_BINDS {
                    naive += 1;
                    let name = format!("naive-{naive}.sock");
                    let at = runtime_dir(w.layout.home(), &per_uid).join(&id).join(&name);
                    let Ok(l) = std::os::unix::net::UnixListener::bind(at) else { continue };
                    if std::fs::symlink_metadata(theirs_dir.join(&name)).is_ok() {
                        hijacked += 1;
                        std::fs::remove_file(theirs_dir.join(&name)).expect("remove the naive socket from the attacker's directory");
                    } else {
                        let _ = std::fs::remove_file(real_dir.join(&name));
                    }
                    drop(l);
                }
            }
            stop.store(true, Ordering::Relaxed);
            cleaner.join().unwrap();
            let placed = attacker.mark().placed;
            let hits = attacker.finish();
            in_attacker_dir.retain(|(n, _)| !n.starts_with("naive-"));
            let names: std::collections::BTreeSet<&String> = in_attacker_dir.iter().map(|(n, _)| n).collect();
            let at_fallback = in_attacker_dir.iter().filter(|(_, at)| *at == "the fallback").count();
            assert!(
                in_attacker_dir.is_empty(),
                "root's files appeared in the attacker's directory {} times ({} while the runtime used <base>/boxsock-<uid>, {at_fallback} while it used the fallback; {started} started, {refused} refused): {names:?}",
                in_attacker_dir.len(),
                in_attacker_dir.len() - at_fallback
            );
            assert_eq!(hits, 0, "the attacker's listener at ready.sock received {hits} connection(s) with bytes");
            assert!(
                windows >= MIN_START_WINDOWS,
                "attack never landed where the runtime works: nobody's directory was in place at the runtime's directory during only {windows} of {started} starts (at least {MIN_START_WINDOWS} needed; {refused} refused, {refused_in_window} of them in such a window: {samples:?})"
            );
            assert!(
                hijacked >= MIN_NAIVE_HIJACKS,
                "the naive binder bound {hijacked} of {naive} sockets in the attacker's directory (at least {MIN_NAIVE_HIJACKS} needed): the attack did not land, so the run proves nothing"
            );
            let _ = tokio.block_on(rt.remove(&id, true));
            Outcome::Passed(format!(
                "{} starts under umask 000: {} started, {} of them while nobody's directory was in place at the directory the runtime was using (at least {MIN_START_WINDOWS} required); {} refused, {} of them while it was in place there (first refusal: {}); agent.sock was always bound 0600 in the real socket directory, nothing of root's ever appeared in the attacker's directory (read after every start through a descriptor held on it), its listener at `<id>/ready.sock` received nothing, and nobody's dial of the agent was refused. Beside it, the naive binder bound {} of {} sockets in the attacker's directory (at least {MIN_NAIVE_HIJACKS} required); {}",
                measured(started + refused),
                measured(started),
                measured(windows),
                measured(refused),
                measured(refused_in_window),
                measured(samples.first().map_or_else(|| "none".to_owned(), |s| format!("\"{s}\""))),
                measured(hijacked),
                measured(naive),
                binding_dir_text(&w, placed),
            ))
        })()
    }
);

scenario!(
    squatted_per_uid_dir_falls_back_to_a_private_unpredictable_dir,
    "Attacks",
    "before first use, `nobody` creates `<base>/boxsock-<uid>` as its own 0777 directory; the runtime creates, starts and execs in a box, then a second runtime over the same home does too, and `doctor` is asked",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let squatted = w.per_uid();
            let r = crate::attacks::nobody::run(&[
                crate::attacks::nobody::Act::Mkdir(cstr(&squatted), 0o777),
                crate::attacks::nobody::Act::Chmod(cstr(&squatted), 0o777),
            ])
            .unwrap();
            assert_eq!(r, [0, 0], "nobody could not squat");
            let tokio = tokio_rt();
            let (fallback, id) = {
                let (rt, _) =
                    tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
                let b = tokio
                    .block_on(rt.create(CreateOptions::new("short-symlink", "host")))
                    .unwrap_or_else(|e| panic!("create over a squatted per-user dir: {e}"));
                let id = b.id.to_string();
                tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("start: {e}"));
                assert_eq!(tokio.block_on(exec_code(&rt, &id, &["/bin/true"])).unwrap(), 0);
                let record =
                    std::fs::read_to_string(w.layout.home().join(boxsock_runtime::squat::RECORD))
                        .expect("the fallback is recorded in the home");
                let fallback = std::path::PathBuf::from(record.lines().next().unwrap_or(""));
                let s = rt.strategy("short-symlink").unwrap();
                assert_eq!(
                    s.binding_dir().as_deref(),
                    Some(fallback.as_path()),
                    "the strategy uses the recorded fallback"
                );
                let addr = s.address(rt.layout(), &b.id, "agent.sock").unwrap();
                assert!(addr.as_path().unwrap().starts_with(&fallback), "{addr}");
                tokio.block_on(rt.stop(&id, None)).unwrap();
                (fallback, id)
            };
            // Unpredictable, private, ours, and exactly as long as the worst-case name.
            let name = fallback.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(fallback.parent(), Some(w.base.as_path()));
            assert_eq!(name.len(), "boxsock-4294967295".len(), "{name}");
            assert!(name.starts_with("boxsock.") && name != "boxsock.0000000000", "{name}");
            let m = std::fs::symlink_metadata(&fallback).unwrap();
            assert!(
                m.is_dir()
                    && m.uid() == nix::unistd::geteuid().as_raw()
                    && m.mode() & 0o777 == 0o700,
                "{:o}",
                m.mode()
            );
            // The squatter's directory was neither used nor touched.
            let sm = std::fs::symlink_metadata(&squatted).unwrap();
            assert_eq!((sm.uid(), sm.mode() & 0o777), (NOBODY, 0o777));
            assert!(
                crate::attacks::entries(&squatted).is_empty(),
                "something was put in the squatter's directory"
            );
            // Another runtime over the home agrees, without a new fallback.
            let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
            tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("second runtime: start: {e}"));
            assert_eq!(tokio.block_on(exec_code(&rt, &id, &["/bin/true"])).unwrap(), 0);
            let dirs: Vec<String> = crate::attacks::entries(&w.base)
                .into_iter()
                .filter(|n| n.starts_with("boxsock."))
                .collect();
            assert_eq!(dirs, std::slice::from_ref(&name), "one fallback for the home");
            let report = boxsock::doctor(w.layout.home(), &rt_options(&w));
            assert_eq!(report.binding_dir_fallback.as_deref(), Some(&*fallback.to_string_lossy()));
            assert_eq!(report.binding_dir_squatted_by, Some(NOBODY));
            tokio.block_on(rt.remove(&id, true)).unwrap();
            Outcome::Passed(format!(
                "create, start and exec worked through a fresh 0700 directory <base>/{} (random, as long as the worst-case per-user name), recorded in <home>/binding-dir; a second runtime used the same one; doctor reports it and the squatter (uid 65534); the squatter's directory stayed untouched and empty",
                measured(&name)
            ))
        })()
    }
);

scenario!(
    impostor_agent_of_the_owner_is_rejected_on_dial,
    "Attacks",
    "a running box (host backend, every path-addressable strategy); another process of the *owner* removes the agent's socket file and listens at `agent.sock` itself; then `exec` and `ping`",
    {
        {
            let tokio = tokio_rt();
            let mut seen = Vec::new();
            // Keyed on capabilities: every strategy whose agent address is a file.
            let paths = boxsock::builtin_strategies()
                .iter()
                .filter(|r| {
                    (r.build)(&boxsock::StrategyConfig::default())
                        .is_ok_and(|s| s.capabilities().path_addressable)
                })
                .map(|r| r.name)
                .collect::<Vec<_>>();
            for name in paths {
                let w = World::new();
                let (rt, _) =
                    tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
                let b = tokio.block_on(rt.create(CreateOptions::new(name, "host"))).unwrap();
                let id = b.id.to_string();
                tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("{name}: start: {e}"));
                let agent_pid = rt.get(&id).unwrap().process.unwrap().pid;
                let real = w.layout.sockets_dir(&b.id).join("agent.sock");
                std::fs::remove_file(&real).unwrap();
                // The impostor: a listener of the same uid, in another process.
                let child = Attacker::start(
                    Program::ListenAsOwner { sock: cstr(&real) },
                    Duration::from_secs(60),
                );
                let err = tokio
                    .block_on(exec_code(&rt, &id, &["/bin/true"]))
                    .expect_err("exec through an impostor");
                let text = err.to_string();
                assert!(
                    text.contains(&format!("not the box's process: expected pid {agent_pid}"))
                        && text.contains(&format!("pid {}", child.pid())),
                    "{name}: {text}"
                );
                assert!(tokio.block_on(rt.ping(&id)).is_err());
                // The positive control: a naive dialer (connect by the path string, no peer
                // check) reaches the impostor.
                let naive = std::os::unix::net::UnixStream::connect(&real)
                    .expect("control: the naive dialer reached nothing");
                let cred = nix::sys::socket::getsockopt(
                    &naive,
                    nix::sys::socket::sockopt::PeerCredentials,
                )
                .unwrap();
                assert_eq!(
                    cred.pid(),
                    child.pid(),
                    "{name}: control: the naive dialer did not reach the impostor"
                );
                drop(naive);
                let hits = child.finish();
                assert_eq!(hits, 0, "{name}: the impostor received bytes of a request");
                let _ = tokio.block_on(rt.remove(&id, true));
                seen.push(format!("{name}: {}", measured(&text)));
            }
            Outcome::Passed(format!(
                "every dial was refused before a byte was sent, while a naive dialer beside it (connect to `agent.sock` by the path string) reached the impostor; {}",
                seen.join("; ")
            ))
        }
    }
);

scenario!(
    allowed_peer_uid_reaches_the_agent,
    "Attacks",
    "the embedder allows uid 65534 (`allowed_peer_uids`); a box on the `host` backend with the `abstract` strategy runs; `nobody` dials the agent and sends hello + exec `touch <marker>`; a box without that allowance is dialled the same way",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let tokio = tokio_rt();
            let mut served = Vec::new();
            for allow in [true, false] {
                let w = World::new();
                let mut o = rt_options(&w);
                if allow {
                    o.strategy_config.allowed_peer_uids = vec![NOBODY];
                }
                let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), o)).unwrap();
                let b = tokio.block_on(rt.create(CreateOptions::new("abstract", "host"))).unwrap();
                let id = b.id.to_string();
                tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("start: {e}"));
                let pid = rt.get(&id).unwrap().process.unwrap().pid;
                let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
                let allowed_in_argv = argv
                    .split(|b| *b == 0)
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| w[0] == b"--allow-uid" && w[1] == b"65534");
                assert_eq!(allowed_in_argv, allow, "the agent's --allow-uid list");
                let addr = rt
                    .strategy("abstract")
                    .unwrap()
                    .address(rt.layout(), &b.id, "agent.sock")
                    .unwrap();
                // A place nobody may write, so the marker proves the agent ran the command.
                let marker = w.root.path().join("allowed-peer-ran-this");
                let r = crate::attacks::nobody::run(&[crate::attacks::nobody::Act::ConnectSend(
                    crate::attacks::nobody::RawAddr::of(&addr),
                    crate::attacks::exec_touch_bytes(&marker),
                )])
                .unwrap();
                let ran = crate::attacks::wait_exists(
                    &marker,
                    Duration::from_secs(if allow { 10 } else { 2 }),
                );
                assert_eq!(
                    ran, allow,
                    "allow={allow}: nobody's exec ran = {ran} (connect result {r:?})"
                );
                tokio.block_on(rt.remove(&id, true)).unwrap();
                served.push(format!(
                    "{}: {}",
                    if allow { "allowed" } else { "not allowed" },
                    if ran { "served" } else { "dropped unserved" }
                ));
            }
            Outcome::Passed(format!(
                "uid 65534 {}; the agent's --allow-uid list carries the embedder's uids (before the fix it had only the owner's)",
                served.join(", ")
            ))
        })()
    }
);
