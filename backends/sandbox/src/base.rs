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

use object::elf;
use object::read::StringTable;
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use object::{Endianness, FileKind};

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
    /// A file that should be an executable or a library is not usable ELF.
    #[error("{}: {reason}", boxsock_core::echo::path(path))]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A needed library was not found where a cache-less loader looks.
    #[error(
        "{library} (needed by {}) not found; searched {searched}",
        boxsock_core::echo::path(needed_by)
    )]
    LibraryNotFound {
        /// The `DT_NEEDED` name.
        library: String,
        /// The file that needs it.
        needed_by: PathBuf,
        /// Every directory tried, comma-separated.
        searched: String,
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
        let mut seen: Vec<String> = Vec::new();
        let mut queue: Vec<(PathBuf, Elf)> = vec![(agent.to_owned(), agent_elf.clone())];
        while let Some((from, elf)) = queue.pop() {
            for name in &elf.needed {
                if seen.contains(name) {
                    continue;
                }
                seen.push(name.clone());
                let (found, lib) = resolve(name, &from, &elf, agent_elf)?;
                let file = Path::new(name).file_name().unwrap_or(name.as_ref());
                copy(&found, &dir.join(file))?;
                queue.push((found, lib));
            }
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

fn default_dirs(machine: elf::Machine, class64: bool) -> Vec<PathBuf> {
    let multiarch = match machine {
        elf::EM_X86_64 => Some("x86_64-linux-gnu"),
        elf::EM_AARCH64 => Some("aarch64-linux-gnu"),
        _ => None,
    };
    let mut dirs = Vec::new();
    if let Some(m) = multiarch {
        dirs.push(PathBuf::from(format!("/lib/{m}")));
        dirs.push(PathBuf::from(format!("/usr/lib/{m}")));
    }
    if class64 {
        dirs.push("/lib64".into());
        dirs.push("/usr/lib64".into());
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

fn resolve(name: &str, from: &Path, elf: &Elf, agent: &Elf) -> Result<(PathBuf, Elf), BaseError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        let lib = Elf::read(&p)?;
        return Ok((p, lib));
    }
    let origin = from.parent().unwrap_or(Path::new("/")).to_string_lossy().into_owned();
    let mut searched = Vec::new();
    let rpaths = if elf.runpath.is_empty() { &elf.rpath } else { &elf.runpath };
    for entry in rpaths.iter().flat_map(|r| r.split(':')).filter(|e| !e.is_empty()) {
        searched
            .push(PathBuf::from(entry.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)));
    }
    searched.extend(default_dirs(agent.machine, agent.class64));
    for dir in &searched {
        let candidate = dir.join(name);
        if !candidate.is_file() {
            continue;
        }
        if let Ok(lib) = Elf::read(&candidate) {
            if lib.machine == agent.machine && lib.class64 == agent.class64 {
                return Ok((candidate, lib));
            }
        }
    }
    Err(BaseError::LibraryNotFound {
        library: name.to_owned(),
        needed_by: from.to_owned(),
        searched: searched
            .iter()
            .map(|p| boxsock_core::echo::path(p).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[derive(Debug, Clone)]
struct Elf {
    class64: bool,
    machine: elf::Machine,
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

impl Elf {
    fn read(path: &Path) -> Result<Elf, BaseError> {
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        Elf::parse(&bytes).map_err(|reason| BaseError::Elf { path: path.to_owned(), reason })
    }

    fn parse(b: &[u8]) -> Result<Elf, String> {
        if b.len() < 16 || !b.starts_with(&elf::ELFMAG) {
            return Err("not an ELF file".into());
        }
        match FileKind::parse(b) {
            Ok(FileKind::Elf32) => Elf::parse_as::<elf::FileHeader32<Endianness>>(b),
            Ok(FileKind::Elf64) => Elf::parse_as::<elf::FileHeader64<Endianness>>(b),
            _ => Err(format!("unknown ELF class {}", b[4])),
        }
    }

    /// From the program headers only (a stripped file may lack section headers).
    fn parse_as<H: FileHeader<Endian = Endianness>>(b: &[u8]) -> Result<Elf, String> {
        let bad = |e: object::read::Error| e.to_string();
        let header = H::parse(b).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        let phdrs = header.program_headers(endian, b).map_err(bad)?;
        let mut elf = Elf {
            class64: header.is_type_64(),
            machine: header.e_machine(endian),
            interp: None,
            needed: vec![],
            rpath: vec![],
            runpath: vec![],
        };
        let utf8 = |s: &[u8], what: &str| {
            String::from_utf8(s.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
        };
        if let Some(ph) = phdrs.iter().find(|p| p.p_type(endian) == elf::PT_INTERP) {
            let interp = ph.interpreter(endian, b).map_err(bad)?.unwrap_or_default();
            elf.interp = Some(utf8(interp, "PT_INTERP")?);
        }
        let Some(ph) = phdrs.iter().find(|p| p.p_type(endian) == elf::PT_DYNAMIC) else {
            return Ok(elf);
        };
        let dynamic = ph.dynamic(endian, b).map_err(bad)?.unwrap_or_default();
        let (mut strtab, mut strsz) = (None, None);
        let mut names = Vec::new();
        for d in dynamic.iter().take_while(|d| d.d_tag(endian) != elf::DT_NULL) {
            match d.d_tag(endian) {
                elf::DT_STRTAB => strtab = Some(d.val(endian)),
                elf::DT_STRSZ => strsz = Some(d.val(endian)),
                elf::DT_NEEDED | elf::DT_RPATH | elf::DT_RUNPATH => names.push(d),
                _ => {}
            }
        }
        if names.is_empty() {
            return Ok(elf);
        }
        let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
            return Err("DT_NEEDED without DT_STRTAB and DT_STRSZ".into());
        };
        let mut strings = None;
        for p in phdrs.iter().filter(|p| p.p_type(endian) == elf::PT_LOAD) {
            let past_end = |()| "a PT_LOAD segment lies past the end of the file".to_string();
            if let Some(data) = p.data_range(endian, b, strtab, strsz).map_err(past_end)? {
                strings = Some(data);
                break;
            }
        }
        let strings = strings.ok_or("DT_STRTAB is outside every PT_LOAD segment")?;
        let strings = StringTable::new(strings, 0, strings.len() as u64);
        for d in names {
            let s = utf8(d.string(endian, strings).map_err(bad)?, "a dynamic string")?;
            match d.d_tag(endian) {
                elf::DT_NEEDED => elf.needed.push(s),
                elf::DT_RPATH => elf.rpath.push(s),
                _ => elf.runpath.push(s),
            }
        }
        Ok(elf)
    }
}
