//! Issue 10, item 2: the runtime must never dial or bind by re-resolving a path string
//! after checking it. Each recipe of the issue, as a bounded race: a real attacker
//! (forked children that drop to `nobody`) keeps changing a directory on the path while
//! the runtime (host backend, real agent) starts boxes and runs execs. Every exec must
//! either run in the box or fail with an error; none may ever reach the attacker's
//! listener.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use boxsock::{CreateOptions, Runtime};
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;

use crate::attacks::{NEED_ROOT, NOBODY, World, cstr, exec_code, is_root, rt_options, tokio_rt};

/// How many starts the umask race needs to succeed.
const STARTS: usize = 25;

/// How many execs each exec race needs to run in the box.
const EXECS: usize = 300;

/// How many of the real victim's dials (execs that ran in the box) must have had the
/// attacker's object in place at least once while they ran. A dialer that re-resolved the
/// path string in only 1 of 20 dials made in such a window would still have been caught
/// by 100 windows with a probability above 99 % (0.95^100 < 0.006); fewer windows would
/// not show that the real dialer resists the attack rather than missing it.
///
/// A window is counted where the attacker attacks: the flipped link base, or
/// `<base>/boxsock-<uid>`. Once the runtime has seen that directory squatted it binds
/// in a private fallback instead, and the windows at `<base>/boxsock-<uid>` no longer
/// lie on its path; the observed text says where it ended ([`binding_dir_text`]).
const MIN_WINDOWS: usize = 100;

/// How many starts under `umask 000` must have had the attacker's directory in place at
/// least once while they ran (each start binds `ready.sock`, and its agent binds
/// `agent.sock` and dials `ready.sock`). A start that bound or dialled by the path string
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
    /// Listen at `own/<id>/agent.sock`, and keep renaming `own` to `target` (the
    /// per-user directory, whenever a cleaner has removed it) and back.
    SwapIn { own: CString, sub: CString, sock: CString, target: CString },
}

/// What an attacker child shares with the test, in a page mapped `MAP_SHARED` before
/// the fork: whether its object (the flipped link, its renamed directory) is in place
/// now, and how many times it has been put in place. Both are conservative: `placed`
/// is counted and `in_place` set *after* the object is in place, and `in_place` is
/// cleared *before* it is taken away, so a window is never counted that did not exist.
#[repr(C)]
struct Shared {
    in_place: AtomicI64,
    placed: AtomicI64,
}

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
    in_place: bool,
    placed: i64,
}

impl Mark {
    /// Whether the attacker's object was in place at some moment between `self` and
    /// `later`.
    fn window_until(self, later: Mark) -> bool {
        self.in_place || later.placed > self.placed
    }
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
        if fd < 0 || libc::bind(fd, (&a.0 as *const libc::sockaddr_un).cast(), a.1) != 0 || libc::listen(fd, 64) != 0 {
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
            libc::setsockopt(c, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as libc::socklen_t);
            let mut buf = [0u8; 512];
            if libc::recv(c, buf.as_mut_ptr().cast(), buf.len(), 0) > 0 {
                *hits += 1;
            }
            libc::close(c);
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

fn child(out: RawFd, stop: RawFd, prog: &Program, sock: Option<(libc::sockaddr_un, libc::socklen_t)>, until_ms: i64, shared: &Shared) -> ! {
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
        match prog {
            Program::Listen { .. } | Program::ListenAsOwner { .. } => lfd = listen_at(sock.as_ref().expect("address")),
            Program::SwapIn { own, sub, .. } => {
                libc::mkdir(own.as_ptr(), 0o777);
                libc::mkdir(sub.as_ptr(), 0o777);
                lfd = listen_at(sock.as_ref().expect("address"));
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
                        shared.in_place.store(0, Ordering::SeqCst);
                    }
                    if libc::symlink(to.as_ptr(), tmp.as_ptr()) == 0 && libc::rename(tmp.as_ptr(), link.as_ptr()) == 0 {
                        hits += 1;
                        if !flip {
                            shared.placed.fetch_add(1, Ordering::SeqCst);
                            shared.in_place.store(1, Ordering::SeqCst);
                        }
                    }
                    flip = !flip;
                }
                Program::Listen { .. } | Program::ListenAsOwner { .. } => {
                    drain(lfd, &mut hits);
                    libc::usleep(200);
                }
                Program::SwapIn { own, target, .. } => {
                    // In place only briefly, as a racing attacker would: long stays
                    // would only make `ensure` refuse (it checks the owner).
                    if libc::rename(own.as_ptr(), target.as_ptr()) == 0 {
                        shared.placed.fetch_add(1, Ordering::SeqCst);
                        shared.in_place.store(1, Ordering::SeqCst);
                        drain(lfd, &mut hits);
                        libc::usleep(50);
                        drain(lfd, &mut hits);
                        shared.in_place.store(0, Ordering::SeqCst);
                        libc::rename(target.as_ptr(), own.as_ptr());
                    }
                    drain(lfd, &mut hits);
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
            Program::Listen { sock } | Program::ListenAsOwner { sock } | Program::SwapIn { sock, .. } => Some(sockaddr(sock)),
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
        Mark { in_place: s.in_place.load(Ordering::SeqCst) != 0, placed: s.placed.load(Ordering::SeqCst) }
    }

    /// Run `f` and say whether the attacker's object was in place at some moment while
    /// it ran.
    fn during<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        let before = self.mark();
        let r = f();
        (r, before.window_until(self.mark()))
    }

    fn read_i64(&self) -> Option<i64> {
        let mut b = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            // SAFETY: reading into a stack buffer from a pipe we own.
            let n = unsafe { libc::read(self.rd.as_raw_fd(), b[got..].as_mut_ptr().cast(), 8 - got) };
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
    let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).expect("SO_PEERCRED");
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
    /// Execs that ran in the box while the attacker's object was in place at least once.
    windows: usize,
    /// The naive dialer's dials.
    naive: usize,
    /// Its dials that reached the attacker's listener.
    hijacked: usize,
}

/// Run execs of `true` on box `id` (the real victim), each followed by one dial of the
/// naive victim at `naive_path`, until [`EXECS`] ran in the box, [`MIN_WINDOWS`] of them
/// ran while the attacker's object was in place, and the naive dialer was hijacked
/// [`MIN_NAIVE_HIJACKS`] times; at most `10 × EXECS` execs. A nonzero exit status (a
/// forged reply) fails.
fn exec_race(tokio: &tokio::runtime::Runtime, rt: &Runtime, id: &str, attacker: &Attacker, naive_path: &Path) -> Race {
    let mut r = Race::default();
    let done = |r: &Race| r.ran >= EXECS && r.windows >= MIN_WINDOWS && r.hijacked >= MIN_NAIVE_HIJACKS;
    while !done(&r) && r.ran + r.refused < 10 * EXECS {
        let (res, window) = attacker.during(|| tokio.block_on(exec_code(rt, id, &["/bin/true"])));
        match res {
            Ok(0) => {
                r.ran += 1;
                r.windows += usize::from(window);
            }
            Ok(code) => panic!("an exec of /bin/true returned {code}: a forged reply?"),
            Err(e) => {
                r.refused += 1;
                if r.samples.len() < 2 {
                    r.samples.push(e.to_string());
                }
            }
        }
        r.naive += 1;
        r.hijacked += usize::from(naive_dial(naive_path) == Some(true));
    }
    r
}

/// The assertions every exec race ends with: the real victim never reached the attacker
/// (`hits`: requests the attacker's listener received), while the attack demonstrably
/// landed on the naive victim and was in place during enough of the real dials.
fn assert_race(r: &Race, hits: i64) {
    assert_eq!(hits, 0, "{hits} exec request(s) reached the attacker's listener ({} ran, {} refused)", r.ran, r.refused);
    assert!(r.ran >= EXECS, "only {} of {EXECS} execs ran in the box ({} refused: {:?})", r.ran, r.refused, r.samples);
    assert!(
        r.hijacked >= MIN_NAIVE_HIJACKS,
        "the naive dialer was hijacked {} times in {} dials (at least {MIN_NAIVE_HIJACKS} needed): the attack did not land, so the run proves nothing",
        r.hijacked,
        r.naive
    );
    assert!(
        r.windows >= MIN_WINDOWS,
        "the attacker's object was in place during only {} of {} execs that ran (at least {MIN_WINDOWS} needed)",
        r.windows,
        r.ran
    );
}

/// The observed text of an exec race (`attack`: what the attacker did, with its count).
fn race_text(r: &Race, took: Duration, attack: &str) -> String {
    format!(
        "{} execs in {} s while {attack}: {} ran in the box, {} of them while the attacker's object was in place (at least {MIN_WINDOWS} required), {} refused (first refusal: {}); 0 reached the attacker's listener. Beside it, a naive dialer (connect by the path string) reached the attacker's listener {} times in {} dials (at least {MIN_NAIVE_HIJACKS} required)",
        measured(r.ran + r.refused),
        measured(format_args!("{:.1}", took.as_secs_f64())),
        measured(r.ran),
        measured(r.windows),
        measured(r.refused),
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
            assert!(err.contains("65534"), "create was refused for another reason than the link's owner: {err}");
            let real_dir = w.base.join(format!("boxsock-{}", nix::unistd::geteuid())).join(id);
            std::fs::create_dir_all(&real_dir).unwrap();
            let real = std::os::unix::net::UnixListener::bind(real_dir.join("agent.sock")).unwrap();
            let uid_dir = evil.join(format!("boxsock-{}", nix::unistd::geteuid()));
            mkdir_mode(&uid_dir, 0o777, Some(NOBODY));
            mkdir_mode(&uid_dir.join(id), 0o777, Some(NOBODY));
            let race = Duration::from_secs(120);
            let listener = Attacker::start(Program::Listen { sock: cstr(&uid_dir.join(id).join("agent.sock")) }, race);
            let flipper = Attacker::start(
                Program::Flip { link: cstr(&lnk), tmp: cstr(&w.base.join("lnk.tmp")), a: cstr(&w.base), b: cstr(&evil) },
                race,
            );
            let naive = lnk.join(format!("boxsock-{}", nix::unistd::geteuid())).join(id).join("agent.sock");
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
    "default layout (base 1777): a cleaner keeps deleting root's `<base>/boxsock-<uid>` while `nobody` keeps renaming its own directory (holding `<id>/agent.sock`, its listener) into that name and back; a running box (host backend) gets execs until 300 have run in it, 100 of them while nobody's directory was in place, and a naive dialer beside it (connect to `<base>/boxsock-<uid>/<id>/agent.sock` by the path string, after each exec) was hijacked 5 times (at most 3 000 execs)",
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
                },
                race,
            );
            let (stop, cleaner) = start_cleaner(&per_uid);
            let started = Instant::now();
            let r = exec_race(&tokio, &rt, &id, &attacker, &per_uid.join(&id).join("agent.sock"));
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            let removed = cleaner.join().unwrap();
            let hits = attacker.finish();
            assert_race(&r, hits);
            let _ = tokio.block_on(rt.remove(&id, true));
            Outcome::Passed(format!(
                "{}; the runtime's binding directory at the end: {}",
                race_text(&r, took, &format!("the cleaner removed the per-user directory {} times", measured(removed))),
                binding_dir_text(&w)
            ))
        })()
    }
);

/// Where the runtime of home `w` binds at the end of a race: its private fallback (it saw
/// the per-user directory squatted and moved, so the attacker's renames into
/// `<base>/boxsock-<uid>` no longer lay on its path), or the per-user directory.
fn binding_dir_text(w: &crate::attacks::World) -> String {
    let fell_back = w.layout.home().join(boxsock_runtime::squat::RECORD).exists();
    measured(if fell_back {
        "its private fallback <base>/boxsock.*, so from then on nobody's renames into <base>/boxsock-<uid> reached only the naive victim"
    } else {
        "<base>/boxsock-<uid>"
    })
}

/// The cleaner: keeps removing root's per-user directory `per_uid` (never the
/// attacker's) until told to stop; returns how many times it did.
fn start_cleaner(per_uid: &Path) -> (Arc<AtomicBool>, std::thread::JoinHandle<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, per_uid) = (stop.clone(), per_uid.to_owned());
    let cleaner = std::thread::spawn(move || {
        let mut removed = 0u32;
        while !flag.load(Ordering::Relaxed) {
            if std::fs::symlink_metadata(&per_uid).is_ok_and(|m| m.uid() == 0 && m.is_dir())
                && std::fs::remove_dir_all(&per_uid).is_ok()
            {
                removed += 1;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        removed
    });
    (stop, cleaner)
}

/// How many sockets the naive binder of the umask race binds after each start attempt.
const NAIVE_BINDS: usize = 10;

scenario!(
    own_process umask_000_start_never_binds_in_the_attackers_dir,
    "Attacks",
    "`umask 000` (in a process of its own); a cleaner keeps deleting root's `<base>/boxsock-<uid>` while `nobody` keeps renaming its own 0777 directory (with `<id>/` and its listener at `<id>/ready.sock`, where the box's agent reports readiness) into that name; the runtime starts and stops the box until 25 starts succeed and 20 of them ran while nobody's directory was in place (at most 200 attempts); after each start `nobody` dials the box's agent socket in the real directory, and a naive binder beside it binds 10 sockets at `<base>/boxsock-<uid>/<id>/naive-N.sock` by the path string (5 of them must land in nobody's directory)",
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
                },
                Duration::from_secs(120),
            );
            let (stop, cleaner) = start_cleaner(&per_uid);
            let real_dir = w.layout.sockets_dir(&b.id);
            let real_agent = real_dir.join("agent.sock");
            // This test has a process of its own: umask 000 for the rest of it.
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            let (mut started, mut refused, mut windows, mut samples) = (0, 0, 0, Vec::<String>::new());
            let (mut naive, mut hijacked, mut in_attacker_dir) = (0, 0, Vec::new());
            let done = |started: usize, windows: usize, hijacked: usize| {
                started >= STARTS && windows >= MIN_START_WINDOWS && hijacked >= MIN_NAIVE_HIJACKS
            };
            while !done(started, windows, hijacked) && started + refused < 8 * STARTS {
                let (r, window) = attacker.during(|| tokio.block_on(rt.start(&id)));
                // Whatever happened, nothing of root's may be in the attacker's directory
                // (but the naive binder's sockets, counted and removed below).
                let listing = std::fs::read_dir(&theirs_dir).unwrap_or_else(|e| panic!("read the attacker's directory: {e}"));
                for e in listing {
                    let e = e.unwrap_or_else(|e| panic!("read the attacker's directory: {e}"));
                    let m = e.metadata().unwrap_or_else(|err| panic!("stat {:?} in the attacker's directory: {err}", e.file_name()));
                    if m.uid() != NOBODY {
                        in_attacker_dir.push(e.file_name().to_string_lossy().into_owned());
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
                        if samples.len() < 3 {
                            samples.push(e.to_string());
                        }
                    }
                }
                // The naive binder: binds by the path string, trusting the start's ensure.
                for _ in 0..NAIVE_BINDS {
                    naive += 1;
                    let name = format!("naive-{naive}.sock");
                    let Ok(l) = std::os::unix::net::UnixListener::bind(per_uid.join(&id).join(&name)) else { continue };
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
            let hits = attacker.finish();
            in_attacker_dir.retain(|n| !n.starts_with("naive-"));
            assert!(in_attacker_dir.is_empty(), "root's files appeared in the attacker's directory: {in_attacker_dir:?}");
            assert_eq!(hits, 0, "the attacker's listener at ready.sock received {hits} connection(s) with bytes");
            assert!(started >= STARTS, "only {started} of {STARTS} starts succeeded ({refused} refused): {samples:?}");
            assert!(
                hijacked >= MIN_NAIVE_HIJACKS,
                "the naive binder bound {hijacked} of {naive} sockets in the attacker's directory (at least {MIN_NAIVE_HIJACKS} needed): the attack did not land, so the run proves nothing"
            );
            assert!(
                windows >= MIN_START_WINDOWS,
                "nobody's directory was in place during only {windows} of {started} starts (at least {MIN_START_WINDOWS} needed)"
            );
            let _ = tokio.block_on(rt.remove(&id, true));
            Outcome::Passed(format!(
                "{} starts under umask 000: {} started, {} of them while nobody's directory was in place (at least {MIN_START_WINDOWS} required), {} refused; agent.sock was always bound 0600 in the real socket directory, nothing of root's ever appeared in the attacker's directory (read after every start through a descriptor held on it), its listener at `<id>/ready.sock` received nothing, and nobody's dial of the agent was refused. Beside it, the naive binder bound {} of {} sockets in the attacker's directory (at least {MIN_NAIVE_HIJACKS} required); the runtime's binding directory at the end: {}",
                measured(started + refused),
                measured(started),
                measured(windows),
                measured(refused),
                measured(hijacked),
                measured(naive),
                binding_dir_text(&w),
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
                let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
                let b = tokio.block_on(rt.create(CreateOptions::new("short-symlink", "host"))).unwrap_or_else(|e| panic!("create over a squatted per-user dir: {e}"));
                let id = b.id.to_string();
                tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("start: {e}"));
                assert_eq!(tokio.block_on(exec_code(&rt, &id, &["/bin/true"])).unwrap(), 0);
                let record = std::fs::read_to_string(w.layout.home().join(boxsock_runtime::squat::RECORD)).expect("the fallback is recorded in the home");
                let fallback = std::path::PathBuf::from(record.trim_end());
                let s = rt.strategy("short-symlink").unwrap();
                assert_eq!(s.binding_dir().as_deref(), Some(fallback.as_path()), "the strategy uses the recorded fallback");
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
            assert!(m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o777 == 0o700, "{:o}", m.mode());
            // The squatter's directory was neither used nor touched.
            let sm = std::fs::symlink_metadata(&squatted).unwrap();
            assert_eq!((sm.uid(), sm.mode() & 0o777), (NOBODY, 0o777));
            assert!(crate::attacks::entries(&squatted).is_empty(), "something was put in the squatter's directory");
            // Another runtime over the home agrees, without a new fallback.
            let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
            tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("second runtime: start: {e}"));
            assert_eq!(tokio.block_on(exec_code(&rt, &id, &["/bin/true"])).unwrap(), 0);
            let dirs: Vec<String> = crate::attacks::entries(&w.base).into_iter().filter(|n| n.starts_with("boxsock.")).collect();
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
            let paths = boxsock::builtin_strategies().iter().filter(|r| (r.build)(&boxsock::StrategyConfig::default()).is_ok_and(|s| s.capabilities().path_addressable)).map(|r| r.name).collect::<Vec<_>>();
            for name in paths {
                let w = World::new();
                let (rt, _) = tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
                let b = tokio.block_on(rt.create(CreateOptions::new(name, "host"))).unwrap();
                let id = b.id.to_string();
                tokio.block_on(rt.start(&id)).unwrap_or_else(|e| panic!("{name}: start: {e}"));
                let agent_pid = rt.get(&id).unwrap().process.unwrap().pid;
                let real = w.layout.sockets_dir(&b.id).join("agent.sock");
                std::fs::remove_file(&real).unwrap();
                // The impostor: a listener of the same uid, in another process.
                let child = Attacker::start(Program::ListenAsOwner { sock: cstr(&real) }, Duration::from_secs(60));
                let err = tokio.block_on(exec_code(&rt, &id, &["/bin/true"])).expect_err("exec through an impostor");
                let text = err.to_string();
                assert!(
                    text.contains(&format!("not the box's process: expected pid {agent_pid}")) && text.contains(&format!("pid {}", child.pid())),
                    "{name}: {text}"
                );
                assert!(tokio.block_on(rt.ping(&id)).is_err());
                // The positive control: a naive dialer (connect by the path string, no peer
                // check) reaches the impostor.
                let naive = std::os::unix::net::UnixStream::connect(&real).expect("control: the naive dialer reached nothing");
                let cred = nix::sys::socket::getsockopt(&naive, nix::sys::socket::sockopt::PeerCredentials).unwrap();
                assert_eq!(cred.pid(), child.pid(), "{name}: control: the naive dialer did not reach the impostor");
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
                let allowed_in_argv = argv.split(|b| *b == 0).collect::<Vec<_>>().windows(2).any(|w| w[0] == b"--allow-uid" && w[1] == b"65534");
                assert_eq!(allowed_in_argv, allow, "the agent's --allow-uid list");
                let addr = rt.strategy("abstract").unwrap().address(rt.layout(), &b.id, "agent.sock").unwrap();
                // A place nobody may write, so the marker proves the agent ran the command.
                let marker = w.root.path().join("allowed-peer-ran-this");
                let r = crate::attacks::nobody::run(&[crate::attacks::nobody::Act::ConnectSend(
                    crate::attacks::nobody::RawAddr::of(&addr),
                    crate::attacks::exec_touch_bytes(&marker),
                )])
                .unwrap();
                let ran = crate::attacks::wait_exists(&marker, Duration::from_secs(if allow { 10 } else { 2 }));
                assert_eq!(ran, allow, "allow={allow}: nobody's exec ran = {ran} (connect result {r:?})");
                tokio.block_on(rt.remove(&id, true)).unwrap();
                served.push(format!("{}: {}", if allow { "allowed" } else { "not allowed" }, if ran { "served" } else { "dropped unserved" }));
            }
            Outcome::Passed(format!(
                "uid 65534 {}; the agent's --allow-uid list carries the embedder's uids (before the fix it had only the owner's)",
                served.join(", ")
            ))
        })()
    }
);
