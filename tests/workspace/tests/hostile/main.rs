//! The hostile-conditions suite: faults, attacks and bad input. Every test is a
//! `scenario!`, and `docs/reliability.md` is generated from their records (see
//! `boxsock_tests::reliability`).

use boxsock_tests::reliability::{
    listed_ids, read_load_record, read_records, records_dir, render_with_load, scenarios,
};

mod attacks;
mod dial_races;
mod fallback;
mod faults;
mod first_use;
mod home;
mod input;
mod lifeline;
mod proc_watch;
mod round3;

/// A scenario's skip (called by `scenario!`), through the one skip mechanism: a failure
/// under `CI=true`. The suite skips for two machine conditions: not root, and a tmpfs
/// mount refused.
#[track_caller]
pub(crate) fn skip_scenario(reason: &str) {
    use boxsock_test_support::{Need, skip};
    let need = if reason.starts_with("needs root") {
        Need::Root
    } else if reason.contains("tmpfs") {
        Need::Kernel("tmpfs mounts")
    } else {
        Need::Setup { what: "a scenario's condition", provided_by: ".ci/run must provide it" }
    };
    skip(need, reason);
}

/// The document lists exactly the registered scenarios, in order.
#[test]
fn reliability_doc_matches_the_scenarios() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reliability.md");
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let listed = listed_ids(&doc);
    let registered: Vec<String> = scenarios().iter().map(|s| s.id.to_owned()).collect();
    assert_eq!(
        listed, registered,
        "docs/reliability.md is out of date with the hostile suite: run scripts/reliability-report.sh"
    );
}

/// Renders `docs/reliability.md` from the records of the last run. Run by
/// `scripts/reliability-report.sh` after the suite; ignored otherwise.
#[test]
#[ignore = "writes docs/reliability.md; run by scripts/reliability-report.sh"]
fn render_reliability_doc() {
    let records = read_records(&records_dir());
    let doc = render_with_load(&scenarios(), &records, read_load_record().as_ref());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reliability.md");
    std::fs::write(path, doc).expect("write docs/reliability.md");
}
