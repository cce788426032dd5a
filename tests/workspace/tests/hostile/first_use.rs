//! First use of a home under concurrency (issue 24): many `boxsock create` processes
//! released at the same instant on a home that does not exist yet. Every one of them
//! must succeed, and the home must end up holding exactly their boxes.
//!
//! Real `boxsock` processes on the host backend, real SQLite files, real links in a
//! temp link base. Each process is started by `sh`, which blocks on its stdin until the
//! test closes every pipe at once, so they all reach the new home together.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use boxsock::boxsock_runtime::store::Store;
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;

/// The log line of a process that found another one initialising the home and waited
/// for it (the runtime's debug log): the race this scenario is about, observed.
const WAITED: &str = "waiting for another process initialising the home";

const TRIALS: usize = 50;

fn bin_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock", "boxsock-agent"])
}

/// A temp dir that is 0700 whatever the umask (it is an ancestor of every home here).
fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `boxsock --home <home> --backend host create`, held by `sh` until its stdin closes.
fn held_create(home: &Path, links: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(r#"read -r _ || true; exec "$0" "$@""#)
        .arg(bin_dir().join("boxsock"))
        .arg("--home")
        .arg(home)
        .args(["--backend", "host", "create"])
        .env("BOXSOCK_LINK_BASE", links)
        .env("BOXSOCK_HELPER_DIR", bin_dir())
        .env("RUST_LOG", "boxsock_runtime=debug")
        .env_remove("BOXSOCK_HOME")
        .env_remove("BOXSOCK_STRATEGY")
        .env_remove("BOXSOCK_BACKEND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the trials of one process count saw.
#[derive(Default)]
struct Tally {
    /// Commands that failed, with their last stderr line (at most a few kept).
    failures: Vec<String>,
    failed_commands: usize,
    failed_trials: usize,
    /// Trials in which at least one process waited for another's initialisation.
    contended_trials: usize,
}

/// `TRIALS` races of `procs` creates on a new home each; checks each trial's home.
fn trials(root: &Path, links: &Path, procs: usize) -> Tally {
    let mut t = Tally::default();
    for trial in 0..TRIALS {
        let home = root.join(format!("p{procs}-t{trial}/home"));
        std::fs::create_dir(home.parent().unwrap()).unwrap();
        let mut children: Vec<Child> = (0..procs).map(|_| held_create(&home, links)).collect();
        // Release them together: every `sh` is blocked reading its stdin.
        let pipes: Vec<_> = children.iter_mut().map(|c| c.stdin.take().unwrap()).collect();
        for mut p in pipes {
            let _ = p.flush();
        }
        let mut ids = BTreeSet::new();
        let (mut failed, mut waited) = (0, false);
        for c in children {
            let o = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            waited |= err.contains(WAITED);
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if o.status.success() && !out.is_empty() && !out.contains(char::is_whitespace) {
                ids.insert(out);
            } else {
                failed += 1;
                if t.failures.len() < 5 {
                    let last =
                        err.lines().rev().find(|l| !l.contains("DEBUG")).unwrap_or("").to_owned();
                    let last = last.replace(root.to_str().unwrap(), "<root>");
                    t.failures.push(format!("trial {trial}: {} ({})", last, o.status));
                }
            }
        }
        t.failed_commands += failed;
        t.failed_trials += usize::from(failed > 0);
        t.contended_trials += usize::from(waited);
        // The home holds exactly the boxes whose ids were printed: no lost, no phantom
        // rows, and a directory per box.
        let rows: BTreeSet<String> = Store::open(home.join("boxsock.db"))
            .unwrap()
            .list()
            .unwrap()
            .boxes
            .into_iter()
            .map(|b| b.id.to_string())
            .collect();
        assert_eq!(rows, ids, "trial {trial} of {procs}: rows differ from the ids printed");
        let dirs: BTreeSet<String> = std::fs::read_dir(home.join("boxes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(dirs, ids, "trial {trial} of {procs}: box directories differ from the rows");
        std::fs::remove_dir_all(home.parent().unwrap()).unwrap();
    }
    t
}

scenario!(
    first_use_races_of_8_and_32_creates_on_a_new_home,
    "Faults",
    "8, then 32 `boxsock --home H --backend host create` processes released at the same instant on a home H that does not exist yet; 50 trials each, a new H each time",
    {
        let root = private_tempdir();
        let links = root.path().join("links");
        std::fs::create_dir(&links).unwrap();
        let eight = trials(root.path(), &links, 8);
        let thirty_two = trials(root.path(), &links, 32);
        let failed: Vec<String> = [(8, &eight), (32, &thirty_two)]
            .iter()
            .filter(|(_, t)| t.failed_commands > 0)
            .map(|(procs, t)| {
                format!(
                    "{procs} processes: {} of {} commands failed, in {} of {TRIALS} trials; e.g.\n{}",
                    t.failed_commands,
                    procs * TRIALS,
                    t.failed_trials,
                    t.failures.join("\n")
                )
            })
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        // The race must really have happened: processes found another one initialising
        // the home and waited for it.
        let contended = eight.contended_trials + thirty_two.contended_trials;
        assert!(
            contended >= TRIALS / 5,
            "a process waited for another's initialisation in only {contended} of {} trials: the race was not exercised",
            2 * TRIALS
        );
        Outcome::Passed(format!(
            "all {} commands succeeded ({} with 8 processes, {} with 32); each trial's home held exactly the boxes whose ids were printed, a directory each; a process waited for another's initialisation of the home in {} of {} trials",
            (8 + 32) * TRIALS,
            8 * TRIALS,
            32 * TRIALS,
            measured(contended),
            2 * TRIALS
        ))
    }
);
