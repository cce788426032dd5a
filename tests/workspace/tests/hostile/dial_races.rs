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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boxsock::{CreateOptions, Runtime};
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;

use crate::attacks::{NEED_ROOT, NOBODY, World, cstr, exec_code, is_root, rt_options, tokio_rt};

/// How many starts the umask race needs to succeed.
const STARTS: usize = 25;

/// How many execs each race runs (the issue measured 251 hijacks in 1 298 and 1 in 676).
const EXECS: usize = 300;

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

/// A running attacker child; [`Attacker::finish`] stops it and returns its count.
struct Attacker {
    pid: libc::pid_t,
    rd: OwnedFd,
    /// Closing it tells the child to stop (it polls the other end).
    stop: Option<OwnedFd>,
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

fn child(out: RawFd, stop: RawFd, prog: &Program, sock: Option<(libc::sockaddr_un, libc::socklen_t)>, until_ms: i64) -> ! {
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
                    let to = if flip { a } else { b };
                    if libc::symlink(to.as_ptr(), tmp.as_ptr()) == 0 && libc::rename(tmp.as_ptr(), link.as_ptr()) == 0 {
                        hits += 1;
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
                        drain(lfd, &mut hits);
                        libc::usleep(50);
                        drain(lfd, &mut hits);
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
        // SAFETY: the child runs only system calls on prepared data (`child`) and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            drop(stop_wr);
            child(wr.as_raw_fd(), stop_rd.as_raw_fd(), &prog, sock, until);
        }
        drop((wr, stop_rd));
        let a = Attacker { pid, rd, stop: Some(stop_wr) };
        assert_eq!(a.read_i64(), Some(0), "the attacker child could not drop to nobody");
        a
    }

    fn pid(&self) -> i32 {
        self.pid
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

fn mkdir_mode(p: &Path, mode: u32, owner: Option<u32>) {
    std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    if let Some(u) = owner {
        std::os::unix::fs::chown(p, Some(u), Some(u)).unwrap();
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Run execs of `true` on box `id` until `n` have run in the box (or `10 n` attempts),
/// counting (ran, refused); a nonzero exit status (a forged reply) fails.
fn exec_many(tokio: &tokio::runtime::Runtime, rt: &Runtime, id: &str, n: usize) -> (usize, usize, Vec<String>) {
    let (mut ran, mut refused, mut samples) = (0, 0, Vec::new());
    while ran < n && ran + refused < 10 * n {
        match tokio.block_on(exec_code(rt, id, &["/bin/true"])) {
            Ok(0) => ran += 1,
            Ok(code) => panic!("an exec of /bin/true returned {code}: a forged reply?"),
            Err(e) => {
                refused += 1;
                if samples.len() < 2 {
                    samples.push(e.to_string());
                }
            }
        }
    }
    (ran, refused, samples)
}

scenario!(
    flipping_link_base_never_receives_an_exec,
    "Attacks",
    "the link base is `<base>/lnk` (base 1777), a symlink `nobody` owns and keeps flipping between root's real base and its own base holding `boxsock-<uid>/<id>/agent.sock`, its listener; a running box (host backend) gets execs until 300 have run in it (at most 3 000 attempts)",
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
            // A runtime that refuses a link base another user can redirect is protected
            // before any dial (at create or start); the race below is then moot.
            let refused = |when: &str, e: boxsock::RuntimeError| {
                let text = e.to_string();
                assert!(text.contains(&*lnk.to_string_lossy()) || text.contains("65534"), "{when} failed for another reason: {text}");
                let text = text.replace(root.to_str().unwrap(), "<root>");
                Outcome::Passed(format!("refused at {when}, before any dial: {text}"))
            };
            let b = match tokio.block_on(rt.create(CreateOptions::new("short-symlink", "host"))) {
                Ok(b) => b,
                Err(e) => return refused("create", e),
            };
            let id = b.id.to_string();
            if let Err(e) = tokio.block_on(rt.start(&id)) {
                return refused("start", e);
            }
            let uid_dir = evil.join(format!("boxsock-{}", nix::unistd::geteuid()));
            mkdir_mode(&uid_dir, 0o777, Some(NOBODY));
            mkdir_mode(&uid_dir.join(&id), 0o777, Some(NOBODY));
            let race = Duration::from_secs(60);
            let listener = Attacker::start(Program::Listen { sock: cstr(&uid_dir.join(&id).join("agent.sock")) }, race);
            let flipper = Attacker::start(
                Program::Flip { link: cstr(&lnk), tmp: cstr(&w.base.join("lnk.tmp")), a: cstr(&w.base), b: cstr(&evil) },
                race,
            );
            let started = Instant::now();
            let (ran, refused, samples) = exec_many(&tokio, &rt, &id, EXECS);
            let took = started.elapsed();
            let flips = flipper.finish();
            let hits = listener.finish();
            assert!(flips > 0, "the attacker never flipped the link ({flips})");
            assert_eq!(hits, 0, "{hits} exec request(s) reached the attacker's listener ({ran} ran, {refused} refused)");
            assert!(ran > 0, "no exec ran at all: {samples:?}");
            tokio.block_on(rt.remove(&id, true)).unwrap();
            Outcome::Passed(format!(
                "{} execs in {} s while nobody flipped the base link {} times: {ran} ran in the box, {} refused (first refusal: {}); 0 reached the attacker's listener (before the fix: 251 of 1 298)",
                measured(ran + refused),
                measured(format_args!("{:.1}", took.as_secs_f64())),
                measured(flips),
                measured(refused),
                measured(samples.first().map_or_else(|| "none".to_owned(), |s| format!("\"{s}\"")))
            ))
        })()
    }
);

scenario!(
    cleaner_plus_renamed_attacker_dir_never_receives_an_exec,
    "Attacks",
    "default layout (base 1777): a cleaner keeps deleting root's `<base>/boxsock-<uid>` while `nobody` keeps renaming its own directory (holding `<id>/agent.sock`, its listener) into that name and back; a running box (host backend) gets execs until 300 have run in it (at most 3 000 attempts)",
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
            let race = Duration::from_secs(60);
            let attacker = Attacker::start(
                Program::SwapIn {
                    own: cstr(&own),
                    sub: cstr(&own.join(&id)),
                    sock: cstr(&own.join(&id).join("agent.sock")),
                    target: cstr(&per_uid),
                },
                race,
            );
            // The cleaner: removes root's per-user directory (never the attacker's).
            let stop = Arc::new(AtomicBool::new(false));
            let cleaner = {
                let (stop, per_uid) = (stop.clone(), per_uid.clone());
                std::thread::spawn(move || {
                    let mut removed = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        if std::fs::symlink_metadata(&per_uid).is_ok_and(|m| m.uid() == 0 && m.is_dir())
                            && std::fs::remove_dir_all(&per_uid).is_ok()
                        {
                            removed += 1;
                        }
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    removed
                })
            };
            let started = Instant::now();
            let (ran, refused, samples) = exec_many(&tokio, &rt, &id, EXECS);
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            let removed = cleaner.join().unwrap();
            let hits = attacker.finish();
            assert_eq!(hits, 0, "{hits} exec request(s) reached the attacker's listener ({ran} ran, {refused} refused)");
            assert!(removed > 0, "the cleaner never removed the per-user directory");
            let _ = tokio.block_on(rt.remove(&id, true));
            Outcome::Passed(format!(
                "{} execs in {} s, the cleaner removed the per-user directory {} times: {ran} ran in the box, {} refused (first refusal: {}); 0 reached the attacker's listener (before the fix: 1 in 676)",
                measured(ran + refused),
                measured(format_args!("{:.1}", took.as_secs_f64())),
                measured(removed),
                measured(refused),
                measured(samples.first().map_or_else(|| "none".to_owned(), |s| format!("\"{s}\"")))
            ))
        })()
    }
);

scenario!(
    umask_000_start_never_binds_in_the_attackers_dir,
    "Attacks",
    "`umask 000`; a cleaner keeps deleting root's `<base>/boxsock-<uid>` while `nobody` keeps renaming its own 0777 directory (with `<id>/`) into that name; the runtime starts and stops the box until 25 starts succeed (at most 200 attempts); after each start `nobody` dials the box's agent socket in the real directory",
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
            let race = Duration::from_secs(90);
            let attacker = Attacker::start(
                Program::SwapIn {
                    own: cstr(&own),
                    sub: cstr(&own.join(&id)),
                    sock: cstr(&own.join(&id).join("decoy.sock")),
                    target: cstr(&per_uid),
                },
                race,
            );
            let stop = Arc::new(AtomicBool::new(false));
            let cleaner = {
                let (stop, per_uid) = (stop.clone(), per_uid.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if std::fs::symlink_metadata(&per_uid).is_ok_and(|m| m.uid() == 0 && m.is_dir()) {
                            let _ = std::fs::remove_dir_all(&per_uid);
                        }
                        std::thread::sleep(Duration::from_micros(300));
                    }
                })
            };
            let real_agent = w.layout.sockets_dir(&b.id).join("agent.sock");
            let (mut started, mut refused, mut in_attacker_dir, mut samples) = (0, 0, Vec::new(), Vec::<String>::new());
            while started < STARTS && started + refused < 8 * STARTS {
                let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                let r = tokio.block_on(rt.start(&id));
                nix::sys::stat::umask(old);
                // Whatever happened, nothing of root's may be in the attacker's directory.
                for e in std::fs::read_dir(own.join(&id)).into_iter().flatten().flatten() {
                    if e.metadata().is_ok_and(|m| m.uid() != NOBODY) {
                        in_attacker_dir.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
                match r {
                    Ok(_) => {
                        started += 1;
                        let m = std::fs::symlink_metadata(&real_agent).expect("agent.sock in the real socket directory");
                        assert_eq!(m.mode() & 0o777, 0o600, "agent.sock mode under umask 000");
                        let addr = boxsock_core::SocketAddress::Path(real_agent.clone());
                        let theirs = w.root.path().join("nobody-ran-this");
                        let got = crate::attacks::nobody::run(&[crate::attacks::nobody::Act::ConnectSend(
                            crate::attacks::nobody::RawAddr::of(&addr),
                            b"\0".to_vec(),
                        )])
                        .unwrap();
                        assert!(got[0] <= 0, "nobody was served by the box's agent: {got:?}");
                        assert!(!theirs.exists());
                        tokio.block_on(rt.stop(&id, None)).unwrap();
                    }
                    Err(e) => {
                        refused += 1;
                        if samples.len() < 3 {
                            samples.push(e.to_string());
                        }
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            cleaner.join().unwrap();
            let hits = attacker.finish();
            assert!(in_attacker_dir.is_empty(), "root's files appeared in the attacker's directory: {in_attacker_dir:?}");
            assert_eq!(hits, 0, "the attacker's listener received {hits} request(s)");
            assert!(started > 0, "no start succeeded at all: {samples:?}");
            let _ = tokio.block_on(rt.remove(&id, true));
            Outcome::Passed(format!(
                "starts under umask 000 until {STARTS} succeeded: {started} started, {} refused; agent.sock was always bound 0600 in the real socket directory, nothing of root's ever appeared in the attacker's directory, and nobody's dial of the agent was refused (before the fix: the agent bound agent.sock in the attacker's directory and served `id` as uid 0)",
                measured(refused)
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
                let hits = child.finish();
                assert_eq!(hits, 0, "{name}: the impostor received bytes of a request");
                let _ = tokio.block_on(rt.remove(&id, true));
                seen.push(format!("{name}: {}", measured(&text)));
            }
            Outcome::Passed(format!("every dial was refused before a byte was sent; {}", seen.join("; ")))
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
