//! docs/performance.md's tables are generated: the committed doc must be what the
//! committed data (`docs/data/benches.json`) renders, and `bench-report --check` fails
//! on a copy with a pasted number. Neither reads `target/criterion` (CI has no bench
//! data).

use std::path::Path;
use std::process::Command;

use boxsock_benches::report::{self, SECTIONS};

fn bench_report_check(doc: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .args(["--check", "--doc"])
        .arg(doc)
        .arg("--data")
        .arg(report::default_data())
        // Nothing under target/ may matter to --check.
        .env("CARGO_TARGET_DIR", "/nonexistent/bench-report-check")
        .output()
        .expect("run bench-report")
}

#[test]
fn performance_md_is_what_the_committed_bench_data_renders() {
    if let Err(e) = report::check_files(&report::default_doc(), &report::default_data()) {
        panic!("{e}");
    }
    let out = bench_report_check(&report::default_doc());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The doc's lines and, per section this report owns, the 0-based index of the first
/// line in it holding a digit.
fn first_number_in_each_section(doc: &str) -> Vec<(&'static str, usize)> {
    let lines: Vec<&str> = doc.lines().collect();
    SECTIONS
        .iter()
        .map(|name| {
            let begin = lines
                .iter()
                .position(|l| l.trim() == format!("<!-- generated:begin {name} -->"))
                .unwrap_or_else(|| panic!("no section {name}"));
            let end = (begin..lines.len())
                .find(|&k| lines[k].trim() == format!("<!-- generated:end {name} -->"))
                .unwrap_or_else(|| panic!("section {name} not closed"));
            let k = (begin + 1..end)
                .find(|&k| {
                    lines[k].starts_with("| ")
                        && lines[k].chars().any(|c| c.is_ascii_digit())
                        && !lines[k].contains("---")
                })
                .unwrap_or_else(|| panic!("no number in section {name}"));
            (*name, k)
        })
        .collect()
}

#[test]
fn check_fails_on_a_pasted_number_in_every_section_naming_it_and_its_line() {
    let doc = std::fs::read_to_string(report::default_doc()).expect("read docs/performance.md");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, k) in first_number_in_each_section(&doc) {
        let mut lines: Vec<String> = doc.lines().map(str::to_owned).collect();
        // Change the last digit of the line: what a hand edit of a number does.
        let at = lines[k].rfind(|c: char| c.is_ascii_digit()).expect("a digit");
        let digit = lines[k].as_bytes()[at];
        let other = if digit == b'7' { '8' } else { '7' };
        lines[k].replace_range(at..=at, &other.to_string());
        let copy = dir.path().join(format!("performance-{name}.md"));
        std::fs::write(&copy, lines.join("\n") + "\n").expect("write the copy");
        let out = bench_report_check(&copy);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "section {name}: {stderr}");
        let want = format!("{}:{}: section `{name}` differs", copy.display(), k + 1);
        assert!(stderr.contains(&want), "wanted {want:?} in: {stderr}");
    }
}

#[test]
fn check_ignores_prose_and_other_generated_sections_but_not_a_missing_one() {
    let doc = std::fs::read_to_string(report::default_doc()).expect("read docs/performance.md");
    let dir = tempfile::tempdir().expect("tempdir");
    // Prose outside the markers and another tool's section are not this report's.
    let edited = format!(
        "{doc}\nA new paragraph.\n\n\
         <!-- generated:begin vm -->\n| 1.00× |\n<!-- generated:end vm -->\n"
    );
    let copy = dir.path().join("prose.md");
    std::fs::write(&copy, edited).expect("write");
    let out = bench_report_check(&copy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A section removed with its markers.
    let without: String = doc
        .lines()
        .filter(|l| !l.contains("generated:begin targets") && !l.contains("generated:end targets"))
        .map(|l| format!("{l}\n"))
        .collect();
    let copy = dir.path().join("without.md");
    std::fs::write(&copy, without).expect("write");
    let out = bench_report_check(&copy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no section `targets`"), "{stderr}");
}
