//! Criterion benches of the runtime on the `host` backend: one box's whole life
//! (create → ready → exec `true` → remove), one at a time (timed interleaved with its
//! floor, spawning and reaping one process) and 100 in parallel (no floor, no ratio).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boxsock::boxsock_runtime::agent_client::AgentClient;
use boxsock::{
    BackendConfig, CreateOptions, Runtime, RuntimeOptions, StrategyConfig, builtin_backends,
    builtin_strategies,
};
use boxsock_benches::{box_life, no_setup, paired};
use criterion::{BenchmarkId, Criterion, criterion_group};

/// `target/<profile>` with a built `boxsock-agent` (`cargo bench -p boxsock-benches`
/// does not build other packages' binaries, so build it once in the same profile).
fn agent_dir() -> PathBuf {
    boxsock_host::dev::built_binaries(&["boxsock-agent"])
}

struct Fixture {
    _root: tempfile::TempDir,
    rt: Arc<Runtime>,
    tokio: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let root = tempfile::Builder::new().prefix("bsr").tempdir_in("/tmp").expect("tempdir");
    let links = root.path().join("l");
    std::fs::create_dir(&links).expect("link base");
    let mut options = RuntimeOptions::new(builtin_strategies(), builtin_backends());
    options.strategy_config = StrategyConfig { base_dir: links, ..StrategyConfig::default() };
    options.backend_config =
        BackendConfig { helper_dir: Some(agent_dir()), ..BackendConfig::default() };
    let home = root.path().join("home");
    let (rt, _report) = tokio.block_on(Runtime::open(home, options)).expect("open runtime");
    Fixture { _root: root, rt: Arc::new(rt), tokio }
}

async fn one_life(rt: &Runtime) {
    box_life(rt, CreateOptions::new("short-symlink", "host")).await
}

fn bench_runtime(c: &mut Criterion) {
    let fx = fixture();
    let mut g = c.benchmark_group("runtime");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    // One life, timed interleaved with its floor: spawning and reaping `true`.
    let mut life = || fx.tokio.block_on(one_life(&fx.rt));
    let mut spawn_true = || {
        let st = std::process::Command::new("true").status().expect("spawn true");
        assert!(st.success());
    };
    paired(
        &mut g,
        "runtime",
        "host-short-symlink",
        "one",
        &mut no_setup,
        &mut life,
        &mut [("floor-spawn-true", &mut spawn_true)],
    );
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function(BenchmarkId::new("host-short-symlink", "100-parallel"), |b| {
        b.iter(|| {
            fx.tokio.block_on(async {
                let tasks: Vec<_> = (0..100)
                    .map(|_| {
                        let rt = fx.rt.clone();
                        tokio::spawn(async move { one_life(&rt).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("a box's life panicked");
                }
            })
        })
    });
    bench_warm_exec(&mut g, &fx);
    g.finish();
    let left = fx.rt.list().expect("list");
    assert!(left.boxes.is_empty(), "boxes left behind: {:?}", left.boxes.len());
}

/// A warm exec of `true` in a running box through [`Runtime::command`] (the store read,
/// the held binding's re-check, the verified connect and peer check, hello, exec),
/// interleaved with its floor: one raw agent round trip (connect to the agent's path,
/// hello, exec `true`, read the exit) with none of the runtime's checks.
fn bench_warm_exec(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    fx: &Fixture,
) {
    let rec = fx.tokio.block_on(fx.rt.create(CreateOptions::new("short-symlink", "host")));
    let id = rec.expect("create").id.to_string();
    fx.tokio.block_on(fx.rt.start(&id)).expect("start");
    let info = fx.rt.inspect(&id).expect("inspect");
    let agent = info
        .sockets
        .iter()
        .find(|s| s.socket == "agent")
        .and_then(|s| s.address.clone())
        .expect("the agent's address");
    let agent = PathBuf::from(agent);
    let mut via_runtime = || {
        let st = fx.tokio.block_on(fx.rt.command(&id, "true").status()).expect("exec");
        assert!(st.success(), "`true` through the runtime: {st:?}");
    };
    let mut raw = || {
        fx.tokio.block_on(async {
            let s = std::os::unix::net::UnixStream::connect(&agent).expect("connect the agent");
            let client = AgentClient::connect(s).expect("client");
            let out = client.exec_output(&["true"], &[], None).await.expect("raw exec");
            assert!(out.status.success(), "raw `true`: {:?}", out.status);
        })
    };
    paired(
        g,
        "runtime",
        "warm-exec-true",
        "host-short-symlink",
        &mut no_setup,
        &mut via_runtime,
        &mut [("floor-raw-agent-round-trip", &mut raw)],
    );
    fx.tokio.block_on(fx.rt.remove(&id, true)).expect("remove");
}

criterion_group! {
    name = runtime;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).configure_from_args();
    targets = bench_runtime
}
// Not `criterion_main!`: a measuring run records its manifest, test mode nothing.
fn main() {
    boxsock_benches::run::main("runtime", &[runtime]);
}
