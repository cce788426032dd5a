//! The guest root of a libkrun box: `<home>/boxes/<id>/rootfs`, shared into the guest
//! over virtio-fs. libkrun brings its own init, which execs `/boxsock-agent`; the root
//! needs the agent, what the agent needs to run, and a few empty directories.
//!
//! [`prepare`] copies the agent to `/boxsock-agent` and, for a dynamically linked
//! agent, its ELF interpreter (`PT_INTERP`) and every shared library it needs
//! (`DT_NEEDED`, transitively), each to the same absolute path inside the root, so the
//! guest's loader finds them without an `ld.so.cache`. It reads the ELF headers
//! itself (no `ldd`: that would run the loader on the file) and resolves each name like
//! the loader does without a cache: `DT_RPATH`/`DT_RUNPATH` (with `$ORIGIN`), then the
//! built-in directories (`/lib/<multiarch>`, `/usr/lib/<multiarch>`, `/lib64`,
//! `/usr/lib64`, `/lib`, `/usr/lib`), taking only a file of the agent's ELF class and
//! machine. Directories listed only in `/etc/ld.so.conf` are not searched, since the
//! guest's loader would not search them either; such a library is
//! [`RootfsError::LibraryNotFound`], naming every directory tried.
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

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Default guest path of the agent inside the guest root.
pub const DEFAULT_GUEST_AGENT: &str = "/boxsock-agent";

/// Empty directories every root gets (mount points for the guest's init, and `/tmp`).
pub const ROOT_DIRS: &[(&str, u32)] = &[("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("etc", 0o755)];

/// Why a guest root could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A file that should be an executable or a library is not ELF.
    #[error("{}: not an ELF file", boxsock_core::echo::path(path))]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// An ELF file whose headers cannot be read.
    #[error("{}: malformed ELF: {reason}", boxsock_core::echo::path(path))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A needed library was not found in any directory the guest's loader searches.
    #[error("{library} (needed by {needed_by}) not found; searched {}", display_dirs(.searched))]
    LibraryNotFound {
        /// The `DT_NEEDED` name.
        library: String,
        /// The file that needs it.
        needed_by: PathBuf,
        /// Every directory tried, in order.
        searched: Vec<PathBuf>,
    },
    /// A symlink inside the root lies on the way to a destination; following it could
    /// write outside the root.
    #[error("{} is a symlink inside the guest root; refusing to write through it", boxsock_core::echo::path(path))]
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

fn display_dirs(d: &[PathBuf]) -> String {
    d.iter().map(|p| boxsock_core::echo::path(p).to_string()).collect::<Vec<_>>().join(", ")
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
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(io_err("set the mode of", &p))?;
    }

    if !guest_agent.is_absolute() {
        return Err(RootfsError::BadRoot { path: root.join(guest_agent), reason: "the guest agent path is not absolute" });
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
pub fn install_program(root: &Path, exe: &Path, guest_path: &Path) -> Result<(Option<PathBuf>, Vec<CopiedFile>), RootfsError> {
    let exe_elf = Elf::read(exe)?;
    let mut files = vec![CopiedFile { from: exe.to_owned(), guest_path: guest_path.to_owned() }];
    copy_in(root, exe, guest_path, 0o755)?;
    let interpreter = exe_elf.interp.clone().map(PathBuf::from);
    if let Some(interp) = &interpreter {
        copy_in(root, interp, interp, 0o755)?;
        files.push(CopiedFile { from: interp.clone(), guest_path: interp.clone() });
        // Libraries, over DT_NEEDED transitively; each name once.
        let mut seen: Vec<String> = Vec::new();
        let mut queue: Vec<(PathBuf, Elf)> = vec![(exe.to_owned(), exe_elf.clone())];
        while let Some((from, elf)) = queue.pop() {
            for name in &elf.needed {
                if seen.contains(name) {
                    continue;
                }
                seen.push(name.clone());
                let (found, lib) = resolve(name, &from, &elf, &exe_elf)?;
                // The interpreter may itself be listed (ld-linux-*.so.2); it is copied
                // already at its PT_INTERP path, and lands here too under the path the
                // search finds, as the loader would look it up.
                copy_in(root, &found, &found, 0o755)?;
                tracing::debug!(library = %name, from = %boxsock_core::echo::path(&found), "copied into the guest root");
                files.push(CopiedFile { from: found.clone(), guest_path: found.clone() });
                queue.push((found, lib));
            }
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
        Ok(m) if m.file_type().is_symlink() => fs::remove_file(&dest).map_err(io_err("remove", &dest))?,
        Ok(_) => return Err(RootfsError::BadRoot { path: dest, reason: "exists and is not a symlink" }),
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
    let seen: Seen = (agent.to_owned(), guest_agent.to_owned(), (m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()));
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
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::DirBuilder::new().mode(0o700).create(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &parent)(e)),
        },
        Err(e) => return Err(io_err("inspect", &parent)(e)),
    }
    let key = base_key(agent, guest_agent)?;
    let base = parent.join(&key);
    match fs::symlink_metadata(&base) {
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => return Ok(base),
        Ok(_) => return Err(RootfsError::BadRoot { path: base, reason: "is not a real directory" }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", &base)(e)),
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = parent.join(format!(".tmp-{key}-{}-{nanos}", std::process::id()));
    let built = prepare_at(&tmp, agent, guest_agent).and_then(|_| {
        let m = ensure_dir(&tmp, Path::new(GUEST_MOUNT_BASE))?;
        fs::set_permissions(&m, fs::Permissions::from_mode(0o755)).map_err(io_err("set the mode of", &m))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io_err("set the mode of", &tmp))
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

/// The directories a cache-less loader searches after `DT_RPATH`/`DT_RUNPATH`.
fn default_dirs(machine: u16, class64: bool) -> Vec<PathBuf> {
    let multiarch = match machine {
        62 => Some("x86_64-linux-gnu"),
        183 => Some("aarch64-linux-gnu"),
        3 => Some("i386-linux-gnu"),
        40 => Some("arm-linux-gnueabihf"),
        243 => Some(if class64 { "riscv64-linux-gnu" } else { "riscv32-linux-gnu" }),
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

/// Find `name` (needed by `from`) as the guest's loader would, checking class and
/// machine against the agent.
fn resolve(name: &str, from: &Path, elf: &Elf, agent: &Elf) -> Result<(PathBuf, Elf), RootfsError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        let lib = Elf::read(&p)?;
        return Ok((p, lib));
    }
    let origin = from.parent().unwrap_or(Path::new("/"));
    let mut searched = Vec::new();
    let rpaths = if elf.runpath.is_empty() { &elf.rpath } else { &elf.runpath };
    for entry in rpaths.iter().flat_map(|r| r.split(':')).filter(|e| !e.is_empty()) {
        let dir = entry.replace("${ORIGIN}", &origin.to_string_lossy()).replace("$ORIGIN", &origin.to_string_lossy());
        searched.push(PathBuf::from(dir));
    }
    searched.extend(default_dirs(agent.machine, agent.class64));
    for dir in &searched {
        let candidate = dir.join(name);
        if !candidate.is_file() {
            continue;
        }
        match Elf::read(&candidate) {
            Ok(lib) if lib.machine == agent.machine && lib.class64 == agent.class64 => return Ok((candidate, lib)),
            Ok(_) => tracing::debug!(candidate = %boxsock_core::echo::path(&candidate), "wrong ELF class or machine; skipped"),
            Err(e) => tracing::debug!(candidate = %boxsock_core::echo::path(&candidate), error = %e, "not a usable library; skipped"),
        }
    }
    Err(RootfsError::LibraryNotFound { library: name.to_owned(), needed_by: from.to_owned(), searched })
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
                return Err(RootfsError::BadRoot { path: root.join(rel), reason: "destination leaves the root" });
            }
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(RootfsError::SymlinkInRoot { path: p }),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(RootfsError::BadRoot { path: p, reason: "is in the way of a directory" }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Raced with another preparer; re-check what is there.
                    if fs::symlink_metadata(&p).map(|m| !m.is_dir()).unwrap_or(true) {
                        return Err(RootfsError::BadRoot { path: p, reason: "is in the way of a directory" });
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
        return Err(RootfsError::BadRoot { path: root.join(rel), reason: "destination has no file name" });
    };
    let dir = ensure_dir(root, parent)?;
    let dest = dir.join(file_name);
    if fs::symlink_metadata(&dest).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(RootfsError::BadRoot { path: dest, reason: "is a directory in the way of a file" });
    }
    let tmp = dir.join(format!(".{}.boxsock-tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut src = fs::File::open(from).map_err(io_err("open", from))?;
    let result = (|| {
        let mut out = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io_err("create", &tmp))?;
        io::copy(&mut src, &mut out).map_err(io_err("copy into", &tmp))?;
        // The umask may have narrowed the mode.
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("set the mode of", &tmp))?;
        fs::rename(&tmp, &dest).map_err(io_err("rename into", &dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// What `prepare` needs from an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Elf {
    class64: bool,
    machine: u16,
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

impl Elf {
    fn read(path: &Path) -> Result<Elf, RootfsError> {
        let mut f = fs::File::open(path).map_err(io_err("open", path))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(io_err("read", path))?;
        Elf::parse(&bytes).map_err(|e| match e {
            None => RootfsError::NotElf { path: path.to_owned() },
            Some(reason) => RootfsError::Malformed { path: path.to_owned(), reason },
        })
    }

    /// `Err(None)`: not ELF; `Err(Some(reason))`: malformed.
    fn parse(b: &[u8]) -> Result<Elf, Option<String>> {
        if b.len() < 16 || &b[..4] != b"\x7fELF" {
            return Err(None);
        }
        let class64 = match b[4] {
            1 => false,
            2 => true,
            c => return Err(Some(format!("unknown ELF class {c}"))),
        };
        let r = Reader {
            b,
            big: match b[5] {
                1 => false,
                2 => true,
                d => return Err(Some(format!("unknown ELF data encoding {d}"))),
            },
        };
        let machine = r.u16(18)?;
        let (phoff, phentsize, phnum) = if class64 {
            (r.u64(32)?, u64::from(r.u16(54)?), r.u16(56)?)
        } else {
            (u64::from(r.u32(28)?), u64::from(r.u16(42)?), r.u16(44)?)
        };
        // (type, offset, vaddr, filesz)
        let mut phdrs = Vec::with_capacity(usize::from(phnum));
        for i in 0..u64::from(phnum) {
            let at = i.checked_mul(phentsize).and_then(|o| o.checked_add(phoff)).ok_or_else(|| Some("program header offset overflows".to_string()))?;
            let at = usize::try_from(at).map_err(|_| Some("program header offset too large".to_string()))?;
            let ph = if class64 {
                (r.u32(at)?, r.u64(at + 8)?, r.u64(at + 16)?, r.u64(at + 32)?)
            } else {
                (r.u32(at)?, u64::from(r.u32(at + 4)?), u64::from(r.u32(at + 8)?), u64::from(r.u32(at + 16)?))
            };
            phdrs.push(ph);
        }
        let mut elf = Elf { class64, machine, interp: None, needed: vec![], rpath: vec![], runpath: vec![] };
        if let Some(&(_, off, _, size)) = phdrs.iter().find(|p| p.0 == PT_INTERP) {
            let s = r.slice(off, size)?;
            let s = s.split(|&c| c == 0).next().unwrap_or(&[]);
            elf.interp = Some(String::from_utf8(s.to_vec()).map_err(|_| Some("PT_INTERP is not UTF-8".to_string()))?);
        }
        let Some(&(_, dyn_off, _, dyn_size)) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC) else {
            return Ok(elf);
        };
        let entry = if class64 { 16 } else { 8 };
        let mut strtab_vaddr = None;
        let mut names: Vec<(u64, u64)> = Vec::new(); // (tag, string offset)
        let mut i = 0;
        while i + entry <= dyn_size {
            let at = usize::try_from(dyn_off + i).map_err(|_| Some("dynamic section offset too large".to_string()))?;
            let (tag, val) = if class64 { (r.u64(at)?, r.u64(at + 8)?) } else { (u64::from(r.u32(at)?), u64::from(r.u32(at + 4)?)) };
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab_vaddr = Some(val),
                DT_NEEDED | DT_RPATH | DT_RUNPATH => names.push((tag, val)),
                _ => {}
            }
            i += entry;
        }
        if names.is_empty() {
            return Ok(elf);
        }
        let strtab_vaddr = strtab_vaddr.ok_or_else(|| Some("DT_NEEDED without DT_STRTAB".to_string()))?;
        let strtab = phdrs
            .iter()
            .filter(|p| p.0 == PT_LOAD)
            .find(|p| p.2 <= strtab_vaddr && strtab_vaddr < p.2.saturating_add(p.3))
            .map(|p| strtab_vaddr - p.2 + p.1)
            .ok_or_else(|| Some("DT_STRTAB is outside every PT_LOAD segment".to_string()))?;
        for (tag, off) in names {
            let start = strtab.checked_add(off).ok_or_else(|| Some("string offset overflows".to_string()))?;
            let rest = r.slice(start, (b.len() as u64).saturating_sub(start))?;
            let end = rest.iter().position(|&c| c == 0).ok_or_else(|| Some("unterminated dynamic string".to_string()))?;
            let s = String::from_utf8(rest[..end].to_vec()).map_err(|_| Some("dynamic string is not UTF-8".to_string()))?;
            match tag {
                DT_NEEDED => elf.needed.push(s),
                DT_RPATH => elf.rpath.push(s),
                _ => elf.runpath.push(s),
            }
        }
        Ok(elf)
    }
}

/// Bounds-checked reads from an ELF image.
struct Reader<'a> {
    b: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], Option<String>> {
        at.checked_add(N)
            .and_then(|end| self.b.get(at..end))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Some(format!("truncated: {N} bytes at offset {at} past the end ({} bytes)", self.b.len())))
    }
    fn u16(&self, at: usize) -> Result<u16, Option<String>> {
        let a = self.bytes::<2>(at)?;
        Ok(if self.big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) })
    }
    fn u32(&self, at: usize) -> Result<u32, Option<String>> {
        let a = self.bytes::<4>(at)?;
        Ok(if self.big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    }
    fn u64(&self, at: usize) -> Result<u64, Option<String>> {
        let a = self.bytes::<8>(at)?;
        Ok(if self.big { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) })
    }
    fn slice(&self, off: u64, len: u64) -> Result<&[u8], Option<String>> {
        let range = usize::try_from(off).ok().zip(usize::try_from(len).ok()).and_then(|(o, l)| Some(o..o.checked_add(l)?));
        range
            .and_then(|r| self.b.get(r))
            .ok_or_else(|| Some(format!("{len} bytes at offset {off} past the end ({} bytes)", self.b.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_and_truncated_are_errors_not_panics() {
        assert_eq!(Elf::parse(b"#!/bin/sh\n"), Err(None));
        assert_eq!(Elf::parse(b""), Err(None));
        let mut h = b"\x7fELF\x02\x01\x01".to_vec();
        h.resize(20, 0);
        assert!(matches!(Elf::parse(&h), Err(Some(r)) if r.contains("truncated")));
        let mut bad_class = b"\x7fELF\x07\x01".to_vec();
        bad_class.resize(64, 0);
        assert!(matches!(Elf::parse(&bad_class), Err(Some(r)) if r.contains("class 7")));
    }

    #[test]
    fn every_truncation_of_a_real_binary_is_an_error_or_a_parse() {
        // Real headers from this very test binary, cut at every length up to 4 KiB:
        // never a panic.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        for n in 0..me.len().min(4096) {
            let _ = Elf::parse(&me[..n]);
        }
        let full = Elf::parse(&me).unwrap();
        assert_eq!(full.class64, cfg!(target_pointer_width = "64"));
    }

    #[test]
    fn symlinks_and_parent_components_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("lib")).unwrap();
        let e = ensure_dir(d.path(), Path::new("lib/x86_64-linux-gnu")).unwrap_err();
        assert!(matches!(e, RootfsError::SymlinkInRoot { ref path } if path == &d.path().join("lib")), "{e}");
        let e = ensure_dir(d.path(), Path::new("a/../../b")).unwrap_err();
        assert!(matches!(e, RootfsError::BadRoot { .. }), "{e}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
