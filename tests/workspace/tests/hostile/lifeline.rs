//! `run --rm` killed with SIGKILL (issue 18 item 7): its box dies with it, and nothing
//! of it is left, without any later boxsock command (decision 0012).
//!
//! Real processes: the `boxsock` CLI on the host backend, its lifeline (the guardian
//! `run --rm` starts), the real agent, a real SQLite store read read-only by this test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxsock::StrategyConfig;
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};

/// Kills per home.
const KILLS: usize = 100;
/// The seed of the kill delays (the same delays in every run).
const SEED: u64 = 0x1807;
/// Kill delays after the client is spawned, in ms.
const DELAYS_MS: std::ops::RangeInclusive<u64> = 2..=300;
/// How long what the kills left may take to go (it takes well under a second per box).
const SETTLE: Duration = Duration::from_secs(90);

/// What the runtime logs (warn) when it asks an agent it had not recorded to shut down.
const UNRECORDED: &str = "asked an unrecorded agent";

/// The hidden verb of the guardian (`cli/src/lifeline.rs`).
const LIFELINE_VERB: &str = "__lifeline";

fn bin_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock", "boxsock-agent"])
}

/// One home and link base per client: a later client's writing open on the same home
/// would remove what an earlier one left (the backstop), and hide a lifeline that
/// failed.
struct Home {
    _root: tempfile::TempDir,
    home: PathBuf,
    link_base: PathBuf,
    /// The `sleep` operand of its command: names its command process.
    marker: String,
}

impl Home {
    /// Home `trial` of group `group` (1: with the lifeline, 2: the control).
    fn new(group: u32, trial: usize) -> Home {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let link_base = root.path().join("links");
        std::fs::create_dir_all(&link_base).unwrap();
        // `sleep 3001.<trial><pid>`: an hour, and a number no other command has.
        let marker = format!("{}.{trial:03}{}", 3000 + group, std::process::id());
        Home { _root: root, home, link_base, marker }
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(bin_dir().join("boxsock"));
        c.arg("--home")
            .arg(&self.home)
            .arg("--link-base")
            .arg(&self.link_base)
            .arg("--backend")
            .arg("host")
            .env("BOXSOCK_HELPER_DIR", bin_dir())
            .env_remove("BOXSOCK_HOME")
            .env_remove("BOXSOCK_LINK_BASE")
            .env_remove("BOXSOCK_STRATEGY")
            .env_remove("BOXSOCK_BACKEND")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// `run --rm`, its stderr (and so its lifeline's) kept beside the home.
    fn spawn_run_rm(&self) -> Child {
        let err = std::fs::File::create(self.stderr_path()).unwrap();
        self.cli()
            .args(["run", "--rm", "--", "sleep", &self.marker])
            .stderr(err)
            .spawn()
            .expect("spawn boxsock run --rm")
    }

    fn stderr_path(&self) -> PathBuf {
        self.home.with_file_name("stderr")
    }

    /// Box ids with a directory, a link or a row in this home, found without boxsock.
    fn ids(&self) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
        (
            names_in(&self.home.join("boxes")),
            names_in(
                &StrategyConfig { base_dir: self.link_base.clone(), ..StrategyConfig::default() }
                    .per_uid_dir(),
            ),
            rows(&self.home.join("boxsock.db")),
        )
    }
}

/// Whatever the test's outcome (a failed assertion too), no process of a home outlives
/// it: box processes, commands and lifelines are killed, by pid.
impl Drop for Home {
    fn drop(&mut self) {
        let mut left = Leftovers::default();
        processes(std::slice::from_ref(self), &mut left);
        for pid in left.agents.iter().chain(&left.commands).chain(&left.guardians) {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// What is left of the boxes of `homes`, found without running boxsock: one pass over
/// `/proc`, then each home's directories, links and store.
fn leftovers(homes: &[Home]) -> Leftovers {
    let mut left = Leftovers::default();
    processes(homes, &mut left);
    for h in homes {
        let (dirs, links, rows) = h.ids();
        left.dirs.extend(dirs);
        left.links.extend(links);
        left.rows.extend(rows);
    }
    left
}

/// The box processes, commands and lifelines of `homes` (never panics: also run by
/// `Drop`).
fn processes(homes: &[Home], left: &mut Leftovers) {
    let prefixes: Vec<String> =
        homes.iter().map(|h| format!("{}/", h.home.to_string_lossy())).collect();
    let commands: Vec<Vec<u8>> =
        homes.iter().map(|h| format!("sleep\0{}\0", h.marker).into_bytes()).collect();
    for pid in live_pids() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if commands.contains(&cmdline) {
            left.commands.insert(pid);
        } else if contains(&cmdline, LIFELINE_VERB.as_bytes()) {
            // `--home <home>` among its arguments.
            if prefixes.iter().any(|p| contains(&cmdline, p.trim_end_matches('/').as_bytes())) {
                left.guardians.insert(pid);
            }
        } else if holds_file_under(pid, &prefixes) {
            // A box process: its log (stdout, stderr) or socket directory (descriptor 3)
            // is in one of the homes, deleted or not.
            left.agents.insert(pid);
        }
    }
}

/// Everything of a box that must go with it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Leftovers {
    dirs: BTreeSet<String>,
    links: BTreeSet<String>,
    rows: BTreeSet<String>,
    agents: BTreeSet<i32>,
    commands: BTreeSet<i32>,
    guardians: BTreeSet<i32>,
}

impl Leftovers {
    /// Boxes left: every id with a directory, link or row (at least one per live agent).
    fn boxes(&self) -> usize {
        let ids: BTreeSet<&String> =
            self.dirs.iter().chain(&self.links).chain(&self.rows).collect();
        ids.len().max(self.agents.len())
    }

    fn nothing(&self) -> bool {
        *self == Leftovers::default()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Box ids in the store, read without touching it: from a copy of the database and its
/// WAL (a client killed mid-write leaves a WAL that only a writer may recover, and a
/// read-only connection refuses it: `SQLITE_READONLY_RECOVERY`).
fn rows(db: &Path) -> BTreeSet<String> {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("copy.db");
    match std::fs::copy(db, &copy) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeSet::new(),
        Err(e) => panic!("copy {}: {e}", db.display()),
    }
    let wal = db.with_extension("db-wal");
    if let Err(e) = std::fs::copy(&wal, scratch.path().join("copy.db-wal")) {
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "copy {}: {e}", wal.display());
    }
    let conn = rusqlite::Connection::open(&copy).expect("open the copy of the store");
    // A client killed during the first open of its home may leave a store not yet
    // migrated: no table, no box.
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'boxes'",
            [],
            |r| r.get(0),
        )
        .expect("read the store's schema");
    if tables == 0 {
        return BTreeSet::new();
    }
    let mut st = conn.prepare("SELECT id FROM boxes").expect("query the store");
    st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|r| r.unwrap()).collect()
}

/// Live (not zombie) processes other than this one.
fn live_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && alive(pid))
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()))
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// Whether one of `pid`'s descriptors is a file or directory under one of `prefixes`.
fn holds_file_under(pid: i32, prefixes: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| {
            let t = t.to_string_lossy();
            prefixes.iter().any(|p| t.starts_with(p.as_str()))
        })
    })
}

/// `pid`'s children, from `/proc/<pid>/task/*/children`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect()
}

fn cmdline_has(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| contains(&c, needle.as_bytes()))
}

/// Where a client was when it was killed (read from `/proc` just before the kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No lifeline yet: before the box could exist (opening the home).
    BeforeLifeline,
    /// Lifeline started, no box process: creating the box, or starting it.
    Creating,
    /// The box's agent runs, not the command yet: starting, or opening the exec.
    Starting,
    /// The command runs in the box (or the client is removing the box).
    CommandRuns,
}

/// See where `client` is, kill its lifeline first when `cut_lifeline`, then SIGKILL
/// it (not stopped first: a stopped client would give its agent time it does not have
/// when the kill is real).
fn kill_client(client: &mut Child, cut_lifeline: bool) -> Phase {
    let pid = client.id() as i32;
    let kids = children(pid);
    let guardians: Vec<i32> =
        kids.iter().copied().filter(|&k| cmdline_has(k, LIFELINE_VERB)).collect();
    let agents: Vec<i32> =
        kids.iter().copied().filter(|&k| cmdline_has(k, "boxsock-agent")).collect();
    let phase = if guardians.is_empty() {
        Phase::BeforeLifeline
    } else if agents.is_empty() {
        Phase::Creating
    } else if agents.iter().all(|&a| children(a).is_empty()) {
        Phase::Starting
    } else {
        Phase::CommandRuns
    };
    if cut_lifeline {
        for g in guardians {
            let _ = kill(Pid::from_raw(g), Signal::SIGKILL);
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = client.wait();
    phase
}

fn describe(phases: &[Phase]) -> String {
    let n = |p: Phase| phases.iter().filter(|&&x| x == p).count();
    format!(
        "{} before the lifeline existed, {} while creating the box, {} while it started, {} while the command ran",
        n(Phase::BeforeLifeline),
        n(Phase::Creating),
        n(Phase::Starting),
        n(Phase::CommandRuns)
    )
}

scenario!(
    a_killed_run_rm_client_takes_its_box_with_it,
    "Faults",
    "100 `kill -9` of `boxsock --backend host run --rm -- sleep …`, each client on a home of its own, at seeded random moments 2–300 ms after it starts, then no boxsock command at all; beside them, the same kills with the client's lifeline killed first (the positive control)",
    {
        // Built before the clock starts.
        bin_dir();
        let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
        let (mut with, mut cut) = (Vec::new(), Vec::new());
        let (mut phases, mut cut_phases) = (Vec::new(), Vec::new());
        let started = Instant::now();
        for trial in 0..KILLS {
            let delay = Duration::from_millis(rng.random_range(DELAYS_MS));
            for cut_lifeline in [false, true] {
                let home = Home::new(if cut_lifeline { 2 } else { 1 }, trial);
                let mut client = home.spawn_run_rm();
                std::thread::sleep(delay);
                let phase = kill_client(&mut client, cut_lifeline);
                if cut_lifeline {
                    cut_phases.push(phase);
                    cut.push(home);
                } else {
                    phases.push(phase);
                    with.push(home);
                }
            }
        }
        let killing = started.elapsed();
        // No boxsock command from here on until both counts are taken: only reads of
        // /proc, the homes, the link bases and the stores.
        let settle = Instant::now();
        let mut left = leftovers(&with);
        while !left.nothing() && settle.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(100));
            left = leftovers(&with);
        }
        let settled = settle.elapsed();
        // Kills between the launch of the agent and its record, after the agent had
        // said it was ready: the lifeline found it through its address.
        let unrecorded: usize = with
            .iter()
            .map(|h| {
                std::fs::read_to_string(h.stderr_path())
                    .unwrap_or_default()
                    .matches(UNRECORDED)
                    .count()
            })
            .sum();
        let cut_left = leftovers(&cut);
        // Then the backstop: the next writing command (`sweep`) on each control home
        // removes what the kills left there.
        let mut cut_unrecorded = 0;
        for home in &cut {
            let o = home.cli().arg("sweep").output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "sweep: {err}");
            cut_unrecorded += err.matches(UNRECORDED).count();
        }
        let deadline = Instant::now() + SETTLE;
        let mut cut_after = leftovers(&cut);
        while !cut_after.nothing() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            cut_after = leftovers(&cut);
        }
        eprintln!(
            "unrecorded agents shut down: {unrecorded} (control, by sweep: {cut_unrecorded})"
        );
        eprintln!(
            "killing took {killing:?}; with the lifeline, after {settled:?}: {left:?} (kills: {}); control: {} box(es) left (kills: {}): {cut_left:?}",
            describe(&phases),
            cut_left.boxes(),
            describe(&cut_phases)
        );
        assert!(
            cut_left.boxes() > 0,
            "the positive control failed: with the lifeline killed too, {KILLS} kills left no box ({cut_left:?}); the test cannot tell a working lifeline from none"
        );
        if !left.nothing() {
            for h in &with {
                let (dirs, links, rows) = h.ids();
                if !(dirs.is_empty() && links.is_empty() && rows.is_empty()) {
                    let err = std::fs::read_to_string(h.stderr_path()).unwrap_or_default();
                    eprintln!(
                        "left in {}: dirs {dirs:?} links {links:?} rows {rows:?}; stderr of the client and its lifeline:\n{err}",
                        h.home.display()
                    );
                }
            }
        }
        assert!(
            left.nothing(),
            "{KILLS} kills of `run --rm` left, {} s later and with no boxsock command run: {} box(es): {left:?} (kills: {})",
            SETTLE.as_secs(),
            left.boxes(),
            describe(&phases)
        );
        assert!(
            cut_after.nothing(),
            "the next writing command (sweep) did not remove what the control left: {cut_after:?}"
        );
        Outcome::Passed(format!(
            "with the lifeline, 0 boxes left ({KILLS} kills: {}; {} of them after an agent was ready but not yet recorded, shut down through its address): no agent, command, lifeline, box directory, link or store row, {} after the last kill, with no boxsock command run; control (lifeline killed first; {}): {} of {KILLS} boxes left running, until the next writing command (`sweep`) removed them ({} unrecorded agents shut down)",
            measured(describe(&phases)),
            measured(unrecorded),
            measured(format!("{:.1} s", settled.as_secs_f64())),
            measured(describe(&cut_phases)),
            measured(cut_left.boxes()),
            measured(cut_unrecorded),
        ))
    }
);
