//! Security round three (issue 18): descriptors that leak into a box's commands, another
//! user's escape sequences on the owner's terminal, and a link base another user chose.

use boxsock_conformance::util::ByFile;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use boxsock::{CreateOptions, Runtime};
use boxsock_core::{BindingError, StrategyConfig};
use boxsock_tests::reliability::Outcome;
use boxsock_tests::scenario;

use crate::attacks::{NEED_ROOT, World, agent_dir, cstr, is_root, nobody, rt_options, tokio_rt};

/// Descriptors the CLI (or the test's child) is started with, open without CLOEXEC.
const EXTRA_FDS: [i32; 2] = [10, 251];

/// The `boxsock` binary built from this workspace.
fn boxsock_bin() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock", "boxsock-agent"]).join("boxsock")
}

/// `boxsock` over `home`, links under `base`, the workspace's agent, no inherited config.
fn cli(home: &Path, base: &Path) -> Command {
    let mut c = Command::new(boxsock_bin());
    c.arg("--home")
        .arg(home)
        .arg("--link-base")
        .arg(base)
        .env("BOXSOCK_HELPER_DIR", agent_dir())
        .env_remove("BOXSOCK_HOME")
        .env_remove("BOXSOCK_LINK_BASE")
        .env_remove("BOXSOCK_STRATEGY")
        .env_remove("BOXSOCK_BACKEND")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Start `c` with [`EXTRA_FDS`] open on `/dev/null` without CLOEXEC, as a shell does with
/// `10</dev/null 251</dev/null`.
fn with_extra_fds(c: &mut Command) -> std::fs::File {
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    let src = null.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; `src` stays open in the parent (the returned
    // file) until the caller has spawned.
    unsafe {
        c.pre_exec(move || {
            for fd in EXTRA_FDS {
                if libc::dup2(src, fd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    null
}

/// The numbers in `ls /proc/$$/fd` output (a tty adds `\r`).
fn fd_list(out: &[u8]) -> Vec<i32> {
    let mut v: Vec<i32> =
        String::from_utf8_lossy(out).split_whitespace().filter_map(|t| t.parse().ok()).collect();
    v.sort();
    v
}

const LIST_FDS: &str = "ls /proc/$$/fd";

/// Run in a child process by [`box_commands_inherit_only_stdio`] (its descriptors are
/// process-wide state): a box on the host backend through the library, commands through
/// `Runtime::command` with pipes and with a tty; prints `pipes=<fds> tty=<fds>`.
#[test]
#[ignore = "run by box_commands_inherit_only_stdio in a child process"]
fn round3_library_fds_child() {
    let w = World::new();
    let line = tokio_rt().block_on(async {
        let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
        let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
        let id = b.id.to_string();
        rt.start(&id).await.unwrap();
        let pipes = rt.command(&id, "sh").args(["-c", LIST_FDS]).output().await.unwrap();
        let tty = rt.command(&id, "sh").args(["-c", LIST_FDS]).tty(true).output().await.unwrap();
        let _ = rt.stop(&id, None).await;
        let _ = rt.remove(&id, true).await;
        format!("pipes={:?} tty={:?}", fd_list(&pipes.stdout), fd_list(&tty.stdout))
    });
    println!("R3-FDS {line}");
}

scenario!(
    box_commands_inherit_only_stdio,
    "Attacks",
    "the CLI is started with descriptors 10 and 251 open without CLOEXEC and runs `run --rm -- sh -c 'ls /proc/$$/fd'` on the `host` backend; the library (in a process started with the same descriptors) runs the same command through `Runtime::command`, with pipes and with a tty; control: the same shell started directly by the test with those descriptors",
    {
        {
            let w = World::new();
            // Control: the descriptors really are inherited by what the test starts.
            let mut direct = Command::new("sh");
            direct.args(["-c", LIST_FDS]).stdin(Stdio::null());
            let keep = with_extra_fds(&mut direct);
            let o = direct.output().unwrap();
            drop(keep);
            let control = fd_list(&o.stdout);
            assert_eq!(
                control,
                [0, 1, 2, 10, 251],
                "control: the extra descriptors were not inherited"
            );

            let mut run = cli(w.layout.home(), &w.base);
            run.args(["--backend", "host", "run", "--rm", "--", "sh", "-c", LIST_FDS]);
            let keep = with_extra_fds(&mut run);
            let o = run.output().unwrap();
            drop(keep);
            assert!(o.status.success(), "run failed: {}", String::from_utf8_lossy(&o.stderr));
            let via_cli = fd_list(&o.stdout);
            assert_eq!(via_cli, [0, 1, 2], "a command run by the CLI inherited more than stdio");

            let mut child = Command::new(std::env::current_exe().unwrap());
            child.args(["--exact", "round3::round3_library_fds_child", "--ignored", "--nocapture"]);
            child.stdin(Stdio::null());
            let keep = with_extra_fds(&mut child);
            let o = child.output().unwrap();
            drop(keep);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = out.lines().find_map(|l| l.strip_prefix("R3-FDS ")).unwrap_or_else(|| {
                panic!("library child failed: {out}{}", String::from_utf8_lossy(&o.stderr))
            });
            assert_eq!(
                line, "pipes=[0, 1, 2] tty=[0, 1, 2]",
                "a command run by the library inherited more than stdio"
            );
            Outcome::Passed(format!(
                "control (sh started directly): fds {control:?}; CLI `run --rm`: {via_cli:?}; library `Runtime::command`: {line}"
            ))
        }
    }
);

/// A symlink target text holding an OSC title, an OSC 52 clipboard write and a
/// clear-screen: what another user puts where boxsock shows it to root.
const HOSTILE_TARGET: &str = "/x\x1b]0;PWNED\x07\x1b]52;c;ZWNobyBwd24=\x07\x1b[2J\x1b[H\u{9b}31m";

/// The terminal controls in `bytes`: C0 (but newline), DEL, C1, and bytes that are not
/// UTF-8 (a raw C1 byte among them).
fn controls(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    text.chars().filter(|&c| (c.is_control() && c != '\n') || c == '\u{fffd}').count()
}

/// Longest line of `bytes`.
fn longest_line(bytes: &[u8]) -> usize {
    bytes.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0)
}

/// Most bytes any line boxsock prints may take, whatever the input.
const LINE_MAX: usize = 1024;

scenario!(
    escape_sequences_never_reach_the_terminal,
    "Attacks",
    "`nobody` squats `<base>/boxsock-0` with a symlink whose target text holds an OSC title, an OSC 52 clipboard write, a clear-screen and a C1 CSI; root runs `run --rm -- true`, `sweep`, `ls`, `doctor`, and commands with a 5 000-byte `--home`, a 5 000-byte `--link-base`, and escape sequences in values clap rejects; control: the refusal formatted with the path's plain `Display`",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let squat = w.per_uid();
            let r = nobody::run(&[nobody::Act::Symlink(
                std::ffi::CString::new(HOSTILE_TARGET).unwrap(),
                cstr(&squat),
            )])
            .unwrap();
            assert_eq!(r, [0], "nobody could not squat");
            // Control: the path as the old messages showed it carries the sequences.
            let target = std::fs::read_link(&squat).unwrap();
            let naive = format!(
                "refusing insecure {}: it is a symlink to {}",
                squat.display(),
                target.display()
            );
            let control = controls(naive.as_bytes());
            assert!(
                naive.as_bytes().contains(&0x1b) && control > 0,
                "control: no ESC in the plain Display"
            );

            let home = w.layout.home();
            let long = PathBuf::from(format!("/{}", "h".repeat(4999)));
            let esc = "\x1b]0;PWNED\x07\x1b[2J";
            let runs: Vec<(String, Vec<String>)> = vec![
                (
                    "run --rm".into(),
                    ["--backend", "host", "run", "--rm", "--", "true"].map(String::from).to_vec(),
                ),
                ("sweep".into(), vec!["sweep".into()]),
                ("ls".into(), vec!["ls".into()]),
                ("doctor".into(), vec!["doctor".into()]),
                ("bad --lock-wait".into(), vec!["--lock-wait".into(), esc.into(), "ls".into()]),
                (
                    "bad --backend-option".into(),
                    vec!["--backend-option".into(), esc.into(), "ls".into()],
                ),
                ("bad --vcpus".into(), vec!["create".into(), "--vcpus".into(), esc.into()]),
                ("unknown verb".into(), vec![esc.into()]),
            ];
            let mut seen = Vec::new();
            let mut check = |what: &str, o: &Output| {
                for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
                    let n = controls(bytes);
                    assert_eq!(
                        n,
                        0,
                        "{what}: {n} control characters on {stream}: {:?}",
                        String::from_utf8_lossy(bytes)
                    );
                    assert!(
                        !bytes.contains(&0x1b) && !bytes.contains(&0x07),
                        "{what}: ESC/BEL on {stream}"
                    );
                    let longest = longest_line(bytes);
                    assert!(longest <= LINE_MAX, "{what}: a {longest}-byte line on {stream}");
                }
                seen.push(what.to_owned());
            };
            let mut saw_sweep_warning = false;
            for (what, args) in &runs {
                let o = cli(home, &w.base).args(args).output().unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                let out = String::from_utf8_lossy(&o.stdout);
                // The squat is reported where the runtime falls back (its warning) and by
                // `doctor` (the fallback record's note), the target escaped.
                saw_sweep_warning |= (err.contains("was refused") && err.contains("\\u{1b}"))
                    || (out.contains("was refused") && out.contains("\\u{1b}"));
                check(what, &o);
            }
            assert!(saw_sweep_warning, "the squat was never reported (escaped)");
            // 5 000-byte values of --home and --link-base are echoed bounded.
            let o = cli(&long, &w.base).arg("ls").output().unwrap();
            assert!(!o.status.success());
            check("5 000-byte --home", &o);
            let o = cli(home, &long)
                .args(["--backend", "host", "run", "--rm", "--", "true"])
                .output()
                .unwrap();
            assert!(!o.status.success());
            check("5 000-byte --link-base", &o);
            Outcome::Passed(format!(
                "control: {control} control characters (ESC, BEL) in the plain `Display`; boxsock printed 0 control characters and no line over {LINE_MAX} bytes in {} commands ({}), the squat reported escaped",
                seen.len(),
                seen.join(", ")
            ))
        })()
    }
);

scenario!(
    link_base_redirected_by_another_user_is_refused,
    "Attacks",
    "`nobody` makes `<base>/lb` a symlink to a root-owned directory (0755) and a directory of its own holding a root-owned `inner/`; root uses each as the link base through the CLI (`run --rm`) and the library (`ensure`); control: a naive open of `<base>/lb` that follows the link creates its directory in the one `nobody` chose; the base itself (root, 1777, like /tmp) stays accepted",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let chosen = w.root.path().join("chosen");
            std::fs::create_dir(&chosen).unwrap();
            let lb = w.base.join("lb");
            let theirs = w.attacker_dir("theirs");
            let inner = theirs.join("inner");
            std::fs::create_dir(&inner).unwrap();
            let r = nobody::run(&[nobody::Act::Symlink(cstr(&chosen), cstr(&lb))]).unwrap();
            assert_eq!(r, [0], "nobody could not make the link");

            // Control: a naive open follows the link into the chosen directory.
            let fd = nix::fcntl::open(
                &lb,
                nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap();
            nix::sys::stat::mkdirat(
                &fd,
                "naive-0",
                nix::sys::stat::Mode::from_bits_truncate(0o700),
            )
            .unwrap();
            drop(fd);
            assert!(
                chosen.join("naive-0").is_dir(),
                "control: the naive open did not land in the chosen directory"
            );
            std::fs::remove_dir(chosen.join("naive-0")).unwrap();

            let mut refused = Vec::new();
            for (what, base, owner_path) in [("symlink", &lb, &lb), ("ancestor", &inner, &theirs)] {
                let o = cli(w.layout.home(), base)
                    .args(["--backend", "host", "run", "--rm", "--", "true"])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                assert!(
                    !o.status.success(),
                    "{what}: root ran a box with the link base {base:?}: {err}"
                );
                assert!(
                    err.contains("65534") && err.contains(owner_path.to_str().unwrap()),
                    "{what}: the error does not name the owner and path: {err}"
                );
                assert_eq!(
                    std::fs::read_dir(&chosen).unwrap().count(),
                    0,
                    "{what}: root wrote into the chosen directory"
                );
                assert_eq!(
                    std::fs::read_dir(&inner).unwrap().count(),
                    0,
                    "{what}: root wrote under nobody's directory"
                );
                // The library: every strategy with a shared directory refuses it too.
                let config =
                    StrategyConfig { base_dir: base.to_path_buf(), ..StrategyConfig::default() };
                let s = boxsock::builtin_strategies().build("short-symlink", &config).unwrap();
                let id = w.new_box();
                match s.ensure(&w.layout, &id) {
                    Err(BindingError::Insecure { path, reason }) => {
                        assert_eq!(&path, owner_path, "{what}");
                        assert!(reason.contains("65534"), "{what}: {reason}");
                    }
                    other => panic!("{what}: ensure with link base {base:?}: {other:?}"),
                }
                refused.push(what);
            }
            assert_eq!(std::fs::read_dir(&chosen).unwrap().count(), 0);
            // The base itself (root-owned, 1777) stays accepted.
            let o = cli(w.layout.home(), &w.base)
                .args(["--backend", "host", "run", "--rm", "--", "true"])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "a root-owned sticky base was refused: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Outcome::Passed(format!(
                "control: the naive open created its directory in the one nobody chose; boxsock refused {} of 2 redirected link bases ({}) naming uid 65534 and the path, CLI and library, and wrote nothing; the root-owned 1777 base still works",
                refused.len(),
                refused.join(", ")
            ))
        })()
    }
);
