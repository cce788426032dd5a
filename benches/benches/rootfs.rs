//! Criterion bench of issue 13's root filesystems (decision 0006): creating (and
//! removing) a libkrun box from a 200 MB `--rootfs` must not copy 200 MB. Timed
//! interleaved with two floors from the same run: the same create from an empty root,
//! and `cp -a` of the 200 MB root (what a copying create would at least cost). The
//! backend runs with `configure_only` (nothing boots: create does not start a box), so
//! this runs on any Linux machine.

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxsock::{
    BackendConfig, CreateOptions, Runtime, RuntimeOptions, StrategyConfig, builtin_backends,
    builtin_strategies,
};
use boxsock_benches::{no_setup, paired};
use criterion::{Criterion, criterion_group};

/// Size of the big root: 200 files of 1 MiB.
const BIG_FILES: usize = 200;

fn agent_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

async fn create_and_remove(rt: &Runtime, root: &Path) {
    let opts =
        CreateOptions::builder().strategy("short-symlink").backend("libkrun").rootfs(root).build();
    let rec = rt.create(opts).await.expect("create --rootfs");
    rt.remove(rec.id.as_str(), true).await.expect("remove");
}

fn bench_rootfs(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let tmp = tempfile::Builder::new().prefix("bsroot").tempdir_in("/tmp").expect("tempdir");
    let (empty, big, copies) =
        (tmp.path().join("empty"), tmp.path().join("big"), tmp.path().join("copies"));
    for d in [&empty, &big.join("usr/lib"), &copies] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..BIG_FILES {
        std::fs::write(big.join(format!("usr/lib/blob{i:03}")), &chunk)
            .expect("write the big root");
    }
    let links = tmp.path().join("l");
    std::fs::create_dir(&links).expect("link base");
    let agents = agent_dir();
    let mut options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    options.strategy_config = StrategyConfig { base_dir: links, ..StrategyConfig::default() };
    let mut backend =
        BackendConfig { helper_dir: Some(agents.clone()), ..BackendConfig::default() };
    backend.options.insert("configure_only".into(), "on".into());
    backend.options.insert("agent".into(), agents.join("boxsock-agent").display().to_string());
    options.backend_config = backend;
    options.health_monitor = false;
    let (rt, _) =
        tokio.block_on(Runtime::open(tmp.path().join("home"), options)).expect("open runtime");
    // The first create builds the shared guest base; keep that out of the timing.
    tokio.block_on(create_and_remove(&rt, &empty));

    let mut g = c.benchmark_group("rootfs");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let mut from_big = || tokio.block_on(create_and_remove(&rt, &big));
    let mut from_empty = || tokio.block_on(create_and_remove(&rt, &empty));
    let mut n = 0u64;
    let mut cp_a = || {
        n += 1;
        let to = copies.join(n.to_string());
        let st =
            std::process::Command::new("cp").arg("-a").arg(&big).arg(&to).status().expect("cp -a");
        assert!(st.success(), "cp -a failed");
        std::fs::remove_dir_all(&to).expect("remove the copy");
    };
    paired(
        &mut g,
        "rootfs",
        "create-libkrun",
        "200MB-root",
        &mut no_setup,
        &mut from_big,
        &mut [("floor-create-empty-root", &mut from_empty), ("floor-cp-a-200MB", &mut cp_a)],
    );
    g.finish();
}

criterion_group!(benches, bench_rootfs);
// Not `criterion_main!`: a measuring run records its manifest, test mode nothing.
fn main() {
    boxsock_benches::run::main("rootfs", &[benches]);
}
