//! The squatter fallback squatted in its turn (issue 18, items 2 and 3): a recorded
//! fallback removed by a cleaner and re-made by uid 65534 under its public name, and
//! xdg-hashed without `XDG_RUNTIME_DIR` with its root squatted. Each runs the CLI, and a
//! naive control beside it: the directory opened with no way to replace it (what the
//! runtime did before: the recorded fallback built into the strategy's configuration as
//! a fixed `binding_dir`, and xdg-hashed's root refused for good), which must be refused
//! every time or the attack never landed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use boxsock_core::{BindingError, BoxLayout, StrategyConfig, boxdir};
use boxsock_short_symlink::ShortSymlink;
use boxsock_tests::reliability::Outcome;
use boxsock_tests::scenario;

use crate::attacks::{NEED_ROOT, NOBODY, World, agent_dir, cstr, is_root, nobody};

/// The `boxsock` binary built from this workspace.
fn boxsock_bin() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock", "boxsock-agent"]).join("boxsock")
}

/// `boxsock` over `home`, links under `base`, the workspace's agent, the `host` backend,
/// no inherited configuration and no `XDG_RUNTIME_DIR`.
fn cli(home: &Path, base: &Path, strategy: &str) -> Command {
    let mut c = Command::new(boxsock_bin());
    c.arg("--home")
        .arg(home)
        .arg("--link-base")
        .arg(base)
        .args(["--strategy", strategy, "--backend", "host"])
        .env("BOXSOCK_HELPER_DIR", agent_dir())
        .env_remove("BOXSOCK_HOME")
        .env_remove("BOXSOCK_LINK_BASE")
        .env_remove("BOXSOCK_STRATEGY")
        .env_remove("BOXSOCK_BACKEND")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Run `boxsock <args>`: its stdout, or its stderr as the error. A command that exits 0
/// but warns that the home's sweep failed did not work (the sweep every writing command
/// runs, and the `sweep` verb's own).
fn boxsock(home: &Path, base: &Path, strategy: &str, args: &[&str]) -> Result<String, String> {
    let o = cli(home, base, strategy).args(args).output().expect("spawn boxsock");
    if o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("sweep failed") {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("{:?} -> {}: {}", args, o.status, String::from_utf8_lossy(&o.stderr)))
    }
}

/// The directory a home's record names (its first line), as any version reads it.
fn recorded(home: &Path, record: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(home.join(record)).ok()?;
    text.lines().next().filter(|l| !l.is_empty()).map(PathBuf::from)
}

/// A cleaner (or a reboot) removes `dir`; then uid 65534 makes a 0777 directory of that
/// very name, read from `ls` of the base.
fn clean_and_squat(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let r =
        nobody::run(&[nobody::Act::Mkdir(cstr(dir), 0o777), nobody::Act::Chmod(cstr(dir), 0o777)])
            .expect("run the squatter");
    assert_eq!(r, [0, 0], "uid 65534 could not squat {}", dir.display());
}

/// The naive control: `dir` opened as the directory of a box's links with no fallback
/// (a strategy built with it as a fixed `binding_dir`, as the runtime built its
/// strategies from the home's record before). Whether it was refused (`Insecure`).
fn naive_refused(w: &World, dir: &Path) -> bool {
    let config = StrategyConfig {
        base_dir: dir.parent().expect("in the base").to_owned(),
        binding_dir: Some(dir.to_owned()),
        ..StrategyConfig::default()
    };
    let s = ShortSymlink::new(&config).expect("build the naive strategy");
    let home = w.root.path().join("control-home");
    std::fs::create_dir_all(&home).expect("control home");
    let layout = BoxLayout::new(home);
    let id = boxsock_core::BoxId::generate();
    boxdir::create_box_dirs(&layout, &id).expect("control box dirs");
    matches!(
        boxsock_core::PathStrategy::ensure(&s, &layout, &id),
        Err(BindingError::Insecure { .. })
    )
}

/// Whether the squatter's `dir` is still theirs and empty.
fn untouched(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.uid() == NOBODY && m.is_dir())
        && crate::attacks::entries(dir).is_empty()
}

const ROUNDS: usize = 20;

scenario!(
    recorded_fallback_resquatted_after_a_cleaner_never_blocks_the_home,
    "Attacks",
    "uid 65534 squats `<base>/boxsock-<uid>`; a box is created (the runtime records a fallback `<base>/boxsock.<random>`); then, 20 rounds, before each of `start`, `exec`, `run --rm` and `sweep` (CLI, host backend): a cleaner removes the recorded fallback and uid 65534 makes a 0777 directory of the recorded name; control beside each: that recorded directory opened with no fallback (the runtime's old behaviour)",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let home = w.layout.home();
            let squat = w.per_uid();
            clean_and_squat(&squat);
            let o = cli(home, &w.base, "short-symlink")
                .args(["create", "--name", "b"])
                .output()
                .expect("spawn");
            assert!(o.status.success(), "create: {}", String::from_utf8_lossy(&o.stderr));
            let first = recorded(home, "binding-dir").expect("a fallback is recorded");
            let (mut worked, mut refused, mut squatted, mut replaced) =
                ([0usize; 4], 0usize, Vec::new(), 0usize);
            let verbs: [&[&str]; 4] = [
                &["start", "b"],
                &["exec", "b", "--", "/bin/true"],
                &["run", "--rm", "--", "/bin/true"],
                &["sweep"],
            ];
            for round in 0..ROUNDS {
                for (i, args) in verbs.iter().enumerate() {
                    let dir = recorded(home, "binding-dir").expect("a fallback is recorded");
                    clean_and_squat(&dir);
                    squatted.push(dir.clone());
                    if naive_refused(&w, &dir) {
                        refused += 1;
                    }
                    match boxsock(home, &w.base, "short-symlink", args) {
                        Ok(_) => worked[i] += 1,
                        Err(e) => eprintln!("round {round}: {e}"),
                    }
                    if recorded(home, "binding-dir").is_some_and(|now| now != dir) {
                        replaced += 1;
                    }
                    // After `exec`: stop the box, so the next round's `start` starts it.
                    if i == 1 {
                        let _ = boxsock(home, &w.base, "short-symlink", &["stop", "b"]);
                    }
                }
            }
            let attacks = ROUNDS * verbs.len();
            let _ = boxsock(home, &w.base, "short-symlink", &["rm", "-f", "b"]);
            assert_eq!(
                refused, attacks,
                "control: the naive runtime was not refused every time: the attack did not land"
            );
            let [start, exec, run, sweep] = worked;
            assert_eq!(
                worked, [ROUNDS; 4],
                "start {start}, exec {exec}, run {run}, sweep {sweep} of {ROUNDS} worked"
            );
            // `sweep` needs no directory: it finds nothing of ours in a squatted one and
            // leaves the record alone; every other command replaced it.
            assert_eq!(
                replaced,
                attacks - ROUNDS,
                "start, exec and run each replaced the squatted record"
            );
            assert!(
                squatted.iter().chain([&squat]).all(|d| untouched(d)),
                "a squatter's directory was used or changed"
            );
            let doctor = boxsock(home, &w.base, "short-symlink", &["doctor"]).expect("doctor");
            assert!(
                doctor.contains("replaced the recorded fallback")
                    && doctor.contains("owned by uid 65534"),
                "{doctor}"
            );
            let line = doctor
                .lines()
                .find(|l| l.trim_start().starts_with("replaced the recorded fallback"))
                .unwrap_or("")
                .trim()
                .to_owned();
            Outcome::Passed(format!(
                "start {start}/{ROUNDS}, exec {exec}/{ROUNDS}, run {run}/{ROUNDS}, sweep {sweep}/{ROUNDS} worked; start, exec and run each through a fresh private directory replacing the squatted one ({replaced} replacements, the first fallback {}), sweep finding nothing of ours in the squatted one; control: the recorded directory opened with no fallback was refused {refused} of {attacks} times; no squatter's directory was used or changed; doctor says: {}",
                boxsock_tests::reliability::measured(first.display()),
                boxsock_tests::reliability::measured(line)
            ))
        })()
    }
);

scenario!(
    xdg_hashed_root_squatted_without_xdg_runtime_dir_never_blocks_runs,
    "Attacks",
    "xdg-hashed without `XDG_RUNTIME_DIR`: uid 65534 makes `<base>/boxsock-x-<uid>` (0777) before first use; 10 `run --rm` (CLI, host backend), and before the last 5 a cleaner removes the recorded fallback root and uid 65534 makes a directory of its name; control beside each: the squatted root opened with no fallback (xdg-hashed before)",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let home = w.layout.home();
            let root = w.base.join(format!("boxsock-x-{}", nix::unistd::geteuid()));
            clean_and_squat(&root);
            let record = "binding-dir.boxsock-x";
            let (mut worked, mut refused, mut resquats) = (0usize, 0usize, 0usize);
            for i in 0..10 {
                let squatted = match recorded(home, record) {
                    Some(fallback) if i >= 5 => {
                        clean_and_squat(&fallback);
                        resquats += 1;
                        fallback
                    }
                    _ => root.clone(),
                };
                if naive_refused(&w, &squatted) {
                    refused += 1;
                }
                match boxsock(home, &w.base, "xdg-hashed", &["run", "--rm", "--", "/bin/true"]) {
                    Ok(_) => worked += 1,
                    Err(e) => eprintln!("run {i}: {e}"),
                }
            }
            assert_eq!(
                refused, 10,
                "control: the squatted root opened with no fallback was not refused every time"
            );
            assert_eq!(worked, 10, "{worked} of 10 runs worked");
            assert_eq!(resquats, 5, "the runtime never recorded a fallback root in {record}");
            assert!(untouched(&root), "the squatter's root was used or changed");
            Outcome::Passed(format!(
                "{worked}/10 runs worked through a fresh private root recorded in <home>/{record} ({resquats} of them after the recorded root was removed and re-made by uid 65534); control: the squatted root opened with no fallback was refused {refused} of 10 times; the squatter's root stayed untouched and empty"
            ))
        })()
    }
);
