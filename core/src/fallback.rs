//! A strategy's directory in a shared base (`/tmp`), and the fallback that keeps another
//! user from blocking it: the one mechanism every strategy with a shared directory uses
//! (short-symlink's per-user directory, xdg-hashed's root without `XDG_RUNTIME_DIR`).
//!
//! [`SharedDir`] names `<base>/<stem>-<uid>`, a predictable name anyone can take first.
//! [`SharedDir::open`] opens it on a descriptor and checks it (a real directory of the
//! owner; group and other bits repaired to 0700). When anything else stands there (a
//! directory, file or symlink of another user), it is neither used nor touched: a fresh
//! directory `<base>/<stem>.<10 random base62>` is made (mode 0700, `mkdirat` of a new
//! name, so nobody else's) and recorded in the home (`<home>/binding-dir`, or
//! `binding-dir.<stem>` for another stem). The recorded fallback is used from then on by
//! every process of the home. Its name is public (`ls /tmp`), so when it is missing (a
//! cleaner, a reboot) or refused (squatted after the cleaner), it is **replaced** by
//! another fresh one and re-recorded, never made again by name: no state lets another
//! user keep the owner's boxes from running. Nothing found at either name is removed.
//!
//! The record is changed only under an exclusive `flock` on `<home>/binding-dir.lock`,
//! as a compare-and-swap: a process replaces the record only if it still holds what that
//! process found wrong, so concurrent processes of one home agree on one directory (the
//! losers use the winner's). The record is one line (the directory) followed by `# `
//! notes saying why it was chosen, shown by `boxsock doctor`.
//!
//! A fallback is exactly as long as the worst-case predictable name (`<stem>-<10-digit
//! uid>`), so every address that fits the budget still fits.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use rand::Rng;

use crate::atomic::AtomicWrite;
use crate::binding::StrategyConfig;
use crate::echo;
use crate::error::BindingError;

/// Random characters in a fallback name (about 59 bits).
pub const RANDOM_LEN: usize = 10;

/// The record of the default stem (the short-symlink per-user directory).
pub const RECORD: &str = "binding-dir";

/// The lock under which records are changed.
pub const LOCK: &str = "binding-dir.lock";

/// Notes kept in a record (the newest first).
const MAX_NOTES: usize = 4;

/// How many times [`SharedDir::open`] re-reads a record another process changed.
const MAX_ATTEMPTS: usize = 32;

/// How long a record change waits for another process's change.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The file name of the record of `stem` in a home whose strategies use `prefix`.
pub fn record_name(stem: &str, prefix: &str) -> String {
    if stem == prefix { RECORD.to_owned() } else { format!("{RECORD}.{stem}") }
}

/// A home's record of a fallback: the directory and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's file.
    pub file: PathBuf,
    /// The directory it names (its first line).
    pub dir: PathBuf,
    /// Why (its `# ` lines, the newest first).
    pub notes: Vec<String>,
    raw: String,
}

/// Read the record `name` of `home`; `None` when there is none (or it is unreadable).
pub fn read_record(home: &Path, name: &str) -> Option<Record> {
    let file = home.join(name);
    let raw = std::fs::read_to_string(&file).ok()?;
    let mut lines = raw.lines();
    let dir = PathBuf::from(lines.next().unwrap_or(""));
    let notes = lines.filter_map(|l| l.strip_prefix("# ")).map(str::to_owned).collect();
    Some(Record { file, dir, notes, raw })
}

/// Every fallback record of `home` (`binding-dir`, `binding-dir.<stem>`), by file name.
pub fn records(home: &Path) -> Vec<Record> {
    let Ok(rd) = std::fs::read_dir(home) else { return Vec::new() };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n == RECORD || (n.starts_with(&format!("{RECORD}.")) && n != LOCK))
        .collect();
    names.sort();
    names.iter().filter_map(|n| read_record(home, n)).collect()
}

/// What stands at a shared directory's name, seen without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A real directory of the owner.
    Usable,
    /// Nothing.
    Missing,
    /// Something the owner must not use; the reason names what and whose.
    Refused(String),
}

/// Look at `path` for `uid` without opening or changing it (for `doctor`).
pub fn look(path: &Path, uid: u32) -> Found {
    match nix::sys::stat::lstat(path) {
        Err(Errno::ENOENT) => Found::Missing,
        Err(e) => Found::Refused(format!("cannot be examined ({e})")),
        Ok(st) => match refusal(&st, uid, || None) {
            None => Found::Usable,
            Some(r) => Found::Refused(r),
        },
    }
}

/// Why `st` (of a shared directory's entry, not followed) cannot be used by `uid`.
fn refusal(
    st: &FileStat,
    uid: u32,
    link_target: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let mode = st.st_mode & 0o7777;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR if st.st_uid == uid => return None,
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => {
            let to = link_target().map(|t| format!(" to {t}")).unwrap_or_default();
            return Some(format!("it is a symlink{to} owned by uid {}", st.st_uid));
        }
        libc::S_IFREG => "a regular file",
        libc::S_IFSOCK => "a socket",
        libc::S_IFIFO => "a FIFO",
        _ => "not a directory",
    };
    Some(format!(
        "it is {kind} owned by uid {} (mode {mode:04o}), not a directory of uid {uid}",
        st.st_uid
    ))
}

/// What [`SharedDir::open`] found at one name.
enum Probe {
    Dir(OwnedFd),
    Missing,
    Refused(String),
}

/// A directory opened by [`SharedDir::open`]: held, checked, and where it is.
#[derive(Debug)]
pub struct Opened {
    /// The directory (`O_RDONLY|O_DIRECTORY`), checked on this descriptor.
    pub fd: OwnedFd,
    /// Its path: the predictable name or the home's recorded fallback.
    pub path: PathBuf,
}

/// A strategy's per-user directory in a shared base, with the home's fallback. See the
/// module documentation.
#[derive(Debug)]
pub struct SharedDir {
    base: PathBuf,
    stem: String,
    uid: u32,
    read_only: bool,
    record: String,
    /// home → the directory last opened (or read from its record) for it.
    in_use: RwLock<HashMap<PathBuf, PathBuf>>,
    last: RwLock<Option<PathBuf>>,
}

impl SharedDir {
    /// `<base>/<stem>-<uid>` for `config` (its uid, prefix and `read_only`). The stem is
    /// a plain name (checked by the strategy); nothing is touched on disk.
    pub fn new(config: &StrategyConfig, base: &Path, stem: &str) -> Self {
        SharedDir {
            base: base.to_owned(),
            stem: stem.to_owned(),
            uid: config.uid,
            read_only: config.read_only,
            record: record_name(stem, &config.prefix),
            in_use: RwLock::new(HashMap::new()),
            last: RwLock::new(None),
        }
    }

    /// `<base>/<stem>-<uid>`, the predictable name.
    pub fn predictable(&self) -> PathBuf {
        self.base.join(format!("{}-{}", self.stem, self.uid))
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The file name of this directory's record in a home.
    pub fn record_name(&self) -> &str {
        &self.record
    }

    /// Whether `p` has the shape of a fallback of this directory: directly in the base,
    /// named `<stem>.<10 base62>`.
    pub fn is_fallback(&self, p: &Path) -> bool {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str()))
        else {
            return false;
        };
        let Some(rest) = name.strip_prefix(self.stem.as_str()).and_then(|r| r.strip_prefix('.'))
        else {
            return false;
        };
        parent == self.base
            && rest.len() == RANDOM_LEN
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// The home's valid record, if any.
    fn recorded(&self, home: &Path) -> Option<Record> {
        read_record(home, &self.record).filter(|r| self.is_fallback(&r.dir))
    }

    /// The directory `home` uses: the one last opened for it, else its recorded
    /// fallback, else the predictable name. Reads the record at most once per home
    /// (addresses are derived from it, and must not cost a read each).
    pub fn path_for(&self, home: &Path) -> PathBuf {
        if let Some(p) = self.in_use.read().unwrap_or_else(PoisonError::into_inner).get(home) {
            return p.clone();
        }
        let p = self.recorded(home).map_or_else(|| self.predictable(), |r| r.dir);
        self.remember(home, &p);
        p
    }

    /// The directory last used for any home (the predictable name before any).
    pub fn last_used(&self) -> PathBuf {
        self.last
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| self.predictable())
    }

    fn remember(&self, home: &Path, dir: &Path) {
        self.in_use
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(home.to_owned(), dir.to_owned());
        *self.last.write().unwrap_or_else(PoisonError::into_inner) = Some(dir.to_owned());
    }

    /// Open the base on descriptors (every ancestor held to the ownership rule) and
    /// check it keeps others from renaming entries away: owned by root or the owner,
    /// sticky if others can write it. No fallback helps against a base like that.
    fn open_base(&self) -> Result<OwnedFd, BindingError> {
        let (fd, st) = crate::trust::open_dir(&self.base, self.uid, "the link base")?;
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(BindingError::Insecure {
                path: self.base.clone(),
                reason: format!(
                    "the base directory has mode {mode:04o}: writable by other users without the sticky bit, so they could rename {}-{} away and put their own in its place",
                    self.stem, self.uid
                ),
            });
        }
        if st.st_uid != 0 && st.st_uid != self.uid {
            return Err(BindingError::Insecure {
                path: self.base.clone(),
                reason: format!(
                    "the base directory is owned by uid {}, neither root nor uid {}",
                    st.st_uid, self.uid
                ),
            });
        }
        Ok(fd)
    }

    /// Open `name` in the base: with `create`, make it (0700) first if missing. A
    /// directory of the owner is checked and its mode repaired; anything else is
    /// [`Probe::Refused`], untouched.
    fn probe(
        &self,
        base: BorrowedFd<'_>,
        path: &Path,
        create: bool,
    ) -> Result<Probe, BindingError> {
        let name = path.file_name().ok_or_else(|| BindingError::Invalid {
            what: "shared directory".into(),
            reason: format!("{} has no name", echo::path(path)),
        })?;
        if create {
            match nix::sys::stat::mkdirat(base, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => tracing::debug!(path = %echo::path(path), "created shared directory"),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(BindingError::errno("create directory", path, e)),
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(base, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Probe::Missing),
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EMLINK | Errno::EACCES) => {
                return match nix::sys::stat::fstatat(base, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        let target = || {
                            nix::fcntl::readlinkat(base, name)
                                .ok()
                                .map(|t| echo::path(Path::new(&t)).to_string())
                        };
                        Ok(Probe::Refused(
                            refusal(&st, self.uid, target)
                                .unwrap_or_else(|| "it cannot be opened".into()),
                        ))
                    }
                    Err(Errno::ENOENT) => Ok(Probe::Missing),
                    Err(e) => Err(BindingError::errno("stat", path, e)),
                };
            }
            Err(e) => return Err(BindingError::errno("open", path, e)),
        };
        let st = nix::sys::stat::fstat(&fd).map_err(|e| BindingError::errno("stat", path, e))?;
        if let Some(r) = refusal(&st, self.uid, || None) {
            return Ok(Probe::Refused(r));
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            if self.read_only {
                return Ok(Probe::Refused(format!(
                    "it has mode {mode:04o} (open to group or other)"
                )));
            }
            tracing::warn!(path = %echo::path(path), mode = format_args!("{mode:04o}"), "shared directory was open to group/other; repairing to 0700");
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700))
                .map_err(|e| BindingError::errno("repair mode (chmod 0700) of", path, e))?;
        }
        Ok(Probe::Dir(fd))
    }

    /// Open the directory `home` uses, checked on the descriptor: its recorded fallback
    /// if it has one, else the predictable name. With `create` (and not read-only), a
    /// missing predictable directory is made, and a refused one — or a recorded
    /// fallback missing or refused — is replaced by a fresh fallback, recorded. Without
    /// `create`, a missing or refused directory is `Ok(None)` (nothing of ours is
    /// there). Errors: the base is unusable ([`BindingError::Insecure`] naming it), I/O.
    pub fn open(&self, home: &Path, create: bool) -> Result<Option<Opened>, BindingError> {
        let base = self.open_base()?;
        let create = create && !self.read_only;
        for _ in 0..MAX_ATTEMPTS {
            let raw = read_record(home, &self.record);
            let valid = raw.clone().filter(|r| self.is_fallback(&r.dir));
            let (path, recorded) = match &valid {
                Some(r) => (r.dir.clone(), true),
                None => (self.predictable(), false),
            };
            // A recorded fallback is never made again by name: its name is public.
            let note = match self.probe(base.as_fd(), &path, create && !recorded)? {
                Probe::Dir(fd) => {
                    self.remember(home, &path);
                    return Ok(Some(Opened { fd, path }));
                }
                Probe::Missing if !create => return Ok(None),
                Probe::Refused(reason) if !create => {
                    tracing::debug!(path = %echo::path(&path), reason, "shared directory not usable; nothing of ours there");
                    return Ok(None);
                }
                Probe::Missing => format!(
                    "replaced the recorded fallback {}: it was missing (a cleaner or a reboot?)",
                    echo::path(&path)
                ),
                Probe::Refused(reason) if recorded => {
                    format!(
                        "replaced the recorded fallback {}, which was refused: {reason}",
                        echo::path(&path)
                    )
                }
                Probe::Refused(reason) => format!("{} was refused: {reason}", echo::path(&path)),
            };
            if let Some(made) =
                self.replace(home, base.as_fd(), raw.as_ref().map(|r| r.raw.as_str()), &note)?
            {
                self.remember(home, &made.path);
                return Ok(Some(made));
            }
        }
        Err(BindingError::io(
            "choose a fallback directory (the record kept changing)",
            home.join(&self.record),
            std::io::Error::from(std::io::ErrorKind::ResourceBusy),
        ))
    }

    /// Under the home's record lock: if the record still reads `expected`, make a fresh
    /// fallback, record it with `note`, and return it opened. Otherwise (`None`) another
    /// process got there first, and the caller reads its choice.
    fn replace(
        &self,
        home: &Path,
        base: BorrowedFd<'_>,
        expected: Option<&str>,
        note: &str,
    ) -> Result<Option<Opened>, BindingError> {
        let record = home.join(&self.record);
        let _lock = RecordLock::acquire(&home.join(LOCK))?;
        let now = read_record(home, &self.record);
        if now.as_ref().map(|r| r.raw.as_str()) != expected {
            return Ok(None);
        }
        let made = self.make_fallback(base)?;
        // Held before it is recorded: what the caller uses is the directory made here.
        let fd = match self.probe(base, &made, false)? {
            Probe::Dir(fd) => fd,
            // Removed (a cleaner) or replaced within moments: the caller tries again.
            Probe::Missing | Probe::Refused(_) => return Ok(None),
        };
        let mut notes = vec![note.to_owned()];
        notes.extend(now.map(|r| r.notes).unwrap_or_default());
        notes.truncate(MAX_NOTES);
        let mut text = format!("{}\n", made.display());
        for n in &notes {
            text.push_str(&format!("# {}\n", n.replace('\n', " ")));
        }
        // No fsync: a record lost or torn by a crash is read as no record, and the next
        // process falls back again.
        let written = AtomicWrite::new(0o600).without_fsync().write(&record, text.as_bytes());
        if let Err(e) = written {
            // Made a moment ago, under the lock, by this process: ours to remove.
            let _ = nix::unistd::unlinkat(
                base,
                made.file_name().unwrap_or_default(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
            return Err(BindingError::io("record the fallback in", record, e.source));
        }
        tracing::warn!(
            predictable = %echo::path(&self.predictable()),
            fallback = %echo::path(&made),
            record = %echo::path(&record),
            why = note,
            "using a fresh unpredictable private directory"
        );
        Ok(Some(Opened { fd, path: made }))
    }

    /// A fresh fallback (mkdtemp semantics: `mkdirat` 0700 of a new random name,
    /// retried on `EEXIST`) in the opened base.
    fn make_fallback(&self, base: BorrowedFd<'_>) -> Result<PathBuf, BindingError> {
        const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        for _ in 0..16 {
            let suffix: String =
                (0..RANDOM_LEN).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect();
            let name = format!("{}.{suffix}", self.stem);
            match nix::sys::stat::mkdirat(base, name.as_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) => return Ok(self.base.join(name)),
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(BindingError::errno("create fallback directory in", &self.base, e));
                }
            }
        }
        Err(BindingError::errno("create fallback directory in", &self.base, Errno::EEXIST))
    }
}

/// An exclusive `flock` on `<home>/binding-dir.lock`, waited for at most 5 s.
struct RecordLock {
    file: std::fs::File,
}

impl RecordLock {
    fn acquire(path: &Path) -> Result<Self, BindingError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| BindingError::io("open", path, e))?;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(RecordLock { file });
            }
            match Errno::last() {
                Errno::EINTR => {}
                Errno::EWOULDBLOCK if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
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

impl Drop for RecordLock {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor this guard owns; no memory is passed.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn world() -> (tempfile::TempDir, PathBuf, SharedDir) {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        let base = t.path().join("base");
        std::fs::create_dir(&home).unwrap();
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = StrategyConfig::default();
        let s = SharedDir::new(&config, &base, "boxsock");
        (t, home, s)
    }

    #[test]
    fn the_predictable_dir_is_used_until_it_is_refused_then_a_recorded_fallback() {
        let (_t, home, s) = world();
        let o = s.open(&home, true).unwrap().unwrap();
        assert_eq!(o.path, s.predictable());
        assert!(read_record(&home, RECORD).is_none());
        // Something of ours that is not a directory stands there now: never used.
        std::fs::remove_dir(s.predictable()).unwrap();
        std::fs::write(s.predictable(), b"x").unwrap();
        let o = s.open(&home, true).unwrap().unwrap();
        assert!(s.is_fallback(&o.path), "{}", o.path.display());
        let r = read_record(&home, RECORD).unwrap();
        assert_eq!(r.dir, o.path);
        assert!(
            r.notes[0].contains("was refused") && r.notes[0].contains("a regular file"),
            "{:?}",
            r.notes
        );
        assert_eq!(std::fs::read(s.predictable()).unwrap(), b"x", "the refused entry was touched");
        assert_eq!(s.path_for(&home), o.path);
        // The fallback removed (a cleaner) and the name taken by a file: replaced by a
        // fresh one, the taken name left alone.
        std::fs::remove_dir(&o.path).unwrap();
        std::fs::write(&o.path, b"y").unwrap();
        let o2 = s.open(&home, true).unwrap().unwrap();
        assert!(s.is_fallback(&o2.path) && o2.path != o.path);
        let r = read_record(&home, RECORD).unwrap();
        assert!(
            r.notes[0].contains("replaced the recorded fallback") && r.notes[0].contains("refused"),
            "{:?}",
            r.notes
        );
        assert!(r.notes[1].contains("was refused"), "{:?}", r.notes);
        assert_eq!(std::fs::read(&o.path).unwrap(), b"y");
        // Missing: replaced too, never made again by name.
        std::fs::remove_dir(&o2.path).unwrap();
        let o3 = s.open(&home, true).unwrap().unwrap();
        assert!(o3.path != o2.path && !o2.path.exists());
        assert!(read_record(&home, RECORD).unwrap().notes[0].contains("missing"));
        // Without create, a missing recorded fallback is nothing of ours.
        std::fs::remove_dir(&o3.path).unwrap();
        assert!(s.open(&home, false).unwrap().is_none());
    }

    #[test]
    fn a_record_someone_else_changed_is_not_replaced_again() {
        let (_t, home, s) = world();
        std::fs::write(s.predictable(), b"x").unwrap();
        let base = s.open_base().unwrap();
        s.replace(&home, base.as_fd(), None, "first").unwrap();
        let first = read_record(&home, RECORD).unwrap();
        // A second process that also found no record loses: the record stays.
        s.replace(&home, base.as_fd(), None, "second").unwrap();
        assert_eq!(read_record(&home, RECORD).unwrap(), first);
        let dirs = std::fs::read_dir(s.base())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(dirs, 1, "a losing process made a directory");
    }

    #[test]
    fn concurrent_processes_of_one_home_agree_on_one_fallback() {
        let (_t, home, s) = world();
        let base = s.base().to_owned();
        std::fs::write(s.predictable(), b"x").unwrap();
        // Separate instances, as separate processes have (the record lock is an `flock`
        // on a file each opens: separate open file descriptions contend in one process).
        let race = |home: &Path| {
            let barrier = std::sync::Barrier::new(16);
            std::thread::scope(|sc| {
                let hs: Vec<_> = (0..16)
                    .map(|_| {
                        sc.spawn(|| {
                            let me = SharedDir::new(&StrategyConfig::default(), &base, "boxsock");
                            barrier.wait();
                            me.open(home, true).unwrap().unwrap().path
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
            })
        };
        let first = race(&home);
        assert!(first.iter().all(|p| *p == first[0]) && s.is_fallback(&first[0]), "{first:?}");
        // The fallback removed (a cleaner): all agree on one replacement.
        std::fs::remove_dir(&first[0]).unwrap();
        let second = race(&home);
        assert!(second.iter().all(|p| *p == second[0]) && second[0] != first[0], "{second:?}");
        let dirs: Vec<_> =
            std::fs::read_dir(&base).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
        assert_eq!(dirs.len(), 1, "a losing process made a directory: {dirs:?}");
    }

    #[test]
    fn read_only_changes_nothing() {
        let (_t, home, _) = world();
        let config = StrategyConfig { read_only: true, ..StrategyConfig::default() };
        let base = home.parent().unwrap().join("base");
        let s = SharedDir::new(&config, &base, "boxsock");
        std::fs::write(s.predictable(), b"x").unwrap();
        assert!(s.open(&home, true).unwrap().is_none());
        assert!(read_record(&home, RECORD).is_none() && !home.join(LOCK).exists());
        assert!(
            matches!(look(&s.predictable(), config.uid), Found::Refused(r) if r.contains("a regular file"))
        );
    }
}
