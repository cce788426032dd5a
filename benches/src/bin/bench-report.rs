//! `bench-report`: reads criterion's results (`target/criterion/**/new/estimates.json`)
//! from the last `cargo bench -p boxsock-benches` run and prints every benchmark as a
//! ratio to the floor measured in the same run, then the project's targets with PASS or
//! MISS. `--markdown` prints the tables as Markdown for docs/performance.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use boxsock_benches::{Limit, TARGETS};

fn median_ns(estimates: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(estimates).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// Walk `<criterion>/<group>/<function>/<param>/new/estimates.json`, keyed by
/// `group/function/param` as given in `benchmark.json` (criterion's directory names are
/// sanitised, the JSON keeps the real ids).
fn collect(dir: &Path, out: &mut BTreeMap<String, f64>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
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
                out.insert(id, ns);
            }
        } else if p.file_name().is_some_and(|n| n != "report" && n != "base" && n != "change") {
            collect(&p, out);
        }
    }
}

fn split(id: &str) -> (&str, &str, &str) {
    let mut it = id.splitn(3, '/');
    (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""))
}

/// The floor of a benchmark: its paired floor (`<group>/floor-…~<function>/<param>`,
/// measured interleaved with it), else the `floor-*` function of the same group with
/// the same parameter, else the group's only floor.
fn floor_of<'a>(id: &str, all: &'a BTreeMap<String, f64>) -> Option<(&'a str, f64)> {
    let (group, function, param) = split(id);
    let floors: Vec<(&String, &f64)> =
        all.iter().filter(|(k, _)| split(k).0 == group && split(k).1.starts_with("floor-")).collect();
    let paired = |k: &&String| split(k).1.split_once('~').is_some_and(|(_, f)| f == function) && split(k).2 == param;
    floors
        .iter()
        .find(|(k, _)| paired(k))
        .or_else(|| floors.iter().find(|(k, _)| !k.contains('~') && split(k).2 == param))
        .or_else(|| (floors.len() == 1).then(|| &floors[0]))
        .map(|(k, v)| (k.as_str(), **v))
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
        eprintln!(
            "bench-report: no results under {}; run `cargo bench -p boxsock-benches` first",
            dir.display()
        );
        std::process::exit(2);
    }
    let (open, sep, close) = if markdown { ("| ", " | ", " |") } else { ("", "  ", "") };
    println!("{open}{:<44}{sep}{:>10}{sep}{:<38}{sep}{:>7}{close}", "benchmark", "median", "floor (same run)", "ratio");
    if markdown {
        println!("|---|---:|---|---:|");
    }
    for (id, ns) in &all {
        let (floor, ratio) = match floor_of(id, &all) {
            _ if split(id).1.starts_with("floor-") => ("(floor)".into(), "1.00×".into()),
            Some((f, fns)) => (f.to_owned(), format!("{:.2}×", ns / fns)),
            None => ("—".into(), "—".into()),
        };
        println!("{open}{id:<44}{sep}{:>10}{sep}{floor:<38}{sep}{ratio:>7}{close}", human(*ns));
    }
    println!();
    println!("{open}{:<62}{sep}{:>9}{sep}{:>7}{sep}{:<6}{close}", "target", "measured", "limit", "");
    if markdown {
        println!("|---|---:|---:|---|");
    }
    let mut missed = 0;
    for t in TARGETS {
        let (value, max, ok) = match (&t.limit, all.get(t.numerator)) {
            (Limit::Ratio { denominator, max }, Some(n)) => match all.get(*denominator) {
                Some(d) => (format!("{:.2}×", n / d), format!("{max:.2}×"), Some(n / d <= *max)),
                None => ("—".into(), format!("{max:.2}×"), None),
            },
            (Limit::MedianMs(max), Some(n)) => (human(*n), format!("{max} ms"), Some(n / 1e6 <= *max)),
            (Limit::Ratio { max, .. }, None) => ("—".into(), format!("{max:.2}×"), None),
            (Limit::MedianMs(max), None) => ("—".into(), format!("{max} ms"), None),
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
