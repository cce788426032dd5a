//! Bad input: ids, names, homes, store rows, protocol frames.

use std::sync::Arc;

use boxsock_conformance::util::ByFile;
use boxsock_core::id::IdErrorReason;
use boxsock_core::{BoxId, BoxLayout};
use boxsock_tests::reliability::Outcome;
use boxsock_tests::scenario;

scenario!(
    hostile_box_ids_are_refused_with_their_reason,
    "Bad input",
    "parse ids that try to escape or confuse the home: `..`, `../../etc`, `a/b`, NUL, newline, non-ASCII, 33 bytes, empty",
    {
        let cases: &[(&str, IdErrorReason)] = &[
            ("..", IdErrorReason::LeadingDot),
            ("../../etc", IdErrorReason::Slash),
            ("a/b", IdErrorReason::Slash),
            ("a\0b", IdErrorReason::Nul),
            ("a\nb", IdErrorReason::Whitespace),
            ("bøx", IdErrorReason::NonAscii),
            ("", IdErrorReason::Empty),
        ];
        let mut seen = Vec::new();
        for (input, reason) in cases {
            let err = BoxId::parse(input).expect_err(input);
            assert_eq!(err.reason, *reason, "{input:?}");
            assert!(err.to_string().contains("invalid box id"), "{err}");
            seen.push(format!("{:?}", err.reason));
        }
        let long = "a".repeat(BoxId::MAX_LEN + 1);
        assert_eq!(BoxId::parse(&long).unwrap_err().reason, IdErrorReason::TooLong);
        // Every id that is accepted is a single component below <home>/boxes.
        let l = BoxLayout::new("/h");
        for ok in ["a", "a.b", "A-_9", &"z".repeat(BoxId::MAX_LEN)] {
            let id = BoxId::parse(ok).unwrap();
            assert_eq!(l.box_dir(&id).parent(), Some(l.boxes_dir().as_path()));
        }
        Outcome::Passed(format!(
            "each refused with its reason ({}, TooLong); accepted ids stay one component under <home>/boxes",
            seen.join(", ")
        ))
    }
);

// ---------------------------------------------------------------------------------------
// Homes: every registered strategy, against homes of every awkward kind.

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_core::registry::StrategyRegistration;
use boxsock_core::{BindingError, SocketBinding, StrategyConfig, boxdir};

use crate::attacks::{entries, variant};

/// A private root in /tmp (0755) with `<root>/base` (1777) for the link base.
fn root_and_base() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::Builder::new().prefix("bsk-in-").tempdir_in("/tmp").expect("temp dir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = root.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
    (root, base)
}

/// Checks that a refusal names what it is about, and returns its variant.
fn refusal(strategy: &str, e: &BindingError) -> &'static str {
    let msg = e.to_string();
    match e {
        BindingError::PathTooLong { socket, path, len, limit } => {
            assert!(len + 1 > *limit, "{strategy}: PathTooLong for an address that fits: {msg}");
            assert_eq!(path.len(), *len, "{strategy}: {msg}");
            assert!(
                msg.contains(socket.as_str())
                    && msg.contains(&len.to_string())
                    && msg.contains(&limit.to_string()),
                "{msg}"
            );
        }
        BindingError::Io { address, .. } => {
            assert!(
                msg.contains(&address.to_string()),
                "{strategy}: {msg} does not name {address}"
            );
        }
        BindingError::MissingSocketDir { path, .. } | BindingError::Insecure { path, .. } => {
            let last =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            assert!(msg.contains(&last), "{strategy}: {msg} does not name {last:?}");
        }
        _ => assert!(!msg.is_empty(), "{strategy}: an empty message"),
    }
    variant(e)
}

/// One strategy against the home of `layout` (which must exist): create a box, ensure,
/// bind `agent.sock`, connect, a byte each way, release, remove the box. Returns
/// "works" or "refused: <variant>" (after checking the refusal names its problem).
fn try_strategy(reg: &StrategyRegistration, base: &Path, layout: &BoxLayout) -> String {
    let name = reg.name;
    let config = StrategyConfig { base_dir: base.to_owned(), ..StrategyConfig::default() };
    let s = match (reg.build)(&config) {
        Ok(s) => s,
        Err(e) => return format!("refused at build: {}", refusal(name, &e)),
    };
    let id = BoxId::generate();
    let dirs = boxdir::create_box_dirs(layout, &id);
    let out = match round_trip(&s, layout, &id) {
        Ok(()) => {
            assert!(
                dirs.is_ok(),
                "{name}: works although the box directories could not be made: {dirs:?}"
            );
            "works".to_owned()
        }
        Err(e) => format!("refused: {}", refusal(name, &e)),
    };
    s.release(layout, &id).unwrap_or_else(|e| panic!("{name}: release: {e}"));
    if dirs.is_ok() {
        boxdir::remove_box_dir(layout, &id).unwrap();
    }
    if let Some(d) = s.binding_dir() {
        assert_eq!(
            entries(&d),
            Vec::<String>::new(),
            "{name}: release left something in {}",
            d.display()
        );
    }
    out
}

fn round_trip(
    s: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
) -> Result<(), BindingError> {
    s.ensure(layout, id)?;
    let l = s.bind_stream(layout, id, "agent.sock")?;
    let mut c = s.connect_stream(layout, id, "agent.sock")?;
    let (mut a, _) = l.accept_once()?;
    c.write_all(b"?").unwrap();
    let mut b = [0u8; 1];
    a.read_exact(&mut b).unwrap();
    a.write_all(b"!").unwrap();
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"!");
    Ok(())
}

/// Every registered strategy against `layout`; also checks that nothing appeared in
/// `watch` (the directory holding the home and the base) besides what was there.
fn all_strategies(base: &Path, layout: &BoxLayout, watch: &Path) -> String {
    let before = entries(watch);
    let reg = boxsock::builtin_strategies();
    let mut out = Vec::new();
    for n in reg.names() {
        let r = reg.get(n).unwrap();
        out.push(format!("{n}: {}", try_strategy(r, base, layout)));
    }
    assert_eq!(entries(watch), before, "something was written beside the home and the base");
    out.join(", ")
}

/// Create a directory path of exactly `len` bytes under `root` (components of at most
/// 200 bytes).
fn home_of_len(root: &Path, len: usize) -> PathBuf {
    let mut p = root.join("L");
    let mut tail = len.checked_sub(p.as_os_str().len()).expect("root too long");
    let mut i = 0;
    while tail > 0 {
        // "/" + name; never leave a lone "/".
        let take = if tail > 201 { if tail - 201 == 1 { 199 } else { 200 } } else { tail - 1 };
        assert!(take > 0, "cannot split");
        p.push(format!("{}", (b'a' + (i % 26) as u8) as char).repeat(take));
        tail -= take + 1;
        i += 1;
    }
    assert_eq!(p.as_os_str().len(), len);
    std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create a home of {len} bytes: {e}"));
    p
}

scenario!(
    homes_of_every_length_up_to_path_max,
    "Bad input",
    "homes of 20, 60, 90, 200, 1024, 3968 and 4095 (PATH_MAX - 1) bytes: every registered strategy creates a box, ensures, binds `agent.sock`, connects and exchanges a byte",
    {
        let (root, base) = root_and_base();
        let mut lines = Vec::new();
        for len in [20usize, 60, 90, 200, 1024, 3968, libc::PATH_MAX as usize - 1] {
            let layout = if len <= root.path().as_os_str().len() + 2 {
                // Shorter than the private root allows: a short home directly in /tmp.
                let d = tempfile::Builder::new().prefix("h").tempdir_in("/tmp").unwrap();
                let p = d.keep();
                let short = PathBuf::from(format!(
                    "{}{}",
                    p.display(),
                    "x".repeat(len.saturating_sub(p.as_os_str().len()))
                ));
                std::fs::rename(&p, &short).unwrap();
                assert_eq!(short.as_os_str().len(), len);
                BoxLayout::new(short)
            } else {
                BoxLayout::new(home_of_len(root.path(), len))
            };
            let r = all_strategies(&base, &layout, root.path());
            if !layout.home().starts_with(root.path()) {
                std::fs::remove_dir_all(layout.home()).unwrap();
            }
            lines.push(format!("{len} bytes: {r}"));
        }
        let text = lines.join("; ");
        // What must hold whatever the numbers: short-symlink and abstract fit every home
        // whose box directories can exist; direct fits only short homes.
        assert!(
            lines[0].contains("direct: works") && lines[0].contains("short-symlink: works"),
            "{text}"
        );
        assert!(
            lines[5].contains("short-symlink: works") && lines[5].contains("abstract: works"),
            "{text}"
        );
        assert!(lines[5].contains("direct: refused: PathTooLong"), "{text}");
        Outcome::Passed(text)
    }
);

/// A home named `name` under a fresh root, with every strategy. The home is short, so
/// every registered strategy must work there: an odd byte in a name is no reason to refuse.
fn named_home(name: &[u8]) -> String {
    let (root, base) = root_and_base();
    let home = root.path().join(OsStr::from_bytes(name));
    std::fs::create_dir(&home).unwrap();
    let text = all_strategies(&base, &BoxLayout::new(home), root.path());
    for builtin in boxsock::builtin_strategies().names() {
        assert!(
            text.contains(&format!("{builtin}: works")),
            "{builtin} must work in a home named {:?}: {text}",
            String::from_utf8_lossy(name)
        );
    }
    text
}

scenario!(
    home_with_spaces,
    "Bad input",
    "a home named `my  box home ` (spaces, a trailing one too): every registered strategy round-trips a stream",
    { Outcome::Passed(named_home(b"my  box home ")) }
);

scenario!(
    home_with_newline,
    "Bad input",
    "a home whose name holds a newline and a tab: every registered strategy round-trips a stream",
    { Outcome::Passed(named_home(b"line\nbreak\there")) }
);

scenario!(
    home_with_non_utf8_bytes,
    "Bad input",
    "a home whose name holds the bytes 0xff 0xfe (not UTF-8): every registered strategy round-trips a stream",
    { Outcome::Passed(named_home(b"bad-\xff\xfe-utf8")) }
);

scenario!(
    home_through_a_symlink,
    "Bad input",
    "the home is given as a symlink to the real directory: every registered strategy round-trips a stream, and the box is reachable through the real path too",
    {
        let (root, base) = root_and_base();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let r = all_strategies(&base, &BoxLayout::new(&link), root.path());
        // ensure through the link and then through the real path: the same box.
        let reg = boxsock::builtin_strategies();
        for n in reg.names() {
            let s = reg
                .build(n, &StrategyConfig { base_dir: base.clone(), ..StrategyConfig::default() })
                .unwrap();
            let id = BoxId::generate();
            let (via_link, via_real) = (BoxLayout::new(&link), BoxLayout::new(&real));
            boxdir::create_box_dirs(&via_link, &id).unwrap();
            s.ensure(&via_link, &id).unwrap();
            s.ensure(&via_real, &id).unwrap_or_else(|e| {
                panic!("{n}: ensure through the real path after the link: {e}")
            });
            s.release(&via_real, &id).unwrap();
            boxdir::remove_box_dir(&via_real, &id).unwrap();
        }
        Outcome::Passed(format!(
            "{r}; ensure through the link and then the real path agree for every strategy"
        ))
    }
);

/// `../` enough times to reach `/` from the current directory.
fn up_to_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let depth = cwd.components().count() - 1;
    PathBuf::from("../".repeat(depth))
}

scenario!(
    home_relative,
    "Bad input",
    "a relative home (`../../…/tmp/<root>/rel-home`, resolved against the test's working directory, without chdir): every registered strategy round-trips a stream, and nothing is written in the working directory",
    {
        let (root, base) = root_and_base();
        let abs = root.path().join("rel-home");
        std::fs::create_dir(&abs).unwrap();
        let rel = up_to_root().join(abs.strip_prefix("/").unwrap());
        assert!(rel.is_relative());
        let cwd = std::env::current_dir().unwrap();
        let before = entries(&cwd);
        let r = all_strategies(&base, &BoxLayout::new(&rel), root.path());
        assert_eq!(entries(&cwd), before, "something was written in the working directory");
        Outcome::Passed(r)
    }
);

const ONE_BYTE_CHILD: &str = "BOXSOCK_HOSTILE_ONE_BYTE_BASE";

scenario!(
    home_of_one_byte,
    "Bad input",
    "the home is `h` (1 byte, relative), in a re-executed test process whose working directory is a fresh temp dir: every registered strategy round-trips a stream; nothing appears beside `h` and the base",
    {
        if let Some(base) = std::env::var_os(ONE_BYTE_CHILD) {
            // The child: cwd is the private root, which holds `h` and `base`.
            let r = all_strategies(Path::new(&base), &BoxLayout::new("h"), Path::new("."));
            println!("HOSTILE-RESULT:{r}");
            Outcome::Passed(r)
        } else {
            let (root, base) = root_and_base();
            std::fs::create_dir(root.path().join("h")).unwrap();
            let records = tempfile::tempdir().unwrap();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["input::home_of_one_byte", "--exact", "--nocapture", "--test-threads=1"])
                .env(ONE_BYTE_CHILD, &base)
                .env("BOXSOCK_RELIABILITY_DIR", records.path())
                .current_dir(root.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the one-byte-home child hung");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            assert!(status.success(), "child failed: {status}\n{out}");
            let r = out
                .lines()
                .find_map(|l| l.split_once("HOSTILE-RESULT:").map(|(_, r)| r))
                .unwrap_or_else(|| panic!("no result from the child:\n{out}"))
                .to_owned();
            assert_eq!(
                entries(root.path()),
                ["base", "h"],
                "something was written beside the home and the base"
            );
            Outcome::Passed(r)
        }
    }
);

// ---------------------------------------------------------------------------------------
// Protocol frames (the fuzzing is elsewhere; this is the end-to-end sanity check).

use boxsock_core::proto::{self, ErrorCode, Frame, Request, Response};

fn frame_bytes(len: u32, tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = len.to_be_bytes().to_vec();
    b.push(tag);
    b.extend_from_slice(body);
    b
}

fn control(body: &[u8]) -> Vec<u8> {
    frame_bytes(body.len() as u32 + 1, 1, body)
}

/// Send `bytes` on a fresh connection, half-close if asked (a half-close during an exec
/// means the client went away), and decode every response frame until the agent
/// closes (bounded by a 10 s read timeout).
fn exchange(
    s: &Arc<dyn SocketBinding>,
    l: &BoxLayout,
    id: &BoxId,
    bytes: &[u8],
    half_close: bool,
) -> Vec<Response> {
    let mut c = s.connect_stream(l, id, "agent.sock").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The agent may close before reading everything: a failed write is part of the answer.
    let _ = c.write_all(bytes);
    if half_close {
        let _ = c.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((f, used))) = proto::decode::<Response>(&buf[at..]) {
        if let Frame::Control(r) = f {
            out.push(r);
        }
        at += used;
    }
    assert_eq!(at, buf.len(), "the agent sent bytes that are not frames: {:?}", &buf[at..]);
    out
}

scenario!(
    hostile_frames_cost_only_their_connection,
    "Bad input",
    "the real agent on `agent.sock` (strategy `direct`) gets, each on its own connection: an unknown tag, length 0, length MAX_FRAME+1, malformed JSON, an unknown field, an exec before hello, a frame cut short, 64 bytes of garbage; meanwhile a half-sent frame is held open; then a client pings",
    {
        let w = crate::attacks::World::new();
        let s = w.strategy("direct");
        let id = w.new_box();
        s.ensure(&w.layout, &id).unwrap();
        let _agent = crate::attacks::ServedAgent::start(&s, &w.layout, &id);
        let hello = proto::encode(&Frame::Control(Request::Hello { version: proto::VERSION }));
        let exec = proto::encode(&Frame::Control(Request::Exec {
            argv: vec!["/bin/true".into()],
            env: vec![],
            stdin: false,
            cwd: None,
            tty: false,
            winsize: None,
            user: None,
            rlimits: vec![],
        }));
        let garbage: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(0xa5)).collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown tag", frame_bytes(1, 9, &[])),
            ("length 0", frame_bytes(0, 1, &[])),
            ("length MAX_FRAME+1", frame_bytes(proto::MAX_FRAME as u32 + 1, 1, &[])),
            ("malformed JSON", control(b"{\"type\":\"hello\",")),
            ("unknown field", control(b"{\"type\":\"hello\",\"version\":1,\"evil\":true}")),
            ("exec before hello", exec.clone()),
            ("cut short", frame_bytes(100, 1, b"{\"type\"")),
            ("garbage", garbage),
        ];
        // A client that sends half a frame and then just sits there.
        let mut slow = s.connect_stream(&w.layout, &id, "agent.sock").unwrap();
        slow.write_all(&hello[..3]).unwrap();
        let mut seen = Vec::new();
        for (what, bytes) in &cases {
            let r = exchange(&s, &w.layout, &id, bytes, true);
            match r.as_slice() {
                [Response::Error { code, message }] => {
                    assert!(!message.is_empty(), "{what}: an error without a message");
                    assert!(
                        matches!(code, ErrorCode::BadFrame | ErrorCode::BadRequest),
                        "{what}: {code:?}"
                    );
                    seen.push(format!("{what} → {code:?}"));
                }
                other => panic!("{what}: expected exactly one error frame, got {other:?}"),
            }
        }
        // Hello + ping on a new connection: still served, by the same agent.
        let mut ping = hello.clone();
        ping.extend(proto::encode(&Frame::Control(Request::Ping {})));
        let r = exchange(&s, &w.layout, &id, &ping, true);
        assert!(
            matches!(r.as_slice(), [Response::Hello { .. }, Response::Pong {}]),
            "after the hostile frames: {r:?}"
        );
        // And an exec still runs.
        let mut run = hello.clone();
        run.extend(exec);
        let r = exchange(&s, &w.layout, &id, &run, false);
        assert!(
            matches!(r.last(), Some(Response::Exit { code: 0, .. })),
            "exec after the hostile frames: {r:?}"
        );
        drop(slow);
        Outcome::Passed(format!(
            "each got one error frame and its connection closed ({}); with a half-sent frame held open, hello+ping got Pong and an exec exited 0",
            seen.join(", ")
        ))
    }
);

// ---------------------------------------------------------------------------------------
// Store rows, written with plain SQL into the real SQLite file.

use boxsock::{BoxState, CreateOptions, Runtime, RuntimeError};
use boxsock_runtime::store::{SCHEMA_VERSION, StoreError};

use crate::attacks::{World, exec_code, rt_options, tokio_rt};

/// A bad row: id, state, config JSON, pid, start time, and what its error must name.
type BadRowSpec<'a> = (&'a str, &'a str, &'a str, Option<i64>, Option<i64>, &'a str);

/// Insert a row with plain SQL (every column given; `config` verbatim).
fn insert_row(
    db: &rusqlite::Connection,
    id: &str,
    state: &str,
    config: &str,
    pid: Option<i64>,
    start: Option<i64>,
) {
    db.execute(
        "INSERT INTO boxes (id, name, state, config, pid, start_time, exit_code, created_at_ms, updated_at_ms) VALUES (?1, NULL, ?2, ?3, ?4, ?5, NULL, 1, 1)",
        rusqlite::params![id, state, config, pid, start],
    )
    .unwrap();
}

scenario!(
    corrupt_store_rows_are_named_and_isolated,
    "Bad input",
    "beside a good box, rows are inserted with plain SQL: truncated config JSON, config missing `backend`, config with a mistyped field, unknown fields (legacy `ready_socket_path`, a future knob), an unknown state, a pid without start time, an id `../../etc`; then the runtime is reopened, lists, starts, execs and removes",
    {
        let w = World::new();
        let tokio = tokio_rt();
        let text = tokio.block_on(async {
            let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
            let good = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap().id.to_string();
            rt.close();
            let db = rusqlite::Connection::open(w.layout.store_path()).unwrap();
            let cfg = r#"{"strategy":"short-symlink","backend":"host"}"#;
            let bad: &[BadRowSpec<'_>] = &[
                ("truncjson", "created", r#"{"strategy":"short-symlink","back"#, None, None, "config JSON"),
                ("nobackend", "created", r#"{"strategy":"short-symlink"}"#, None, None, "backend"),
                ("mistyped", "created", r#"{"strategy":"short-symlink","backend":"host","network":"yes"}"#, None, None, "expected a boolean"),
                ("badstate", "exploded", cfg, None, None, "exploded"),
                ("halfpid", "running", cfg, Some(1), None, "start time"),
                ("../../etc", "created", cfg, None, None, "invalid box id"),
            ];
            for (id, state, config, pid, start, _) in bad {
                insert_row(&db, id, state, config, *pid, *start);
            }
            let legacy = "legacyrow";
            insert_row(&db, legacy, "created", r#"{"strategy":"short-symlink","backend":"host","ready_socket_path":"/very/long/stale/ready.sock","transport":"unix","future_knob":7}"#, None, None);
            drop(db);
            // Rows with a valid id get their directory, as a real box would have.
            for id in ["truncjson", "nobackend", "mistyped", "badstate", "halfpid", legacy] {
                boxdir::create_box_dirs(&w.layout, &BoxId::parse(id).unwrap()).unwrap();
            }
            let outside = entries(w.root.path());

            let (rt, report) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
            let mut reported: Vec<String> = report.corrupt_rows.iter().map(|b| b.id.clone()).collect();
            reported.sort();
            let mut expected: Vec<String> = bad.iter().map(|b| b.0.to_owned()).collect();
            expected.sort();
            assert_eq!(reported, expected, "open should report exactly the corrupt rows");
            let listing = rt.list().unwrap();
            let mut listed: Vec<String> = listing.boxes.iter().map(|b| b.id.to_string()).collect();
            listed.sort();
            let mut want = vec![good.clone(), legacy.to_owned()];
            want.sort();
            assert_eq!(listed, want, "list must still show the good boxes");
            for (id, _, _, _, _, names) in bad {
                let row = listing.bad.iter().find(|b| b.id == *id).unwrap_or_else(|| panic!("{id} not listed as bad"));
                assert!(row.error.contains(names), "{id}: {:?} should name {names:?}", row.error);
                // Using it by id is an error naming the row, not a panic or a wrong box.
                match rt.start(id).await {
                    Err(RuntimeError::Store(StoreError::Corrupt { id: got, .. })) => assert_eq!(got, *id),
                    other => panic!("{id}: start of a corrupt row: {other:?}"),
                }
                match rt.remove(id, false).await {
                    Err(RuntimeError::Store(StoreError::Corrupt { id: got, reason })) => {
                        assert_eq!(got, *id);
                        let msg = RuntimeError::Store(StoreError::Corrupt { id: got, reason }).to_string();
                        assert!(msg.contains(id), "{msg}");
                    }
                    other => panic!("{id}: rm of a corrupt row: {other:?}"),
                }
            }
            // The good box and the legacy row work.
            for id in [good.as_str(), legacy] {
                let r = rt.start(id).await.unwrap_or_else(|e| panic!("start {id}: {e}"));
                assert_eq!(r.state, BoxState::Running);
                assert_eq!(exec_code(&rt, id, &["true"]).await.unwrap(), 0, "{id}");
                rt.remove(id, true).await.unwrap();
            }
            // rm -f removes each corrupt row, and nothing outside the home.
            for (id, ..) in bad {
                assert_eq!(rt.remove(id, true).await.unwrap(), *id);
            }
            let listing = rt.list().unwrap();
            assert!(listing.boxes.is_empty() && listing.bad.is_empty(), "{listing:?}");
            assert_eq!(entries(&w.layout.boxes_dir()), Vec::<String>::new(), "box directories left behind");
            assert_eq!(entries(w.root.path()), outside, "something changed beside the home");
            let per_uid = w.per_uid();
            assert_eq!(entries(&per_uid), Vec::<String>::new(), "links left behind");
            let kinds: Vec<String> = listing_kinds(bad);
            format!(
                "open and list reported each bad row by id ({}) and skipped it; start and rm of each failed with Store(Corrupt) naming the row; the good box and the row with unknown/legacy fields loaded, started, ran `true` and were removed; rm -f removed every bad row, nothing left in <home>/boxes or the link directory",
                kinds.join(", ")
            )
        });
        Outcome::Passed(text)
    }
);

fn listing_kinds(bad: &[BadRowSpec<'_>]) -> Vec<String> {
    bad.iter().map(|b| format!("{}: names {:?}", b.0, b.5)).collect()
}

scenario!(
    future_schema_is_refused_untouched,
    "Bad input",
    "a store whose `PRAGMA user_version` is one past what this build knows (set with plain SQL after creating a box): the runtime opens it",
    {
        let w = World::new();
        let tokio = tokio_rt();
        tokio.block_on(async {
            let (rt, _) = Runtime::open(w.layout.home(), rt_options(&w)).await.unwrap();
            rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
            rt.close();
        });
        let future = SCHEMA_VERSION + 1;
        {
            let db = rusqlite::Connection::open(w.layout.store_path()).unwrap();
            // Fold the WAL in so the file alone is the whole store, then bump the version.
            db.execute_batch(&format!("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA user_version = {future}; PRAGMA wal_checkpoint(TRUNCATE);")).unwrap();
        }
        let before = std::fs::read(w.layout.store_path()).unwrap();
        let err = tokio
            .block_on(Runtime::open(w.layout.home(), rt_options(&w)))
            .map(drop)
            .expect_err("a future schema must be refused");
        match &err {
            RuntimeError::Store(StoreError::FutureSchema { path, found, supported }) => {
                assert_eq!(
                    (path, *found, *supported),
                    (&w.layout.store_path(), future, SCHEMA_VERSION)
                );
            }
            other => panic!("expected FutureSchema, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&future.to_string())
                && msg.contains(&SCHEMA_VERSION.to_string())
                && msg.contains("boxsock.db"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read(w.layout.store_path()).unwrap(),
            before,
            "the store file was modified"
        );
        let v: i64 = rusqlite::Connection::open(w.layout.store_path())
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, future);
        Outcome::Passed(format!(
            "open refused: Store(FutureSchema) naming <home>/boxsock.db, version {future} and the supported {SCHEMA_VERSION}; the file's bytes and user_version are unchanged"
        ))
    }
);
