//! Criterion bench of the `sandbox` backend (issue 22): one box's whole life
//! (create → ready → exec `true` → remove) from a busybox root, timed interleaved with
//! two floors in the same samples: the same life on the `host` backend (no isolation),
//! and `runc run` of an OCI bundle of the same root running `true` (Debian's runc, its
//! `runc spec` defaults: namespaces, a read-only root, `/proc`, `/dev`, `/sys`).
//!
//! As root (the sandbox backend needs it, and so does runc here): CI runs as root, and
//! `.ci/run` installs runc and busybox-static. Elsewhere it prints why it skips; under
//! `CI=true` a missing condition fails (boxsock-test-support).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boxsock::{
    BackendConfig, CreateOptions, Runtime, RuntimeOptions, StrategyConfig, builtin_backends,
    builtin_strategies,
};
use boxsock_benches::{box_life, no_setup, paired};
use boxsock_test_support::{Need, skip};
use criterion::{Criterion, criterion_group};

struct Fixture {
    root: tempfile::TempDir,
    rt: Runtime,
    tokio: tokio::runtime::Runtime,
    rootfs: PathBuf,
    bundle: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A busybox root: `/bin/busybox` (static) and the applets the box runs.
fn busybox_root(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
}

/// An OCI bundle of `rootfs` for runc: `runc spec`'s config, its process `true`
/// without a terminal.
fn runc_bundle(dir: &Path, rootfs: &Path) {
    std::fs::create_dir_all(dir).expect("bundle dir");
    let st = Command::new("runc").arg("spec").current_dir(dir).status().expect("runc spec");
    assert!(st.success(), "runc spec: {st}");
    let path = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("JSON");
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["/bin/true"]);
    c["root"]["path"] = rootfs.display().to_string().into();
    std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).expect("write config.json");
}

fn fixture() -> Option<Fixture> {
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "the sandbox backend and runc need root");
        return None;
    }
    for (name, package) in [("runc", "runc"), ("busybox", "busybox-static")] {
        if which(name).is_none() {
            skip(Need::Program { name, package }, "the sandbox bench's floor and root");
            return None;
        }
    }
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let root = tempfile::Builder::new().prefix("bss").tempdir_in("/tmp").expect("tempdir");
    let rootfs = root.path().join("rootfs");
    busybox_root(&rootfs);
    let bundle = root.path().join("bundle");
    runc_bundle(&bundle, &rootfs);
    let links = root.path().join("l");
    std::fs::create_dir(&links).expect("link base");
    let mut options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    options.strategy_config = StrategyConfig { base_dir: links, ..StrategyConfig::default() };
    options.backend_config = BackendConfig {
        helper_dir: Some(boxsock_host::dev::built_binaries(&["boxsock-agent"])),
        ..BackendConfig::default()
    };
    let home = root.path().join("home");
    let (rt, _report) = tokio.block_on(Runtime::open(home, options)).expect("open runtime");
    Some(Fixture { root, rt, tokio, rootfs, bundle })
}

/// One box's whole life on `backend` ([`box_life`]).
async fn one_life(rt: &Runtime, backend: &str, rootfs: Option<&Path>) {
    let mut b = CreateOptions::builder().strategy("short-symlink").backend(backend);
    if let Some(r) = rootfs {
        b = b.rootfs(r);
    }
    box_life(rt, b.build()).await
}

fn bench_sandbox(c: &mut Criterion) {
    let Some(fx) = fixture() else { return };
    let mut g = c.benchmark_group("sandbox");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let mut sandbox = || fx.tokio.block_on(one_life(&fx.rt, "sandbox", Some(&fx.rootfs)));
    let mut host = || fx.tokio.block_on(one_life(&fx.rt, "host", None));
    let n = AtomicU64::new(0);
    let state = fx.root.path().join("runc-state");
    let mut runc = || {
        let id = format!("bss{}", n.fetch_add(1, Ordering::Relaxed));
        let st = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&fx.bundle)
            .arg(&id)
            .status()
            .expect("runc run");
        assert!(st.success(), "runc run {id}: {st}");
    };
    paired(
        &mut g,
        "sandbox",
        "life",
        "busybox-root",
        &mut no_setup,
        &mut sandbox,
        &mut [("floor-host-backend", &mut host), ("floor-runc-run", &mut runc)],
    );
    g.finish();
    idle_memory(&fx);
    let left = fx.rt.list().expect("list");
    assert!(left.boxes.is_empty(), "boxes left behind: {:?}", left.boxes.len());
}

/// Start `n` boxes on `backend` at once, let them settle, and return their resident
/// memory per box (KiB; every process of each box), then remove them.
fn memory_per_box(fx: &Fixture, backend: &str, rootfs: Option<&Path>, n: usize) -> f64 {
    let ids: Vec<String> = fx.tokio.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut b = CreateOptions::builder().strategy("short-symlink").backend(backend);
            if let Some(r) = rootfs {
                b = b.rootfs(r);
            }
            let rt = &fx.rt;
            tasks.push(async move {
                let id = rt.create(b.build()).await.expect("create").id.to_string();
                rt.start(&id).await.expect("start");
                id
            });
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await);
        }
        ids
    });
    std::thread::sleep(Duration::from_secs(1));
    let total: u64 = ids
        .iter()
        .map(|id| {
            let pid = fx.rt.inspect(id).expect("inspect").pid.expect("a running box's pid");
            boxsock_benches::tree_rss_kib(pid as u32)
        })
        .sum();
    for id in &ids {
        fx.tokio.block_on(fx.rt.remove(id, true)).expect("remove");
    }
    total as f64 / n as f64
}

/// Idle memory: 100 sandbox boxes against 100 host boxes (a measuring run records it;
/// test mode starts 3 of each and records nothing).
fn idle_memory(fx: &Fixture) {
    let measuring = boxsock_benches::run::measuring();
    let n = if measuring { 100 } else { 3 };
    let sandbox = memory_per_box(fx, "sandbox", Some(&fx.rootfs), n);
    let host = memory_per_box(fx, "host", None, n);
    eprintln!("idle memory per box, {n} at once: sandbox {sandbox:.0} KiB, host {host:.0} KiB");
    assert!(sandbox > 0.0 && host > 0.0, "no resident memory read");
    if let (true, Some(run)) = (measuring, boxsock_benches::run::current_run()) {
        let rec = boxsock_benches::MemoryRecord {
            id: format!("sandbox/idle-rss/{n}-boxes"),
            run: run.id.clone(),
            boxes: n,
            per_box_kib: sandbox,
            floor: "floor-host-backend".into(),
            floor_per_box_kib: host,
        };
        rec.write(&boxsock_benches::paired_dir()).expect("write the memory record");
    }
}

criterion_group! {
    name = sandbox;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).configure_from_args();
    targets = bench_sandbox
}
// Not `criterion_main!`: a measuring run records its manifest, test mode nothing.
fn main() {
    boxsock_benches::run::main("sandbox", &[sandbox]);
}
