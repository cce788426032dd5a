//! Behaviour of short-symlink on a real filesystem: every test uses its own temporary
//! base directory (never `/tmp/boxsock-<uid>`) and its own temporary home.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use boxsock_core::binding::PolicyIntent;
use boxsock_core::registry::{Registry, StrategyRegistration};
use boxsock_core::{
    BindingError, BoxId, BoxLayout, PathStrategy, PolicyAccess, SocketAddress, SocketBinding,
    StrategyConfig, boxdir,
};
use boxsock_core::{BoxBinding, Opening, catalogue};
use boxsock_short_symlink::{self as ss, ShortSymlink};
use boxsock_test_support::{Need, skip};
use tempfile::TempDir;

/// A path strategy's address of socket file `f` of box `id`: the core's one derivation
/// ([`boxsock_core::boxbinding::path_address`]) from the strategy's `socket_base`, as
/// the box's binding holds it.
trait Addr {
    fn address(&self, l: &BoxLayout, id: &BoxId, f: &str) -> Result<SocketAddress, BindingError>;
}

impl<S: PathStrategy> Addr for S {
    fn address(&self, l: &BoxLayout, id: &BoxId, f: &str) -> Result<SocketAddress, BindingError> {
        boxsock_core::boxbinding::path_address(&self.socket_base(l, id)?, f)
    }
}

struct Fixture {
    base: TempDir,
    home: TempDir,
    layout: BoxLayout,
    id: BoxId,
    s: Arc<ShortSymlink>,
}

impl Fixture {
    /// The box's binding, opened for use.
    fn held(&self) -> Arc<dyn BoxBinding> {
        self.s.clone().open_box(&self.layout, &self.id, Opening::Use, &[]).unwrap()
    }

    fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let layout = BoxLayout::new(home.path());
        let id = BoxId::generate();
        boxdir::create_box_dirs(&layout, &id).unwrap();
        let s = Arc::new(ShortSymlink::new(&config(base.path())).unwrap());
        Fixture { base, home, layout, id, s }
    }

    /// Another strategy instance over the same base (no shared cache: another process).
    fn fresh(&self) -> ShortSymlink {
        ShortSymlink::new(&config(self.base.path())).unwrap()
    }

    fn per_uid(&self) -> PathBuf {
        self.s.per_uid_dir().to_owned()
    }

    fn link(&self) -> PathBuf {
        self.s.link_path(&self.id)
    }
}

fn config(base: &Path) -> StrategyConfig {
    StrategyConfig { base_dir: base.to_owned(), ..StrategyConfig::default() }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Names in the per-user dir other than the given ones (leftover temporary links…).
fn extra_entries(dir: &Path, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect()
}

#[test]
fn registered_under_its_name_and_builds() {
    let r = Registry::<StrategyRegistration>::collected();
    assert!(r.names().contains(&"short-symlink"), "{:?}", r.names());
    let base = tempfile::tempdir().unwrap();
    let s = r.build("short-symlink", &config(base.path())).unwrap();
    assert_eq!(s.name(), "short-symlink");
    assert_eq!(
        s.binding_dir().unwrap(),
        base.path().join(format!("boxsock-{}", nix::unistd::geteuid()))
    );
}

#[test]
fn capabilities_are_as_documented() {
    let f = Fixture::new();
    let c = PathStrategy::capabilities(&*f.s);
    assert!(c.path_addressable && c.filesystem_visible && c.home_length_independent);
    // 0700 directories *and* SO_PEERCRED on every accept and connect (issue 10).
    assert!(c.peer_credentials && !c.netns_scoped);
    assert_eq!(c.cross_user, boxsock_core::binding::CrossUserProtection::Both);
    assert!(f.s.peer_policy().is_checked());
    assert!(
        c.platforms.contains(&boxsock_core::Platform::Linux)
            && c.platforms.contains(&boxsock_core::Platform::MacOs)
    );
}

#[test]
fn bad_config_is_refused_at_build() {
    let rel = StrategyConfig { base_dir: "relative/base".into(), ..StrategyConfig::default() };
    assert!(matches!(ShortSymlink::new(&rel), Err(BindingError::Invalid { .. })));
    for prefix in ["", "a/b", ".x", "a b"] {
        let c = StrategyConfig { prefix: prefix.into(), ..StrategyConfig::default() };
        assert!(matches!(ShortSymlink::new(&c), Err(BindingError::Invalid { .. })), "{prefix:?}");
    }
}

#[test]
fn ensure_creates_a_0700_per_user_dir_and_a_link_to_the_sockets_dir() {
    let f = Fixture::new();
    f.s.ensure(&f.layout, &f.id).unwrap();
    let meta = std::fs::symlink_metadata(f.per_uid()).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(f.s.binding_path(&f.layout, &f.id).unwrap(), f.link());
    assert!(std::fs::symlink_metadata(f.link()).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
    // Idempotent, and nothing else was left in the directory.
    f.s.ensure(&f.layout, &f.id).unwrap();
    f.fresh().ensure(&f.layout, &f.id).unwrap();
    assert!(extra_entries(&f.per_uid(), &[f.id.as_str()]).is_empty());
}

#[test]
fn a_missing_sockets_dir_is_missing_socket_dir() {
    let f = Fixture::new();
    let other = BoxId::generate();
    match f.s.ensure(&f.layout, &other).unwrap_err() {
        BindingError::MissingSocketDir { id, path } => {
            assert_eq!(id, other.as_str());
            assert_eq!(path, f.layout.sockets_dir(&other));
        }
        e => panic!("wrong variant: {e}"),
    }
    assert!(!f.s.link_path(&other).exists());
}

#[test]
fn the_steady_state_heals_after_the_link_or_the_whole_dir_is_reaped() {
    let f = Fixture::new();
    f.s.ensure(&f.layout, &f.id).unwrap();
    // A /tmp cleaner removes the link: the cached fast path must notice.
    std::fs::remove_file(f.link()).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert!(same_file(&f.link(), &f.layout.sockets_dir(&f.id)));
    // …or the whole per-user dir.
    std::fs::remove_dir_all(f.per_uid()).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert!(same_file(&f.link(), &f.layout.sockets_dir(&f.id)));
    assert_eq!(std::fs::metadata(f.per_uid()).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_warm_cache_does_not_trust_a_replaced_parent() {
    // After a cleaner removed our per-user dir, someone puts a symlinked directory in its
    // place, already holding a link to our real sockets dir. A path-based stat of the link
    // would match the cached inode; the held-descriptor check must not, and the slow path
    // must refuse the impostor.
    let f = Fixture::new();
    f.s.ensure(&f.layout, &f.id).unwrap();
    std::fs::remove_dir_all(f.per_uid()).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(f.layout.sockets_dir(&f.id), elsewhere.path().join(f.id.as_str())).unwrap();
    symlink(elsewhere.path(), f.per_uid()).unwrap();
    assert!(same_file(&f.link(), &f.layout.sockets_dir(&f.id)), "the path resolves to our dir");
    let squatted = f.per_uid();
    assert_falls_back(&f, &squatted, &["symlink", &elsewhere.path().display().to_string()]);
}

/// `ensure` with `squatted` (the predictable per-user directory) unusable: the box's
/// link is made in a fresh private fallback, recorded in the home with a note holding
/// every word of `why`; release and sweep work; nothing is made in `squatted`.
fn assert_falls_back(f: &Fixture, squatted: &Path, why: &[&str]) {
    let before = std::fs::symlink_metadata(squatted).map(|m| (m.ino(), m.mode())).ok();
    f.s.ensure(&f.layout, &f.id).unwrap();
    let binding = f.s.binding_path(&f.layout, &f.id).unwrap();
    assert!(!binding.starts_with(squatted), "{} is in the refused directory", binding.display());
    assert!(same_file(&binding, &f.layout.sockets_dir(&f.id)));
    let record =
        boxsock_core::fallback::read_record(f.layout.home(), boxsock_core::fallback::RECORD)
            .expect("a record");
    assert_eq!(Some(record.dir.as_path()), binding.parent());
    for w in why {
        assert!(record.notes[0].contains(w), "{:?} lacks {w}", record.notes);
    }
    let m = std::fs::symlink_metadata(&record.dir).unwrap();
    assert!(m.is_dir() && m.mode() & 0o777 == 0o700);
    // Another instance (another process) agrees, without a new fallback.
    f.fresh().ensure(&f.layout, &f.id).unwrap();
    assert_eq!(f.fresh().binding_path(&f.layout, &f.id).unwrap(), binding);
    PathStrategy::sweep(&*f.s, &f.layout).unwrap();
    f.s.release(&f.layout, &f.id).unwrap();
    assert!(!binding.exists());
    assert_eq!(
        std::fs::symlink_metadata(squatted).map(|m| (m.ino(), m.mode())).ok(),
        before,
        "the refused entry was touched"
    );
}

#[test]
fn an_equivalent_link_is_compared_by_inode_not_by_string() {
    let f = Fixture::new();
    // The same home named three ways: as is, through a symlink, and with `..`.
    let aliases = tempfile::tempdir().unwrap();
    let via_link = aliases.path().join("home-link");
    symlink(f.home.path(), &via_link).unwrap();
    let name = f.home.path().file_name().unwrap();
    let via_dotdot = f.home.path().join("boxes").join("..").join("..").join(name);

    f.s.ensure(&f.layout, &f.id).unwrap();
    let before = std::fs::symlink_metadata(f.link()).unwrap().ino();
    for home in [&via_link, &via_dotdot] {
        let layout = BoxLayout::new(home);
        f.fresh().ensure(&layout, &f.id).unwrap();
        // Accepted as is: not rewritten to the other spelling.
        assert_eq!(std::fs::symlink_metadata(f.link()).unwrap().ino(), before);
        assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
    }
}

#[test]
fn a_dangling_link_is_replaced() {
    let f = Fixture::new();
    std::fs::create_dir(f.per_uid()).unwrap();
    std::fs::set_permissions(f.per_uid(), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("/nonexistent/boxsock/old-home/boxes/x/sockets", f.link()).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
    assert!(extra_entries(&f.per_uid(), &[f.id.as_str()]).is_empty());
}

#[test]
fn a_link_to_something_that_is_not_a_directory_is_replaced() {
    let f = Fixture::new();
    std::fs::create_dir(f.per_uid()).unwrap();
    let file = f.home.path().join("not-a-dir");
    std::fs::write(&file, b"keep me").unwrap();
    symlink(&file, f.link()).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me", "the old target is untouched");
}

#[test]
fn a_link_to_another_existing_directory_is_occupied_and_kept() {
    let f = Fixture::new();
    let other_home = tempfile::tempdir().unwrap();
    let other = BoxLayout::new(other_home.path());
    boxdir::create_box_dirs(&other, &f.id).unwrap();
    // The other home's box owns the link.
    f.fresh().ensure(&other, &f.id).unwrap();
    match f.s.ensure(&f.layout, &f.id).unwrap_err() {
        BindingError::Occupied { path, found } => {
            assert_eq!(path, f.link());
            assert!(
                found.contains(&other.sockets_dir(&f.id).display().to_string())
                    && found.contains("which exists"),
                "{found}"
            );
        }
        e => panic!("wrong variant: {e}"),
    }
    assert_eq!(std::fs::read_link(f.link()).unwrap(), other.sockets_dir(&f.id));
    // Our release must not remove the other home's live link.
    f.s.release(&f.layout, &f.id).unwrap();
    assert_eq!(std::fs::read_link(f.link()).unwrap(), other.sockets_dir(&f.id));
    // Once the other box is gone, its link dangles and ours takes the place.
    boxdir::remove_box_dir(&other, &f.id).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
}

#[test]
fn a_regular_file_or_directory_at_the_link_path_is_never_overwritten() {
    let f = Fixture::new();
    std::fs::create_dir(f.per_uid()).unwrap();
    std::fs::write(f.link(), b"precious").unwrap();
    match f.s.ensure(&f.layout, &f.id).unwrap_err() {
        BindingError::Occupied { path, found } => {
            assert_eq!(path, f.link());
            assert_eq!(found, "a regular file");
        }
        e => panic!("wrong variant: {e}"),
    }
    f.s.release(&f.layout, &f.id).unwrap();
    assert_eq!(std::fs::read(f.link()).unwrap(), b"precious");

    std::fs::remove_file(f.link()).unwrap();
    std::fs::create_dir(f.link()).unwrap();
    std::fs::write(f.link().join("keep"), b"x").unwrap();
    assert!(
        matches!(f.s.ensure(&f.layout, &f.id), Err(BindingError::Occupied { found, .. }) if found == "a directory")
    );
    f.s.release(&f.layout, &f.id).unwrap();
    assert!(f.link().join("keep").exists());
}

#[test]
fn a_symlinked_per_user_dir_is_never_used() {
    let f = Fixture::new();
    let decoy = tempfile::tempdir().unwrap();
    let squatted = f.per_uid();
    symlink(decoy.path(), &squatted).unwrap();
    // Nothing of ours is there: release and sweep have nothing to do.
    f.s.release(&f.layout, &f.id).unwrap();
    assert_eq!(PathStrategy::sweep(&*f.s, &f.layout).unwrap().removed.len(), 0);
    assert_falls_back(&f, &squatted, &["a symlink to", &decoy.path().display().to_string()]);
    assert_eq!(
        std::fs::read_dir(decoy.path()).unwrap().count(),
        0,
        "nothing created through the symlink"
    );
}

#[test]
fn a_per_user_path_that_is_a_file_is_never_used() {
    let f = Fixture::new();
    let squatted = f.per_uid();
    std::fs::write(&squatted, b"").unwrap();
    assert_falls_back(&f, &squatted, &["a regular file"]);
}

#[test]
fn group_and_other_bits_of_the_per_user_dir_are_repaired() {
    let f = Fixture::new();
    std::fs::create_dir(f.per_uid()).unwrap();
    std::fs::set_permissions(f.per_uid(), std::fs::Permissions::from_mode(0o777)).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert_eq!(std::fs::metadata(f.per_uid()).unwrap().permissions().mode() & 0o7777, 0o700);
}

#[test]
fn a_base_others_can_write_without_the_sticky_bit_is_insecure() {
    let f = Fixture::new();
    std::fs::set_permissions(f.base.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(
        matches!(f.s.ensure(&f.layout, &f.id), Err(BindingError::Insecure { path, reason }) if path == f.base.path() && reason.contains("0777"))
    );
    std::fs::set_permissions(f.base.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
}

#[test]
fn root_only_per_user_dir_owned_by_another_uid_is_never_used() {
    if !is_root() {
        skip(Need::Root, "needs root to chown the per-user directory to another uid");
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir(f.per_uid()).unwrap();
    std::fs::set_permissions(f.per_uid(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let squatted = f.per_uid();
    std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).unwrap();
    f.s.release(&f.layout, &f.id).unwrap();
    assert_eq!(PathStrategy::sweep(&*f.s, &f.layout).unwrap().removed.len(), 0);
    assert_falls_back(&f, &squatted, &["owned by uid 65534"]);
    assert_eq!(
        std::fs::read_dir(&squatted).unwrap().count(),
        0,
        "nothing created in another user's directory"
    );
}

#[test]
fn root_only_another_user_cannot_reach_a_socket_through_the_alias() {
    if !is_root() {
        skip(Need::Root, "needs root to fork a child that drops to uid 65534");
        return;
    }
    let f = Fixture::new();
    // A shared, sticky base like /tmp, and a home anyone may traverse: the 0700
    // per-user dir is what keeps `nobody` out of the alias.
    std::fs::set_permissions(f.base.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(f.home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    f.s.ensure(&f.layout, &f.id).unwrap();
    let _l = f.held().listen(&catalogue::AGENT).unwrap();
    let SocketAddress::Path(p) = f.s.address(&f.layout, &f.id, "agent.sock").unwrap() else {
        unreachable!()
    };
    assert_eq!(connect_as_nobody(&p), libc::EACCES);
}

/// Fork, drop to 65534, connect to `path`; returns the child's errno (0 on success).
fn connect_as_nobody(path: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the child only makes async-signal-safe system calls on memory prepared
    // before the fork, and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain system calls on valid arguments; `addr` lives on this stack.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    libc::_exit(100);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let rc = libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                );
                let errno = if rc == 0 { 0 } else { *libc::__errno_location() };
                libc::_exit(errno.min(99));
            }
        }
        pid if pid > 0 => {
            let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            match status {
                nix::sys::wait::WaitStatus::Exited(_, code) => {
                    assert_ne!(code, 100, "child could not drop privileges");
                    code
                }
                other => panic!("child ended as {other:?}"),
            }
        }
        _ => panic!("fork failed"),
    }
}

#[test]
fn a_socket_bound_through_the_alias_is_connectable_and_lives_in_the_real_dir() {
    let f = Fixture::new();
    f.s.ensure(&f.layout, &f.id).unwrap();
    let addr = f.s.address(&f.layout, &f.id, "agent.sock").unwrap();
    assert_eq!(addr, SocketAddress::Path(f.link().join("agent.sock")));
    let listener = f.held().listen(&catalogue::AGENT).unwrap();
    let real = f.layout.sockets_dir(&f.id).join("agent.sock");
    assert!(std::fs::symlink_metadata(&real).unwrap().file_type().is_socket());

    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept_once().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
    });
    let mut c = f.held().connect(&catalogue::AGENT, None).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"PING");
    server.join().unwrap();

    // Datagrams too.
    let d = f.held().listen_datagram(&catalogue::NET).unwrap();
    assert!(
        std::fs::symlink_metadata(f.layout.sockets_dir(&f.id).join("net.sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
    tx.send_to(b"hi", f.link().join("net.sock")).unwrap();
    let mut buf = [0u8; 2];
    assert_eq!(d.recv(&mut buf).unwrap(), 2);
}

#[test]
fn address_validates_the_name_and_does_no_io() {
    let f = Fixture::new();
    let a = f.s.address(&f.layout, &f.id, "ready.sock").unwrap();
    assert_eq!(a.as_path().unwrap(), f.per_uid().join(f.id.as_str()).join("ready.sock"));
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(
            matches!(f.s.address(&f.layout, &f.id, bad), Err(BindingError::Invalid { .. })),
            "{bad:?}"
        );
    }
    assert!(!f.per_uid().exists(), "address must not touch the disk");
}

#[test]
fn policy_paths_state_intent_without_reading_the_disk() {
    let f = Fixture::new();
    // Nothing exists yet (no ensure, no per-user dir): the intent is still explicit.
    let p = f.s.policy_paths(&f.layout, &f.id).unwrap();
    let sockets = f.layout.sockets_dir(&f.id);
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].path, f.link());
    assert_eq!(p[0].intent, PolicyIntent::SymlinkToDirectory { target: sockets.clone() });
    assert_eq!(p[0].access, PolicyAccess::Sockets);
    assert_eq!(
        (p[1].path.clone(), p[1].intent.clone(), p[1].access),
        (sockets, PolicyIntent::Directory, PolicyAccess::Sockets)
    );
    assert_eq!((p[2].path.clone(), p[2].intent.clone()), (f.per_uid(), PolicyIntent::Directory));
    assert!(!f.per_uid().exists());
}

#[test]
fn release_removes_our_link_only_and_is_idempotent() {
    let f = Fixture::new();
    f.s.ensure(&f.layout, &f.id).unwrap();
    f.s.release(&f.layout, &f.id).unwrap();
    assert!(std::fs::symlink_metadata(f.link()).is_err());
    f.s.release(&f.layout, &f.id).unwrap();
    // After release the cache is gone: ensure recreates.
    f.s.ensure(&f.layout, &f.id).unwrap();
    assert!(same_file(&f.link(), &f.layout.sockets_dir(&f.id)));
    // A dangling link (the box dir was removed first) is released too.
    boxdir::remove_box_dir(&f.layout, &f.id).unwrap();
    f.s.release(&f.layout, &f.id).unwrap();
    assert!(std::fs::symlink_metadata(f.link()).is_err());
    // Release with no per-user dir at all is fine.
    std::fs::remove_dir(f.per_uid()).unwrap();
    f.s.release(&f.layout, &f.id).unwrap();
    assert!(!f.per_uid().exists());
}

#[test]
fn sweep_removes_only_dangling_links() {
    let f = Fixture::new();
    f.s.ensure(&f.layout, &f.id).unwrap();
    let dir = f.per_uid();
    // A live link of another home.
    let other_home = tempfile::tempdir().unwrap();
    let other = BoxLayout::new(other_home.path());
    let other_id = BoxId::generate();
    boxdir::create_box_dirs(&other, &other_id).unwrap();
    f.fresh().ensure(&other, &other_id).unwrap();
    // Dangling links: a dead box of this home and one of another home.
    symlink(f.layout.sockets_dir(&BoxId::parse("gone").unwrap()), dir.join("gone")).unwrap();
    symlink("/nonexistent/other-home/boxes/dead/sockets", dir.join("dead")).unwrap();
    // A link looping on itself is dead too.
    symlink(dir.join("loop"), dir.join("loop")).unwrap();
    // Things that are not links.
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    std::fs::create_dir(dir.join("subdir")).unwrap();
    // Temporary links left by processes that died inside ensure (the pid is informative
    // only: under the lock sweep holds, no live process can be using one).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let orphan = format!(".boxsock-tmp.{dead_pid}.0.{}", f.id);
    symlink(f.layout.sockets_dir(&f.id), dir.join(&orphan)).unwrap();
    let orphan2 = format!(".boxsock-tmp.{dead_pid}.1.x");
    symlink("/nonexistent/z", dir.join(&orphan2)).unwrap();
    // A box of this home whose directory exists (its sockets dir does not): its name is
    // left to that box's ensure, so the dangling link is kept.
    let half = BoxId::parse("half").unwrap();
    std::fs::create_dir_all(f.layout.box_dir(&half)).unwrap();
    symlink(f.layout.sockets_dir(&half), dir.join("half")).unwrap();

    let report = PathStrategy::sweep(&*f.s, &f.layout).unwrap();
    let mut removed: Vec<PathBuf> = report.removed.clone();
    removed.sort();
    let mut expected = vec![
        dir.join("dead"),
        dir.join("gone"),
        dir.join("loop"),
        dir.join(&orphan),
        dir.join(&orphan2),
    ];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(report.kept, 5, "{report:?}");
    let mut left = extra_entries(&dir, &[]);
    left.sort();
    let mut want = vec![
        f.id.to_string(),
        other_id.to_string(),
        "notes.txt".into(),
        "subdir".into(),
        "half".into(),
    ];
    want.sort();
    assert_eq!(left, want);
    // The kept links still resolve where they did.
    assert!(same_file(&dir.join(other_id.as_str()), &other.sockets_dir(&other_id)));
    assert!(same_file(&f.link(), &f.layout.sockets_dir(&f.id)));
    // Sweeping again removes nothing; no per-user dir is not an error.
    assert!(PathStrategy::sweep(&*f.s, &f.layout).unwrap().removed.is_empty());
    let g = Fixture::new();
    assert_eq!(PathStrategy::sweep(&*g.s, &g.layout).unwrap(), Default::default());
}

#[test]
fn sixty_four_threads_ensure_the_same_box_at_once() {
    for dangling_first in [false, true] {
        let f = Arc::new(Fixture::new());
        if dangling_first {
            std::fs::create_dir(f.per_uid()).unwrap();
            symlink("/nonexistent/x", f.link()).unwrap();
        }
        let barrier = Arc::new(Barrier::new(64));
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    // Half share one instance (and its cache), half are like separate processes.
                    let own = (i % 2 == 1).then(|| f.fresh());
                    let s = own.as_ref().unwrap_or(&f.s);
                    barrier.wait();
                    s.ensure(&f.layout, &f.id)
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
        assert!(extra_entries(&f.per_uid(), &[f.id.as_str()]).is_empty());
    }
}

const WORKER_ENV: &str = "BOXSOCK_SHORT_SYMLINK_WORKER";

/// Worker body for [`several_processes_ensure_the_same_box_at_once`]: the test binary
/// re-runs itself with only this test selected and the fixture in the environment.
/// Without the variable it checks that it is not mistaken for a worker.
#[test]
fn worker_process_entry() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        assert!(std::env::var_os(WORKER_ENV).is_none());
        return;
    };
    let mut parts = spec.split('\n');
    let (base, home, id) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let layout = BoxLayout::new(home);
    let id = BoxId::parse(id).unwrap();
    let s = Arc::new(ShortSymlink::new(&config(Path::new(base))).unwrap());
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (s, layout, id) = (Arc::clone(&s), layout.clone(), id.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    s.ensure(&layout, &id).unwrap();
                    ShortSymlink::new(&config(s.per_uid_dir().parent().unwrap()))
                        .unwrap()
                        .ensure(&layout, &id)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn several_processes_ensure_the_same_box_at_once() {
    let f = Fixture::new();
    let exe = std::env::current_exe().unwrap();
    let spec = format!("{}\n{}\n{}", f.base.path().display(), f.home.path().display(), f.id);
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "worker_process_entry", "--test-threads=1", "--quiet"])
                .env(WORKER_ENV, &spec)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(std::fs::read_link(f.link()).unwrap(), f.layout.sockets_dir(&f.id));
    assert!(extra_entries(&f.per_uid(), &[f.id.as_str()]).is_empty());
}

#[test]
fn a_sweep_racing_ensure_never_leaves_the_box_without_its_link() {
    // Sweeps hammer the directory while a dangling link of the box is replaced over and
    // over; after each ensure returns, the link must resolve once the sweep is done.
    let f = Arc::new(Fixture::new());
    f.s.ensure(&f.layout, &f.id).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (f, stop) = (Arc::clone(&f), Arc::clone(&stop));
        std::thread::spawn(move || {
            let s = f.fresh();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                PathStrategy::sweep(&s, &f.layout).unwrap();
            }
        })
    };
    for _ in 0..200 {
        let _ = std::fs::remove_file(f.link());
        symlink("/nonexistent/y", f.link()).unwrap_or(());
        f.fresh().ensure(&f.layout, &f.id).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.join().unwrap();
    assert!(same_file(&f.link(), &f.layout.sockets_dir(&f.id)));
    assert!(extra_entries(&f.per_uid(), &[f.id.as_str()]).is_empty());
    let _ = ss::NAME;
}
