//! The boxsock conformance kit: the executable specification of
//! [`SocketBinding`](boxsock_core::SocketBinding).
//!
//! Every check is a plain public function taking a [`Kit`] (a fresh temporary world plus
//! a freshly built strategy), listed in [`CHECKS`] with the capabilities it [`Need`]s.
//! Checks whose needs the strategy (or the machine) does not meet are reported as
//! [`Outcome::Skipped`] with the reason and print `skipped: <check>: <reason>`; they are
//! never silently passed. A failing check panics with a message naming the strategy, the
//! socket, the path and what was expected; checks assert on [`BindingError`] *variants*,
//! so the error enum is part of the contract.
//!
//! Run the whole kit against a strategy from any crate with one line:
//!
//! ```ignore
//! boxsock_conformance::conformance_tests!(my_strategy, my_crate::REGISTRATION.build);
//! ```
//!
//! which expands to a module `my_strategy` with one `#[test]` per check. Or iterate
//! yourself with [`run_all`].
//!
//! The kit never uses a fixed shared path: every check gets its own directory under
//! `/tmp`, removed afterwards. Checks that need root, namespaces or another user run the
//! peer in a forked child that drops to `nobody`; the ones that need other processes
//! re-execute the test binary (see [`child`]).

use boxsock_core::{BindingError, BoxId, BoxLayout, SocketBinding};
use std::sync::Arc;
use util::ByFile;

pub mod checks;
pub mod child;
pub mod fork;
pub mod harness;
pub mod report;
pub mod util;

pub use harness::{Constructor, Harness, Kit, KitError};
pub use report::{CheckResult, Outcome, Report, panic_message};

/// A requirement a check has of the strategy or of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root (to chown to another user, drop to `nobody`, unshare namespaces).
    Root,
    /// The strategy has a shared binding directory (`SocketBinding::binding_dir`).
    BindingDir,
    /// The strategy keeps a predictable directory in a shared base
    /// (`SocketBinding::shared_dir`).
    SharedDir,
    /// The strategy creates one filesystem entry per box (a binding's `BoxBinding::binding_path`).
    BindingPath,
    /// Addresses are filesystem paths (`Capabilities::path_addressable`).
    PathAddressable,
    /// Nothing appears on the filesystem for sockets (`!Capabilities::filesystem_visible`).
    NotFilesystemVisible,
    /// Addresses are scoped to the network namespace (`Capabilities::netns_scoped`).
    NetnsScoped,
    /// Listeners and connectors check peer credentials (`Capabilities::peer_credentials`).
    PeerCredentials,
}

impl Need {
    /// Why `strategy` (on this machine) does not meet this need, if it does not.
    pub fn unmet(self, strategy: &Arc<dyn SocketBinding>) -> Option<String> {
        let caps = strategy.capabilities();
        let probe = BoxLayout::new("/nonexistent-boxsock-kit-probe");
        let id = BoxId::parse("probe").expect("valid id");
        let ok = match self {
            Need::Root => util::is_root(),
            Need::BindingDir => strategy.binding_dir().is_some(),
            Need::SharedDir => strategy.shared_dir().is_some(),
            Need::BindingPath => strategy.binding_path(&probe, &id).is_some(),
            Need::PathAddressable => caps.path_addressable,
            Need::NotFilesystemVisible => !caps.filesystem_visible,
            Need::NetnsScoped => caps.netns_scoped,
            Need::PeerCredentials => caps.peer_credentials,
        };
        if ok {
            return None;
        }
        Some(
            match self {
                Need::Root => "needs root (CI runs as root)",
                Need::BindingDir => "the strategy has no binding_dir()",
                Need::SharedDir => "the strategy has no shared_dir()",
                Need::BindingPath => "the strategy has no binding_path()",
                Need::PathAddressable => "the strategy's addresses are not filesystem paths",
                Need::NotFilesystemVisible => {
                    "the strategy's sockets are visible on the filesystem"
                }
                Need::NetnsScoped => {
                    "the strategy's addresses are not scoped to the network namespace"
                }
                Need::PeerCredentials => "the strategy does not check peer credentials",
            }
            .to_owned(),
        )
    }
}

/// One check of the specification.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Its name (also the name of the `#[test]` the macro generates).
    pub name: &'static str,
    /// What it requires; unmet needs skip it with the reason.
    pub needs: &'static [Need],
    /// The check. Panics on failure.
    pub run: fn(&Kit) -> Outcome,
}

macro_rules! check {
    ($name:ident $(, $need:ident)*) => {
        Check { name: stringify!($name), needs: &[$(Need::$need),*], run: checks::$name }
    };
}

/// Every check, in the order they run.
pub const CHECKS: &[Check] = &[
    check!(round_trip_agent),
    check!(round_trip_ready),
    check!(round_trip_net),
    check!(round_trip_derived_names),
    check!(datagram_round_trip),
    check!(addresses_fit_every_home_length),
    check!(budget_boundaries_103_104_107_108),
    check!(ensure_is_idempotent),
    check!(concurrent_ensure_threads),
    check!(concurrent_ensure_processes),
    check!(replaces_dangling_binding, BindingPath),
    check!(keeps_binding_spelled_differently, BindingPath),
    check!(refuses_link_to_foreign_directory, BindingPath),
    check!(refuses_regular_file_at_binding, BindingPath),
    check!(refuses_directory_at_binding, BindingPath),
    check!(repairs_binding_dir_mode, BindingDir),
    check!(refuses_foreign_owned_binding_dir, BindingDir, Root),
    check!(refuses_symlinked_binding_dir, BindingDir),
    check!(squatted_shared_dir_never_stops_a_box, SharedDir, Root),
    check!(release_is_idempotent_and_removes_binding),
    check!(release_leaves_other_home_alone),
    check!(sweep_removes_only_dead_leftovers),
    check!(released_address_is_bindable_again),
    check!(boxes_never_share_an_address),
    check!(homes_with_different_ids_never_collide),
    check!(homes_with_same_id_never_collide),
    check!(restart_needs_nothing_persisted),
    check!(ensure_heals_reaped_binding, BindingPath),
    check!(policy_paths_cover_every_address),
    check!(home_through_symlink),
    check!(missing_socket_dir, PathAddressable),
    check!(socket_dir_is_verified_and_held, PathAddressable),
    check!(swapped_binding_is_refused_at_use, BindingPath),
    check!(held_binding_refuses_a_link_swapped_between_dials, BindingPath),
    check!(inspecting_a_box_makes_nothing_and_refuses_use),
    check!(socket_files_are_private_whatever_the_umask, PathAddressable),
    check!(invalid_file_names),
    check!(live_address_is_not_rebound),
    check!(connect_without_listener_fails),
    check!(other_user_cannot_connect, Root),
    check!(other_user_datagrams_are_refused, Root),
    check!(impostor_listener_is_rejected, PeerCredentials, Root),
    check!(other_netns_cannot_connect, NetnsScoped, Root),
    check!(no_filesystem_entries, NotFilesystemVisible),
];

/// Look up a check by name.
pub fn check_named(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

fn skip(check: &Check, strategy: &str, reason: String) -> Outcome {
    eprintln!("skipped: {}: {reason} (strategy {strategy})", check.name);
    Outcome::Skipped(reason)
}

/// Run one check against a fresh instance built by `ctor` in a fresh [`Harness`].
/// Panics if the check fails; prints and returns [`Outcome::Skipped`] if it does not
/// apply. Inside a kit child process (see [`child`]) it plays the requested role and
/// exits instead.
pub fn run_check(check: &Check, ctor: Constructor) -> Outcome {
    if let Some(req) = child::request() {
        return child_mode(check, ctor, req);
    }
    let kit = match Kit::new(ctor) {
        Ok(k) => k,
        Err(KitError::Build(BindingError::Unsupported { strategy, what, reason })) => {
            return skip(
                check,
                &strategy,
                format!("the strategy does not support {what} here: {reason}"),
            );
        }
        Err(e) => panic!("{}: {e}", check.name),
    };
    let name = kit.strategy.name().to_owned();
    if !kit.caps().supported_here() {
        return skip(
            check,
            &name,
            format!("the strategy does not support {}", boxsock_core::Platform::current().name()),
        );
    }
    for need in check.needs {
        if let Some(reason) = need.unmet(&kit.strategy) {
            return skip(check, &name, reason);
        }
    }
    match (check.run)(&kit) {
        Outcome::Skipped(reason) => skip(check, &name, reason),
        Outcome::Passed => Outcome::Passed,
    }
}

fn child_mode(check: &Check, ctor: Constructor, req: child::ChildRequest) -> Outcome {
    if req.check != check.name {
        return Outcome::Skipped("kit child: another check".into());
    }
    let Some(args) = child::EnsureArgs::decode(&req.args) else {
        eprintln!("kit child: undecodable arguments {:?}", req.args);
        std::process::exit(child::CHILD_FAILED);
    };
    let strategy = match ctor(&args.config) {
        Ok(s) => s,
        Err(_) => return Outcome::Skipped("kit child: another strategy".into()),
    };
    if strategy.name() != req.strategy {
        return Outcome::Skipped("kit child: another strategy".into());
    }
    match child::run_ensure_role(&strategy, &args) {
        Ok(()) => std::process::exit(child::CHILD_OK),
        Err(e) => {
            eprintln!("kit child: {e}");
            std::process::exit(child::CHILD_FAILED)
        }
    }
}

/// Run the check called `name` (the macro's entry point). Panics on an unknown name.
pub fn run_named(name: &str, ctor: Constructor) -> Outcome {
    let check =
        check_named(name).unwrap_or_else(|| panic!("the conformance kit has no check {name:?}"));
    run_check(check, ctor)
}

/// Run every check against `ctor`, catching failures so that all are reported.
pub fn run_all(ctor: Constructor) -> Report {
    Report::run_each(CHECKS, |c| c.name, |c| run_check(c, ctor))
}

/// Assert that `names` (the tests a [`conformance_tests!`] expansion generated) are
/// exactly the names in [`CHECKS`].
pub fn assert_covers(names: &[&str]) {
    report::assert_same_checks("conformance_tests!", CHECKS.iter().map(|c| c.name), names);
}

/// Expand to a module `$module` with one `#[test]` per check of the kit, each running the
/// check against a fresh instance built by `$ctor` (a
/// `fn(&StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError>`, such as a
/// registration's `build`).
///
/// ```ignore
/// use my_strategy as _; // the linking rule
/// boxsock_conformance::conformance_tests!(my_strategy_kit, my_strategy::REGISTRATION.build);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $ctor:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_test_fns!(
                $ctor;
                round_trip_agent,
                round_trip_ready,
                round_trip_net,
                round_trip_derived_names,
                datagram_round_trip,
                addresses_fit_every_home_length,
                budget_boundaries_103_104_107_108,
                ensure_is_idempotent,
                concurrent_ensure_threads,
                concurrent_ensure_processes,
                replaces_dangling_binding,
                keeps_binding_spelled_differently,
                refuses_link_to_foreign_directory,
                refuses_regular_file_at_binding,
                refuses_directory_at_binding,
                repairs_binding_dir_mode,
                refuses_foreign_owned_binding_dir,
                refuses_symlinked_binding_dir,
                squatted_shared_dir_never_stops_a_box,
                release_is_idempotent_and_removes_binding,
                release_leaves_other_home_alone,
                sweep_removes_only_dead_leftovers,
                released_address_is_bindable_again,
                boxes_never_share_an_address,
                homes_with_different_ids_never_collide,
                homes_with_same_id_never_collide,
                restart_needs_nothing_persisted,
                ensure_heals_reaped_binding,
                policy_paths_cover_every_address,
                home_through_symlink,
                missing_socket_dir,
                socket_dir_is_verified_and_held,
                swapped_binding_is_refused_at_use,
                held_binding_refuses_a_link_swapped_between_dials,
                inspecting_a_box_makes_nothing_and_refuses_use,
                socket_files_are_private_whatever_the_umask,
                invalid_file_names,
                live_address_is_not_rebound,
                connect_without_listener_fails,
                other_user_cannot_connect,
                other_user_datagrams_are_refused,
                impostor_listener_is_rejected,
                other_netns_cannot_connect,
                no_filesystem_entries,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ($ctor:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let ctor: $crate::Constructor = $ctor;
                $crate::run_named(stringify!($name), ctor);
            }
        )*

        #[test]
        fn every_check_has_a_test() {
            $crate::assert_covers(&[$(stringify!($name)),*]);
        }
    };
}
