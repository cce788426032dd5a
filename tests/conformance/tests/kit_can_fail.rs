//! The kit must be able to fail: deliberately broken strategies, each breaking one part of
//! the contract, must fail the checks that specify that part (and the correct `direct`
//! strategy must pass them, as a control).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use boxsock_conformance::{Constructor, Outcome, check_named, run_check};
use boxsock_core::binding::{self, Capabilities, PolicyIntent};
use boxsock_core::{
    BindingError, BoxId, BoxLayout, PolicyAccess, PolicyPath, SocketAddress, SocketBinding, StrategyConfig,
    SweepReport, budget,
};
use boxsock_direct::Direct;

/// How a broken strategy is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// Claims home-length independence but is `direct`.
    LiesAboutLength,
    /// Budget check off by one (forgets the NUL).
    OffByOne,
    /// Ignores the box id in addresses.
    SharedAddress,
    /// Joins socket names without validating them.
    NoValidation,
    /// Opens the box's directories to everyone (0777).
    OpenDirs,
    /// Claims its (path) addresses are scoped to the network namespace.
    ClaimsNetns,
    /// Claims nothing appears on the filesystem.
    ClaimsInvisible,
    /// Abstract addresses, claims peer credentials, checks nothing.
    UncheckedAbstract,
    /// `ensure` fails in any process but the first (as a cross-process lock bug would).
    FailsInOtherProcesses,
}

#[derive(Debug)]
struct Broken(Bug);

impl SocketBinding for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = Direct::default().capabilities();
        match self.0 {
            Bug::LiesAboutLength => c.home_length_independent = true,
            Bug::ClaimsNetns => c.netns_scoped = true,
            Bug::ClaimsInvisible => c.filesystem_visible = false,
            Bug::UncheckedAbstract => {
                c.path_addressable = false;
                c.filesystem_visible = false;
                c.peer_credentials = true;
                c.home_length_independent = true;
                c.cross_user = boxsock_core::binding::CrossUserProtection::PeerCredentials;
            }
            _ => {}
        }
        c
    }
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        if self.0 == Bug::SharedAddress {
            std::fs::create_dir_all(layout.home().join("shared")).map_err(|e| BindingError::io("mkdir", layout.home(), e))?;
        }
        if self.0 == Bug::FailsInOtherProcesses && std::env::var_os(boxsock_conformance::child::ENV_ROLE).is_some() {
            return Err(BindingError::io("ensure", layout.home(), std::io::Error::other("lost a cross-process race")));
        }
        if self.0 == Bug::OpenDirs {
            use std::os::unix::fs::PermissionsExt;
            for d in [layout.boxes_dir(), layout.box_dir(id), layout.sockets_dir(id)] {
                let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777));
            }
        }
        Direct::default().ensure(layout, id)
    }
    fn address(&self, layout: &BoxLayout, id: &BoxId, file_name: &str) -> Result<SocketAddress, BindingError> {
        match self.0 {
            Bug::LiesAboutLength
            | Bug::OpenDirs
            | Bug::ClaimsNetns
            | Bug::ClaimsInvisible
            | Bug::FailsInOtherProcesses => {
                Direct::default().address(layout, id, file_name)
            }
            Bug::UncheckedAbstract => {
                use std::hash::{Hash, Hasher};
                binding::socket_path(std::path::Path::new("/"), file_name)?;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                layout.home().hash(&mut h);
                Ok(SocketAddress::Abstract(format!("bsk-kit-broken/{:x}/{id}/{file_name}", h.finish()).into_bytes()))
            }
            Bug::OffByOne => {
                let a = SocketAddress::Path(binding::socket_path(&layout.sockets_dir(id), file_name)?);
                budget::check_limit(file_name, &a, boxsock_core::Platform::current().sun_len() + 1)?;
                Ok(a)
            }
            Bug::SharedAddress => Ok(SocketAddress::Path(binding::socket_path(&layout.home().join("shared"), file_name)?)),
            Bug::NoValidation => Ok(SocketAddress::Path(layout.sockets_dir(id).join(file_name))),
        }
    }
    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        Direct::default().release(layout, id)
    }
    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        Direct::default().sweep(layout)
    }
    fn policy_paths(&self, layout: &BoxLayout, id: &BoxId) -> Result<Vec<PolicyPath>, BindingError> {
        Direct::default().policy_paths(layout, id)
    }
}

/// A naive short-link strategy: clobbers whatever is at the link path, never checks the
/// per-user directory, and release removes the link whatever it points to.
#[derive(Debug)]
struct NaiveLink(PathBuf);

impl NaiveLink {
    fn link(&self, id: &BoxId) -> PathBuf {
        self.0.join(id.as_str())
    }
}

impl SocketBinding for NaiveLink {
    fn name(&self) -> &str {
        "naive-link"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { home_length_independent: true, ..Direct::default().capabilities() }
    }
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        let io = |e| BindingError::io("ensure", self.link(id), e);
        std::fs::create_dir_all(&self.0).map_err(io)?;
        let l = self.link(id);
        let _ = std::fs::remove_file(&l);
        let _ = std::fs::remove_dir_all(&l);
        std::os::unix::fs::symlink(layout.sockets_dir(id), &l).map_err(io)
    }
    fn address(&self, _layout: &BoxLayout, id: &BoxId, file_name: &str) -> Result<SocketAddress, BindingError> {
        Ok(SocketAddress::Path(binding::socket_path(&self.link(id), file_name)?))
    }
    fn release(&self, _layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        let _ = std::fs::remove_file(self.link(id));
        Ok(())
    }
    fn sweep(&self, _layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        Ok(SweepReport::default())
    }
    fn policy_paths(&self, layout: &BoxLayout, id: &BoxId) -> Result<Vec<PolicyPath>, BindingError> {
        Ok(vec![PolicyPath {
            path: self.link(id),
            intent: PolicyIntent::SymlinkToDirectory { target: layout.sockets_dir(id) },
            access: PolicyAccess::Sockets,
        }])
    }
    fn binding_dir(&self) -> Option<PathBuf> {
        Some(self.0.clone())
    }
    fn binding_path(&self, _layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
        Some(self.link(id))
    }
}

fn lies(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::LiesAboutLength)))
}
fn off_by_one(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::OffByOne)))
}
fn shared(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::SharedAddress)))
}
fn unvalidated(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::NoValidation)))
}
fn naive(c: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(NaiveLink(c.per_uid_dir())))
}
fn open_dirs(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::OpenDirs)))
}
fn claims_netns(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::ClaimsNetns)))
}
fn claims_invisible(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::ClaimsInvisible)))
}
fn unchecked_abstract(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::UncheckedAbstract)))
}
fn fails_elsewhere(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Broken(Bug::FailsInOtherProcesses)))
}
fn direct(_: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(Direct::default()))
}

/// Run `check` against `ctor`; true if it failed.
fn fails(check: &str, ctor: Constructor) -> bool {
    let c = check_named(check).expect("known check");
    std::panic::catch_unwind(AssertUnwindSafe(|| run_check(c, ctor))).is_err()
}

fn assert_detects(check: &str, broken: Constructor) {
    assert!(fails(check, broken), "the kit's {check} did not detect the bug");
    assert!(!fails(check, direct), "control: {check} fails on direct");
}

#[test]
fn detects_a_false_home_length_claim() {
    assert_detects("addresses_fit_every_home_length", lies);
}

#[test]
fn detects_an_off_by_one_budget() {
    assert_detects("budget_boundaries_103_104_107_108", off_by_one);
}

#[test]
fn detects_boxes_sharing_an_address() {
    assert_detects("boxes_never_share_an_address", shared);
}

#[test]
fn detects_unvalidated_file_names() {
    assert_detects("invalid_file_names", unvalidated);
}

#[test]
fn detects_a_naive_link_strategy() {
    for check in [
        "refuses_regular_file_at_binding",
        "refuses_directory_at_binding",
        "refuses_link_to_foreign_directory",
        "refuses_symlinked_binding_dir",
        "keeps_binding_spelled_differently",
        "ensure_is_idempotent",
        "repairs_binding_dir_mode",
        "release_leaves_other_home_alone",
        "missing_socket_dir",
        "homes_with_same_id_never_collide",
        "sweep_removes_only_dead_leftovers",
    ] {
        assert!(fails(check, naive), "the kit's {check} did not detect the naive link strategy");
    }
    // What it does right still passes.
    for check in ["round_trip_agent", "datagram_round_trip", "replaces_dangling_binding"] {
        assert!(!fails(check, naive), "{check} fails on what the naive strategy does right");
    }
}

#[test]
fn detects_failures_in_other_processes() {
    // Proves the re-executed children really run ensure and report back. (One check call
    // per test: a re-executed child replays this test up to the matching call, so nothing
    // may assert on a call before it. The control on `direct` is
    // `direct_via_macro::concurrent_ensure_processes`.)
    assert!(fails("concurrent_ensure_processes", fails_elsewhere), "failing children were not noticed");
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root to run peers as another user / in another namespace");
    false
}

#[test]
fn detects_box_sockets_open_to_other_users() {
    if root() {
        assert_detects("other_user_cannot_connect", open_dirs);
        assert_detects("other_user_datagrams_are_refused", open_dirs);
    }
}

#[test]
fn detects_a_false_netns_claim() {
    if root() {
        assert!(fails("other_netns_cannot_connect", claims_netns), "a path strategy claiming netns scope passed");
    }
}

#[test]
fn detects_a_false_invisibility_claim() {
    assert!(fails("no_filesystem_entries", claims_invisible), "a path strategy claiming invisibility passed");
}

#[test]
fn detects_missing_peer_credential_checks() {
    // The abstract round trip works: the strategy is usable, just unsafe.
    assert!(!fails("round_trip_agent", unchecked_abstract), "control: the unchecked abstract strategy cannot round-trip");
    if root() {
        assert!(fails("other_user_cannot_connect", unchecked_abstract), "an unchecked abstract strategy served another uid");
        assert!(fails("impostor_listener_is_rejected", unchecked_abstract), "an impostor listener was trusted");
        assert!(fails("other_user_datagrams_are_refused", unchecked_abstract), "a datagram from another uid was accepted");
    }
}

#[test]
fn checks_without_their_capability_are_skipped_with_a_reason() {
    let c = check_named("other_netns_cannot_connect").expect("known");
    match run_check(c, direct) {
        Outcome::Skipped(why) => assert!(why.contains("network namespace"), "{why}"),
        Outcome::Passed => panic!("a netns check passed on a strategy that is not netns-scoped"),
    }
}

boxsock_conformance::conformance_tests!(direct_via_macro, |_| Ok(std::sync::Arc::new(boxsock_direct::Direct::default())));

#[test]
fn detects_path_strategies_that_bind_and_dial_by_string() {
    // Neither `Broken` nor the naive link strategy provides a verified socket directory:
    // their binds and connects re-resolve the address string (issue 10).
    assert_detects("socket_dir_is_verified_and_held", off_by_one);
    assert!(fails("socket_dir_is_verified_and_held", naive), "the kit did not notice a link strategy without socket_dir");
    assert!(
        fails("swapped_binding_is_refused_at_use", naive),
        "the kit did not notice a link strategy that binds through a swapped link"
    );
}
