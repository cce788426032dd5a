//! Soak (issue 24): one long-lived library `Runtime` (exclusive, health monitor on, as a
//! daemon holds it) runs 10 000 execs in one box and, at the same time, 1 000 whole box
//! lives (create, start, exec, stop, remove) on the host backend. Its resident memory
//! and open descriptors, measured after a warm-up and again at the end, must not grow
//! beyond the bounds below.
//!
//! One test in its own binary: RSS and the descriptor table are process-wide.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxsock::{
    BackendConfig, BoxState, CreateOptions, LockMode, Runtime, RuntimeOptions, StrategyConfig,
    builtin_backends, builtin_strategies,
};

const EXECS: usize = 10_000;
const LIVES: usize = 1_000;
/// Warm-up before the first measurement: allocator arenas, SQLite's page cache, the
/// blocking pool's threads and the strategies' caches reach their working size.
const WARM_EXECS: usize = 200;
const WARM_LIVES: usize = 20;

/// Resident memory may grow by at most this much. A leak of 400 bytes per exec (one
/// small `String` or buffer kept) would be 4 MB over 10 000 execs, and a leak of
/// 4 KiB per box life (a row, a path, a handle kept) 4 MB over 1 000 lives: either
/// fails. Below it: allocator fragmentation, which this bound tolerates.
const RSS_BOUND_KIB: u64 = 4 * 1024;
/// Descriptors may not grow at all: every exec's connection, every box's pidfd, log,
/// socket directory and link operations must be closed when they end.
const FD_BOUND: usize = 0;

fn bin_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

async fn execs(rt: &Runtime, id: &str, n: usize) {
    for i in 0..n {
        let o = rt.command(id, "echo").arg(i.to_string()).output().await.unwrap();
        assert!(o.status.success() && o.stdout == format!("{i}\n").as_bytes(), "exec {i}: {o:?}");
    }
}

async fn lives(rt: &Runtime, from: usize, n: usize) {
    for i in from..from + n {
        let name = format!("life-{i}");
        let mut c = CreateOptions::new("short-symlink", "host");
        c.name = Some(name.clone());
        rt.create(c).await.unwrap();
        rt.start(&name).await.unwrap();
        let o = rt.command(&name, "true").output().await.unwrap();
        assert!(o.status.success(), "{name}: {o:?}");
        assert_eq!(
            rt.stop(&name, Some(Duration::from_secs(2))).await.unwrap().state,
            BoxState::Stopped
        );
        rt.remove(&name, false).await.unwrap();
    }
}

#[test]
fn ten_thousand_execs_and_a_thousand_box_lives_in_one_runtime() {
    let root = tempfile::tempdir().unwrap();
    let links = root.path().join("links");
    std::fs::create_dir(&links).unwrap();
    let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    o.strategy_config = StrategyConfig { base_dir: links, ..StrategyConfig::default() };
    o.backend_config = BackendConfig { helper_dir: Some(bin_dir()), ..Default::default() };
    o.lock_mode = LockMode::Exclusive;
    let tokio_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio_rt.block_on(async {
        let (rt, _) = Runtime::open(root.path().join("home"), o).await.unwrap();
        let mut c = CreateOptions::new("short-symlink", "host");
        c.name = Some("soak".into());
        rt.create(c).await.unwrap();
        rt.start("soak").await.unwrap();
        let (t_exec, t_lives) = (rt.clone(), rt.clone());
        tokio::join!(execs(&t_exec, "soak", WARM_EXECS), lives(&t_lives, 0, WARM_LIVES));
        let (rss0, fds0) = (rss_kib(), open_fds());
        let t0 = Instant::now();
        let (a, b) = (rt.clone(), rt.clone());
        let exec_task = tokio::spawn(async move {
            let t = Instant::now();
            execs(&a, "soak", EXECS).await;
            t.elapsed()
        });
        let lives_task = tokio::spawn(async move {
            let t = Instant::now();
            lives(&b, WARM_LIVES, LIVES).await;
            t.elapsed()
        });
        let (exec_time, lives_time) = (exec_task.await.unwrap(), lives_task.await.unwrap());
        let wall = t0.elapsed();
        let (rss1, fds1) = (rss_kib(), open_fds());
        eprintln!(
            "soak: {EXECS} execs in {:.1} s and {LIVES} box lives in {:.1} s, at the same time \
             ({:.1} s wall); RSS {rss0} KiB -> {rss1} KiB ({:+} KiB, bound {RSS_BOUND_KIB}); \
             open descriptors {fds0} -> {fds1} (bound +{FD_BOUND})",
            exec_time.as_secs_f64(),
            lives_time.as_secs_f64(),
            wall.as_secs_f64(),
            rss1 as i64 - rss0 as i64,
        );
        assert!(
            rss1 <= rss0 + RSS_BOUND_KIB,
            "RSS grew from {rss0} KiB to {rss1} KiB (bound +{RSS_BOUND_KIB} KiB)"
        );
        assert!(fds1 <= fds0 + FD_BOUND, "open descriptors grew from {fds0} to {fds1}");
        let l = rt.list().unwrap();
        assert_eq!(
            l.boxes.len(),
            1,
            "only the exec box is left: {:?}",
            l.boxes.iter().map(|b| &b.name).collect::<Vec<_>>()
        );
        rt.remove("soak", true).await.unwrap();
    });
}
