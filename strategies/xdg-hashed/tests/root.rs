//! The root directory is created private and refused when it is not ours.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use boxsock_core::{BindingError, BoxId, BoxLayout, SocketBinding, StrategyConfig, boxdir};
use boxsock_core::{Opening, PathStrategy, SocketAddress, catalogue};
use boxsock_test_support::{Need, skip};
use boxsock_xdg_hashed::{Root, XdgHashed, home_hash};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

struct Setup {
    _tmp: tempfile::TempDir,
    run: std::path::PathBuf,
    layout: BoxLayout,
    id: BoxId,
    config: StrategyConfig,
}

fn setup() -> Setup {
    let tmp = tempfile::Builder::new().prefix("bsx-").tempdir_in("/tmp").unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let layout = BoxLayout::new(tmp.path().join("home"));
    let id = BoxId::generate();
    std::fs::create_dir(layout.home()).unwrap();
    boxdir::create_box_dirs(&layout, &id).unwrap();
    let config = StrategyConfig { base_dir: tmp.path().to_owned(), ..StrategyConfig::default() };
    Setup { _tmp: tmp, run, layout, id, config }
}

fn xdg(s: &Setup) -> XdgHashed {
    XdgHashed::with_root(&s.config, Root::Xdg { path: s.run.join("boxsock") }).unwrap()
}

/// The address of the box's agent socket: the core's derivation from the box's link.
fn address(x: &XdgHashed, layout: &BoxLayout, id: &BoxId) -> SocketAddress {
    let base = x.socket_base(layout, id).unwrap();
    boxsock_core::boxbinding::path_address(&base, "agent.sock").unwrap()
}

#[test]
fn ensure_makes_a_private_root_and_a_hashed_home_dir_linking_to_the_sockets() {
    let s = setup();
    let x = std::sync::Arc::new(xdg(&s));
    x.ensure(&s.layout, &s.id).unwrap();
    let root = s.run.join("boxsock");
    let m = std::fs::symlink_metadata(&root).unwrap();
    assert!(m.is_dir() && m.mode() & 0o7777 == 0o700, "root mode {:o}", m.mode());
    let home = std::path::absolute(s.layout.home()).unwrap();
    let link = root.join(home_hash(&home)).join(s.id.as_str());
    assert_eq!(std::fs::read_link(&link).unwrap(), s.layout.sockets_dir(&s.id));
    let addr = address(&x, &s.layout, &s.id);
    assert_eq!(addr, boxsock_core::SocketAddress::Path(link.join("agent.sock")));
    // Bound through the hashed directory, the socket file is in the box's directory.
    let l = x
        .clone()
        .open_box(&s.layout, &s.id, Opening::Use, &[])
        .and_then(|b| b.listen(&catalogue::AGENT))
        .unwrap();
    assert!(s.layout.sockets_dir(&s.id).join("agent.sock").exists());
    drop(l);
}

#[test]
fn a_symlinked_root_is_refused_and_left_alone() {
    let s = setup();
    let elsewhere = s.run.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, s.run.join("boxsock")).unwrap();
    match xdg(&s).ensure(&s.layout, &s.id) {
        Err(BindingError::Insecure { path, reason }) => {
            assert_eq!(path, s.run.join("boxsock"));
            assert!(reason.contains("not a directory"), "{reason}");
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "something was made through the symlink"
    );
}

#[test]
fn a_root_of_another_user_is_refused() {
    if !is_root() {
        skip(Need::Root, "needs root to chown the root to nobody");
        return;
    }
    let s = setup();
    let root = s.run.join("boxsock");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).unwrap();
    match xdg(&s).ensure(&s.layout, &s.id) {
        Err(BindingError::Insecure { path, reason }) => {
            assert_eq!(path, root);
            assert!(reason.contains(&format!("uid {NOBODY}")), "{reason}");
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn a_runtime_dir_others_can_read_is_refused_and_a_loose_root_is_repaired() {
    let s = setup();
    std::fs::set_permissions(&s.run, std::fs::Permissions::from_mode(0o755)).unwrap();
    match xdg(&s).ensure(&s.layout, &s.id) {
        Err(BindingError::Insecure { path, reason }) => {
            assert_eq!(path, s.run);
            assert!(reason.contains("0755") && reason.contains("XDG_RUNTIME_DIR"), "{reason}");
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
    assert!(!s.run.join("boxsock").exists(), "made a root in a runtime dir that is not private");
    std::fs::set_permissions(&s.run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = s.run.join("boxsock");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    xdg(&s).ensure(&s.layout, &s.id).unwrap();
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o700);
}

#[test]
fn two_homes_with_one_id_get_two_directories() {
    let s = setup();
    let other = BoxLayout::new(Path::new(s.layout.home()).with_file_name("home2"));
    std::fs::create_dir(other.home()).unwrap();
    boxdir::create_box_dirs(&other, &s.id).unwrap();
    let x = xdg(&s);
    x.ensure(&s.layout, &s.id).unwrap();
    x.ensure(&other, &s.id).unwrap();
    assert_ne!(address(&x, &s.layout, &s.id), address(&x, &other, &s.id));
    // A sweep of one home looks only at that home's directory.
    std::fs::remove_dir_all(other.box_dir(&s.id)).unwrap();
    assert!(PathStrategy::sweep(&x, &s.layout).unwrap().removed.is_empty());
    assert_eq!(PathStrategy::sweep(&x, &other).unwrap().removed.len(), 1);
}

#[test]
fn a_root_removed_by_a_cleaner_is_made_again() {
    let s = setup();
    let x = std::sync::Arc::new(xdg(&s));
    x.ensure(&s.layout, &s.id).unwrap();
    std::fs::remove_dir_all(s.run.join("boxsock")).unwrap();
    x.ensure(&s.layout, &s.id).unwrap();
    drop(
        x.clone()
            .open_box(&s.layout, &s.id, Opening::Use, &[])
            .and_then(|b| b.listen(&catalogue::AGENT))
            .unwrap(),
    );
    assert!(s.layout.sockets_dir(&s.id).join("agent.sock").exists());
    // And a root swapped for a symlink after the first check is refused, not followed.
    std::fs::remove_dir_all(s.run.join("boxsock")).unwrap();
    let elsewhere = s.run.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, s.run.join("boxsock")).unwrap();
    assert!(matches!(x.ensure(&s.layout, &s.id), Err(BindingError::Insecure { .. })));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}
