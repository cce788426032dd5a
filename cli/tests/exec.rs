//! The exec builder (`Runtime::command`) through the library, on real boxes of the
//! `host` backend: `output()`, `spawn()` with piped streams, signals, a pty and its
//! resize, `wait()`, and the spawn error kinds.

mod common;

use std::time::Duration;

use boxsock::exec::Stdio;
use boxsock::{CreateOptions, Runtime, SpawnErrorKind};
use common::{Env, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn running_box(env: &Env) -> (Runtime, String) {
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap();
    rt.start(b.id.as_str()).await.unwrap();
    (rt, b.id.to_string())
}

/// Read `r` until `pred` holds on what was read (bounded).
async fn read_until<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    seen: &mut Vec<u8>,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut buf = [0u8; 4096];
    while !pred(&String::from_utf8_lossy(seen)) {
        let n = tokio::time::timeout_at(deadline, r.read(&mut buf))
            .await
            .expect("timed out waiting for output")
            .unwrap();
        assert!(
            n > 0,
            "stream ended before the expected output: {}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_collects_status_stdout_stderr_with_env_and_cwd() {
    let env = Env::new();
    let (rt, id) = running_box(&env).await;
    let out = rt
        .command(&id, "sh")
        .args(["-c", "echo out-$K-$(pwd); echo err >&2; exit 3"])
        .env("K", "v")
        .current_dir("/tmp")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-v-/tmp\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let killed = rt.command(&id, "sh").args(["-c", "kill -9 $$"]).output().await.unwrap();
    assert_eq!(
        (killed.status.code(), killed.status.signal(), killed.status.shell_code()),
        (None, Some(9), 137)
    );

    let e = rt.command(&id, "boxsock-no-such-command").output().await.unwrap_err();
    assert_eq!(e.spawn_error(), Some(SpawnErrorKind::NotFound), "{e}");
    assert!(e.to_string().contains("boxsock-no-such-command"), "{e}");
    let e = rt.command(&id, "/etc/hostname").output().await.unwrap_err();
    assert_eq!(e.spawn_error(), Some(SpawnErrorKind::PermissionDenied), "{e}");
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_streams_stdin_to_stdout_and_a_signal_ends_the_command() {
    let env = Env::new();
    let (rt, id) = running_box(&env).await;
    let mut child = rt
        .command(&id, "sh")
        .args(["-c", "trap 'echo got-term; exit 7' TERM; while read l; do echo \"<$l>\"; done; sleep 30 & wait"])
        .stdin(Stdio::Piped)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Null)
        .spawn()
        .await
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"a\nb\n").await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stdout, &mut seen, |s| s.contains("<a>\n<b>\n")).await;
    drop(stdin); // EOF ends the loop; the shell then waits on sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.signal(libc::SIGTERM).unwrap();
    read_until(&mut stdout, &mut seen, |s| s.contains("got-term")).await;
    let status = tokio::time::timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(7), "{}", String::from_utf8_lossy(&seen));
    // The status stays; the session is gone.
    assert_eq!(child.wait().await.unwrap(), status);
    assert!(child.resize(1, 1).is_err());
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_with_a_tty_runs_on_a_pty_and_resizes_it() {
    let env = Env::new();
    let (rt, id) = running_box(&env).await;
    let mut child = rt
        .command(&id, "/bin/sh")
        .window_size(33, 101)
        .stdin(Stdio::Piped)
        .stdout(Stdio::Piped)
        .spawn()
        .await
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"tty; stty size\n").await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stdout, &mut seen, |s| s.contains("33 101")).await;
    assert!(String::from_utf8_lossy(&seen).contains("/dev/pts/"));
    child.resize(20, 60).unwrap();
    stdin.write_all(b"stty size\n").await.unwrap();
    read_until(&mut stdout, &mut seen, |s| s.contains("20 60")).await;
    // Ctrl-C typed into the terminal interrupts the foreground command.
    stdin.write_all(b"exec sleep 30\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write_all(b"\x03").await.unwrap();
    let status = tokio::time::timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert_eq!((status.signal(), status.shell_code()), (Some(libc::SIGINT), 130));
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_child_kills_the_command() {
    let env = Env::new();
    let (rt, id) = running_box(&env).await;
    let mut child = rt
        .command(&id, "sh")
        .args(["-c", "echo $$; exec sleep 1000"])
        .stdout(Stdio::Piped)
        .spawn()
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(child.stdout.as_mut().unwrap(), &mut seen, |s| s.ends_with('\n')).await;
    let pid: i32 = String::from_utf8_lossy(&seen).trim().parse().unwrap();
    assert!(common::pid_running(pid));
    drop(child);
    common::wait_until("the command to be killed", || !common::pid_running(pid));
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_megabytes_round_trip_through_piped_stdin_and_stdout() {
    let env = Env::new();
    let (rt, id) = running_box(&env).await;
    let mut child =
        rt.command(&id, "cat").stdin(Stdio::Piped).stdout(Stdio::Piped).spawn().await.unwrap();
    let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&sent).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(LIMIT, stdout.read_to_end(&mut back)).await.unwrap().unwrap();
    writer.await.unwrap();
    assert!(back == data, "got {} bytes back of {}", back.len(), data.len());
    assert!(child.wait().await.unwrap().success());
    rt.remove(&id, true).await.unwrap();
}
