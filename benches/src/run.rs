//! One measuring run of a bench binary: whether criterion is measuring at all (test mode
//! must write nothing the report reads), and the run's manifest — when, which commit,
//! which machine, and how busy the machine was while it ran.
//!
//! A bench binary's `main` is [`main`]: in criterion's benchmark mode it starts a
//! [`Sampler`], runs the groups, and writes `run-<bench>.json` ([`RunRecord`]) beside the
//! paired samples. Every [`crate::Paired`] record carries the run's id, so the report
//! takes only the samples of the run its manifest describes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Whether criterion measures, given the bench binary's arguments (program name first).
///
/// Mirrors criterion 0.7's `configure_from_args`, whose `Mode` is private: `cargo bench`
/// passes `--bench`; `cargo test --benches` (and so `cargo test --all-targets`) passes
/// none, which is criterion's test mode (every benchmark runs once). `--test`, `--list`
/// and `--profile-time` do not measure either.
pub fn measuring_args<S: AsRef<str>>(args: &[S]) -> bool {
    let has = |flag: &str| args.iter().skip(1).any(|a| a.as_ref() == flag);
    let profiling = args.iter().skip(1).any(|a| {
        let a = a.as_ref();
        a == "--profile-time" || a.starts_with("--profile-time=")
    });
    has("--bench") && !has("--test") && !has("--list") && !profiling
}

/// [`measuring_args`] of this process.
pub fn measuring() -> bool {
    static MEASURING: OnceLock<bool> = OnceLock::new();
    *MEASURING.get_or_init(|| measuring_args(&std::env::args().collect::<Vec<_>>()))
}

/// The id of the run this process is measuring (set by [`main`]), `None` outside one.
pub fn current_run() -> Option<&'static RunStart> {
    RUN.get()
}

static RUN: OnceLock<RunStart> = OnceLock::new();

/// What is known when a run starts.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// The bench binary (`binding`, `runtime`, `rootfs`).
    pub bench: String,
    /// `<bench>@<started>`: what every record of this run carries.
    pub id: String,
    /// Start, RFC 3339 UTC.
    pub started: String,
    /// Start, seconds since the epoch (to compare files' modification times with).
    pub started_unix: f64,
}

/// The machine a run measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub mem_gib: f64,
}

impl Machine {
    /// This machine, read from /proc.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok()
            })
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            mem_gib: (kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        }
    }
}

/// How busy the machine was, apart from the run itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Share of all CPUs' time that other processes (and the hypervisor's steal) used over
    /// the whole run: busy time in /proc/stat minus this process's and its reaped
    /// children's, over all CPUs' time.
    pub others_mean: f64,
    /// The largest such share over one sampling window ([`SAMPLE_EVERY`]).
    pub others_max: f64,
    /// The largest 1-minute load average seen (it counts the run's own threads too).
    pub load1_max: f64,
    /// Windows sampled.
    pub windows: usize,
}

/// How often the sampler reads /proc.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// A run is quiet when other processes used at most this share of the CPUs over it…
pub const QUIET_MEAN: f64 = 0.10;
/// …and at most this share in any one window.
pub const QUIET_WINDOW: f64 = 0.50;

impl Load {
    /// [`QUIET_MEAN`] and [`QUIET_WINDOW`].
    pub fn quiet(&self) -> bool {
        self.others_mean <= QUIET_MEAN && self.others_max <= QUIET_WINDOW
    }
}

/// The manifest of one measuring run of one bench binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The bench binary.
    pub bench: String,
    /// `<bench>@<started>`.
    pub id: String,
    /// Start, RFC 3339 UTC.
    pub started: String,
    /// Start, seconds since the epoch.
    pub started_unix: f64,
    /// End, RFC 3339 UTC.
    pub finished: String,
    /// End, seconds since the epoch.
    pub finished_unix: f64,
    /// The arguments criterion got besides `--bench` (a filter runs a subset).
    pub args: Vec<String>,
    /// `git rev-parse HEAD` of the checkout, `+dirty` when tracked files differed.
    pub commit: String,
    /// The machine.
    pub machine: Machine,
    /// How busy it was.
    pub load: Load,
    /// [`Load::quiet`], recorded.
    pub quiet: bool,
}

impl RunRecord {
    /// `run-<bench>.json` in `dir`.
    pub fn path(dir: &Path, bench: &str) -> PathBuf {
        dir.join(format!("run-{bench}.json"))
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let ts = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_string()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `git rev-parse HEAD` of the checkout holding this crate, with `+dirty` when a tracked
/// file differs from it; `unknown` without git.
pub fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match out(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}+dirty") } else { head }
        }
        None => "unknown".into(),
    }
}

/// CPU time counters (clock ticks): the machine's busy and total time, this process's
/// own (threads and reaped children included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticks {
    /// user + nice + system + irq + softirq + steal, all CPUs.
    pub busy: u64,
    /// busy + idle + iowait.
    pub total: u64,
    /// utime + stime + cutime + cstime of this process.
    pub own: u64,
}

impl Ticks {
    /// Parse the `cpu` line of /proc/stat and the fields of /proc/self/stat.
    pub fn parse(proc_stat: &str, self_stat: &str) -> Option<Ticks> {
        let cpu: Vec<u64> = proc_stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let f = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let busy = f(0) + f(1) + f(2) + f(5) + f(6) + f(7);
        let total = busy + f(3) + f(4);
        // The command may hold spaces and parentheses: fields start after the last ')'.
        let rest = &self_stat[self_stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': state is field 3 of proc(5), so utime (14) is index 11.
        let own =
            (11..=14).map(|i| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)).sum();
        Some(Ticks { busy, total, own })
    }

    fn read() -> Option<Ticks> {
        Ticks::parse(
            &std::fs::read_to_string("/proc/stat").ok()?,
            &std::fs::read_to_string("/proc/self/stat").ok()?,
        )
    }

    /// The share of all CPUs' time between `self` and `later` that others used.
    pub fn others_share(&self, later: &Ticks) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|t| *t > 0)?;
        let busy = later.busy.saturating_sub(self.busy);
        let own = later.own.saturating_sub(self.own);
        Some(busy.saturating_sub(own) as f64 / total as f64)
    }
}

fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Samples /proc every [`SAMPLE_EVERY`] on a thread of its own until [`Sampler::stop`].
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Load>,
}

impl Sampler {
    /// Start sampling.
    pub fn start() -> Sampler {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let first = Ticks::read();
            let (mut prev, mut others_max, mut load1_max, mut windows) =
                (first, 0.0f64, load1().unwrap_or(0.0), 0);
            loop {
                let done = !matches!(
                    stopped.recv_timeout(SAMPLE_EVERY),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                let now = Ticks::read();
                if let Some(s) = prev.zip(now).and_then(|(a, b)| a.others_share(&b)) {
                    others_max = others_max.max(s);
                    windows += 1;
                }
                load1_max = load1_max.max(load1().unwrap_or(0.0));
                prev = now;
                if done {
                    let others_mean = match (first, now) {
                        (Some(a), Some(b)) => a.others_share(&b).unwrap_or(0.0),
                        _ => 0.0,
                    };
                    return Load { others_mean, others_max, load1_max, windows };
                }
            }
        });
        Sampler { stop, thread }
    }

    /// Stop and return what was seen.
    pub fn stop(self) -> Load {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(Load {
            others_mean: f64::NAN,
            others_max: f64::NAN,
            load1_max: f64::NAN,
            windows: 0,
        })
    }
}

/// A bench binary's `main`: run `groups` (the functions `criterion_group!` defines) and
/// criterion's summary. In benchmark mode ([`measuring`]) the run is sampled and its
/// [`RunRecord`] written to [`crate::paired_dir`] at the end; in test, list or profile
/// mode nothing is written there.
pub fn main(bench: &str, groups: &[fn()]) {
    if !measuring() {
        for g in groups {
            g();
        }
        criterion::Criterion::default().configure_from_args().final_summary();
        return;
    }
    let t0 = SystemTime::now();
    let started = rfc3339(t0);
    let start = RunStart {
        bench: bench.to_owned(),
        id: format!("{bench}@{started}"),
        started,
        started_unix: unix(t0),
    };
    let _ = RUN.set(start.clone());
    let commit = git_commit();
    let sampler = Sampler::start();
    for g in groups {
        g();
    }
    criterion::Criterion::default().configure_from_args().final_summary();
    let load = sampler.stop();
    let t1 = SystemTime::now();
    let args = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let quiet = load.quiet();
    let record = RunRecord {
        bench: start.bench,
        id: start.id,
        started: start.started,
        started_unix: start.started_unix,
        finished: rfc3339(t1),
        finished_unix: unix(t1),
        args,
        commit,
        machine: Machine::this(),
        load,
        quiet,
    };
    let dir = crate::paired_dir();
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let json = serde_json::to_string_pretty(&record).map_err(std::io::Error::other)?;
        std::fs::write(RunRecord::path(&dir, bench), json)
    });
    match written {
        Ok(()) => eprintln!(
            "bench {bench}: run recorded in {} (others used {:.0} % of the CPUs, {})",
            RunRecord::path(&dir, bench).display(),
            record.load.others_mean * 100.0,
            if record.quiet { "quiet" } else { "NOT quiet" }
        ),
        Err(e) => eprintln!("bench {bench}: cannot record the run in {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cargo_bench_measures() {
        // `cargo bench` (optionally with a filter) measures.
        assert!(measuring_args(&["binding-1a2b", "--bench"]));
        assert!(measuring_args(&["binding-1a2b", "--bench", "^bind/"]));
        // `cargo test --benches` / `--all-targets` passes no `--bench`: criterion's test mode.
        assert!(!measuring_args(&["binding-1a2b"]));
        assert!(!measuring_args(&["binding-1a2b", "^bind/"]));
        assert!(!measuring_args(&["binding-1a2b", "--bench", "--test"]));
        assert!(!measuring_args(&["binding-1a2b", "--bench", "--list"]));
        assert!(!measuring_args(&["binding-1a2b", "--bench", "--profile-time", "5"]));
        assert!(!measuring_args(&["binding-1a2b", "--bench", "--profile-time=5"]));
        // The program name is not an argument.
        assert!(!measuring_args(&["--bench"]));
    }

    #[test]
    fn others_share_subtracts_the_run_itself() {
        let self_stat =
            |own: u64| format!("42 (bench (x) y) R 1 2 3 4 5 6 7 8 9 10 {own} 0 0 0 20 0");
        let a =
            Ticks::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n", &self_stat(100)).unwrap();
        assert_eq!(a, Ticks { busy: 150, total: 1000, own: 100 });
        // 200 ticks of all CPUs: 120 busy, 100 of them ours.
        let b = Ticks::parse("cpu  200 0 70 880 50 0 0 0 0 0\n", &self_stat(200)).unwrap();
        assert!((a.others_share(&b).unwrap() - 0.1).abs() < 1e-9);
        // Steal counts as others'.
        let c = Ticks::parse("cpu  200 0 70 880 50 0 0 40 0 0\n", &self_stat(200)).unwrap();
        assert!((a.others_share(&c).unwrap() - 60.0 / 240.0).abs() < 1e-9);
        assert_eq!(a.others_share(&a), None);
    }

    #[test]
    fn quiet_needs_both_the_mean_and_every_window() {
        let l = |m, x| Load { others_mean: m, others_max: x, load1_max: 1.0, windows: 10 };
        assert!(l(0.05, 0.3).quiet());
        assert!(!l(0.2, 0.3).quiet());
        assert!(!l(0.05, 0.9).quiet());
    }
}
