//! Blocking work stays off the async executor (issue 12, point 4): the CLI runs a
//! current-thread tokio runtime, so a runtime call that blocks its thread (a strategy's
//! `ensure` waiting on its lock, the store, a companion kill) would stall every other
//! box's exec, readiness wait and pump. Real `boxsock-agent` boxes on the `host`
//! backend, a real store, a real `flock` held by the test.

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxsock::boxsock_runtime::process::ProcessHandle;

use boxsock::{CreateOptions, ExecIo, Runtime};
use common::Env;

/// How long the test holds the short-symlink per-user directory's lock.
const HOLD: Duration = Duration::from_secs(3);

async fn exec_true(rt: &Runtime, id: &str) -> Duration {
    let (mut on_out, mut on_err) = (|_: &[u8]| {}, |_: &[u8]| {});
    let t = Instant::now();
    let code = rt
        .exec(
            id,
            vec!["true".into()],
            vec![],
            ExecIo { stdin: None, stdout: &mut on_out, stderr: &mut on_err },
        )
        .await
        .unwrap_or_else(|e| panic!("exec in {id}: {e}"));
    assert_eq!(code, 0);
    t.elapsed()
}

/// SIGKILLs the boxes' processes when dropped, so a failed assertion leaves no agent
/// running (signals only the recorded identities, never a process that reused a pid).
struct KillOnDrop(Vec<Arc<ProcessHandle>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            let _ = h.signal_group(nix::sys::signal::Signal::SIGKILL);
            let _ = h.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Execs of box `id`, back to back for `window`; the slowest one.
async fn slowest_exec_during(rt: &Runtime, id: &str, window: Duration) -> (Duration, usize) {
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while start.elapsed() < window {
        slowest = slowest.max(exec_true(rt, id).await);
        n += 1;
    }
    (slowest, n)
}

#[tokio::test(flavor = "current_thread")]
async fn an_ensure_blocked_on_its_lock_for_one_box_does_not_delay_an_exec_on_another_box() {
    let env = Env::new();
    let (rt, _) = Runtime::open(&env.home, env.options()).await.unwrap();
    let a = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap().id;
    let b = rt.create(CreateOptions::new("short-symlink", "host")).await.unwrap().id;
    rt.start(a.as_str()).await.unwrap();
    rt.start(b.as_str()).await.unwrap();
    let _guard =
        KillOnDrop([&a, &b].iter().filter_map(|id| rt.process(id.as_str()).unwrap()).collect());

    // B's exec latency with nothing blocked.
    let (baseline, _) = slowest_exec_during(&rt, b.as_str(), Duration::from_millis(500)).await;

    // A's link is gone (what a /tmp cleaner does), so its next `ensure` takes the slow
    // path, which waits for the per-user directory's flock; the test holds that lock.
    let per_uid = env.per_uid_dir();
    std::fs::remove_file(per_uid.join(a.as_str())).unwrap();
    let dir = std::fs::File::open(&per_uid).unwrap();
    // SAFETY: flock on a descriptor `dir` owns for the call; no memory is passed.
    let locked = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(locked, 0, "lock {}", per_uid.display());
    let unlocker = std::thread::spawn(move || {
        std::thread::sleep(HOLD);
        drop(dir); // closing the only descriptor of the open file releases the flock
    });

    let exec_a = async {
        // Let B's first exec get under way first, so a stalled thread shows in it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        exec_true(&rt, a.as_str()).await
    };
    let ((during, execs), a_took) =
        tokio::join!(slowest_exec_during(&rt, b.as_str(), Duration::from_millis(1500)), exec_a);
    unlocker.join().unwrap();
    println!(
        "box B exec: slowest {baseline:?} unblocked, {during:?} over {execs} execs while box A's ensure waited; box A's exec took {a_took:?}"
    );

    // The lock really was in A's way (otherwise this test proves nothing) ...
    assert!(
        a_took >= HOLD - Duration::from_millis(300),
        "box A's exec took {a_took:?}; it should have waited for the lock"
    );
    // ... and it did not stall B (without the fix B's exec in flight waits ~3 s).
    assert!(
        during < baseline + Duration::from_millis(200),
        "box B's exec took up to {during:?} while box A's ensure waited on its lock (unblocked: {baseline:?})"
    );
    rt.remove(a.as_str(), true).await.unwrap();
    rt.remove(b.as_str(), true).await.unwrap();
}
