//! The home lock: `flock` on `<home>/boxsock.lock`. See
//! `docs/decisions/0003-one-runtime-per-home.md`.
//!
//! - An **exclusive** lock is held for a whole [`LockMode::Exclusive`] runtime's life
//!   (an embedder, a daemon with a health monitor), and briefly for recovery and the
//!   startup sweep. Its holder writes its pid into the file.
//! - A **shared** lock is held for the duration of each mutating operation of a
//!   [`LockMode::Shared`] runtime (the CLI): many such processes work on one home at
//!   once (the store serialises their writes), while recovery — which kills and deletes
//!   what looks abandoned — waits until none of them is mid-operation.
//! - A **read-only** runtime (`Access::ReadOnly`: `ls`, `inspect`) takes no lock and
//!   never waits: it changes nothing, and SQLite's WAL lets it read beside any writer.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::RuntimeError;
use crate::process::ProcessIdentity;

/// How a runtime shares its home with other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Hold the home exclusively for the runtime's lifetime. A second runtime (either
    /// mode) gets [`RuntimeError::HomeBusy`] naming this process's pid, after waiting at
    /// most `lock_wait`.
    Exclusive,
    /// Hold a shared lock only during each mutating operation, so several short-lived
    /// processes (CLI invocations) can use the home at once. Recovery and the sweep run
    /// at open only if the exclusive lock is free at that moment.
    Shared,
}

/// A held flock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _flock: Flock<File>,
}

fn open_lock_file(path: &Path) -> Result<File, RuntimeError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| RuntimeError::Io {
            op: "open lock file",
            path: path.to_path_buf(),
            source: e,
        })?;
    // 0600 whatever created it (an older boxsock under another umask).
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = f.metadata() {
        if m.permissions().mode() & 0o777 != 0o600 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| {
                RuntimeError::Io { op: "make 0600", path: path.to_path_buf(), source: e }
            })?;
        }
    }
    Ok(f)
}

/// The pid recorded in the lock file, if that process is still alive.
fn recorded_pid(path: &Path) -> Option<i32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    let pid: i32 = s.split_whitespace().next()?.parse().ok()?;
    ProcessIdentity::of(pid).ok().map(|_| pid)
}

/// Take the lock at `path`, waiting up to `wait` (polling with a short back-off).
pub async fn acquire(
    home: &Path,
    path: &Path,
    exclusive: bool,
    wait: Option<Duration>,
) -> Result<LockGuard, RuntimeError> {
    let file = open_lock_file(path)?;
    lock_file(home, path, file, exclusive, wait).await
}

async fn lock_file(
    home: &Path,
    path: &Path,
    mut file: File,
    exclusive: bool,
    wait: Option<Duration>,
) -> Result<LockGuard, RuntimeError> {
    let deadline = wait.map(|w| Instant::now() + w);
    let arg =
        if exclusive { FlockArg::LockExclusiveNonblock } else { FlockArg::LockSharedNonblock };
    let mut step = Duration::from_millis(1);
    loop {
        match Flock::lock(file, arg) {
            Ok(mut fl) => {
                if exclusive {
                    // Record the holder. Best effort: the lock is what matters.
                    let _ = fl.set_len(0);
                    let _ = fl.seek(SeekFrom::Start(0));
                    let _ = writeln!(fl, "{}", std::process::id());
                }
                return Ok(LockGuard { _flock: fl });
            }
            Err((f, Errno::EWOULDBLOCK)) => {
                file = f;
                let now = Instant::now();
                match deadline {
                    Some(d) if now < d => {
                        tokio::time::sleep(step.min(d - now)).await;
                        step = (step * 2).min(Duration::from_millis(20));
                    }
                    _ => {
                        return Err(RuntimeError::HomeBusy {
                            home: home.to_path_buf(),
                            pid: recorded_pid(path),
                        });
                    }
                }
            }
            Err((_, e)) => {
                return Err(RuntimeError::Io {
                    op: "lock",
                    path: PathBuf::from(path),
                    source: e.into(),
                });
            }
        }
    }
}

/// A box's operation lock: an exclusive `flock` on the box's directory itself, held by
/// every start, stop and remove of that box for its whole duration (a start through
/// its readiness wait), in every process and every task (a lock belongs to its open
/// file description). Without it, two processes racing on one box launch two agents,
/// or a remove deletes the row of a box another process is starting and leaves its
/// agent running. The descriptor is close-on-exec, so no box process inherits it.
#[derive(Debug)]
pub struct BoxLock {
    _flock: Option<Flock<File>>,
}

/// Take box `id`'s operation lock on its directory `dir`, waiting up to `wait`. A box
/// directory that is gone (a concurrent remove) gives an empty lock: the caller's next
/// read of the record reports the box as gone.
pub async fn acquire_box(dir: &Path, id: &str, wait: Duration) -> Result<BoxLock, RuntimeError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BoxLock { _flock: None }),
        Err(e) => {
            return Err(RuntimeError::Io {
                op: "open to lock",
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    let started = Instant::now();
    let mut step = Duration::from_millis(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(fl) => return Ok(BoxLock { _flock: Some(fl) }),
            Err((f, Errno::EWOULDBLOCK)) => {
                file = f;
                let waited = started.elapsed();
                if waited >= wait {
                    return Err(RuntimeError::BoxBusy { id: id.to_owned(), waited });
                }
                tokio::time::sleep(step.min(wait - waited)).await;
                step = (step * 2).min(Duration::from_millis(20));
            }
            Err((_, e)) => {
                return Err(RuntimeError::Io {
                    op: "lock",
                    path: dir.to_path_buf(),
                    source: e.into(),
                });
            }
        }
    }
}

/// Try the exclusive lock without waiting; `None` if someone holds the home.
pub fn try_exclusive(path: &Path) -> Result<Option<LockGuard>, RuntimeError> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(fl) => Ok(Some(LockGuard { _flock: fl })),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => {
            Err(RuntimeError::Io { op: "lock", path: PathBuf::from(path), source: e.into() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_holders_coexist_and_exclude_the_exclusive_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boxsock.lock");
        let a = acquire(d.path(), &p, false, None).await.unwrap();
        let b = acquire(d.path(), &p, false, None).await.unwrap();
        assert!(try_exclusive(&p).unwrap().is_none());
        assert!(matches!(
            acquire(d.path(), &p, true, None).await,
            Err(RuntimeError::HomeBusy { .. })
        ));
        drop((a, b));
        let x = try_exclusive(&p).unwrap().expect("free once the shared holders are gone");
        drop(x);
        let x = acquire(d.path(), &p, true, None).await.unwrap();
        match acquire(d.path(), &p, false, Some(Duration::from_millis(30))).await {
            Err(RuntimeError::HomeBusy { pid, home }) => {
                assert_eq!(pid, Some(std::process::id() as i32));
                assert_eq!(home, d.path());
            }
            other => panic!("expected HomeBusy, got {other:?}"),
        }
        drop(x);
        acquire(d.path(), &p, false, Some(Duration::from_millis(30))).await.unwrap();
    }
}
