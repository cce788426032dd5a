//! Shared set-up for boxsock's criterion benches: homes of a chosen depth, link bases,
//! the strategies under test, the paired samples every ratio is computed from, and the
//! ratio report's table of targets.
//!
//! **Every ratio comes from one set of interleaved samples.** A subject and its floors
//! are timed in the same loop, one call of each per iteration in rotating order, inside
//! one criterion benchmark; each criterion sample records the total of every side
//! ([`Paired`], written to `<target>/criterion/boxsock-paired/`). The ratio to a floor
//! is the median over samples of `subject_i / floor_i` ([`Paired::ratio`]), so a stall
//! lands on both sides of the samples it hits and on no other sample. (Timing the floor
//! in a benchmark of its own, even an interleaved one, puts the subject's median and the
//! floor's median in two different runs of the loop.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};

use boxsock_core::registry::StrategyRegistration;
use boxsock_core::{BoxId, BoxLayout, SocketBinding, StrategyConfig};
use serde::{Deserialize, Serialize};

pub mod report;
pub mod run;

/// A home of (at least) `depth` bytes under `root`, created on disk.
pub fn home_of_len(root: &Path, depth: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    let mut i = 0;
    while p.as_os_str().len() + 1 < depth {
        let room = depth - p.as_os_str().len() - 1;
        let seg = room.clamp(1, 200);
        p.push(format!("{}{}", i % 10, "h".repeat(seg.saturating_sub(1))));
        i += 1;
    }
    std::fs::create_dir_all(&p).expect("create home");
    p
}

/// One box of one strategy, ready to bench: its home, id and a built strategy.
pub struct Subject {
    /// Strategy name.
    pub name: &'static str,
    /// The strategy.
    pub strategy: Arc<dyn SocketBinding>,
    /// The home layout.
    pub layout: BoxLayout,
    /// The box.
    pub id: BoxId,
}

impl Subject {
    /// Build `reg` against `home` with links under `base`, create the box dirs and
    /// ensure once. `None` when the strategy cannot serve this home (its reason is
    /// printed), e.g. `direct` under a deep home.
    pub fn new(reg: &StrategyRegistration, home: &Path, base: &Path) -> Option<Subject> {
        let config = StrategyConfig { base_dir: base.to_path_buf(), ..StrategyConfig::default() };
        let strategy = match (reg.build)(&config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped {}: {e}", reg.name);
                return None;
            }
        };
        std::fs::create_dir_all(home).expect("create home");
        let layout = BoxLayout::new(home);
        let id = BoxId::generate();
        boxsock_core::boxdir::create_box_dirs(&layout, &id).expect("box dirs");
        let opened = strategy.clone().open_box(
            &layout,
            &id,
            boxsock_core::Opening::Use,
            &[boxsock_core::catalogue::AGENT],
        );
        if let Err(e) = opened {
            eprintln!("skipped {} under a {}-byte home: {e}", reg.name, home.as_os_str().len());
            return None;
        }
        Some(Subject { name: reg.name, strategy, layout, id })
    }

    /// The box's binding, opened once (as a long-lived runtime holds a running box's).
    pub fn open(&self) -> Arc<dyn boxsock_core::BoxBinding> {
        let opening = boxsock_core::Opening::Use;
        self.strategy.clone().open_box(&self.layout, &self.id, opening, &[]).expect("open the box")
    }
}

/// Every strategy of the facade's registry (`boxsock::builtin_strategies()`), sorted by
/// name: a strategy crate the facade depends on is benched with no edit here.
pub fn strategies() -> Vec<&'static StrategyRegistration> {
    let reg = boxsock::builtin_strategies();
    reg.names().into_iter().filter_map(|n| reg.get(n).ok()).collect()
}

/// Idle memory of many boxes at once against the same number of its floor's boxes, in
/// one measuring run: each side's resident memory per box (the sum of `VmRSS` over every
/// process of its boxes, divided by their count). Written beside the paired samples as
/// `mem-<id>.json` ([`MemoryRecord::write`]); `bench-report` renders the `memory`
/// section from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// `group/function/parameter`, like a benchmark's.
    pub id: String,
    /// The run that measured it ([`run::RunStart::id`]).
    pub run: String,
    /// Boxes running at once, on each side.
    pub boxes: usize,
    /// The subject's resident memory per box, KiB.
    pub per_box_kib: f64,
    /// What the floor is (`floor-…`).
    pub floor: String,
    /// The floor's resident memory per box, KiB.
    pub floor_per_box_kib: f64,
}

impl MemoryRecord {
    fn file(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("mem-{}.json", id.replace('/', "__")))
    }

    /// Write it to `dir` (a measuring run's [`paired_dir`]).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(Self::file(dir, &self.id), json)
    }

    /// Every record in `dir`, by id.
    pub fn read_all(dir: &Path) -> BTreeMap<String, MemoryRecord> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !e.file_name().to_string_lossy().starts_with("mem-") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            if let Ok(m) = serde_json::from_str::<MemoryRecord>(&text) {
                out.insert(m.id.clone(), m);
            }
        }
        out
    }
}

/// The resident memory (`VmRSS`, KiB) of `pid` and every process below it, from /proc.
pub fn tree_rss_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
        }
    }
    total
}

/// The samples of one subject timed interleaved with its floors, in one measuring run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The subject's benchmark id, `group/function/parameter`.
    pub id: String,
    /// The run that measured them ([`run::RunStart::id`]): the report takes a record only
    /// from the run its bench binary's manifest describes.
    pub run: String,
    /// The floors' names (`floor-…`), in sample order.
    pub floors: Vec<String>,
    /// Per criterion call: iterations, the subject's total (ns), each floor's total (ns).
    /// Criterion's warm-up calls come first.
    pub samples: Vec<(u64, f64, Vec<f64>)>,
}

/// One box's whole life through `rt`: create with `opts`, start (ready), exec `true`,
/// remove. Panics on any error: a bench must not hide one.
pub async fn box_life(rt: &boxsock::Runtime, opts: boxsock::CreateOptions) {
    let rec = rt.create(opts).await.expect("create");
    let id = rec.id.to_string();
    rt.start(&id).await.expect("start");
    let (mut out, mut err) = (|_: &[u8]| {}, |_: &[u8]| {});
    let io = boxsock::ExecIo { stdin: None, stdout: &mut out, stderr: &mut err };
    let code = rt.exec(&id, vec!["true".into()], Vec::new(), io).await.expect("exec");
    assert_eq!(code, 0, "`true` exited {code} in box {id}");
    rt.remove(&id, true).await.expect("remove");
}

/// Where [`Paired`] records and run manifests go: `<target>/criterion/boxsock-paired`
/// (`$CARGO_TARGET_DIR`, else the workspace's `target`), beside criterion's own results.
/// Only a measuring run writes there ([`run::measuring`]).
pub fn paired_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion").join(PAIRED_DIR)
}

/// The directory name of [`Paired`] records under criterion's output directory.
pub const PAIRED_DIR: &str = "boxsock-paired";

/// The median of the finite values of `v`.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

impl Paired {
    /// The file of the record of `id` in `dir`.
    pub fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{}.json", id.replace('/', "__")))
    }

    /// Write to `dir` (one JSON file per subject).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(Paired::path(dir, &self.id), json)
    }

    /// Read every record in `dir`, by subject id; a file that is not a record (a run
    /// manifest, a record of an older format) is skipped.
    pub fn read_all(dir: &Path) -> BTreeMap<String, Paired> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            if let Ok(p) = serde_json::from_str::<Paired>(&text) {
                out.insert(p.id.clone(), p);
            }
        }
        out
    }

    /// Keep only the last `n` samples: criterion's measured samples come after its
    /// warm-up calls, which are recorded too.
    pub fn last(mut self, n: usize) -> Paired {
        let drop = self.samples.len().saturating_sub(n);
        self.samples.drain(..drop);
        self
    }

    /// The ratio of the subject to `floor`: the median over samples of
    /// `subject_i / floor_i`, each pair timed in the same interleaved loop.
    pub fn ratio(&self, floor: &str) -> Option<f64> {
        let k = self.floors.iter().position(|f| f == floor)?;
        median(self.samples.iter().filter_map(|(_, s, f)| f.get(k).map(|f| s / f)).collect())
    }

    /// The floor's median time per iteration (ns) over the same samples.
    pub fn floor_median(&self, floor: &str) -> Option<f64> {
        let k = self.floors.iter().position(|f| f == floor)?;
        median(
            self.samples
                .iter()
                .filter_map(|(n, _, f)| f.get(k).map(|f| f / (*n).max(1) as f64))
                .collect(),
        )
    }

    /// The subject's median time per iteration (ns) over the same samples.
    pub fn subject_median(&self) -> Option<f64> {
        median(self.samples.iter().map(|(n, s, _)| s / (*n).max(1) as f64).collect())
    }
}

/// A `setup` that does nothing.
pub fn no_setup() {}

/// Time `subject` and each floor interleaved, one call of each per iteration in
/// rotating order, so that all of them see the same machine: on these shared,
/// virtualised machines a filesystem's journal flush or a neighbour's build lands on
/// every side of the iterations it hits. `setup` runs, untimed, before each timed call
/// (sweep recreates its dangling links). Returns the subject's total and each floor's.
pub fn interleave(
    iters: u64,
    setup: &mut dyn FnMut(),
    subject: &mut dyn FnMut(),
    floors: &mut [(&str, &mut dyn FnMut())],
) -> (Duration, Vec<Duration>) {
    let k = floors.len() + 1;
    let (mut s, mut f) = (Duration::ZERO, vec![Duration::ZERO; floors.len()]);
    for i in 0..iters {
        for j in 0..k {
            // Rotate which side goes first.
            let which = (i as usize + j) % k;
            setup();
            let t = Instant::now();
            if which == 0 {
                subject();
                s += t.elapsed();
            } else {
                (floors[which - 1].1)();
                f[which - 1] += t.elapsed();
            }
        }
    }
    (s, f)
}

/// Register `subject` as `<group>/<name>/<param>`, timed interleaved with `floors`
/// ([`interleave`]) in one criterion benchmark, and, in a measuring run
/// ([`run::main`]), record every sample's totals ([`Paired`]): `bench-report` computes
/// each ratio from those same samples. Criterion's test mode writes nothing.
pub fn paired(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    name: &str,
    param: &str,
    setup: &mut dyn FnMut(),
    subject: &mut dyn FnMut(),
    floors: &mut [(&str, &mut dyn FnMut())],
) {
    let mut samples = Vec::new();
    g.bench_function(BenchmarkId::new(name, param), |b| {
        b.iter_custom(|n| {
            let (s, f) = interleave(n, &mut *setup, &mut *subject, &mut *floors);
            samples.push((n, s.as_nanos() as f64, f.iter().map(|d| d.as_nanos() as f64).collect()));
            s
        })
    });
    // Only a measuring run records (criterion's test mode ran each side once).
    let Some(run) = run::current_run().filter(|_| run::measuring()) else {
        return;
    };
    let record = Paired {
        id: format!("{group}/{name}/{param}"),
        run: run.id.clone(),
        floors: floors.iter().map(|(n, _)| (*n).to_owned()).collect(),
        samples,
    };
    if let Err(e) = record.write(&paired_dir()) {
        eprintln!("bench: cannot record the paired samples of {}: {e}", record.id);
    }
}

/// What a target compares.
pub enum Limit {
    /// The subject's ratio to one of its paired floors ([`Paired::ratio`]) is at most
    /// `max`.
    Ratio {
        /// The floor's name, paired with the subject.
        floor: &'static str,
        /// Largest acceptable ratio.
        max: f64,
    },
    /// The numerator's median is at most this many milliseconds (the only absolute
    /// target: a box's whole life must feel instant to a person).
    MedianMs(f64),
}

/// A target the project holds itself to.
pub struct Target {
    /// What it means, for the table.
    pub what: &'static str,
    /// Benchmark measured (`group/function/parameter`).
    pub numerator: &'static str,
    /// What it is compared with.
    pub limit: Limit,
}

const fn ratio(
    what: &'static str,
    numerator: &'static str,
    floor: &'static str,
    max: f64,
) -> Target {
    Target { what, numerator, limit: Limit::Ratio { floor, max } }
}

/// The targets of issue "Criterion benches" (ratios measured in one run).
pub const TARGETS: &[Target] = &[
    ratio(
        "short-symlink steady ensure vs one lstat",
        "ensure/short-symlink/steady",
        "floor-lstat",
        1.3,
    ),
    ratio(
        "bind via short-symlink vs direct short path (shallow home)",
        "bind/short-symlink/shallow",
        "floor-direct-short",
        1.05,
    ),
    ratio(
        "bind via short-symlink vs direct short path (300-byte home)",
        "bind/short-symlink/300B",
        "floor-direct-short",
        1.05,
    ),
    ratio(
        "connect via short-symlink vs direct short path (shallow home)",
        "connect/short-symlink/shallow",
        "floor-direct-short",
        1.05,
    ),
    ratio(
        "connect via short-symlink vs direct short path (300-byte home)",
        "connect/short-symlink/300B",
        "floor-direct-short",
        1.05,
    ),
    // Issue 19: through a held binding, against the field's own technique.
    ratio(
        "connect via short-symlink, held binding, vs proc-self-fd (shallow home)",
        "connect/short-symlink/shallow",
        "floor-proc-self-fd",
        1.2,
    ),
    ratio(
        "connect via short-symlink, held binding, vs proc-self-fd (300-byte home)",
        "connect/short-symlink/300B",
        "floor-proc-self-fd",
        1.2,
    ),
    ratio(
        "bind via short-symlink, held binding, vs proc-self-fd (shallow home)",
        "bind/short-symlink/shallow",
        "floor-proc-self-fd",
        1.2,
    ),
    ratio(
        "bind via short-symlink, held binding, vs proc-self-fd (300-byte home)",
        "bind/short-symlink/300B",
        "floor-proc-self-fd",
        1.2,
    ),
    ratio("abstract bind vs filesystem bind", "bind/abstract/shallow", "floor-direct-short", 0.3),
    ratio(
        "short-symlink sweep of 10 000 entries vs readdir",
        "sweep/short-symlink/10000",
        "floor-readdir",
        3.0,
    ),
    ratio(
        "host backend: create→ready→exec→remove vs spawning `true`",
        "runtime/host-short-symlink/one",
        "floor-spawn-true",
        4.0,
    ),
    ratio(
        "warm exec of `true` through Runtime::command vs one raw agent round trip",
        "runtime/warm-exec-true/host-short-symlink",
        "floor-raw-agent-round-trip",
        1.2,
    ),
    // Issue 20: a pull from a local registry against the field's tools, same image.
    ratio(
        "pull + unpack of a ~100 MB image vs skopeo copy + umoci unpack",
        "image/pull-unpack/100MB",
        "floor-skopeo-copy-umoci-unpack",
        1.0,
    ),
    // Issue 22: the sandbox backend's box life against the host backend's and against
    // runc's, in the same samples.
    ratio(
        "sandbox backend: create→ready→exec→remove vs the host backend's",
        "sandbox/life/busybox-root",
        "floor-host-backend",
        2.0,
    ),
    ratio(
        "sandbox backend: create→ready→exec→remove vs `runc run` of the same root",
        "sandbox/life/busybox-root",
        "floor-runc-run",
        1.5,
    ),
    Target {
        what: "host backend: create→ready→exec→remove, p50",
        numerator: "runtime/host-short-symlink/one",
        limit: Limit::MedianMs(50.0),
    },
    // Issue 13: creating a box from a 200 MB root must not copy it (decision 0006).
    ratio(
        "libkrun create from a 200 MB root vs from an empty root",
        "rootfs/create-libkrun/200MB-root",
        "floor-create-empty-root",
        1.25,
    ),
    ratio(
        "libkrun create from a 200 MB root vs `cp -a` of it",
        "rootfs/create-libkrun/200MB-root",
        "floor-cp-a-200MB",
        0.10,
    ),
    // Issue 23: boxsock-oci as podman drives it, against runc for the same image.
    ratio(
        "`podman run --rm IMAGE true` through boxsock-oci (sandbox) vs through runc",
        "oci/podman-run-rm-true/busybox-image",
        "floor-podman-runc",
        1.5,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_in_one_sample_moves_neither_side_of_the_ratio() {
        // Subject 1.2× its floor; sample 3 stalled 100× on both sides (same loop).
        let mut samples: Vec<(u64, f64, Vec<f64>)> =
            (1..=9).map(|i| (i, 120.0 * i as f64, vec![100.0 * i as f64])).collect();
        samples[3].1 *= 100.0;
        samples[3].2[0] *= 100.0;
        let p = Paired {
            id: "bind/s/shallow".into(),
            run: "binding@t".into(),
            floors: vec!["floor-x".into()],
            samples,
        };
        assert!((p.ratio("floor-x").unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(p.floor_median("floor-x"), Some(100.0));
        assert_eq!(p.ratio("floor-y"), None);
    }

    #[test]
    fn outside_a_measuring_run_paired_records_nothing() {
        // A test process is not a measuring run (no `--bench`): criterion's test mode of
        // `cargo test --benches` is the same. The benchmark really runs, in criterion's
        // benchmark mode even, and still nothing reaches the directory the report reads.
        assert!(!run::measuring());
        let out = tempfile::tempdir().unwrap();
        let mut c = criterion::Criterion::default()
            .output_directory(out.path())
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_millis(20));
        let mut g = c.benchmark_group("selftest");
        let name = format!("pid{}", std::process::id());
        let mut calls = 0u64;
        let mut subject = || calls += 1;
        let mut floor = || {};
        let floors: &mut [(&str, &mut dyn FnMut())] = &mut [("floor-none", &mut floor)];
        paired(&mut g, "selftest", &name, "x", &mut no_setup, &mut subject, floors);
        g.finish();
        assert!(calls >= 10, "criterion ran the benchmark {calls} times");
        let record = Paired::path(&paired_dir(), &format!("selftest/{name}/x"));
        assert!(!record.exists(), "{} written outside a measuring run", record.display());
    }

    #[test]
    fn records_round_trip_and_warm_up_samples_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = Paired {
            id: "sweep/short-symlink/10000".into(),
            run: "binding@t".into(),
            floors: vec!["floor-readdir".into(), "floor-b".into()],
            samples: vec![
                (1, 5.0, vec![1.0, 2.0]),
                (2, 30.0, vec![10.0, 20.0]),
                (4, 60.0, vec![20.0, 40.0]),
            ],
        };
        p.write(d.path()).unwrap();
        let all = Paired::read_all(d.path());
        assert_eq!(all.get(&p.id), Some(&p));
        let last = p.clone().last(2);
        assert_eq!(last.samples.len(), 2);
        assert_eq!(last.ratio("floor-readdir"), Some(3.0));
        assert_eq!(last.ratio("floor-b"), Some(1.5));
        assert_eq!(p.last(10).samples.len(), 3);
    }
}
