//! The guest root of a libkrun box: `<home>/boxes/<id>/rootfs`, shared into the guest
//! over virtio-fs. libkrun brings its own init, which execs `/boxsock-agent`; the root
//! needs the agent, what the agent needs to run, and a few empty directories.
//!
//! [`prepare`] copies the agent to `/boxsock-agent` and, for a dynamically linked
//! agent, its ELF interpreter (`PT_INTERP`) and every shared library it needs
//! (`DT_NEEDED`, transitively), each to the same absolute path inside the root, so the
//! guest's loader finds them without an `ld.so.cache`. It reads the ELF program headers
//! with the `object` crate (no `ldd`: that would run the loader on the file) and
//! resolves each name like the loader does without a cache: `DT_RPATH`/`DT_RUNPATH`
//! (with `$ORIGIN`), then the
//! built-in directories (`/lib/<multiarch>`, `/usr/lib/<multiarch>`, `/lib64`,
//! `/usr/lib64`, `/lib`, `/usr/lib`), taking only a file of the agent's ELF class and
//! machine. Directories listed only in `/etc/ld.so.conf` are not searched, since the
//! guest's loader would not search them either; such a library is
//! [`ElfError::LibraryNotFound`] (as [`RootfsError::Elf`]), naming every directory tried.
//!
//! A statically linked agent (`rustup target add x86_64-unknown-linux-musl`, then
//! `cargo build --release --target x86_64-unknown-linux-musl -p boxsock-agent`) has no
//! interpreter and no libraries: the copy shrinks to one file. The build machines of
//! this project cannot download rustup targets, hence the library copy.
//!
//! Nothing is written outside the root because of what is inside it: an existing
//! symlink on the way to a destination is refused ([`RootfsError::SymlinkInRoot`]), and
//! files are written to a fresh temporary name (`O_EXCL`, which does not follow a
//! symlink) and renamed into place. Running [`prepare`] again refreshes the copies.
//!
//! The runtime should call it when it creates a libkrun box, before the first launch
//! (the backend refuses to launch without the agent in the root).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use boxsock_elf::{Elf, ElfError};

/// Default guest path of the agent inside the guest root.
pub const DEFAULT_GUEST_AGENT: &str = "/boxsock-agent";

/// Empty directories every root gets (mount points for the guest's init, and `/tmp`).
pub const ROOT_DIRS: &[(&str, u32)] =
    &[("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("etc", 0o755)];

/// Why a guest root could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The program's interpreter or libraries could not be found or read
    /// ([`boxsock_elf`]: not ELF, malformed, a library in no directory the loader
    /// searches, naming every one tried).
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// A symlink inside the root lies on the way to a destination; following it could
    /// write outside the root.
    #[error(
        "{} is a symlink inside the guest root; refusing to write through it",
        boxsock_core::echo::path(path)
    )]
    SymlinkInRoot {
        /// The symlink.
        path: PathBuf,
    },
    /// The root itself is a symlink or not a directory.
    #[error("guest root {}: {reason}", boxsock_core::echo::path(path))]
    BadRoot {
        /// The root.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io { action, path: path.to_owned(), source }
}

/// One file copied into the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedFile {
    /// Where it came from on the host.
    pub from: PathBuf,
    /// Its absolute path inside the guest.
    pub guest_path: PathBuf,
}

/// What [`prepare`] put into a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRoot {
    /// The root directory.
    pub root: PathBuf,
    /// The agent's path on the host (`<root>/boxsock-agent`).
    pub agent: PathBuf,
    /// The agent's ELF interpreter, `None` for a static agent.
    pub interpreter: Option<PathBuf>,
    /// Every file copied: the agent first, then the interpreter and the libraries.
    pub files: Vec<CopiedFile>,
}

impl GuestRoot {
    /// Whether the agent is statically linked (the root holds only the agent).
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none()
    }
}

/// Prepare the guest root `root` (usually `<home>/boxes/<id>/rootfs`, see
/// `BoxLayout::rootfs_dir`) for the agent executable `agent`: create it, the
/// [`ROOT_DIRS`], `/boxsock-agent`, and (for a dynamic agent) its interpreter and
/// libraries. See the module documentation.
pub fn prepare(root: &Path, agent: &Path) -> Result<GuestRoot, RootfsError> {
    prepare_at(root, agent, Path::new(DEFAULT_GUEST_AGENT))
}

/// [`prepare`] with the agent installed at `guest_agent` (absolute, inside the guest)
/// instead of `/boxsock-agent`: the backend's `guest_agent` option, which is also the
/// path the shim tells libkrun's init to exec.
pub fn prepare_at(root: &Path, agent: &Path, guest_agent: &Path) -> Result<GuestRoot, RootfsError> {
    fs::create_dir_all(root).map_err(io_err("create", root))?;
    let meta = fs::symlink_metadata(root).map_err(io_err("inspect", root))?;
    if meta.file_type().is_symlink() {
        return Err(RootfsError::BadRoot { path: root.to_owned(), reason: "is a symlink" });
    }
    if !meta.is_dir() {
        return Err(RootfsError::BadRoot { path: root.to_owned(), reason: "is not a directory" });
    }
    for (dir, mode) in ROOT_DIRS {
        let p = ensure_dir(root, Path::new(dir))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(io_err("set the mode of", &p))?;
    }

    if !guest_agent.is_absolute() {
        return Err(RootfsError::BadRoot {
            path: root.join(guest_agent),
            reason: "the guest agent path is not absolute",
        });
    }
    let (interpreter, files) = install_program(root, agent, guest_agent)?;
    let host_agent = root.join(guest_agent.strip_prefix("/").unwrap_or(guest_agent));
    tracing::info!(root = %boxsock_core::echo::path(root), files = files.len(), static_agent = interpreter.is_none(), "guest root prepared");
    Ok(GuestRoot { root: root.to_owned(), agent: host_agent, interpreter, files })
}

/// Copy the executable `exe` into an existing root at `guest_path` (absolute, inside
/// the guest), with its interpreter and libraries as [`prepare`] does for the agent
/// (for example a busybox at `/bin/busybox`). Returns the interpreter (`None` when
/// static) and every file copied, `exe` first.
pub fn install_program(
    root: &Path,
    exe: &Path,
    guest_path: &Path,
) -> Result<(Option<PathBuf>, Vec<CopiedFile>), RootfsError> {
    let exe_elf = Elf::read(exe)?;
    let mut files = vec![CopiedFile { from: exe.to_owned(), guest_path: guest_path.to_owned() }];
    copy_in(root, exe, guest_path, 0o755)?;
    let interpreter = exe_elf.interp.clone().map(PathBuf::from);
    if let Some(interp) = &interpreter {
        copy_in(root, interp, interp, 0o755)?;
        files.push(CopiedFile { from: interp.clone(), guest_path: interp.clone() });
        // Libraries, over DT_NEEDED transitively. The interpreter may itself be listed
        // (ld-linux-*.so.2); it is copied already at its PT_INTERP path, and lands here
        // too under the path the search finds, as the loader would look it up.
        for lib in boxsock_elf::libraries(exe, &exe_elf)? {
            copy_in(root, &lib.path, &lib.path, 0o755)?;
            tracing::debug!(library = %lib.name, from = %boxsock_core::echo::path(&lib.path), "copied into the guest root");
            files.push(CopiedFile { from: lib.path.clone(), guest_path: lib.path });
        }
    }
    Ok((interpreter, files))
}

/// Make `link` (absolute, inside the guest) a symlink to `target` (as the guest sees
/// it, e.g. `busybox`), replacing an existing symlink there.
pub fn guest_symlink(root: &Path, link: &Path, target: &Path) -> Result<(), RootfsError> {
    let rel = link.strip_prefix("/").unwrap_or(link);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(RootfsError::BadRoot { path: root.join(rel), reason: "link has no file name" });
    };
    let dest = ensure_dir(root, parent)?.join(name);
    match fs::symlink_metadata(&dest) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(&dest).map_err(io_err("remove", &dest))?
        }
        Ok(_) => {
            return Err(RootfsError::BadRoot { path: dest, reason: "exists and is not a symlink" });
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, &dest).map_err(io_err("create the symlink", &dest))
}

/// Directory of the shared guest bases under the home: `<home>/guest-base/<key>/`.
pub const BASE_DIR: &str = "guest-base";

/// File in a box directory naming the base its last launch used (one line, the key).
/// Diagnostic and for [`crate::Libkrun::shim_spec`]; a box without it (made by an
/// older boxsock, whose `<box>/rootfs` holds a full copy) boots from `<box>/rootfs`.
pub const BASE_RECORD: &str = "guest-base";

/// Empty directory of every base where the agent mounts the box's layers in the guest
/// (`boxsock_agent::guestroot::MOUNT_BASE`, without the leading `/`).
pub const GUEST_MOUNT_BASE: &str = ".boxsock";

/// The content key of the base for `agent` installed at `guest_agent`: the first 16
/// hex digits of SHA-256 over the guest path, a NUL, and the agent's bytes. Remembered
/// per process by the agent file's identity (device, inode, size, ctime — any change
/// of the file changes its ctime), so a create or start hashes the agent once.
pub fn base_key(agent: &Path, guest_agent: &Path) -> Result<String, RootfsError> {
    use std::os::unix::fs::MetadataExt;
    type Seen = (PathBuf, PathBuf, (u64, u64, u64, i64, i64));
    static KEYS: std::sync::Mutex<Vec<(Seen, String)>> = std::sync::Mutex::new(Vec::new());
    let m = fs::metadata(agent).map_err(io_err("inspect", agent))?;
    let seen: Seen = (
        agent.to_owned(),
        guest_agent.to_owned(),
        (m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()),
    );
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, k)) = keys.iter().find(|(s, _)| *s == seen) {
        return Ok(k.clone());
    }
    let key = hash_key(agent, guest_agent)?;
    keys.retain(|(s, _)| s.0 != seen.0 || s.1 != seen.1);
    keys.push((seen, key.clone()));
    Ok(key)
}

fn hash_key(agent: &Path, guest_agent: &Path) -> Result<String, RootfsError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(guest_agent.as_os_str().as_encoded_bytes());
    h.update([0u8]);
    let mut f = fs::File::open(agent).map_err(io_err("open", agent))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", agent))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let digest = h.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// The shared, read-only guest base of `agent` under `home`: the agent, its loader and
/// libraries, the [`ROOT_DIRS`] and [`GUEST_MOUNT_BASE`]. Built once per agent
/// (content-addressed by [`base_key`]) in a temporary directory renamed into place, so
/// a base that exists is complete; every box of the home shares it (nothing is copied
/// per box). Returns its path.
pub fn ensure_base(home: &Path, agent: &Path, guest_agent: &Path) -> Result<PathBuf, RootfsError> {
    let parent = home.join(BASE_DIR);
    match fs::symlink_metadata(&parent) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(RootfsError::BadRoot { path: parent, reason: "is not a real directory" });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new().mode(0o700).create(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &parent)(e)),
            }
        }
        Err(e) => return Err(io_err("inspect", &parent)(e)),
    }
    let key = base_key(agent, guest_agent)?;
    let base = parent.join(&key);
    match fs::symlink_metadata(&base) {
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => return Ok(base),
        Ok(_) => {
            return Err(RootfsError::BadRoot { path: base, reason: "is not a real directory" });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", &base)(e)),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = parent.join(format!(".tmp-{key}-{}-{nanos}", std::process::id()));
    let built = prepare_at(&tmp, agent, guest_agent).and_then(|_| {
        let m = ensure_dir(&tmp, Path::new(GUEST_MOUNT_BASE))?;
        fs::set_permissions(&m, fs::Permissions::from_mode(0o755))
            .map_err(io_err("set the mode of", &m))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("set the mode of", &tmp))
    });
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &base) {
        Ok(()) => {
            tracing::info!(base = %boxsock_core::echo::path(&base), agent = %boxsock_core::echo::path(agent), "guest base built");
            Ok(base)
        }
        // Another process built the same base meanwhile: theirs is as good.
        Err(_) if base.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(base)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err("rename into", &base)(e))
        }
    }
}

/// Create `root/rel` and its parents, refusing any symlink on the way. `rel` must be
/// relative and free of `..`.
fn ensure_dir(root: &Path, rel: &Path) -> Result<PathBuf, RootfsError> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => p.push(n),
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RootfsError::BadRoot {
                    path: root.join(rel),
                    reason: "destination leaves the root",
                });
            }
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RootfsError::SymlinkInRoot { path: p });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(RootfsError::BadRoot {
                    path: p,
                    reason: "is in the way of a directory",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Raced with another preparer; re-check what is there.
                    if fs::symlink_metadata(&p).map(|m| !m.is_dir()).unwrap_or(true) {
                        return Err(RootfsError::BadRoot {
                            path: p,
                            reason: "is in the way of a directory",
                        });
                    }
                }
                Err(e) => return Err(io_err("create", &p)(e)),
            },
            Err(e) => return Err(io_err("inspect", &p)(e)),
        }
    }
    Ok(p)
}

/// Copy host file `from` (following symlinks) to `guest` (absolute, inside the root)
/// with `mode`, through a temporary name and a rename.
fn copy_in(root: &Path, from: &Path, guest: &Path, mode: u32) -> Result<(), RootfsError> {
    let rel = guest.strip_prefix("/").unwrap_or(guest);
    let (Some(parent), Some(file_name)) = (rel.parent(), rel.file_name()) else {
        return Err(RootfsError::BadRoot {
            path: root.join(rel),
            reason: "destination has no file name",
        });
    };
    let dir = ensure_dir(root, parent)?;
    let dest = dir.join(file_name);
    if fs::symlink_metadata(&dest).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(RootfsError::BadRoot {
            path: dest,
            reason: "is a directory in the way of a file",
        });
    }
    let mut src = fs::File::open(from).map_err(io_err("open", from))?;
    boxsock_core::atomic::AtomicWrite::new(mode)
        .write_with(&dest, |out| io::copy(&mut src, out).map(drop))
        .map_err(|e| io_err("copy into", &dest)(e.into()))?;
    Ok(())
}

/// What `prepare` needs from an ELF file.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_parent_components_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("lib")).unwrap();
        let e = ensure_dir(d.path(), Path::new("lib/x86_64-linux-gnu")).unwrap_err();
        assert!(
            matches!(e, RootfsError::SymlinkInRoot { ref path } if path == &d.path().join("lib")),
            "{e}"
        );
        let e = ensure_dir(d.path(), Path::new("a/../../b")).unwrap_err();
        assert!(matches!(e, RootfsError::BadRoot { .. }), "{e}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
