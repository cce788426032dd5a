//! The agent's base: `<home>/sandbox-base/<key>/`, the agent with its ELF loader and
//! libraries in one flat, read-only directory, shown to every box at [`BOX_DIR`]
//! (`/.boxsock`) by a read-only bind mount. A box's root (a user's busybox, an image)
//! has no glibc of the host's version, so the agent is run by its own loader:
//! `/.boxsock/ld.so --library-path /.boxsock /.boxsock/boxsock-agent …`; the box's
//! commands use the box's own loader and libraries, and never see these through the
//! environment.
//!
//! Built once per agent (keyed by the agent file's identity: device, inode, size, time) in a
//! temporary directory renamed into place, so a base that exists is complete. The ELF
//! walk (`PT_INTERP`, `DT_NEEDED` transitively, the cache-less loader's directories)
//! reads program headers with the `object` crate, as libkrun's guest root does.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use boxsock_elf::{Elf, ElfError};

/// The directory under the home holding one base per agent.
pub const BASE_DIR: &str = "sandbox-base";
/// Where the base appears inside every box.
pub const BOX_DIR: &str = "/.boxsock";
/// The loader's name in the base.
pub const LOADER: &str = "ld.so";
/// The agent's name in the base.
pub const AGENT: &str = "boxsock-agent";

/// Why the agent's base could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// The agent's interpreter or libraries could not be found or read
    /// ([`boxsock_elf`]: not ELF, malformed, or a library in no directory the loader
    /// searches, naming every one tried).
    #[error(transparent)]
    Elf(#[from] ElfError),
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

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BaseError + 'a {
    move |source| BaseError::Io { action, path: path.to_owned(), source }
}

/// A built base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The directory on the host.
    pub dir: PathBuf,
    /// Whether the agent needs its loader (`false`: a static agent, run directly).
    pub dynamic: bool,
}

/// The base of `agent` under `home`, built if missing.
pub fn ensure(home: &Path, agent: &Path) -> Result<Base, BaseError> {
    let parent = home.join(BASE_DIR);
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let key = key(agent)?;
    let dir = parent.join(&key);
    if dir.join(AGENT).is_file() {
        // A complete base (it was renamed into place whole): a loader means dynamic.
        let dynamic = dir.join(LOADER).is_file();
        return Ok(Base { dir, dynamic });
    }
    let agent_elf = Elf::read(agent)?;
    let dynamic = agent_elf.interp.is_some();
    let tmp = parent.join(format!(".tmp-{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let built = fill(&tmp, agent, &agent_elf);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => {
            tracing::info!(base = %boxsock_core::echo::path(&dir), "sandbox agent base built");
            Ok(Base { dir, dynamic })
        }
        Err(_) if dir.join(AGENT).is_file() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(Base { dir, dynamic })
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err("rename into", &dir)(e))
        }
    }
}

fn fill(dir: &Path, agent: &Path, agent_elf: &Elf) -> Result<(), BaseError> {
    fs::create_dir(dir).map_err(io_err("create", dir))?;
    copy(agent, &dir.join(AGENT))?;
    if let Some(interp) = &agent_elf.interp {
        copy(Path::new(interp), &dir.join(LOADER))?;
        for lib in boxsock_elf::libraries(agent, agent_elf)? {
            let file = Path::new(&lib.name).file_name().unwrap_or(lib.name.as_ref());
            copy(&lib.path, &dir.join(file))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_err("set the mode of", dir))
}

fn copy(from: &Path, to: &Path) -> Result<(), BaseError> {
    fs::copy(from, to).map_err(io_err("copy", from))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o555))
        .map_err(io_err("set the mode of", to))
}

/// The base's key: the agent's identity on disk (device, inode, size, modification
/// time, path), hashed. Cheap at every launch, unlike hashing its bytes; replacing the
/// agent (a new inode or time) gives a new base.
fn key(agent: &Path) -> Result<String, BaseError> {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(agent).map_err(io_err("inspect", agent))?;
    let mut h = Sha256::new();
    h.update(agent.as_os_str().as_bytes());
    for n in [m.dev(), m.ino(), m.size(), m.mtime() as u64, m.mtime_nsec() as u64] {
        h.update(n.to_le_bytes());
    }
    Ok(h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect())
}
