//! End-to-end tests of the real `boxsock-agent` binary: real sockets in temp
//! directories, real processes, and (as root) a real peer dropped to `nobody`.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use boxsock_core::SocketAddress;
use boxsock_core::proto::{self, ErrorCode, Frame, ProtoError, Request, Response};
use boxsock_runtime::agent_client::{self, AgentClient, AgentInfo, ClientError};
use boxsock_test_support::{Need, skip};

const AGENT: &str = env!("CARGO_BIN_EXE_boxsock-agent");
const LIMIT: Duration = Duration::from_secs(30);

/// A running agent on temp paths; killed and reaped on drop.
struct Running {
    child: Child,
    agent: SocketAddress,
    info: AgentInfo,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(extra: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let agent = SocketAddress::Path(dir.path().join("agent.sock"));
        let ready = SocketAddress::Path(dir.path().join("ready.sock"));
        let (child, info) = launch(&agent, &ready, extra).await;
        Running { child, agent, info, _dir: dir }
    }

    fn stream(&self) -> std::os::unix::net::UnixStream {
        std::os::unix::net::UnixStream::connect_addr(&self.agent.to_std().unwrap()).unwrap()
    }

    fn client(&self) -> AgentClient {
        AgentClient::connect(self.stream()).unwrap()
    }

    async fn raw(&self) -> tokio::net::UnixStream {
        let s = self.stream();
        s.set_nonblocking(true).unwrap();
        tokio::net::UnixStream::from_std(s).unwrap()
    }

    /// Wait (bounded) for the agent to exit and return its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bind the ready listener, start the agent, and wait for its readiness frame.
async fn launch(
    agent: &SocketAddress,
    ready: &SocketAddress,
    extra: &[&str],
) -> (Child, AgentInfo) {
    let listener = std::os::unix::net::UnixListener::bind_addr(&ready.to_std().unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let mut child = Command::new(AGENT)
        .args(["--agent", &agent.to_uri(), "--ready", &ready.to_uri()])
        .args(extra)
        // The agent's log goes to the test's stderr; quiet unless asked for.
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let accepted = tokio::time::timeout(LIMIT, listener.accept()).await;
    let Ok(Ok((mut s, _))) = accepted else {
        let _ = child.kill();
        panic!("no readiness from the agent: {:?}", child.wait());
    };
    let info =
        tokio::time::timeout(LIMIT, agent_client::read_ready(&mut s)).await.unwrap().unwrap();
    if let Some(p) = ready.as_path() {
        let _ = std::fs::remove_file(p);
    }
    (child, info)
}

async fn exec_collect(
    client: AgentClient,
    argv: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<(i32, Vec<u8>, Vec<u8>), ClientError> {
    let out = tokio::time::timeout(LIMIT, client.exec_output(argv, env, stdin))
        .await
        .expect("exec hung")?;
    Ok((out.status.shell_code(), out.stdout, out.stderr))
}

#[tokio::test]
async fn readiness_reports_the_real_pid_and_ping_works() {
    let a = Running::start(&[]).await;
    assert_eq!(a.info.version, proto::VERSION);
    assert_eq!(a.info.pid, a.child.id());
    let pong = a.client().ping().await.unwrap();
    assert_eq!(pong.pid, a.child.id());
}

#[tokio::test]
async fn exec_streams_stdout_stderr_and_exit_code() {
    let a = Running::start(&[]).await;
    let (code, out, err) =
        exec_collect(a.client(), &["sh", "-c", "echo out; echo err >&2; exit 3"], &[], None)
            .await
            .unwrap();
    assert_eq!(code, 3);
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");

    let (code, out, _) =
        exec_collect(a.client(), &["sh", "-c", "printf %s \"$FOO\""], &[("FOO", "b a r")], None)
            .await
            .unwrap();
    assert_eq!((code, &out[..]), (0, &b"b a r"[..]));
}

#[tokio::test]
async fn output_order_is_kept_within_each_stream() {
    let a = Running::start(&[]).await;
    let script = "i=0; while [ $i -lt 300 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done";
    let (code, out, err) =
        exec_collect(a.client(), &["sh", "-c", script], &[], None).await.unwrap();
    assert_eq!(code, 0);
    let want = |p: &str| (0..300).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert_eq!(String::from_utf8(out).unwrap(), want("o"));
    assert_eq!(String::from_utf8(err).unwrap(), want("e"));
}

#[tokio::test]
async fn stdin_round_trips_through_cat() {
    let a = Running::start(&[]).await;
    // Larger than one stdin frame and than a pipe buffer, so both directions stream.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (code, out, err) = exec_collect(a.client(), &["cat"], &[], Some(&input)).await.unwrap();
    assert_eq!(code, 0, "stderr: {}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), input.len());
    assert!(out == input);

    // Without stdin the command reads /dev/null: EOF at once.
    let (code, out, _) = exec_collect(a.client(), &["cat"], &[], None).await.unwrap();
    assert_eq!((code, out.len()), (0, 0));
}

#[tokio::test]
async fn killed_by_a_signal_reports_128_plus_n() {
    let a = Running::start(&[]).await;
    let (code, _, _) =
        exec_collect(a.client(), &["sh", "-c", "kill -KILL $$"], &[], None).await.unwrap();
    assert_eq!(code, 128 + 9);
    let (code, _, _) =
        exec_collect(a.client(), &["sh", "-c", "kill -TERM $$"], &[], None).await.unwrap();
    assert_eq!(code, 128 + 15);
}

#[tokio::test]
async fn bad_requests_and_spawn_failures_are_errors_naming_things() {
    let a = Running::start(&[]).await;
    let empty: [&str; 0] = [];
    match exec_collect(a.client(), &empty, &[], None).await {
        Err(ClientError::Agent { code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("empty argv"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match exec_collect(a.client(), &["boxsock-no-such-program-x"], &[], None).await {
        Err(ClientError::Agent { code: ErrorCode::NotFound, message }) => {
            assert!(message.contains("boxsock-no-such-program-x"), "{message}");
            assert!(message.to_lowercase().contains("no such file"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    a.client().ping().await.unwrap();
}

/// Send `bytes` (after an optional hello), half-close, and return every frame the
/// agent sends until it closes.
async fn send_raw(a: &Running, hello_first: bool, bytes: &[u8]) -> Vec<Frame<Response>> {
    use tokio::io::AsyncWriteExt;
    let mut s = a.raw().await;
    if hello_first {
        proto::write_frame(&mut s, &Frame::Control(Request::Hello { version: proto::VERSION }))
            .await
            .unwrap();
    }
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(LIMIT, proto::read_frame::<Response, _>(&mut s))
            .await
            .expect("agent hung")
        {
            Ok(f) => got.push(f),
            Err(ProtoError::Closed) => return got,
            Err(e) => panic!("reading the agent's answer: {e}"),
        }
    }
}

fn frame_bytes(len: u32, tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.push(tag);
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn bad_frames_get_an_error_frame_and_the_agent_keeps_serving() {
    let a = Running::start(&[]).await;
    let bad_json = b"{\"type\":\"ping\"";
    let unknown = b"{\"type\":\"hello\",\"version\":1,\"bogus\":1}";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", vec![0, 0, 0, 0]),
        ("oversized length", ((proto::MAX_FRAME as u32) + 1).to_be_bytes().to_vec()),
        ("bad tag", frame_bytes(1, 9, &[])),
        ("bad json", frame_bytes(bad_json.len() as u32 + 1, 1, bad_json)),
        ("unknown field", frame_bytes(unknown.len() as u32 + 1, 1, unknown)),
        ("truncated mid-frame", frame_bytes(100, 1, b"{\"type\"")),
    ];
    for hello_first in [false, true] {
        for (what, bytes) in &cases {
            let frames = send_raw(&a, hello_first, bytes).await;
            let errors: Vec<_> = frames
                .iter()
                .filter(|f| {
                    matches!(f, Frame::Control(Response::Error { code: ErrorCode::BadFrame, .. }))
                })
                .collect();
            assert_eq!(errors.len(), 1, "{what} (hello first: {hello_first}): {frames:?}");
            assert!(
                matches!(frames.last(), Some(Frame::Control(Response::Error { .. }))),
                "{what}: {frames:?}"
            );
            // The next good connection is served.
            a.client().ping().await.unwrap_or_else(|e| panic!("after {what}: {e}"));
        }
    }
    // A request frame that is not a hello, or a second hello, is a bad request.
    let ping = proto::encode(&Frame::Control(Request::Ping {}));
    let frames = send_raw(&a, false, &ping).await;
    assert!(
        matches!(
            &frames[..],
            [Frame::Control(Response::Error { code: ErrorCode::BadRequest, .. })]
        ),
        "{frames:?}"
    );
    let hello = proto::encode(&Frame::Control(Request::Hello { version: proto::VERSION }));
    let frames = send_raw(&a, true, &hello).await;
    assert!(
        matches!(
            &frames[..],
            [
                Frame::Control(Response::Hello { .. }),
                Frame::Control(Response::Error { code: ErrorCode::BadRequest, .. })
            ]
        ),
        "{frames:?}"
    );
    assert!(a.child.id() > 0);
    a.client().ping().await.unwrap();
}

#[tokio::test]
async fn a_bad_frame_during_exec_kills_the_command() {
    use tokio::io::AsyncWriteExt;
    let a = Running::start(&[]).await;
    let mut s = a.raw().await;
    proto::write_frame(&mut s, &Frame::Control(Request::Hello { version: proto::VERSION }))
        .await
        .unwrap();
    let exec = Request::Exec {
        argv: vec!["sh".into(), "-c".into(), "echo $$; exec cat".into()],
        env: vec![],
        stdin: true,
        cwd: None,
        tty: false,
        winsize: None,
        user: None,
        rlimits: vec![],
    };
    proto::write_frame(&mut s, &Frame::Control(exec)).await.unwrap();
    assert!(matches!(
        proto::read_frame::<Response, _>(&mut s).await.unwrap(),
        Frame::Control(Response::Hello { .. })
    ));
    let pid = match proto::read_frame::<Response, _>(&mut s).await.unwrap() {
        Frame::Stdout(b) => String::from_utf8(b).unwrap().trim().parse::<i32>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(alive(pid));
    s.write_all(&frame_bytes(1, 77, &[])).await.unwrap();
    match tokio::time::timeout(LIMIT, proto::read_frame::<Response, _>(&mut s)).await.unwrap() {
        Ok(Frame::Control(Response::Error { code: ErrorCode::BadFrame, .. })) => {}
        other => panic!("{other:?}"),
    }
    wait_gone(pid);
    a.client().ping().await.unwrap();
}

#[tokio::test]
async fn a_client_that_goes_away_gets_its_command_killed() {
    let a = Running::start(&[]).await;
    let mut s = a.raw().await;
    proto::write_frame(&mut s, &Frame::Control(Request::Hello { version: proto::VERSION }))
        .await
        .unwrap();
    let exec = Request::Exec {
        argv: vec!["sh".into(), "-c".into(), "echo $$; exec sleep 1000".into()],
        env: vec![],
        stdin: false,
        cwd: None,
        tty: false,
        winsize: None,
        user: None,
        rlimits: vec![],
    };
    proto::write_frame(&mut s, &Frame::Control(exec)).await.unwrap();
    let _hello = proto::read_frame::<Response, _>(&mut s).await.unwrap();
    let pid = match proto::read_frame::<Response, _>(&mut s).await.unwrap() {
        Frame::Stdout(b) => String::from_utf8(b).unwrap().trim().parse::<i32>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(alive(pid));
    drop(s);
    wait_gone(pid);
}

#[tokio::test]
async fn version_mismatch_is_refused_with_a_version_error() {
    let a = Running::start(&[]).await;
    let mut s = a.raw().await;
    proto::write_frame(&mut s, &Frame::Control(Request::Hello { version: proto::VERSION + 41 }))
        .await
        .unwrap();
    match proto::read_frame::<Response, _>(&mut s).await.unwrap() {
        Frame::Control(Response::Error { code: ErrorCode::Version, message }) => {
            assert!(message.contains(&(proto::VERSION + 41).to_string()), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(proto::read_frame::<Response, _>(&mut s).await, Err(ProtoError::Closed)));
    a.client().ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_execs() {
    let a = Running::start(&[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let client = a.client();
        tasks.spawn(async move {
            let arg = format!("echo {i}; echo e{i} >&2; exit {}", i % 7);
            let (code, out, err) =
                exec_collect(client, &["sh", "-c", &arg], &[], None).await.unwrap();
            assert_eq!(code, i % 7);
            assert_eq!(out, format!("{i}\n").into_bytes());
            assert_eq!(err, format!("e{i}\n").into_bytes());
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (dead, not yet reaped by whoever inherited it) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) {
    let deadline = std::time::Instant::now() + LIMIT;
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_commands_removes_the_socket_and_exits_0() {
    let mut a = Running::start(&[]).await;
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let long = a.client();
    let running = tokio::spawn(async move {
        long.exec(
            &["sh", "-c", "echo $$; exec sleep 1000"],
            &[],
            None::<&[u8]>,
            move |b| {
                let _ = pid_tx.send(String::from_utf8_lossy(b).trim().parse::<i32>().unwrap());
            },
            |_| {},
        )
        .await
    });
    let pid =
        tokio::task::spawn_blocking(move || pid_rx.recv_timeout(LIMIT).unwrap()).await.unwrap();
    assert!(alive(pid));

    a.client().shutdown().await.unwrap();
    let st = a.wait_exit();
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!alive(a.child.id() as i32));
    wait_gone(pid);
    // The exec's connection ended without an exit frame (or with the kill's 137).
    match tokio::time::timeout(LIMIT, running).await.unwrap().unwrap() {
        Ok(code) => assert_eq!(code, 137),
        Err(ClientError::Proto(ProtoError::Closed | ProtoError::Truncated | ProtoError::Io(_))) => {
        }
        Err(e) => panic!("{e}"),
    }
    assert!(!a.agent.as_path().unwrap().exists(), "agent socket left behind");
}

#[tokio::test]
async fn sigterm_is_a_graceful_shutdown() {
    let mut a = Running::start(&[]).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(a.wait_exit().code(), Some(0));
    assert!(!a.agent.as_path().unwrap().exists());
}

/// Run the agent binary expecting it to fail; return its stderr.
fn run_failing(args: &[&str]) -> String {
    let out = Command::new(AGENT).args(args).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    // Log lines may precede it; the error itself is one line, the last.
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("boxsock-agent: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "{err}");
    errors[0].to_owned()
}

#[test]
fn cannot_bind_or_notify_exits_1_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/agent.sock");
    let ready = dir.path().join("ready.sock");
    let err = run_failing(&[
        "--agent",
        &format!("unix://{}", missing.display()),
        "--ready",
        &format!("unix://{}", ready.display()),
    ]);
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let agent = dir.path().join("agent.sock");
    let err = run_failing(&[
        "--agent",
        &format!("unix://{}", agent.display()),
        "--ready",
        &format!("unix://{}", ready.display()),
    ]);
    assert!(err.contains(&ready.display().to_string()) && err.contains("readiness"), "{err}");
    assert!(!agent.exists(), "the agent left its socket behind after failing");

    let err = run_failing(&["--agent", "vsock://1024", "--ready", "unix:///x", "--allow-uid", "0"]);
    assert!(err.contains("vsock://1024") && err.contains("no peer credentials"), "{err}");
    let err = run_failing(&["--agent", "vsock://0", "--ready", "unix:///x"]);
    assert!(err.contains("vsock://0") && err.contains("port 0"), "{err}");
    let err = run_failing(&["--agent", "unix://relative", "--ready", "unix:///x"]);
    assert!(err.contains("unix://relative"), "{err}");
}

#[test]
fn address_parsing() {
    use boxsock_agent::{AgentAddress, AgentError, VsockAddress, parse_address};
    assert_eq!(
        parse_address("unix:///a/b").unwrap(),
        AgentAddress::Unix(SocketAddress::Path(PathBuf::from("/a/b")))
    );
    assert_eq!(
        parse_address("abstract:x").unwrap(),
        AgentAddress::Unix(SocketAddress::Abstract(b"x".to_vec()))
    );
    assert_eq!(
        parse_address("vsock://5").unwrap(),
        AgentAddress::Vsock(VsockAddress { cid: None, port: 5 })
    );
    assert_eq!(
        parse_address("vsock://2:1025").unwrap(),
        AgentAddress::Vsock(VsockAddress { cid: Some(2), port: 1025 })
    );
    assert!(matches!(parse_address("vsock://0"), Err(AgentError::Address { .. })));
    assert!(matches!(parse_address("vsock://x"), Err(AgentError::Address { .. })));
    assert!(matches!(parse_address("tcp://x"), Err(AgentError::Address { .. })));
}

// ---- other users (root only): a real peer dropped to `nobody` ----

const NOBODY: u32 = 65534;
const HELPER_ENV: &str = "BOXSOCK_AGENT_TEST_NOBODY";

/// Start this test binary again as `nobody`, running [`nobody_helper`] in `mode`: a
/// copy in a directory `nobody` can search, so that where the checkout lives (CI
/// clones under any folder, perhaps one only root can enter) does not matter.
fn spawn_as_nobody(mode: &str, address: &SocketAddress) -> Child {
    let (_copy_dir, copy) = exe_for_nobody();
    let mut cmd = Command::new(copy);
    cmd.args(["--exact", "nobody_helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, format!("{mode} {}", address.to_uri()))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
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
    // ETXTBSY: another test's fork may briefly hold the copy's write descriptor.
    for _ in 0..50 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.unwrap(),
        }
    }
    cmd.spawn().unwrap()
}

/// Not a test on its own: the body of the `nobody` peer, run in a child process.
/// `connect ADDR`: dial the agent, send a hello and print what came back.
/// `listen ADDR`: listen on ADDR and print what the agent sent, if it connects.
#[test]
fn nobody_helper() {
    let Ok(spec) = std::env::var(HELPER_ENV) else { return };
    let (mode, uri) = spec.split_once(' ').unwrap();
    let addr = SocketAddress::from_uri(uri).unwrap();
    let mut line = format!("uid={} ", nix::unistd::geteuid());
    match mode {
        "connect" => {
            let mut s =
                std::os::unix::net::UnixStream::connect_addr(&addr.to_std().unwrap()).unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            let _ = s.write_all(&proto::encode(&Frame::Control(Request::Hello {
                version: proto::VERSION,
            })));
            let mut buf = Vec::new();
            let r = s.read_to_end(&mut buf);
            line += &format!("answer-bytes={} read={:?}", buf.len(), r.map_err(|e| e.kind()));
        }
        "listen" => {
            let l = std::os::unix::net::UnixListener::bind_addr(&addr.to_std().unwrap()).unwrap();
            println!("LISTENING");
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            line += &format!("got-bytes={}", buf.len());
        }
        m => panic!("unknown mode {m}"),
    }
    println!("RESULT {line}");
}

/// A copy of this test binary that `nobody` can execute, in a root-owned 0755 directory
/// under the temp dir (removed with the guard; the running copy keeps its inode).
fn exe_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("boxsock-agent-test-exe-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("agent-test");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in copy.ancestors() {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by others (mode {:o})",
            p.display(),
            mode & 0o7777
        );
    }
    (dir, copy)
}

fn helper_result(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "helper failed: {out:?}");
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result in {stdout}"))
        .to_owned()
}

fn unique_abstract(what: &str) -> SocketAddress {
    let n: u64 = rand_u64();
    SocketAddress::Abstract(
        format!("boxsock-agent-test-{}-{n:016x}-{what}", std::process::id()).into_bytes(),
    )
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    u64::from_ne_bytes(b)
}

#[tokio::test]
async fn root_abstract_with_allow_uid_refuses_a_peer_running_as_nobody() {
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, format!("needs root to run a peer as uid {NOBODY}"));
        return;
    }
    let me = nix::unistd::geteuid().as_raw().to_string();
    let agent = unique_abstract("agent");
    let ready = unique_abstract("ready");
    let (child, _info) = launch(&agent, &ready, &["--allow-uid", &me]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Running { child, agent: agent.clone(), info: _info, _dir: dir };

    // The owner is served.
    a.client().ping().await.unwrap();
    // `nobody` connects (abstract names have no permissions) but gets no answer.
    let r = tokio::task::spawn_blocking(move || helper_result(spawn_as_nobody("connect", &agent)))
        .await
        .unwrap();
    assert!(r.starts_with(&format!("uid={NOBODY} ")), "{r}");
    assert!(r.contains("answer-bytes=0"), "nobody got an answer: {r}");
    // The agent is still serving its owner.
    a.client().ping().await.unwrap();
    a.client().shutdown().await.unwrap();
    assert_eq!(a.wait_exit().code(), Some(0));
}

#[tokio::test]
async fn root_abstract_ready_listener_of_another_uid_is_not_notified() {
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, format!("needs root to run a listener as uid {NOBODY}"));
        return;
    }
    let agent = unique_abstract("agent");
    let ready = unique_abstract("ready");
    let ready2 = ready.clone();
    let mut squatter = spawn_as_nobody("listen", &ready);
    // Wait until the squatter listens.
    let out = squatter.stdout.take().unwrap();
    let mut out = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(out);
        let mut line = String::new();
        while !line.contains("LISTENING") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the squatter did not start listening");
        }
        out
    })
    .await
    .unwrap();
    let me = nix::unistd::geteuid().as_raw().to_string();
    let res = Command::new(AGENT)
        .args(["--agent", &agent.to_uri(), "--ready", &ready2.to_uri(), "--allow-uid", &me])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1), "{res:?}");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains(&ready2.display_string()) && err.contains(&format!("uid {NOBODY}")),
        "{err}"
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let _ = squatter.wait();
    assert!(rest.contains("got-bytes=0"), "the squatter received the readiness frame: {rest}");
}

#[tokio::test]
async fn background_processes_do_not_hang_exec_and_die_at_shutdown() {
    let mut a = Running::start(&[]).await;
    // Detached output: the exec ends as soon as the shell does.
    let (code, out, _) =
        exec_collect(a.client(), &["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"], &[], None)
            .await
            .unwrap();
    assert_eq!(code, 0);
    let detached: i32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
    // Inherited stdout: the pipe stays open, the exec still ends (after the grace).
    let (code, out, _) =
        exec_collect(a.client(), &["sh", "-c", "sleep 1000 & echo $!; exit 4"], &[], None)
            .await
            .unwrap();
    assert_eq!(code, 4);
    let holding: i32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
    assert!(alive(detached) && alive(holding), "background processes outlive their exec");

    a.client().shutdown().await.unwrap();
    assert_eq!(a.wait_exit().code(), Some(0));
    wait_gone(detached);
    wait_gone(holding);
}

/// Read exec events until `pred` holds on the stdout seen so far (bounded).
async fn read_until(
    r: &mut agent_client::ExecReader,
    seen: &mut Vec<u8>,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !pred(&String::from_utf8_lossy(seen)) {
        match tokio::time::timeout_at(deadline, r.next())
            .await
            .expect("timed out waiting for output")
            .unwrap()
        {
            agent_client::ExecEvent::Stdout(b) | agent_client::ExecEvent::Stderr(b) => {
                seen.extend(b)
            }
            agent_client::ExecEvent::Exit(e) => {
                panic!("exited early ({e:?}): {}", String::from_utf8_lossy(seen))
            }
        }
    }
}

async fn read_exit(r: &mut agent_client::ExecReader) -> agent_client::ExitReport {
    loop {
        match tokio::time::timeout(LIMIT, r.next()).await.expect("no exit").unwrap() {
            agent_client::ExecEvent::Exit(e) => return e,
            _ => continue,
        }
    }
}

fn tty_request(argv: &[&str], rows: u16, cols: u16) -> agent_client::ExecRequest {
    agent_client::ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: true,
        tty: Some(proto::WinSize { rows, cols }),
        ..Default::default()
    }
}

#[tokio::test]
async fn tty_exec_runs_on_a_pty_of_the_asked_size_and_resizes() {
    let a = Running::start(&[]).await;
    let (mut w, mut r) =
        a.client().start_exec(tty_request(&["/bin/sh", "-i"], 31, 97)).await.unwrap();
    let mut seen = Vec::new();
    // An interactive shell on a terminal prints a prompt.
    read_until(&mut r, &mut seen, |s| s.contains("# ") || s.contains("$ ")).await;
    w.stdin(b"tty; stty size; echo round-$((40+2))\n").await.unwrap();
    read_until(&mut r, &mut seen, |s| s.contains("round-42")).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.contains("/dev/pts/"), "not on a pty: {text}");
    assert!(text.contains("31 97"), "initial size not applied: {text}");
    w.resize(proto::WinSize { rows: 12, cols: 34 }).await.unwrap();
    w.stdin(b"stty size; echo done-$((1+1))\n").await.unwrap();
    read_until(&mut r, &mut seen, |s| s.contains("12 34") && s.contains("done-2")).await;
    w.stdin(b"exit 3\n").await.unwrap();
    assert_eq!(read_exit(&mut r).await, agent_client::ExitReport { code: 3, signal: None });
}

#[tokio::test]
async fn ctrl_c_typed_into_the_tty_interrupts_the_foreground_command() {
    let a = Running::start(&[]).await;
    let (mut w, mut r) =
        a.client().start_exec(tty_request(&["sleep", "30"], 24, 80)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    w.stdin(b"\x03").await.unwrap();
    let exit = read_exit(&mut r).await;
    assert_eq!(exit, agent_client::ExitReport { code: 130, signal: Some(libc::SIGINT) });
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn signal_frames_reach_the_command_with_and_without_a_tty() {
    let a = Running::start(&[]).await;
    for tty in [false, true] {
        let mut req = tty_request(&["sleep", "30"], 24, 80);
        if !tty {
            req.tty = None;
        }
        let (mut w, mut r) = a.client().start_exec(req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.signal(libc::SIGTERM).await.unwrap();
        assert_eq!(
            read_exit(&mut r).await,
            agent_client::ExitReport { code: 143, signal: Some(libc::SIGTERM) },
            "tty {tty}"
        );
    }
    // A number that is no signal is refused by name, and the command is killed.
    let (mut w, mut r) =
        a.client().start_exec(tty_request(&["sleep", "30"], 24, 80)).await.unwrap();
    w.signal(999).await.unwrap();
    match tokio::time::timeout(LIMIT, r.next()).await.unwrap() {
        Err(ClientError::Agent { code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("999"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cwd_is_applied_and_spawn_errors_say_not_found_or_permission_denied() {
    let a = Running::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let req = agent_client::ExecRequest {
        argv: vec!["pwd".into()],
        cwd: Some(dir.path().display().to_string()),
        ..Default::default()
    };
    let (_w, mut r) = a.client().start_exec(req).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut r, &mut seen, |s| s.ends_with('\n')).await;
    assert_eq!(String::from_utf8_lossy(&seen).trim(), dir.path().display().to_string());

    let kind = |argv: Vec<String>, cwd: Option<String>| async {
        let req = agent_client::ExecRequest { argv, cwd, ..Default::default() };
        match a.client().start_exec(req).await.unwrap().1.next().await {
            Err(ClientError::Agent { code, message }) => (code, message),
            other => panic!("{other:?}"),
        }
    };
    let (code, msg) = kind(vec!["no-such-command-here".into()], None).await;
    assert_eq!(code, ErrorCode::NotFound, "{msg}");
    assert!(msg.contains("no-such-command-here"), "{msg}");
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    // Root ignores permission bits when reading, not when executing a file without x.
    let (code, msg) = kind(vec![script.display().to_string()], None).await;
    assert_eq!(code, ErrorCode::PermissionDenied, "{msg}");
    let (code, msg) = kind(vec!["true".into()], Some("/no/such/dir".into())).await;
    assert_eq!(code, ErrorCode::NotFound, "{msg}");
    assert!(msg.contains("/no/such/dir"), "{msg}");
    let (code, msg) = kind(vec!["true".into()], Some("relative".into())).await;
    assert_eq!(code, ErrorCode::BadRequest, "{msg}");
}

/// A version-1 client (the hello it sends) gets a version error naming both versions.
#[tokio::test]
async fn a_v1_client_is_refused_naming_both_versions() {
    let a = Running::start(&[]).await;
    let mut s = a.raw().await;
    proto::write_frame(&mut s, &Frame::Control(Request::Hello { version: 1 })).await.unwrap();
    match proto::read_frame::<Response, _>(&mut s).await.unwrap() {
        Frame::Control(Response::Error { code: ErrorCode::Version, message }) => {
            assert_eq!(message, "agent speaks protocol version 2, the client speaks version 1")
        }
        other => panic!("{other:?}"),
    }
}

/// A client that goes away from a tty exec takes the terminal's foreground job with
/// it, not only the shell (job control puts it in a group of its own).
#[tokio::test]
async fn a_tty_client_that_goes_away_gets_the_foreground_job_killed() {
    let a = Running::start(&[]).await;
    let (mut w, mut r) =
        a.client().start_exec(tty_request(&["/bin/sh", "-i"], 24, 80)).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut r, &mut seen, |s| s.contains("# ") || s.contains("$ ")).await;
    // The job ignores SIGHUP, so only an explicit kill of its group ends it.
    w.stdin(b"sh -c 'trap \"\" HUP; echo pid=$$=; exec sleep 1000'\n").await.unwrap();
    // The echo of the typed line shows `pid=$$=`; the job's own line a number.
    let pid_in = |s: &str| {
        s.split("pid=").skip(1).find_map(|rest| rest.split('=').next()?.parse::<i32>().ok())
    };
    read_until(&mut r, &mut seen, |s| pid_in(s).is_some()).await;
    let pid = pid_in(&String::from_utf8_lossy(&seen)).unwrap();
    assert!(alive(pid));
    drop((w, r));
    wait_gone(pid);
}

// ---- inherited descriptors (`--agent-fd`, `--ready-fd`: the host backend's way) ----

/// `cmd` with each `(source, target)` descriptor placed at `target` (inherited), as the
/// host backend hands the listener and the ready channel.
fn with_fds(cmd: &mut Command, fds: Vec<(std::os::fd::RawFd, std::os::fd::RawFd)>) {
    // SAFETY: between fork and exec the closure only calls fcntl(2) and dup2(2), which
    // are async-signal-safe, on a Vec allocated before the fork; the sources stay open
    // in the parent until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first (close-on-exec copies above every target), so that
            // placing one cannot overwrite another's source.
            let mut moved = [0; 8];
            for (i, (src, _)) in fds.iter().enumerate() {
                moved[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 20);
                if moved[i] == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in fds.iter().enumerate() {
                if libc::dup2(moved[i], *target) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The agent started with `fds` placed, and `args`: its exit status and stderr.
fn agent_with_fds(
    fds: Vec<(std::os::fd::RawFd, std::os::fd::RawFd)>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(AGENT);
    cmd.args(args).stdin(Stdio::null()).env("RUST_LOG", "warn");
    with_fds(&mut cmd, fds);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || tx.send(child.wait_with_output()).unwrap());
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the agent did not exit with {args:?}")
        })
        .unwrap()
}

#[tokio::test]
async fn an_inherited_listener_is_served_with_the_peer_policy_and_readiness_goes_on_the_channel() {
    use std::os::fd::AsRawFd;
    let me = nix::unistd::geteuid().as_raw();
    let agent = unique_abstract("agent");
    let listener = std::os::unix::net::UnixListener::bind_addr(&agent.to_std().unwrap()).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut cmd = Command::new(AGENT);
    cmd.args(["--agent-fd", "3", "--ready-fd", "4", "--allow-uid", &me.to_string()])
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    with_fds(&mut cmd, vec![(listener.as_raw_fd(), 3), (theirs.as_raw_fd(), 4)]);
    let child = cmd.spawn().unwrap();
    // The agent holds the only other end and its own copy of the listener.
    drop((theirs, listener));
    ours.set_nonblocking(true).unwrap();
    let mut ours = tokio::net::UnixStream::from_std(ours).unwrap();
    let info =
        tokio::time::timeout(LIMIT, agent_client::read_ready(&mut ours)).await.unwrap().unwrap();
    assert_eq!(info.pid, child.id());
    let mut a = Running { child, agent: agent.clone(), info, _dir: tempfile::tempdir().unwrap() };
    a.client().ping().await.unwrap();
    // The agent took the listener over (listen(2) again): a client's peer is the agent,
    // not the process that bound it (this test), so the runtime's pid check holds.
    let cred = boxsock_core::peer::peer_cred(std::os::fd::AsFd::as_fd(&a.stream())).unwrap();
    assert_eq!(cred.pid as u32, a.child.id(), "the listener's credentials are still its binder's");
    if nix::unistd::geteuid().is_root() {
        // The listener the agent did not bind is checked as one it binds: `nobody`
        // connects (abstract names have no permissions) and gets no answer.
        let r =
            tokio::task::spawn_blocking(move || helper_result(spawn_as_nobody("connect", &agent)))
                .await
                .unwrap();
        assert!(r.starts_with(&format!("uid={NOBODY} ")), "{r}");
        assert!(
            r.contains("answer-bytes=0"),
            "nobody got an answer from the inherited listener: {r}"
        );
        a.client().ping().await.unwrap();
    } else {
        skip(Need::Root, format!("needs root to run a peer as uid {NOBODY}"));
    }
    a.client().shutdown().await.unwrap();
    assert_eq!(a.wait_exit().code(), Some(0));
}

#[test]
fn an_inherited_descriptor_that_is_not_the_right_socket_is_refused_naming_it() {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pair_a, _pair_b) = std::os::unix::net::UnixStream::pair().unwrap();
    let dgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let listening = std::os::unix::net::UnixListener::bind(dir.path().join("l.sock")).unwrap();
    let (ready, _ready_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let dir_fd = std::fs::File::open(dir.path()).unwrap();
    let fd = |f: &dyn AsRawFd| f.as_raw_fd();
    let args = ["--agent-fd", "3", "--ready-fd", "4"];
    // (what, descriptors placed, arguments, the error's start)
    type Case<'a> = (&'a str, Vec<(i32, i32)>, &'a [&'a str], &'a str);
    let cases: Vec<Case> = vec![
        (
            "a character device",
            vec![(fd(&null), 3), (fd(&ready), 4)],
            &args,
            "descriptor 3 (--agent-fd) cannot be used: it is a character device, not a socket",
        ),
        (
            "a directory",
            vec![(fd(&dir_fd), 3), (fd(&ready), 4)],
            &args,
            "descriptor 3 (--agent-fd) cannot be used: it is a directory",
        ),
        (
            "not listening",
            vec![(fd(&pair_a), 3), (fd(&ready), 4)],
            &args,
            "descriptor 3 (--agent-fd) cannot be used: it is a Unix stream socket that is not listening",
        ),
        (
            "a datagram socket",
            vec![(fd(&dgram), 3), (fd(&ready), 4)],
            &args,
            "descriptor 3 (--agent-fd) cannot be used: it is a datagram socket",
        ),
        (
            "not open",
            vec![(fd(&ready), 4)],
            &args,
            "descriptor 3 (--agent-fd) cannot be used: it is not open",
        ),
        (
            "ready listening",
            vec![(fd(&listening), 3), (fd(&listening), 4)],
            &args,
            "descriptor 4 (--ready-fd) cannot be used: it is a listening socket, not a connected one",
        ),
        (
            "the same descriptor twice",
            vec![(fd(&listening), 3)],
            &["--agent-fd", "3", "--ready-fd", "3"],
            "descriptor 3 (--agent-fd and --ready-fd) cannot be used: one descriptor cannot be both",
        ),
        (
            "stdio",
            vec![(fd(&ready), 4)],
            &["--agent-fd", "1", "--ready-fd", "4"],
            "descriptor 1 (--agent-fd) cannot be used: descriptors 0, 1 and 2 are stdio",
        ),
    ];
    for (what, fds, args, expected) in cases {
        let out = agent_with_fds(fds, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        let line = err.lines().rfind(|l| l.starts_with("boxsock-agent: ")).unwrap_or_default();
        assert!(line.starts_with(&format!("boxsock-agent: {expected}")), "{what}: {err}");
    }
    // An address and a descriptor for one socket: refused by the command line.
    let out =
        agent_with_fds(vec![], &["--agent", "abstract:x", "--agent-fd", "3", "--ready-fd", "4"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// An exec with a user runs as that user (the agent runs as root here, as in CI); one
/// whose user does not resolve is refused naming it, and nothing runs. The agent has
/// no box root here: names resolve against the host's /etc/passwd.
#[tokio::test]
async fn an_exec_runs_as_its_user_and_an_unknown_user_runs_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        boxsock_test_support::skip(boxsock_test_support::Need::Root, "setuid needs root");
        return;
    }
    let a = Running::start(&[]).await;
    let out = tokio::time::timeout(
        LIMIT,
        a.client().with_user(Some("65534:65534".into())).exec_output(
            &["sh", "-c", "id -u; id -G"],
            &[],
            None,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n65534\n");

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let req = agent_client::ExecRequest {
        argv: vec!["touch".into(), marker.display().to_string()],
        user: Some("no-such-user-here".into()),
        ..Default::default()
    };
    match a.client().start_exec(req).await.unwrap().1.next().await {
        Err(ClientError::Agent { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest, "{message}");
            assert!(message.contains("no user named \"no-such-user-here\""), "{message}");
            assert!(message.contains("/etc/passwd"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists(), "the command ran");
}

/// `rlimits`: set in the command before exec (its own `ulimit -n`, soft and hard);
/// without them the command has the agent's; an unknown resource or a soft limit above
/// its hard one is refused before anything runs, naming it.
#[tokio::test]
async fn resource_limits_are_the_commands() {
    let a = Running::start(&[]).await;
    let limits = |soft, hard| {
        vec![boxsock_core::proto::Rlimit { resource: "RLIMIT_NOFILE".into(), soft, hard }]
    };
    let run = |rlimits: Vec<boxsock_core::proto::Rlimit>| async {
        let req = agent_client::ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "ulimit -Sn; ulimit -Hn".into()],
            rlimits,
            ..Default::default()
        };
        let (_w, mut r) = a.client().start_exec(req).await.unwrap();
        let mut seen = Vec::new();
        read_until(&mut r, &mut seen, |s| s.lines().count() >= 2).await;
        String::from_utf8_lossy(&seen).into_owned()
    };
    assert_eq!(run(limits(321, 654)).await, "321\n654\n");
    let own = {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one `rlimit` through the pointer, a live local.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
        l
    };
    assert_eq!(run(vec![]).await, format!("{}\n{}\n", own.rlim_cur, own.rlim_max));
    let refused = |rlimits: Vec<boxsock_core::proto::Rlimit>| async {
        let req =
            agent_client::ExecRequest { argv: vec!["true".into()], rlimits, ..Default::default() };
        match a.client().start_exec(req).await.unwrap().1.next().await {
            Err(ClientError::Agent { code, message }) => (code, message),
            other => panic!("{other:?}"),
        }
    };
    let (code, msg) = refused(limits(10, 5)).await;
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("soft 10 is above hard 5"), "{msg}");
    let bogus = vec![boxsock_core::proto::Rlimit { resource: "RLIMIT_X".into(), soft: 1, hard: 1 }];
    let (code, msg) = refused(bogus).await;
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("\"RLIMIT_X\": not a resource"), "{msg}");
}
