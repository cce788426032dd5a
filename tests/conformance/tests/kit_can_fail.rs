//! The kit must be able to fail, check by check: for every check in [`CHECKS`] there is a
//! strategy broken for it — a delegating wrapper ([`Broken`]) around a real strategy
//! (`direct`, `short-symlink` or `abstract`) that breaks exactly one behaviour ([`Bug`]) —
//! and the proof asserts that the check fails on it *with that check's own failure*: the
//! report names the check, and the message holds what that check's assertion says (or
//! the `BindingError` variant it asserts). The same real strategy, unbroken, must pass the
//! check in the same run (the control). Checks a capability gates are proved on a broken
//! strategy that has the capability.
//!
//! `every_check_has_a_proof` fails when a check has no proof here, so a new check cannot be
//! added without one.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxsock_conformance::{CHECKS, Constructor, Outcome, Report, check_named, child, run_check};
use boxsock_core::binding::Capabilities;
use boxsock_core::peer::{self, Listener, PeerPolicy};
use boxsock_core::{
    BindingError, BoxId, BoxLayout, DirExpectation, PathStrategy, PolicyAccess, PolicyPath,
    SocketAddress, SocketBinding, SocketDir, StrategyConfig, SweepReport,
};
use boxsock_core::{BoxBinding, Opening, Socket};

/// The real strategy a [`Broken`] wraps (and the control runs unbroken).
#[derive(Debug, Clone, Copy)]
enum Base {
    Direct,
    ShortSymlink,
    Abstract,
}

impl Base {
    fn build(self) -> Constructor {
        match self {
            Base::Direct => boxsock_direct::REGISTRATION.build,
            Base::ShortSymlink => boxsock_short_symlink::REGISTRATION.build,
            Base::Abstract => boxsock_abstract::REGISTRATION.build,
        }
    }
}

/// What stands at a binding path that a [`Bug::Clobbers`] strategy removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Squatter {
    /// A link to an existing directory that is not the box's (another home's live box).
    ForeignLink,
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// The one behaviour a [`Broken`] strategy gets wrong; everything else is the real
/// strategy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// None: the wrapper delegates everything (the control of the wrapper itself).
    None,
    /// `connect_stream` of this socket file is refused.
    ConnectRefused(&'static str),
    /// `bind_datagram` of this socket file returns an unbound socket.
    DatagramUnbound(&'static str),
    /// Claims `home_length_independent`.
    ClaimsHomeLengthIndependent,
    /// The budget forgets the NUL: an address of exactly `sun_path` bytes is handed out.
    BudgetOffByOne,
    /// `ensure` removes the binding and makes it again, every time.
    RecreatesOnEnsure,
    /// `ensure` checks for the binding, then creates it, with no lock: a caller that
    /// loses the race fails with EEXIST.
    RacyCreate,
    /// `ensure` fails in any process but the first (as a cross-process lock bug would).
    FailsInOtherProcesses,
    /// `ensure` refuses a dangling binding as `Occupied` instead of replacing it.
    RefusesDangling,
    /// `ensure` compares the link's text, not what it resolves to, and re-creates it.
    ComparesLinkText,
    /// `ensure` removes what stands at the binding path instead of refusing it.
    Clobbers(Squatter),
    /// `ensure` does not repair a binding directory opened to group and others.
    KeepsOpenMode,
    /// `ensure` chowns a binding directory owned by another user back to the owner.
    AdoptsForeignDir,
    /// `ensure` replaces a binding directory that is a symlink by a real directory.
    ReplacesSymlinkedDir,
    /// `ensure` refuses a squatted shared directory and has no fallback (forever).
    NoFallback,
    /// `release` leaves the binding.
    ReleaseKeepsBinding,
    /// `release` removes the link at the binding path whatever it points to.
    ReleaseRemovesAnyLink,
    /// `sweep` removes nothing.
    SweepsNothing,
    /// `bind_stream` refuses a stale socket file instead of replacing it.
    NoStaleReplace,
    /// `address` ignores the box id.
    AddressIgnoresId,
    /// `address` ignores the home and the box id.
    AddressIgnoresBox,
    /// `address` ignores the home.
    AddressIgnoresHome,
    /// `ensure` records per-instance state in the box directory.
    PersistsState,
    /// `ensure` trusts what it ensured before and checks nothing.
    TrustsItsCache,
    /// `policy_paths` grant read access where sockets need `Sockets`.
    PolicyReadOnly,
    /// `ensure` re-creates the binding when the home is spelled otherwise than last time.
    RecreatesOnOtherSpelling,
    /// `ensure` creates a missing sockets directory instead of failing.
    CreatesMissingSocketDir,
    /// The box's binding holds no directory: binds and connects go by the address string.
    NoSocketDir,
    /// `ensure` takes whatever link leads to a directory as the box's, and `open_dir`
    /// opens the binding path following it, verifying only owner and mode.
    FollowsSwappedLink,
    /// Binds with std's `bind`, whose socket file mode comes from the umask.
    UmaskSockets,
    /// `address` joins the file name without validating it.
    NoValidation,
    /// `bind_stream` unlinks whatever socket is at the address, live or not.
    UnlinksLiveSocket,
    /// `connect_stream` where nothing listens returns a stream to nowhere.
    LazyConnect,
    /// Listeners accept every peer.
    UncheckedAccept,
    /// `peer_policy()` (what datagram receivers check) admits everyone.
    UncheckedDatagrams,
    /// `connect_stream` trusts any listener.
    UncheckedConnect,
    /// Claims its (path) addresses are scoped to the network namespace.
    ClaimsNetns,
    /// Binding a socket also writes a pid file next to the box.
    BindLeavesFile,
    /// A held binding dials through its directory without re-checking that its link
    /// still names it.
    HeldSkipsRecheck,
    /// Opening a box to inspect opens it for use (`ensure`, the directory).
    InspectOpensForUse,
}

/// A real strategy with one [`Bug`]: its stateless answers, and its boxes wrapped in a
/// [`BrokenBox`]. A path strategy's per-box bugs are in [`Prims`], the broken
/// [`PathStrategy`] it opens its boxes through (the core's `Held`, as every path
/// strategy's).
#[derive(Debug)]
struct Broken {
    name: String,
    /// What boxes are opened through: [`Prims`] around a path strategy, or the real
    /// `abstract`.
    inner: Arc<dyn SocketBinding>,
    bug: Bug,
}

/// A real path strategy whose per-box methods have one [`Bug`].
#[derive(Debug)]
struct Prims {
    inner: Arc<dyn PathStrategy>,
    bug: Bug,
    uid: u32,
    /// Distinguishes instances (what [`Bug::PersistsState`] writes).
    instance: u64,
    /// What [`Bug::TrustsItsCache`] and [`Bug::RecreatesOnOtherSpelling`] remember.
    memory: Mutex<HashMap<String, PathBuf>>,
}

fn broken(
    base: Base,
    bug: Bug,
    c: &StrategyConfig,
) -> Result<Arc<dyn SocketBinding>, BindingError> {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    let real = (base.build())(c)?;
    let path: Option<Arc<dyn PathStrategy>> = match base {
        Base::Direct => Some(Arc::new(boxsock_direct::Direct::new(c))),
        Base::ShortSymlink => Some(Arc::new(boxsock_short_symlink::ShortSymlink::new(c)?)),
        Base::Abstract => None,
    };
    let inner: Arc<dyn SocketBinding> = match path {
        Some(inner) => Arc::new(Prims {
            inner,
            bug,
            uid: c.uid,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            memory: Mutex::new(HashMap::new()),
        }),
        None => real.clone(),
    };
    Ok(Arc::new(Broken { name: format!("{}-broken", real.name()), inner, bug }))
}

fn io_err(op: &'static str, at: &Path, e: io::Error) -> BindingError {
    BindingError::io(op, at, e)
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn dev_ino(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Wait (at most 10 s) until a second caller is here too, so that a check-then-act bug
/// loses its race whenever two callers run at once, however the threads are scheduled.
fn meet_a_second_caller() {
    static HERE: AtomicUsize = AtomicUsize::new(0);
    HERE.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while HERE.load(Ordering::SeqCst) < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

const ONE_HOME: &str = "/tmp/bsk-one-home";

fn shared_id() -> BoxId {
    BoxId::parse("shared").expect("a valid id")
}

/// The real path of socket `name` of box `id` (not through any link).
fn socket_file(layout: &BoxLayout, id: &BoxId, name: &str) -> Result<PathBuf, BindingError> {
    boxsock_core::binding::socket_path(&layout.sockets_dir(id), name)
}

fn leave_pid_file(layout: &BoxLayout, id: &BoxId, name: &str) {
    let _ = std::fs::write(
        layout.box_dir(id).join(format!("{name}.pid")),
        std::process::id().to_string(),
    );
}

impl Prims {
    fn binding(&self, layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
        self.inner.binding_path(layout, id)
    }

    fn remember(&self, key: String, value: PathBuf) -> Option<PathBuf> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).insert(key, value)
    }

    /// What the bug does before the real `ensure`; `Some` ends `ensure` there.
    fn before_ensure(&self, layout: &BoxLayout, id: &BoxId) -> Option<Result<(), BindingError>> {
        let bp = self.binding(layout, id);
        let real = std::path::absolute(layout.sockets_dir(id)).ok()?;
        match (self.bug, bp) {
            (Bug::FailsInOtherProcesses, _) if std::env::var_os(child::ENV_ROLE).is_some() => {
                return Some(Err(io_err(
                    "ensure",
                    layout.home(),
                    io::Error::other("lost a cross-process race"),
                )));
            }
            (Bug::RacyCreate, Some(p)) if std::fs::symlink_metadata(&p).is_err() => {
                meet_a_second_caller();
                if let Some(d) = self.inner.binding_dir() {
                    let _ = std::fs::DirBuilder::new().mode(0o700).create(d);
                }
                if let Err(e) = std::os::unix::fs::symlink(&real, &p) {
                    return Some(Err(io_err("create symlink", &p, e)));
                }
            }
            (Bug::RecreatesOnEnsure, Some(p)) if is_symlink(&p) => {
                let _ = std::fs::remove_file(&p);
            }
            (Bug::RefusesDangling, Some(p)) if is_symlink(&p) && std::fs::metadata(&p).is_err() => {
                return Some(Err(BindingError::Occupied {
                    path: p,
                    found: "a dangling link".into(),
                }));
            }
            (Bug::ComparesLinkText, Some(p)) if std::fs::read_link(&p).is_ok_and(|t| t != real) => {
                let _ = std::fs::remove_file(&p);
            }
            (Bug::Clobbers(what), Some(p)) => {
                let Ok(m) = std::fs::symlink_metadata(&p) else { return None };
                match what {
                    Squatter::ForeignLink
                        if m.file_type().is_symlink()
                            && dev_ino(&p).is_some_and(|d| Some(d) != dev_ino(&real)) =>
                    {
                        let _ = std::fs::remove_file(&p);
                    }
                    Squatter::File if m.is_file() => {
                        let _ = std::fs::remove_file(&p);
                    }
                    Squatter::Dir if m.is_dir() => {
                        let _ = std::fs::remove_dir_all(&p);
                    }
                    _ => {}
                }
            }
            (Bug::AdoptsForeignDir, _) => {
                let d = self.inner.binding_dir()?;
                if std::fs::symlink_metadata(&d).is_ok_and(|m| m.uid() != self.uid) {
                    let gid = nix::unistd::getegid().as_raw();
                    let _ = std::os::unix::fs::lchown(&d, Some(self.uid), Some(gid));
                }
            }
            (Bug::NoFallback, _) => {
                let d = self.inner.shared_dir()?;
                let m = std::fs::symlink_metadata(&d).ok()?;
                if m.uid() != self.uid || !m.is_dir() {
                    return Some(Err(BindingError::Insecure {
                        path: d,
                        reason: format!("it is owned by uid {}, not uid {}", m.uid(), self.uid),
                    }));
                }
            }
            (Bug::ReplacesSymlinkedDir, _) => {
                let d = self.inner.binding_dir()?;
                if is_symlink(&d) {
                    let _ = std::fs::remove_file(&d);
                }
            }
            (Bug::TrustsItsCache, _) => {
                let key = format!("{}/{id}", layout.home().display());
                if self.memory.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key) {
                    return Some(Ok(()));
                }
                let r = self.inner.ensure(layout, id);
                if r.is_ok() {
                    self.remember(key, real);
                }
                return Some(r);
            }
            (Bug::RecreatesOnOtherSpelling, Some(p)) => {
                let home = layout.home().to_path_buf();
                if self.remember(id.to_string(), home.clone()).is_some_and(|h| h != home)
                    && is_symlink(&p)
                {
                    let _ = std::fs::remove_file(&p);
                }
            }
            (Bug::CreatesMissingSocketDir, _) => {
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(layout.sockets_dir(id));
            }
            // Whatever link is there and leads to a directory is taken as the box's.
            (Bug::FollowsSwappedLink, Some(p))
                if std::fs::metadata(&p).is_ok_and(|m| m.is_dir()) =>
            {
                return Some(Ok(()));
            }
            _ => {}
        }
        None
    }
}

impl PathStrategy for Prims {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        self.inner.sweep(layout)
    }

    fn binding_dir(&self) -> Option<PathBuf> {
        self.inner.binding_dir()
    }

    fn shared_dir(&self) -> Option<PathBuf> {
        self.inner.shared_dir()
    }

    fn socket_base(&self, layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
        match self.bug {
            Bug::AddressIgnoresId => self.inner.socket_base(layout, &shared_id()),
            Bug::AddressIgnoresBox => {
                self.inner.socket_base(&BoxLayout::new(ONE_HOME), &shared_id())
            }
            Bug::AddressIgnoresHome => self.inner.socket_base(&BoxLayout::new(ONE_HOME), id),
            _ => self.inner.socket_base(layout, id),
        }
    }

    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        if let Some(r) = self.before_ensure(layout, id) {
            return r;
        }
        let d = self.inner.binding_dir();
        let mode_before =
            d.as_deref().and_then(|d| std::fs::symlink_metadata(d).ok()).map(|m| m.mode() & 0o7777);
        self.inner.ensure(layout, id)?;
        match self.bug {
            Bug::KeepsOpenMode => {
                if let (Some(d), Some(m)) = (d, mode_before.filter(|m| m & 0o077 != 0)) {
                    let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(m));
                }
            }
            Bug::PersistsState => {
                let state = layout.box_dir(id).join(format!(
                    "binding-state.{}.{}",
                    std::process::id(),
                    self.instance
                ));
                std::fs::write(&state, b"").map_err(|e| io_err("record state", &state, e))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn open_dir(&self, layout: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError> {
        match (self.bug, self.binding(layout, id)) {
            (Bug::FollowsSwappedLink, Some(p)) => {
                SocketDir::open(&p, DirExpectation { owner: self.uid, identity: None })
            }
            _ => self.inner.open_dir(layout, id),
        }
    }

    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        match (self.bug, self.binding(layout, id)) {
            (Bug::ReleaseKeepsBinding, _) => return Ok(()),
            (Bug::ReleaseRemovesAnyLink, Some(p)) if is_symlink(&p) => {
                std::fs::remove_file(&p).map_err(|e| io_err("unlink", &p, e))?;
            }
            _ => {}
        }
        self.inner.release(layout, id)
    }

    fn policy_paths(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Vec<PolicyPath>, BindingError> {
        let mut pp = self.inner.policy_paths(layout, id)?;
        if self.bug == Bug::PolicyReadOnly {
            for p in &mut pp {
                p.access = PolicyAccess::Read;
            }
        }
        Ok(pp)
    }

    fn peer_policy(&self) -> PeerPolicy {
        self.inner.peer_policy()
    }

    fn binding_path(&self, layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
        self.inner.binding_path(layout, id)
    }
}

impl SocketBinding for Broken {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        match self.bug {
            Bug::ClaimsHomeLengthIndependent => c.home_length_independent = true,
            Bug::ClaimsNetns => c.netns_scoped = true,
            _ => {}
        }
        c
    }

    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        if self.bug == Bug::SweepsNothing {
            return Ok(SweepReport::default());
        }
        self.inner.sweep(layout)
    }

    fn binding_dir(&self) -> Option<PathBuf> {
        self.inner.binding_dir()
    }

    fn shared_dir(&self) -> Option<PathBuf> {
        self.inner.shared_dir()
    }

    fn open_box(
        self: Arc<Self>,
        layout: &BoxLayout,
        id: &BoxId,
        opening: Opening,
        sockets: &[Socket],
    ) -> Result<Arc<dyn BoxBinding>, BindingError> {
        let opening = match (self.bug, opening) {
            (Bug::InspectOpensForUse, Opening::Inspect) => Opening::Use,
            (_, o) => o,
        };
        // Through the (possibly broken) per-box methods.
        let inner = self.inner.clone().open_box(layout, id, opening, sockets)?;
        Ok(Arc::new(BrokenBox {
            bug: self.bug,
            layout: layout.clone(),
            id: id.clone(),
            inner,
            unchecked: PeerPolicy::unchecked(),
        }))
    }
}

/// A box opened by a [`Broken`] strategy: the real binding, with the derivation,
/// listen, connect, policy and re-check bugs.
#[derive(Debug)]
struct BrokenBox {
    bug: Bug,
    layout: BoxLayout,
    id: BoxId,
    inner: Arc<dyn BoxBinding>,
    /// What [`Bug::UncheckedDatagrams`] hands out.
    unchecked: PeerPolicy,
}

impl BrokenBox {
    fn path_of(&self, name: &str) -> Result<(SocketAddress, PathBuf), BindingError> {
        let addr = self.derive(name)?;
        let p = addr.as_path().map(Path::to_path_buf).expect("a path strategy");
        Ok((addr, p))
    }
}

impl BoxBinding for BrokenBox {
    fn id(&self) -> &BoxId {
        &self.id
    }

    fn derive(&self, file_name: &str) -> Result<SocketAddress, BindingError> {
        match self.bug {
            Bug::BudgetOffByOne => match self.inner.derive(file_name) {
                Err(BindingError::PathTooLong { path, len, limit, .. }) if len == limit => {
                    Ok(SocketAddress::Path(PathBuf::from(path)))
                }
                other => other,
            },
            Bug::NoValidation => {
                Ok(SocketAddress::Path(self.layout.sockets_dir(&self.id).join(file_name)))
            }
            _ => self.inner.derive(file_name),
        }
    }

    fn address(&self, socket: &Socket) -> Result<SocketAddress, BindingError> {
        self.inner.address(socket)
    }

    fn addresses(&self) -> std::collections::BTreeMap<String, SocketAddress> {
        self.inner.addresses()
    }

    fn peer_policy(&self) -> &PeerPolicy {
        match self.bug {
            Bug::UncheckedDatagrams => &self.unchecked,
            _ => self.inner.peer_policy(),
        }
    }

    fn dir(&self) -> Option<&SocketDir> {
        match self.bug {
            Bug::NoSocketDir => None,
            _ => self.inner.dir(),
        }
    }

    fn policy_paths(&self) -> Result<Vec<PolicyPath>, BindingError> {
        self.inner.policy_paths()
    }

    fn release(&self) -> Result<(), BindingError> {
        self.inner.release()
    }

    fn binding_path(&self) -> Option<PathBuf> {
        self.inner.binding_path()
    }

    fn check(&self) -> Result<(), BindingError> {
        match self.bug {
            Bug::HeldSkipsRecheck => Ok(()),
            _ => self.inner.check(),
        }
    }

    fn listen(&self, socket: &Socket) -> Result<Listener, BindingError> {
        let (layout, id) = (&self.layout, &self.id);
        let file_name = &socket.file_name();
        match self.bug {
            Bug::NoStaleReplace => {
                let p = socket_file(layout, id, file_name)?;
                if std::fs::symlink_metadata(&p).is_ok() {
                    return Err(io_err("bind", &p, io::Error::from(io::ErrorKind::AddrInUse)));
                }
                self.inner.listen(socket)
            }
            Bug::UnlinksLiveSocket => {
                let _ = std::fs::remove_file(socket_file(layout, id, file_name)?);
                self.inner.listen(socket)
            }
            Bug::UmaskSockets => {
                let (addr, p) = self.path_of(file_name)?;
                let l = UnixListener::bind(&p).map_err(|e| io_err("bind", &p, e))?;
                Ok(Listener::new(l, addr, file_name.to_owned(), self.peer_policy().clone()))
            }
            Bug::UncheckedAccept => {
                let l = self.inner.listen(socket)?;
                let addr = l.address().clone();
                Ok(Listener::new(
                    l.into_inner(),
                    addr,
                    file_name.to_owned(),
                    PeerPolicy::unchecked(),
                ))
            }
            Bug::BindLeavesFile => {
                let l = self.inner.listen(socket)?;
                leave_pid_file(layout, id, file_name);
                Ok(l)
            }
            _ => self.inner.listen(socket),
        }
    }

    fn connect(&self, socket: &Socket, pid: Option<i32>) -> Result<UnixStream, BindingError> {
        let file_name = &socket.file_name();
        match self.bug {
            Bug::ConnectRefused(name) if name == file_name => {
                let addr = self.address(socket)?;
                Err(BindingError::io(
                    "connect",
                    &addr,
                    io::Error::from(io::ErrorKind::ConnectionRefused),
                ))
            }
            Bug::LazyConnect => match self.inner.connect(socket, pid) {
                Err(BindingError::Io { .. }) => {
                    let (nowhere, _) = UnixStream::pair()
                        .map_err(|e| io_err("socketpair", self.layout.home(), e))?;
                    Ok(nowhere)
                }
                other => other,
            },
            Bug::UncheckedConnect => {
                peer::connect_stream_at(&self.address(socket)?, file_name, &PeerPolicy::unchecked())
            }
            Bug::HeldSkipsRecheck => match self.dir() {
                Some(d) => d.connect_stream(file_name, self.peer_policy()),
                None => self.inner.connect(socket, pid),
            },
            _ => self.inner.connect(socket, pid),
        }
    }

    fn listen_datagram(&self, socket: &Socket) -> Result<UnixDatagram, BindingError> {
        let (layout, id) = (&self.layout, &self.id);
        let file_name = &socket.file_name();
        match self.bug {
            Bug::DatagramUnbound(name) if name == file_name => {
                UnixDatagram::unbound().map_err(|e| io_err("socket", layout.home(), e))
            }
            Bug::UmaskSockets => {
                let (_, p) = self.path_of(file_name)?;
                UnixDatagram::bind(&p).map_err(|e| io_err("bind", &p, e))
            }
            Bug::BindLeavesFile => {
                let d = self.inner.listen_datagram(socket)?;
                leave_pid_file(layout, id, file_name);
                Ok(d)
            }
            _ => self.inner.listen_datagram(socket),
        }
    }
}

/// Prove check `name`: it passes on the real strategy `base` (the control) and fails on
/// `broken` (a real strategy with one bug) with a failure that is this check's, holding
/// every string of `says`.
fn prove(name: &str, base: Base, broken: Constructor, says: &[&str]) {
    let check = *check_named(name).unwrap_or_else(|| panic!("the kit has no check {name:?}"));
    if child::request().is_some() {
        // A kit child (re-executed by concurrent_ensure_processes) replays this test:
        // run_check plays the role and exits when it is this child's strategy; nothing
        // is asserted here.
        run_check(&check, broken);
        run_check(&check, base.build());
        return;
    }
    let control = Report::run_each(&[check], |c| c.name, |c| run_check(c, base.build()));
    match &control.results[0].outcome {
        Ok(Outcome::Passed) => {}
        Ok(Outcome::Skipped(why)) => {
            eprintln!("skipped: proof of {name}: the check does not run here on {base:?}: {why}");
            return;
        }
        Err(msg) => panic!("control: {name} fails on the real {base:?} strategy: {msg}"),
    }
    let report = Report::run_each(&[check], |c| c.name, |c| run_check(c, broken));
    match report.failures().as_slice() {
        [(failed, msg)] => {
            assert_eq!(*failed, name, "the report names another check");
            for s in says {
                assert!(
                    msg.contains(s),
                    "{name} failed on the strategy broken for it, \
                     but its message lacks {s:?}:\n{msg}"
                );
            }
        }
        _ => panic!(
            "{name} did not fail on the strategy broken for it: {:?}",
            report.results[0].outcome
        ),
    }
}

/// The control of a proof: the base strategy unbroken, unless the check needs a
/// capability the base only claims (then the real strategy that has it).
macro_rules! control {
    ($base:ident) => {
        Base::$base
    };
    ($base:ident, $control:ident) => {
        Base::$control
    };
}

/// One proof per check: `check: Base with Bug [, control Base] => [what its failure
/// says]`. Each expands to a test `proof::<check>`, and its name into [`PROVEN`].
macro_rules! proofs {
    ($($check:ident: $base:ident with $bug:expr $(, control $control:ident)?
        => [$($says:literal),+ $(,)?];)*) => {
        /// Every check that has a proof.
        const PROVEN: &[&str] = &[$(stringify!($check)),*];

        mod proof {
            use super::*;
            $(
                #[test]
                fn $check() {
                    let control = control!($base $(, $control)?);
                    let says = &[$($says),+];
                    prove(stringify!($check), control, |c| broken(Base::$base, $bug, c), says);
                }
            )*
        }
    };
}

proofs! {
    round_trip_agent: Direct with Bug::ConnectRefused("agent.sock")
        => ["connect_stream(agent.sock): unexpected error"];
    round_trip_ready: Direct with Bug::ConnectRefused("ready.sock")
        => ["connect_stream(ready.sock): unexpected error"];
    round_trip_net: Direct with Bug::ConnectRefused("net.sock")
        => ["connect_stream(net.sock): unexpected error"];
    round_trip_derived_names: Direct with Bug::ConnectRefused("net.sock-krun.sock")
        => ["connect_stream(net.sock-krun.sock): unexpected error"];
    datagram_round_trip: Direct with Bug::DatagramUnbound("net.sock-krun.sock")
        => ["send to the derived socket"];
    addresses_fit_every_home_length: Direct with Bug::ClaimsHomeLengthIndependent
        => ["claims home_length_independent but refused"];
    budget_boundaries_103_104_107_108: Direct with Bug::BudgetOffByOne
        => ["is 108 bytes and does not fit sun_path"];
    ensure_is_idempotent: ShortSymlink with Bug::RecreatesOnEnsure => ["a repeated ensure"];
    concurrent_ensure_threads: ShortSymlink with Bug::RacyCreate
        => ["concurrent ensure failed", "create symlink"];
    concurrent_ensure_processes: Direct with Bug::FailsInOtherProcesses
        => ["cross-process ensure failed", "lost a cross-process race"];
    replaces_dangling_binding: ShortSymlink with Bug::RefusesDangling
        => ["ensure over a dangling binding (the same instance): unexpected error", "Occupied"];
    keeps_binding_spelled_differently: ShortSymlink with Bug::ComparesLinkText
        => ["spelled differently) was replaced"];
    refuses_link_to_foreign_directory: ShortSymlink with Bug::Clobbers(Squatter::ForeignLink)
        => ["with something foreign at", "expected Occupied, got Ok"];
    refuses_regular_file_at_binding: ShortSymlink with Bug::Clobbers(Squatter::File)
        => ["with something foreign at", "expected Occupied, got Ok"];
    refuses_directory_at_binding: ShortSymlink with Bug::Clobbers(Squatter::Dir)
        => ["with something foreign at", "expected Occupied, got Ok"];
    repairs_binding_dir_mode: ShortSymlink with Bug::KeepsOpenMode
        => ["a fresh instance's ensure left", "at 777"];
    refuses_foreign_owned_binding_dir: ShortSymlink with Bug::AdoptsForeignDir
        => ["ensure (fresh instance) put the binding", "a directory it must not use"];
    refuses_symlinked_binding_dir: ShortSymlink with Bug::ReplacesSymlinkedDir
        => ["ensure (same instance) put the binding", "a directory it must not use"];
    squatted_shared_dir_never_stops_a_box: ShortSymlink with Bug::NoFallback
        => ["a squatted shared directory stopped the box (first use)", "Insecure"];
    release_is_idempotent_and_removes_binding: ShortSymlink with Bug::ReleaseKeepsBinding
        => ["release left"];
    release_leaves_other_home_alone: ShortSymlink with Bug::ReleaseRemovesAnyLink
        => ["does not resolve"];
    sweep_removes_only_dead_leftovers: ShortSymlink with Bug::SweepsNothing
        => ["sweep left the dead box's"];
    released_address_is_bindable_again: Direct with Bug::NoStaleReplace
        => ["bind_stream(agent.sock): unexpected error", "AddrInUse"];
    boxes_never_share_an_address: Direct with Bug::AddressIgnoresId
        => ["two boxes share the address of"];
    homes_with_different_ids_never_collide: Direct with Bug::AddressIgnoresBox
        => ["two homes share the address of"];
    homes_with_same_id_never_collide: Direct with Bug::AddressIgnoresHome
        => ["two homes with the same id share the address of"];
    restart_needs_nothing_persisted: Direct with Bug::PersistsState
        => ["a restart had to write", "binding-state"];
    ensure_heals_reaped_binding: ShortSymlink with Bug::TrustsItsCache
        => ["ensure after reaping (same instance): unexpected error"];
    policy_paths_cover_every_address: Direct with Bug::PolicyReadOnly
        => ["is not covered by a Sockets policy path with directory intent"];
    home_through_symlink: ShortSymlink with Bug::RecreatesOnOtherSpelling
        => ["through the other spelling"];
    missing_socket_dir: Direct with Bug::CreatesMissingSocketDir
        => ["without a sockets dir: expected MissingSocketDir, got Ok"];
    socket_dir_is_verified_and_held: Direct with Bug::NoSocketDir
        => ["a path strategy returned no socket_dir()"];
    swapped_binding_is_refused_at_use: ShortSymlink with Bug::FollowsSwappedLink
        => ["expected Insecure or Occupied, got Ok"];
    held_binding_refuses_a_link_swapped_between_dials: ShortSymlink with Bug::HeldSkipsRecheck
        => ["the second dial through a held binding whose link was swapped", "expected Insecure (refused at use), got Ok"];
    inspecting_a_box_makes_nothing_and_refuses_use: ShortSymlink with Bug::InspectOpensForUse
        => ["to inspect made its binding"];
    socket_files_are_private_whatever_the_umask: Direct with Bug::UmaskSockets
        => ["was created mode", "under umask 000"];
    invalid_file_names: Direct with Bug::NoValidation
        => ["address(\"../x\"): expected Invalid, got None"];
    live_address_is_not_rebound: Direct with Bug::UnlinksLiveSocket
        => ["binding a live address again: expected Io(AddrInUse), got Ok"];
    connect_without_listener_fails: Direct with Bug::LazyConnect
        => ["connect before any bind: expected Io, got Ok"];
    other_user_cannot_connect: Abstract with Bug::UncheckedAccept
        => ["uid 65534 reached box socket", "Served"];
    other_user_datagrams_are_refused: Abstract with Bug::UncheckedDatagrams
        => ["and nothing checks senders"];
    impostor_listener_is_rejected: Abstract with Bug::UncheckedConnect
        => ["connecting to an impostor", "expected PeerRejected, got Ok"];
    other_netns_cannot_connect: Direct with Bug::ClaimsNetns, control Abstract
        => ["a peer in another network namespace reached", "Served"];
    no_filesystem_entries: Abstract with Bug::BindLeavesFile
        => ["binding sockets changed the filesystem", "agent.sock.pid"];
}

#[test]
fn every_check_has_a_proof() {
    let missing: Vec<&str> =
        CHECKS.iter().map(|c| c.name).filter(|n| !PROVEN.contains(n)).collect();
    let unknown: Vec<&str> = PROVEN.iter().copied().filter(|n| check_named(n).is_none()).collect();
    assert!(
        missing.is_empty(),
        "checks without a strategy broken for them in kit_can_fail.rs \
         (add a Bug and a proof): {missing:?}"
    );
    assert!(unknown.is_empty(), "proofs of checks the kit does not have: {unknown:?}");
    assert_eq!(PROVEN.len(), CHECKS.len());
    eprintln!("{} of {} checks have a proof", PROVEN.len(), CHECKS.len());
}

/// The wrapper itself changes nothing: without a bug it passes (and skips) exactly what
/// the strategy it wraps does, so each proof's failure is its bug's.
#[test]
fn the_wrapper_without_a_bug_is_the_strategy_it_wraps() {
    let bases: [(Base, Constructor); 3] = [
        (Base::Direct, |c| broken(Base::Direct, Bug::None, c)),
        (Base::ShortSymlink, |c| broken(Base::ShortSymlink, Bug::None, c)),
        (Base::Abstract, |c| broken(Base::Abstract, Bug::None, c)),
    ];
    for (base, wrapped) in bases {
        let real = boxsock_conformance::run_all(base.build());
        let report = boxsock_conformance::run_all(wrapped);
        assert!(real.failures().is_empty(), "{base:?} itself fails: {:#?}", real.failures());
        assert!(
            report.failures().is_empty(),
            "{base:?} wrapped without a bug fails: {:#?}",
            report.failures()
        );
        assert_eq!(report.passed(), real.passed(), "{base:?}: the wrapper passes other checks");
        let skipped = |r: &Report| r.skipped().iter().map(|(c, _)| *c).collect::<Vec<_>>();
        assert_eq!(skipped(&report), skipped(&real), "{base:?}: the wrapper skips other checks");
    }
}

#[test]
fn checks_without_their_capability_are_skipped_with_a_reason() {
    let c = check_named("other_netns_cannot_connect").expect("known");
    match run_check(c, boxsock_direct::REGISTRATION.build) {
        Outcome::Skipped(why) => assert!(why.contains("network namespace"), "{why}"),
        Outcome::Passed => panic!("a netns check passed on a strategy that is not netns-scoped"),
    }
}

boxsock_conformance::conformance_tests!(direct_via_macro, |_| Ok(std::sync::Arc::new(
    boxsock_direct::Direct::default()
)));
