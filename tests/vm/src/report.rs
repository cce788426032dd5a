//! The real-VM tier's measurements as data (`docs/data/vm.json`) and the "Real VM"
//! section of `docs/performance.md` rendered from that data, between
//! `<!-- generated:begin vm -->` and `<!-- generated:end vm -->` (the convention every
//! generated table of that doc follows). The section is a pure function of the JSON, so
//! a unit test (no VM) can check that the committed doc matches the committed data.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    DISK_READ, DISK_START_READY, EXEC_TRUE, IMAGE_START_READY, Pair, RatioLimit, START_READY,
    ScenarioResult, VOLUME_READ, summarize_pairs,
};

/// First line of the generated section.
pub const BEGIN: &str = "<!-- generated:begin vm -->";
/// Last line of the generated section.
pub const END: &str = "<!-- generated:end vm -->";
/// The committed data file, relative to the workspace root.
pub const DATA_PATH: &str = "docs/data/vm.json";
/// The format of [`DATA_PATH`]; bump it when a field changes meaning.
pub const FORMAT: u64 = 1;

/// The paired measurements the tier asserts, in the order the section shows them.
pub const RATIOS: [RatioLimit; 6] =
    [START_READY, EXEC_TRUE, IMAGE_START_READY, DISK_START_READY, DISK_READ, VOLUME_READ];

/// Everything about one VM run that goes into the data file.
pub struct RunFacts<'a> {
    /// Scenario results by name.
    pub results: &'a std::collections::BTreeMap<String, ScenarioResult>,
    /// Metrics by name.
    pub metrics: &'a std::collections::BTreeMap<String, Vec<u64>>,
    /// Pairs by name.
    pub pairs: &'a std::collections::BTreeMap<String, Vec<Pair>>,
    /// Boot to power-off.
    pub vm_wall: Duration,
    /// `inputs.txt` of the image (the pinned assets).
    pub inputs: &'a str,
    /// Each freeze of the TCG host, and what was rerun (`VmRun::Ran::freezes`).
    pub freezes: &'a [String],
    /// Each scenario run again after a guest kernel crash (`VmRun::Ran::guest_crashes`).
    pub guest_crashes: &'a [String],
}

fn cmd_out(prog: &str, args: &[&str], dir: &Path) -> String {
    Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The data file's JSON for a run (the date, the commit and what ran come from here).
pub fn report_json(f: &RunFacts<'_>) -> Value {
    let root = crate::workspace_root();
    let commit = cmd_out("git", &["rev-parse", "--short=12", "HEAD"], &root);
    let dirty =
        !cmd_out("git", &["status", "--porcelain", "--untracked-files=no"], &root).is_empty();
    let qemu = cmd_out("qemu-system-x86_64", &["--version"], &root);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let ratios: Vec<Value> = RATIOS
        .iter()
        .map(|lim| {
            let pairs = f.pairs.get(lim.name).map(Vec::as_slice).unwrap_or(&[]);
            let raw: Vec<Value> = pairs
                .iter()
                .map(|p| {
                    json!([
                        p.index,
                        if p.subject_first { "subject-first" } else { "floor-first" },
                        p.subject_ms,
                        p.floor_ms
                    ])
                })
                .collect();
            json!({
                "name": lim.name,
                "subject": lim.subject,
                "floor": lim.floor,
                "min_pairs": lim.min_pairs,
                "limit": lim.limit,
                "target": lim.target,
                "pairs": raw,
            })
        })
        .collect();
    let scenarios: serde_json::Map<String, Value> = f
        .results
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                json!(format!("{} {}", r.status, r.detail.split(':').next().unwrap_or("")).trim()),
            )
        })
        .collect();
    json!({
        "format": FORMAT,
        "date": cmd_out("date", &["-u", "+%Y-%m-%d"], &root),
        "commit": if dirty { format!("{commit}+uncommitted") } else { commit },
        "ran": {
            "command": "BOXSOCK_VM_REQUIRED=1 cargo test -p boxsock-vm-tests",
            "profile": "release", // the binaries in the image are always release builds (lib.rs)
            "host": format!(
                "QEMU TCG host (-cpu EPYC,+svm,+npt, {} vCPU, 3072 MiB), nested KVM; {}",
                std::env::var("BOXSOCK_VM_SMP").unwrap_or_else(|_| "1".into()),
                qemu.lines().next().unwrap_or("qemu version unknown")
            ),
            "machine": format!(
                "{} CPUs, load average {} at the end of the run",
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            ),
            "vm_wall_s": f.vm_wall.as_secs(),
            "scenarios": scenarios,
            "assets": f.inputs.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>(),
            "host_freezes": f.freezes,
            "guest_crashes": f.guest_crashes,
        },
        "ratios": ratios,
        "metrics": f.metrics,
    })
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

fn pairs_of(r: &Value) -> Vec<Pair> {
    r.get("pairs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(Pair {
                        index: u32::try_from(p.get(0)?.as_u64()?).ok()?,
                        subject_first: p.get(1)?.as_str()? == "subject-first",
                        subject_ms: p.get(2)?.as_u64()?,
                        floor_ms: p.get(3)?.as_u64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The section (markers included, ending in a newline) rendered from the data file's
/// JSON. Verdicts are computed here from the raw pairs, by the tier's own
/// [`summarize_pairs`], so the doc cannot state a verdict the data does not give.
pub fn render_section(d: &Value) -> String {
    let ran = &d["ran"];
    let mut o = String::new();
    o.push_str(BEGIN);
    o.push('\n');
    o.push_str(&format!(
        "<!-- from {DATA_PATH} by tests/vm \
         (BOXSOCK_UPDATE_DOCS=1 cargo test -p boxsock-vm-tests); do not edit -->\n"
    ));
    let scen = ran["scenarios"].as_object();
    let total = scen.map_or(0, |m| m.len());
    let passed = scen.map_or(0, |m| {
        m.values().filter(|v| v.as_str().is_some_and(|v| v.starts_with("pass"))).count()
    });
    o.push_str(&format!(
        "Run of {}, commit `{}`: `{}` ({} build). {}; build machine: {}. Whole VM run \
         (boot, every scenario, power-off): {} s. Scenarios: {passed} of {total} passed.\n\n",
        s(d, "date"),
        s(d, "commit"),
        s(ran, "command"),
        s(ran, "profile"),
        s(ran, "host"),
        s(ran, "machine"),
        ran["vm_wall_s"].as_u64().unwrap_or(0),
    ));
    o.push_str(
        "| measurement | subject | floor | pairs | subject median (ms) | floor median (ms) \
         | median of per-pair ratios | range | target | asserted limit | verdict |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in d["ratios"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let lim = RatioLimit {
            name: "",
            subject: "",
            floor: "",
            min_pairs: r["min_pairs"].as_u64().unwrap_or(0) as usize,
            limit: r["limit"].as_f64().unwrap_or(f64::NAN),
            target: f64::NAN,
        };
        // Data from before targets were recorded: the limit was the target.
        let target = r["target"].as_f64().unwrap_or(lim.limit);
        let pairs = pairs_of(r);
        let (cells, verdict) = match summarize_pairs(&lim, &pairs) {
            Ok(x) => (
                format!(
                    "{:.0} | {:.0} | {:.3}× | {:.2}–{:.2}×",
                    x.subject_median_ms, x.floor_median_ms, x.median, x.min, x.max
                ),
                match (x.pass, x.median <= target) {
                    (false, _) => "FAIL".to_owned(),
                    (true, true) => "PASS".to_owned(),
                    (true, false) => "PASS (target missed)".to_owned(),
                },
            ),
            Err(e) => ("— | — | — | —".to_owned(), format!("NOT MEASURED ({e})")),
        };
        o.push_str(&format!(
            "| `{}` | {} | {} | {} | {cells} | ≤ {target:.2}× | ≤ {:.2}× | {verdict} |\n",
            s(r, "name"),
            s(r, "subject"),
            s(r, "floor"),
            pairs.len(),
            lim.limit
        ));
    }
    if let Some(f) = ran["host_freezes"].as_array().filter(|f| !f.is_empty()) {
        o.push_str(&format!(
            "\nThe TCG host froze {} time(s) in this run (its timers stopped: a QEMU TCG \
             fault under nested SVM, docs/reliability.md); each time it was booted again \
             for the scenarios that had not reported:\n\n",
            f.len()
        ));
        for x in f {
            o.push_str(&format!("- {}\n", x.as_str().unwrap_or("?")));
        }
    }
    if let Some(c) = ran["guest_crashes"].as_array().filter(|c| !c.is_empty()) {
        o.push_str(&format!(
            "\nA libkrun guest's kernel crashed in {} scenario(s) of this run (memory \
             corrupted under the TCG-emulated nested SVM, docs/reliability.md); each was \
             run once more, and its measurements are the second run's:\n\n",
            c.len()
        ));
        for x in c {
            o.push_str(&format!("- {}\n", x.as_str().unwrap_or("?")));
        }
    }
    if let Some(m) = d["metrics"].as_object().filter(|m| !m.is_empty()) {
        o.push_str(
            "\nOther measurements of the same run (one value per occurrence):\n\n\
             | metric | values |\n|---|---|\n",
        );
        for (k, v) in m {
            let vals: Vec<String> =
                v.as_array().map(|a| a.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
            o.push_str(&format!("| `{k}` | {} |\n", vals.join(", ")));
        }
    }
    o.push_str(
        "\nImage inputs (every downloaded one pinned by version and sha256, checked before \
         use):\n\n",
    );
    for a in ran["assets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        o.push_str(&format!("- {}\n", a.as_str().unwrap_or("?")));
    }
    o.push_str(END);
    o.push('\n');
    o
}

/// `doc` with its generated `vm` section replaced by `section`; `None` without markers.
pub fn replace_section(doc: &str, section: &str) -> Option<String> {
    let b = doc.find(BEGIN)?;
    let e = doc[b..].find(END)? + b + END.len();
    let e = if doc[e..].starts_with('\n') { e + 1 } else { e };
    Some(format!("{}{}{}", &doc[..b], section, &doc[e..]))
}

/// The generated `vm` section of `doc`, markers included; `None` without markers.
pub fn current_section(doc: &str) -> Option<&str> {
    let b = doc.find(BEGIN)?;
    let e = doc[b..].find(END)? + b + END.len();
    let e = if doc[e..].starts_with('\n') { e + 1 } else { e };
    Some(&doc[b..e])
}

/// Write the run's data and section: always to `target/vm/vm.json` and
/// `target/vm/performance-real-vm.md`; with `update_docs`, also to [`DATA_PATH`] and
/// into `docs/performance.md`. Returns the section.
pub fn write_report(
    f: &RunFacts<'_>,
    target_vm: &Path,
    update_docs: bool,
) -> Result<String, String> {
    let data = report_json(f);
    let text = serde_json::to_string_pretty(&data).map_err(|e| e.to_string())? + "\n";
    let section = render_section(&data);
    let w = |p: &Path, t: &str| {
        std::fs::write(p, t).map_err(|e| format!("writing {}: {e}", p.display()))
    };
    w(&target_vm.join("vm.json"), &text)?;
    w(&target_vm.join("performance-real-vm.md"), &section)?;
    if update_docs {
        let root = crate::workspace_root();
        let data_path = root.join(DATA_PATH);
        std::fs::create_dir_all(data_path.parent().unwrap_or(&root)).map_err(|e| e.to_string())?;
        w(&data_path, &text)?;
        let doc_path = root.join("docs/performance.md");
        let doc = std::fs::read_to_string(&doc_path)
            .map_err(|e| format!("reading {}: {e}", doc_path.display()))?;
        let new = replace_section(&doc, &section)
            .ok_or_else(|| format!("{} has no {BEGIN} … {END} markers", doc_path.display()))?;
        w(&doc_path, &new)?;
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(subject: u64) -> Value {
        let pairs: Vec<Value> = (1..=10)
            .map(|i| {
                json!([i, if i % 2 == 1 { "subject-first" } else { "floor-first" }, subject, 1000])
            })
            .collect();
        json!({
            "format": 1, "date": "2026-01-01", "commit": "abc",
            "ran": {"command": "c", "profile": "debug", "host": "h", "machine": "m",
                    "vm_wall_s": 300, "scenarios": {"a": "pass 1ms", "b": "fail 2ms"},
                    "assets": ["kernel: k 1 (sha256 x)"]},
            "ratios": [{"name": "start_ready", "subject": "s", "floor": "f", "min_pairs": 10,
                        "limit": 1.10,
                        "pairs": pairs}],
            "metrics": {"stdio_10mb_ms": [6000]},
        })
    }

    #[test]
    fn the_section_states_the_verdict_the_pairs_give_and_replaces_only_its_markers() {
        let pass = render_section(&data(1050));
        assert!(pass.contains("1.050×") && pass.contains("| PASS |"), "{pass}");
        assert!(
            pass.contains("1 of 2 passed") && pass.contains("- kernel: k 1 (sha256 x)"),
            "{pass}"
        );
        let mut missed = data(1050);
        missed["ratios"][0]["target"] = json!(1.0);
        missed["ran"]["host_freezes"] = json!(["boot 1: froze during x"]);
        missed["ran"]["guest_crashes"] = json!(["disk-x [    1.8] BUG: kernel NULL pointer"]);
        let missed = render_section(&missed);
        assert!(missed.contains("| ≤ 1.00× | ≤ 1.10× | PASS (target missed) |"), "{missed}");
        assert!(missed.contains("froze 1 time(s)") && missed.contains("- boot 1: froze during x"));
        assert!(
            missed.contains("crashed in 1 scenario(s)")
                && missed.contains("- disk-x [    1.8] BUG: kernel NULL pointer"),
            "{missed}"
        );
        assert!(!pass.contains("crashed in"), "{pass}");
        let fail = render_section(&data(1200));
        assert!(fail.contains("1.200×") && fail.contains("| FAIL |"), "{fail}");
        let doc = format!("head\n{BEGIN}\nold\n{END}\ntail\n<!-- generated:begin other -->\nx\n");
        let new = replace_section(&doc, &pass).unwrap();
        assert!(
            new.starts_with("head\n") && new.ends_with("tail\n<!-- generated:begin other -->\nx\n"),
            "{new}"
        );
        assert!(!new.contains("old"));
        assert_eq!(current_section(&new), Some(pass.as_str()));
    }

    /// The committed "Real VM" section is exactly what the committed data renders to: no
    /// hand edit of the doc (or of the data without the doc) goes unnoticed.
    #[test]
    fn the_committed_vm_section_is_rendered_from_the_committed_data() {
        let root = crate::workspace_root();
        let data_path = root.join(DATA_PATH);
        let text = std::fs::read_to_string(&data_path)
            .unwrap_or_else(|e| panic!("{}: {e}", data_path.display()));
        let data: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", data_path.display()));
        assert_eq!(data["format"].as_u64(), Some(FORMAT), "{}: format", data_path.display());
        let doc = std::fs::read_to_string(root.join("docs/performance.md")).unwrap();
        let committed =
            current_section(&doc).expect("docs/performance.md has the generated vm markers");
        assert_eq!(
            committed,
            render_section(&data),
            "docs/performance.md's vm section differs from {DATA_PATH}: regenerate it with \
             BOXSOCK_UPDATE_DOCS=1 cargo test -p boxsock-vm-tests"
        );
    }

    /// After a change to the renderer: rewrite the section from the committed data, no
    /// VM needed (`BOXSOCK_UPDATE_DOCS=1 cargo test -p boxsock-vm-tests --lib -- --ignored
    /// rerender`).
    #[test]
    #[ignore = "rewrites docs/performance.md; run by hand with BOXSOCK_UPDATE_DOCS=1"]
    fn rerender_the_vm_section_from_the_committed_data() {
        assert_eq!(
            std::env::var("BOXSOCK_UPDATE_DOCS").as_deref(),
            Ok("1"),
            "set BOXSOCK_UPDATE_DOCS=1"
        );
        let root = crate::workspace_root();
        let data: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(DATA_PATH)).unwrap()).unwrap();
        let doc_path = root.join("docs/performance.md");
        let doc = std::fs::read_to_string(&doc_path).unwrap();
        std::fs::write(
            &doc_path,
            replace_section(&doc, &render_section(&data)).expect("vm markers"),
        )
        .unwrap();
    }
}
