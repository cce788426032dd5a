//! The hostile-conditions scenarios and the report generated from them.
//!
//! Every scenario of `tests/hostile/` is declared with [`scenario!`](crate::scenario):
//! an area, a one-line description of what is done, and the test body. The body returns
//! what it *observed* (a short, deterministic sentence: error variants and the facts they
//! name, with temp paths replaced by placeholders) or a skip reason. The test writes a
//! record to `<target>/reliability/<id>.json`; the ignored test `render_reliability_doc`
//! of the same binary renders every registered scenario with its record into
//! `docs/reliability.md`. The test `reliability_doc_matches_the_scenarios` checks that
//! the document lists exactly the registered scenarios, so the table cannot drift from
//! the tests.
//!
//! The *observed* column is checked against every run: after recording, each
//! scenario's test compares what it observed with its row in the committed document
//! ([`check_against_doc`]) and fails when they differ, so a changed behaviour (a new
//! error, a different count) cannot leave the document saying the old one. A scenario
//! that this machine skips cannot contradict a row that says it passed elsewhere: that
//! is printed, not failed. Observations must therefore be deterministic (no timings, no
//! pids, temp paths replaced by placeholders).
//!
//! Regenerate the document with `scripts/reliability-report.sh` (as root, so the
//! root-only scenarios run).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A declared scenario (registered with `inventory` by [`scenario!`](crate::scenario)).
#[derive(Debug)]
pub struct Scenario {
    /// Stable id: the test function's name.
    pub id: &'static str,
    /// Area: "Faults", "Attacks", "Bad input".
    pub area: &'static str,
    /// What the test does, for a person.
    pub done: &'static str,
}

inventory::collect!(Scenario);

/// Every registered scenario, sorted by area then id.
pub fn scenarios() -> Vec<&'static Scenario> {
    let mut v: Vec<&'static Scenario> = inventory::iter::<Scenario>.into_iter().collect();
    v.sort_by_key(|s| (area_rank(s.area), s.area, s.id));
    v
}

fn area_rank(area: &str) -> usize {
    ["Faults", "Attacks", "Bad input"].iter().position(|a| *a == area).unwrap_or(usize::MAX)
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "text")]
pub enum Outcome {
    /// Every assertion held; the text says what was observed.
    Passed(String),
    /// Not run on this machine; the text says why.
    Skipped(String),
}

/// One scenario's last result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Scenario id.
    pub id: String,
    /// Area.
    pub area: String,
    /// What was done.
    pub done: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Where records are written: `$BOXSOCK_RELIABILITY_DIR`, else `<target>/reliability`.
pub fn records_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BOXSOCK_RELIABILITY_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("reliability")
}

/// Write the record of `scenario` (called by the `scenario!` test after its body).
pub fn write_record(scenario: &Scenario, outcome: Outcome) {
    let dir = records_dir();
    std::fs::create_dir_all(&dir).expect("create the reliability records dir");
    let rec = Record {
        id: scenario.id.into(),
        area: scenario.area.into(),
        done: scenario.done.into(),
        outcome,
    };
    let tmp = dir.join(format!(".{}.json.tmp", scenario.id));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&rec).expect("serialise record"))
        .expect("write record");
    std::fs::rename(&tmp, dir.join(format!("{}.json", scenario.id))).expect("publish record");
}

/// Read every record in `dir`.
pub fn read_records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json")
            && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            if let Ok(r) = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            {
                out.push(r);
            }
        }
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Render the document from the registered scenarios and the records found.
pub fn render(scenarios: &[&Scenario], records: &[Record]) -> String {
    let mut out = String::from(
        "# Reliability\n\n\
         <!-- Generated by `scripts/reliability-report.sh` from the hostile suite \
         (`tests/workspace/tests/hostile/`). Do not edit by hand: the test \
         `reliability_doc_matches_the_scenarios` fails when this table and the tests disagree. -->\n\n\
         boxsock must either work or refuse loudly under faults and attacks, and never lose a \
         box or hand a socket to a stranger. Every row below is a test of the hostile suite; \
         *observed* is what its last run saw.\n",
    );
    let mut area = "";
    for s in scenarios {
        if s.area != area {
            area = s.area;
            out.push_str(&format!(
                "\n## {area}\n\n| scenario | what was done | observed |\n|---|---|---|\n"
            ));
        }
        let observed = observed_cell(records.iter().find(|r| r.id == s.id).map(|r| &r.outcome));
        out.push_str(&row(s, &observed));
        out.push('\n');
    }
    out.push_str(FUZZING);
    out
}

/// [`render`], with the load section ([`render_load`]) after the scenarios' tables.
pub fn render_with_load(
    scenarios: &[&Scenario],
    records: &[Record],
    load: Option<&LoadRecord>,
) -> String {
    let doc = render(scenarios, records);
    let at = doc.find(FUZZING).unwrap_or(doc.len());
    format!("{}{}{}", &doc[..at], render_load(load), &doc[at..])
}

/// The *observed* cell of an outcome (before table escaping).
fn observed_cell(outcome: Option<&Outcome>) -> String {
    match outcome {
        Some(Outcome::Passed(t)) => format!("passed: {t}"),
        Some(Outcome::Skipped(t)) => format!("SKIPPED: {t}"),
        None => "NOT RUN".to_owned(),
    }
}

/// One table row of the document, without its newline.
fn row(s: &Scenario, observed: &str) -> String {
    format!("| `{}` | {} | {} |", s.id, cell(s.done), cell(observed))
}

/// The committed document.
pub fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reliability.md")
}

/// How this run's outcome of a scenario compares with its row in `doc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocCheck {
    /// The row says exactly what this run observed.
    Agrees,
    /// This run skipped the scenario; the row (what another run saw) is left to that
    /// machine. Holds the row.
    SkippedHere(String),
    /// The row says something else (or there is none). Holds the row, if any.
    Disagrees(Option<String>),
}

/// Wrap a value that differs from run to run (a time, a count of attacker iterations,
/// a pid, a temporary path) so that the comparison with the document skips it: the
/// document shows the last run's value, and everything around it must agree exactly.
pub fn measured(value: impl std::fmt::Display) -> String {
    format!("⟨{value}⟩")
}

/// `text` with every [`measured`] span replaced by `⟨…⟩`.
fn without_measurements(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('⟨') {
        out.push_str(&rest[..open]);
        match rest[open..].find('⟩') {
            Some(close) => {
                out.push_str("⟨…⟩");
                rest = &rest[open + close + '⟩'.len_utf8()..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Compare `outcome` with the row of `scenario` in `doc` (see [`DocCheck`]). Spans made
/// by [`measured`] are not compared; everything else must be the same to the letter.
pub fn compare_with_doc(scenario: &Scenario, outcome: &Outcome, doc: &str) -> DocCheck {
    let want = row(scenario, &observed_cell(Some(outcome)));
    let prefix = format!("| `{}` |", scenario.id);
    let found = doc.lines().find(|l| l.starts_with(&prefix)).map(str::to_owned);
    match (&found, outcome) {
        (Some(l), _) if without_measurements(l) == without_measurements(&want) => DocCheck::Agrees,
        (Some(l), Outcome::Skipped(_)) => DocCheck::SkippedHere(l.clone()),
        _ => DocCheck::Disagrees(found),
    }
}

/// Fail (panic) when the committed document's row for `scenario` disagrees with what
/// this run observed. Called by the `scenario!` test after it wrote its record; off
/// when `BOXSOCK_RELIABILITY_REGENERATE` is set (by `scripts/reliability-report.sh`).
pub fn check_against_doc(scenario: &Scenario, outcome: &Outcome) {
    // `scripts/reliability-report.sh` is about to rewrite the document from this run.
    if std::env::var_os("BOXSOCK_RELIABILITY_REGENERATE").is_some() {
        return;
    }
    let doc = std::fs::read_to_string(doc_path()).unwrap_or_default();
    match compare_with_doc(scenario, outcome, &doc) {
        DocCheck::Agrees => {}
        DocCheck::SkippedHere(row) => {
            eprintln!(
                "note: {} was skipped here; docs/reliability.md keeps another run's row: {row}",
                scenario.id
            )
        }
        DocCheck::Disagrees(row) => panic!(
            "docs/reliability.md disagrees with this run of {}:\n  document: {}\n  this run: {}\n\
             regenerate it with scripts/reliability-report.sh (as root) and review the change",
            scenario.id,
            row.as_deref().unwrap_or("(no row)"),
            row_for(scenario, outcome),
        ),
    }
}

fn row_for(scenario: &Scenario, outcome: &Outcome) -> String {
    row(scenario, &observed_cell(Some(outcome)))
}

/// The errors a command may meet under the load test (`tests/load.rs`) because another
/// process changed the same box at the same time, or a command on it was killed: the
/// error kind, the text that identifies it in the CLI's message, and why it is correct.
/// Any other error fails the test; so does one of these without another command on
/// the same box that began before it ended (or was killed before it).
pub const LOAD_EXPECTED_ERRORS: &[(&str, &str, &str)] = &[
    (
        "no such box",
        "no box ",
        "another process removed the box (`rm -f`), before this command found it (`no box with id or name …`) or after (`no box <id>`), or the `create` that would have made it was killed",
    ),
    (
        "not running",
        ", not running",
        "`exec` on a box another process stopped or removed, or whose `start` was killed or has not finished",
    ),
    (
        "state changed",
        "cannot go from",
        "a concurrent `start`/`stop` changed the box's state first (the store's conditional transition), or a killed command left it `starting`/`stopping` until recovery",
    ),
    (
        "session ended",
        ": agent at ",
        "the box was stopped or removed by another process during the `exec` (its agent went away)",
    ),
    (
        "start interrupted",
        "before reporting ready",
        "another process stopped or removed the box while its `start` waited for the agent (the process it launched was killed)",
    ),
    (
        "start timed out",
        "waiting for agent readiness",
        "another process stopped the box during its `start` (and removed the `ready` socket the start listened on), so the start waited out its readiness timeout (10 s) before failing: correct, but slow to say so",
    ),
    (
        "half removed",
        "does not exist",
        "another process's `rm`, running or killed, had removed the box's directory but not yet its row (removal releases the binding, then the directory, then the row); a killed one is finished by the next `rm -f` or by recovery",
    ),
    (
        "command terminated",
        "exit status: 143",
        "`exec`'s command got SIGTERM (status 128 + 15, as docker reports it) because another process stopped or removed the box",
    ),
    (
        "command killed",
        "exit status: 137",
        "`exec`'s command got SIGKILL (status 128 + 9) because another process stopped or removed the box",
    ),
    (
        "removed during start",
        "a directory on the way was changed",
        "another process removed the box (its directory and link) while this `start` bound its sockets: the start refuses a socket directory that changed under it, as it would an attacker's swap",
    ),
    (
        "link race",
        "lost the race too many times",
        "this command's `ensure` of the box's link kept losing to another process's release of it (a concurrent `rm`) and gave up after its retries",
    ),
    (
        "removed meanwhile",
        "No such file or directory",
        "another process removed the box's directory after this command found the box and before it read its log",
    ),
];

/// What the load test measured: the figures `docs/reliability.md` shows (its "Load"
/// section is rendered from this record, written by the test to
/// `<records>/load/load.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// CLI processes, and commands each ran.
    pub workers: usize,
    /// Commands per CLI process.
    pub per_worker: usize,
    /// Library runtimes beside them.
    pub library_runtimes: usize,
    /// Seconds the CLI load took (first spawn to last exit).
    pub seconds: f64,
    /// CLI commands run (killed ones included).
    pub commands: usize,
    /// Commands killed with SIGKILL while running.
    pub killed: usize,
    /// Per verb: (verb, count, p50 ms, p99 ms) of the commands that ran to their end.
    pub latency: Vec<(String, usize, f64, f64)>,
    /// Per verb of the library runtimes: (verb, count, p50 ms, p99 ms).
    pub library_latency: Vec<(String, usize, f64, f64)>,
    /// Errors by kind (kinds of [`LOAD_EXPECTED_ERRORS`], plus any unexpected ones).
    pub errors: Vec<(String, usize)>,
    /// Boxes left running at the end, each of which answered `exec`.
    pub left_running: usize,
    /// Rows at the end (all accounted for: no lost and no phantom row).
    pub rows_at_end: usize,
    /// Agents left by a `start` killed between launching the box process and recording
    /// it (a known gap: no row names them, so nothing stops them).
    #[serde(default)]
    pub orphaned_by_killed_start: usize,
    /// Agents left by an `rm` that found the box stopped while a `start` of it ran (a
    /// known gap: the row and directory go, the started process runs on).
    #[serde(default)]
    pub orphaned_by_rm_during_start: usize,
}

/// Where the load test writes its record.
pub fn load_record_path() -> PathBuf {
    records_dir().join("load").join("load.json")
}

/// Write the load record (called by the load test).
pub fn write_load_record(rec: &LoadRecord) {
    let p = load_record_path();
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("create the load record dir");
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec).expect("serialise load record"))
        .expect("write load record");
    std::fs::rename(&tmp, &p).expect("publish load record");
}

/// The load record of the last run, if any.
pub fn read_load_record() -> Option<LoadRecord> {
    serde_json::from_slice(&std::fs::read(load_record_path()).ok()?).ok()
}

/// The heading of the load section (the load test checks the document has it).
pub const LOAD_HEADING: &str = "## Load: many processes on one home";

/// The document's "Load" section, from `load` (or saying it was not run).
pub fn render_load(load: Option<&LoadRecord>) -> String {
    let mut out = format!(
        "\n{LOAD_HEADING}\n\n\
         Generated from the last run of `tests/workspace/tests/load.rs` (part of `cargo test \
         --workspace --all-targets`): CLI processes run mixed commands (`create`, `start`, \
         `exec -i` with stdin, `stop`, `rm -f`, `ls`, `inspect`, `logs`) on boxes of one home \
         on the host backend, their own and each other's, while library runtimes (shared \
         home lock, decision 0003; health monitor on) create, start, exec, stop and remove \
         boxes of their own; some commands are killed with SIGKILL at a random moment. The \
         test fails on any error not listed below, on a lost or phantom row, on a leaked \
         process, directory, link or socket file, and if a box left running does not answer \
         `exec`. Latencies are whole CLI processes, on a machine whose two cores every \
         process shares.\n"
    );
    let Some(l) = load else {
        out.push_str("\nNOT RUN\n");
        return out;
    };
    out.push_str(&format!(
        "\n{} CLI processes × {} commands ({} in all, {} killed) and {} library runtimes: \
         {:.1} s, **{:.1} commands per second**. At the end: {} rows, every one accounted \
         for; {} boxes left running, each answered `exec`.\n",
        l.workers,
        l.per_worker,
        l.commands,
        l.killed,
        l.library_runtimes,
        l.seconds,
        l.commands as f64 / l.seconds.max(f64::EPSILON),
        l.rows_at_end,
        l.left_running,
    ));
    out.push_str(&format!(
        "\nKnown gap: a `start` killed between launching the box's process and recording it \
         leaves a process that no row names, so no `stop`, `rm` or recovery ends it; this run \
         left {} such process(es) (the test counts them, checks that each belongs to a box \
         whose `start` was killed, and kills them; any other process fails the test).\n",
        l.orphaned_by_killed_start
    ));
    out.push_str(&format!(
        "\nKnown gap: an `rm` that finds a box stopped (so stops nothing) while another \
         process's `start` of it is under way removes the box under that start, whose \
         process then runs on with no row (there is no per-box lock, decision 0003); this \
         run left {} such process(es), attributed and killed by the test the same way.\n",
        l.orphaned_by_rm_during_start
    ));
    for (title, rows) in [("CLI", &l.latency), ("library runtimes", &l.library_latency)] {
        out.push_str(&format!(
            "\n| verb ({title}) | count | p50 (ms) | p99 (ms) |\n|---|---|---|---|\n"
        ));
        for (verb, n, p50, p99) in rows {
            out.push_str(&format!("| {verb} | {n} | {p50:.1} | {p99:.1} |\n"));
        }
    }
    out.push_str("\n| error kind | count | why it is expected |\n|---|---|---|\n");
    for (kind, _, why) in LOAD_EXPECTED_ERRORS {
        let n = l.errors.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
        out.push_str(&format!("| {kind} | {n} | {} |\n", cell(why)));
    }
    for (kind, n) in
        l.errors.iter().filter(|(k, _)| !LOAD_EXPECTED_ERRORS.iter().any(|(e, _, _)| e == k))
    {
        out.push_str(&format!("| {} | {n} | UNEXPECTED |\n", cell(kind)));
    }
    out
}

/// The fixed part of the document: how the input boundaries are fuzzed.
const FUZZING: &str = "
## Fuzzing and property tests

Every parser of outside input has a cargo-fuzz target in `tests/fuzz/` and a proptest
suite in `core/tests/prop_*.rs`. Each target must never panic, and checks more than that:

| target | input | what it checks besides \"no panic\" |
|---|---|---|
| box_id | arbitrary bytes as a box id | `parse` and `from_bytes` agree; errors quote at most 80 chars and name the reason; an accepted id is one plain component, and every `BoxLayout` path stays under its box dir for six kinds of home |
| socket_name | arbitrary socket file names | `validate_file_name` and `socket_path` agree; accepted names are one component of at most `MAX_FILE_NAME_LEN` bytes; error messages are bounded |
| proto_decode | arbitrary bytes as agent frames | `decode` and `read_frame` (whole and byte by byte) agree; the consumed length is within bounds; control messages re-encode to the same value |
| address_uri | arbitrary `unix://` and `abstract:` URIs | accepted URIs round-trip exactly; rejections name the expected forms |
| store_config | arbitrary text as a store row's config | the row loads exactly when serde accepts it, else it is listed as bad under its id; the good row beside it always loads |
| image_manifest | arbitrary bytes as an OCI or docker manifest or index, under each media type | an accepted manifest's descriptors give a digest that is one safe path component (64 lower-case hex) or an error; an index yields one of its own entries for the host platform or an error naming a bounded list of platforms |
| image_config | arbitrary bytes as an image config, with docker's override rules | the process resolves or says there is no command; with overrides the argv ends with the given command, the working directory and user are the given ones, every `-e` variable is set |
| image_reference | arbitrary text as an image reference | an accepted reference's repository has no empty, `.` or `..` component, and the name it is listed under parses again to the same registry, repository and tag |

- CI: `scripts/fuzz.sh --ci` (run by `.ci/run`): 200 000 inputs per target from a fixed
  seed and the committed seeds only (not bit-for-bit repeatable: the targets' hash maps
  are randomly seeded); finding new bugs is the long runs' job, before a change lands.
- Longer: `scripts/fuzz.sh 3600` (an hour per target), or one target:
  `FUZZ_TARGETS=proto_decode scripts/fuzz.sh 600`.
- Seeds are generated (`scripts/fuzz.sh --regen-seeds`); a crash is written to
  `tests/fuzz/artifacts/<target>/` and replayed with
  `cargo +nightly fuzz run --fuzz-dir tests/fuzz <target> <file>`.
- Measured here: 300 s per target gave 1.3 M (`proto_decode`) to 2.7 M runs per target
  with no crash; fuzzing found two unbounded error messages (fixed, with regression
  tests). CI's 20 s of `image_reference` then found a 4090-byte name that parsed while
  the name it is listed under (`docker.io/library/…`, 4108 bytes) did not (the limit
  now holds for the normalised name; a unit test keeps the case).

## The real-VM tier's host

The real-VM tier (`tests/vm`) runs its scenarios in one QEMU TCG host with nested SVM.
That host has been seen to freeze: after a dozen or more libkrun boots, the console
stops and QEMU uses no CPU, so not even the host's timers run (each scenario's own
timeout never fires). Seen twice in about ten full runs, each time in a different
scenario. The harness does not wait out its 45-minute limit for it:

- the host's `/init` prints a heartbeat (`@@VM tick`) every 10 s; a console silent
  for 90 s is a frozen host;
- the harness then records the registers (QMP `info registers`, in
  `target/vm/console.freeze.txt`) and sends an NMI, which wakes a CPU that halted and
  missed its interrupt;
- if the console is still silent 30 s later, QEMU is killed and the host booted again
  (at most twice) for the scenarios that had not reported (`VM_SKIP`); the scenario
  that was running is run again from its start;
- each freeze is printed (`REAL VM HOST FROZE`), listed by `vm_report_written` and
  recorded in `target/vm/vm.json` (`host_freezes`); a third freeze fails the tier.

A scenario's failure is never retried: only a host whose clock stopped is booted again.
`BOXSOCK_VM_INJECT_FREEZE=<scenario>` pauses the host (QMP `stop`) when that scenario
begins, to show the mechanism working.
";

/// The scenario ids listed in a rendered document (first column of each table row).
pub fn listed_ids(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(id, _)| id.to_owned()))
        .collect()
}

pub use boxsock_conformance::child::in_own_process;

/// Write the record of `scenario`, then check it against the document (the end of every
/// `scenario!` test).
pub fn record_and_check(scenario: &Scenario, outcome: Outcome) {
    write_record(scenario, outcome.clone());
    check_against_doc(scenario, &outcome);
}

/// Declare a hostile scenario: registers it and defines a `#[test]` that runs `body`
/// (an expression returning [`Outcome`]) and records the result. A skip then goes
/// through `crate::skip_scenario(&str)`, which the using crate defines (the hostile
/// suite's, through `boxsock_test_support::skip`: a failure under `CI=true`).
///
/// ```ignore
/// scenario!(squat_parent_foreign_dir, "Attacks", "pre-create the per-uid dir owned by nobody", {
///     Outcome::Passed("refused: Insecure naming owner 65534".into())
/// });
/// ```
///
/// A scenario that changes process-wide state (the umask, the working directory,
/// environment variables, signal dispositions, rlimits, the subreaper flag) starts with
/// `own_process`: its test re-executes the test binary and runs the body, the record and
/// the document check there, alone ([`in_own_process`]).
///
/// ```ignore
/// scenario!(own_process umask_000_start, "Attacks", "under `umask 000` …", { … });
/// ```
#[macro_export]
// `crate::skip_scenario` on purpose: it is the using crate's, which can reach
// boxsock-test-support (a dev-dependency; this library cannot depend on the unpublished
// crate, as `cargo package --workspace` packages it).
#[allow(clippy::crate_in_macro_def)]
macro_rules! scenario {
    (own_process $id:ident, $area:literal, $done:literal, $body:block) => {
        inventory::submit! {
            $crate::reliability::Scenario { id: stringify!($id), area: $area, done: $done }
        }
        #[test]
        fn $id() {
            $crate::reliability::in_own_process(|| {
                let outcome: $crate::reliability::Outcome = $body;
                $crate::reliability::record_and_check(
                    &$crate::reliability::Scenario {
                        id: stringify!($id),
                        area: $area,
                        done: $done,
                    },
                    outcome,
                );
            });
        }
    };
    ($id:ident, $area:literal, $done:literal, $body:block) => {
        inventory::submit! {
            $crate::reliability::Scenario { id: stringify!($id), area: $area, done: $done }
        }
        #[test]
        fn $id() {
            let outcome: $crate::reliability::Outcome = $body;
            $crate::reliability::write_record(
                &$crate::reliability::Scenario { id: stringify!($id), area: $area, done: $done },
                outcome.clone(),
            );
            // The suite's one skip mechanism (a failure under CI=true): `crate` is the
            // test crate that uses this macro, which defines `skip_scenario(&str)`.
            if let $crate::reliability::Outcome::Skipped(reason) = &outcome {
                crate::skip_scenario(reason);
            }
            $crate::reliability::check_against_doc(
                &$crate::reliability::Scenario { id: stringify!($id), area: $area, done: $done },
                &outcome,
            );
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Scenario = Scenario { id: "squat", area: "Attacks", done: "squat the | dir" };

    #[test]
    fn a_row_agrees_only_when_it_says_exactly_what_the_run_observed() {
        let passed = Outcome::Passed("refused: Insecure naming uid 65534".into());
        let doc = render(
            &[&S],
            &[Record {
                id: "squat".into(),
                area: "Attacks".into(),
                done: S.done.into(),
                outcome: passed.clone(),
            }],
        );
        assert_eq!(compare_with_doc(&S, &passed, &doc), DocCheck::Agrees);
        // A changed observation, a scenario the document lacks, or a document saying it
        // was skipped while this run passed: all disagree.
        let changed = Outcome::Passed("refused: Insecure naming uid 1000".into());
        assert!(matches!(compare_with_doc(&S, &changed, &doc), DocCheck::Disagrees(Some(_))));
        assert_eq!(compare_with_doc(&S, &passed, "# Reliability\n"), DocCheck::Disagrees(None));
        let skipped_doc = render(&[&S], &[]);
        assert!(skipped_doc.contains("NOT RUN"));
        assert!(matches!(
            compare_with_doc(&S, &passed, &skipped_doc),
            DocCheck::Disagrees(Some(_))
        ));
        // Skipped here: never a contradiction of what another machine saw.
        let skipped = Outcome::Skipped("needs root".into());
        assert!(matches!(compare_with_doc(&S, &skipped, &doc), DocCheck::SkippedHere(_)));
    }

    #[test]
    fn measured_values_may_differ_but_nothing_around_them() {
        let run = |secs: &str, uid: u32| {
            Outcome::Passed(format!("300 execs in {} s; refused uid {uid}", measured(secs)))
        };
        let doc = render(
            &[&S],
            &[Record {
                id: "squat".into(),
                area: "Attacks".into(),
                done: S.done.into(),
                outcome: run("1.1", 65534),
            }],
        );
        assert!(doc.contains("⟨1.1⟩"), "the document shows the value measured: {doc}");
        assert_eq!(compare_with_doc(&S, &run("6.3", 65534), &doc), DocCheck::Agrees);
        assert!(matches!(compare_with_doc(&S, &run("1.1", 0), &doc), DocCheck::Disagrees(Some(_))));
        // A value unmarked in this run but marked in the document (or the reverse) differs.
        assert!(matches!(
            compare_with_doc(
                &S,
                &Outcome::Passed("300 execs in 1.1 s; refused uid 65534".into()),
                &doc
            ),
            DocCheck::Disagrees(Some(_))
        ));
        assert_eq!(without_measurements("a ⟨x⟩ b ⟨unclosed"), "a ⟨…⟩ b ⟨unclosed");
    }
}
