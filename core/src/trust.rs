//! Whether another user can change what a path names: the ownership rule every shared
//! directory boxsock writes into is held to (a strategy's link base, the home), checked
//! on opened descriptors.
//!
//! A directory another user owns, or can write without the sticky bit, lets that user
//! rename what is inside away and put their own in its place; a symlink another user
//! owns lets them point it anywhere. So every ancestor of a directory boxsock uses, and
//! every symlink on the way to it, must be owned by root or the user, and an ancestor
//! writable by group or other must be sticky (like `/tmp`: root-owned, mode 1777).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat};

use crate::echo;
use crate::error::BindingError;

/// Symlinks followed while resolving a path, at most (the kernel's own limit).
pub const MAX_LINKS: usize = 40;

/// Why another user can change what a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// A directory on the way is owned by another user (neither root nor the user).
    DirOwner {
        /// Its owner.
        uid: u32,
    },
    /// A directory on the way is writable by group or other and not sticky.
    DirWritable {
        /// Its mode (permission bits).
        mode: u32,
    },
    /// A symlink on the way is owned by another user.
    LinkOwner {
        /// Its owner.
        uid: u32,
    },
}

impl Distrust {
    /// What another user can do, for an error message about `what` (e.g. "the link
    /// base").
    pub fn explain(&self, what: &str, me: u32) -> String {
        match self {
            Distrust::DirOwner { uid } => format!(
                "this directory on the way to {what} is owned by uid {uid} (neither root nor uid {me}): that user can rename what is inside away and put their own in its place"
            ),
            Distrust::DirWritable { mode } => format!(
                "this directory on the way to {what} has mode {mode:o}: group or other can write it and it is not sticky, so another user can rename what is inside away"
            ),
            Distrust::LinkOwner { uid } => format!(
                "a symlink on the way to {what} is owned by uid {uid} (neither root nor uid {me}): that user can point it elsewhere"
            ),
        }
    }
}

/// The rule for a directory on the way: owned by root or `me`; writable by group or
/// other only if sticky.
pub fn check_dir(st: &FileStat, me: u32) -> Result<(), Distrust> {
    if st.st_uid != 0 && st.st_uid != me {
        return Err(Distrust::DirOwner { uid: st.st_uid });
    }
    if st.st_mode & 0o022 != 0 && st.st_mode & libc::S_ISVTX == 0 {
        return Err(Distrust::DirWritable { mode: st.st_mode & 0o7777 });
    }
    Ok(())
}

/// The rule for a symlink on the way: owned by root or `me` (in a sticky directory only
/// its owner can replace it).
pub fn check_link(st: &FileStat, me: u32) -> Result<(), Distrust> {
    if st.st_uid != 0 && st.st_uid != me {
        return Err(Distrust::LinkOwner { uid: st.st_uid });
    }
    Ok(())
}

/// The components of `p` to resolve one at a time (`..` kept: each is resolved on the
/// descriptor it names, never by string arithmetic).
pub fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn open_root() -> Result<OwnedFd, BindingError> {
    nix::fcntl::open(
        "/",
        crate::sys::path_flag() | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BindingError::errno("open", Path::new("/"), e))
}

/// Open the absolute path `path` as a directory (`O_RDONLY|O_DIRECTORY`), resolving it
/// component by component from `/` on descriptors (`O_PATH|O_NOFOLLOW`): every
/// directory above it must pass [`check_dir`] and every symlink on the way
/// [`check_link`] for uid `me`, or the result is [`BindingError::Insecure`] naming that
/// component and its owner. The directory itself is returned with its `fstat` for the
/// caller's own rule. `what` names it in messages ("the link base").
pub fn open_dir(path: &Path, me: u32, what: &str) -> Result<(OwnedFd, FileStat), BindingError> {
    if !path.is_absolute() {
        return Err(BindingError::Invalid {
            what: what.into(),
            reason: format!("{} is not an absolute path", echo::path(path)),
        });
    }
    let distrust = |at: &Path, d: Distrust| BindingError::Insecure {
        path: at.to_path_buf(),
        reason: d.explain(what, me),
    };
    let mut queue = components(path);
    let mut cur = open_root()?;
    let mut cur_path = PathBuf::from("/");
    let mut st = fstat(&cur).map_err(|e| BindingError::errno("stat", &cur_path, e))?;
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let next_path = if name == ".." {
            cur_path.parent().unwrap_or(Path::new("/")).to_path_buf()
        } else {
            cur_path.join(&name)
        };
        // Whatever we descend from can change what the path names.
        check_dir(&st, me).map_err(|d| distrust(&cur_path, d))?;
        let flags = crate::sys::path_flag() | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(cur.as_fd(), name.as_os_str(), flags, Mode::empty())
            .map_err(|e| BindingError::errno("open", &next_path, e))?;
        let next_st = fstat(&fd).map_err(|e| BindingError::errno("stat", &next_path, e))?;
        match next_st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                check_link(&next_st, me).map_err(|d| distrust(&next_path, d))?;
                links += 1;
                if links > MAX_LINKS {
                    return Err(BindingError::errno("resolve", path, Errno::ELOOP));
                }
                let target = PathBuf::from(
                    nix::fcntl::readlinkat(cur.as_fd(), name.as_os_str())
                        .map_err(|e| BindingError::errno("read link", &next_path, e))?,
                );
                let mut comps = components(&target);
                if target.is_absolute() {
                    cur = open_root()?;
                    cur_path = PathBuf::from("/");
                    st = fstat(&cur).map_err(|e| BindingError::errno("stat", &cur_path, e))?;
                }
                comps.extend(queue.drain(..));
                queue = comps;
                continue;
            }
            libc::S_IFDIR => {}
            _ => return Err(BindingError::errno("open", &next_path, Errno::ENOTDIR)),
        }
        cur = fd;
        cur_path = next_path;
        st = next_st;
    }
    let fd = openat(
        cur.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BindingError::errno("open", path, e))?;
    Ok((fd, st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_plain_directory_opens_and_a_loop_is_eloop() {
        let t = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::symlink(&d, t.path().join("l")).unwrap();
        let (_, st) = open_dir(&t.path().join("l"), me, "the base").unwrap();
        assert_eq!(st.st_ino, fstat(&open_dir(&d, me, "the base").unwrap().0).unwrap().st_ino);
        std::os::unix::fs::symlink("loop", t.path().join("loop")).unwrap();
        assert!(matches!(open_dir(&t.path().join("loop"), me, "x"), Err(BindingError::Io { .. })));
        // A writable ancestor without the sticky bit is refused, naming it.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        match open_dir(&d, me, "the base") {
            Err(BindingError::Insecure { path, reason }) => {
                assert_eq!(path, t.path());
                assert!(reason.contains("mode 777"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open_dir(&d, me, "the base").is_ok());
    }
}
