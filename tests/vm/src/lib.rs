//! The real-VM test tier: boots real libkrun guests inside a QEMU TCG host with nested
//! KVM (`-accel tcg -cpu EPYC,+svm,+npt`), so every test run exercises the path users
//! run, on machines whose own `/dev/kvm` cannot boot a guest (PVM).
//!
//! [`vm_run`] runs the VM once per test process (a [`OnceLock`]):
//! 1. builds the workspace's binaries (`boxsock`, the shim, the agent, `boxsock-oci`,
//!    `vm-bare-launch`);
//! 2. builds the TCG host image with `scripts/vm-image.sh` (Debian kernel and
//!    busybox/passt, libkrunfw from the pinned `microsandbox` wheel; cached under
//!    `target/vm-cache`, keyed by its inputs);
//! 3. boots it; its `/init` runs `tests/vm/guest/scenarios.sh`, which prints one
//!    `@@VM result <name> pass|fail|skip <detail>` line per scenario on the serial
//!    console (kept in `target/vm/console.log`).
//!
//! Each `#[test]` in `tests/scenarios.rs` then asserts one scenario's recorded result
//! ([`assert_scenario`]), so each is its own `cargo test` result. When QEMU or an asset
//! cannot be obtained, every test prints `SKIPPED (real VM): <reason>` and passes, and a
//! scenario the guest reports as skipped (exit 77) prints the same — unless the tier is
//! [`required`] (`BOXSOCK_VM_REQUIRED=1`, set by `.ci/run`, or `CI=true`), where either
//! is a failure ([`scenario_verdict`]).
//!
//! Paired measurements (`@@VM pair` lines: a subject and its floor, alternating which
//! goes first) are asserted as the median of the per-pair ratios against a limit
//! ([`check_pairs`]). Every run writes its measurements to `target/vm/vm.json`
//! ([`report_json`]) and the "Real VM" section rendered from it ([`render_section`]);
//! with `BOXSOCK_UPDATE_DOCS=1` to the committed `docs/data/vm.json` and between the
//! `<!-- generated:begin vm -->` markers of `docs/performance.md`.

pub mod report;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable: `1` turns a skip (no QEMU, no asset, a scenario reporting
/// itself skipped) into a failure.
pub const REQUIRED_ENV: &str = "BOXSOCK_VM_REQUIRED";

/// Whether a skip is a failure here: `BOXSOCK_VM_REQUIRED=1`, or `CI=true` (CI can make
/// every condition of the tier true, so it may skip nothing).
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).as_deref() == Ok("1")
        || std::env::var("CI").as_deref() == Ok("true")
}

/// Environment variable: `off` skips the tier on purpose (printed like any skip).
pub const SWITCH_ENV: &str = "BOXSOCK_VM";
/// How long the whole VM run may take before it is killed (a full run, backend-kit
/// included, took 17 min on a 2-core machine busy with other builds; issue 21 added
/// about a dozen scenarios, the disk and volume measurements among them).
pub const VM_TIMEOUT: Duration = Duration::from_secs(45 * 60);

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
        /// `@@VM pair` measurements by name, in the order measured.
        pairs: BTreeMap<String, Vec<Pair>>,
        /// Wall time of the VM (boot to power-off).
        vm_wall: Duration,
        /// The console log.
        console: PathBuf,
        /// The image's inputs (`inputs.txt`).
        inputs: String,
        /// Each time the TCG host froze and was booted again for the scenarios that had
        /// not reported (empty on a run without a freeze).
        freezes: Vec<String>,
        /// Each scenario run again because a libkrun guest's kernel crashed while it
        /// failed (`<scenario> <the kernel's crash line>`; see [`guest_crashes`]).
        guest_crashes: Vec<String>,
    },
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
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
            VmRun::Ran { vm_wall, results, freezes, guest_crashes, .. } => {
                eprintln!("real VM: {} scenarios reported in {:.0?}", results.len(), vm_wall);
                for f in freezes {
                    let _ = writeln!(std::io::stderr(), "real VM: the TCG host froze, {f}");
                }
                for c in guest_crashes {
                    let _ = writeln!(
                        std::io::stderr(),
                        "real VM: a guest kernel crashed, its scenario was run again: {c}"
                    );
                }
            }
        }
        run
    })
}

/// What a scenario's recorded result means for its test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It passed (the detail: its time).
    Pass(String),
    /// It reported itself skipped and the tier is not required: printed, not failed.
    Skip(String),
    /// The test fails with this message.
    Fail(String),
}

/// The verdict on scenario `name` from its recorded result (`None`: it reported
/// nothing). A skip is a failure when `required`; any status but `pass`/`skip` is one.
pub fn scenario_verdict(name: &str, result: Option<&ScenarioResult>, required: bool) -> Verdict {
    match result {
        None => Verdict::Fail(format!("scenario {name} reported nothing (the VM ended early?)")),
        Some(r) if r.status == "pass" => Verdict::Pass(r.detail.clone()),
        Some(r) if r.status == "skip" && required => Verdict::Fail(format!(
            "scenario {name} was skipped in the guest ({}), and the real-VM tier is required \
             ({REQUIRED_ENV}=1 or CI=true): a skip is a failure",
            r.detail
        )),
        Some(r) if r.status == "skip" => Verdict::Skip(r.detail.clone()),
        Some(r) => Verdict::Fail(format!(
            "scenario {name}: {} {}\n{}",
            r.status,
            r.detail,
            r.log.join("\n")
        )),
    }
}

/// Assert that scenario `name` passed in the VM (or print the skip, see the module doc).
pub fn assert_scenario(name: &str) {
    use std::io::Write as _;
    match vm_run() {
        VmRun::Skipped(reason) => {
            if required() {
                panic!(
                    "the real-VM tier is required ({REQUIRED_ENV}=1 or CI=true) but cannot run: {reason}"
                );
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED (real VM) {name}: {reason}");
        }
        VmRun::Broken(reason) => panic!("scenario {name}: the real VM did not run: {reason}"),
        VmRun::Ran { results, console, .. } => {
            match scenario_verdict(name, results.get(name), required()) {
                Verdict::Pass(detail) => eprintln!("real VM {name}: pass {detail}"),
                Verdict::Skip(detail) => {
                    let _ = writeln!(std::io::stderr(), "SKIPPED (real VM) {name}: {detail}");
                }
                Verdict::Fail(msg) => {
                    panic!("{msg}\nconsole: {}\n{}", console.display(), console_tail(console, 40))
                }
            }
        }
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
        return VmRun::Skipped(
            "qemu-system-x86_64 not found (apt-get install qemu-system-x86; .ci/run does)".into(),
        );
    };
    let root = workspace_root();
    let target = target_dir();

    // 1. The binaries, always in the release profile: users install release builds
    // (`cargo install`), and the overhead the tier asserts (start→ready ≤ 1.10× the bare
    // shim) is the runtime's, not the debug build's: under TCG a debug `boxsock` process
    // alone costs 0.4–0.7 s more than a release one, as much as the whole budget.
    let profile_dir = target.join("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--release",
        "--bins",
        "-p",
        "boxsock",
        "-p",
        "boxsock-libkrun",
        "-p",
        "boxsock-agent",
        "-p",
        "boxsock-vm-tests",
        "-p",
        "boxsock-oci",
    ]);
    match build.current_dir(&root).status() {
        Ok(s) if s.success() => {}
        other => return VmRun::Broken(format!("cargo build of the binaries failed: {other:?}")),
    }

    // 2. The image.
    let image = target.join("vm/image");
    let out = Command::new(root.join("scripts/vm-image.sh"))
        .arg(&profile_dir)
        .arg(&image)
        .stderr(Stdio::piped())
        .output();
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

    // 3. Boot it; the console goes to a file, followed here. A host that freezes is
    // booted again for the scenarios that reported nothing (see [`Boot`]).
    let only = std::env::var("BOXSOCK_VM_ONLY").unwrap_or_default();
    let smp = std::env::var("BOXSOCK_VM_SMP").unwrap_or_else(|_| "1".into());
    let inject = std::env::var(INJECT_FREEZE_ENV).unwrap_or_default();
    let inject_crash = std::env::var(INJECT_GUEST_CRASH_ENV).unwrap_or_default();
    let t0 = Instant::now();
    let mut text = String::new();
    let mut freezes = Vec::new();
    let mut console = target.join("vm/console.log");
    for boot in 1..=MAX_BOOTS {
        let done: Vec<String> = parse_console(&text).0.into_keys().collect();
        let mut append = String::from("console=ttyS0 loglevel=4 panic=-1 rdinit=/init");
        if !only.is_empty() {
            append.push_str(&format!(" VM_ONLY={}", only.replace(' ', ",")));
        }
        if !done.is_empty() {
            append.push_str(&format!(" VM_SKIP={}", done.join(",")));
        }
        if boot == 1 && !inject_crash.is_empty() {
            append.push_str(&format!(" VM_INJECT_CRASH={inject_crash}"));
        }
        console = if boot == 1 {
            target.join("vm/console.log")
        } else {
            target.join(format!("vm/console.boot{boot}.log"))
        };
        let spec = BootSpec {
            qemu: &qemu,
            image: &image,
            smp: &smp,
            append: &append,
            console: &console,
            qmp: &target.join(format!("vm/qmp{boot}.sock")),
            // The injected freeze (a test of this very mechanism) happens once.
            inject: if boot == 1 { inject.as_str() } else { "" },
            deadline: t0 + VM_TIMEOUT,
        };
        let boot_out = boot_once(&spec, &t0);
        text.push_str(&std::fs::read_to_string(&console).unwrap_or_default());
        match boot_out {
            Boot::Done => break,
            Boot::Broken(e) => return VmRun::Broken(e),
            Boot::Froze(what) => {
                let what = format!("boot {boot}: {what}");
                // Written to the stderr file itself: it must be seen even when it passes.
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "\n===== REAL VM HOST FROZE: {what} =====\n");
                freezes.push(what);
                if boot == MAX_BOOTS {
                    return VmRun::Broken(format!(
                        "the TCG host froze {MAX_BOOTS} times: {}",
                        freezes.join("; ")
                    ));
                }
            }
        }
    }
    let vm_wall = t0.elapsed();
    let (results, metrics, pairs) = parse_console(&text);
    if !text.contains("@@VM done") {
        return VmRun::Broken(format!(
            "the VM powered off before its scenarios finished; console {}:\n{}",
            console.display(),
            console_tail(&console, 60)
        ));
    }
    if text.contains("@@VM no-kvm") {
        return VmRun::Broken(format!(
            "/dev/kvm did not appear in the TCG host:\n{}",
            console_tail(&console, 60)
        ));
    }
    let guest_crashes = guest_crashes(&text);
    VmRun::Ran { results, metrics, pairs, vm_wall, console, inputs, freezes, guest_crashes }
}

/// Environment variable: `SCENARIO` makes a libkrun guest's kernel panic (out of memory
/// with `panic_on_oom`) in place of that scenario's first attempt, the first boot only, to
/// show that the scenario is run again (docs/reliability.md).
pub const INJECT_GUEST_CRASH_ENV: &str = "BOXSOCK_VM_INJECT_GUEST_CRASH";

/// The `@@VM guest-crash <scenario> <line>` records of a console log: each scenario that
/// failed while a guest's kernel crashed, and was therefore run once more (by the
/// host's scenario runner, at most three times per boot of that host).
pub fn guest_crashes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.find("@@VM guest-crash ").map(|i| &l[i + 17..]))
        .map(|c| c.trim_end_matches('\r').to_owned())
        .collect()
}

/// Environment variable: `SCENARIO` makes the harness pause the TCG host (QMP `stop`)
/// when that scenario begins, the first boot only: a frozen host on demand, to show
/// that the freeze is detected and the remaining scenarios rerun (docs/reliability.md).
pub const INJECT_FREEZE_ENV: &str = "BOXSOCK_VM_INJECT_FREEZE";
/// Boots at most (the first, and one per freeze).
pub const MAX_BOOTS: u32 = 8;
/// A console silent this long, while the guest's heartbeat (`@@VM tick`, every 10 s
/// from its /init) is armed, is a frozen host: not even its timers run, so no scenario
/// can be what is slow (each has its own timeout, which prints).
pub const FREEZE_SILENCE: Duration = Duration::from_secs(90);
/// How long an NMI gets to revive a frozen host before it is rebooted.
pub const NMI_GRACE: Duration = Duration::from_secs(30);

struct BootSpec<'a> {
    qemu: &'a Path,
    image: &'a Path,
    smp: &'a str,
    append: &'a str,
    console: &'a Path,
    qmp: &'a Path,
    inject: &'a str,
    deadline: Instant,
}

/// How one boot of the TCG host ended.
enum Boot {
    /// It powered off by itself.
    Done,
    /// It froze (the description: when, where, what was tried); killed.
    Froze(String),
    /// It could not be started, failed or timed out.
    Broken(String),
}

/// The QEMU process's CPU time (user + system), from /proc.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// One QMP conversation: the capabilities handshake, then `commands` (JSON), one
/// response line each (events skipped). The responses, or why there are none.
pub fn qmp(sock: &Path, commands: &[&str]) -> Result<Vec<String>, String> {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;
    let s = UnixStream::connect(sock).map_err(|e| format!("QMP {}: {e}", sock.display()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let reply = |r: &mut BufReader<UnixStream>| -> Result<String, String> {
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) => return Err("QMP closed".into()),
                Ok(_) if l.contains("\"event\"") => continue,
                Ok(_) => return Ok(l.trim().to_owned()),
                Err(e) => return Err(format!("QMP: {e}")),
            }
        }
    };
    reply(&mut r)?; // the greeting
    let mut out = Vec::new();
    for c in std::iter::once(r#"{"execute":"qmp_capabilities"}"#).chain(commands.iter().copied()) {
        w.write_all(c.as_bytes()).and_then(|_| w.write_all(b"\n")).map_err(|e| e.to_string())?;
        out.push(reply(&mut r)?);
    }
    out.remove(0);
    Ok(out)
}

/// The scenario that began last and has not reported (from `@@VM begin` and `@@VM
/// result` lines).
pub fn in_progress(text: &str) -> Option<String> {
    let mut cur = None;
    for line in text.lines() {
        let Some(rest) = line.find("@@VM ").map(|i| &line[i + 5..]) else { continue };
        let mut p = rest.split_whitespace();
        match (p.next(), p.next()) {
            (Some("begin"), Some(n)) => cur = Some(n.to_owned()),
            (Some("result"), Some(n)) if cur.as_deref() == Some(n) => cur = None,
            _ => {}
        }
    }
    cur
}

fn boot_once(spec: &BootSpec<'_>, t0: &Instant) -> Boot {
    let _ = std::fs::remove_file(spec.console);
    let _ = std::fs::remove_file(spec.qmp);
    let mut cmd = Command::new(spec.qemu);
    cmd.args(["-accel", "tcg", "-cpu", "EPYC,+svm,+npt", "-m", "3072", "-smp", spec.smp])
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", spec.qmp.display()))
        .arg("-serial")
        .arg(format!("file:{}", spec.console.display()))
        .arg("-kernel")
        .arg(spec.image.join("vmlinuz"))
        .arg("-initrd")
        .arg(spec.image.join("initrd.img"))
        .args(["-append", spec.append])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Boot::Broken(format!("cannot start {}: {e}", spec.qemu.display())),
    };
    let pid = child.id();
    // Follow the console: print progress lines; watch for a freeze; stop at the deadline.
    let mut seen = 0usize;
    let mut len = 0usize;
    let mut last_growth = Instant::now();
    let mut cpu_at_growth = cpu_time(pid);
    let mut nmi_at: Option<Instant> = None;
    let mut injected = false;
    let mut text = String::new();
    let status = loop {
        if let Ok(t) = std::fs::read_to_string(spec.console) {
            text = t;
        }
        if text.len() != len {
            len = text.len();
            last_growth = Instant::now();
            cpu_at_growth = cpu_time(pid);
            if let Some(at) = nmi_at.take() {
                eprintln!(
                    "[{:>5.0?}] the TCG host came back {:.0?} after an NMI",
                    t0.elapsed(),
                    at.elapsed()
                );
            }
        }
        for line in text.lines().skip(seen) {
            if line.starts_with("@@VM ")
                && !line.starts_with("@@VM log ")
                && !line.starts_with("@@VM crash-log ")
                && !line.starts_with("@@VM tick")
            {
                eprintln!("[{:>5.0?}] {line}", t0.elapsed());
            }
            if !injected
                && !spec.inject.is_empty()
                && line.starts_with(&format!("@@VM begin {} ", spec.inject))
            {
                injected = true;
                let r = qmp(spec.qmp, &[r#"{"execute":"stop"}"#]);
                eprintln!("[{:>5.0?}] {INJECT_FREEZE_ENV}: host paused ({r:?})", t0.elapsed());
            }
            seen += 1;
        }
        // A partial last line is read again next time.
        if !text.ends_with('\n') {
            seen = seen.saturating_sub(1);
        }
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() > spec.deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("the VM did not power off within {VM_TIMEOUT:?}"));
            }
            Ok(None) if text.contains("@@VM tick") && last_growth.elapsed() > FREEZE_SILENCE => {
                let cpu = match (cpu_at_growth, cpu_time(pid)) {
                    (Some(a), Some(b)) => format!("{:.2} s", b.saturating_sub(a).as_secs_f64()),
                    _ => "unknown".into(),
                };
                let uptime = text
                    .lines()
                    .rev()
                    .find_map(|l| l.split("@@VM tick ").nth(1))
                    .unwrap_or("?")
                    .trim()
                    .to_owned();
                match nmi_at {
                    None => {
                        // Where it stopped, for the record; then an NMI, which wakes a
                        // halted CPU that missed its interrupt.
                        let regs = qmp(
                            spec.qmp,
                            &[
                                r#"{"execute":"human-monitor-command","arguments":{"command-line":"info registers"}}"#,
                                r#"{"execute":"inject-nmi"}"#,
                            ],
                        );
                        let dump = spec.console.with_extension("freeze.txt");
                        let regs = match regs {
                            // HMP's answer is a JSON string: written out as text.
                            Ok(r) => r
                                .iter()
                                .map(|l| {
                                    serde_json::from_str::<serde_json::Value>(l)
                                        .ok()
                                        .and_then(|v| v["return"].as_str().map(str::to_owned))
                                        .unwrap_or_else(|| l.clone())
                                })
                                .collect::<Vec<_>>()
                                .join("\n"),
                            Err(e) => e,
                        };
                        let _ = std::fs::write(&dump, regs.replace("\r\n", "\n"));
                        eprintln!(
                            "[{:>5.0?}] console silent {:.0?} (QEMU CPU {cpu} meanwhile): NMI sent, registers in {}",
                            t0.elapsed(),
                            last_growth.elapsed(),
                            dump.display()
                        );
                        nmi_at = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > NMI_GRACE => {
                        let _ = child.kill();
                        let _ = child.wait();
                        let during =
                            in_progress(&text).unwrap_or_else(|| "(between scenarios)".into());
                        return Boot::Froze(format!(
                            "froze during {during} (last heartbeat at guest uptime {uptime} s; console \
                             silent {:.0?}, QEMU CPU {cpu} meanwhile; an NMI did not revive it); \
                             console {}",
                            last_growth.elapsed(),
                            spec.console.display()
                        ));
                    }
                    Some(_) => {}
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => break Err(format!("waiting for QEMU: {e}")),
        }
    };
    let mut qemu_err = String::new();
    if let Some(e) = child.stderr.take() {
        for l in BufReader::new(e).lines().map_while(Result::ok) {
            qemu_err.push_str(&l);
            qemu_err.push('\n');
        }
    }
    match status {
        Err(e) => Boot::Broken(format!(
            "{e}; console {}:\n{}",
            spec.console.display(),
            console_tail(spec.console, 40)
        )),
        Ok(s) if !s.success() => Boot::Broken(format!(
            "QEMU exited with {s}: {}\n{}",
            qemu_err.trim(),
            console_tail(spec.console, 40)
        )),
        Ok(_) => Boot::Done,
    }
}

/// What [`parse_console`] returns: results, metrics and pairs by name.
pub type Parsed =
    (BTreeMap<String, ScenarioResult>, BTreeMap<String, Vec<u64>>, BTreeMap<String, Vec<Pair>>);

/// Parse the `@@VM result`, `@@VM log`, `@@VM metric` and `@@VM pair` lines of a console
/// log.
pub fn parse_console(text: &str) -> Parsed {
    let mut results: BTreeMap<String, ScenarioResult> = BTreeMap::new();
    let mut logs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut metrics: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut pairs: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    for line in text.lines() {
        // The serial console may end lines with \r.
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.find("@@VM ").map(|i| &line[i + 5..]) else {
            continue;
        };
        if let Some(p) = rest.strip_prefix("pair ") {
            if let Some((name, pair)) = Pair::parse(p) {
                pairs.entry(name.to_owned()).or_default().push(pair);
            }
            continue;
        }
        let mut parts = rest.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("result"), Some(name), Some(status), detail) => {
                results.insert(
                    name.to_owned(),
                    ScenarioResult {
                        status: status.to_owned(),
                        detail: detail.unwrap_or("").to_owned(),
                        log: Vec::new(),
                    },
                );
            }
            (Some("log"), Some(name), Some("|"), l) => {
                logs.entry(name.to_owned()).or_default().push(l.unwrap_or("").to_owned())
            }
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
    (results, metrics, pairs)
}

/// One paired measurement: a subject and its floor, measured one right after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// 1-based index in the series.
    pub index: u32,
    /// Whether the subject ran first in this pair.
    pub subject_first: bool,
    /// The subject's time (ms).
    pub subject_ms: u64,
    /// The floor's time (ms).
    pub floor_ms: u64,
}

impl Pair {
    /// `NAME I subject-first|floor-first SUBJECT_MS FLOOR_MS`.
    fn parse(s: &str) -> Option<(&str, Pair)> {
        let f: Vec<&str> = s.split_whitespace().collect();
        let [name, i, order, subject, floor] = f[..] else {
            return None;
        };
        let subject_first = match order {
            "subject-first" => true,
            "floor-first" => false,
            _ => return None,
        };
        Some((
            name,
            Pair {
                index: i.parse().ok()?,
                subject_first,
                subject_ms: subject.parse().ok()?,
                floor_ms: floor.parse().ok()?,
            },
        ))
    }

    /// subject / floor (`None` for a zero floor).
    pub fn ratio(&self) -> Option<f64> {
        (self.floor_ms > 0).then(|| self.subject_ms as f64 / self.floor_ms as f64)
    }
}

/// The median of `v` (the mean of the middle two for an even count); `None` if empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// A paired measurement's assertion: the median of the per-pair ratios at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioLimit {
    /// The pair series' name (`@@VM pair <name> …`).
    pub name: &'static str,
    /// What the subject is.
    pub subject: &'static str,
    /// What the floor is.
    pub floor: &'static str,
    /// Fewest pairs that count as a measurement.
    pub min_pairs: usize,
    /// Largest median ratio that passes.
    pub limit: f64,
    /// The issue's target for the median, when the assertion is a looser guard (TCG
    /// noise); equal to `limit` where the assertion is the target. The report shows
    /// whether each run met it.
    pub target: f64,
}

/// Start→ready through the runtime against the shim alone (decision 0005).
pub const START_READY: RatioLimit = RatioLimit {
    name: "start_ready",
    subject: "`boxsock start` (CLI, store, strategy, backend, shim, boot, agent readiness)",
    floor: "`vm-bare-launch start`: the same shim spec handed to the shim alone, returning at the same \
            readiness frame; both sides timed from spawn to exit",
    min_pairs: 10,
    limit: 1.10,
    target: 1.10,
};

/// Start→ready of a box running an OCI image against a `--rootfs` box of the very same
/// tree (the image's root given as the directory): what running an image adds to a
/// start (issue 20; decision 0018).
///
/// The issue's target is ≤ 1.05×; the assertion guards at 1.15×. Measured medians of
/// this very test: 0.94× and 1.03× (10 pairs, loaded machine) and 1.044× (24 pairs, the
/// tier alone): an image box starts about 4 % slower, so a 1.05× assertion would fail a
/// good run about as often as it passes. The guard still fails a start that copies or
/// walks the image (a root rebuilt per start, the layers stacked per box); the median
/// each run measured is what the target is judged on.
pub const IMAGE_START_READY: RatioLimit = RatioLimit {
    name: "image_start_ready",
    subject: "`boxsock start` of a box created from an image (`create IMAGE`)",
    floor: "`boxsock start` of a box created with `--rootfs` the image's root; both timed from \
            spawn to exit",
    min_pairs: 20,
    limit: 1.15,
    target: 1.05,
};

/// Sequential read of a 100 MB file from a `:ro` volume inside a libkrun box (the
/// guest's page cache dropped first, so every byte crosses virtio-fs; timed inside the
/// box) against the same `busybox dd` on the TCG host's tmpfs (issue 21, "Measured").
///
///
/// A loose guard, not the target: both sides run under TCG, the box's side one
/// virtualisation level deeper (every virtio-fs request is a guest exit that the TCG host
/// emulates), so the ratio measures the nesting more than boxsock. Measured medians over
/// six pairs: 15.5× and 20.6× with one sample per side (the host's ~100 ms read on a
/// 10 ms clock made the floor coarse), then 14.6× (12.9× to 16.7×) with each side's
/// fastest of three, as the scenario now does. The target,
/// ≤ 20×, is judged on the median each run prints (docs/backends.md, "Volumes"); the
/// guard, 60×, fails only a read path that is broken outright (a request per page, a
/// copy through the jail), never a slow run.
pub const VOLUME_READ: RatioLimit = RatioLimit {
    name: "volume_read",
    subject: "`dd` of a 100 MB file from a volume inside the box, guest page cache dropped",
    floor: "the same `busybox dd` of the same file on the TCG host (tmpfs)",
    min_pairs: 5,
    limit: 60.0,
    target: 20.0,
};

/// Start→ready of a box whose writes go to its ext4 disk against the same box with the
/// tmpfs upper (`upper=tmpfs`), both already started once (the disk is made at the
/// first start): what mounting the disk adds to a start (issue 21; decision 0023). The
/// issue's target is ≤ 1.10×, judged on the median each run prints; the assertion is a
/// loose guard (1.5×) that fails only a start that formats, copies or checks the disk
/// every time, never a noisy run under TCG. Medians measured (10 pairs each, the tier
/// running only the disk scenarios on a loaded machine): 1.106×, 1.026× and 1.063×;
/// single pairs ranged 0.93–1.47×.
pub const DISK_START_READY: RatioLimit = RatioLimit {
    name: "disk_start_ready",
    subject: "`boxsock start` of a box with its disk (the default)",
    floor: "`boxsock start` of a box with the tmpfs upper (`--backend-option upper=tmpfs`); both \
            timed from spawn to exit",
    min_pairs: 10,
    limit: 1.5,
    target: 1.10,
};

/// A sequential read of a 100 MB file from the box's disk, timed in the box, against the
/// same read of a file on the TCG host; page caches dropped before each (guest and TCG
/// host). The TCG host's files live in its initramfs (RAM), so the floor is a memory
/// copy (about 1 GB/s here) while the subject pays virtio-blk requests through nested
/// virtualization, ext4 and the overlay: the target is ≤ 10× on this tier (measured
/// medians 8.4× and 6.0×, pairs 4.9–10.6×, 85–230 MB/s in the box); the assertion is a guard
/// (20×) against a read path gone wrong (no readahead, 512-byte requests), not the
/// target.
pub const DISK_READ: RatioLimit = RatioLimit {
    name: "disk_read",
    subject: "`dd` of 100 MB from the box's disk, in the box (virtio-blk, ext4, overlay)",
    floor: "`dd` of 100 MB from a file on the TCG host",
    min_pairs: 5,
    limit: 20.0,
    target: 10.0,
};

/// `exec … true` through the CLI against one raw agent round trip (decision 0005).
pub const EXEC_TRUE: RatioLimit = RatioLimit {
    name: "exec_true",
    subject: "`boxsock exec BOX -- /bin/busybox true` (a fresh CLI process: store, strategy, link, dial, exec)",
    floor: "`vm-bare-launch exec`: a fresh process, one raw agent connection, the same exec",
    min_pairs: 10,
    limit: 3.0,
    target: 3.0,
};

/// What [`check_pairs`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioSummary {
    /// Pairs counted.
    pub pairs: usize,
    /// The median of the per-pair ratios.
    pub median: f64,
    /// Smallest and largest per-pair ratio.
    pub min: f64,
    /// Largest per-pair ratio.
    pub max: f64,
    /// Median subject and floor times (ms).
    pub subject_median_ms: f64,
    /// Median floor time (ms).
    pub floor_median_ms: f64,
    /// `median <= limit`.
    pub pass: bool,
}

/// Summarise `pairs` against `lim`. `Err` when they cannot be a measurement: fewer than
/// `min_pairs`, a zero floor, or orders that do not alternate (subject first, then floor
/// first, and so on).
pub fn summarize_pairs(lim: &RatioLimit, pairs: &[Pair]) -> Result<RatioSummary, String> {
    if pairs.len() < lim.min_pairs {
        return Err(format!(
            "{}: {} pairs measured, at least {} needed",
            lim.name,
            pairs.len(),
            lim.min_pairs
        ));
    }
    for (k, p) in pairs.iter().enumerate() {
        if p.subject_first != (k % 2 == 0) {
            return Err(format!(
                "{}: pair {} is {}, but the pairs must alternate starting subject-first",
                lim.name,
                p.index,
                if p.subject_first { "subject-first" } else { "floor-first" }
            ));
        }
    }
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|p| {
            p.ratio().ok_or_else(|| format!("{}: pair {} has a zero floor", lim.name, p.index))
        })
        .collect::<Result<_, _>>()?;
    let ms = |f: fn(&Pair) -> u64| {
        median(&pairs.iter().map(|p| f(p) as f64).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let median = median(&ratios).unwrap_or(f64::NAN);
    Ok(RatioSummary {
        pairs: pairs.len(),
        median,
        min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        subject_median_ms: ms(|p| p.subject_ms),
        floor_median_ms: ms(|p| p.floor_ms),
        pass: median <= lim.limit,
    })
}

/// The assertion: `Ok(summary)` when the median of the per-pair ratios is at most the
/// limit; otherwise `Err` with every pair.
pub fn check_pairs(lim: &RatioLimit, pairs: &[Pair]) -> Result<RatioSummary, String> {
    let s = summarize_pairs(lim, pairs)?;
    if s.pass {
        return Ok(s);
    }
    let each: Vec<String> = pairs
        .iter()
        .map(|p| {
            format!(
                "{}: {}/{} ms = {:.2}x",
                p.index,
                p.subject_ms,
                p.floor_ms,
                p.ratio().unwrap_or(f64::NAN)
            )
        })
        .collect();
    Err(format!(
        "{}: the median of {} per-pair ratios is {:.3}x, above the limit {:.2}x (subject: {}; floor: {}); pairs: {}",
        lim.name,
        s.pairs,
        s.median,
        lim.limit,
        lim.subject,
        lim.floor,
        each.join(", ")
    ))
}

/// Assert the paired measurement `lim` of the VM run (after its scenario passed).
pub fn assert_pairs(scenario: &str, lim: &RatioLimit) {
    assert_scenario(scenario);
    let VmRun::Ran { pairs, console, .. } = vm_run() else {
        return;
    };
    let got = pairs.get(lim.name).map(Vec::as_slice).unwrap_or(&[]);
    match check_pairs(lim, got) {
        Ok(s) => eprintln!(
            "real VM {}: median of {} per-pair ratios {:.3}x <= {:.2}x (range {:.2}-{:.2}x)",
            lim.name, s.pairs, s.median, lim.limit, s.min, s.max
        ),
        Err(e) => panic!("{e}\nconsole: {}", console.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_rerun_after_a_guest_crash_counts_its_second_run_and_is_recorded() {
        // What the host's runner prints when a guest kernel crashed during the first
        // attempt: no result for it, the crash, then the second attempt's result.
        let text = "@@VM begin d uptime=1\n@@VM guest-crash d [    1.79] BUG: kernel NULL pointer\r\n\
                    @@VM crash-log d | FAIL: start 2 of X failed\n@@VM begin d uptime=30\n\
                    @@VM result d pass 9ms\n@@VM pair p 1 subject-first 10 10\n";
        let (r, _, p) = parse_console(text);
        assert_eq!(r["d"].status, "pass");
        assert_eq!(p["p"].len(), 1);
        assert_eq!(guest_crashes(text), vec!["d [    1.79] BUG: kernel NULL pointer".to_owned()]);
        assert!(guest_crashes("@@VM result d fail 1ms: FAIL: x\n").is_empty());
    }

    /// The runner's pattern (guest/scenarios.sh, `guest_crash_line`) finds the crash of
    /// the CI run that made it, and boxsock's error naming one, and not a box's own
    /// output or a clean boot.
    #[test]
    fn the_runners_crash_pattern_matches_a_guest_oops_and_nothing_else() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/scenarios.sh"),
        )
        .unwrap();
        let pattern = script
            .lines()
            .find_map(|l| l.trim().strip_prefix("grep -hE '"))
            .and_then(|l| l.split('\'').next())
            .expect("guest_crash_line's grep -hE pattern");
        let grep = |text: &str| {
            use std::io::Write as _;
            let mut c = Command::new("grep")
                .arg("-hE")
                .arg(pattern)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let o = c.wait_with_output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        };
        let oops = "[    1.790112] BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
                    [    1.856654] RIP: 0010:mt_find+0x87/0x3c0\n";
        assert_eq!(
            grep(oops),
            "[    1.790112] BUG: kernel NULL pointer dereference, address: 0000000000000008"
        );
        assert!(
            grep("[  887.77] kvm [4726]: vcpu0, Unhandled WRMSR\nBUG: mine\n[ 0.5] Run /init\n")
                .is_empty()
        );
        assert!(!grep("[    2.5] Kernel panic - not syncing: sysrq triggered crash\n").is_empty());
        // boxsock's own words for it, in a start's error (boxsock-oci removes a box
        // whose create failed, its log with it).
        let said = "Error: box x: its process (pid 9) exited with code 0 before reporting ready \
                    on @a. The kernel in the box crashed: \"BUG: kernel NULL pointer\". Last lines";
        assert_eq!(grep(said), said);
    }

    #[test]
    fn parses_results_logs_and_metrics() {
        let text = "noise\r\n@@VM result a pass 12ms\r\n@@VM result b fail 3ms: FAIL: x\n@@VM log b | line one\n\
                    [  1.0] @@VM metric start_ms 8000\n@@VM metric start_ms 9000\n@@VM result c skip why not\n";
        let (r, m, _) = parse_console(text);
        assert_eq!(r["a"].status, "pass");
        assert_eq!(r["b"].status, "fail");
        assert_eq!(r["b"].log, vec!["line one".to_owned()]);
        assert_eq!(r["c"].detail, "why not");
        assert_eq!(m["start_ms"], vec![8000, 9000]);
    }

    #[test]
    fn the_scenario_in_progress_is_the_last_begun_without_a_result() {
        let t =
            "@@VM begin a uptime=1\n@@VM tick 2\n@@VM result a pass 1ms\n@@VM begin b uptime=3\n";
        assert_eq!(in_progress(t).as_deref(), Some("b"));
        assert_eq!(in_progress("@@VM begin a x\n@@VM result a fail 1ms: y\n"), None);
        assert_eq!(in_progress("@@VM tick 1\n"), None);
    }

    #[test]
    fn cpu_time_reads_this_process() {
        let t = cpu_time(std::process::id()).expect("own /proc/self/stat");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(0u64);
        }
        let u = cpu_time(std::process::id()).unwrap();
        assert!(u > t, "{t:?} then {u:?} after 300 ms of spinning");
    }

    fn r(status: &str, detail: &str) -> ScenarioResult {
        ScenarioResult { status: status.into(), detail: detail.into(), log: vec!["out".into()] }
    }

    #[test]
    fn a_reported_skip_fails_when_the_tier_is_required_and_only_then() {
        let skip = r("skip", "no gvproxy");
        assert_eq!(scenario_verdict("x", Some(&skip), false), Verdict::Skip("no gvproxy".into()));
        let Verdict::Fail(msg) = scenario_verdict("x", Some(&skip), true) else {
            panic!("a required skip passed")
        };
        assert!(
            msg.contains("skipped") && msg.contains("no gvproxy") && msg.contains(REQUIRED_ENV),
            "{msg}"
        );
        assert_eq!(
            scenario_verdict("x", Some(&r("pass", "9ms")), true),
            Verdict::Pass("9ms".into())
        );
        assert!(
            matches!(scenario_verdict("x", Some(&r("fail", "FAIL: y")), false), Verdict::Fail(m) if m.contains("FAIL: y"))
        );
        assert!(matches!(scenario_verdict("x", Some(&r("weird", "")), false), Verdict::Fail(_)));
        assert!(
            matches!(scenario_verdict("x", None, false), Verdict::Fail(m) if m.contains("reported nothing"))
        );
        // What the guest prints for a scenario that exits 77, through the parser.
        let (res, _, _) = parse_console("@@VM result derived-unixgram skip needs a gvproxy peer\n");
        assert!(matches!(
            scenario_verdict("derived-unixgram", res.get("derived-unixgram"), true),
            Verdict::Fail(_)
        ));
    }

    fn alternating(subject: impl Fn(u32) -> u64, floor: u64, n: u32) -> Vec<Pair> {
        (1..=n)
            .map(|i| Pair {
                index: i,
                subject_first: i % 2 == 1,
                subject_ms: subject(i),
                floor_ms: floor,
            })
            .collect()
    }

    #[test]
    fn pairs_parse_from_the_console() {
        let (_, _, p) = parse_console(
            "@@VM pair start_ready 1 subject-first 8100 8000\r\n[ 3.1] @@VM pair start_ready 2 floor-first 7900 8000\n\
             @@VM pair start_ready 3 sideways 1 1\n@@VM pair bad 1 subject-first x 1\n",
        );
        assert_eq!(p["start_ready"].len(), 2, "{p:?}");
        assert_eq!(
            p["start_ready"][1],
            Pair { index: 2, subject_first: false, subject_ms: 7900, floor_ms: 8000 }
        );
        assert!(!p.contains_key("bad"));
    }

    #[test]
    fn the_start_assertion_is_the_median_of_per_pair_ratios_and_can_fail() {
        let lim = START_READY;
        // At the floor: passes; the median, not the mean, decides.
        let s = check_pairs(&lim, &alternating(|_| 8000, 8000, 10)).unwrap();
        assert_eq!((s.pairs, s.median), (10, 1.0));
        // One wild pair (a contended boot) does not fail it; it would fail a ratio of means.
        let wild = alternating(|i| if i == 3 { 40_000 } else { 8400 }, 8000, 10);
        assert!(check_pairs(&lim, &wild).unwrap().median < 1.10);
        let mean = wild.iter().map(|p| p.subject_ms).sum::<u64>() as f64 / 10.0 / 8000.0;
        assert!(mean > 1.10, "the control: a ratio of means fails this data ({mean})");
        // An inflated subject (runtime 15% slower in every pair) fails, naming the pairs.
        let e = check_pairs(&lim, &alternating(|_| 9200, 8000, 10)).unwrap_err();
        assert!(
            e.contains("1.150x")
                && e.contains("above the limit 1.10x")
                && e.contains("3: 9200/8000 ms"),
            "{e}"
        );
        // Just over: the limit is inclusive of 1.10 and exclusive above it.
        assert!(check_pairs(&lim, &alternating(|_| 8800, 8000, 10)).is_ok());
        assert!(check_pairs(&lim, &alternating(|_| 8809, 8000, 10)).is_err());
        // Fewer than ten pairs, a zero floor, or no alternation is no measurement.
        assert!(
            check_pairs(&lim, &alternating(|_| 8000, 8000, 9)).unwrap_err().contains("at least 10")
        );
        assert!(
            check_pairs(&lim, &alternating(|_| 8000, 0, 10)).unwrap_err().contains("zero floor")
        );
        let mut same = alternating(|_| 8000, 8000, 10);
        same.iter_mut().for_each(|p| p.subject_first = true);
        assert!(check_pairs(&lim, &same).unwrap_err().contains("alternate"));
    }

    #[test]
    fn the_exec_assertion_is_a_ratio_to_the_raw_agent_round_trip_and_can_fail() {
        let lim = EXEC_TRUE;
        assert!(check_pairs(&lim, &alternating(|_| 760, 350, 12)).is_ok());
        // The CLI's own cost doubled (a second agent round trip per exec, say): fails.
        let e = check_pairs(&lim, &alternating(|_| 760 + 410, 350, 12)).unwrap_err();
        assert!(e.starts_with("exec_true:") && e.contains("above the limit 3.00x"), "{e}");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
