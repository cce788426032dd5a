//! The conformance kits' skips, through the one skip mechanism
//! (`boxsock_test_support::skip`). The kits are published crates and only return
//! `Outcome::Skipped(reason)`; the workspace decides which of those CI cannot make true.

use boxsock_test_support::{Need, Unmakeable, skip, skip_allowed};

/// Kit skips that are capabilities of the strategy or backend under test, not
/// conditions of the machine (the kits' `Need`s other than root, and checks that find
/// the property absent): CI cannot make them run. Any other kit skip under `CI=true`
/// is a failure. Matched as substrings of the kits' reasons; a reworded reason fails CI
/// until it is listed here again (the safe direction).
pub const CAPABILITY_SKIPS: &[&str] = &[
    "the strategy has no binding_dir()",
    "the strategy has no shared_dir()",
    "the strategy has no binding_path()",
    "the strategy's addresses are not filesystem paths",
    "the strategy's sockets are visible on the filesystem",
    "the strategy's addresses are not scoped to the network namespace",
    "the strategy does not check peer credentials",
    // other_user_datagrams_are_refused on a path strategy: the socket dir is private.
    "the filesystem already protects it",
    // companions_reaped on a backend that starts none (host).
    "the backend launched no companions",
];

/// Record one kit skip of `check` on `subject` (a strategy or backend name).
#[track_caller]
pub fn kit_skip(subject: &str, check: &str, why: &str) {
    if boxsock_conformance::child::request().is_some()
        || boxsock_backend_conformance::in_kit_child()
    {
        // A kit child replays the test to play one role (the strategy kit's) or one
        // check (the backend kit's); its skips of the others are not the run's. The
        // backend kit's were recorded until a second available backend (sandbox) came
        // after host in the registry: its children replayed host's checks as skips.
        return;
    }
    let detail = format!("{subject}::{check}: {why}");
    if CAPABILITY_SKIPS.iter().any(|c| why.contains(c)) {
        skip_allowed(Unmakeable::Capability, detail);
    } else if why.contains("needs root") {
        skip(Need::Root, detail);
    } else if why.contains("unshare(CLONE_NEWNET)") {
        skip(Need::Kernel("network namespaces"), detail);
    } else {
        let by = ".ci/run must make the reason's condition true, or it is listed in \
                  tests/workspace/tests/kit_skips (CAPABILITY_SKIPS) as a capability";
        skip(Need::Setup { what: "a kit check's condition", provided_by: by }, detail);
    }
}
