//! Volumes (`-v HOST_DIR:GUEST_PATH[:ro]`) as bind mounts in the box's root, made so
//! that neither side can be redirected by a symlink (decision 0025).
//!
//! **The host side is opened once, before the fork** ([`prepare`]): the directory is
//! opened with `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (the runtime
//! stored it canonical at create, so any symlink on its path now is a swap: the start
//! fails naming it), and that descriptor is cloned into a detached mount
//! (`open_tree(OPEN_TREE_CLONE)`), made `nosuid,nodev` (and read-only for `:ro`) and
//! private with `mount_setattr`. Nothing later resolves the host path again.
//!
//! **The guest side is resolved inside the box's root, in the child** ([`mount_all`]),
//! after the overlay and the box's other mounts and before `pivot_root`: each prefix of
//! the guest path is opened with `openat2(RESOLVE_IN_ROOT)` from the merged root, so a
//! symlink in the image or the upper (`/data -> /etc`, `../../..`) resolves as it would
//! inside the box, never to the host's tree; a missing component is made with
//! `mkdirat` in its resolved parent (never through a symlink; in the overlay that is the
//! box's upper, never a lower). The detached mount is then moved onto the resolved
//! descriptor (`move_mount`), with no path in between.
//!
//! Volumes are mounted parents first (by depth), so a nested volume's mount point is
//! made in its parent volume, as docker does (and as libkrun does, decision 0022).
//! The bind is not recursive: mounts below the host directory are not shown.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use boxsock_core::echo;
use boxsock_core::settings::Volume;

use crate::child::fail;

/// The guest directory that holds the agent: no volume may cover it.
pub const RESERVED: &str = "/.boxsock";

/// Why a volume cannot be prepared (before the fork).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The host directory cannot be opened without following a symlink (it was replaced
    /// by one since create, or it is gone).
    #[error(
        "volume {volume}: cannot open the host directory {path} without following a \
         symlink: {source} (was it replaced since the box was created?)"
    )]
    OpenHost {
        /// The volume, quoted.
        volume: String,
        /// The host directory, quoted.
        path: String,
        /// The error of `openat2`.
        source: io::Error,
    },
    /// The detached mount of the host directory cannot be made.
    #[error("volume {volume}: cannot {what} of the host directory {path}: {source}")]
    Clone {
        /// The volume, quoted.
        volume: String,
        /// The host directory, quoted.
        path: String,
        /// The step (`clone a mount`, `set the mount's flags`).
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A path holds a NUL byte, which no system call can carry.
    #[error("volume {volume}: a path holds a NUL byte")]
    Nul {
        /// The volume, quoted.
        volume: String,
    },
}

/// One volume, ready for the child.
#[derive(Debug)]
pub struct Prepared {
    /// As root: the detached mount of the host directory (flags already set).
    tree: Option<OwnedFd>,
    /// Rootless: the host directory, held open, cloned in the child (see [`prepare`]).
    host: Option<HostSide>,
    read_only: bool,
    /// Each prefix of the guest path, relative to the root: `a`, `a/b`, `a/b/c`.
    prefixes: Vec<CString>,
    /// Each component: `a`, `b`, `c`.
    names: Vec<CString>,
}

/// A rootless volume's host side: the directory opened before the fork, its path to
/// open again in the child and the identity the child's open must have.
#[derive(Debug)]
struct HostSide {
    path: CString,
    dev: u64,
    ino: u64,
    /// Held so that the directory (its inode) stays what was checked.
    _held: OwnedFd,
}

/// The guest path's components (it is absolute and plain: `Volume::check`).
fn components(guest: &Path) -> Vec<&std::ffi::OsStr> {
    guest
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Whether `guest` is [`RESERVED`] or beneath it.
pub fn reserved(guest: &Path) -> bool {
    components(guest).first().is_some_and(|c| c.as_bytes() == &RESERVED.as_bytes()[1..])
}

/// Open each volume's host directory and clone it into a detached mount, in mount
/// order (parents first). See the module documentation.
///
/// `rootless`: cloning a mount needs `CAP_SYS_ADMIN` over the mount namespace, which a
/// user who is not root has only in the box's own. The directory is opened here all the
/// same (no symlink followed) and its identity kept; the child, in its own user and
/// mount namespaces, opens the same path again without following a symlink, requires
/// the same device and inode (a swap in between fails the start), and clones that
/// (decision 0026).
pub fn prepare(volumes: &[Volume], rootless: bool) -> Result<Vec<Prepared>, VolumeError> {
    let mut ordered: Vec<&Volume> = volumes.iter().collect();
    ordered.sort_by_key(|v| components(&v.guest).len());
    ordered.into_iter().map(|v| prepare_one(v, rootless)).collect()
}

fn prepare_one(v: &Volume, rootless: bool) -> Result<Prepared, VolumeError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let volume = echo::echo(&v.to_string()).to_string();
    let path = echo::path(&v.host).to_string();
    let nul = || VolumeError::Nul { volume: volume.clone() };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let host = nix::fcntl::openat2(nix::fcntl::AT_FDCWD, &v.host, how).map_err(|e| {
        VolumeError::OpenHost { volume: volume.clone(), path: path.clone(), source: e.into() }
    })?;
    let clone_err = |what, source| VolumeError::Clone {
        volume: volume.clone(),
        path: path.clone(),
        what,
        source,
    };
    let (tree, host) = if rootless {
        let st = nix::sys::stat::fstat(&host).map_err(|e| clone_err("stat", e.into()))?;
        let cpath = CString::new(v.host.as_os_str().as_bytes()).map_err(|_| nul())?;
        let side = HostSide { path: cpath, dev: st.st_dev, ino: st.st_ino, _held: host };
        (None, Some(side))
    } else {
        let tree = clone_tree(host.as_raw_fd()).map_err(|e| clone_err("clone a mount", e))?;
        set_flags(tree.as_raw_fd(), v.read_only)
            .map_err(|e| clone_err("set the mount's flags", e))?;
        (Some(tree), None)
    };
    let names = components(&v.guest);
    let mut prefixes = Vec::with_capacity(names.len());
    let mut prefix = PathBuf::new();
    for n in &names {
        prefix.push(n);
        prefixes.push(CString::new(prefix.as_os_str().as_bytes()).map_err(|_| nul())?);
    }
    let names = names
        .iter()
        .map(|n| CString::new(n.as_bytes()).map_err(|_| nul()))
        .collect::<Result<_, _>>()?;
    Ok(Prepared { tree, host, read_only: v.read_only, prefixes, names })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE)`: a detached copy of the mount at `fd`.
fn clone_tree(fd: RawFd) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: open_tree(2) on a descriptor we hold and a static empty path.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, fd, c"".as_ptr(), flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `nosuid,nodev` (plus `ro`), private, on the detached mount `fd`.
fn set_flags(fd: RawFd, read_only: bool) -> io::Result<()> {
    let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    // SAFETY: mount_attr is plain data; all-zero is a valid value.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = set;
    attr.propagation = libc::MS_PRIVATE;
    // SAFETY: mount_setattr(2) on a descriptor we hold, a static empty path and a
    // mount_attr of ours with its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// In the child, between fork and exec: resolve (and make) each guest path inside the
/// root mounted at `root` and move its volume there. Raw system calls only.
pub fn mount_all(root: &std::ffi::CStr, volumes: &[Prepared]) -> io::Result<()> {
    if volumes.is_empty() {
        return Ok(());
    }
    // SAFETY: open(2) of a NUL-terminated path built before the fork.
    let root_fd =
        unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if root_fd == -1 {
        return Err(fail("open the box's root for its volumes"));
    }
    let r = volumes.iter().try_for_each(|v| mount_one(root_fd, v));
    close(root_fd);
    r
}

fn close(fd: RawFd) {
    // SAFETY: closes a descriptor opened in the child by this module.
    unsafe { libc::close(fd) };
}

/// `openat2(root, prefix, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn open_in_root(root: RawFd, prefix: &std::ffi::CStr) -> RawFd {
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2(2) with a descriptor opened here, a NUL-terminated path built
    // before the fork and an open_how of ours with its size.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            prefix.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as RawFd
    }
}

fn mount_one(root: RawFd, v: &Prepared) -> io::Result<()> {
    let mut parent = root;
    for (prefix, name) in v.prefixes.iter().zip(&v.names) {
        let mut fd = open_in_root(root, prefix);
        if fd == -1 && errno() == libc::ENOENT {
            // SAFETY: mkdirat(2) of one component in a directory resolved inside the
            // root (it does not follow a symlink in that last component).
            let r = unsafe { libc::mkdirat(parent, name.as_ptr(), 0o755) };
            if r == -1 && errno() != libc::EEXIST {
                name_path(prefix);
                let e = fail("create a volume's guest path");
                release(parent, root);
                return Err(e);
            }
            fd = open_in_root(root, prefix);
        }
        if fd == -1 {
            // A dangling symlink (it names nothing inside the root), or not a directory.
            name_path(prefix);
            let e = fail("open a volume's guest path inside the box's root");
            release(parent, root);
            return Err(e);
        }
        release(parent, root);
        parent = fd;
    }
    let tree = match (&v.tree, &v.host) {
        (Some(tree), _) => tree.as_raw_fd(),
        (None, Some(host)) => match clone_in_child(host, v.read_only) {
            Ok(fd) => fd,
            Err(e) => {
                release(parent, root);
                return Err(e);
            }
        },
        (None, None) => -1,
    };
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: move_mount(2) from the detached mount (made before the fork, or just
    // now) onto a descriptor resolved here, with static empty paths.
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, tree, c"".as_ptr(), parent, c"".as_ptr(), flags)
    };
    let e = if r == -1 { Err(fail("mount a volume")) } else { Ok(()) };
    if v.tree.is_none() {
        close(tree);
    }
    release(parent, root);
    e
}

/// Rootless, in the child (its own user and mount namespaces): open the host
/// directory again without following a symlink, require the identity seen before the
/// fork, and clone it into a detached mount with the volume's flags. Raw system calls.
fn clone_in_child(host: &HostSide, read_only: bool) -> io::Result<RawFd> {
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2(2) with a NUL-terminated path built before the fork and an
    // open_how of ours with its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            host.path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as RawFd
    };
    if fd == -1 {
        return Err(fail("open a volume's host directory without following a symlink"));
    }
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) on a descriptor opened here into a struct of ours.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        close(fd);
        return Err(fail("stat a volume's host directory"));
    }
    if st.st_dev != host.dev || st.st_ino != host.ino {
        close(fd);
        // SAFETY: sets this thread's errno, read by `fail` below.
        unsafe { *libc::__errno_location() = libc::ESTALE };
        return Err(fail("mount a volume: its host directory was replaced during the start"));
    }
    let tree = clone_tree(fd);
    close(fd);
    let tree = match tree {
        Ok(t) => t,
        Err(_) => return Err(fail("clone a volume's host directory")),
    };
    if set_flags(tree.as_raw_fd(), read_only).is_err() {
        return Err(fail("set a volume's mount flags"));
    }
    Ok(std::os::fd::IntoRawFd::into_raw_fd(tree))
}

/// Write `boxsock-sandbox: volume path /<prefix>` to stderr (the box log) without
/// allocating: which path the next line's failure is about.
fn name_path(prefix: &std::ffi::CStr) {
    for part in [b"boxsock-sandbox: volume path /".as_slice(), prefix.to_bytes(), b"\n"] {
        // SAFETY: writes a buffer of ours to stderr.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

fn release(fd: RawFd, root: RawFd) {
    if fd != root {
        close(fd);
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
