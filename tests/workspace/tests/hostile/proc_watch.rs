//! Issue 18.1: another user reads box socket names from `/proc` and binds them first.
//!
//! A watcher running as uid 65534 reads every process's `cmdline` and `environ` over and
//! over, and binds every boxsock abstract name it finds (`boxsock/<uid>/<hex>`) as fast as
//! it can. Against it: 50 starts of a box on the `host` backend with the `abstract`
//! strategy, and, interleaved in the same run, 50 launches of a naive agent the old way
//! (`boxsock-agent --agent abstract:<name> …`: the agent binds a name its argv shows).

use boxsock_conformance::util::ByFile;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boxsock::{CreateOptions, Runtime};
use boxsock_core::SocketAddress;
use boxsock_tests::reliability::{Outcome, measured};
use boxsock_tests::scenario;

use crate::attacks::{
    NEED_ROOT, NOBODY, World, agent_dir, exec_code, is_root, rt_options, tokio_rt,
};

/// Set (to anything) in the watcher's environment: [`proc_watcher_child`] runs only then.
const WATCH_ENV: &str = "BOXSOCK_TEST_PROC_WATCHER";

/// Starts of the real box, and launches of the naive agent.
const TRIALS: usize = 50;

/// How long after the watcher first sees a process it keeps reading its argv and
/// environment (longer than any start takes from fork to exec here, contended or not).
const YOUNG: Duration = Duration::from_secs(2);

/// The prefix of every name the `abstract` strategy derives (`boxsock/<uid>/<hex>`).
const PREFIX: &[u8] = b"boxsock/";

/// The boxsock abstract names in `bytes` (an argv or environment, NUL-separated):
/// `boxsock/<digits>/<hex>`, alone or inside a longer string (`abstract:boxsock/…`).
fn names_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(PREFIX.len()).position(|w| w == PREFIX) {
        let start = i + at;
        let end = bytes[start..]
            .iter()
            .position(|b| *b == 0 || b.is_ascii_whitespace())
            .map_or(bytes.len(), |e| start + e);
        let name = &bytes[start..end];
        let rest = &name[PREFIX.len()..];
        let well_formed = rest.split(|b| *b == b'/').collect::<Vec<_>>().as_slice().len() == 2
            && rest.iter().all(|b| b.is_ascii_hexdigit() || *b == b'/')
            && rest.len() > 8;
        if well_formed {
            out.push(name.to_vec());
        }
        i = end.max(start + 1);
    }
    out
}

/// Not a test on its own: the watcher, run as uid 65534 by
/// [`abstract_names_are_never_readable_from_proc`] (a copy of this binary, re-executed).
/// Until its stdin closes it reads `/proc/*/cmdline` and `/proc/*/environ`, binds
/// every boxsock abstract name it has not tried yet and keeps the listener; then prints
/// what it did.
#[test]
#[ignore = "run as uid 65534 by abstract_names_are_never_readable_from_proc"]
fn proc_watcher_child() {
    if std::env::var_os(WATCH_ENV).is_none() {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::SeqCst);
        });
    }
    let uid = nix::unistd::geteuid().as_raw();
    println!("WATCHING uid={uid}");
    let _ = std::io::stdout().flush();
    let mut tried: HashSet<Vec<u8>> = HashSet::new();
    let mut held: Vec<UnixListener> = Vec::new();
    let (mut passes, mut read, mut denied) = (0u64, 0u64, 0u64);
    let mut agents: HashSet<u32> = HashSet::new();
    let mut bound_lines = Vec::new();
    // Like a patient attacker, it watches new processes: a process is read on every
    // pass for its first moments (a fork shows its parent's argv until it execs), then
    // left alone, so a pass costs a directory listing and the young processes.
    let mut first_seen: std::collections::HashMap<u32, Instant> = std::collections::HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        passes += 1;
        let Ok(dir) = std::fs::read_dir("/proc") else { continue };
        let now = Instant::now();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // What runs before the watcher's first pass is old already.
            let seen = if passes == 1 { now.checked_sub(YOUNG * 2).unwrap_or(now) } else { now };
            if now.duration_since(*first_seen.entry(pid).or_insert(seen)) > YOUNG {
                continue;
            }
            for what in ["cmdline", "environ"] {
                let bytes = match std::fs::read(format!("/proc/{pid}/{what}")) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        denied += 1;
                        continue;
                    }
                    Err(_) => continue,
                };
                read += 1;
                if what == "cmdline" && bytes.windows(13).any(|w| w == b"boxsock-agent") {
                    agents.insert(pid);
                }
                for name in names_in(&bytes) {
                    if !tried.insert(name.clone()) {
                        continue;
                    }
                    let bound = SocketAddr::from_abstract_name(&name)
                        .and_then(|a| UnixListener::bind_addr(&a));
                    if let Ok(l) = bound {
                        bound_lines.push(format!(
                            "BOUND {} from {what} of pid {pid}",
                            String::from_utf8_lossy(&name)
                        ));
                        held.push(l);
                    }
                }
            }
        }
    }
    for l in &bound_lines {
        println!("{l}");
    }
    println!(
        "WATCHED passes={passes} read={read} denied={denied} agents={} names={} bound={}",
        agents.len(),
        tried.len(),
        held.len()
    );
}

/// A copy of this test binary that `nobody` can execute, in a root-owned 0755 directory
/// (where the checkout lives may be closed to others).
fn exe_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("boxsock-proc-watch-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("hostile");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

/// The watcher, running as `nobody`, and the lines it prints.
struct Watcher {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    _exe: tempfile::TempDir,
}

impl Watcher {
    fn start() -> Watcher {
        let (exe_dir, exe) = exe_for_nobody();
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "proc_watch::proc_watcher_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WATCH_ENV, "1")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec the closure only makes raw system calls
        // (setgroups, setgid, setuid), which are async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start the watcher as nobody");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // The test harness prints its own lines first.
        // The test harness prints its own lines first, and `test … ... ` without a newline.
        let first = loop {
            let l = rx.recv_timeout(Duration::from_secs(60)).expect("the watcher did not start");
            if let Some(at) = l.find("WATCHING ") {
                break l[at..].to_owned();
            }
        };
        assert_eq!(first, format!("WATCHING uid={NOBODY}"), "the watcher is not nobody");
        Watcher { child, lines: rx, _exe: exe_dir }
    }

    /// Stop it and return what it printed (its `BOUND` lines and its summary).
    fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let mut lines = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(60)) {
            lines.push(l);
        }
        let _ = self.child.wait();
        lines
    }
}

/// What became of one naive agent.
#[derive(Debug, PartialEq, Eq)]
enum Naive {
    /// It could not bind its name: the watcher held it (`EADDRINUSE`).
    Defeated,
    /// It bound its name and reported ready.
    Served,
    /// Anything else, described.
    Other(String),
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Launch the agent as the host backend did before issue 18.1: its abstract name in
/// its argv, bound by the agent itself.
fn naive_agent(agent_bin: &std::path::Path) -> Naive {
    let uid = nix::unistd::geteuid().as_raw();
    let name = format!("boxsock/{uid}/{}", random_hex(16));
    // The ready name is the test's, bound before the launch (the old runtime's part);
    // not of the strategy's form, so the watcher leaves it alone.
    let ready = format!("bsk-naive-ready-{}", random_hex(8));
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(ready.as_bytes()).unwrap())
            .unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut child = Command::new(agent_bin)
        .args(["--agent", &format!("abstract:{name}"), "--ready", &format!("abstract:{ready}")])
        .args(["--allow-uid", &uid.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        if listener.accept().is_ok() {
            break Naive::Served;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            if st.code() == Some(1) && err.contains("Address already in use") {
                break Naive::Defeated;
            }
            break Naive::Other(format!("{st}: {}", err.trim()));
        }
        if Instant::now() > deadline {
            break Naive::Other("neither ready nor exited in 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

scenario!(
    abstract_names_are_never_readable_from_proc,
    "Attacks",
    "a watcher running as `nobody` reads every new process's `/proc/<pid>/cmdline` and `environ` in a loop (for its first 2 s) and binds every boxsock abstract name (`boxsock/<uid>/<hex>`) it finds; meanwhile 50 starts (then an exec and a stop) of one box on the `host` backend with the `abstract` strategy; control, interleaved in the same run: 50 launches of the agent the old way (`boxsock-agent --agent abstract:<name> --ready …`, the agent binding the name its argv shows), which must be defeated at least once",
    {
        (|| -> Outcome {
            if !is_root() {
                return Outcome::Skipped(NEED_ROOT.into());
            }
            let w = World::new();
            let agent_bin = agent_dir().join("boxsock-agent");
            let watcher = Watcher::start();
            let rt_tokio = tokio_rt();
            let (rt, _) =
                rt_tokio.block_on(Runtime::open(w.layout.home(), rt_options(&w))).unwrap();
            let b = rt_tokio.block_on(rt.create(CreateOptions::new("abstract", "host"))).unwrap();
            let id = b.id.to_string();
            let strategy = rt.strategy("abstract").unwrap();
            let (mut started, mut naive) = (0usize, Vec::new());
            let mut failures = Vec::new();
            let mut real_names: Vec<Vec<u8>> = Vec::new();
            for _ in 0..TRIALS {
                naive.push(naive_agent(&agent_bin));
                match rt_tokio.block_on(rt.start(&id)) {
                    Ok(_) => {
                        if let Ok(SocketAddress::Abstract(n)) =
                            strategy.address(&w.layout, &b.id, "agent.sock")
                        {
                            real_names.push(n);
                        }
                        match rt_tokio.block_on(exec_code(&rt, &id, &["true"])) {
                            Ok(0) => started += 1,
                            other => failures.push(format!("exec after start: {other:?}")),
                        }
                        rt_tokio.block_on(rt.stop(&id, None)).unwrap();
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            let _ = rt_tokio.block_on(rt.remove(&id, true));
            let lines = watcher.finish();
            let summary =
                lines.iter().find(|l| l.starts_with("WATCHED ")).cloned().unwrap_or_default();
            let field = |k: &str| -> u64 {
                summary
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("no {k} in the watcher's summary {summary:?} ({lines:?})")
                    })
            };
            let bound: Vec<&String> = lines.iter().filter(|l| l.starts_with("BOUND ")).collect();
            let hit_real = bound
                .iter()
                .filter(|l| real_names.iter().any(|n| l.contains(&*String::from_utf8_lossy(n))))
                .count();
            let defeated = naive.iter().filter(|n| **n == Naive::Defeated).count();
            let served = naive.iter().filter(|n| **n == Naive::Served).count();
            let other: Vec<&Naive> =
                naive.iter().filter(|n| matches!(n, Naive::Other(_))).collect();
            assert!(
                other.is_empty(),
                "naive agents that neither served nor lost their name: {other:?}"
            );
            assert!(
                defeated >= 1,
                "control: the watcher never defeated the naive agent in {TRIALS} launches ({summary})"
            );
            assert_eq!(hit_real, 0, "the watcher bound a name of the real box: {bound:?}");
            assert!(
                failures.is_empty(),
                "{} of {TRIALS} starts failed; the first: {}",
                failures.len(),
                boxsock_core::echo::echo(
                    failures.first().map_or("", |f| f.lines().next().unwrap_or_default())
                )
            );
            assert_eq!(started, TRIALS);
            Outcome::Passed(format!(
                "{started} of {TRIALS} starts worked (each then ran `true`); the watcher read the argv of ⟨{}⟩ `boxsock-agent` processes (⟨{}⟩ files in ⟨{}⟩ passes over /proc, ⟨{}⟩ environments of root's processes refused to it) and bound ⟨{}⟩ names, none of the real box's; control: it defeated the naive agent {} of {TRIALS} times (`Address already in use`), ⟨{served}⟩ served",
                field("agents"),
                field("read"),
                field("passes"),
                field("denied"),
                field("bound"),
                measured(defeated),
            ))
        })()
    }
);

#[test]
fn names_are_found_in_an_argv_and_an_environment() {
    let argv = b"boxsock-agent\0--agent\0abstract:boxsock/0/0123456789abcdef\0--ready\0abstract:boxsock/0/fedcba9876543210\0";
    assert_eq!(
        names_in(argv),
        [b"boxsock/0/0123456789abcdef".to_vec(), b"boxsock/0/fedcba9876543210".to_vec()]
    );
    assert_eq!(names_in(b"X=boxsock/65534/abcdef0123\0"), [b"boxsock/65534/abcdef0123".to_vec()]);
    assert!(names_in(b"/work/target/debug/boxsock-agent\0--agent-fd\x003\0").is_empty());
    assert!(names_in(b"/home/boxsock/boxes/x\0").is_empty());
}
