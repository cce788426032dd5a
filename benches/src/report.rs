//! The ratio report: from a measuring run's results to the committed data file
//! (`docs/data/benches.json`, [`Data`]), and from that file to the generated sections of
//! `docs/performance.md`.
//!
//! - [`collect`] reads what the last measuring run of each bench binary left under
//!   `target/criterion` (criterion's results, the [`Paired`] records, the run manifests)
//!   and refuses samples that cannot carry a ratio (too few, from another run, or not
//!   the samples criterion measured).
//! - [`merge`] folds them into the data file, so a run of one bench binary, or a filtered
//!   subset, updates only what it measured.
//! - [`render`] turns the data file into the doc's sections; [`splice`] writes them
//!   between `<!-- generated:begin NAME -->` and `<!-- generated:end NAME -->`, and
//!   [`check`] fails, naming the section and the first differing line, when the doc is
//!   not what the data renders. Sections of other names (the real-VM tier's `vm`) are
//!   left alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use boxsock_core::echo::echo;
use serde::{Deserialize, Serialize};

use crate::run::{QUIET_MEAN, QUIET_WINDOW, RunRecord, SAMPLE_EVERY};
use crate::{Limit, MemoryRecord, PAIRED_DIR, Paired, TARGETS, Target};

/// The data file's format.
pub const FORMAT: u32 = 1;

/// Fewest measured samples a benchmark may have (criterion's own minimum). Criterion's
/// test mode runs each benchmark once: one sample of one iteration.
pub const MIN_SAMPLES: usize = 10;

/// The sections this report owns, in doc order.
pub const SECTIONS: &[&str] = &["runs", "targets", "benchmarks", "rootfs", "memory", "oci"];

/// The `rootfs` section's group (benchmark ids' prefix).
const ROOTFS: &str = "rootfs/";
/// The `oci` section's group.
const OCI: &str = "oci/";
/// The groups whose benchmarks and targets have a section of their own ([`SECTIONS`]);
/// the `targets` and `benchmarks` sections hold every other group's.
const OWN_GROUPS: &[&str] = &[ROOTFS, OCI];

/// Which rows a table holds: one own section's group, or every group without one.
#[derive(Clone, Copy)]
enum Rows {
    Group(&'static str),
    Others,
}

impl Rows {
    fn holds(self, id: &str) -> bool {
        match self {
            Rows::Group(prefix) => id.starts_with(prefix),
            Rows::Others => !OWN_GROUPS.iter().any(|p| id.starts_with(p)),
        }
    }
}

/// What `docs/data/benches.json` holds: the runs, and per benchmark its medians and
/// ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    /// [`FORMAT`].
    pub format: u32,
    /// The runs benchmarks refer to, by [`RunRecord::id`].
    pub runs: BTreeMap<String, RunRecord>,
    /// By benchmark id, `group/function/parameter`.
    pub benchmarks: BTreeMap<String, Bench>,
    /// Idle-memory measurements by id ([`MemoryRecord`]); absent in older data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory: BTreeMap<String, MemoryRecord>,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            format: FORMAT,
            runs: BTreeMap::new(),
            benchmarks: BTreeMap::new(),
            memory: BTreeMap::new(),
        }
    }
}

/// One benchmark of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bench {
    /// The run that measured it.
    pub run: String,
    /// Median time per iteration, ns: over the paired samples when it has floors, else
    /// criterion's estimate.
    pub median_ns: f64,
    /// Samples criterion measured.
    pub samples: usize,
    /// The floors timed interleaved with it, in the order they were timed.
    pub floors: Vec<Floor>,
}

/// A floor of a benchmark, from the same samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// `floor-…`.
    pub name: String,
    /// The floor's median time per iteration, ns.
    pub median_ns: f64,
    /// Median over samples of subject / floor.
    pub ratio: f64,
}

/// Why the report cannot do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data file does not parse.
    #[error("{} is not bench data of format {FORMAT}: {source}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// No measuring run's manifest was found.
    #[error(
        "no measuring run{} under {}: run `cargo bench -p boxsock-benches` first \
         (`cargo test` runs the benches in test mode, which records nothing)",
        if only.is_empty() { String::new() } else { format!(" of {}", only.join(", ")) },
        dir.display()
    )]
    NoRun {
        /// The directory searched.
        dir: PathBuf,
        /// The bench binaries asked for.
        only: Vec<String>,
    },
    /// Samples that cannot carry a number; nothing was written.
    #[error("refused, nothing written:\n  - {}", problems.join("\n  - "))]
    Refused {
        /// One line per benchmark.
        problems: Vec<String>,
    },
    /// A begin marker without its end marker.
    #[error(
        "{}:{line}: `<!-- generated:begin {name} -->` has no \
         `<!-- generated:end {name} -->`",
        path.display()
    )]
    Unclosed {
        /// The doc.
        path: PathBuf,
        /// The section.
        name: String,
        /// Line of the begin marker.
        line: usize,
    },
    /// A section the data renders has no markers in the doc.
    #[error(
        "{}: no section `{name}` (the lines `<!-- generated:begin {name} -->` and \
         `<!-- generated:end {name} -->` mark where it goes)",
        path.display()
    )]
    MissingSection {
        /// The doc.
        path: PathBuf,
        /// The section.
        name: String,
    },
    /// The doc differs from what the data renders.
    #[error("{0}")]
    Differs(Box<Difference>),
}

/// Where a doc first differs from what the data renders.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}:{line}: section `{name}` differs from what {} renders (at column {column}):\n  \
     doc:      {doc}\n  rendered: {rendered}\n\
     The numbers in this section are generated: run `cargo bench -p boxsock-benches` \
     and `bench-report`, or edit outside the markers.",
    path.display(), data.display()
)]
pub struct Difference {
    /// The doc.
    pub path: PathBuf,
    /// The data file.
    pub data: PathBuf,
    /// The section.
    pub name: String,
    /// Line of the doc (1-based) where they first differ.
    pub line: usize,
    /// Column (1-based, in characters) where that line first differs.
    pub column: usize,
    /// The doc's line from a little before that column, quoted and bounded.
    pub doc: String,
    /// The rendered line, likewise.
    pub rendered: String,
}

fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path)
        .map_err(|source| ReportError::Read { path: path.to_owned(), source })
}

fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    let w = |source| ReportError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(w)?;
    }
    std::fs::write(path, text).map_err(w)
}

impl Data {
    /// Read `path`; a missing file is empty data.
    pub fn load(path: &Path) -> Result<Data, ReportError> {
        if !path.exists() {
            return Ok(Data::default());
        }
        serde_json::from_str(&read(path)?)
            .map_err(|source| ReportError::Data { path: path.to_owned(), source })
    }

    /// Write to `path`, pretty, with a final newline (stable: maps are sorted).
    pub fn save(&self, path: &Path) -> Result<(), ReportError> {
        let mut text = serde_json::to_string_pretty(self).expect("bench data serialises");
        text.push('\n');
        write(path, &text)
    }

    /// The runs, oldest first, numbered from 1 as the doc shows them.
    pub fn numbered_runs(&self) -> Vec<(usize, &RunRecord)> {
        let mut runs: Vec<&RunRecord> = self.runs.values().collect();
        runs.sort_by(|a, b| a.started_unix.total_cmp(&b.started_unix).then(a.id.cmp(&b.id)));
        runs.into_iter().enumerate().map(|(i, r)| (i + 1, r)).collect()
    }

    fn run_label(&self, id: &str) -> String {
        self.numbered_runs()
            .iter()
            .find(|(_, r)| r.id == id)
            .map_or_else(|| "?".into(), |(n, _)| format!("#{n}"))
    }
}

/// What [`collect`] found: the runs taken and the benchmarks they measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// The runs, by id.
    pub runs: BTreeMap<String, RunRecord>,
    /// The benchmarks, by id.
    pub benchmarks: BTreeMap<String, Bench>,
    /// The idle-memory measurements of those runs, by id.
    pub memory: BTreeMap<String, MemoryRecord>,
}

/// One criterion result: `<dir>/<group>/<function>/<param>/new/`.
struct Criterion {
    median_ns: f64,
    iters: Vec<f64>,
    modified_unix: f64,
}

fn json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Walk criterion's results, keyed by `full_id` from `benchmark.json` (the directory
/// names are sanitised, the JSON keeps the real ids).
fn criterion_results(dir: &Path, out: &mut BTreeMap<String, Criterion>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let name = e.file_name();
        if name == "new" {
            let id = json(&p.join("benchmark.json"))
                .and_then(|v| v.get("full_id")?.as_str().map(str::to_owned));
            let estimates = p.join("estimates.json");
            let median =
                json(&estimates).and_then(|v| v.get("median")?.get("point_estimate")?.as_f64());
            let iters = json(&p.join("sample.json")).and_then(|v| {
                v.get("iters")?
                    .as_array()?
                    .iter()
                    .map(serde_json::Value::as_f64)
                    .collect::<Option<Vec<_>>>()
            });
            let modified = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64());
            if let (Some(id), Some(median_ns), Some(iters), Some(modified_unix)) =
                (id, median, iters, modified)
            {
                out.insert(id, Criterion { median_ns, iters, modified_unix });
            }
        } else if name != "report" && name != "base" && name != "change" && name != PAIRED_DIR {
            criterion_results(&p, out);
        }
    }
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

/// Read the last measuring run of each bench binary (of `only`'s, when not empty) under
/// `criterion_dir`. Refuses ([`ReportError::Refused`]) when any benchmark of those runs
/// has fewer than [`MIN_SAMPLES`] samples, or paired samples that are not the ones
/// criterion measured (their iteration counts differ: another run, or test mode of an
/// older build wrote them).
pub fn collect(criterion_dir: &Path, only: &[String]) -> Result<Collected, ReportError> {
    let paired_dir = criterion_dir.join(PAIRED_DIR);
    let mut runs = BTreeMap::new();
    for e in std::fs::read_dir(&paired_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("run-") && name.ends_with(".json")) {
            continue;
        }
        let Some(run) = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|t| serde_json::from_str::<RunRecord>(&t).ok())
        else {
            continue;
        };
        if only.is_empty() || only.contains(&run.bench) {
            runs.insert(run.id.clone(), run);
        }
    }
    let missing: Vec<String> =
        only.iter().filter(|b| !runs.values().any(|r| &r.bench == *b)).cloned().collect();
    if runs.is_empty() || !missing.is_empty() {
        return Err(ReportError::NoRun {
            dir: paired_dir,
            only: if missing.is_empty() { only.to_vec() } else { missing },
        });
    }
    let mut results = BTreeMap::new();
    criterion_results(criterion_dir, &mut results);
    let paired = Paired::read_all(&paired_dir);
    // Files are written during the run; allow for timestamps' granularity.
    let run_of =
        |t: f64| runs.values().find(|r| t >= r.started_unix - 1.0 && t <= r.finished_unix + 1.0);
    let mut problems = Vec::new();
    let mut benchmarks = BTreeMap::new();
    for (id, c) in &results {
        let Some(run) = run_of(c.modified_unix) else {
            continue;
        };
        let n = c.iters.len();
        if n < MIN_SAMPLES {
            problems.push(format!(
                "{id}: {n} sample(s) in run {}; at least {MIN_SAMPLES} are needed",
                run.id
            ));
            continue;
        }
        let bench = match paired.get(id) {
            Some(p) if p.run == run.id => {
                let p = p.clone().last(n);
                let theirs: Vec<f64> = p.samples.iter().map(|(k, _, _)| *k as f64).collect();
                if theirs != c.iters {
                    problems.push(format!(
                        "{id}: the paired samples are not the ones criterion measured in run {} \
                         ({} paired, iteration counts differ)",
                        run.id,
                        p.samples.len()
                    ));
                    continue;
                }
                let floors = p
                    .floors
                    .iter()
                    .map(|f| Floor {
                        name: f.clone(),
                        median_ns: round(p.floor_median(f).unwrap_or(f64::NAN), 1),
                        ratio: round(p.ratio(f).unwrap_or(f64::NAN), 4),
                    })
                    .collect();
                Bench {
                    run: run.id.clone(),
                    median_ns: round(p.subject_median().unwrap_or(f64::NAN), 1),
                    samples: n,
                    floors,
                }
            }
            Some(p) => {
                problems.push(format!(
                    "{id}: its paired samples are from run {}, not from run {}",
                    p.run, run.id
                ));
                continue;
            }
            None => Bench {
                run: run.id.clone(),
                median_ns: round(c.median_ns, 1),
                samples: n,
                floors: Vec::new(),
            },
        };
        benchmarks.insert(id.clone(), bench);
    }
    // A record of a run whose criterion result is missing: the report would drop a ratio.
    for (id, p) in &paired {
        if runs.contains_key(&p.run)
            && !benchmarks.contains_key(id)
            && !problems.iter().any(|l| l.starts_with(id.as_str()))
        {
            problems.push(format!(
                "{id}: paired samples of run {} but no criterion result from that run",
                p.run
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ReportError::Refused { problems });
    }
    let memory = MemoryRecord::read_all(&paired_dir)
        .into_iter()
        .filter(|(_, m)| runs.contains_key(&m.run))
        .collect();
    Ok(Collected { runs, benchmarks, memory })
}

/// Fold `new` into `data`: each benchmark measured takes its new values, unless the data
/// holds a newer run of it; a run without criterion arguments (no filter) also drops the
/// benchmarks of its bench binary that it no longer measured. Runs no benchmark refers
/// to are dropped. Returns what it did, one line each, for the user.
pub fn merge(data: &mut Data, new: Collected) -> Vec<String> {
    let mut notes = Vec::new();
    let started =
        |data: &Data, id: &str| data.runs.get(id).map_or(f64::NEG_INFINITY, |r| r.started_unix);
    for run in new.runs.values() {
        data.runs.insert(run.id.clone(), run.clone());
    }
    for (id, b) in new.benchmarks {
        let new_start = started(data, &b.run);
        match data.benchmarks.get(&id) {
            Some(old) if started(data, &old.run) > new_start => {
                notes.push(format!("kept {id} from the newer run {}", old.run));
            }
            _ => {
                data.benchmarks.insert(id, b);
            }
        }
    }
    for (id, m) in new.memory {
        let newer =
            data.memory.get(&id).filter(|old| started(data, &old.run) > started(data, &m.run));
        match newer {
            Some(old) => notes.push(format!("kept {id} from the newer run {}", old.run)),
            None => {
                data.memory.insert(id, m);
            }
        }
    }
    for run in new.runs.values().filter(|r| r.args.is_empty()) {
        let stale: Vec<String> =
            data.benchmarks
                .iter()
                .filter(|(_, b)| {
                    b.run != run.id
                        && data.runs.get(&b.run).is_some_and(|r| {
                            r.bench == run.bench && r.started_unix < run.started_unix
                        })
                })
                .map(|(id, _)| id.clone())
                .collect();
        for id in stale {
            notes.push(format!(
                "dropped {id}: the full run {} of `{}` no longer measures it",
                run.id, run.bench
            ));
            data.benchmarks.remove(&id);
        }
    }
    let used: Vec<String> = data
        .benchmarks
        .values()
        .map(|b| b.run.clone())
        .chain(data.memory.values().map(|m| m.run.clone()))
        .collect();
    data.runs.retain(|id, _| used.contains(id));
    notes
}

fn human(ns: f64) -> String {
    if !ns.is_finite() {
        "—".into()
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn times(r: f64) -> String {
    if r.is_finite() { format!("{r:.2}×") } else { "—".into() }
}

fn percent(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// A target's verdict from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within its limit.
    Pass,
    /// Over it.
    Miss,
    /// No measurement in the data.
    NotRun,
}

/// The measured value (rendered), the limit (rendered), the verdict and the run of `t`.
pub fn verdict(t: &Target, data: &Data) -> (String, String, Verdict, Option<String>) {
    let b = data.benchmarks.get(t.numerator);
    let run = b.map(|b| b.run.clone());
    match &t.limit {
        Limit::Ratio { floor, max } => {
            let r = b
                .and_then(|b| b.floors.iter().find(|f| f.name == *floor))
                .map(|f| f.ratio)
                .filter(|r| r.is_finite());
            let v = match r {
                Some(r) if r <= *max => Verdict::Pass,
                Some(_) => Verdict::Miss,
                None => Verdict::NotRun,
            };
            (r.map_or_else(|| "—".into(), times), format!("≤ {max:.2}×"), v, run)
        }
        Limit::MedianMs(max) => {
            let m = b.map(|b| b.median_ns).filter(|m| m.is_finite());
            let v = match m {
                Some(m) if m / 1e6 <= *max => Verdict::Pass,
                Some(_) => Verdict::Miss,
                None => Verdict::NotRun,
            };
            (m.map_or_else(|| "—".into(), human), format!("≤ {max} ms"), v, run)
        }
    }
}

fn targets_table(data: &Data, rows: Rows) -> String {
    let mut out = String::new();
    let chosen: Vec<&Target> = TARGETS.iter().filter(|t| rows.holds(t.numerator)).collect();
    let (mut pass, mut miss, mut not_run) = (0, 0, 0);
    out.push_str("| target | measured | limit | verdict | run |\n|---|---:|---:|---|---|\n");
    for t in &chosen {
        let (value, limit, v, run) = verdict(t, data);
        let word = match v {
            Verdict::Pass => {
                pass += 1;
                "PASS"
            }
            Verdict::Miss => {
                miss += 1;
                "**MISS**"
            }
            Verdict::NotRun => {
                not_run += 1;
                "not run"
            }
        };
        let run = run.map_or_else(|| "—".into(), |r| data.run_label(&r));
        let _ = writeln!(out, "| {} | {value} | {limit} | {word} | {run} |", t.what);
    }
    let _ = writeln!(
        out,
        "\n{pass} of {} targets met, {miss} missed, {not_run} not run.",
        chosen.len()
    );
    out
}

fn bench_table(data: &Data, rows: Rows) -> String {
    let mut out = String::from(
        "| benchmark | median | floor (same samples) | its median | ratio | samples | run |\n\
         |---|---:|---|---:|---:|---:|---|\n",
    );
    for (id, b) in data.benchmarks.iter().filter(|(id, _)| rows.holds(id)) {
        let run = data.run_label(&b.run);
        if b.floors.is_empty() {
            let _ = writeln!(
                out,
                "| {id} | {} | — | — | — | {} | {run} |",
                human(b.median_ns),
                b.samples
            );
        }
        for f in &b.floors {
            let _ = writeln!(
                out,
                "| {id} | {} | {} | {} | {} | {} | {run} |",
                human(b.median_ns),
                f.name,
                human(f.median_ns),
                times(f.ratio),
                b.samples
            );
        }
    }
    out
}

fn short(commit: &str) -> String {
    let (hash, dirty) = commit.split_once('+').map_or((commit, ""), |(h, d)| (h, d));
    let hash: String = hash.chars().take(10).collect();
    if dirty.is_empty() { format!("`{hash}`") } else { format!("`{hash}` + uncommitted changes") }
}

fn runs_section(data: &Data) -> String {
    let mut out = String::new();
    let runs = data.numbered_runs();
    if runs.is_empty() {
        out.push_str(
            "No run recorded yet: run `cargo bench -p boxsock-benches`, then `bench-report`.\n",
        );
        return out;
    }
    let busy: Vec<String> =
        runs.iter().filter(|(_, r)| !r.quiet).map(|(n, r)| format!("#{n} ({})", r.bench)).collect();
    if !busy.is_empty() {
        let _ = writeln!(
            out,
            "**Not a quiet machine.** Other processes used a large share of the CPUs during \
             run{} {}: every ratio is still paired (both sides timed in the same samples), \
             but contention moves ratios, and a verdict close to its limit may change on a \
             quiet machine.\n",
            if busy.len() > 1 { "s" } else { "" },
            busy.join(", ")
        );
    }
    out.push_str(
        "| run | bench | started (UTC) | minutes | commit | criterion args | others' CPU, mean | \
         others' CPU, busiest window | max load (1 min) | quiet |\n\
         |---|---|---|---:|---|---|---:|---:|---:|---|\n",
    );
    for (n, r) in &runs {
        let started = r.started.replace('T', " ").trim_end_matches('Z').to_owned();
        let args = if r.args.is_empty() {
            "— (all)".to_owned()
        } else {
            r.args
                .iter()
                .map(|a| format!("`{}`", a.replace('|', "\\|")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "| #{n} | `{}` | {started} | {:.1} | {} | {args} | {} | {} | {:.2} | {} |",
            r.bench,
            (r.finished_unix - r.started_unix) / 60.0,
            short(&r.commit),
            percent(r.load.others_mean),
            percent(r.load.others_max),
            r.load.load1_max,
            if r.quiet { "yes" } else { "**no**" }
        );
    }
    let mut machines: Vec<(String, Vec<usize>)> = Vec::new();
    for (n, r) in &runs {
        let m = &r.machine;
        let text = format!("{} × {}, Linux {}, {:.1} GiB", m.cpus, m.cpu, m.kernel, m.mem_gib);
        match machines.iter_mut().find(|(t, _)| *t == text) {
            Some((_, ns)) => ns.push(*n),
            None => machines.push((text, vec![*n])),
        }
    }
    out.push('\n');
    for (text, ns) in machines {
        let which = ns.iter().map(|n| format!("#{n}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "Machine of run {which}: {text}.");
    }
    let _ = writeln!(
        out,
        "\n*Others' CPU* is the share of all CPUs' time used by other processes (and the \
         hypervisor's steal): busy time in `/proc/stat` minus the bench's own and its \
         reaped children's, sampled every {} s. A run is quiet when that share is at most \
         {} over the run and at most {} in every window.",
        SAMPLE_EVERY.as_secs(),
        percent(QUIET_MEAN),
        percent(QUIET_WINDOW)
    );
    out
}

/// The `memory` section: each idle-memory measurement, per box, beside its floor.
fn memory_table(data: &Data) -> String {
    let mut out = String::from(
        "| measurement | boxes at once | resident memory per box | floor | its memory per box \
         | difference per box | ratio | run |\n|---|---:|---:|---|---:|---:|---:|---|\n",
    );
    if data.memory.is_empty() {
        out.push_str("| — | — | — | — | — | — | — | not measured |\n");
    }
    for (id, m) in &data.memory {
        let mib = |k: f64| format!("{:.2} MiB", k / 1024.0);
        let _ = writeln!(
            out,
            "| {id} | {} | {} | {} | {} | {} | {} | {} |",
            m.boxes,
            mib(m.per_box_kib),
            m.floor,
            mib(m.floor_per_box_kib),
            mib(m.per_box_kib - m.floor_per_box_kib),
            times(m.per_box_kib / m.floor_per_box_kib),
            data.run_label(&m.run)
        );
    }
    out
}

/// Every section this report owns ([`SECTIONS`]), rendered from `data`: each ends with
/// a newline.
pub fn render(data: &Data) -> Vec<(&'static str, String)> {
    let own = |prefix| {
        let mut s = targets_table(data, Rows::Group(prefix));
        s.push('\n');
        s.push_str(&bench_table(data, Rows::Group(prefix)));
        s
    };
    vec![
        ("runs", runs_section(data)),
        ("targets", targets_table(data, Rows::Others)),
        ("benchmarks", bench_table(data, Rows::Others)),
        ("rootfs", own(ROOTFS)),
        ("memory", memory_table(data)),
        ("oci", own(OCI)),
    ]
}

/// A generated section of a doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// Line index (0-based) of the begin marker.
    pub begin: usize,
    /// Line index (0-based) of the end marker.
    pub end: usize,
}

fn marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    let rest =
        line.trim().strip_prefix("<!-- generated:")?.strip_prefix(kind)?.strip_prefix(' ')?;
    rest.split_whitespace().next().filter(|n| *n != "-->")
}

/// The generated sections of `doc`, in order.
pub fn sections(path: &Path, doc: &str) -> Result<Vec<Section>, ReportError> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(name) = marker(lines[i], "begin") {
            let end = (i + 1..lines.len())
                .find(|&j| marker(lines[j], "end") == Some(name))
                .ok_or_else(|| ReportError::Unclosed {
                    path: path.to_owned(),
                    name: name.to_owned(),
                    line: i + 1,
                })?;
            out.push(Section { name: name.to_owned(), begin: i, end });
            i = end;
        }
        i += 1;
    }
    Ok(out)
}

/// `doc` with each of `rendered`'s sections put between its markers; other sections and
/// everything outside the markers unchanged.
pub fn splice(path: &Path, doc: &str, rendered: &[(&str, String)]) -> Result<String, ReportError> {
    let found = sections(path, doc)?;
    for (name, _) in rendered {
        if !found.iter().any(|s| s.name == *name) {
            return Err(ReportError::MissingSection {
                path: path.to_owned(),
                name: (*name).to_owned(),
            });
        }
    }
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = String::new();
    let mut next = 0;
    for s in &found {
        let Some((_, text)) = rendered.iter().find(|(n, _)| *n == s.name) else {
            continue;
        };
        for l in &lines[next..=s.begin] {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(text);
        next = s.end;
    }
    for l in &lines[next..] {
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

/// A line cut to start a little before `column` (characters), quoted and bounded.
fn excerpt(line: Option<&str>, column: usize) -> String {
    match line {
        None => "(no line: the section ends here)".into(),
        Some(l) => {
            let skip = column.saturating_sub(24);
            let tail: String = l.chars().skip(skip).collect();
            format!("{}{}", if skip > 0 { "…" } else { "" }, echo(&tail))
        }
    }
}

/// Fail ([`ReportError::Differs`]) at the first line where a section of `doc` differs
/// from what `data_path`'s data renders; a section missing from the doc fails too.
pub fn check(
    path: &Path,
    doc: &str,
    data_path: &Path,
    rendered: &[(&str, String)],
) -> Result<(), ReportError> {
    let found = sections(path, doc)?;
    let lines: Vec<&str> = doc.lines().collect();
    for (name, text) in rendered {
        let s = found.iter().find(|s| s.name == *name).ok_or_else(|| {
            ReportError::MissingSection { path: path.to_owned(), name: (*name).to_owned() }
        })?;
        let have = &lines[s.begin + 1..s.end];
        let want: Vec<&str> = text.lines().collect();
        for k in 0..have.len().max(want.len()) {
            let (h, w) = (have.get(k).copied(), want.get(k).copied());
            if h != w {
                let column = match (h, w) {
                    (Some(h), Some(w)) => {
                        h.chars().zip(w.chars()).take_while(|(a, b)| a == b).count() + 1
                    }
                    _ => 1,
                };
                return Err(ReportError::Differs(Box::new(Difference {
                    path: path.to_owned(),
                    data: data_path.to_owned(),
                    name: (*name).to_owned(),
                    line: s.begin + 2 + k,
                    column,
                    doc: match h {
                        Some(h) => excerpt(Some(h), column),
                        None => "(no line: the end marker comes here)".into(),
                    },
                    rendered: excerpt(w, column),
                })));
            }
        }
    }
    Ok(())
}

/// [`check`] of the files at `doc` and `data`.
pub fn check_files(doc: &Path, data: &Path) -> Result<(), ReportError> {
    let rendered = render(&Data::load(data)?);
    check(doc, &read(doc)?, data, &rendered)
}

/// Regenerate `doc`'s sections from the data at `data`; returns whether the doc changed.
pub fn write_doc(doc: &Path, data: &Data) -> Result<bool, ReportError> {
    let old = read(doc)?;
    let new = splice(doc, &old, &render(data))?;
    if new != old {
        write(doc, &new)?;
    }
    Ok(new != old)
}

/// The default data file: `docs/data/benches.json` of this checkout.
pub fn default_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/data/benches.json")
}

/// The default doc: `docs/performance.md` of this checkout.
pub fn default_doc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/performance.md")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Load, Machine};

    fn now() -> f64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
    }

    fn run(bench: &str, started_unix: f64, finished_unix: f64, args: &[&str]) -> RunRecord {
        RunRecord {
            bench: bench.into(),
            id: format!("{bench}@{started_unix}"),
            started: "2026-12-06T17:00:00Z".into(),
            started_unix,
            finished: "2026-12-06T17:05:00Z".into(),
            finished_unix,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            commit: "0123456789abcdef+dirty".into(),
            machine: Machine {
                cpu: "Test CPU".into(),
                cpus: 2,
                kernel: "6.1".into(),
                mem_gib: 4.0,
            },
            load: Load { others_mean: 0.3, others_max: 0.9, load1_max: 2.5, windows: 150 },
            quiet: false,
        }
    }

    /// Criterion's files for `id` (median `median_ns`, one sample per entry of `iters`).
    fn criterion_result(dir: &Path, id: &str, median_ns: f64, iters: &[u64]) {
        let d = dir.join(id).join("new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("benchmark.json"), serde_json::json!({ "full_id": id }).to_string())
            .unwrap();
        let est = serde_json::json!({ "median": { "point_estimate": median_ns } });
        std::fs::write(d.join("estimates.json"), est.to_string()).unwrap();
        let times: Vec<f64> = iters.iter().map(|n| *n as f64 * median_ns).collect();
        let sample =
            serde_json::json!({ "sampling_mode": "Linear", "iters": iters, "times": times });
        std::fs::write(d.join("sample.json"), sample.to_string()).unwrap();
    }

    fn manifest(dir: &Path, r: &RunRecord) {
        let p = dir.join(PAIRED_DIR);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(RunRecord::path(&p, &r.bench), serde_json::to_string(r).unwrap()).unwrap();
    }

    /// Warm-up calls (1, 2) then ten measured samples of n = 3, 6, … iterations; the
    /// subject 1.5× its floor's 100 ns per iteration.
    fn paired_samples(run: &str, id: &str) -> Paired {
        let mut samples: Vec<(u64, f64, Vec<f64>)> =
            vec![(1, 999.0, vec![1.0]), (2, 999.0, vec![1.0])];
        samples.extend(
            (1..=10).map(|k| (3 * k, 150.0 * (3 * k) as f64, vec![100.0 * (3 * k) as f64])),
        );
        Paired { id: id.into(), run: run.into(), floors: vec!["floor-x".into()], samples }
    }

    fn measured_iters() -> Vec<u64> {
        (1..=10).map(|k| 3 * k).collect()
    }

    #[test]
    fn collect_takes_the_paired_samples_of_the_run_and_criterion_for_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let r = run("binding", now() - 60.0, now() + 60.0, &[]);
        manifest(d.path(), &r);
        criterion_result(d.path(), "bind/s/shallow", 140.0, &measured_iters());
        paired_samples(&r.id, "bind/s/shallow").write(&d.path().join(PAIRED_DIR)).unwrap();
        criterion_result(d.path(), "ensure/s/cold", 2500.0, &[1; 30]);
        let c = collect(d.path(), &[]).unwrap();
        assert_eq!(c.runs.keys().collect::<Vec<_>>(), [&r.id]);
        let b = &c.benchmarks["bind/s/shallow"];
        // From the paired samples, warm-up dropped: not criterion's 140 ns.
        assert_eq!((b.median_ns, b.samples), (150.0, 10));
        assert_eq!(b.floors, [Floor { name: "floor-x".into(), median_ns: 100.0, ratio: 1.5 }]);
        let cold = &c.benchmarks["ensure/s/cold"];
        assert_eq!((cold.median_ns, cold.samples, cold.floors.len()), (2500.0, 30, 0));
    }

    #[test]
    fn collect_refuses_the_one_iteration_samples_of_test_mode() {
        let d = tempfile::tempdir().unwrap();
        let r = run("rootfs", now() - 60.0, now() + 60.0, &[]);
        manifest(d.path(), &r);
        criterion_result(d.path(), "rootfs/create-libkrun/200MB-root", 1e7, &[1]);
        let p = Paired {
            id: "rootfs/create-libkrun/200MB-root".into(),
            run: r.id.clone(),
            floors: vec!["floor-x".into()],
            samples: vec![(1, 1.2e7, vec![1e7])],
        };
        p.write(&d.path().join(PAIRED_DIR)).unwrap();
        let e = collect(d.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("rootfs/create-libkrun/200MB-root: 1 sample(s)"), "{e}");
        assert!(e.contains("at least 10"), "{e}");
    }

    #[test]
    fn collect_refuses_paired_samples_that_criterion_did_not_measure() {
        // What `cargo test` did before: it overwrote the paired record with one call.
        let d = tempfile::tempdir().unwrap();
        let r = run("binding", now() - 60.0, now() + 60.0, &[]);
        manifest(d.path(), &r);
        criterion_result(d.path(), "bind/s/shallow", 140.0, &measured_iters());
        let mut p = paired_samples(&r.id, "bind/s/shallow");
        p.samples.truncate(3);
        p.write(&d.path().join(PAIRED_DIR)).unwrap();
        let e = collect(d.path(), &[]).unwrap_err().to_string();
        assert!(
            e.contains("bind/s/shallow: the paired samples are not the ones criterion measured"),
            "{e}"
        );
        // A record from another run of the same id.
        paired_samples("binding@older", "bind/s/shallow")
            .write(&d.path().join(PAIRED_DIR))
            .unwrap();
        let e = collect(d.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("are from run binding@older, not from run binding@"), "{e}");
    }

    #[test]
    fn collect_needs_a_run_and_takes_only_results_written_during_it() {
        let d = tempfile::tempdir().unwrap();
        criterion_result(d.path(), "bind/s/shallow", 140.0, &measured_iters());
        let e = collect(d.path(), &[]).unwrap_err();
        assert!(matches!(e, ReportError::NoRun { .. }), "{e}");
        // A run that ended before these results were written does not take them.
        let r = run("binding", now() - 600.0, now() - 300.0, &[]);
        manifest(d.path(), &r);
        assert!(collect(d.path(), &[]).unwrap().benchmarks.is_empty());
        let e = collect(d.path(), &["runtime".into()]).unwrap_err().to_string();
        assert!(e.contains("no measuring run of runtime"), "{e}");
    }

    fn bench(run: &str, ratio: f64) -> Bench {
        Bench {
            run: run.into(),
            median_ns: 150.0,
            samples: 10,
            floors: vec![Floor { name: "floor-x".into(), median_ns: 100.0, ratio }],
        }
    }

    #[test]
    fn merge_updates_what_a_run_measured_and_a_full_run_drops_what_it_no_longer_measures() {
        let old = run("binding", 100.0, 200.0, &[]);
        let rt = run("runtime", 200.0, 300.0, &[]);
        let mut data = Data::default();
        data.runs.insert(old.id.clone(), old.clone());
        data.runs.insert(rt.id.clone(), rt.clone());
        data.benchmarks.insert("bind/a/x".into(), bench(&old.id, 1.0));
        data.benchmarks.insert("bind/b/x".into(), bench(&old.id, 1.0));
        data.benchmarks.insert("runtime/h/one".into(), bench(&rt.id, 7.0));
        // A filtered run of `binding`: updates bind/a, keeps bind/b from the old run.
        let sub = run("binding", 400.0, 500.0, &["^bind/a"]);
        let c = Collected {
            runs: [(sub.id.clone(), sub.clone())].into(),
            benchmarks: [("bind/a/x".to_owned(), bench(&sub.id, 2.0))].into(),
            memory: BTreeMap::new(),
        };
        assert!(merge(&mut data, c).is_empty());
        assert_eq!(data.benchmarks["bind/a/x"].floors[0].ratio, 2.0);
        assert_eq!(data.benchmarks["bind/b/x"].run, old.id);
        assert_eq!(data.runs.len(), 3);
        // An older run does not overwrite a newer one.
        let c = Collected {
            runs: [(old.id.clone(), old.clone())].into(),
            benchmarks: [("bind/a/x".to_owned(), bench(&old.id, 9.0))].into(),
            memory: BTreeMap::new(),
        };
        let notes = merge(&mut data, c);
        assert_eq!(data.benchmarks["bind/a/x"].floors[0].ratio, 2.0, "{notes:?}");
        // A full run of `binding` without bind/b drops it, and the runs nothing uses.
        let full = run("binding", 600.0, 700.0, &[]);
        let c = Collected {
            runs: [(full.id.clone(), full.clone())].into(),
            benchmarks: [("bind/a/x".to_owned(), bench(&full.id, 3.0))].into(),
            memory: BTreeMap::new(),
        };
        let notes = merge(&mut data, c);
        assert!(notes.iter().any(|n| n.starts_with("dropped bind/b/x")), "{notes:?}");
        assert_eq!(data.benchmarks.keys().collect::<Vec<_>>(), ["bind/a/x", "runtime/h/one"]);
        assert_eq!(data.runs.keys().cloned().collect::<Vec<_>>(), [full.id.clone(), rt.id.clone()]);
    }

    fn sample_data() -> Data {
        let r = run("binding", 100.0, 400.0, &[]);
        let mut data = Data::default();
        data.benchmarks.insert(
            "ensure/short-symlink/steady".into(),
            Bench {
                run: r.id.clone(),
                median_ns: 1270.0,
                samples: 30,
                floors: vec![Floor { name: "floor-lstat".into(), median_ns: 975.0, ratio: 1.49 }],
            },
        );
        data.runs.insert(r.id.clone(), r);
        data
    }

    #[test]
    fn memory_renders_per_box_with_its_floor_and_keeps_its_run() {
        let mut data = sample_data();
        assert!(render(&data)[4].1.contains("| not measured |"));
        let run = data.runs.keys().next().unwrap().clone();
        let m = MemoryRecord {
            id: "sandbox/idle-rss/100-boxes".into(),
            run: run.clone(),
            boxes: 100,
            per_box_kib: 8192.0,
            floor: "floor-host-backend".into(),
            floor_per_box_kib: 4096.0,
        };
        let mut only_memory = Data { runs: data.runs.clone(), ..Data::default() };
        merge(
            &mut only_memory,
            Collected {
                runs: data.runs.clone(),
                benchmarks: BTreeMap::new(),
                memory: [(m.id.clone(), m.clone())].into(),
            },
        );
        assert!(only_memory.runs.contains_key(&run), "a run only memory refers to is kept");
        data.memory.insert(m.id.clone(), m);
        let (name, table) = &render(&data)[4];
        assert_eq!(*name, "memory");
        assert!(
            table.contains(
                "| sandbox/idle-rss/100-boxes | 100 | 8.00 MiB | floor-host-backend | 4.00 MiB | \
                 4.00 MiB | 2.00× | #1 |"
            ),
            "{table}"
        );
    }

    #[test]
    fn render_gives_verdicts_from_the_data_and_says_the_machine_was_busy() {
        let data = sample_data();
        let s: BTreeMap<&str, String> = render(&data).into_iter().collect();
        assert!(
            s["targets"].contains(
                "| short-symlink steady ensure vs one lstat | 1.49× | ≤ 1.30× | **MISS** | #1 |"
            ),
            "{}",
            s["targets"]
        );
        let others = TARGETS.iter().filter(|t| Rows::Others.holds(t.numerator)).count();
        assert_eq!(others, TARGETS.len() - 3, "two rootfs targets and one oci target");
        assert!(
            s["targets"]
                .contains(&format!("0 of {others} targets met, 1 missed, {} not run.", others - 1)),
            "{}",
            s["targets"]
        );
        assert!(s["benchmarks"].contains(
            "| ensure/short-symlink/steady | 1.27 µs | floor-lstat | 975 ns | 1.49× | 30 | #1 |"
        ));
        assert!(s["runs"].starts_with("**Not a quiet machine.**"), "{}", s["runs"]);
        assert!(s["runs"].contains("| 30 % | 90 % | 2.50 | **no** |"), "{}", s["runs"]);
        assert!(s["runs"].contains("`0123456789` + uncommitted changes"), "{}", s["runs"]);
        assert!(
            s["rootfs"].contains("0 of 2 targets met, 0 missed, 2 not run."),
            "{}",
            s["rootfs"]
        );
        assert!(s["oci"].contains("0 of 1 targets met, 0 missed, 1 not run."), "{}", s["oci"]);
        assert!(!s["targets"].contains("podman"), "{}", s["targets"]);
        let mut quiet = data.clone();
        quiet.runs.values_mut().for_each(|r| r.quiet = true);
        assert!(!render(&quiet)[0].1.contains("Not a quiet machine"));
    }

    const DOC: &str = "# Perf\nprose\n\
        <!-- generated:begin runs -->\nold\n<!-- generated:end runs -->\n\
        <!-- generated:begin vm -->\nthe VM tier's\n<!-- generated:end vm -->\n\
        <!-- generated:begin targets -->\n<!-- generated:end targets -->\n\
        <!-- generated:begin benchmarks -->\nx\ny\n<!-- generated:end benchmarks -->\n\
        text\n<!-- generated:begin rootfs -->\n<!-- generated:end rootfs -->\n\
        <!-- generated:begin memory -->\n<!-- generated:end memory -->\n\
        <!-- generated:begin oci -->\n<!-- generated:end oci -->\ntail\n";

    #[test]
    fn splice_then_check_round_trips_and_leaves_other_sections_alone() {
        let p = Path::new("perf.md");
        let rendered = render(&sample_data());
        assert!(check(p, DOC, Path::new("d.json"), &rendered).is_err());
        let doc = splice(p, DOC, &rendered).unwrap();
        check(p, &doc, Path::new("d.json"), &rendered).unwrap();
        assert!(
            doc.contains("<!-- generated:begin vm -->\nthe VM tier's\n<!-- generated:end vm -->\n")
        );
        assert!(doc.starts_with("# Perf\nprose\n<!-- generated:begin runs -->\n**Not a quiet"));
        assert!(doc.ends_with("<!-- generated:end oci -->\ntail\n"));
        assert_eq!(splice(p, &doc, &rendered).unwrap(), doc, "splicing is idempotent");
    }

    #[test]
    fn check_names_the_section_line_and_column_of_the_first_difference() {
        let p = Path::new("perf.md");
        let rendered = render(&sample_data());
        let doc = splice(p, DOC, &rendered).unwrap();
        let pasted = doc.replace("| 1.49× | ≤ 1.30× | **MISS**", "| 1.29× | ≤ 1.30× | PASS");
        let line = pasted.lines().position(|l| l.contains("| 1.29× |")).unwrap() + 1;
        match check(p, &pasted, Path::new("d.json"), &rendered).unwrap_err() {
            ReportError::Differs(d) => {
                let Difference { name, line: l, column, doc, rendered, .. } = *d;
                assert_eq!((name.as_str(), l), ("targets", line));
                assert_eq!(
                    column,
                    "| short-symlink steady ensure vs one lstat | 1.".chars().count() + 1
                );
                assert!(doc.contains("1.29×") && rendered.contains("1.49×"), "{doc} / {rendered}");
            }
            e => panic!("{e}"),
        }
        // A line added at the end of a section, and one removed.
        let added = doc.replace(
            "<!-- generated:end benchmarks -->",
            "| pasted | row |\n<!-- generated:end benchmarks -->",
        );
        let e = check(p, &added, Path::new("d.json"), &rendered).unwrap_err().to_string();
        assert!(
            e.contains("section `benchmarks` differs")
                && e.contains("(no line: the section ends here)"),
            "{e}"
        );
        let unclosed = doc.replace("<!-- generated:end rootfs -->", "");
        assert!(matches!(
            check(p, &unclosed, Path::new("d.json"), &rendered),
            Err(ReportError::Unclosed { .. })
        ));
        let missing = doc
            .replace("<!-- generated:begin rootfs -->\n", "")
            .replace("<!-- generated:end rootfs -->\n", "");
        let e = check(p, &missing, Path::new("d.json"), &rendered).unwrap_err();
        assert!(matches!(&e, ReportError::MissingSection { name, .. } if name == "rootfs"), "{e}");
    }
}
