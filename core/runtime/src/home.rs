//! The home on disk: that nobody else can change it, and that it is ours.
//!
//! Every check is made on an opened descriptor (`O_NOFOLLOW` + `fstat`), never by
//! resolving a path string again after checking it:
//!
//! - [`open_home`] resolves the home component by component from `/`. Each ancestor must
//!   be owned by root or this user and, if group or other can write it, be sticky
//!   (otherwise another user can rename the home away and put their own in its place).
//!   A symlink on the way must be owned by root or this user (in a sticky directory only
//!   its owner can replace it); its target is resolved the same way.
//! - The home itself, and every directory boxsock uses inside it (`boxes/`,
//!   `boxes/<id>/`, `sockets/`, `logs/`, `journal/`), must be owned by this user and
//!   writable by nobody else ([`check_dir_at`]). Otherwise another user could swap
//!   `boxes/<id>` for their own directory and receive every exec.
//! - A home carries the marker [`HOME_MARKER`]. A non-empty directory that has neither
//!   the marker nor a store is not a home and is refused for writing
//!   ([`RuntimeError::NotAHome`]); an empty or missing one becomes a home.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat, mkdirat};

use boxsock_core::trust::{self, Distrust, components};

use super::RuntimeError;

/// The file that marks a directory as a boxsock home (`<home>/.boxsock-home`).
pub const HOME_MARKER: &str = ".boxsock-home";

/// Files at the top of a home that boxsock itself may create before the marker exists.
const HOME_LEVEL_FILES: &[&str] = &["abstract-socket.key", "boxsock.lock"];

/// Symlinks followed while resolving a home, at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn insecure(path: &Path, reason: String) -> RuntimeError {
    RuntimeError::InsecureHome { path: path.to_path_buf(), reason }
}

fn io(op: &'static str, path: &Path, e: Errno) -> RuntimeError {
    RuntimeError::Io { op, path: path.to_path_buf(), source: e.into() }
}

fn kind(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// An ancestor of the home: owned by root or us; writable by others only if sticky (the
/// rule every shared directory is held to, `boxsock_core::trust`).
fn check_ancestor(st: &FileStat, path: &Path) -> Result<(), RuntimeError> {
    let me = euid();
    match trust::check_dir(st, me) {
        Ok(()) => Ok(()),
        Err(Distrust::DirOwner { uid }) => Err(insecure(
            path,
            format!(
                "this ancestor of the home is owned by uid {uid} (neither root nor uid {me}): that user can rename the home away and put their own in its place"
            ),
        )),
        Err(Distrust::DirWritable { mode }) => Err(insecure(
            path,
            format!(
                "this ancestor of the home has mode {mode:o}: group or other can write it and it is not sticky, so another user can rename the home away"
            ),
        )),
        Err(d) => Err(insecure(path, d.explain("the home", me))),
    }
}

/// The home or a directory inside it: owned by us, writable by nobody else.
fn check_own_dir(st: &FileStat, path: &Path, what: &str) -> Result<(), RuntimeError> {
    let me = euid();
    if st.st_uid != me {
        return Err(insecure(
            path,
            format!(
                "{what} is owned by uid {}, not by this user (uid {me}): that user can replace what boxsock keeps there",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(insecure(
            path,
            format!(
                "{what} has mode {:o}: group or other can write it, so another user could swap a box's directory and receive its execs",
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

fn open_root() -> Result<OwnedFd, RuntimeError> {
    nix::fcntl::open("/", crate::sys::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| io("open", Path::new("/"), e))
}

/// The opened home.
#[derive(Debug)]
pub struct OpenedHome {
    /// The home directory, opened `O_RDONLY|O_DIRECTORY`.
    pub fd: OwnedFd,
    /// Directories this open created (outermost first), to remove if the open fails.
    pub created: Vec<PathBuf>,
}

/// Open the absolute path `home`, checking every ancestor and the home itself on opened
/// descriptors. With `create`, missing directories are made 0700 (and listed in
/// [`OpenedHome::created`]); without, a missing home is [`RuntimeError::NoHome`].
pub fn open_home(home: &Path, create: bool) -> Result<OpenedHome, RuntimeError> {
    // A directory this open just made can be removed under it by the failed first open
    // of another process (which removes the home it made, and ancestors left empty):
    // resolve the path again.
    let mut tries = 0;
    loop {
        if let Some(opened) = open_home_once(home, create)? {
            return Ok(opened);
        }
        tries += 1;
        if tries >= 8 {
            return Err(io("create home", home, Errno::ENOENT));
        }
    }
}

/// One resolution of [`open_home`]; `None` when a directory vanished while being made.
fn open_home_once(home: &Path, create: bool) -> Result<Option<OpenedHome>, RuntimeError> {
    debug_assert!(home.is_absolute());
    let mut queue = components(home);
    let mut cur = open_root()?;
    let mut cur_path = PathBuf::from("/");
    let mut created = Vec::new();
    let mut links = 0;
    let mut st = fstat(&cur).map_err(|e| io("inspect", &cur_path, e))?;
    while let Some(name) = queue.pop_front() {
        let next_path = if name == ".." {
            cur_path.parent().unwrap_or(Path::new("/")).to_path_buf()
        } else {
            cur_path.join(&name)
        };
        // Whatever we descend from can change what the home is.
        check_ancestor(&st, &cur_path)?;
        let flags = crate::sys::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(cur.as_fd(), name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(cur.as_fd(), name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) => created.push(next_path.clone()),
                    Err(Errno::EEXIST) => {}
                    Err(Errno::ENOENT) => return Ok(None),
                    Err(e) => return Err(io("create home", &next_path, e)),
                }
                match openat(cur.as_fd(), name.as_os_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => return Ok(None),
                    Err(e) => return Err(io("open home", &next_path, e)),
                }
            }
            Err(Errno::ENOENT) => return Err(RuntimeError::NoHome { path: home.to_path_buf() }),
            Err(e) => return Err(io("open home", &next_path, e)),
        };
        let next_st = fstat(&fd).map_err(|e| io("inspect", &next_path, e))?;
        match kind(&next_st) {
            libc::S_IFLNK => {
                let me = euid();
                if let Err(d) = trust::check_link(&next_st, me) {
                    return Err(insecure(&next_path, d.explain("the home", me)));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(io("resolve home", home, Errno::ELOOP));
                }
                let target = nix::fcntl::readlinkat(cur.as_fd(), name.as_os_str())
                    .map_err(|e| io("read link", &next_path, e))?;
                let target = PathBuf::from(target);
                let mut comps = components(&target);
                if target.is_absolute() {
                    cur = open_root()?;
                    cur_path = PathBuf::from("/");
                    st = fstat(&cur).map_err(|e| io("inspect", &cur_path, e))?;
                }
                comps.extend(queue.drain(..));
                queue = comps;
                // A link to "/" or "." leaves `cur` as the home candidate.
                continue;
            }
            libc::S_IFDIR => {}
            _ => return Err(io("open home", &next_path, Errno::ENOTDIR)),
        }
        cur = fd;
        cur_path = next_path;
        st = next_st;
    }
    check_own_dir(&st, &cur_path, "the home")?;
    let fd = openat(
        cur.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open home", home, e))?;
    Ok(Some(OpenedHome { fd, created }))
}

/// Open the directory `name` inside `parent` (`path` names it in errors), refusing a
/// symlink, a non-directory, or one another user owns or can write. `None` if it does
/// not exist. With `tighten`, group/other read bits are removed (0700).
pub fn check_dir_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    tighten: bool,
) -> Result<Option<OwnedFd>, RuntimeError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            let what = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if kind(&st) == libc::S_IFLNK => {
                    format!("a symlink owned by uid {}", st.st_uid)
                }
                Ok(st) => format!("not a directory (mode {:o}, uid {})", st.st_mode, st.st_uid),
                Err(e) => e.to_string(),
            };
            return Err(insecure(
                path,
                format!(
                    "expected a directory of this user's, found {what}: boxsock never follows it"
                ),
            ));
        }
        Err(e) => return Err(io("open", path, e)),
    };
    let st = fstat(&fd).map_err(|e| io("inspect", path, e))?;
    check_own_dir(&st, path, "this directory")?;
    if tighten && st.st_mode & 0o077 != 0 {
        fchmod(&fd, Mode::from_bits_truncate(0o700)).map_err(|e| io("make 0700", path, e))?;
    }
    Ok(Some(fd))
}

/// [`check_dir_at`], creating the directory 0700 first if it is missing.
pub fn ensure_dir_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
) -> Result<OwnedFd, RuntimeError> {
    if let Some(fd) = check_dir_at(parent, name, path, true)? {
        return Ok(fd);
    }
    match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io("create directory", path, e)),
    }
    check_dir_at(parent, name, path, true)?.ok_or_else(|| io("open", path, Errno::ENOENT))
}

/// Whether `name` exists in `dir` (without following a symlink).
fn exists_at(dir: BorrowedFd<'_>, name: &str) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Up to `n` entry names of `dir` (for messages), and whether there are any.
fn some_entries(dir: BorrowedFd<'_>, path: &Path, n: usize) -> Result<Vec<String>, RuntimeError> {
    let d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("read", path, e))?;
    let mut out = Vec::new();
    for e in d.into_iter() {
        let e = e.map_err(|e| io("read", path, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        out.push(name);
        if out.len() > n {
            break;
        }
    }
    Ok(out)
}

/// What the home holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeKind {
    /// It has our marker (or a store, from before markers existed).
    Home,
    /// It is empty.
    Empty,
}

/// Decide whether the opened directory is a home: the marker (a regular file of ours),
/// else a store, else empty. Anything else is [`RuntimeError::NotAHome`].
///
/// The marker and the store are looked for again *after* the directory is listed: a
/// process making a home writes the marker first, so whatever of a new home the listing
/// shows, the marker is there by the time of the second look. A home being made is thus
/// never taken for someone else's directory, and the refusal never lists the marker or
/// the store it says are missing.
pub fn classify(
    home: BorrowedFd<'_>,
    path: &Path,
    store_name: &str,
) -> Result<HomeKind, RuntimeError> {
    if let Some(k) = marked_home(home, path, store_name)? {
        return Ok(k);
    }
    // Files a strategy may have made in a home before any box (the abstract
    // strategy's key, when `doctor` derived its names) do not make it someone else's.
    let listed = some_entries(home, path, 8)?;
    let entries: Vec<String> =
        listed.into_iter().filter(|n| !HOME_LEVEL_FILES.contains(&n.as_str())).collect();
    if entries.is_empty() {
        return Ok(HomeKind::Empty);
    }
    if let Some(k) = marked_home(home, path, store_name)? {
        return Ok(k);
    }
    // Listed a moment ago and gone now (another process removing a home): not found.
    let entries: Vec<String> =
        entries.into_iter().filter(|n| n != HOME_MARKER && n != store_name).collect();
    if entries.is_empty() {
        return Ok(HomeKind::Empty);
    }
    let mut found = entries.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if entries.len() > 5 {
        found.push_str(", …");
    }
    Err(RuntimeError::NotAHome { path: path.to_path_buf(), found })
}

/// [`HomeKind::Home`] if the marker (a regular file of ours) or a store is there now.
fn marked_home(
    home: BorrowedFd<'_>,
    path: &Path,
    store_name: &str,
) -> Result<Option<HomeKind>, RuntimeError> {
    let marker_path = path.join(HOME_MARKER);
    match exists_at(home, HOME_MARKER).map_err(|e| io("inspect", &marker_path, e))? {
        Some(st) if kind(&st) == libc::S_IFREG && st.st_uid == euid() => {
            return Ok(Some(HomeKind::Home));
        }
        Some(st) => {
            return Err(insecure(
                &marker_path,
                format!(
                    "the home marker is not a regular file of this user's (mode {:o}, uid {})",
                    st.st_mode, st.st_uid
                ),
            ));
        }
        None => {}
    }
    if exists_at(home, store_name).map_err(|e| io("inspect", &path.join(store_name), e))?.is_some()
    {
        return Ok(Some(HomeKind::Home));
    }
    Ok(None)
}

/// How long an open waits for another process that is initialising the same home
/// (making its skeleton and store takes milliseconds; this bounds a stuck one).
pub const INIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The home's initialisation lock: a `flock` on the home directory itself (a descriptor
/// of its own, so closing it releases the lock). A directory can be locked before
/// anything is written into it, so the lock needs no file in a directory that may turn
/// out not to be a home.
///
/// - An open that finds no marker takes it **exclusively**, then decides what the
///   directory is and, if it is empty, makes the home (marker first, `boxes/`, the lock
///   file, the store in WAL mode at the current schema) while holding it. A failed
///   first open removes the home it made before releasing it.
/// - An open that finds the marker, and every read-only open, takes it **shared**: that
///   waits only while a first open is making the home, and never for a runtime (the
///   home lock, decision 0003, is another lock).
#[derive(Debug)]
pub struct InitLock {
    flock: Option<nix::fcntl::Flock<OwnedFd>>,
    /// Held exclusively.
    pub exclusive: bool,
}

impl InitLock {
    /// Release it now (the rest of the open needs no exclusion from first opens).
    pub fn release(&mut self) {
        self.flock = None;
    }

    /// Whether it is still held.
    pub fn held(&self) -> bool {
        self.flock.is_some()
    }
}

/// Whether the home marker is there (whatever it is: [`classify`] checks it).
pub fn has_marker(home: BorrowedFd<'_>) -> bool {
    matches!(exists_at(home, HOME_MARKER), Ok(Some(_)))
}

/// Take the initialisation lock of the opened home `home` ([`InitLock`]), waiting up to
/// `wait` for a process making the home. `None` when the directory was removed while
/// waiting (the failed first open of another process undid the home it made): open the
/// path again.
pub async fn init_lock(
    home: BorrowedFd<'_>,
    path: &Path,
    exclusive: bool,
    wait: std::time::Duration,
) -> Result<Option<InitLock>, RuntimeError> {
    use nix::fcntl::{Flock, FlockArg};
    let fd =
        openat(home, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| io("open home", path, e))?;
    let arg =
        if exclusive { FlockArg::LockExclusiveNonblock } else { FlockArg::LockSharedNonblock };
    let deadline = std::time::Instant::now() + wait;
    let mut step = std::time::Duration::from_millis(1);
    let mut fd = fd;
    let mut waited = false;
    let flock = loop {
        match Flock::lock(fd, arg) {
            Ok(l) => break l,
            Err((f, Errno::EWOULDBLOCK)) => {
                if !waited {
                    tracing::debug!(home = %path.display(), exclusive, "waiting for another process initialising the home");
                    waited = true;
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(RuntimeError::HomeInitialising {
                        home: path.to_path_buf(),
                        waited: wait,
                    });
                }
                fd = f;
                tokio::time::sleep(step.min(deadline - now)).await;
                step = (step * 2).min(std::time::Duration::from_millis(20));
            }
            Err((_, e)) => return Err(io("lock home", path, e)),
        }
    };
    let st = fstat(&*flock).map_err(|e| io("inspect", path, e))?;
    if st.st_nlink == 0 {
        tracing::debug!(home = %path.display(), "the home was removed while this open waited; opening it again");
        return Ok(None);
    }
    Ok(Some(InitLock { flock: Some(flock), exclusive }))
}

/// Write the home marker (`O_CREAT|O_EXCL`, 0600). An existing marker is kept.
pub fn write_marker(home: BorrowedFd<'_>, path: &Path) -> Result<(), RuntimeError> {
    let p = path.join(HOME_MARKER);
    match openat(
        home,
        HOME_MARKER,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => {
            nix::unistd::write(&fd, b"boxsock home\n").map_err(|e| io("write", &p, e))?;
            Ok(())
        }
        Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(io("create", &p, e)),
    }
}

/// Make the home 0700 if group or other can read it (best effort: a read-only file
/// system keeps its mode, with a warning).
pub fn tighten_home(home: BorrowedFd<'_>, path: &Path) {
    if let Ok(st) = fstat(home) {
        if st.st_mode & 0o077 != 0 {
            if let Err(e) = fchmod(home, Mode::from_bits_truncate(0o700)) {
                tracing::warn!(home = %boxsock_core::echo::path(path), error = %e, "cannot make the home 0700");
            }
        }
    }
}

/// Re-check a box's directories (`boxes/`, `boxes/<id>/`, `sockets/`, `logs/`) on
/// descriptors opened from the home's, and make its log 0600 (created if missing, so
/// a backend appending to it never creates it with the umask's mode).
pub fn check_box_dirs(
    home: BorrowedFd<'_>,
    layout: &boxsock_core::layout::BoxLayout,
    id: &boxsock_core::id::BoxId,
) -> Result<(), RuntimeError> {
    // What is missing is left to the caller's own, more specific error (a missing
    // socket directory is the strategy's `MissingSocketDir`); what exists must be ours.
    let Some(boxes) = check_dir_at(home, OsStr::new("boxes"), &layout.boxes_dir(), true)? else {
        return Ok(());
    };
    let Some(dir) =
        check_dir_at(boxes.as_fd(), OsStr::new(id.as_str()), &layout.box_dir(id), true)?
    else {
        return Ok(());
    };
    if check_dir_at(dir.as_fd(), OsStr::new("sockets"), &layout.sockets_dir(id), true)?.is_none() {
        return Ok(());
    }
    let logs = ensure_dir_at(dir.as_fd(), OsStr::new("logs"), &layout.logs_dir(id))?;
    let log = layout.log_file(id);
    let fd = openat(
        logs.as_fd(),
        "box.log",
        OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io("open", &log, e))?;
    let st = fstat(&fd).map_err(|e| io("inspect", &log, e))?;
    if kind(&st) != libc::S_IFREG || st.st_uid != euid() {
        return Err(insecure(
            &log,
            format!(
                "the box log is not a regular file of this user's (mode {:o}, uid {})",
                st.st_mode, st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o777 != 0o600 {
        fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(|e| io("make 0600", &log, e))?;
    }
    Ok(())
}

/// Journal a create of box `id` (`<home>/journal/create.<id>`, `O_EXCL`), before its
/// directory is made. Recovery removes a box directory without a row only when both
/// this entry and the directory's own marker prove that an interrupted create made it.
pub fn journal_create(
    home: BorrowedFd<'_>,
    layout: &boxsock_core::layout::BoxLayout,
    id: &boxsock_core::id::BoxId,
) -> Result<(), RuntimeError> {
    let j = ensure_dir_at(home, OsStr::new("journal"), &layout.journal_dir())?;
    let p = layout.create_journal(id);
    let name = format!("create.{id}");
    openat(
        j.as_fd(),
        name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map(drop)
    .map_err(|e| io("create journal entry", &p, e))
}

/// The create of `id` is over (its row exists, or it was undone).
pub fn journal_done(layout: &boxsock_core::layout::BoxLayout, id: &boxsock_core::id::BoxId) {
    let p = layout.create_journal(id);
    if let Err(e) = std::fs::remove_file(&p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %boxsock_core::echo::path(&p), error = %e, "cannot remove a create journal entry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_home_is_created_0700_and_a_relative_dotdot_resolves() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("a/b/home");
        let h = open_home(&home, true).unwrap();
        assert_eq!(h.created, [d.path().join("a"), d.path().join("a/b"), home.clone()]);
        assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o700);
        let again = open_home(&d.path().join("a/b/../b/home"), false).unwrap();
        assert!(again.created.is_empty());
        assert!(matches!(
            open_home(&d.path().join("missing"), false),
            Err(RuntimeError::NoHome { .. })
        ));
    }

    #[test]
    fn a_group_writable_home_or_non_sticky_ancestor_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o770)).unwrap();
        match open_home(&home, false) {
            Err(RuntimeError::InsecureHome { path, reason }) => {
                assert_eq!(path, home);
                assert!(reason.contains("770"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        match open_home(&home, false) {
            Err(RuntimeError::InsecureHome { path, reason }) => {
                assert_eq!(path, d.path());
                assert!(reason.contains("sticky"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        open_home(&home, false).unwrap();
    }

    #[test]
    fn a_non_empty_directory_without_a_marker_is_not_a_home() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("photos")).unwrap();
        let h = open_home(d.path(), false).unwrap();
        match classify(h.fd.as_fd(), d.path(), "boxsock.db") {
            Err(e @ RuntimeError::NotAHome { .. }) => {
                assert!(e.to_string().contains("photos"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir(d.path().join("photos")).unwrap();
        assert_eq!(classify(h.fd.as_fd(), d.path(), "boxsock.db").unwrap(), HomeKind::Empty);
        write_marker(h.fd.as_fd(), d.path()).unwrap();
        std::fs::create_dir(d.path().join("photos")).unwrap();
        assert_eq!(classify(h.fd.as_fd(), d.path(), "boxsock.db").unwrap(), HomeKind::Home);
    }

    /// Issue 24: a home being made by another process while this one looks at it. The
    /// refusal must never name the marker or the store among the entries it found while
    /// saying the directory has neither (it listed `boxsock.db, .boxsock-home, …` and
    /// then "has neither .boxsock-home nor boxsock.db").
    #[test]
    fn a_refusal_never_says_a_file_is_both_there_and_missing() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // Another process making and unmaking a home's skeleton as fast as it can.
        let maker = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for f in [HOME_MARKER, "boxsock.db", "boxsock.db-journal"] {
                        let _ = std::fs::write(dir.join(f), b"");
                    }
                    let _ = std::fs::create_dir(dir.join("boxes"));
                    for f in [HOME_MARKER, "boxsock.db", "boxsock.db-journal"] {
                        let _ = std::fs::remove_file(dir.join(f));
                    }
                    let _ = std::fs::remove_dir(dir.join("boxes"));
                    rounds += 1;
                }
                rounds
            })
        };
        let h = open_home(&dir, false).unwrap();
        let (mut refusals, mut contradictions) = (0, Vec::new());
        let t0 = std::time::Instant::now();
        // Until enough refusals were seen to have met the race (bounded in time: a
        // loaded machine schedules the two threads coarsely).
        while refusals < 50 && t0.elapsed() < std::time::Duration::from_secs(30) {
            if let Err(e @ RuntimeError::NotAHome { .. }) =
                classify(h.fd.as_fd(), &dir, "boxsock.db")
            {
                refusals += 1;
                let RuntimeError::NotAHome { found, .. } = &e else { unreachable!() };
                if found.split(", ").any(|n| n == HOME_MARKER || n == "boxsock.db") {
                    contradictions.push(e.to_string());
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = maker.join().unwrap();
        eprintln!(
            "{refusals} refusals while the skeleton was made {rounds} times; {} contradictory",
            contradictions.len()
        );
        assert!(refusals > 0, "the race never produced a refusal: the test proves nothing");
        assert!(
            contradictions.is_empty(),
            "{} of {refusals} refusals contradict themselves, e.g. {}",
            contradictions.len(),
            contradictions[0]
        );
    }
}
