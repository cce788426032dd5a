//! Spawning the box's process with `clone(2)` carrying its PID namespace (and, rootless,
//! its user namespace), so that the agent is PID 1 of the box and the runtime's direct
//! child whether or not the runtime is root (decision 0026).
//!
//! `std::process::Command` forks without namespace flags, and a multi-threaded runtime
//! can neither `unshare(CLONE_NEWUSER)` nor (unprivileged) `unshare(CLONE_NEWPID)` on its
//! own thread; `clone` with those flags is allowed from any thread, because the new
//! process is single-threaded. So this module does by hand what `Command` and the core's
//! `Spawn` do: the standard streams, the handed descriptors, every other descriptor
//! close-on-exec, a new session, the exec-error report on a close-on-exec pipe. In the
//! child only async-signal-safe raw system calls on data built before the clone run
//! (no allocation, no lock), as in a `pre_exec` hook.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use boxsock_core::process::OwnedProcess;
use boxsock_core::spawn::SpawnError;

/// The user namespace of a rootless box: the runtime's uid and gid are root in it, and
/// nothing else is mapped.
#[derive(Debug, Clone, Copy)]
pub struct UserMap {
    /// The runtime's effective uid outside.
    pub uid: u32,
    /// The runtime's effective gid outside.
    pub gid: u32,
}

impl UserMap {
    /// The calling process's effective ids.
    pub fn current() -> UserMap {
        UserMap { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
    }
}

/// What the child writes to its own `/proc/self/{setgroups,uid_map,gid_map}`, built
/// before the clone.
struct MapWrites {
    setgroups: CString,
    uid_map: CString,
    gid_map: CString,
    uid_line: Vec<u8>,
    gid_line: Vec<u8>,
}

/// A program to run as the box's process, with everything the child needs.
pub struct BoxExec {
    program: PathBuf,
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    stdin: Option<OwnedFd>,
    log: Option<OwnedFd>,
    handed: Vec<(RawFd, RawFd)>,
}

fn c(s: &OsStr) -> CString {
    // Arguments and variables are the backend's own or the box's stored env, which the
    // store keeps as JSON strings (no NUL); a NUL would truncate, never overflow.
    CString::new(s.as_bytes()).unwrap_or_default()
}

impl BoxExec {
    /// `program` (a path in the box's root, resolved after `pivot_root`).
    pub fn new(program: impl AsRef<Path>) -> BoxExec {
        let program = program.as_ref().to_path_buf();
        let path = c(program.as_os_str());
        BoxExec {
            argv: vec![path.clone()],
            program,
            path,
            env: Vec::new(),
            stdin: None,
            log: None,
            handed: Vec::new(),
        }
    }

    /// Append an argument.
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.argv.push(c(a.as_ref()));
        self
    }

    /// Add `KEY=VALUE` to the (otherwise empty) environment.
    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Self {
        let mut kv = k.as_ref().as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_ref().as_bytes());
        self.env.push(CString::new(kv).unwrap_or_default());
        self
    }

    /// stdin from `/dev/null`, stdout and stderr appended to `log`.
    pub fn log_file(&mut self, log: &Path) -> Result<&mut Self, SpawnError> {
        let err = |source| SpawnError::Log {
            program: self.program.clone(),
            path: log.to_path_buf(),
            source,
        };
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(err)?;
        let null = std::fs::File::open("/dev/null").map_err(err)?;
        self.log = Some(out.into());
        self.stdin = Some(null.into());
        Ok(self)
    }

    /// Hand `fd` (held open by the caller until [`spawn`] returns) at `target` (≥ 3).
    pub fn hand(&mut self, fd: RawFd, target: RawFd) -> &mut Self {
        self.handed.push((fd, target));
        self
    }
}

/// Start `exec` as a child in new namespaces `flags` (`CLONE_NEWPID`, and
/// `CLONE_NEWUSER` when `user` is given: the child then maps `user` to root in it
/// before anything else), run `setup` in it (after the standard streams, before the
/// handed descriptors are placed, so none of its own is closed by a placement), and
/// exec. Returns once the program has been exec'ed; a failed
/// step or exec is an error with its errno (`setup` writes its own line to the log).
pub fn spawn(
    exec: &BoxExec,
    flags: libc::c_int,
    user: Option<UserMap>,
    setup: &dyn Fn() -> io::Result<()>,
) -> Result<OwnedProcess, SpawnError> {
    let program = exec.program.clone();
    let spawn_err = |source| SpawnError::Spawn { program: program.clone(), source };
    let targets: Vec<RawFd> = exec.handed.iter().map(|(_, t)| *t).collect();
    for (i, &target) in targets.iter().enumerate() {
        if target < 3 {
            return Err(SpawnError::StdioTarget { program, target });
        }
        if targets[..i].contains(&target) {
            return Err(SpawnError::DuplicateTarget { program, target });
        }
    }
    let sources: Vec<RawFd> = exec.handed.iter().map(|(s, _)| *s).collect();
    let floor = targets.iter().copied().max().map_or(3, |m| m + 1);
    let mut temps: Vec<RawFd> = vec![-1; targets.len()];
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let maps = user.map(|u| MapWrites {
        setgroups: CString::from(c"/proc/self/setgroups"),
        uid_map: CString::from(c"/proc/self/uid_map"),
        gid_map: CString::from(c"/proc/self/gid_map"),
        uid_line: format!("0 {} 1\n", u.uid).into_bytes(),
        gid_line: format!("0 {} 1\n", u.gid).into_bytes(),
    });
    let flags = flags | if maps.is_some() { libc::CLONE_NEWUSER } else { 0 };
    let stdin = exec.stdin.as_ref().map(|f| f.as_raw_fd());
    let log = exec.log.as_ref().map(|f| f.as_raw_fd());

    let mut pipe = [-1; 2];
    // SAFETY: pipe2(2) into a local array of two descriptors.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(spawn_err(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    let (report_r, report_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let mut report_fd = report_w.as_raw_fd();
    let keep = targets.clone();

    // SAFETY: clone(2) without CLONE_VM, as fork(2): the child gets a copy of this
    // thread's stack and memory. It runs only `child`, which makes raw system calls on
    // data built above and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if pid == 0 {
        // SAFETY: fcntl(2) on a descriptor we hold: the report end moves above every
        // target, so no handed descriptor is placed over it.
        let moved = unsafe { libc::fcntl(report_fd, libc::F_DUPFD_CLOEXEC, floor) };
        if moved != -1 {
            report_fd = moved;
        }
        let r = child(ChildArgs {
            maps: maps.as_ref(),
            stdin,
            log,
            sources: &sources,
            temps: &mut temps,
            targets: &targets,
            floor,
            keep: &keep,
            setup,
            path: &exec.path,
            argv: &argv,
            envp: &envp,
        });
        let e = r.raw_os_error().unwrap_or(libc::EINVAL).to_ne_bytes();
        // SAFETY: writes four bytes of a local buffer to the report pipe, then ends the
        // child without running anything of the parent's (no atexit, no destructors).
        unsafe {
            libc::write(report_fd, e.as_ptr().cast(), e.len());
            libc::_exit(127)
        }
    }
    if pid == -1 {
        return Err(spawn_err(io::Error::last_os_error()));
    }
    let pid = pid as i32;
    drop(report_w);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the rest of a local buffer from a pipe we own.
        let n = unsafe {
            libc::read(report_r.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got)
        };
        if n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got > 0 {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let errno = if got == 4 { i32::from_ne_bytes(buf) } else { libc::EIO };
        return Err(spawn_err(io::Error::from_raw_os_error(errno)));
    }
    // The pipe closed at exec: the child is the program now. Its pid cannot have been
    // reused (it is our unreaped child), so adopting it reads its own identity.
    let process = OwnedProcess::adopt(pid).map_err(|source| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        SpawnError::Identity { program: program.clone(), source }
    })?;
    tracing::debug!(program = %boxsock_core::echo::path(&program), pid, "spawned the box");
    Ok(process)
}

struct ChildArgs<'a> {
    maps: Option<&'a MapWrites>,
    stdin: Option<RawFd>,
    log: Option<RawFd>,
    sources: &'a [RawFd],
    temps: &'a mut [RawFd],
    targets: &'a [RawFd],
    floor: RawFd,
    keep: &'a [RawFd],
    setup: &'a dyn Fn() -> io::Result<()>,
    path: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
}

fn last() -> io::Error {
    io::Error::last_os_error()
}

/// The child's side: only raw system calls, returns only on failure.
fn child(a: ChildArgs<'_>) -> io::Error {
    // SAFETY: every call is a raw system call (or a glibc wrapper of one) on
    // descriptors and NUL-terminated buffers built before the clone; nothing allocates
    // or takes a lock (the whole child side).
    unsafe {
        // As std's Command: the signal mask cleared, SIGPIPE back to its default.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if let Some(m) = a.maps {
            // Our own effective ids, one line each: allowed without privileges once
            // setgroups is denied (user_namespaces(7)).
            for (path, data) in [
                (&m.setgroups, b"deny".as_slice()),
                (&m.uid_map, m.uid_line.as_slice()),
                (&m.gid_map, m.gid_line.as_slice()),
            ] {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd == -1 {
                    return crate::child::fail("open the user namespace's maps");
                }
                let n = libc::write(fd, data.as_ptr().cast(), data.len());
                libc::close(fd);
                if n != data.len() as isize {
                    return crate::child::fail("write the user namespace's maps");
                }
            }
        }
        if libc::setsid() == -1 {
            return last();
        }
        for (from, to) in [(a.stdin, 0), (a.log, 1), (a.log, 2)] {
            if let Some(fd) = from {
                if libc::dup2(fd, to) == -1 {
                    return last();
                }
            }
        }
        // The set-up before the handed descriptors are placed (as the `pre_exec` hook
        // ran before the core's `Spawn` placed them): the set-up's own descriptors (the
        // Landlock ruleset, a volume's detached mount) may be numbered like a target,
        // and a `dup2` onto that number would close them under it ("cannot enforce
        // Landlock (errno 77)" in CI, where nothing else holds the low numbers).
        if let Err(e) = (a.setup)() {
            return e;
        }
        for (temp, &src) in a.temps.iter_mut().zip(a.sources) {
            *temp = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, a.floor);
            if *temp == -1 {
                return last();
            }
        }
        for (&temp, &target) in a.temps.iter().zip(a.targets) {
            if libc::dup2(temp, target) == -1 {
                return last();
            }
        }
        // Marks only: the report pipe stays usable until the exec closes it.
        if let Err(e) = boxsock_core::fds::cloexec_except(a.keep) {
            return e;
        }
        libc::execve(a.path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
        last()
    }
}
