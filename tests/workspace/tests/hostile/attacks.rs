//! Attacks by another local user (`nobody`, in a forked child that really drops its
//! privileges) on the per-user binding directory, the box links and the box sockets.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxsock_conformance::util::ByFile;
use boxsock_core::proto::{self, Frame, Request};
use boxsock_core::{BindingError, BoxId, BoxLayout, SocketBinding, StrategyConfig, boxdir};
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;

/// uid and gid of `nobody`.
pub(crate) const NOBODY: u32 = 65534;

/// Running as root (needed to drop a child to `nobody`).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(crate) const NEED_ROOT: &str = "needs root to fork a child that drops to uid nobody (65534)";

/// Forked children that drop to `nobody` and do a few raw system calls.
///
/// The test process is multithreaded, so the child does only async-signal-safe work on
/// data prepared before the fork: system calls, fixed-size writes to a pipe, `_exit`.
pub(crate) mod nobody {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

    use boxsock_core::SocketAddress;

    use super::NOBODY;

    /// One thing the attacker does.
    pub(crate) enum Act {
        /// `mkdir(path, mode)`.
        Mkdir(CString, libc::mode_t),
        /// `chmod(path, mode)` (the umask does not apply).
        Chmod(CString, libc::mode_t),
        /// `symlink(target, link)`.
        Symlink(CString, CString),
        /// `open(path, O_CREAT|O_EXCL|O_WRONLY, 0644)`.
        CreateFile(CString),
        /// Connect a stream to the address, send the bytes, count the bytes received
        /// until EOF, an error or 5 s of silence.
        ConnectSend(RawAddr, Vec<u8>),
    }

    /// A `sockaddr_un` prepared before the fork.
    #[derive(Clone, Copy)]
    pub(crate) struct RawAddr {
        addr: libc::sockaddr_un,
        len: libc::socklen_t,
    }

    impl RawAddr {
        /// Encode `a` (panics if it does not fit: callers pass strategy addresses).
        pub(crate) fn of(a: &SocketAddress) -> RawAddr {
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
    }

    fn errno() -> i64 {
        i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }

    fn put(fd: RawFd, v: i64) {
        let b = v.to_ne_bytes();
        // SAFETY: writing a stack buffer to a pipe fd this process owns.
        unsafe {
            libc::write(fd, b.as_ptr().cast(), b.len());
        }
    }

    /// The child: drop, then each act; one i64 per act (≥ 0 success or bytes received,
    /// < 0 minus errno). Async-signal-safe only.
    fn child(out: RawFd, acts: &[Act]) -> ! {
        // Keep only the report pipe (moved to 3): descriptors inherited from other tests'
        // threads (sockets, abstract names, pipe ends) must not outlive their owners'
        // closing them while this child runs.
        // SAFETY: dup2 and close_range on descriptor numbers in the single-threaded child.
        let out = unsafe {
            if out != 3 && libc::dup2(out, 3) < 0 {
                libc::_exit(2);
            }
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            3
        };
        // SAFETY: credential system calls in the single-threaded child.
        let dropped = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(NOBODY as libc::gid_t) == 0
                && libc::setuid(NOBODY as libc::uid_t) == 0
                && libc::geteuid() == NOBODY as libc::uid_t
                && libc::getegid() == NOBODY as libc::gid_t
        };
        if !dropped {
            put(out, -errno().max(1));
            // SAFETY: leaving the child without running destructors.
            unsafe { libc::_exit(1) }
        }
        put(out, 0);
        // SAFETY: ignore SIGPIPE in the child so a send to a closed peer reports.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        for act in acts {
            // SAFETY: raw system calls on C strings and addresses prepared before the
            // fork, and on fds this child owns; recv into a stack buffer.
            let r = unsafe {
                match act {
                    Act::Mkdir(p, m) => {
                        if libc::mkdir(p.as_ptr(), *m) == 0 {
                            0
                        } else {
                            -errno()
                        }
                    }
                    Act::Chmod(p, m) => {
                        if libc::chmod(p.as_ptr(), *m) == 0 {
                            0
                        } else {
                            -errno()
                        }
                    }
                    Act::Symlink(t, l) => {
                        if libc::symlink(t.as_ptr(), l.as_ptr()) == 0 {
                            0
                        } else {
                            -errno()
                        }
                    }
                    Act::CreateFile(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                            0o644,
                        );
                        if fd >= 0 {
                            libc::close(fd);
                            0
                        } else {
                            -errno()
                        }
                    }
                    Act::ConnectSend(a, bytes) => {
                        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                        if fd < 0 {
                            -errno()
                        } else if libc::connect(
                            fd,
                            (&a.addr as *const libc::sockaddr_un).cast(),
                            a.len,
                        ) != 0
                        {
                            let e = -errno();
                            libc::close(fd);
                            e
                        } else {
                            let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
                            libc::setsockopt(
                                fd,
                                libc::SOL_SOCKET,
                                libc::SO_RCVTIMEO,
                                (&tv as *const libc::timeval).cast(),
                                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                            );
                            libc::send(fd, bytes.as_ptr().cast(), bytes.len(), 0);
                            let mut buf = [0u8; 4096];
                            let mut total: i64 = 0;
                            loop {
                                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                                if n <= 0 {
                                    break;
                                }
                                total += n as i64;
                            }
                            libc::close(fd);
                            total
                        }
                    }
                }
            };
            put(out, r);
        }
        // SAFETY: leaving the child without running destructors.
        unsafe { libc::_exit(0) }
    }

    /// Fork a child that drops to `nobody` and does `acts` in order. Returns one result
    /// per act (≥ 0 success, or bytes received for [`Act::ConnectSend`]; < 0 minus the
    /// errno), or why the child could not run them.
    pub(crate) fn run(acts: &[Act]) -> Result<Vec<i64>, String> {
        let (rd, wr): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
        let wr_raw = wr.as_raw_fd();
        // SAFETY: the child runs only async-signal-safe code (`child`) and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            child(wr_raw, acts)
        }
        drop(wr);
        // Read every result until EOF (the child exits), bounded.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut bytes = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd { fd: rd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if n <= 0 || left.is_zero() {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err("the nobody child did not finish within 30 s; killed".into());
            }
            let mut buf = [0u8; 256];
            // SAFETY: reading into a stack buffer from a fd we own.
            let r = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..r as usize]);
        }
        let mut status = 0;
        // SAFETY: reaping our own child, which closed its end of the pipe (exited).
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let vals: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect();
        match vals.split_first() {
            Some((0, rest)) if rest.len() == acts.len() => Ok(rest.to_vec()),
            Some((0, rest)) => Err(format!(
                "the nobody child reported {} of {} acts (status {status})",
                rest.len(),
                acts.len()
            )),
            Some((e, _)) => Err(format!("dropping to nobody failed: errno {}", -e)),
            None => Err(format!("the nobody child reported nothing (status {status})")),
        }
    }
}

pub(crate) fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths")
}

/// The name of a [`BindingError`] variant, for observed texts.
pub(crate) fn variant(e: &BindingError) -> &'static str {
    match e {
        BindingError::PathTooLong { .. } => "PathTooLong",
        BindingError::Insecure { .. } => "Insecure",
        BindingError::Occupied { .. } => "Occupied",
        BindingError::MissingSocketDir { .. } => "MissingSocketDir",
        BindingError::Unsupported { .. } => "Unsupported",
        BindingError::Invalid { .. } => "Invalid",
        BindingError::PeerRejected { .. } => "PeerRejected",
        BindingError::Io { source, .. } => match source.raw_os_error() {
            Some(libc::ENOENT) => "Io(ENOENT)",
            Some(libc::EACCES) => "Io(EACCES)",
            Some(libc::ENAMETOOLONG) => "Io(ENAMETOOLONG)",
            Some(libc::ECONNREFUSED) => "Io(ECONNREFUSED)",
            Some(libc::ENOTDIR) => "Io(ENOTDIR)",
            _ => "Io",
        },
        _ => "another variant",
    }
}

/// A private world: `<root>` (0755) holding `<root>/base` (mode 1777, like /tmp) and
/// `<root>/home` (0755). Removed on drop.
pub(crate) struct World {
    pub(crate) root: tempfile::TempDir,
    pub(crate) base: PathBuf,
    pub(crate) layout: BoxLayout,
}

impl World {
    pub(crate) fn new() -> World {
        let root =
            tempfile::Builder::new().prefix("bsk-att-").tempdir_in("/tmp").expect("temp dir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod root");
        let base = root.path().join("base");
        std::fs::create_dir(&base).expect("mkdir base");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777))
            .expect("chmod base 1777");
        let home = root.path().join("home");
        std::fs::create_dir(&home).expect("mkdir home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755))
            .expect("chmod home");
        World { root, base, layout: BoxLayout::new(home) }
    }

    pub(crate) fn config(&self) -> StrategyConfig {
        StrategyConfig { base_dir: self.base.clone(), ..StrategyConfig::default() }
    }

    pub(crate) fn strategy(&self, name: &str) -> Arc<dyn SocketBinding> {
        boxsock::builtin_strategies()
            .build(name, &self.config())
            .unwrap_or_else(|e| panic!("build {name}: {e}"))
    }

    pub(crate) fn new_box(&self) -> BoxId {
        let id = BoxId::generate();
        boxdir::create_box_dirs(&self.layout, &id).expect("create box dirs");
        id
    }

    /// `<base>/boxsock-<uid>`.
    pub(crate) fn per_uid(&self) -> PathBuf {
        self.config().per_uid_dir()
    }

    /// A directory owned by `nobody`, mode 0777, under the root: the attacker's.
    pub(crate) fn attacker_dir(&self, name: &str) -> PathBuf {
        let p = self.root.path().join(name);
        std::fs::create_dir(&p).expect("mkdir attacker dir");
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown attacker dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
            .expect("chmod attacker dir");
        p
    }
}

/// Whether `dir` (the attacker's) holds a socket `name` owned by root: where a naive
/// binder's socket landed.
pub(crate) fn naive_landed_in(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket() && m.uid() == 0
    })
}

/// The entries of a directory, sorted (empty if it cannot be read).
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// What the runtime does before it binds: ensure, then bind. Returns the variant of the
/// failure.
fn ensure_then_bind(
    s: &Arc<dyn SocketBinding>,
    l: &BoxLayout,
    id: &BoxId,
    name: &str,
) -> Result<(), &'static str> {
    s.ensure(l, id).and_then(|()| s.bind_stream(l, id, name)).map(drop).map_err(|e| variant(&e))
}

/// What the runtime does before it dials: ensure, then connect.
fn ensure_then_connect(
    s: &Arc<dyn SocketBinding>,
    l: &BoxLayout,
    id: &BoxId,
    name: &str,
) -> Result<(), &'static str> {
    s.ensure(l, id).and_then(|()| s.connect_stream(l, id, name)).map(drop).map_err(|e| variant(&e))
}

/// The common end of the squatting scenarios: `ensure` never uses the squatted
/// per-user path: the box's link is made in a fresh private fallback recorded in the
/// home, whose note names `facts`; binding and dialling work through it; `watched` (the
/// attacker's directory, if any) stays empty. Returns the observed text.
fn assert_squat_refused(
    w: &World,
    s: &Arc<dyn SocketBinding>,
    facts: &[&str],
    watched: Option<&Path>,
) -> String {
    let id = w.new_box();
    s.ensure(&w.layout, &id)
        .unwrap_or_else(|e| panic!("ensure over a squatted per-user directory: {e}"));
    let link = s.binding_path(&w.layout, &id).expect("short-symlink has a link");
    assert!(
        !link.starts_with(w.per_uid()),
        "the link {} is in the squatted directory",
        link.display()
    );
    let record = std::fs::read_to_string(w.layout.home().join(boxsock_runtime::squat::RECORD))
        .expect("the fallback is recorded in the home");
    let fallback = PathBuf::from(record.lines().next().unwrap_or(""));
    assert_eq!(link.parent(), Some(fallback.as_path()), "the link is not in the recorded fallback");
    for f in facts {
        assert!(record.contains(f), "the record's note {record:?} should name {f:?}");
    }
    let listener = s.bind_stream(&w.layout, &id, "agent.sock").expect("bind through the fallback");
    ensure_then_connect(s, &w.layout, &id, "agent.sock").expect("connect through the fallback");
    drop(listener);
    if let Some(dir) = watched {
        assert_eq!(
            entries(dir),
            Vec::<String>::new(),
            "something was created in the attacker's directory {}",
            dir.display()
        );
    }
    // The positive control: a naive binder, trusting the name, falls into the squat.
    let naive = w.per_uid().join("naive.sock");
    let control = match (std::os::unix::net::UnixListener::bind(&naive), watched) {
        (Ok(l), Some(dir)) => {
            assert!(
                naive_landed_in(dir, "naive.sock"),
                "control: the naive binder's socket is not in the attacker's directory {}",
                dir.display()
            );
            drop(l);
            std::fs::remove_file(dir.join("naive.sock")).unwrap();
            "put its socket in nobody's directory".to_owned()
        }
        (Ok(_), None) => {
            panic!("control: the naive binder bound through a squat that should deny it")
        }
        (Err(e), Some(_)) => panic!("control: the naive binder was not captured by the squat: {e}"),
        (Err(e), None) => {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOTDIR),
                "control: the naive binder failed otherwise: {e}"
            );
            "was denied (ENOTDIR): this squat denies, it cannot capture".to_owned()
        }
    };
    format!(
        "ensure never used <base>/boxsock-<uid>: the link went into a fresh private <base>/boxsock.<random> recorded in <home>/binding-dir, whose note names {}; bind and connect worked through it{}; beside it, a naive binder (bind `<base>/boxsock-<uid>/naive.sock` by the path string) {control}",
        facts.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(" and "),
        if watched.is_some() { ", nothing created in the attacker's directory" } else { "" }
    )
}

scenario!(
    squat_per_uid_dir_owned_by_nobody,
    "Attacks",
    "before first use, `nobody` creates `<base>/boxsock-<uid>` (base mode 1777) as its own directory, mode 0777; then `short-symlink` ensure, bind and connect",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let s = w.strategy("short-symlink");
            let p = w.per_uid();
            let r = nobody::run(&[
                nobody::Act::Mkdir(cstr(&p), 0o777),
                nobody::Act::Chmod(cstr(&p), 0o777),
            ])
            .unwrap();
            assert_eq!(r, [0, 0], "nobody could not squat");
            let text = assert_squat_refused(&w, &s, &["owned by uid 65534", "mode 0777"], Some(&p));
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!(
                (m.uid(), m.mode() & 0o7777),
                (NOBODY, 0o777),
                "the attacker's directory was changed"
            );
            Outcome::Passed(format!("{text}; it is still nobody's, mode 0777 (not taken over)"))
        })()
    }
);

scenario!(
    squat_per_uid_symlink_by_nobody,
    "Attacks",
    "before first use, `nobody` makes `<base>/boxsock-<uid>` a symlink to its own 0777 directory; then `short-symlink` ensure, bind and connect",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let s = w.strategy("short-symlink");
            let evil = w.base.join("evil");
            let r = nobody::run(&[
                nobody::Act::Mkdir(cstr(&evil), 0o777),
                nobody::Act::Chmod(cstr(&evil), 0o777),
                nobody::Act::Symlink(cstr(&evil), cstr(&w.per_uid())),
            ])
            .unwrap();
            assert_eq!(r, [0, 0, 0], "nobody could not squat");
            let text =
                assert_squat_refused(&w, &s, &["a symlink", "owned by uid 65534"], Some(&evil));
            assert!(std::fs::symlink_metadata(w.per_uid()).unwrap().file_type().is_symlink());
            Outcome::Passed(format!("{text} (the link was not followed)"))
        })()
    }
);

scenario!(
    squat_per_uid_regular_file,
    "Attacks",
    "before first use, `nobody` creates `<base>/boxsock-<uid>` as a regular file; then `short-symlink` ensure, bind and connect",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let s = w.strategy("short-symlink");
            let r = nobody::run(&[nobody::Act::CreateFile(cstr(&w.per_uid()))]).unwrap();
            assert_eq!(r, [0], "nobody could not squat");
            let text =
                assert_squat_refused(&w, &s, &["a regular file", "owned by uid 65534"], None);
            let m = std::fs::symlink_metadata(w.per_uid()).unwrap();
            assert!(m.is_file() && m.len() == 0 && m.uid() == NOBODY, "the file was changed");
            Outcome::Passed(format!("{text}; the file is untouched"))
        })()
    }
);

scenario!(
    squat_per_uid_open_dir_of_ours_is_repaired,
    "Attacks",
    "`<base>/boxsock-<uid>` already exists as our own directory with mode 0777; then `short-symlink` ensure, bind, connect",
    {
        let w = World::new();
        let s = w.strategy("short-symlink");
        let p = w.per_uid();
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let id = w.new_box();
        s.ensure(&w.layout, &id).expect("ensure repairs our own directory");
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "mode not repaired");
        let l = s.bind_stream(&w.layout, &id, "agent.sock").unwrap();
        let mut c = s.connect_stream(&w.layout, &id, "agent.sock").unwrap();
        let (mut a, _) = l.accept_once().unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        a.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        assert!(
            w.layout.sockets_dir(&id).join("agent.sock").exists(),
            "the socket is not in the box's real directory"
        );
        Outcome::Passed(format!(
            "ensure succeeded and repaired the directory to mode {mode:04o}; a stream round trip went through the link and the socket file is in <home>/boxes/<id>/sockets"
        ))
    }
);

/// Atomically replace the link `link` by one to `target` (what a root attacker would do).
fn swap_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("swap");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

scenario!(
    box_link_swapped_to_attacker_dir,
    "Attacks",
    "a live box's link `<base>/boxsock-<uid>/<id>` is atomically replaced (by root, as nobody cannot write in the 0700 directory) with a link to a 0777 directory of nobody's; then ensure, bind, connect; then the operator removes the bad link and ensure again",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(
                    "needs root to chown the attacker's directory to nobody".into(),
                );
            }
            let w = World::new();
            let s = w.strategy("short-symlink");
            let id = w.new_box();
            s.ensure(&w.layout, &id).unwrap();
            let live = s.bind_stream(&w.layout, &id, "agent.sock").unwrap();
            let evil = w.attacker_dir("evil");
            let link = s.binding_path(&w.layout, &id).expect("short-symlink has a link");
            swap_link(&link, &evil);
            let err = s.ensure(&w.layout, &id).expect_err("ensure over a swapped link");
            match &err {
                BindingError::Occupied { path, found } => {
                    assert_eq!(path, &link, "{err}");
                    assert!(found.contains(&evil.display().to_string()), "{err}");
                }
                other => panic!("expected Occupied, got {other:?}"),
            }
            let bind =
                ensure_then_bind(&s, &w.layout, &id, "ready.sock").expect_err("bind after swap");
            let dial = ensure_then_connect(&s, &w.layout, &id, "agent.sock")
                .expect_err("connect after swap");
            assert_eq!(
                entries(&evil),
                Vec::<String>::new(),
                "something was created in the attacker's directory"
            );
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                evil,
                "ensure must not silently take the link back or follow it"
            );
            // The positive control: a naive binder, trusting the link's name, binds in the
            // attacker's directory.
            let naive = std::os::unix::net::UnixListener::bind(link.join("naive.sock"))
                .expect("control: the naive binder could not bind through the swapped link");
            assert!(
                naive_landed_in(&evil, "naive.sock"),
                "control: the naive binder's socket is not in the attacker's directory"
            );
            drop(naive);
            std::fs::remove_file(evil.join("naive.sock")).unwrap();
            // The operator removes the bad link; the next ensure heals and the live box is reachable.
            std::fs::remove_file(&link).unwrap();
            s.ensure(&w.layout, &id).unwrap();
            let _c = s.connect_stream(&w.layout, &id, "agent.sock").unwrap();
            live.accept_once().unwrap();
            assert_eq!(entries(&evil), Vec::<String>::new());
            Outcome::Passed(format!(
                "ensure noticed by device+inode and refused: Occupied at <base>/boxsock-<uid>/<id> naming the attacker's directory; ensure+bind_stream → {bind}, ensure+connect_stream → {dial}; the attacker's directory stayed empty, while a naive binder beside it (bind `<link>/naive.sock` by the path string) put its socket there; after the bad link was removed ensure healed it and the live agent socket was reachable again"
            ))
        })()
    }
);

scenario!(
    per_uid_dir_recreated_by_attacker_after_cleaner,
    "Attacks",
    "a /tmp cleaner removes a live box's whole `<base>/boxsock-<uid>`; `nobody` recreates it as its own 0777 directory holding `<id>` → its own 0777 directory; then ensure, bind, connect",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let s = w.strategy("short-symlink");
            let id = w.new_box();
            s.ensure(&w.layout, &id).unwrap();
            let _live = s.bind_stream(&w.layout, &id, "agent.sock").unwrap();
            // The cleaner: removes the directory and the link in it (not what the link points to).
            std::fs::remove_dir_all(w.per_uid()).unwrap();
            assert!(
                w.layout.sockets_dir(&id).join("agent.sock").exists(),
                "the cleaner must not reach the home"
            );
            let p = w.per_uid();
            let evil = w.base.join("evil");
            let r = nobody::run(&[
                nobody::Act::Mkdir(cstr(&p), 0o777),
                nobody::Act::Chmod(cstr(&p), 0o777),
                nobody::Act::Mkdir(cstr(&evil), 0o777),
                nobody::Act::Chmod(cstr(&evil), 0o777),
                nobody::Act::Symlink(cstr(&evil), cstr(&p.join(id.as_str()))),
            ])
            .unwrap();
            assert_eq!(r, [0, 0, 0, 0, 0], "nobody could not set the trap");
            // The steady-state fast path holds a descriptor of the removed directory; it must
            // not be trusted, and the new directory must never be used.
            s.ensure(&w.layout, &id)
                .unwrap_or_else(|e| panic!("ensure over the attacker's per-user directory: {e}"));
            let link = s.binding_path(&w.layout, &id).expect("a link");
            assert!(
                !link.starts_with(&p),
                "the link {} is in the attacker's directory",
                link.display()
            );
            let bind = ensure_then_bind(&s, &w.layout, &id, "ready.sock")
                .map(|()| "Ok")
                .unwrap_or_else(|v| v);
            let dial = ensure_then_connect(&s, &w.layout, &id, "agent.sock")
                .map(|()| "Ok")
                .unwrap_or_else(|v| v);
            assert_eq!((bind, dial), ("Ok", "Ok"), "bind and connect through the fallback");
            assert_eq!(
                entries(&evil),
                Vec::<String>::new(),
                "something was bound in the attacker's directory"
            );
            assert_eq!(entries(&p), vec![id.to_string()], "the attacker's directory was changed");
            // The positive control: a naive binder, trusting the box link's name, binds
            // in the attacker's target directory.
            let naive =
                std::os::unix::net::UnixListener::bind(p.join(id.as_str()).join("naive.sock"))
                    .expect("control: the naive binder could not bind through the attacker's link");
            assert!(
                naive_landed_in(&evil, "naive.sock"),
                "control: the naive binder's socket is not in the attacker's directory"
            );
            drop(naive);
            std::fs::remove_file(evil.join("naive.sock")).unwrap();
            Outcome::Passed(format!(
                "ensure never used the attacker's <base>/boxsock-<uid>, not fooled by its cached descriptor of the removed directory: the link went into a fresh private fallback; ensure+bind_stream → {bind}, ensure+connect_stream → {dial} (the live agent socket reached); the attacker's target directory stayed empty and their directory untouched, while a naive binder beside it (bind `<base>/boxsock-<uid>/<id>/naive.sock` by the path string) put its socket there"
            ))
        })()
    }
);

/// A strategy-level agent: the real `boxsock_agent::Agent` serving on a tokio runtime at
/// the strategy's `agent.sock` address.
pub(crate) struct ServedAgent {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: boxsock_agent::StopHandle,
}

impl ServedAgent {
    pub(crate) fn start(s: &Arc<dyn SocketBinding>, l: &BoxLayout, id: &BoxId) -> ServedAgent {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let agent_addr = s.address(l, id, "agent.sock").unwrap();
        let ready_addr = s.address(l, id, "ready.sock").unwrap();
        let allow_uids =
            s.peer_policy(l, id).unwrap().allowed_uids().map(<[u32]>::to_vec).unwrap_or_default();
        let config = boxsock_agent::AgentConfig {
            agent: boxsock_agent::AgentAddress::Unix(agent_addr),
            ready: boxsock_agent::AgentAddress::Unix(ready_addr),
            allow_uids,
        };
        let agent = {
            let _g = rt.enter();
            boxsock_agent::Agent::bind(config).unwrap()
        };
        let stop = agent.stop_handle();
        let thread = std::thread::spawn(move || {
            if let Err(e) = rt.block_on(agent.serve()) {
                eprintln!("agent: {e}");
            }
        });
        ServedAgent { thread: Some(thread), stop }
    }
}

impl Drop for ServedAgent {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hello, then exec `touch <marker>`: the frames a client sends to run a command.
pub(crate) fn exec_touch_bytes(marker: &Path) -> Vec<u8> {
    let mut b = proto::encode(&Frame::Control(Request::Hello { version: proto::VERSION }));
    b.extend(proto::encode(&Frame::Control(Request::Exec {
        argv: vec!["/usr/bin/touch".into(), marker.display().to_string()],
        env: Vec::new(),
        stdin: false,
        cwd: None,
        tty: false,
        winsize: None,
        user: None,
        rlimits: vec![],
    })));
    b
}

pub(crate) fn wait_exists(p: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    p.exists()
}

/// The positive control of the other-user attacks: a naive server of the same address
/// kind as `addr` (an abstract name, or a 0777 socket file in the 1777 base), with no
/// peer check, answering whatever it is sent. Returns what `nobody`'s same probe got
/// from it (bytes received, or -errno), which must be > 0: the probe can see service.
pub(crate) fn nobody_reaches_a_naive_server(w: &World, addr: &boxsock_core::SocketAddress) -> i64 {
    use boxsock_core::SocketAddress;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let naive = match addr {
        SocketAddress::Abstract(_) => SocketAddress::Abstract(
            format!("boxsock-naive-{}-{n}", std::process::id()).into_bytes(),
        ),
        SocketAddress::Path(_) => SocketAddress::Path(w.base.join(format!("naive-{n}.sock"))),
    };
    let l = std::os::unix::net::UnixListener::bind_addr(&match &naive {
        SocketAddress::Abstract(name) => <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name).unwrap(),
        SocketAddress::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p).unwrap(),
    })
    .unwrap_or_else(|e| panic!("control: bind the naive server at {naive}: {e}"));
    if let SocketAddress::Path(p) = &naive {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    l.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut b = [0u8; 64];
                    let _ = c.read(&mut b);
                    let _ = c.write_all(b"served");
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let r =
        nobody::run(&[nobody::Act::ConnectSend(nobody::RawAddr::of(&naive), b"hello".to_vec())])
            .unwrap();
    server.join().unwrap();
    if let SocketAddress::Path(p) = &naive {
        let _ = std::fs::remove_file(p);
    }
    r[0]
}

scenario!(
    other_user_cannot_reach_the_agent,
    "Attacks",
    "for every registered strategy, the real agent serves a box's `agent.sock`; `nobody` connects and sends hello + exec `touch <marker>`; then the owner does the same through the strategy",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let reg = boxsock::builtin_strategies();
            let names = reg.names();
            for n in ["short-symlink", "direct", "abstract"] {
                assert!(names.contains(&n), "strategy {n} is not linked");
            }
            let mut seen = Vec::new();
            for name in names {
                let w = World::new();
                let s = w.strategy(name);
                let id = w.new_box();
                s.ensure(&w.layout, &id).unwrap();
                let agent = ServedAgent::start(&s, &w.layout, &id);
                let addr = s.address(&w.layout, &id, "agent.sock").unwrap();
                let theirs = w.root.path().join("nobody-ran-this");
                let r = nobody::run(&[nobody::Act::ConnectSend(
                    nobody::RawAddr::of(&addr),
                    exec_touch_bytes(&theirs),
                )])
                .unwrap();
                // The owner, through the strategy (which checks the listener where it must).
                let ours = w.root.path().join("owner-ran-this");
                let mut c = s.connect_stream(&w.layout, &id, "agent.sock").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(&exec_touch_bytes(&ours)).unwrap();
                let mut reply = Vec::new();
                let _ = c.read_to_end(&mut reply);
                assert!(
                    wait_exists(&ours, Duration::from_secs(10)),
                    "{name}: the owner's exec did not run (reply {reply:?})"
                );
                assert!(!theirs.exists(), "{name}: the agent ran nobody's command");
                let what = match r[0] {
                    e if e == -i64::from(libc::EACCES) => "connect refused with EACCES".to_owned(),
                    0 if s.capabilities().peer_credentials => {
                        "connected, then dropped by the agent's SO_PEERCRED check with no reply"
                            .to_owned()
                    }
                    other => panic!(
                        "{name}: nobody's connection got {other} (bytes, or -errno): it was served"
                    ),
                };
                let control = nobody_reaches_a_naive_server(&w, &addr);
                assert!(
                    control > 0,
                    "{name}: control: nobody's probe got {control} from a naive server (no peer check) of the same address kind: the probe proves nothing"
                );
                seen.push(format!("{name}: {what} (a naive server at {} address answered the same probe with {} bytes)", if addr.as_path().is_some() { "a path" } else { "an abstract" }, measured(control)));
                drop(agent);
            }
            Outcome::Passed(format!(
                "{}; nobody's command never ran, the owner's exec through the same strategy did",
                seen.join("; ")
            ))
        })()
    }
);

// ---------------------------------------------------------------------------------------
// End to end through the runtime (`boxsock_runtime`), boxes on the `host` backend
// running the real `boxsock-agent`.

use boxsock::{
    BoxState, CreateOptions, ExecIo, ProcessIdentity, Runtime, RuntimeError, RuntimeOptions,
};
use boxsock_core::backend::BackendConfig;

/// `target/<profile>`, holding a built `boxsock-agent` (built once if missing: this
/// package's tests do not build other packages' binaries; `cargo test --workspace` does).
pub(crate) fn agent_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

/// Runtime options over `w`: built-in registries, links under `w`'s base, the real agent,
/// no health monitor (like the CLI: every check below is explicit).
pub(crate) fn rt_options(w: &World) -> RuntimeOptions {
    let mut o = RuntimeOptions::new(boxsock::builtin_strategies(), boxsock::builtin_backends());
    o.strategy_config = w.config();
    o.backend_config = BackendConfig { helper_dir: Some(agent_dir()), ..Default::default() };
    o.health_monitor = false;
    o.ready_timeout = Duration::from_secs(20);
    o
}

pub(crate) fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(crate) async fn exec_code(rt: &Runtime, id: &str, argv: &[&str]) -> Result<i32, RuntimeError> {
    let (mut on_out, mut on_err) = (|_: &[u8]| {}, |_: &[u8]| {});
    rt.exec(
        id,
        argv.iter().map(|s| s.to_string()).collect(),
        vec![],
        ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err },
    )
    .await
}

scenario!(
    other_user_cannot_reach_a_running_box,
    "Attacks",
    "the runtime starts a box on the `host` backend with each strategy the backend accepts; `nobody` dials the box's agent address and sends hello + exec `touch <marker>`; then the owner runs `touch` through `Runtime::exec`",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let tokio = tokio_rt();
            let mut seen = Vec::new();
            for name in boxsock::builtin_strategies().names() {
                let w = World::new();
                let text = tokio.block_on(async {
                let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
                let b = match rt.create(CreateOptions::new(name, "host")).await {
                    Ok(b) => b,
                    Err(e @ RuntimeError::Incompatible { .. }) => return format!("{name}: not offered with host ({e})"),
                    Err(e) => panic!("{name}: create: {e}"),
                };
                let id = b.id.to_string();
                rt.start(&id).await.unwrap_or_else(|e| panic!("{name}: start: {e}"));
                let s = rt.strategy(name).unwrap();
                let addr = s.address(rt.layout(), &b.id, "agent.sock").unwrap();
                let theirs = w.root.path().join("nobody-ran-this");
                let r = nobody::run(&[nobody::Act::ConnectSend(nobody::RawAddr::of(&addr), exec_touch_bytes(&theirs))]).unwrap();
                let ours = w.root.path().join("owner-ran-this");
                let code = exec_code(&rt, &id, &["/usr/bin/touch", &ours.display().to_string()]).await.unwrap();
                assert_eq!(code, 0, "{name}: the owner's exec failed");
                assert!(ours.exists(), "{name}: the owner's command did not run");
                assert!(!theirs.exists(), "{name}: the agent ran nobody's command");
                let what = match r[0] {
                    e if e == -i64::from(libc::EACCES) => "connect refused with EACCES".to_owned(),
                    0 if s.capabilities().peer_credentials => "connected, then dropped by the agent's --allow-uid check with no reply".to_owned(),
                    other => panic!("{name}: nobody's connection got {other} (bytes, or -errno): it was served"),
                };
                let control = nobody_reaches_a_naive_server(&w, &addr);
                assert!(control > 0, "{name}: control: nobody's probe got {control} from a naive server (no peer check) of the same address kind: the probe proves nothing");
                let what = format!("{what} (a naive server at {} address answered the same probe with {} bytes)", if addr.as_path().is_some() { "a path" } else { "an abstract" }, measured(control));
                // The box still serves its owner after the attempt.
                rt.ping(&id).await.unwrap_or_else(|e| panic!("{name}: ping after the attack: {e}"));
                let pid = rt.get(&id).unwrap().process.unwrap().pid;
                rt.remove(&id, true).await.unwrap();
                assert!(!ProcessIdentity::of(pid).map(|p| p.is_alive()).unwrap_or(false), "{name}: the box process survived rm -f");
                format!("{name}: {what}")
            });
                seen.push(text);
            }
            Outcome::Passed(format!(
                "{}; nobody's command never ran; the owner's exec ran and the box still answered ping",
                seen.join("; ")
            ))
        })()
    }
);

/// Rewrite a box's recorded process identity with plain SQL in the real store file.
fn forge_identity(home: &Path, id: &str, pid: i32, start_time: u64) {
    let db = rusqlite::Connection::open(home.join("boxsock.db")).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    let n = db
        .execute(
            "UPDATE boxes SET pid = ?1, start_time = ?2 WHERE id = ?3",
            rusqlite::params![pid, start_time as i64, id],
        )
        .unwrap();
    assert_eq!(n, 1, "no row for box {id}");
}

/// An unrelated process (ours, so it can be reaped): `sleep 300` in its own process
/// group. Killed and reaped on drop.
struct Stranger(std::process::Child);

impl Stranger {
    fn spawn() -> Stranger {
        use std::os::unix::process::CommandExt;
        Stranger(std::process::Command::new("sleep").arg("300").process_group(0).spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kill and reap a box process the runtime lost track of (its row was forged).
fn kill_lost_box(pid: i32) {
    // SAFETY: signalling a process group and a pid, and reaping our own child; no memory
    // is passed except a null status pointer.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

scenario!(
    reused_pid_is_never_signalled,
    "Attacks",
    "a running box's stored pid is rewritten (plain SQL) to an unrelated live process: (a) with the box's recorded start time, then the runtime is reopened; (b) with a wrong start time, then reopened; (c) with the box's start time under the live runtime; then `stop` and `rm` (`rm -f` in c)",
    {
        let tokio = tokio_rt();
        let mut seen = Vec::new();
        for variant in ["a", "b", "c"] {
            let w = World::new();
            let mut stranger = Stranger::spawn();
            // Start times have a 10 ms resolution (clock ticks): let one pass so the box
            // cannot share the stranger's start time.
            std::thread::sleep(std::time::Duration::from_millis(25));
            let text = tokio.block_on(async {
                let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
                let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
                let id = b.id.to_string();
                let real = rt.start(&id).await.unwrap().process.unwrap();
                let stranger_id = ProcessIdentity::of(stranger.pid()).unwrap();
                assert!(stranger_id.is_alive());
                let start_time = if variant == "b" { real.start_time + 4242 } else { real.start_time };
                assert_ne!(start_time, stranger_id.start_time, "the forged identity must not be the stranger's own");
                // What a naive stopper would signal: the pid the forged row names, read back
                // with SQL before the runtime looks at it.
                let read_pid = |home: &Path| -> i32 {
                    rusqlite::Connection::open(home.join("boxsock.db"))
                        .unwrap()
                        .query_row("SELECT pid FROM boxes WHERE id = ?1", [&id], |r| r.get(0))
                        .unwrap()
                };
                let stored_pid;
                let rt = if variant == "c" {
                    forge_identity(w.layout.home(), &id, stranger.pid(), start_time);
                    stored_pid = read_pid(w.layout.home());
                    rt
                } else {
                    rt.close();
                    forge_identity(w.layout.home(), &id, stranger.pid(), start_time);
                    stored_pid = read_pid(w.layout.home());
                    let (rt, report) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
                    let r = report.recovered.iter().find(|r| r.id == b.id).expect("recovery looked at the forged box");
                    assert_eq!((r.to, r.killed), (BoxState::Stopped, false), "{r:?}");
                    rt
                };
                assert!(stranger.alive(), "{variant}: the stranger was killed at open");
                let before = rt.get(&id).unwrap().state;
                let stop = if variant == "c" {
                    // rm -f of a box recorded running: remove stops it itself.
                    "rm -f".to_owned()
                } else {
                    let stopped = rt.stop(&id, Some(Duration::from_secs(2))).await.unwrap();
                    assert_eq!(stopped.state, BoxState::Stopped, "{variant}");
                    assert!(stranger.alive(), "{variant}: stop signalled the stranger");
                    format!("stop → {}, rm", stopped.state)
                };
                let removed = rt.remove(&id, variant == "c").await.map(drop);
                assert!(stranger.alive(), "{variant}: rm signalled the stranger");
                removed.unwrap_or_else(|e| panic!("{variant}: rm: {e}"));
                assert!(rt.get(&id).is_err(), "{variant}: the row survived rm");
                // The real box process was lost with its identity; it is still ours to reap.
                let lost_alive = ProcessIdentity::of(real.pid).map(|p| p.is_alive()).unwrap_or(false);
                kill_lost_box(real.pid);
                // The positive control: a naive stopper (kill the stored pid, no identity
                // check) signals the stranger.
                // SAFETY: kill(2) with a pid and a signal number; no memory is passed.
                unsafe { libc::kill(stored_pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while stranger.alive() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(!stranger.alive(), "{variant}: control: the naive stopper's SIGTERM to the stored pid {stored_pid} did not reach the stranger");
                let how = match variant {
                    "a" => "pid → stranger with the box's start time, runtime reopened (recovery: running → stopped, nothing killed)",
                    "b" => "pid → stranger with a wrong start time, runtime reopened (recovery: running → stopped, nothing killed)",
                    _ => "pid → stranger with the box's start time under the live runtime",
                };
                format!(
                    "({variant}) {how}: state {before}, {stop} ok, stranger alive (a naive stopper's SIGTERM to the stored pid then killed it){}",
                    if lost_alive { "; the real box process, no longer named by its row, was left running (the test killed it)" } else { "" }
                )
            });
            seen.push(text);
        }
        Outcome::Passed(format!(
            "{}; the recorded (pid, start time) named no live process, so nothing was signalled",
            seen.join("; ")
        ))
    }
);

/// nobody binds `a` and keeps it. A name the stopped box held can stay bound for a
/// moment after its process is gone with no descriptor of it left in any process (seen
/// in 1 of ~15 suite runs: the kernel had not released the socket yet), so nobody
/// retries, as a real squatter would, for at most 5 s; the failure names who holds it.
fn squat_abstract(a: &boxsock_core::SocketAddress) -> boxsock_conformance::fork::ListeningChild {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match boxsock_conformance::fork::listen_in_child(a) {
            Ok(c) => return c,
            Err(boxsock_conformance::fork::PeerReport::SocketFailed(e))
                if e == libc::EADDRINUSE && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(r) => panic!("nobody cannot squat {a}: {r:?}; held by {:?}", holders_of(a)),
        }
    }
}

/// The processes holding a socket bound at `a` (from `/proc/net/unix` and `/proc/*/fd`).
fn holders_of(a: &boxsock_core::SocketAddress) -> Vec<String> {
    let want = a.display_string();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .filter(|l| l.split_whitespace().nth(7) == Some(want.as_str()))
        .filter_map(|l| l.split_whitespace().nth(6).map(|i| format!("socket:[{i}]")))
        .collect();
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                let ppid = std::fs::read_to_string(p.path().join("stat")).ok().and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().nth(1))
                        .map(str::to_owned)
                });
                out.push(format!(
                    "{} ({}) ppid {:?} fd {:?}",
                    p.file_name().to_string_lossy(),
                    comm.trim(),
                    ppid,
                    fd.file_name()
                ));
            }
        }
    }
    out.push(format!("inodes {inodes:?}"));
    out
}

scenario!(
    abstract_names_squatted_after_stop_do_not_block_the_next_start,
    "Attacks",
    "a box on `host` with `abstract` is started and stopped; `nobody` binds the names it saw (the agent's, in /proc/net/unix, and the one the strategy derives for `ready`) and keeps them; the owner starts the box again and runs a command",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let tokio = tokio_rt();
            tokio.block_on(async {
                let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
                let b = rt.create(CreateOptions::new("abstract", "host")).await.unwrap();
                let id = b.id.to_string();
                let s = rt.strategy("abstract").unwrap();
                let names = |rt: &Runtime| {
                    ["agent.sock", "ready.sock"].map(|f| s.address(rt.layout(), &b.id, f).unwrap())
                };
                rt.start(&id).await.unwrap();
                let old = names(&rt);
                rt.stop(&id, None).await.unwrap();
                let squatters: Vec<_> = old
                    .iter()
                    .map(squat_abstract)
                    .collect();
                // The positive control: a naive starter that binds the names it used before
                // is blocked by the squat.
                let naive: Vec<String> = old
                    .iter()
                    .map(|a| match boxsock_core::peer::bind_stream_at(a) {
                        Err(e) => e.to_string(),
                        Ok(_) => panic!("control: the naive starter bound {a} again: the squat did not take"),
                    })
                    .collect();
                let started = rt.start(&id).await;
                let new = names(&rt);
                let rec = started.unwrap_or_else(|e| panic!("the start after the squat failed: {e}"));
                assert_eq!(rec.state, BoxState::Running);
                assert!(old.iter().zip(&new).all(|(o, n)| o != n), "names kept: {old:?} {new:?}");
                assert_eq!(exec_code(&rt, &id, &["true"]).await.unwrap(), 0);
                // The squatted agent name leads to nobody's socket, which the owner's side refuses.
                let refused = match boxsock_core::peer::connect_stream_at(&old[0], "agent", &s.peer_policy(rt.layout(), &b.id).unwrap()) {
                    Err(BindingError::PeerRejected { uid, .. }) => uid,
                    other => panic!("dialling the old name: {other:?}"),
                };
                drop(squatters);
                rt.remove(&id, true).await.unwrap();
                Outcome::Passed(format!(
                    "the next start succeeded on fresh names for agent and ready (prepare_start rotated the box's epoch); exec ran; the squatted old agent name leads to uid {refused}'s socket, refused with PeerRejected; a naive starter binding the old names again failed on both ({})",
                    measured(naive.join("; "))
                ))
            })
        })()
    }
);
