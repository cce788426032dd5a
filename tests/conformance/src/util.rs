//! Helpers shared by the checks: socket round trips, directory snapshots, the names every
//! budget must cover.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use boxsock_core::catalogue::{self, Binder, DerivedName, SocketKind, SocketSpec};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use boxsock_core::peer::{Listener, PeerPolicy};
use boxsock_core::{
    BindingError, BoxBinding, BoxId, BoxLayout, Opening, PolicyPath, Socket, SocketAddress,
    SocketBinding, SocketDir,
};

/// Generous I/O timeout: only there to turn a hang into a failure.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The network socket as a unixgram backend (gvproxy, vfkit) uses it under libkrun, with
/// both names libkrun derives from it: ≤ 1.18 appends `-krun.sock`; 1.19 binds
/// `krun-net-<pid>-<n>.sock` at its worst-case length.
pub const NET_DATAGRAM: SocketSpec = SocketSpec {
    name: "net",
    kind: SocketKind::Datagram,
    binder: Binder::External("gvproxy"),
    derived: &[
        DerivedName::Suffix("-krun.sock"),
        DerivedName::Sibling("krun-net-4194304-4294967295.sock"),
    ],
};

/// Label of the longest allowed file name in [`budget_names`].
pub const LONGEST_LABEL: &str = "longest allowed name";

/// Every file name the budget checks cover, with its label: the standard catalogue
/// (`AGENT`, `READY`, `NET`), the names libkrun derives for a unixgram network socket, and
/// a name of the longest allowed length (`catalogue::MAX_FILE_NAME_LEN`).
pub fn budget_names() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for spec in [catalogue::AGENT, catalogue::READY, catalogue::NET, NET_DATAGRAM] {
        for (label, file) in spec.all_file_names() {
            if !v.iter().any(|(_, f)| f == &file) {
                v.push((label, file));
            }
        }
    }
    let longest = format!("{}.sock", "l".repeat(catalogue::MAX_FILE_NAME_LEN - ".sock".len()));
    v.push((LONGEST_LABEL.into(), longest));
    v
}

/// The catalogue key of a socket with file name `file` (`agent.sock` → `agent`): the
/// checks bind names of their own (derived names, the longest name, invalid ones),
/// which a test makes into keys. Leaked: a test binds a bounded number of names.
pub fn socket(file: &str) -> Socket {
    let name = file.strip_suffix(".sock").unwrap_or(file);
    SocketSpec {
        name: Box::leak(name.to_owned().into_boxed_str()),
        kind: SocketKind::Stream,
        binder: Binder::Runtime,
        derived: &[],
    }
}

/// One use of a box through a binding opened for it ([`SocketBinding::open_box`]), by
/// file name: what the checks do to a box's sockets. Each call opens the box afresh, as
/// a process that holds nothing does (a CLI command), and asks the binding it gets;
/// nothing here calls a strategy's per-box primitives, which the trait does not have.
pub trait ByFile {
    /// Open box `id` for use (its binding: `ensure`, the directory, the policy).
    fn open(&self, layout: &BoxLayout, id: &BoxId) -> Result<Arc<dyn BoxBinding>, BindingError>;

    /// Open box `id` to look ([`Opening::Inspect`]): nothing made, opened or checked.
    fn look(&self, layout: &BoxLayout, id: &BoxId) -> Result<Arc<dyn BoxBinding>, BindingError>;

    /// Open the box for use and drop the binding: what `ensure` was (the link made or
    /// healed, the directory verified).
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.open(layout, id).map(drop)
    }

    /// The address of socket file `file` of the box: its binding's derivation
    /// ([`BoxBinding::derive`]), opened to look.
    fn address(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file: &str,
    ) -> Result<SocketAddress, BindingError> {
        self.look(layout, id)?.derive(file)
    }

    /// Release the box through a binding opened to look (a box nobody holds).
    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.look(layout, id)?.release()
    }

    /// The box's policy paths, from a binding opened to look (before any `ensure`).
    fn policy_paths(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Vec<PolicyPath>, BindingError> {
        self.look(layout, id)?.policy_paths()
    }

    /// The box's binding path (the link), from a binding opened to look.
    fn binding_path(&self, layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
        self.look(layout, id).ok()?.binding_path()
    }

    /// The verified directory of a binding opened for use (`None`: the binding holds
    /// none).
    fn socket_dir(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Option<SocketDir>, BindingError> {
        Ok(self.open(layout, id)?.dir().cloned())
    }

    /// The peer policy the box's binding enforces, opened to look.
    fn peer_policy(&self, layout: &BoxLayout, id: &BoxId) -> Result<PeerPolicy, BindingError> {
        Ok(self.look(layout, id)?.peer_policy().clone())
    }
    /// Open the box and bind a stream listener at `file`.
    fn bind_stream(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file: &str,
    ) -> Result<Listener, BindingError> {
        self.open(layout, id)?.listen(&socket(file))
    }
    /// Open the box and bind a datagram socket at `file`.
    fn bind_datagram(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file: &str,
    ) -> Result<UnixDatagram, BindingError> {
        self.open(layout, id)?.listen_datagram(&socket(file))
    }
    /// Open the box and connect to `file`.
    fn connect_stream(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        file: &str,
    ) -> Result<UnixStream, BindingError> {
        self.open(layout, id)?.connect(&socket(file), None)
    }
}

impl ByFile for Arc<dyn SocketBinding> {
    fn open(&self, layout: &BoxLayout, id: &BoxId) -> Result<Arc<dyn BoxBinding>, BindingError> {
        self.clone().open_box(layout, id, Opening::Use, &[])
    }

    fn look(&self, layout: &BoxLayout, id: &BoxId) -> Result<Arc<dyn BoxBinding>, BindingError> {
        self.inspect_box(layout, id)
    }
}

/// Unwrap a `BindingError` result with a message naming what was attempted.
#[track_caller]
pub fn ok<T>(what: &str, r: Result<T, BindingError>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

/// Bind a stream listener for `name`, connect to it through the strategy, and exchange a
/// token both ways. Returns the listener so the caller can keep it alive.
#[track_caller]
pub fn stream_round_trip(
    s: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
    name: &str,
) -> Listener {
    let listener = ok(&format!("bind_stream({name})"), s.bind_stream(layout, id, name));
    exchange(s, layout, id, name, &listener, name.as_bytes());
    listener
}

/// Close a listener so that its address is dead at once: `shutdown` first, then drop.
///
/// Dropping alone closes only this descriptor. A process another test's thread is
/// spawning at that moment (a fork before its exec, which closes it) holds a copy of
/// the listener, and a connect in that window succeeds: seen in CI as
/// `connect_without_listener_fails` connecting after the drop, 3 runs in 60. `shutdown`
/// acts on the socket itself, so every copy stops accepting (ECONNREFUSED).
pub fn close_listener(listener: Listener) {
    // SAFETY: shutdown of a descriptor the listener owns; it stays open until the drop.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    drop(listener);
}

/// Connect through the strategy to `listener` (already bound at `name`) and exchange
/// `token` both ways; proves this very listener answered.
#[track_caller]
pub fn exchange(
    s: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
    name: &str,
    listener: &Listener,
    token: &[u8],
) {
    let mut client = ok(&format!("connect_stream({name})"), s.connect_stream(layout, id, name));
    set_timeouts(&client);
    let mut server = accept_timeout(listener, name);
    set_timeouts(&server);
    client.write_all(token).expect("client write");
    let mut buf = vec![0u8; token.len()];
    server.read_exact(&mut buf).expect("server read");
    assert_eq!(buf, token, "{name}: the listener received other bytes than were sent");
    let reply: Vec<u8> = token.iter().rev().copied().collect();
    server.write_all(&reply).expect("server write");
    client.read_exact(&mut buf).expect("client read");
    assert_eq!(buf, reply, "{name}: the client received other bytes than the listener sent");
}

/// Make a listener non-blocking (so a connection that went elsewhere cannot hang a check).
pub fn set_nonblocking(l: &Listener) {
    use std::os::fd::AsRawFd;
    let fd = l.as_raw_fd();
    // SAFETY: fcntl on a valid fd owned by the listener; only the O_NONBLOCK flag changes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Accept one connection that passes the listener's policy, failing after
/// [`IO_TIMEOUT`] (the connection went to another listener, or nowhere).
#[track_caller]
pub fn accept_timeout(listener: &Listener, name: &str) -> UnixStream {
    set_nonblocking(listener);
    let start = std::time::Instant::now();
    loop {
        match listener.accept_once() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                return s;
            }
            Err(BindingError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                assert!(
                    start.elapsed() < IO_TIMEOUT,
                    "{name}: no connection arrived at the listener bound at {} (did it go elsewhere?)",
                    listener.address()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept on {name} at {}: {e} ({e:?})", listener.address()),
        }
    }
}

/// Set read and write timeouts on a stream.
pub fn set_timeouts(s: &UnixStream) {
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("set write timeout");
}

/// One filesystem entry in a [`snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File type as text (`dir`, `file`, `symlink -> target`, `socket`…).
    pub kind: String,
    /// Inode number.
    pub ino: u64,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub len: u64,
}

/// Every entry below `root` (not following symlinks), keyed by path; empty if `root` is
/// missing.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(m) = std::fs::symlink_metadata(p) else { return };
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        format!(
            "symlink -> {}",
            std::fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_default()
        )
    } else if ft.is_dir() {
        "dir".into()
    } else if ft.is_socket() {
        "socket".into()
    } else if ft.is_file() {
        "file".into()
    } else {
        "other".into()
    };
    out.insert(
        p.to_path_buf(),
        Entry { kind, ino: m.ino(), mode: m.mode() & 0o7777, len: m.len() },
    );
    if ft.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                walk(&e.path(), out);
            }
        }
    }
}

/// Describe how two snapshots differ (empty when equal).
pub fn diff(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) -> String {
    let mut s = String::new();
    for (p, e) in after {
        match before.get(p) {
            None => s.push_str(&format!("  created {} ({})\n", p.display(), e.kind)),
            Some(b) if b != e => {
                s.push_str(&format!("  changed {}: {b:?} -> {e:?}\n", p.display()))
            }
            _ => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        s.push_str(&format!("  removed {}\n", p.display()));
    }
    s
}

/// (device, inode) of what `p` resolves to, following symlinks.
pub fn dev_ino(p: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(p)?;
    Ok((m.dev(), m.ino()))
}

/// Whether anything (even a dangling symlink) exists at `p`.
pub fn exists_nofollow(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Replace whatever is at `link` with a symlink to `target`, atomically (temp + rename).
pub fn force_symlink(target: &Path, link: &Path) {
    let tmp = link.with_file_name(format!(".kit-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", tmp.display()));
    std::fs::rename(&tmp, link).unwrap_or_else(|e| panic!("rename over {}: {e}", link.display()));
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Proof that a filesystem entry was not replaced: holds the entry itself (Linux:
/// `O_PATH|O_NOFOLLOW`), so a remove-and-recreate is seen even if the new entry reuses the
/// inode number.
#[derive(Debug)]
pub struct Witness {
    held: Option<std::fs::File>,
    ino: u64,
}

impl Witness {
    /// Witness the entry at `p` (not following a symlink); `None` if nothing is there.
    pub fn of(p: &Path) -> Option<Witness> {
        let ino = std::fs::symlink_metadata(p).ok()?.ino();
        Some(Witness { held: hold(p), ino })
    }

    /// Whether the entry now at `p` is still the one witnessed.
    pub fn unchanged(&self, p: &Path) -> bool {
        let Ok(now) = std::fs::symlink_metadata(p) else { return false };
        if now.ino() != self.ino {
            return false;
        }
        match &self.held {
            // A removed entry has no links left, even if its inode number is reused.
            Some(f) => f.metadata().map(|m| m.nlink() > 0).unwrap_or(false),
            None => true,
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn hold(p: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(p)
        .ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn hold(_p: &Path) -> Option<std::fs::File> {
    None
}
