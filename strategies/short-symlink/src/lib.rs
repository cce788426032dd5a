//! `short-symlink`: the default strategy.
//!
//! Every socket of every box binds and dials through
//! `<base>/<prefix>-<uid>/<box_id>/<name>` (by default `/tmp/boxsock-<uid>/<id>/<name>`),
//! where `<base>/<prefix>-<uid>/<box_id>` is a symlink to `<home>/boxes/<id>/sockets`.
//! There is one code path and no length threshold, so there is no "dead zone" of home
//! lengths where the runtime's own sockets fit but a name the VMM derives does not.
//!
//! ## Safety of the per-user directory
//! `<base>/<prefix>-<uid>` has a predictable name in a shared directory, so it is
//! opened through the core's [`SharedDir`] and checked on the descriptor
//! (`openat(O_NOFOLLOW|O_DIRECTORY)` + `fstat`): it must be a real directory owned by the
//! configured uid. Anything else there is neither used nor touched: the home moves to a
//! fresh private fallback (recorded in the home, replaced when it goes missing or is
//! squatted in turn; decision 0011). Group/other bits are repaired to 0700. An explicit
//! `StrategyConfig::binding_dir` has no fallback: [`BindingError::Insecure`] names the
//! path and what was found. Every operation on
//! the link (`symlinkat`, `fstatat`, `readlinkat`, `renameat`, `unlinkat`) is relative to
//! that descriptor, so swapping the directory between the check and the use cannot
//! redirect the strategy. The base directory itself must not let other users rename the
//! per-user directory away (writable by others only with the sticky bit, owned by root
//! or the uid).
//!
//! Every change to the links (the slow path of `ensure`, `release`, `sweep`) holds an
//! exclusive `flock` on the per-user directory, so the check-then-act steps of boxsock
//! processes never interleave; waiting for it is bounded (5 s, then an error naming
//! the directory).
//!
//! ## Steady state
//! After the first successful [`PathStrategy::ensure`] of (home, id), the (device, inode)
//! of the box's sockets directory is cached, and later calls cost one `fstatat` of the
//! link relative to the held per-user directory descriptor. See
//! `docs/decisions/0001-short-symlink-steady-state.md` for what that proves and what it
//! does not.
//!
//! ## Two homes, one id
//! Two homes that use the same box id map to the same link. `ensure` replaces a dangling
//! link, but refuses with [`BindingError::Occupied`] to take over a link that resolves to
//! an existing directory other than this box's sockets directory. `release` removes only
//! a link that resolves to this box's directory or dangles. `sweep` removes only dangling
//! links.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use boxsock_core::binding::{CrossUserProtection, PolicyIntent};
use boxsock_core::fallback::SharedDir;
use boxsock_core::peer::PeerPolicy;
use boxsock_core::registry::StrategyRegistration;
use boxsock_core::{
    BindingError, BoxId, BoxLayout, Capabilities, PathStrategy, Platform, PolicyAccess, PolicyPath,
    SocketBinding, StrategyConfig, SweepReport,
};
use boxsock_core::{DirExpectation, DirIdentity, SocketDir};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// The registered name.
pub const NAME: &str = "short-symlink";

/// The registration, also usable in explicit registries.
pub const REGISTRATION: StrategyRegistration = StrategyRegistration {
    name: NAME,
    summary: "default: every socket binds and dials through <base>/<prefix>-<uid>/<id>, a symlink to <home>/boxes/<id>/sockets; fits whatever the home length",
    build,
};

inventory::submit!(REGISTRATION);

fn build(config: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(ShortSymlink::new(config)?))
}

/// Prefix of the temporary link names `ensure` uses inside the per-user directory
/// (`.boxsock-tmp.<pid>.<n>.<id>`, renamed over the link). It starts with `.`, which no [`BoxId`] can, so it never collides with a
/// box's link.
const TEMP_PREFIX: &str = ".boxsock-tmp.";

/// How many times `ensure` re-examines the link after losing a race before giving up.
const MAX_ATTEMPTS: usize = 32;

/// The longest socket file name whose worst-case address fits every platform
/// ([`Platform::portable_sun_len`]): default base `/tmp`, default prefix, a 10-digit uid
/// and a [`BoxId::MAX_LEN`] id leave `104 - 1 - len("/tmp/boxsock-4294967295/<id>/")`
/// bytes.
pub const PORTABLE_MAX_FILE_NAME_LEN: usize = Platform::portable_sun_len()
    - 1
    - ("/tmp/".len()
        + StrategyConfig::DEFAULT_PREFIX.len()
        + "-4294967295/".len()
        + BoxId::MAX_LEN
        + "/".len());

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Identity of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    // dev_t and ino_t differ in width and sign across platforms.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &FileStat) -> Self {
        FileId { dev: st.st_dev as u64, ino: st.st_ino as u64 }
    }
}

/// How long a change to the per-user directory waits for another boxsock process's
/// change to finish before failing (a stopped process must not hang everyone).
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// An exclusive `flock` on the per-user directory. Every change to its links (the slow
/// path of `ensure`, `release`, `sweep`) holds it, so check-then-act sequences of
/// cooperating processes do not interleave; the steady-state fast path only reads and
/// takes none.
struct DirLock<'a> {
    fd: BorrowedFd<'a>,
}

impl<'a> DirLock<'a> {
    fn acquire(fd: BorrowedFd<'a>, path: &Path) -> Result<Self, BindingError> {
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let mut pause = Duration::from_micros(50);
        loop {
            // SAFETY: flock on a descriptor borrowed for the call; no memory is passed.
            let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { fd });
            }
            match Errno::last() {
                Errno::EINTR => {}
                Errno::EWOULDBLOCK if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(1));
                }
                Errno::EWOULDBLOCK => {
                    return Err(BindingError::io(
                        "lock (another boxsock process has held it for 5 s)",
                        path,
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
                e => return Err(BindingError::errno("lock", path, e)),
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor that outlives this guard; no memory is passed.
        unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Cached state of the steady-state fast path.
#[derive(Debug, Default)]
struct State {
    /// id → (home, identity of `<home>/boxes/<id>/sockets`, the per-user directory the
    /// link was made in, held open) when `ensure` last succeeded. Keyed by the short id
    /// so the lookup hashes a few bytes; the homes of one id (almost always one) are
    /// compared as bytes (not component by component).
    targets: HashMap<BoxId, Vec<(PathBuf, FileId, Arc<OwnedFd>)>>,
}

/// Where the links live.
#[derive(Debug)]
enum Dir {
    /// `<base>/<prefix>-<uid>`, or the home's recorded fallback when another user holds
    /// that name (the core's [`SharedDir`]).
    Shared(SharedDir),
    /// Exactly this directory (`StrategyConfig::binding_dir`), with no fallback.
    Fixed { path: PathBuf, name: String },
}

/// What is at a link's place in the per-user directory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Nothing.
    Missing,
    /// A symlink that resolves to a directory with this identity.
    LiveDir(FileId),
    /// A symlink that resolves to something that is not a directory.
    LiveOther,
    /// A symlink whose target does not resolve (missing, loop, a file on the way).
    Dangling,
    /// Not a symlink: a regular file, a directory, a socket…
    NotALink(&'static str),
}

/// The `short-symlink` strategy. Build it with [`ShortSymlink::new`] (or through the
/// registry).
#[derive(Debug)]
pub struct ShortSymlink {
    config: StrategyConfig,
    dir: Dir,
    state: RwLock<State>,
}

impl boxsock_core::registry::Named for ShortSymlink {
    const NAME: &'static str = NAME;
}

impl ShortSymlink {
    /// A strategy for `config`. The base directory must be absolute and the prefix a
    /// plain name (`[A-Za-z0-9._-]`, not starting with `.`); neither is touched on disk
    /// here. A base too long to leave room for addresses fails at
    /// the box's address ([`BoxBinding::derive`](boxsock_core::BoxBinding::derive)) with [`BindingError::PathTooLong`].
    pub fn new(config: &StrategyConfig) -> Result<Self, BindingError> {
        if !config.base_dir.is_absolute() {
            return Err(BindingError::Invalid {
                what: "base directory".into(),
                reason: format!(
                    "{} is not an absolute path",
                    boxsock_core::echo::path(&config.base_dir)
                ),
            });
        }
        let p = &config.prefix;
        let prefix_ok = !p.is_empty()
            && !p.starts_with('.')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !prefix_ok {
            return Err(BindingError::Invalid {
                what: "per-user directory prefix".into(),
                reason: format!(
                    "{p:?} must be non-empty, of [A-Za-z0-9._-], and not start with '.'"
                ),
            });
        }
        let dir = match &config.binding_dir {
            // `<prefix>-<uid>`, or the home's fallback.
            None => Dir::Shared(SharedDir::new(config, &config.base_dir, &config.prefix)),
            // An explicit directory directly in the base.
            Some(d) if d.parent() == Some(config.base_dir.as_path()) => {
                match d.file_name().and_then(|n| n.to_str()) {
                    Some(n) if !n.is_empty() && !n.starts_with('.') => {
                        Dir::Fixed { path: d.clone(), name: n.to_owned() }
                    }
                    _ => {
                        return Err(BindingError::Invalid {
                            what: "binding directory".into(),
                            reason: format!("{} has no plain name", boxsock_core::echo::path(d)),
                        });
                    }
                }
            }
            Some(d) => {
                return Err(BindingError::Invalid {
                    what: "binding directory".into(),
                    reason: format!(
                        "{} is not directly in the base directory {}",
                        boxsock_core::echo::path(d),
                        boxsock_core::echo::path(&config.base_dir)
                    ),
                });
            }
        };
        Ok(ShortSymlink { config: config.clone(), dir, state: RwLock::new(State::default()) })
    }

    /// The per-user directory holding the links: `<base>/<prefix>-<uid>`, or the
    /// fallback this instance last used for a home.
    pub fn per_uid_dir(&self) -> PathBuf {
        match &self.dir {
            Dir::Shared(s) => s.last_used(),
            Dir::Fixed { path, .. } => path.clone(),
        }
    }

    /// The link of box `id` in [`ShortSymlink::per_uid_dir`].
    pub fn link_path(&self, id: &BoxId) -> PathBuf {
        self.per_uid_dir().join(id.as_str())
    }

    /// The per-user directory `layout`'s home uses (its recorded fallback, if any).
    fn dir_path(&self, layout: &BoxLayout) -> PathBuf {
        match &self.dir {
            Dir::Shared(s) => s.path_for(layout.home()),
            Dir::Fixed { path, .. } => path.clone(),
        }
    }

    /// The link of box `id` of `layout`'s home.
    fn link_in(&self, layout: &BoxLayout, id: &BoxId) -> PathBuf {
        self.dir_path(layout).join(id.as_str())
    }

    /// The text written into the link: `<home>/boxes/<id>/sockets`, made absolute
    /// (against the current directory) without resolving symlinks.
    fn link_target(&self, layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
        let dir = layout.sockets_dir(id);
        std::path::absolute(&dir).map_err(|e| BindingError::io("make absolute", dir, e))
    }

    /// One `fstatat` through the held per-user directory descriptor, compared with the
    /// cached identity of the box's sockets directory.
    fn fast_path(&self, layout: &BoxLayout, id: &BoxId) -> bool {
        let home = layout.home();
        if home.is_relative() {
            // A relative home names another directory after a chdir: always check fully.
            return false;
        }
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let Some((_, want, dir)) = st
            .targets
            .get(id)
            .and_then(|v| v.iter().find(|(h, ..)| h.as_os_str() == home.as_os_str()))
        else {
            return false;
        };
        matches!(nix::sys::stat::fstatat(dir.as_fd(), id.as_str(), AtFlags::empty()),
            Ok(s) if FileId::of(&s) == *want)
    }

    fn forget(&self, layout: &BoxLayout, id: &BoxId) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = st.targets.get_mut(id) {
            v.retain(|(h, ..)| h.as_os_str() != layout.home().as_os_str());
            if v.is_empty() {
                st.targets.remove(id);
            }
        }
    }

    /// Identity of the box's sockets directory (following symlinks in the home).
    fn target_id(&self, target: &Path, id: &BoxId) -> Result<FileId, BindingError> {
        match nix::sys::stat::stat(target) {
            Ok(s) if is_kind(&s, SFlag::S_IFDIR) => Ok(FileId::of(&s)),
            Ok(s) => {
                Err(BindingError::Occupied { path: target.to_owned(), found: kind_name(&s).into() })
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => {
                Err(BindingError::MissingSocketDir { id: id.to_string(), path: target.to_owned() })
            }
            Err(e) => Err(BindingError::errno("stat", target, e)),
        }
    }

    /// Open and check the per-user directory `layout`'s home uses, with its path. With
    /// `create`, make it (0700) if missing; without, a missing directory is `Ok(None)`.
    /// The shared one falls back (the core's [`SharedDir`]) when another user holds it.
    fn open_dir(
        &self,
        layout: &BoxLayout,
        create: bool,
    ) -> Result<Option<(OwnedFd, PathBuf)>, BindingError> {
        match &self.dir {
            Dir::Shared(s) => Ok(s.open(layout.home(), create)?.map(|o| (o.fd, o.path))),
            Dir::Fixed { path, name } => {
                Ok(self.open_fixed(path, name, create)?.map(|fd| (fd, path.clone())))
            }
        }
    }

    /// Open and check an explicit per-user directory (no fallback: the embedder chose
    /// it). With `create`, make it (0700) if missing; without, a missing directory is
    /// `Ok(None)`.
    fn open_fixed(
        &self,
        per_uid: &Path,
        name: &str,
        create: bool,
    ) -> Result<Option<OwnedFd>, BindingError> {
        let base = &self.config.base_dir;
        let uid = self.config.uid;
        // Resolved on descriptors, every ancestor and symlink on the way held to the
        // ownership rule: a link base another user can redirect would let them choose
        // where root writes.
        let (base_fd, bst) = boxsock_core::trust::open_dir(base, uid, "the link base")?;
        let bmode = mode_bits(&bst);
        if bmode & 0o022 != 0 && bmode & 0o1000 == 0 {
            return Err(BindingError::Insecure {
                path: base.clone(),
                reason: format!(
                    "the base directory has mode {bmode:04o}: writable by other users without the sticky bit, so they could rename {} away and put their own in its place",
                    name
                ),
            });
        }
        if bst.st_uid != 0 && bst.st_uid != uid {
            return Err(BindingError::Insecure {
                path: base.clone(),
                reason: format!(
                    "the base directory is owned by uid {}, neither root nor uid {uid}",
                    bst.st_uid
                ),
            });
        }
        if create {
            match nix::sys::stat::mkdirat(&base_fd, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    tracing::debug!(path = %boxsock_core::echo::path(per_uid), "created per-user directory")
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(BindingError::errno("create directory", per_uid, e)),
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(&base_fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR | Errno::EMLINK)) => {
                return Err(self.not_a_directory(base_fd.as_fd(), per_uid, name, e));
            }
            Err(e) => return Err(BindingError::errno("open", per_uid, e)),
        };
        let st = nix::sys::stat::fstat(&fd).map_err(|e| BindingError::errno("stat", per_uid, e))?;
        if st.st_uid != uid {
            return Err(BindingError::Insecure {
                path: per_uid.to_owned(),
                reason: format!(
                    "it is a directory owned by uid {} (mode {:04o}), not by uid {uid}; another user may have created it to intercept box sockets",
                    st.st_uid,
                    mode_bits(&st)
                ),
            });
        }
        let mode = mode_bits(&st);
        if mode & 0o077 != 0 {
            tracing::warn!(path = %boxsock_core::echo::path(per_uid), mode = format_args!("{mode:04o}"), "per-user directory was open to group/other; repairing to 0700");
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700))
                .map_err(|e| BindingError::errno("repair mode (chmod 0700) of", per_uid, e))?;
        }
        Ok(Some(fd))
    }

    /// The error for a per-user path that is not a real directory, naming what it is.
    fn not_a_directory(
        &self,
        base_fd: BorrowedFd<'_>,
        per_uid: &Path,
        name: &str,
        open_err: Errno,
    ) -> BindingError {
        let found = match nix::sys::stat::fstatat(base_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) if is_kind(&s, SFlag::S_IFLNK) => {
                let to = nix::fcntl::readlinkat(base_fd, name)
                    .map(|t| format!(" to {}", boxsock_core::echo::path(Path::new(&t))))
                    .unwrap_or_default();
                format!("a symlink{to} owned by uid {}", s.st_uid)
            }
            Ok(s) => format!("{} owned by uid {}", kind_name(&s), s.st_uid),
            Err(e) => format!("not openable as a directory ({open_err}; {e})"),
        };
        BindingError::Insecure {
            path: per_uid.to_owned(),
            reason: format!(
                "it is {found}; the per-user directory must be a real directory owned by uid {}",
                self.config.uid
            ),
        }
    }

    /// Replace whatever link is at `name` by one to `target`, atomically: a temporary
    /// link in the same directory renamed over it.
    fn replace_link(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &str,
        target: &Path,
    ) -> Result<(), BindingError> {
        let tmp = temp_name(name);
        nix::unistd::symlinkat(target, dir, tmp.as_str())
            .map_err(|e| BindingError::errno("create temporary link", dir_path.join(&tmp), e))?;
        if let Err(e) = nix::fcntl::renameat(dir, tmp.as_str(), dir, name) {
            let _ = nix::unistd::unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(BindingError::errno("rename temporary link over", dir_path.join(name), e));
        }
        Ok(())
    }

    fn cache(&self, layout: &BoxLayout, id: &BoxId, dir: OwnedFd, want: FileId) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let dir = Arc::new(dir);
        let v = st.targets.entry(id.clone()).or_default();
        match v.iter_mut().find(|(h, ..)| h.as_os_str() == layout.home().as_os_str()) {
            Some((_, w, d)) => (*w, *d) = (want, dir),
            None => v.push((layout.home().to_owned(), want, dir)),
        }
    }

    fn slow_ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        let target = self.link_target(layout, id)?;
        let want = self.target_id(&target, id)?;
        let (dir, path) = self
            .open_dir(layout, true)?
            .ok_or_else(|| BindingError::errno("open", self.dir_path(layout), Errno::ENOENT))?;
        {
            let _lock = DirLock::acquire(dir.as_fd(), &path)?;
            self.place_link(dir.as_fd(), &path, id, &target, want)?;
        }
        self.cache(layout, id, dir, want);
        Ok(())
    }

    /// Make `name` a link resolving to `want`, under the directory lock. Other writers
    /// (a /tmp cleaner, a process not taking the lock) are still survived: every step
    /// is re-examined, a bounded number of times.
    fn place_link(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        id: &BoxId,
        target: &Path,
        want: FileId,
    ) -> Result<(), BindingError> {
        let name = id.as_str();
        let link = dir_path.join(name);
        for _ in 0..MAX_ATTEMPTS {
            let entry = examine(dir, name).map_err(|e| BindingError::errno("inspect", &link, e))?;
            match entry {
                Entry::LiveDir(got) if got == want => {
                    tracing::debug!(box_id = %id, path = %boxsock_core::echo::path(&link), target = %boxsock_core::echo::path(target), "link in place");
                    return Ok(());
                }
                Entry::Missing => match nix::unistd::symlinkat(target, dir, name) {
                    Ok(()) => {
                        tracing::debug!(box_id = %id, path = %boxsock_core::echo::path(&link), target = %boxsock_core::echo::path(target), "created link");
                    }
                    // A concurrent creator won: look at what it made.
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(BindingError::errno("create symlink", &link, e)),
                },
                Entry::LiveDir(_) => {
                    let to = nix::fcntl::readlinkat(dir, name)
                        .map(|t| boxsock_core::echo::path(Path::new(&t)).to_string())
                        .unwrap_or_else(|e| format!("<unreadable: {e}>"));
                    return Err(BindingError::Occupied {
                        path: link,
                        found: format!(
                            "a link to {to}, which exists (another home's box with the same id?) and is not {}",
                            boxsock_core::echo::path(target)
                        ),
                    });
                }
                Entry::Dangling | Entry::LiveOther => {
                    tracing::info!(box_id = %id, path = %boxsock_core::echo::path(&link), target = %boxsock_core::echo::path(target), stale = ?entry, "replacing stale link");
                    self.replace_link(dir, dir_path, name, target)?;
                }
                Entry::NotALink(kind) => {
                    return Err(BindingError::Occupied { path: link, found: kind.to_owned() });
                }
            }
        }
        Err(BindingError::io(
            "ensure link (lost the race too many times)",
            link,
            std::io::Error::from(std::io::ErrorKind::ResourceBusy),
        ))
    }
}

impl PathStrategy for ShortSymlink {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            path_addressable: true,
            filesystem_visible: true,
            peer_credentials: true,
            netns_scoped: false,
            home_length_independent: true,
            cross_user: CrossUserProtection::Both,
            platforms: &[Platform::Linux, Platform::MacOs],
        }
    }

    /// Make `<per-uid dir>/<id>` a link to `<home>/boxes/<id>/sockets`.
    ///
    /// Steady state: one `fstatat` through the held per-user directory descriptor. Slow
    /// path: check the per-user directory, then create the link, accept an equivalent
    /// one (same device and inode, whatever its text), replace a dangling one
    /// atomically, and refuse ([`BindingError::Occupied`]) a file, a directory, or a
    /// link to another existing directory.
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        if self.fast_path(layout, id) {
            return Ok(());
        }
        self.slow_ensure(layout, id)
    }

    /// The link, `<per-uid dir>/<id>`, in the directory `layout`'s home uses.
    fn socket_base(&self, layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
        Ok(self.link_in(layout, id))
    }

    /// Remove the box's link if it resolves to this box's sockets directory or dangles.
    /// A link to another existing directory (another home's live box with the same id)
    /// and anything that is not a link are left alone. Idempotent.
    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.forget(layout, id);
        let Some((dir, dir_path)) = self.open_dir(layout, false)? else {
            return Ok(());
        };
        let _lock = DirLock::acquire(dir.as_fd(), &dir_path)?;
        let name = id.as_str();
        let link = dir_path.join(name);
        let entry =
            examine(dir.as_fd(), name).map_err(|e| BindingError::errno("inspect", &link, e))?;
        let ours = match entry {
            Entry::Missing => return Ok(()),
            Entry::Dangling => true,
            Entry::LiveDir(got) => {
                let target = self.link_target(layout, id)?;
                matches!(nix::sys::stat::stat(&target), Ok(s) if FileId::of(&s) == got)
            }
            Entry::LiveOther | Entry::NotALink(_) => false,
        };
        if !ours {
            tracing::debug!(box_id = %id, path = %boxsock_core::echo::path(&link), found = ?entry, "not this box's link; left in place");
            return Ok(());
        }
        match nix::unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                tracing::debug!(box_id = %id, path = %boxsock_core::echo::path(&link), "released link");
                Ok(())
            }
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(BindingError::errno("unlink", link, e)),
        }
    }

    /// Remove dangling links from the per-user directory.
    ///
    /// A link whose target no longer exists is dead whichever home it belonged to: its
    /// box directory is gone, so no runtime can use it, and `ensure` of any home would
    /// replace it anyway. So sweep removes dangling links *of every home*, including one
    /// whose target was under another home. It never removes a link that resolves (a
    /// live box of this or any other home), a regular file, a directory, or anything
    /// else that is not a symlink. Temporary links (`.boxsock-tmp.…`) left by a process
    /// that died inside `ensure` are removed too: under the directory lock sweep holds,
    /// no live process can be using one.
    ///
    /// A link named after a box that exists in *this* home (`<home>/boxes/<name>`) is
    /// kept without being looked at: that box's `ensure` owns the name and replaces the
    /// link if it dangles. This is what keeps a sweep of a home with many boxes cheap.
    ///
    /// Cost: one `readdir` of the per-user directory and one of `<home>/boxes`; entries
    /// whose `d_type` says they are not symlinks cost nothing more; every other symlink
    /// costs one `fstatat` relative to the directory descriptor, and each removal one
    /// `unlinkat`. Concurrent `ensure`/`release`/`sweep` calls of boxsock processes are
    /// serialised by an exclusive `flock` on the per-user directory.
    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        let mut report = SweepReport::default();
        let Some((dir, dir_path)) = self.open_dir(layout, false)? else {
            return Ok(report);
        };
        let _lock = DirLock::acquire(dir.as_fd(), &dir_path)?;
        let boxes_here = box_name_hashes(&layout.boxes_dir());
        let mut listing = nix::dir::Dir::openat(
            &dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| BindingError::errno("open", &dir_path, e))?;
        let mut dead: Vec<Vec<u8>> = Vec::new();
        for ent in listing.iter() {
            let ent = ent.map_err(|e| BindingError::errno("read directory", &dir_path, e))?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let is_link = match ent.file_type() {
                Some(t) => t == nix::dir::Type::Symlink,
                None => {
                    matches!(nix::sys::stat::fstatat(&dir, ent.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW),
                    Ok(s) if is_kind(&s, SFlag::S_IFLNK))
                }
            };
            let is_dead = is_link
                && if name.starts_with(TEMP_PREFIX.as_bytes()) {
                    true
                } else if boxes_here.contains(&name_hash(name)) {
                    false
                } else {
                    matches!(
                        nix::sys::stat::fstatat(&dir, ent.file_name(), AtFlags::empty()),
                        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP)
                    )
                };
            if is_dead {
                dead.push(name.to_vec());
            } else {
                report.kept += 1;
            }
        }
        drop(listing);
        for name in dead {
            let name = OsStr::from_bytes(&name);
            match nix::unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) => {
                    let path = dir_path.join(name);
                    tracing::debug!(path = %boxsock_core::echo::path(&path), "swept dangling link");
                    report.removed.push(path);
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(BindingError::errno("unlink", dir_path.join(name), e)),
            }
        }
        tracing::debug!(path = %boxsock_core::echo::path(&dir_path), removed = report.removed.len(), kept = report.kept, "swept");
        Ok(report)
    }

    fn policy_paths(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Vec<PolicyPath>, BindingError> {
        let target = self.link_target(layout, id)?;
        Ok(vec![
            PolicyPath {
                path: self.link_in(layout, id),
                intent: PolicyIntent::SymlinkToDirectory { target: target.clone() },
                access: PolicyAccess::Sockets,
            },
            PolicyPath {
                path: target,
                intent: PolicyIntent::Directory,
                access: PolicyAccess::Sockets,
            },
            // Only traversed (the link is looked up in it), never written through.
            PolicyPath {
                path: self.dir_path(layout),
                intent: PolicyIntent::Directory,
                access: PolicyAccess::Read,
            },
        ])
    }

    fn binding_dir(&self) -> Option<PathBuf> {
        Some(self.per_uid_dir())
    }

    /// `<base>/<prefix>-<uid>`, the name another user can take first (not an explicit
    /// `binding_dir`, which the embedder chose).
    fn shared_dir(&self) -> Option<PathBuf> {
        match &self.dir {
            Dir::Shared(s) => Some(s.predictable()),
            Dir::Fixed { .. } => None,
        }
    }

    /// The box's sockets directory, opened *through the held, checked per-user
    /// directory descriptor* and the box's link (`openat(O_PATH|O_DIRECTORY)`), then
    /// verified on the new descriptor: owned by the configured uid, no group/other
    /// write, and the same device and inode as `<home>/boxes/<id>/sockets` when
    /// `ensure` last succeeded (or, without that, now). A link swapped to any other
    /// directory is refused with [`BindingError::Insecure`]; nothing is re-resolved
    /// from `/tmp` afterwards.
    fn open_dir(&self, layout: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError> {
        let (dir, cached) = {
            let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let home = layout.home();
            let entry = if home.is_relative() {
                None
            } else {
                st.targets
                    .get(id)
                    .and_then(|v| v.iter().find(|(h, ..)| h.as_os_str() == home.as_os_str()))
                    .map(|(_, w, d)| (*w, d.clone()))
            };
            (entry.as_ref().map(|(_, d)| d.clone()), entry.map(|(w, _)| w))
        };
        let want = match cached {
            Some(w) => w,
            None => self.target_id(&self.link_target(layout, id)?, id)?,
        };
        let expect = DirExpectation {
            owner: self.config.uid,
            identity: Some(DirIdentity { dev: want.dev, ino: want.ino }),
        };
        if let Some(d) = dir {
            match SocketDir::open_at(d.as_fd(), id.as_str(), self.link_in(layout, id), expect) {
                // The cached per-user directory may have been removed (a /tmp cleaner)
                // and made again since: look once more through a freshly checked one.
                Err(BindingError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) => {}
                other => return other,
            }
        }
        let (fresh, path) = self
            .open_dir(layout, false)?
            .ok_or_else(|| BindingError::errno("open", self.dir_path(layout), Errno::ENOENT))?;
        SocketDir::open_at(fresh.as_fd(), id.as_str(), path.join(id.as_str()), expect)
    }

    /// The owner and the embedder's `allowed_peer_uids`: the 0700 directories keep
    /// others out, and every accept and connect checks `SO_PEERCRED` as well.
    fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy::allow_uids(
            std::iter::once(self.config.uid).chain(self.config.allowed_peer_uids.iter().copied()),
        )
    }

    fn binding_path(&self, layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
        Some(self.link_in(layout, id))
    }
}

/// What is at `name` in `dir`: at most two `fstatat`s.
fn examine(dir: BorrowedFd<'_>, name: &str) -> nix::Result<Entry> {
    let l = match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(l) => l,
        Err(Errno::ENOENT) => return Ok(Entry::Missing),
        Err(e) => return Err(e),
    };
    if !is_kind(&l, SFlag::S_IFLNK) {
        return Ok(Entry::NotALink(kind_name(&l)));
    }
    match nix::sys::stat::fstatat(dir, name, AtFlags::empty()) {
        Ok(s) if is_kind(&s, SFlag::S_IFDIR) => Ok(Entry::LiveDir(FileId::of(&s))),
        Ok(_) => Ok(Entry::LiveOther),
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => Ok(Entry::Dangling),
        Err(e) => Err(e),
    }
}

fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}.{n}.{name}", std::process::id())
}

/// Hashes of the names of the entries of `<home>/boxes` (the boxes of a home), without
/// an allocation per entry. A collision can only make sweep *keep* a link it would
/// otherwise have looked at, which is always safe. Unreadable is empty: then nothing is
/// taken on trust.
fn box_name_hashes(boxes_dir: &Path) -> HashSet<u64> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(mut d) = nix::dir::Dir::open(boxes_dir, flags, Mode::empty()) else {
        return HashSet::new();
    };
    d.iter()
        .filter_map(Result::ok)
        .filter(|e| matches!(e.file_type(), Some(nix::dir::Type::Directory) | None))
        .map(|e| name_hash(e.file_name().to_bytes()))
        .collect()
}

/// FNV-1a, 64 bits: a fixed, fast hash of a directory entry name.
fn name_hash(name: &[u8]) -> u64 {
    name.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[allow(clippy::unnecessary_cast)]
fn mode_bits(st: &FileStat) -> u32 {
    (st.st_mode as u32) & 0o7777
}

#[allow(clippy::unnecessary_cast)]
fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    (st.st_mode as u32 & SFlag::S_IFMT.bits() as u32) == kind.bits() as u32
}

fn kind_name(st: &FileStat) -> &'static str {
    const KINDS: &[(SFlag, &str)] = &[
        (SFlag::S_IFDIR, "a directory"),
        (SFlag::S_IFREG, "a regular file"),
        (SFlag::S_IFLNK, "a symlink"),
        (SFlag::S_IFSOCK, "a socket"),
        (SFlag::S_IFIFO, "a FIFO"),
        (SFlag::S_IFCHR, "a character device"),
        (SFlag::S_IFBLK, "a block device"),
    ];
    KINDS.iter().find(|(k, _)| is_kind(st, *k)).map_or("an unknown kind of file", |(_, n)| n)
}
