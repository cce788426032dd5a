//! The backend conformance kit (`boxsock-backend-conformance`) over every backend of the
//! facade's registry (`boxsock::builtin_backends()`: every backend crate the facade
//! depends on), so that a new backend cannot skip it. A backend that cannot launch
//! boxes on this machine (`Backend::available_for_launch`: libkrun on a host whose
//! `/dev/kvm` cannot boot a guest) is skipped with its reason, printed; the real-VM tier
//! (`tests/vm`, scenario `backend_kit`) runs the kit on libkrun.
//!
//! The kit runs each check in a process of its own (it makes that process a child
//! subreaper to look for strays among its descendants).

mod kit_skips;

use boxsock_backend_conformance::{CHECKS, Target, run_all};
use boxsock_core::backend::{Availability, BackendConfig};
use boxsock_test_support::{Unmakeable, skip_allowed};

#[test]
fn every_registered_backend_passes_the_backend_kit() {
    let registry = boxsock::builtin_backends();
    registry.check_unique().expect("backend names are unique");
    let helper_dir = boxsock_host::dev::built_binaries(&["boxsock-agent"]);
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for reg in registry.iter() {
        let target = Target::new(
            reg,
            BackendConfig { helper_dir: Some(helper_dir.clone()), ..Default::default() },
        );
        let backend = (reg.build)(&target.config)
            .unwrap_or_else(|e| panic!("backend {:?} cannot be built: {e}", reg.name));
        let unavailable = match backend.available_for_launch() {
            Availability::Unavailable { reason } => {
                // One record for the backend, not one per check it could not run. Only
                // libkrun may be unavailable here: no hardware KVM on CI's machine kind.
                let detail = format!("backend {:?}: cannot launch boxes here: {reason}", reg.name);
                assert_eq!(reg.name, "libkrun", "{detail}");
                skip_allowed(Unmakeable::NoHardwareKvm, detail);
                true
            }
            Availability::Available => false,
        };
        let report = run_all(&target);
        assert_eq!(report.results.len(), CHECKS.len());
        eprintln!(
            "{}: {} passed, {} skipped, {} failed",
            reg.name,
            report.passed().len(),
            report.skipped().len(),
            report.failures().len()
        );
        for (check, why) in report.skipped() {
            assert!(!why.is_empty(), "{}::{check} skipped without a reason", reg.name);
            if !unavailable {
                kit_skips::kit_skip(reg.name, check, why);
            }
        }
        for (check, msg) in report.failures() {
            failures.push(format!("{}::{check}: {msg}", reg.name));
        }
        if !report.passed().is_empty() {
            ran.push(reg.name);
        }
    }
    assert!(failures.is_empty(), "backend kit failures:\n{}", failures.join("\n\n"));
    // Each check ran in a process of its own: this one never became a subreaper.
    let mut flag: libc::c_int = -1;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer we pass.
    let r = unsafe {
        libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut flag as *mut libc::c_int, 0, 0, 0)
    };
    assert_eq!(
        (r, flag),
        (0, 0),
        "the test process became a child subreaper: the kit ran a check in it"
    );
    // The reference backend runs everywhere this suite runs: it must really be checked.
    assert!(ran.contains(&"host"), "the host backend ran no check (ran: {ran:?})");
}
