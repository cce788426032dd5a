//! [`SocketDir`]: a box's socket directory, held open and verified, through which every
//! bind and every connect of a path strategy goes.
//!
//! Checking a directory and then binding or connecting by a path string re-resolves
//! that string: whoever can change any directory on the way between the check and the
//! use (a flipped symlink in the link base, a /tmp cleaner plus a rename) receives the
//! connection. A `SocketDir` closes that window. It holds a descriptor of the directory
//! (`O_PATH|O_DIRECTORY` on Linux), verified with `fstat` when it was opened — a
//! directory, owned by the box's owner, writable by nobody else, and, where the
//! strategy knows it, the very inode of `<home>/boxes/<id>/sockets` — and addresses
//! sockets *through the descriptor*: on Linux `/proc/self/fd/<n>/<name>`, which always
//! fits `sun_path` and resolves nothing anyone else controls. The descriptor can be
//! handed to a child (see [`SocketDir::address_at`]).
//!
//! Socket files are created `0600` whatever the umask ([`SocketDir::bind_stream`],
//! [`SocketDir::bind_datagram`]): the mode is set on the socket before `bind` (Linux
//! takes the new file's mode from the socket's inode) and again on the file after it.
//!
//! Platform code is in the crate's `sys/`: on Linux, `/proc/self/fd`; macOS is not
//! implemented (docs/platforms.md).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::address::SocketAddress;
use crate::binding::socket_path;
use crate::error::BindingError;
use crate::peer::{Listener, PeerPolicy};

/// Device and inode of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirIdentity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl DirIdentity {
    /// The identity in a `stat` result.
    // dev_t and ino_t differ in width and sign across platforms.
    #[allow(clippy::unnecessary_cast)]
    pub fn of(st: &FileStat) -> Self {
        DirIdentity { dev: st.st_dev as u64, ino: st.st_ino as u64 }
    }

    /// The identity of the directory at `path` (following symlinks).
    pub fn of_path(path: &Path) -> Result<Self, BindingError> {
        let st = nix::sys::stat::stat(path).map_err(|e| BindingError::errno("stat", path, e))?;
        Ok(DirIdentity::of(&st))
    }
}

/// What a [`SocketDir`] must be, checked on the open descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirExpectation {
    /// The owner's uid.
    pub owner: u32,
    /// The directory's identity, where the caller knows it (the box's real sockets
    /// directory, reached through a link).
    pub identity: Option<DirIdentity>,
}

/// How the directory was reached when it was opened, so a holder can ask cheaply whether
/// that name still leads to it ([`SocketDir::recheck`]).
#[derive(Debug)]
enum Anchor {
    /// Opened from a descriptor whose verification the caller did (its own).
    None,
    /// `name` relative to a held directory (the short link in the per-user directory).
    At { dir: OwnedFd, name: String },
    /// A path the caller trusts (the `direct` strategy's real directory).
    Path(PathBuf),
}

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    shown: PathBuf,
    identity: DirIdentity,
    owner: u32,
    anchor: Anchor,
}

/// A verified, held socket directory. Cheap to clone (shared descriptor). See the
/// module documentation.
#[derive(Clone)]
pub struct SocketDir {
    inner: Arc<Inner>,
}

impl fmt::Debug for SocketDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketDir")
            .field("fd", &self.inner.fd.as_raw_fd())
            .field("shown", &self.inner.shown)
            .field("identity", &self.inner.identity)
            .field("owner", &self.inner.owner)
            .finish()
    }
}

/// Open flags of the held descriptor: `O_PATH` where it exists (nothing is read through
/// it; it only anchors lookups), never inherited by accident.
fn dir_flags() -> OFlag {
    crate::sys::path_flag() | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

#[allow(clippy::unnecessary_cast)]
fn mode_bits(st: &FileStat) -> u32 {
    (st.st_mode as u32) & 0o7777
}

#[allow(clippy::unnecessary_cast)]
fn is_dir(st: &FileStat) -> bool {
    (st.st_mode as u32 & SFlag::S_IFMT.bits() as u32) == SFlag::S_IFDIR.bits() as u32
}

#[allow(clippy::unnecessary_cast)]
fn is_socket(st: &FileStat) -> bool {
    (st.st_mode as u32 & SFlag::S_IFMT.bits() as u32) == SFlag::S_IFSOCK.bits() as u32
}

impl SocketDir {
    /// Verify an open directory descriptor against `expect` (`fstat`: a directory,
    /// owned by `expect.owner`, no group/other write, the expected identity) and hold
    /// it. `shown` is the stable name people and other tools use for it (the /tmp link,
    /// or the real path); it is only displayed, never resolved on Linux.
    pub fn verify(
        fd: OwnedFd,
        shown: impl Into<PathBuf>,
        expect: DirExpectation,
    ) -> Result<Self, BindingError> {
        let shown = shown.into();
        let st = nix::sys::stat::fstat(&fd).map_err(|e| BindingError::errno("stat", &shown, e))?;
        let insecure = |reason: String| BindingError::Insecure { path: shown.clone(), reason };
        if !is_dir(&st) {
            return Err(insecure("the socket directory is not a directory".into()));
        }
        if st.st_uid != expect.owner {
            return Err(insecure(format!(
                "the socket directory is owned by uid {} (mode {:04o}), not by uid {}; someone else could read and answer the box's sockets",
                st.st_uid,
                mode_bits(&st),
                expect.owner
            )));
        }
        let mode = mode_bits(&st);
        if mode & 0o022 != 0 {
            return Err(insecure(format!(
                "the socket directory has mode {mode:04o}: writable by group or other users, who could replace the box's sockets"
            )));
        }
        let identity = DirIdentity::of(&st);
        if let Some(want) = expect.identity {
            if want != identity {
                return Err(insecure(format!(
                    "it resolves to directory dev {} inode {}, not the box's socket directory (dev {} inode {}); something on the way was swapped",
                    identity.dev, identity.ino, want.dev, want.ino
                )));
            }
        }
        let inner = Inner { fd, shown, identity, owner: expect.owner, anchor: Anchor::None };
        Ok(SocketDir { inner: Arc::new(inner) })
    }

    fn anchored(self, anchor: Anchor) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.anchor = anchor;
                SocketDir { inner: Arc::new(inner) }
            }
            Err(inner) => SocketDir { inner },
        }
    }

    /// Whether the name this directory was opened through still leads to it: one
    /// `fstatat` of the name relative to the directory it was found in (one `stat` for
    /// a directory opened by path), compared by device and inode with the held
    /// descriptor. A holder calls it before each use, so that nothing is bound or
    /// dialled through a directory its name no longer names (decision 0014): the name
    /// gone (a /tmp cleaner) is [`BindingError::Io`] (`ENOENT`), the name leading
    /// elsewhere (a swapped link) [`BindingError::Insecure`] naming both identities.
    pub fn recheck(&self) -> Result<(), BindingError> {
        let st = match &self.inner.anchor {
            Anchor::None => return Ok(()),
            Anchor::At { dir, name } => {
                nix::sys::stat::fstatat(dir, name.as_str(), AtFlags::empty())
            }
            Anchor::Path(p) => nix::sys::stat::stat(p.as_path()),
        };
        let st = st.map_err(|e| BindingError::errno("look up", &self.inner.shown, e))?;
        let now = DirIdentity::of(&st);
        if now != self.inner.identity {
            return Err(BindingError::Insecure {
                path: self.inner.shown.clone(),
                reason: format!(
                    "it now leads to dev {} inode {}, not the socket directory held since the \
                     box was opened (dev {} inode {}); nothing is bound or dialled through a \
                     name that changed",
                    now.dev, now.ino, self.inner.identity.dev, self.inner.identity.ino
                ),
            });
        }
        Ok(())
    }

    /// Open `path` (following symlinks) and [`verify`](Self::verify) it. Meant for a
    /// path whose every component the caller trusts (the `direct` strategy's real
    /// directory under a checked home); anything else should open relative to a held,
    /// checked descriptor with [`SocketDir::open_at`].
    pub fn open(path: &Path, expect: DirExpectation) -> Result<Self, BindingError> {
        let fd =
            nix::fcntl::open(path, dir_flags(), Mode::empty()).map_err(|e| open_error(path, e))?;
        Ok(Self::verify(fd, path, expect)?.anchored(Anchor::Path(path.to_owned())))
    }

    /// Open `name` relative to the held directory `dir` (following a symlink at `name`,
    /// as the short link is) and [`verify`](Self::verify) it.
    pub fn open_at(
        dir: BorrowedFd<'_>,
        name: &str,
        shown: impl Into<PathBuf>,
        expect: DirExpectation,
    ) -> Result<Self, BindingError> {
        let shown = shown.into();
        let fd = nix::fcntl::openat(dir, name, dir_flags(), Mode::empty())
            .map_err(|e| open_error(&shown, e))?;
        let held = dir
            .try_clone_to_owned()
            .map_err(|e| BindingError::io("duplicate descriptor of", &shown, e))?;
        let anchor = Anchor::At { dir: held, name: name.to_owned() };
        Ok(Self::verify(fd, shown, expect)?.anchored(anchor))
    }

    /// The stable, displayed name of the directory.
    pub fn shown_path(&self) -> &Path {
        &self.inner.shown
    }

    /// Identity verified at open.
    pub fn identity(&self) -> DirIdentity {
        self.inner.identity
    }

    /// The uid it was verified to belong to.
    pub fn owner(&self) -> u32 {
        self.inner.owner
    }

    /// The displayed address of `name` (`<shown>/<name>`): for messages, people and other
    /// tools; boxsock itself never resolves it on Linux.
    pub fn shown_address(&self, name: &str) -> Result<SocketAddress, BindingError> {
        Ok(SocketAddress::Path(socket_path(&self.inner.shown, name)?))
    }

    /// The address of `name` *through the held descriptor*, valid in this process
    /// (Linux: `/proc/self/fd/<n>/<name>`).
    pub fn fd_address(&self, name: &str) -> Result<SocketAddress, BindingError> {
        self.address_at(name, self.inner.fd.as_raw_fd())
    }

    /// The address of `name` as seen by a child that has this directory's descriptor at
    /// `fd_no` (Linux: `/proc/self/fd/<fd_no>/<name>`; give the child
    /// [`SocketDir::as_fd`] dup2'ed to `fd_no` without `FD_CLOEXEC`). Elsewhere: the
    /// displayed path.
    pub fn address_at(&self, name: &str, fd_no: RawFd) -> Result<SocketAddress, BindingError> {
        crate::catalogue::validate_file_name(name).map_err(|e| BindingError::Invalid {
            what: "socket file name".into(),
            reason: e.to_string(),
        })?;
        let addr = SocketAddress::Path(crate::sys::through_fd(fd_no, &self.inner.shown, name));
        crate::budget::check(name, &addr, crate::budget::Platform::current())?;
        Ok(addr)
    }

    /// Bind a stream listener at `name` (0600, whatever the umask), replacing a stale
    /// socket file nobody listens on; the listener enforces `policy` on every accept.
    pub fn bind_stream(&self, name: &str, policy: PeerPolicy) -> Result<Listener, BindingError> {
        let via = self.fd_address(name)?;
        let shown = self.shown_address(name)?;
        let l: UnixListener =
            self.bind_with(name, &via, &shown, crate::peer::bind_stream_private)?;
        Ok(Listener::new(l, shown, name.to_owned(), policy))
    }

    /// Bind a datagram socket at `name` (0600, whatever the umask), replacing a stale
    /// socket file.
    ///
    /// Unlike a stream listener, a datagram socket's bound name is what its peers see
    /// in `recvfrom` and reply to, so it must be a name *they* can resolve: it is bound
    /// at the displayed address, then **proved** to be the socket in the verified
    /// directory — a random token is sent through the held descriptor
    /// (`/proc/self/fd/<n>/<name>`) and must arrive on the new socket. If the name was
    /// redirected in between, the token goes nowhere (or elsewhere), the socket is
    /// closed and [`BindingError::Insecure`] says so.
    pub fn bind_datagram(&self, name: &str) -> Result<UnixDatagram, BindingError> {
        let via = self.fd_address(name)?;
        let shown = self.shown_address(name)?;
        let sock = self.bind_with(name, &shown, &shown, crate::peer::bind_datagram_private)?;
        self.prove_datagram(&sock, &via, &shown)?;
        Ok(sock)
    }

    fn prove_datagram(
        &self,
        sock: &UnixDatagram,
        via: &SocketAddress,
        shown: &SocketAddress,
    ) -> Result<(), BindingError> {
        let redirected = |why: String| BindingError::Insecure {
            path: PathBuf::from(shown.display_string()),
            reason: format!(
                "the datagram socket bound at this name is not the one in the verified socket directory {} ({why}); a directory on the way was changed",
                crate::echo::path(&self.inner.shown)
            ),
        };
        let token: [u8; 16] = rand::random();
        let probe = UnixDatagram::unbound()
            .map_err(|e| BindingError::io("create probe socket for", shown, e))?;
        let to = via.to_std().map_err(|e| BindingError::io("encode address", shown, e))?;
        probe
            .send_to_addr(&token, &to)
            .map_err(|e| redirected(format!("the probe through the descriptor failed: {e}")))?;
        sock.set_nonblocking(true).map_err(|e| BindingError::io("set non-blocking", shown, e))?;
        let mut buf = [0u8; 64];
        let found = loop {
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n] == token => break true,
                Ok(_) => {
                    tracing::debug!(path = %shown, "dropped a datagram that arrived before the bind was proved")
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        sock.set_nonblocking(false).map_err(|e| BindingError::io("set blocking", shown, e))?;
        if found {
            Ok(())
        } else {
            Err(redirected("the probe sent through the descriptor did not arrive".into()))
        }
    }

    /// Connect a stream to `name` and check the listener's credentials against `policy`
    /// (`SO_PEERCRED`: uid, and pid where the policy names one).
    pub fn connect_stream(
        &self,
        name: &str,
        policy: &PeerPolicy,
    ) -> Result<UnixStream, BindingError> {
        let via = self.fd_address(name)?;
        let shown = self.shown_address(name)?;
        let std_addr = via.to_std().map_err(|e| BindingError::io("encode address", &shown, e))?;
        let stream = UnixStream::connect_addr(&std_addr)
            .map_err(|e| BindingError::io("connect", &shown, e))?;
        policy.check(stream.as_fd(), name, &shown)?;
        Ok(stream)
    }

    /// Remove socket `name` (only a socket; anything else is left). Missing is fine.
    pub fn remove_socket(&self, name: &str) -> Result<(), BindingError> {
        crate::catalogue::validate_file_name(name).map_err(|e| BindingError::Invalid {
            what: "socket file name".into(),
            reason: e.to_string(),
        })?;
        let shown = self.inner.shown.join(name);
        match nix::sys::stat::fstatat(&self.inner.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_socket(&st) => {}
            Ok(_) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(BindingError::errno("inspect", shown, e)),
        }
        match nix::unistd::unlinkat(&self.inner.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(BindingError::errno("unlink", shown, e)),
        }
    }

    /// Bind at `at` (the descriptor address, or for datagrams the displayed one); a
    /// stale file is probed and removed through the descriptor.
    fn bind_with<T: AsFd>(
        &self,
        name: &str,
        at: &SocketAddress,
        shown: &SocketAddress,
        bind: fn(&SocketAddress) -> io::Result<T>,
    ) -> Result<T, BindingError> {
        let sock = match bind(at) {
            Ok(s) => s,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && self.is_stale(name, &self.fd_address(name)?) =>
            {
                tracing::debug!(path = %shown, "replacing stale socket file");
                let _ = nix::unistd::unlinkat(
                    &self.inner.fd,
                    name,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
                bind(at).map_err(|e| BindingError::io("bind", shown, e))?
            }
            Err(e) => return Err(BindingError::io("bind", shown, e)),
        };
        // The mode was set on the socket before bind; set it on the file again through
        // the held descriptor (portable, and whatever the kernel did with the umask).
        match nix::sys::stat::fchmodat(
            &self.inner.fd,
            name,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        ) {
            Ok(()) => Ok(sock),
            // Bound somewhere else than the verified directory (a datagram socket is
            // bound at its displayed name, which was redirected).
            Err(Errno::ENOENT) => Err(BindingError::Insecure {
                path: PathBuf::from(shown.display_string()),
                reason: format!(
                    "the socket bound at this name is not the one in the verified socket directory {} (no {name} there); a directory on the way was changed",
                    crate::echo::path(&self.inner.shown)
                ),
            }),
            Err(e) => Err(BindingError::errno("chmod 0600", shown, e)),
        }
    }

    /// A socket file at `name` that refuses connections (its listener is gone).
    fn is_stale(&self, name: &str, via: &SocketAddress) -> bool {
        let is_sock = matches!(nix::sys::stat::fstatat(&self.inner.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW),
            Ok(st) if is_socket(&st));
        is_sock
            && via.to_std().is_ok_and(|a| {
                matches!(UnixStream::connect_addr(&a), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
            })
    }
}

impl AsFd for SocketDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for SocketDir {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

fn open_error(path: &Path, e: Errno) -> BindingError {
    match e {
        Errno::ENOTDIR | Errno::ELOOP => BindingError::Insecure {
            path: path.to_owned(),
            reason: format!("the socket directory does not resolve to a directory ({e})"),
        },
        e => BindingError::errno("open socket directory", path, e),
    }
}

#[cfg(test)]
mod tests;
