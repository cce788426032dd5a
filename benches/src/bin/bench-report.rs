//! `bench-report`: reads criterion's results (`target/criterion/**/new/estimates.json`)
//! and the paired samples (`target/criterion/boxsock-paired/`, see
//! [`boxsock_benches::Paired`]) of the last `cargo bench -p boxsock-benches` run, and
//! prints every benchmark with, for each floor it was timed interleaved with, that
//! floor's median and the ratio computed from the same samples; then the project's
//! targets with PASS or MISS. A benchmark timed without a floor has no ratio: no ratio
//! is ever taken between two separately measured benchmarks. `--markdown` prints the
//! tables as Markdown for docs/performance.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use boxsock_benches::{Limit, PAIRED_DIR, Paired, TARGETS};

/// How many samples criterion measured (its `sample.json`), to drop warm-up calls from
/// the paired records.
fn sample_count(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("sample.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v.get("iters")?.as_array()?.len())
}

fn median_ns(estimates: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(estimates).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// Walk `<criterion>/<group>/<function>/<param>/new/estimates.json`, keyed by
/// `group/function/param` as given in `benchmark.json` (criterion's directory names are
/// sanitised, the JSON keeps the real ids).
fn collect(dir: &Path, out: &mut BTreeMap<String, (f64, Option<usize>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            let id = std::fs::read_to_string(p.join("benchmark.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("full_id").and_then(|s| s.as_str()).map(str::to_owned));
            if let (Some(id), Some(ns)) = (id, median_ns(&p.join("estimates.json"))) {
                out.insert(id, (ns, sample_count(&p)));
            }
        } else if p.file_name().is_some_and(|n| n != "report" && n != "base" && n != "change" && n != PAIRED_DIR) {
            collect(&p, out);
        }
    }
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let markdown = args.iter().any(|a| a == "--markdown");
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    let mut all = BTreeMap::new();
    collect(&dir, &mut all);
    if all.is_empty() {
        eprintln!("bench-report: no results under {}; run `cargo bench -p boxsock-benches` first", dir.display());
        std::process::exit(2);
    }
    // The paired samples of this run, cut to the samples criterion measured.
    let paired: BTreeMap<String, Paired> = Paired::read_all(&dir.join(PAIRED_DIR))
        .into_iter()
        .filter_map(|(id, p)| {
            let n = all.get(&id)?.1?;
            Some((id, p.last(n)))
        })
        .collect();
    let (open, sep, close) = if markdown { ("| ", " | ", " |") } else { ("", "  ", "") };
    println!(
        "{open}{:<44}{sep}{:>10}{sep}{:<22}{sep}{:>10}{sep}{:>7}{close}",
        "benchmark", "median", "floor (same samples)", "its median", "ratio"
    );
    if markdown {
        println!("|---|---:|---|---:|---:|");
    }
    for (id, (ns, _)) in &all {
        match paired.get(id) {
            Some(p) if !p.floors.is_empty() => {
                for f in &p.floors {
                    let fm = p.floor_median(f).map(human).unwrap_or_else(|| "—".into());
                    let r = p.ratio(f).map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into());
                    println!("{open}{id:<44}{sep}{:>10}{sep}{f:<22}{sep}{fm:>10}{sep}{r:>7}{close}", human(*ns));
                }
            }
            _ => println!("{open}{id:<44}{sep}{:>10}{sep}{:<22}{sep}{:>10}{sep}{:>7}{close}", human(*ns), "—", "—", "—"),
        }
    }
    println!();
    println!("{open}{:<62}{sep}{:>9}{sep}{:>7}{sep}{:<6}{close}", "target", "measured", "limit", "");
    if markdown {
        println!("|---|---:|---:|---|");
    }
    let mut missed = 0;
    for t in TARGETS {
        let (value, max, ok) = match &t.limit {
            Limit::Ratio { floor, max } => match paired.get(t.numerator).and_then(|p| p.ratio(floor)) {
                Some(r) => (format!("{r:.2}×"), format!("{max:.2}×"), Some(r <= *max)),
                None => ("—".into(), format!("{max:.2}×"), None),
            },
            Limit::MedianMs(max) => match all.get(t.numerator) {
                Some((n, _)) => (human(*n), format!("{max} ms"), Some(n / 1e6 <= *max)),
                None => ("—".into(), format!("{max} ms"), None),
            },
        };
        let verdict = match ok {
            Some(true) => "PASS",
            Some(false) => {
                missed += 1;
                "MISS"
            }
            None => "not run",
        };
        println!("{open}{:<62}{sep}{value:>9}{sep}{max:>7}{sep}{verdict:<6}{close}", t.what);
    }
    if missed > 0 {
        eprintln!("bench-report: {missed} target(s) missed; see docs/performance.md");
    }
}
