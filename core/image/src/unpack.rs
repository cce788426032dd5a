//! Unpacking one layer (a tar stream, plain, gzip or zstd) into a directory the store
//! made, without ever following a symlink and without any path leaving that directory.
//!
//! Every entry is placed relative to the layer root's descriptor: the parent directory is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` (the
//! kernel refuses any `..`, absolute component or symlink on the way), and the leaf is
//! created with `O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat` (no follow) on
//! that descriptor. Names with `..` or a leading `/` are refused before that, with an
//! error naming the entry. Whiteouts stay in the layer as the OCI marker files
//! (`.wh.<name>`, `.wh..wh..opq`): `flatten` and the guest's stacking apply them.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::sys::{self, Open};

/// Bounds on what one layer may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Decompressed bytes of the tar stream (headers included).
    pub max_bytes: u64,
    /// Tar entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 16 GiB and 2 000 000 entries: well above real images (the largest common base
    /// images are a few GiB and under 100 000 files), low enough to stop a bomb.
    fn default() -> Self {
        UnpackLimits { max_bytes: 16 << 30, max_entries: 2_000_000 }
    }
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Tar entries read.
    pub entries: u64,
    /// Decompressed bytes read (the tar stream).
    pub bytes: u64,
    /// What was skipped or could not be kept (device nodes, xattrs the file system
    /// refused, ownership when not root), at most [`MAX_NOTES`] lines.
    pub notes: Vec<String>,
    /// Notes left out past [`MAX_NOTES`].
    pub notes_left_out: u64,
}

/// At most this many notes are kept per layer.
pub const MAX_NOTES: usize = 32;

impl UnpackReport {
    fn note(&mut self, line: String) {
        tracing::info!(note = %line, "layer unpack");
        if self.notes.len() < MAX_NOTES {
            self.notes.push(line);
        } else {
            self.notes_left_out += 1;
        }
    }
}

/// The compression of a layer stream, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Sniff the compression from the stream's first bytes.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Counts decompressed bytes and stops the stream past the limit.
struct Limited<R> {
    inner: R,
    count: u64,
    limit: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.tripped.set(true);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(n)
    }
}

/// The result of [`unpack`]: the layer's diff id (digest of the uncompressed tar), the
/// digest and size of the stream as given, and the report.
#[derive(Debug)]
pub struct Unpacked {
    /// sha256 of the decompressed tar stream.
    pub diff_id: Digest,
    /// sha256 of the stream as read (the blob digest).
    pub blob_digest: Digest,
    /// Bytes of the stream as read.
    pub blob_size: u64,
    /// What happened.
    pub report: UnpackReport,
}

/// Unpack the layer stream `src` into the directory `root` (already created, empty).
/// `layer` names the layer in errors. Nothing is created outside `root`.
pub fn unpack(
    src: impl Read,
    layer: &Digest,
    root: &Path,
    limits: UnpackLimits,
) -> Result<Unpacked> {
    let root_fd = open_root(root)?;
    let mut outer = HashingReader::new(src);
    let tripped = Rc::new(Cell::new(false));
    let mut report = UnpackReport::default();
    let bad = |e: io::Error, tripped: &Rc<Cell<bool>>| {
        if tripped.get() {
            ImageError::LayerTooLarge { layer: layer.clone(), limit: limits.max_bytes }
        } else {
            ImageError::BadLayer {
                layer: layer.clone(),
                reason: boxsock_core::echo::echo(&e.to_string()).to_string(),
            }
        }
    };
    let diff_id;
    let bytes;
    {
        let mut buffered = BufReader::with_capacity(128 << 10, &mut outer);
        let head = buffered.fill_buf().map_err(|e| bad(e, &tripped))?.to_vec();
        let decoded: Box<dyn Read + '_> = match Compression::sniff(&head) {
            Compression::None => Box::new(&mut buffered),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut buffered)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut buffered)
                    .map_err(|e| bad(e, &tripped))?,
            ),
        };
        let limited =
            Limited { inner: decoded, count: 0, limit: limits.max_bytes, tripped: tripped.clone() };
        let mut archive = tar::Archive::new(HashingReader::new(limited));
        {
            let entries = archive.entries().map_err(|e| bad(e, &tripped))?;
            let mut ctx =
                Ctx { layer, root: &root_fd, root_path: root, as_root: Uid::effective().is_root() };
            for entry in entries {
                let mut entry = entry.map_err(|e| bad(e, &tripped))?;
                report.entries += 1;
                if report.entries > limits.max_entries {
                    return Err(ImageError::TooManyEntries {
                        layer: layer.clone(),
                        limit: limits.max_entries,
                    });
                }
                if report.entries == 100 {
                    crate::crash::point("unpack-mid");
                }
                ctx.entry(&mut entry, &mut report).map_err(|e| match e {
                    EntryError::Image(e) => e,
                    EntryError::Stream(e) => bad(e, &tripped),
                })?;
            }
        }
        // The tar's end (zero blocks, padding) belongs to the diff id too.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| bad(e, &tripped))?;
        let (d, n) = rest.finish();
        diff_id = d;
        bytes = n;
        // Drain the compressed stream too: the blob digest covers every byte.
        io::copy(&mut buffered, &mut io::sink()).map_err(|e| bad(e, &tripped))?;
    }
    report.bytes = bytes;
    let (blob_digest, blob_size) = outer.finish();
    Ok(Unpacked { diff_id, blob_digest, blob_size, report })
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    sys::open_dir_handle(root).map_err(|e| ImageError::io("open layer directory", root, e.into()))
}

enum EntryError {
    Image(ImageError),
    /// Reading the entry's data failed: a stream problem, not the entry's.
    Stream(io::Error),
}

impl From<ImageError> for EntryError {
    fn from(e: ImageError) -> Self {
        EntryError::Image(e)
    }
}

struct Ctx<'a> {
    layer: &'a Digest,
    root: &'a OwnedFd,
    root_path: &'a Path,
    as_root: bool,
}

/// A checked entry name: its components, none empty, `.` or `..`.
struct Name<'b> {
    parts: Vec<&'b [u8]>,
}

impl Name<'_> {
    fn parent(&self) -> &[&[u8]] {
        &self.parts[..self.parts.len() - 1]
    }

    fn leaf(&self) -> &OsStr {
        OsStr::from_bytes(self.parts[self.parts.len() - 1])
    }
}

impl<'a> Ctx<'a> {
    fn refuse(&self, raw: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.clone(),
            entry: boxsock_core::echo::bytes(raw).to_string(),
            reason: reason.into(),
        }
    }

    fn io(&self, op: &'static str, raw: &[u8], e: Errno) -> ImageError {
        let rel = Path::new(OsStr::from_bytes(raw));
        ImageError::io(op, self.root_path.join(rel), e.into())
    }

    /// Split and check a name from the archive.
    fn name<'b>(&self, raw: &'b [u8]) -> Result<Name<'b>> {
        if raw.contains(&0) {
            return Err(self.refuse(raw, "the name holds a NUL byte"));
        }
        if raw.starts_with(b"/") {
            return Err(self.refuse(raw, "absolute path"));
        }
        let mut parts = Vec::new();
        for p in raw.split(|b| *b == b'/') {
            match p {
                b"" | b"." => {}
                b".." => return Err(self.refuse(raw, "`..` component")),
                p => parts.push(p),
            }
        }
        Ok(Name { parts })
    }

    /// Open the directory `parts` beneath the root, never through a symlink; with
    /// `create`, missing directories are made (0755, as docker does for parents a layer
    /// leaves out).
    fn dir(&self, raw: &[u8], parts: &[&[u8]], create: bool) -> Result<OwnedFd> {
        if parts.is_empty() {
            return self.root.try_clone().map_err(|e| ImageError::io("dup", self.root_path, e));
        }
        let joined = parts.join(&b'/');
        match sys::open_beneath(self.root, OsStr::from_bytes(&joined), Open::DirHandle) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(self.dir_error(raw, e)),
        }
        let mut cur =
            self.root.try_clone().map_err(|e| ImageError::io("dup", self.root_path, e))?;
        for p in parts {
            let p = OsStr::from_bytes(p);
            match nix::sys::stat::mkdirat(&cur, p, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.io("create directory", raw, e)),
            }
            cur =
                sys::open_beneath(&cur, p, Open::DirHandle).map_err(|e| self.dir_error(raw, e))?;
        }
        Ok(cur)
    }

    fn dir_error(&self, raw: &[u8], e: Errno) -> ImageError {
        match e {
            // O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR: tell which it is.
            Errno::ELOOP | Errno::ENOTDIR => {
                if self.symlink_on_the_way(raw) {
                    self.refuse(raw, "its path goes through a symlink")
                } else {
                    self.refuse(raw, "a parent of it is not a directory")
                }
            }
            Errno::EXDEV => self.refuse(raw, "its path leaves the layer directory"),
            Errno::ENOENT => self.refuse(raw, "a parent of it does not exist"),
            e => self.io("open directory", raw, e),
        }
    }

    /// Whether a component of `raw`'s parent path is a symlink (for the error only).
    fn symlink_on_the_way(&self, raw: &[u8]) -> bool {
        let Ok(name) = self.name(raw) else { return false };
        let Ok(mut cur) = self.root.try_clone() else { return false };
        for p in name.parent() {
            let p = OsStr::from_bytes(p);
            match nix::sys::stat::fstatat(&cur, p, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK =>
                {
                    return true;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
            match sys::open_beneath(&cur, p, Open::DirHandle) {
                Ok(fd) => cur = fd,
                Err(_) => return false,
            }
        }
        false
    }

    /// Make room for a new non-directory at `leaf`: an earlier entry of the same name
    /// (tar's last-wins) is unlinked, or an empty directory removed.
    fn clear(&self, dir: &OwnedFd, leaf: &OsStr, raw: &[u8]) -> Result<()> {
        match nix::unistd::unlinkat(dir, leaf, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) => nix::unistd::unlinkat(dir, leaf, UnlinkatFlags::RemoveDir)
                .map_err(|e| self.io("replace directory", raw, e)),
            Err(e) => Err(self.io("replace", raw, e)),
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        report: &mut UnpackReport,
    ) -> std::result::Result<(), EntryError> {
        let raw = entry.path_bytes().into_owned();
        let name = self.name(&raw)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(EntryError::Stream)? & 0o7777;
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| self.refuse(&raw, format!("{what} {v} is out of range")))
        };
        let uid = id(header.uid().map_err(EntryError::Stream)?, "uid")?;
        let gid = id(header.gid().map_err(EntryError::Stream)?, "gid")?;
        let mtime = header.mtime().unwrap_or(0);
        if name.parts.is_empty() {
            // The layer's root ("./"): its directory is the store's; nothing to place.
            return Ok(());
        }
        let leaf = name.leaf();
        if leaf.as_bytes().starts_with(b".wh.") {
            let target = &leaf.as_bytes()[4..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.refuse(&raw, "a whiteout that names no file").into());
            }
            if !kind.is_file() {
                return Err(self.refuse(&raw, "a whiteout that is not a regular file").into());
            }
        }
        let parent = self.dir(&raw, name.parent(), true)?;
        let xattrs = pax_xattrs(entry).map_err(EntryError::Stream)?;
        match kind {
            tar::EntryType::Directory => {
                match nix::sys::stat::mkdirat(&parent, leaf, Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st =
                            nix::sys::stat::fstatat(&parent, leaf, AtFlags::AT_SYMLINK_NOFOLLOW)
                                .map_err(|e| self.io("stat", &raw, e))?;
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                            self.clear(&parent, leaf, &raw)?;
                            nix::sys::stat::mkdirat(&parent, leaf, Mode::from_bits_truncate(0o700))
                                .map_err(|e| self.io("create directory", &raw, e))?;
                        }
                    }
                    Err(e) => return Err(self.io("create directory", &raw, e).into()),
                }
                let fd = self.open_leaf(&parent, leaf, &raw, Open::Dir)?;
                self.finish(File::from(fd), &raw, uid, gid, mode, None, &xattrs, report)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&parent, leaf, &raw)?;
                let fd = nix::fcntl::openat(
                    &parent,
                    leaf,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| self.io("create", &raw, e))?;
                let mut file = File::from(fd);
                // A read error is the stream's; a write error the file system's.
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(EntryError::Stream(e)),
                    };
                    io::Write::write_all(&mut file, &buf[..n]).map_err(|e| {
                        ImageError::io("write", self.root_path.join(OsStr::from_bytes(&raw)), e)
                    })?;
                }
                self.finish(file, &raw, uid, gid, mode, Some(mtime), &xattrs, report)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "a symlink without a target"))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(self.refuse(&raw, "a symlink target holds a NUL byte").into());
                }
                self.clear(&parent, leaf, &raw)?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), &parent, leaf)
                    .map_err(|e| self.io("create symlink", &raw, e))?;
                if self.as_root {
                    nix::unistd::fchownat(
                        &parent,
                        leaf,
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.io("chown symlink", &raw, e))?;
                }
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "a hard link without a target"))?
                    .into_owned();
                let target = self.name(&target_raw).map_err(|_| {
                    self.refuse(
                        &raw,
                        format!(
                            "hard link to {}, outside the layer",
                            boxsock_core::echo::bytes(&target_raw)
                        ),
                    )
                })?;
                if target.parts.is_empty() {
                    return Err(self.refuse(&raw, "hard link to the layer's root").into());
                }
                let tdir = self.dir(&target_raw, target.parent(), false).map_err(|_| {
                    self.refuse(
                        &raw,
                        format!(
                            "hard link target {} is not a file of this layer",
                            boxsock_core::echo::bytes(&target_raw)
                        ),
                    )
                })?;
                self.clear(&parent, leaf, &raw)?;
                nix::unistd::linkat(&tdir, target.leaf(), &parent, leaf, AtFlags::empty())
                    .map_err(|e| match e {
                        Errno::ENOENT | Errno::EPERM => self.refuse(
                            &raw,
                            format!(
                                "hard link target {} is not a file of this layer",
                                boxsock_core::echo::bytes(&target_raw)
                            ),
                        ),
                        e => self.io("hard link", &raw, e),
                    })?;
            }
            tar::EntryType::Fifo => {
                self.clear(&parent, leaf, &raw)?;
                nix::sys::stat::mknodat(
                    &parent,
                    leaf,
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(0o600),
                    0,
                )
                .map_err(|e| self.io("create fifo", &raw, e))?;
                let fd = self.open_leaf(&parent, leaf, &raw, Open::Handle)?;
                // A FIFO opened O_PATH cannot be fchmod'ed; chmod by /proc/self/fd is the
                // documented way to act on an O_PATH descriptor without a path walk.
                let proc = sys::fd_path(&fd);
                if self.as_root {
                    nix::unistd::fchownat(
                        &parent,
                        leaf,
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.io("chown", &raw, e))?;
                }
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    proc.as_str(),
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| self.io("chmod", &raw, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                report.note(format!(
                    "device node {} skipped (a box gets its devices from the guest kernel)",
                    boxsock_core::echo::bytes(&raw)
                ));
            }
            other => {
                report.note(format!(
                    "entry {} of tar type {:?} skipped",
                    boxsock_core::echo::bytes(&raw),
                    other
                ));
            }
        }
        Ok(())
    }

    fn open_leaf(&self, parent: &OwnedFd, leaf: &OsStr, raw: &[u8], what: Open) -> Result<OwnedFd> {
        sys::open_beneath(parent, leaf, what).map_err(|e| self.io("open", raw, e))
    }

    /// Ownership (as root), mode (after chown, which clears set-id bits), xattrs and
    /// mtime of a file or directory, on its descriptor.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        file: File,
        raw: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
        mtime: Option<u64>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        report: &mut UnpackReport,
    ) -> Result<()> {
        if self.as_root {
            nix::unistd::fchown(file.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| self.io("chown", raw, e))?;
        }
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| self.io("chmod", raw, e))?;
        for (k, v) in xattrs {
            if let Err(e) = xattr::FileExt::set_xattr(&file, OsStr::from_bytes(k), v) {
                report.note(format!(
                    "xattr {} of {} not kept: {e}",
                    boxsock_core::echo::bytes(k),
                    boxsock_core::echo::bytes(raw)
                ));
            }
        }
        if let Some(t) = mtime {
            let ts = nix::sys::time::TimeSpec::new(t.min(i64::MAX as u64) as i64, 0);
            nix::sys::stat::futimens(file.as_fd(), &ts, &ts)
                .map_err(|e| self.io("set mtime", raw, e))?;
        }
        Ok(())
    }
}

/// The `SCHILY.xattr.*` records of an entry's PAX header.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}
