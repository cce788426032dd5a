//! What a kit run concludes, shared by this strategy kit and the backend kit
//! (`boxsock-backend-conformance` re-exports these): a check's [`Outcome`], the
//! [`Report`] of a whole run, and the plumbing that catches failing checks.

use std::panic::AssertUnwindSafe;

/// What a check concluded (failures panic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The check does not apply; the reason says why.
    Skipped(String),
}

/// The result of one check in a kit's `run_all`.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check.
    pub check: &'static str,
    /// Its outcome, or the failure message.
    pub outcome: Result<Outcome, String>,
}

/// What a kit's `run_all` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per check.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// The failed checks with their messages.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.results
            .iter()
            .filter_map(|r| r.outcome.as_ref().err().map(|m| (r.check, m.as_str())))
            .collect()
    }

    /// Names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Ok(Outcome::Passed)))
            .map(|r| r.check)
            .collect()
    }

    /// The skipped checks with their reasons.
    pub fn skipped(&self) -> Vec<(&'static str, &str)> {
        self.results
            .iter()
            .filter_map(|r| match &r.outcome {
                Ok(Outcome::Skipped(why)) => Some((r.check, why.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Run `run` on each check in turn, catching failures (panics) so that all are
    /// reported; `name` names a check in the report.
    pub fn run_each<C>(
        checks: &[C],
        name: impl Fn(&C) -> &'static str,
        run: impl Fn(&C) -> Outcome,
    ) -> Report {
        let results = checks
            .iter()
            .map(|c| CheckResult {
                check: name(c),
                outcome: std::panic::catch_unwind(AssertUnwindSafe(|| run(c)))
                    .map_err(|p| panic_message(&*p)),
            })
            .collect();
        Report { results }
    }
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Assert that `got` (the tests a kit macro generated) are exactly the check names
/// `want`, whatever the order; `macro_name` names the macro in the failure.
pub fn assert_same_checks<'a>(
    macro_name: &str,
    want: impl IntoIterator<Item = &'a str>,
    got: &[&str],
) {
    let mut want: Vec<&str> = want.into_iter().collect();
    let mut got = got.to_vec();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "{macro_name} and CHECKS disagree");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_each_reports_passes_skips_and_caught_failures() {
        let checks = [("a", 0), ("b", 1), ("c", 2)];
        let r = Report::run_each(
            &checks,
            |c| c.0,
            |c| match c.1 {
                0 => Outcome::Passed,
                1 => Outcome::Skipped("why".into()),
                _ => panic!("boom {}", c.0),
            },
        );
        assert_eq!(r.passed(), ["a"]);
        assert_eq!(r.skipped(), [("b", "why")]);
        assert_eq!(r.failures(), [("c", "boom c")]);
    }

    #[test]
    #[should_panic(expected = "m! and CHECKS disagree")]
    fn a_missing_check_is_caught() {
        assert_same_checks("m!", ["a", "b"], &["a"]);
    }
}
