//! Limits through cgroups on a real `sandbox` box (busybox root), as root: memory past
//! `ram_mib` is OOM-killed inside the box (control: the same allocation on the `host`
//! backend succeeds), a fork bomb stops at the pids limit with the host responsive
//! (control: the host backend forks 100 processes), `vcpus` is a CFS quota, and a limit that
//! cannot be applied (another user, no delegation) is refused at create.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxsock_core::Backend;
use boxsock_core::backend::{BackendConfig, BackendError, BoxSettings};
use boxsock_runtime::{CreateOptions, Runtime};
use boxsock_sandbox::cgroup::Hierarchy;

mod common;
use common::Env;

impl Env {
    fn new() -> Env {
        Env::with_root("limit", "root", &["sh", "dd", "sleep", "seq", "echo", "cat"])
    }

    async fn runtime(&self, options: &[(&str, &str)]) -> Runtime {
        self.open_runtime(options, false).await
    }

    async fn start(&self, rt: &Runtime, b: CreateOptions) -> String {
        let rec = rt.create(b).await.unwrap();
        rt.start(rec.id.as_str()).await.unwrap();
        self.track(rt, rec.id.as_str());
        rec.id.as_str().to_owned()
    }
}

fn cgroup_file(home: &std::path::Path, id: &str, controller: &str, file: &str) -> PathBuf {
    let h = Hierarchy::detect().unwrap();
    let name = boxsock_sandbox::cgroup::cgroup_name(home, id);
    let (_, dir) =
        h.box_dirs(&name).into_iter().find(|(c, _)| c.is_none_or(|c| c == controller)).unwrap();
    dir.join(file)
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().into()
}

const ALLOCATE: &str = "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null && echo allocated";

#[tokio::test(flavor = "multi_thread")]
async fn memory_past_the_limit_is_oom_killed_inside_the_box_control_host_allocates() {
    let env = Env::new();
    let rt = env.runtime(&[]).await;
    let b = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("sandbox")
        .rootfs(&env.root)
        .ram_mib(32)
        .vcpus(1)
        .build();
    let id = env.start(&rt, b).await;
    let host = env
        .start(&rt, CreateOptions::builder().strategy("short-symlink").backend("host").build())
        .await;
    if matches!(Hierarchy::detect().unwrap(), Hierarchy::V1(_)) {
        assert_eq!(
            read(&cgroup_file(&env.home, &id, "memory", "memory.limit_in_bytes")),
            "33554432"
        );
        assert_eq!(read(&cgroup_file(&env.home, &id, "cpu", "cpu.cfs_quota_us")), "100000");
        assert_eq!(read(&cgroup_file(&env.home, &id, "cpu", "cpu.cfs_period_us")), "100000");
    } else {
        assert_eq!(read(&cgroup_file(&env.home, &id, "memory", "memory.max")), "33554432");
        assert_eq!(read(&cgroup_file(&env.home, &id, "cpu", "cpu.max")), "100000 100000");
    }
    let control = rt.command(&host, "/bin/sh").args(["-c", ALLOCATE]).output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&control.stdout), "allocated\n", "control");
    let o = rt.command(&id, "/bin/sh").args(["-c", ALLOCATE]).output().await.unwrap();
    assert_eq!(o.stdout, b"", "64 MiB allocated in a 32 MiB box: {o:?}");
    // The OOM kill stayed inside: the box's agent still answers.
    let o = rt.command(&id, "/bin/echo").arg("alive").output().await.unwrap();
    assert_eq!(o.stdout, b"alive\n");
    let limit = cgroup_file(&env.home, &id, "memory", "cgroup.procs");
    assert!(limit.exists());
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
    assert!(!limit.exists(), "rm left {} behind", limit.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_pids_limit_and_the_host_stays_responsive() {
    const LIMIT: u64 = 64;
    let env = Env::new();
    let rt = env.runtime(&[("pids_max", "64")]).await;
    let b = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("sandbox")
        .rootfs(&env.root)
        .build();
    let id = env.start(&rt, b).await;
    let host = env
        .start(&rt, CreateOptions::builder().strategy("short-symlink").backend("host").build())
        .await;
    // Control: as a host process, 100 background sleeps all start (100 distinct pids;
    // a failed fork leaves `$!` unchanged), then are killed by their pids.
    let many = "p=; for i in $(seq 100); do sleep 30 & p=\"$p $!\"; done; kill $p; \
                echo $p | tr ' ' '\\n' | sort -u | wc -l";
    let control = rt.command(&host, "/bin/sh").args(["-c", many]).output().await.unwrap();
    let started: u64 = String::from_utf8_lossy(&control.stdout).trim().parse().unwrap();
    assert_eq!(started, 100, "control: {control:?}");
    let current = cgroup_file(&env.home, &id, "pids", "pids.current");
    assert_eq!(read(&cgroup_file(&env.home, &id, "pids", "pids.max")), LIMIT.to_string());
    let bomb = rt
        .command(&id, "/bin/sh")
        .args(["-c", "b() { b | b & }; b; sleep 60"])
        .spawn()
        .await
        .unwrap();
    // The limit was hit: `pids.events` counts the forks it refused.
    let events = cgroup_file(&env.home, &id, "pids", "pids.events");
    let refused = |t: &str| -> u64 {
        t.lines().find_map(|l| l.strip_prefix("max ")).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while Instant::now() < deadline && refused(&read(&events)) == 0 {
        peak = peak.max(read(&current).parse::<u64>().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused(&read(&events)) > 0, "the bomb never reached the limit (peak {peak})");
    // The host is responsive: it starts a process, and the bomb never passes the limit.
    let st = std::process::Command::new("/bin/true").status().unwrap();
    assert!(st.success());
    for _ in 0..10 {
        assert!(read(&current).parse::<u64>().unwrap() <= LIMIT);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = bomb.kill();
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}

/// A limit this user cannot apply is refused at create (played by a child that drops
/// to uid 65534: process-wide state, in its own process).
#[test]
fn a_limit_without_delegation_is_refused_control_root_accepts() {
    if std::env::var_os("SANDBOX_PLAY_UNPRIVILEGED").is_some() {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        let b = boxsock_sandbox::SandboxBackend::new(BackendConfig::default());
        let mut s = BoxSettings::default();
        s.ram_mib = Some(64);
        match b.check_settings(&s) {
            Err(BackendError::BadSetting { setting: "ram_mib", reason, .. }) => {
                assert!(reason.contains("no cgroup delegation"), "{reason}");
                println!("REFUSED: {reason}");
            }
            other => panic!("not refused: {other:?}"),
        }
        return;
    }
    let b = boxsock_sandbox::SandboxBackend::new(BackendConfig::default());
    let mut s = BoxSettings::default();
    s.ram_mib = Some(64);
    s.vcpus = Some(1);
    b.check_settings(&s).expect("control: root may apply limits");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_limit_without_delegation_is_refused_control_root_accepts"])
        .args(["--nocapture", "--test-threads=1"])
        .env("SANDBOX_PLAY_UNPRIVILEGED", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("REFUSED:"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
