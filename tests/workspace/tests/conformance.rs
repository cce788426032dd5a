//! The conformance kit over the built-in strategies (one named test per check), and over
//! every strategy of the facade's registry (`boxsock::builtin_strategies()`: every
//! strategy crate the facade depends on), so that a new strategy cannot skip it.

mod kit_skips;

use boxsock_conformance::{CHECKS, Outcome, conformance_tests, run_all};

conformance_tests!(direct, boxsock_direct::REGISTRATION.build);
conformance_tests!(short_symlink, |c| registered("short-symlink", c));
conformance_tests!(abstract_ns, |c| registered("abstract", c));

/// Build a strategy by its registered name. A built-in strategy that is not registered
/// fails loudly (`registry.rs` asserts they all are).
fn registered(
    name: &str,
    config: &boxsock_core::StrategyConfig,
) -> Result<std::sync::Arc<dyn boxsock_core::SocketBinding>, boxsock_core::BindingError> {
    match boxsock::builtin_strategies().get(name) {
        Ok(reg) => (reg.build)(config),
        Err(e) => panic!("strategy {name:?} is not registered: {e}"),
    }
}

/// Every registered strategy runs every check; failures of all strategies are collected
/// and reported together.
#[test]
fn every_registered_strategy_passes_the_kit() {
    let registry = boxsock::builtin_strategies();
    registry.check_unique().expect("strategy names are unique");
    assert!(!registry.names().is_empty(), "no strategy is linked into this test binary");
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for reg in registry.iter() {
        ran.push(reg.name);
        let report = run_all(reg.build);
        assert_eq!(report.results.len(), CHECKS.len());
        let skipped = report.skipped();
        eprintln!(
            "{}: {} passed, {} skipped, {} failed",
            reg.name,
            report.passed().len(),
            skipped.len(),
            report.failures().len()
        );
        for (check, why) in &skipped {
            kit_skips::kit_skip(reg.name, check, why);
        }
        for (check, msg) in report.failures() {
            failures.push(format!("{}::{check}: {msg}", reg.name));
        }
        assert!(
            report
                .results
                .iter()
                .all(|r| !matches!(r.outcome, Ok(Outcome::Skipped(ref w)) if w.is_empty())),
            "a skip without a reason"
        );
    }
    // The proof of "a strategy is one crate plus one line": the example third-party
    // strategy (strategies/xdg-hashed, one dependency line in cli/Cargo.toml, named
    // nowhere else) is in the registry and went through every check above.
    assert!(
        ran.contains(&"xdg-hashed"),
        "the example strategy xdg-hashed was not in the registry the kit ran on: {ran:?}"
    );
    assert!(failures.is_empty(), "{} check(s) failed:\n{}", failures.len(), failures.join("\n"));
}
