//! The real-VM test tier: boots real libkrun guests inside a QEMU TCG host with nested
//! KVM (`-accel tcg -cpu EPYC,+svm,+npt`), so every test run exercises the path users
//! run, on machines whose own `/dev/kvm` cannot boot a guest (PVM).
//!
//! [`vm_run`] runs the VM once per test process (a [`OnceLock`]):
//! 1. builds the workspace's binaries (`boxsock`, the shim, the agent, `vm-bare-launch`);
//! 2. builds the TCG host image with `scripts/vm-image.sh` (Debian kernel and
//!    busybox/passt, libkrunfw from the pinned `microsandbox` wheel; cached under
//!    `target/vm-cache`, keyed by its inputs);
//! 3. boots it; its `/init` runs `tests/vm/guest/scenarios.sh`, which prints one
//!    `@@VM result <name> pass|fail|skip <detail>` line per scenario on the serial
//!    console (kept in `target/vm/console.log`).
//!
//! Each `#[test]` in `tests/scenarios.rs` then asserts one scenario's recorded result
//! ([`assert_scenario`]), so each is its own `cargo test` result. When QEMU or an asset
//! cannot be obtained, every test prints `SKIPPED (real VM): <reason>` and passes —
//! unless `BOXSOCK_VM_REQUIRED=1` (set by `.ci/run`), where a skip is a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable: `1` turns a skip (no QEMU, no asset) into a failure.
pub const REQUIRED_ENV: &str = "BOXSOCK_VM_REQUIRED";
/// Environment variable: `off` skips the tier on purpose (printed like any skip).
pub const SWITCH_ENV: &str = "BOXSOCK_VM";
/// How long the whole VM run may take before it is killed (a full run, backend-kit
/// included, took 17 min on a 2-core machine busy with other builds).
pub const VM_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One scenario's outcome as the guest reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResult {
    /// `pass`, `fail` or `skip`.
    pub status: String,
    /// The rest of the result line (time, failure, skip reason).
    pub detail: String,
    /// Its output, on failure.
    pub log: Vec<String>,
}

/// What one VM run produced.
#[derive(Debug, Clone)]
pub enum VmRun {
    /// The tier could not run here, with the reason.
    Skipped(String),
    /// The VM could not be built or booted, or ended without reporting.
    Broken(String),
    /// The VM ran; results by scenario name.
    Ran {
        /// Results by scenario.
        results: BTreeMap<String, ScenarioResult>,
        /// `@@VM metric` values by name (several per name when measured repeatedly).
        metrics: BTreeMap<String, Vec<u64>>,
        /// Wall time of the VM (boot to power-off).
        vm_wall: Duration,
        /// The console log.
        console: PathBuf,
        /// The image's inputs (`inputs.txt`).
        inputs: String,
    },
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Run the VM once (the first caller does it; the others wait for its result).
pub fn vm_run() -> &'static VmRun {
    static RUN: OnceLock<VmRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = run_vm();
        // Written to the stderr file itself, not through eprintln!: libtest captures
        // the macros' output of passing tests, and a skip must be seen.
        use std::io::Write as _;
        match &run {
            VmRun::Skipped(r) => {
                let _ = writeln!(std::io::stderr(), "\n===== SKIPPED (real VM): {r} =====\n");
            }
            VmRun::Broken(r) => {
                let _ = writeln!(std::io::stderr(), "\n===== REAL VM BROKEN: {r} =====\n");
            }
            VmRun::Ran { vm_wall, results, .. } => {
                eprintln!("real VM: {} scenarios reported in {:.0?}", results.len(), vm_wall)
            }
        }
        run
    })
}

/// Assert that scenario `name` passed in the VM (or print the skip, see the module doc).
pub fn assert_scenario(name: &str) {
    match vm_run() {
        VmRun::Skipped(reason) => {
            if std::env::var(REQUIRED_ENV).as_deref() == Ok("1") {
                panic!("the real-VM tier is required ({REQUIRED_ENV}=1) but cannot run: {reason}");
            }
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED (real VM) {name}: {reason}");
        }
        VmRun::Broken(reason) => panic!("scenario {name}: the real VM did not run: {reason}"),
        VmRun::Ran { results, console, .. } => match results.get(name) {
            None => panic!(
                "scenario {name} reported nothing (the VM ended early?); console: {}\n{}",
                console.display(),
                console_tail(console, 40)
            ),
            Some(r) if r.status == "pass" => eprintln!("real VM {name}: pass {}", r.detail),
            Some(r) if r.status == "skip" => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "SKIPPED (real VM) {name}: {}", r.detail);
            }
            Some(r) => panic!("scenario {name}: {} {}\n{}", r.status, r.detail, r.log.join("\n")),
        },
    }
}

fn console_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn run_vm() -> VmRun {
    if std::env::var(SWITCH_ENV).as_deref() == Ok("off") {
        return VmRun::Skipped(format!("{SWITCH_ENV}=off"));
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return VmRun::Skipped("the TCG host image is x86_64 Linux only".into());
    }
    let Some(qemu) = which("qemu-system-x86_64") else {
        return VmRun::Skipped("qemu-system-x86_64 not found (apt-get install qemu-system-x86; .ci/run does)".into());
    };
    let root = workspace_root();
    let target = target_dir();

    // 1. The binaries, in this test's profile.
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| target.join("debug"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--bins", "-p", "boxsock", "-p", "boxsock-libkrun", "-p", "boxsock-agent", "-p", "boxsock-vm-tests"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    match build.current_dir(&root).status() {
        Ok(s) if s.success() => {}
        other => return VmRun::Broken(format!("cargo build of the binaries failed: {other:?}")),
    }

    // 2. The image.
    let image = target.join("vm/image");
    let out = Command::new(root.join("scripts/vm-image.sh")).arg(&profile_dir).arg(&image).stderr(Stdio::piped()).output();
    match out {
        Ok(o) if o.status.success() => eprint!("{}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) if o.status.code() == Some(3) => {
            return VmRun::Skipped(String::from_utf8_lossy(&o.stderr).trim().to_owned());
        }
        Ok(o) => {
            return VmRun::Broken(format!(
                "scripts/vm-image.sh failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return VmRun::Broken(format!("cannot run scripts/vm-image.sh: {e}")),
    }
    let inputs = std::fs::read_to_string(image.join("inputs.txt")).unwrap_or_default();

    // 3. Boot it; the console goes to a file, followed here.
    let console = target.join("vm/console.log");
    let _ = std::fs::remove_file(&console);
    let only = std::env::var("BOXSOCK_VM_ONLY").unwrap_or_default();
    let mut append = String::from("console=ttyS0 loglevel=4 panic=-1 rdinit=/init");
    if !only.is_empty() {
        append.push_str(&format!(" VM_ONLY={}", only.replace(' ', ",")));
    }
    let smp = std::env::var("BOXSOCK_VM_SMP").unwrap_or_else(|_| "1".into());
    let t0 = Instant::now();
    let mut cmd = Command::new(&qemu);
    cmd.args(["-accel", "tcg", "-cpu", "EPYC,+svm,+npt", "-m", "3072", "-smp", &smp])
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(image.join("vmlinuz"))
        .arg("-initrd")
        .arg(image.join("initrd.img"))
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return VmRun::Broken(format!("cannot start {}: {e}", qemu.display())),
    };
    // Follow the console: print progress lines, stop on the timeout.
    let mut seen = 0usize;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&console) {
            for line in text.lines().skip(seen) {
                if line.starts_with("@@VM ") && !line.starts_with("@@VM log ") {
                    eprintln!("[{:>5.0?}] {line}", t0.elapsed());
                }
                seen += 1;
            }
            // A partial last line is read again next time.
            if !text.ends_with('\n') {
                seen = seen.saturating_sub(1);
            }
        }
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if t0.elapsed() > VM_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("the VM did not power off within {VM_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => break Err(format!("waiting for QEMU: {e}")),
        }
    };
    let vm_wall = t0.elapsed();
    let mut qemu_err = String::new();
    if let Some(e) = child.stderr.take() {
        for l in BufReader::new(e).lines().map_while(Result::ok) {
            qemu_err.push_str(&l);
            qemu_err.push('\n');
        }
    }
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let (results, metrics) = parse_console(&text);
    match status {
        Err(e) => return VmRun::Broken(format!("{e}; console {}:\n{}", console.display(), console_tail(&console, 40))),
        Ok(s) if !s.success() => {
            return VmRun::Broken(format!("QEMU exited with {s}: {}\n{}", qemu_err.trim(), console_tail(&console, 40)));
        }
        Ok(_) => {}
    }
    if !text.contains("@@VM done") {
        return VmRun::Broken(format!(
            "the VM powered off before its scenarios finished; console {}:\n{}",
            console.display(),
            console_tail(&console, 60)
        ));
    }
    if text.contains("@@VM no-kvm") {
        return VmRun::Broken(format!("/dev/kvm did not appear in the TCG host:\n{}", console_tail(&console, 60)));
    }
    VmRun::Ran { results, metrics, vm_wall, console, inputs }
}

/// Parse the `@@VM result`, `@@VM log` and `@@VM metric` lines of a console log.
pub fn parse_console(text: &str) -> (BTreeMap<String, ScenarioResult>, BTreeMap<String, Vec<u64>>) {
    let mut results: BTreeMap<String, ScenarioResult> = BTreeMap::new();
    let mut logs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut metrics: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        // The serial console may end lines with \r.
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.find("@@VM ").map(|i| &line[i + 5..]) else { continue };
        let mut parts = rest.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("result"), Some(name), Some(status), detail) => {
                results.insert(
                    name.to_owned(),
                    ScenarioResult { status: status.to_owned(), detail: detail.unwrap_or("").to_owned(), log: Vec::new() },
                );
            }
            (Some("log"), Some(name), Some("|"), l) => logs.entry(name.to_owned()).or_default().push(l.unwrap_or("").to_owned()),
            (Some("metric"), Some(name), Some(v), _) => {
                if let Ok(v) = v.parse() {
                    metrics.entry(name.to_owned()).or_default().push(v);
                }
            }
            _ => {}
        }
    }
    for (name, log) in logs {
        if let Some(r) = results.get_mut(&name) {
            r.log = log;
        }
    }
    (results, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_logs_and_metrics() {
        let text = "noise\r\n@@VM result a pass 12ms\r\n@@VM result b fail 3ms: FAIL: x\n@@VM log b | line one\n\
                    [  1.0] @@VM metric start_ms 8000\n@@VM metric start_ms 9000\n@@VM result c skip why not\n";
        let (r, m) = parse_console(text);
        assert_eq!(r["a"].status, "pass");
        assert_eq!(r["b"].status, "fail");
        assert_eq!(r["b"].log, vec!["line one".to_owned()]);
        assert_eq!(r["c"].detail, "why not");
        assert_eq!(m["start_ms"], vec![8000, 9000]);
    }
}

/// Markers around the generated section of `docs/performance.md`.
pub const PERF_BEGIN: &str = "<!-- real-vm:begin (generated by tests/vm; BOXSOCK_UPDATE_DOCS=1 cargo test -p boxsock-vm-tests) -->";
/// End marker.
pub const PERF_END: &str = "<!-- real-vm:end -->";
/// The overhead target: start→ready through the runtime within this ratio of the bare
/// launch.
pub const START_TARGET: f64 = 1.10;

fn mean(v: Option<&Vec<u64>>) -> Option<f64> {
    let v = v.filter(|v| !v.is_empty())?;
    Some(v.iter().sum::<u64>() as f64 / v.len() as f64)
}

/// The "Real VM" section of `docs/performance.md` from a run's metrics, or `None` when
/// the overhead was not measured.
pub fn performance_section(
    metrics: &BTreeMap<String, Vec<u64>>,
    vm_wall: Duration,
    inputs: &str,
    date: &str,
) -> Option<String> {
    let rt = mean(metrics.get("start_runtime_ms"))?;
    let bare = mean(metrics.get("start_bare_ms"))?;
    let ratio = rt / bare;
    let mut s = String::new();
    s.push_str(&format!("{PERF_BEGIN}\n"));
    s.push_str(&format!(
        "One run of the real-VM tier ({date}): libkrun guests in a QEMU TCG host with nested KVM, \
         1 vCPU, on this project's 2-core build machine shared with other builds. The whole VM \
         run (boot, every scenario, power-off) took {:.0} s. Times are means in ms; TCG makes \
         them tens of times slower than hardware KVM, so only the ratios carry over.\n\n",
        vm_wall.as_secs_f64()
    ));
    s.push_str("| measurement | runtime | bare libkrun | ratio | target |\n|---|---:|---:|---:|---|\n");
    s.push_str(&format!(
        "| start → ready (`boxsock start` vs. the shim alone, `vm-bare-launch start`), {} each, alternating | {rt:.0} | {bare:.0} | {ratio:.2}× | ≤ {START_TARGET:.2}× {} |\n",
        metrics["start_runtime_ms"].len().min(metrics["start_bare_ms"].len()),
        if ratio <= START_TARGET { "PASS" } else { "MISS" }
    ));
    if let (Some(e), Some(b)) = (mean(metrics.get("exec_runtime_ms")), mean(metrics.get("exec_bare_ms"))) {
        s.push_str(&format!(
            "| exec `/bin/busybox true` (`boxsock exec` vs. one raw agent connection, `vm-bare-launch exec`), 5 each | {e:.0} | {b:.0} | {:.2}× | — |\n",
            e / b
        ));
    }
    if let Some(m) = mean(metrics.get("stdio_10mb_ms")) {
        s.push_str(&format!("| 10 MB through `exec -i … cat` and back | {m:.0} | | | |\n"));
    }
    if let Some(m) = mean(metrics.get("start_ms")) {
        s.push_str(&format!("| start → ready of the scenarios' boxes (mean of {}) | {m:.0} | | | |\n", metrics["start_ms"].len()));
    }
    s.push_str("\nImage inputs:\n\n");
    for l in inputs.lines() {
        s.push_str(&format!("- {l}\n"));
    }
    s.push_str(&format!("{PERF_END}\n"));
    Some(s)
}

/// Replace the generated section of `doc` (between [`PERF_BEGIN`] and [`PERF_END`]).
pub fn replace_section(doc: &str, section: &str) -> Option<String> {
    let b = doc.find(PERF_BEGIN)?;
    let e = doc[b..].find(PERF_END)? + b + PERF_END.len();
    let e = if doc[e..].starts_with('\n') { e + 1 } else { e };
    Some(format!("{}{}{}", &doc[..b], section, &doc[e..]))
}

#[cfg(test)]
mod perf_tests {
    use super::*;

    #[test]
    fn the_section_has_the_ratio_and_replaces_only_between_markers() {
        let mut m = BTreeMap::new();
        m.insert("start_runtime_ms".to_owned(), vec![1050, 1050]);
        m.insert("start_bare_ms".to_owned(), vec![1000]);
        let s = performance_section(&m, Duration::from_secs(300), "kernel: k", "2026-01-01").unwrap();
        assert!(s.contains("1.05×") && s.contains("PASS") && s.contains("- kernel: k"), "{s}");
        let doc = format!("head\n{PERF_BEGIN}\nold\n{PERF_END}\ntail\n");
        let new = replace_section(&doc, &s).unwrap();
        assert!(new.starts_with("head\n") && new.ends_with("tail\n") && !new.contains("old"), "{new}");
        assert!(performance_section(&BTreeMap::new(), Duration::ZERO, "", "").is_none());
    }
}
