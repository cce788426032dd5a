//! A long-lived runtime holds each running box's binding (decision 0014): its dials go
//! through the binding opened at start, re-checked by one `fstatat` of the link, and do
//! not open the box again; a link swapped after the binding was opened is refused at
//! the next dial.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use boxsock::boxsock_core::binding::{Capabilities, PolicyPath, SweepReport};
use boxsock::boxsock_core::peer::PeerPolicy;
use boxsock::boxsock_core::{PathStrategy, SocketBinding, SocketDir};
use boxsock::{
    BindingError, BoxId, BoxLayout, CreateOptions, ExecIo, Registry, Runtime, RuntimeError,
    StrategyConfig, StrategyRegistration,
};
use boxsock_short_symlink::ShortSymlink;
use common::Env;

/// How often the counted strategy's per-box primitives ran (this test binary only).
static ENSURES: AtomicUsize = AtomicUsize::new(0);
static SOCKET_DIRS: AtomicUsize = AtomicUsize::new(0);

const COUNTED: &str = "short-symlink-counted-test";

/// short-symlink, counting `ensure` and `open_dir`: the work of opening a box.
#[derive(Debug)]
struct Counted(ShortSymlink);

impl PathStrategy for Counted {
    fn name(&self) -> &str {
        COUNTED
    }
    fn capabilities(&self) -> Capabilities {
        PathStrategy::capabilities(&self.0)
    }
    fn sweep(&self, l: &BoxLayout) -> Result<SweepReport, BindingError> {
        PathStrategy::sweep(&self.0, l)
    }
    fn binding_dir(&self) -> Option<std::path::PathBuf> {
        PathStrategy::binding_dir(&self.0)
    }
    fn socket_base(&self, l: &BoxLayout, id: &BoxId) -> Result<std::path::PathBuf, BindingError> {
        self.0.socket_base(l, id)
    }
    fn ensure(&self, l: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        ENSURES.fetch_add(1, Ordering::SeqCst);
        self.0.ensure(l, id)
    }
    fn open_dir(&self, l: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError> {
        SOCKET_DIRS.fetch_add(1, Ordering::SeqCst);
        self.0.open_dir(l, id)
    }
    fn release(&self, l: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        self.0.release(l, id)
    }
    fn policy_paths(&self, l: &BoxLayout, id: &BoxId) -> Result<Vec<PolicyPath>, BindingError> {
        self.0.policy_paths(l, id)
    }
    fn peer_policy(&self) -> PeerPolicy {
        self.0.peer_policy()
    }
    fn binding_path(&self, l: &BoxLayout, id: &BoxId) -> Option<std::path::PathBuf> {
        self.0.binding_path(l, id)
    }
}

fn counted(c: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Counted(ShortSymlink::new(c)?)))
}

static COUNTED_REGISTRATION: StrategyRegistration = StrategyRegistration {
    name: COUNTED,
    summary: "short-symlink counting its opens (test)",
    build: counted,
};

async fn exec_out(rt: &Runtime, id: &str, argv: &[&str]) -> Result<String, RuntimeError> {
    let mut out = Vec::<u8>::new();
    let (mut on_out, mut on_err) = (|b: &[u8]| out.extend_from_slice(b), |_: &[u8]| {});
    let argv = argv.iter().map(|s| s.to_string()).collect();
    rt.exec(id, argv, vec![], ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err })
        .await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_long_lived_runtime_dials_through_the_binding_it_holds_without_opening_the_box_again() {
    let env = Env::new();
    let mut o = env.options();
    o.strategies = Registry::from_entries("strategy", [&COUNTED_REGISTRATION]);
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let b = rt.create(CreateOptions::new(COUNTED, "host")).await.unwrap();
    let id = b.id.to_string();
    rt.start(&id).await.unwrap();
    let (ensures, dirs) = (ENSURES.load(Ordering::SeqCst), SOCKET_DIRS.load(Ordering::SeqCst));
    assert!(
        ensures > 0 && dirs > 0,
        "the counting strategy was not used: {ensures} ensures, {dirs} socket_dirs"
    );
    for i in 0..5 {
        assert_eq!(exec_out(&rt, &id, &["echo", &i.to_string()]).await.unwrap(), format!("{i}\n"));
    }
    rt.ping(&id).await.unwrap();
    assert_eq!(
        (ENSURES.load(Ordering::SeqCst) - ensures, SOCKET_DIRS.load(Ordering::SeqCst) - dirs),
        (0, 0),
        "6 dials of a running box opened it again ((ensures, socket_dirs) since the start)"
    );
    // Control: a second runtime on the home holds no binding of the box; its dial opens it.
    rt.close();
    let mut o = env.options();
    o.strategies = Registry::from_entries("strategy", [&COUNTED_REGISTRATION]);
    o.lock_mode = boxsock::LockMode::Exclusive;
    let (rt, _) = Runtime::open(&env.home, o).await.unwrap();
    let ensures = ENSURES.load(Ordering::SeqCst);
    assert_eq!(exec_out(&rt, &id, &["echo", "fresh"]).await.unwrap(), "fresh\n");
    assert_eq!(
        ENSURES.load(Ordering::SeqCst) - ensures,
        1,
        "a runtime holding nothing opens the box at its first dial"
    );
    assert_eq!(exec_out(&rt, &id, &["echo", "held"]).await.unwrap(), "held\n");
    assert_eq!(ENSURES.load(Ordering::SeqCst) - ensures, 1, "and holds it from then on");
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test]
async fn a_link_swapped_after_the_start_is_refused_at_the_next_dial_and_the_decoy_gets_nothing() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    let id = b.id.to_string();
    rt.start(&id).await.unwrap();
    assert_eq!(exec_out(&rt, &id, &["echo", "one"]).await.unwrap(), "one\n");
    let link = rt
        .strategy("short-symlink")
        .unwrap()
        .inspect_box(rt.layout(), &b.id)
        .unwrap()
        .binding_path();
    let link = link.expect("a link");
    let real = std::fs::read_link(&link).unwrap();
    // The owner's own directory (0700), with a live listener at the agent's name.
    let decoy = env.root.path().join("decoy");
    std::fs::create_dir(&decoy).unwrap();
    std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o700)).unwrap();
    let listener = UnixListener::bind(decoy.join("agent.sock")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let tmp = link.with_extension("swap");
    std::os::unix::fs::symlink(&decoy, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    match exec_out(&rt, &id, &["echo", "two"]).await {
        Err(RuntimeError::Binding(
            BindingError::Occupied { .. } | BindingError::Insecure { .. },
        )) => {}
        other => {
            panic!("a dial after the box's link was swapped to {}: {other:?}", decoy.display())
        }
    }
    assert!(listener.accept().is_err(), "the decoy received a dial");
    // The link put back: the box is reachable again.
    std::os::unix::fs::symlink(&real, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    assert_eq!(exec_out(&rt, &id, &["echo", "three"]).await.unwrap(), "three\n");
    rt.remove(&id, true).await.unwrap();
}
