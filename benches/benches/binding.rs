//! Criterion benches: the cost of ensuring, binding, connecting, datagrams and sweeping
//! through every registered strategy, side by side with the syscall floors and with the
//! field's other techniques, all in one run. `bench-report` turns the results into
//! ratios to the floors (see docs/performance.md).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use boxsock_benches::{Subject, home_of_len, no_setup, paired, strategies};
use boxsock_core::{Binder, BoxId, BoxLayout, Opening, Socket, SocketAddress, SocketKind};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// Two homes: a shallow one and one of 300 bytes.
fn homes(root: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![("shallow", home_of_len(&root.join("s"), 0)), ("300B", home_of_len(&root.join("d"), 300))]
}

fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bsb").tempdir_in("/tmp").expect("tempdir in /tmp")
}

/// A socket of the benches' own (`<name>.sock`), as a catalogue key.
const fn socket(name: &'static str) -> Socket {
    Socket { name, kind: SocketKind::Stream, binder: Binder::Runtime, derived: &[] }
}

const BENCH: Socket = socket("bench");
const CONN: Socket = socket("conn");

fn unlink_addr(addr: &SocketAddress) {
    if let Some(p) = addr.as_path() {
        let _ = std::fs::remove_file(p);
    }
}

/// Accept and drop connections forever on a background thread.
fn drain(listener: boxsock_core::peer::Listener) {
    std::thread::spawn(move || while listener.accept().is_ok() {});
}

fn drain_plain(listener: UnixListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
}

fn bench_ensure(c: &mut Criterion) {
    let root = short_tempdir();
    let base = short_tempdir();
    let mut g = c.benchmark_group("ensure");
    // Floor: one lstat of a symlink in a short directory.
    let link = base.path().join("floor-link");
    std::os::unix::fs::symlink(root.path(), &link).expect("floor link");
    let mut lstat = || {
        std::hint::black_box(std::fs::symlink_metadata(&link).expect("lstat"));
    };
    for reg in strategies() {
        let Some(s) = Subject::new(reg, &root.path().join(reg.name), base.path()) else {
            continue;
        };
        // Steady: what a held binding pays before each use to know the box's binding is
        // still good (its re-check: short-symlink's one `fstatat` of the link, as
        // `ensure`'s steady state was). Cold: release, then open the box again
        // (`ensure` making the link, the directory opened and verified).
        let held = s.open();
        let mut ensure = || held.check().expect("re-check");
        paired(
            &mut g,
            "ensure",
            s.name,
            "steady",
            &mut no_setup,
            &mut ensure,
            &mut [("floor-lstat", &mut lstat)],
        );
        g.bench_function(BenchmarkId::new(s.name, "cold"), |b| {
            b.iter_batched(
                || s.strategy.release_box(&s.layout, &s.id).expect("release"),
                |()| drop(s.open()),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Bind (and return) a listener at the abstract name `name`.
fn bind_abstract(name: &str) -> UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    UnixListener::bind_addr(&addr).expect("bind abstract")
}

fn open_dir_path(dir: &Path) -> OwnedFd {
    open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .expect("open O_PATH")
}

fn bench_bind(c: &mut Criterion) {
    let root = short_tempdir();
    let base = short_tempdir();
    let mut g = c.benchmark_group("bind");
    for (depth, home) in homes(root.path()) {
        // Floor: the same operation at a short direct path.
        let floor_path = base.path().join(format!("f-{depth}.sock"));
        let mut floor = || {
            drop(UnixListener::bind(&floor_path).expect("bind"));
            std::fs::remove_file(&floor_path).expect("unlink");
        };
        // The abstract strategy's own floor: the same bind and close of an abstract
        // name, with the same (no) unlink as its subject.
        let raw_name = format!("boxsock-bench-floor/{}/{depth}", std::process::id());
        let mut floor_abstract = || drop(bind_abstract(&raw_name));
        for reg in strategies() {
            let Some(s) = Subject::new(reg, &home, base.path()) else {
                continue;
            };
            // Bound through the box's binding, opened once and held (as a long-lived
            // runtime holds it): each bind re-checks its link, then binds.
            let held = s.open();
            let addr = held.address(&BENCH).expect("address");
            let mut bind = || {
                drop(held.listen(&BENCH).expect("bind"));
                unlink_addr(&addr);
            };
            match held.dir() {
                Some(_) => {
                    // The field's floor for a held directory: a bind at
                    // /proc/self/fd/<n>/<name> of the same real directory.
                    let real = open_dir_path(&s.layout.sockets_dir(&s.id));
                    let proc_path =
                        PathBuf::from(format!("/proc/self/fd/{}/floor.sock", real.as_raw_fd()));
                    let mut proc_fd = || {
                        drop(UnixListener::bind(&proc_path).expect("bind"));
                        std::fs::remove_file(&proc_path).expect("unlink");
                    };
                    paired(
                        &mut g,
                        "bind",
                        s.name,
                        depth,
                        &mut no_setup,
                        &mut bind,
                        &mut [
                            ("floor-direct-short", &mut floor),
                            ("floor-proc-self-fd", &mut proc_fd),
                        ],
                    );
                }
                None => paired(
                    &mut g,
                    "bind",
                    s.name,
                    depth,
                    &mut no_setup,
                    &mut bind,
                    &mut [
                        ("floor-abstract-raw", &mut floor_abstract),
                        ("floor-direct-short", &mut floor),
                    ],
                ),
            }
        }
        // The field's other techniques, against the same real directory.
        let id = BoxId::generate();
        let layout = BoxLayout::new(&home);
        boxsock_core::boxdir::create_box_dirs(&layout, &id).expect("dirs");
        let real = layout.sockets_dir(&id);
        let tmp_link = base.path().join(format!("ovs-{depth}"));
        let via_link = tmp_link.join("bench.sock");
        let mut ovs = || {
            std::os::unix::fs::symlink(&real, &tmp_link).expect("symlink");
            drop(UnixListener::bind(&via_link).expect("bind"));
            std::fs::remove_file(&via_link).expect("unlink socket");
            std::fs::remove_file(&tmp_link).expect("unlink link");
        };
        paired(
            &mut g,
            "bind",
            "ovs-temp-symlink",
            depth,
            &mut no_setup,
            &mut ovs,
            &mut [("floor-direct-short", &mut floor)],
        );
        let dirfd = open_dir_path(&real);
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}/bench.sock", dirfd.as_raw_fd()));
        let mut proc_fd = || {
            drop(UnixListener::bind(&proc_path).expect("bind"));
            std::fs::remove_file(&proc_path).expect("unlink");
        };
        paired(
            &mut g,
            "bind",
            "proc-self-fd",
            depth,
            &mut no_setup,
            &mut proc_fd,
            &mut [("floor-direct-short", &mut floor)],
        );
    }
    g.finish();
}

fn bench_connect(c: &mut Criterion) {
    let root = short_tempdir();
    let base = short_tempdir();
    let mut g = c.benchmark_group("connect");
    for (depth, home) in homes(root.path()) {
        let floor_path = base.path().join(format!("c-{depth}.sock"));
        drain_plain(UnixListener::bind(&floor_path).expect("bind floor"));
        let mut floor = || drop(UnixStream::connect(&floor_path).expect("connect"));
        for reg in strategies() {
            let Some(s) = Subject::new(reg, &home, base.path()) else {
                continue;
            };
            // A dial of a long-lived runtime: through the box's held binding (its cheap
            // re-check of the link, the connect through the held directory, the
            // listener's credentials).
            let held = s.open();
            drain(held.listen(&CONN).expect("bind"));
            let mut connect = || drop(held.connect(&CONN, None).expect("connect"));
            match held.dir() {
                Some(_) => {
                    // The field's floor: a plain connect at /proc/self/fd/<n>/<name> of
                    // the same real directory, to a listener there.
                    let real = open_dir_path(&s.layout.sockets_dir(&s.id));
                    let at = format!("/proc/self/fd/{}/floor.sock", real.as_raw_fd());
                    drain_plain(UnixListener::bind(&at).expect("bind proc-self-fd floor"));
                    let mut proc_fd = || drop(UnixStream::connect(&at).expect("connect"));
                    paired(
                        &mut g,
                        "connect",
                        s.name,
                        depth,
                        &mut no_setup,
                        &mut connect,
                        &mut [
                            ("floor-direct-short", &mut floor),
                            ("floor-proc-self-fd", &mut proc_fd),
                        ],
                    );
                    std::mem::forget(real);
                }
                None => {
                    let floors: &mut [(&str, &mut dyn FnMut())] =
                        &mut [("floor-direct-short", &mut floor)];
                    paired(&mut g, "connect", s.name, depth, &mut no_setup, &mut connect, floors)
                }
            }
        }
    }
    g.finish();
}

/// Where the time of a bind or connect through a long home goes: resolving the path.
/// `stat` of the box's real sockets directory, reached through the short link and by its
/// real path, each paired with a `stat` of a short directory. The kernel walks the link's
/// target (the home) on every bind and connect; this group measures that walk alone.
fn bench_walk(c: &mut Criterion) {
    let root = short_tempdir();
    let base = short_tempdir();
    let mut g = c.benchmark_group("walk");
    let short_dir = base.path().join("short");
    std::fs::create_dir(&short_dir).expect("short dir");
    let mut floor = || {
        std::hint::black_box(std::fs::metadata(&short_dir).expect("stat"));
    };
    for (depth, home) in homes(root.path()) {
        let Some(reg) = strategies().into_iter().find(|r| r.name == "short-symlink") else {
            return;
        };
        let Some(s) = Subject::new(reg, &home, base.path()) else {
            continue;
        };
        let link = s.open().binding_path().expect("link");
        let real = s.layout.sockets_dir(&s.id);
        let mut via_link = || {
            std::hint::black_box(std::fs::metadata(&link).expect("stat link"));
        };
        paired(
            &mut g,
            "walk",
            "stat-via-link",
            depth,
            &mut no_setup,
            &mut via_link,
            &mut [("floor-stat-short-dir", &mut floor)],
        );
        let mut via_real = || {
            std::hint::black_box(std::fs::metadata(&real).expect("stat real"));
        };
        paired(
            &mut g,
            "walk",
            "stat-real-path",
            depth,
            &mut no_setup,
            &mut via_real,
            &mut [("floor-stat-short-dir", &mut floor)],
        );
    }
    g.finish();
}

fn bench_datagram(c: &mut Criterion) {
    let root = short_tempdir();
    let base = short_tempdir();
    let mut g = c.benchmark_group("datagram");
    // Floor: a round trip between two sockets at short direct paths.
    let fa = base.path().join("fa.sock");
    let fb = base.path().join("fb.sock");
    let floor_a = UnixDatagram::bind(&fa).expect("bind");
    let floor_b = UnixDatagram::bind(&fb).expect("bind");
    let mut floor_buf = [0u8; 64];
    let mut floor = || {
        floor_a.send_to(b"ping", &fb).expect("send");
        floor_b.recv(&mut floor_buf).expect("recv");
    };
    let mut buf = [0u8; 64];
    for reg in strategies() {
        let Some(s) = Subject::new(reg, &root.path().join(reg.name), base.path()) else {
            continue;
        };
        let held = s.open();
        let a = held.listen_datagram(&socket("da")).expect("bind a");
        let bsock = held.listen_datagram(&socket("db")).expect("bind b");
        let to = held.address(&socket("db")).expect("address").to_std().expect("std addr");
        let mut round_trip = || {
            a.send_to_addr(b"ping", &to).expect("send");
            bsock.recv(&mut buf).expect("recv");
        };
        paired(
            &mut g,
            "datagram",
            s.name,
            "round-trip",
            &mut no_setup,
            &mut round_trip,
            &mut [("floor-direct-short", &mut floor)],
        );
    }
    g.finish();
}

/// A per-uid binding directory with `n` entries: live boxes of this home, plus
/// `dangling` links of boxes whose directory is gone. Returns what the routine needs to
/// recreate the dangling links.
struct SweepFixture {
    subject: Subject,
    dir: PathBuf,
    dead: Vec<(PathBuf, PathBuf)>,
}

impl SweepFixture {
    fn new(
        reg: &'static boxsock_core::registry::StrategyRegistration,
        root: &Path,
        n: usize,
        dangling: usize,
    ) -> Option<Self> {
        let base = root.join("base");
        std::fs::create_dir_all(&base).ok()?;
        let subject = Subject::new(reg, &root.join("home"), &base)?;
        let dir = subject.strategy.binding_dir()?;
        let mut dead = Vec::new();
        for i in 1..n {
            let id = BoxId::generate();
            boxsock_core::boxdir::create_box_dirs(&subject.layout, &id).expect("dirs");
            let opened = subject.strategy.clone().open_box(&subject.layout, &id, Opening::Use, &[]);
            let opened = opened.expect("open the box");
            if i <= dangling {
                let link = opened.binding_path().expect("binding path");
                let target = std::fs::read_link(&link).expect("readlink");
                boxsock_core::boxdir::remove_box_dir(&subject.layout, &id).expect("rm");
                dead.push((link, target));
            }
        }
        Some(SweepFixture { subject, dir, dead })
    }

    fn recreate_dead(&self) {
        for (link, target) in &self.dead {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
}

fn bench_sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    let mut keep = Vec::new();
    for n in [10usize, 1_000, 10_000] {
        for reg in strategies() {
            let root = short_tempdir();
            // Start-up sweep: 1% of the entries (at least one) are leftovers of crashed boxes.
            let Some(fx) = SweepFixture::new(reg, root.path(), n, (n / 100).max(1)) else {
                continue;
            };
            // Floor: a `readdir` of the same directory, with the same entries (the
            // dangling links are recreated, untimed, before every timed call).
            let dir = fx.dir.clone();
            let mut readdir = || {
                std::hint::black_box(std::fs::read_dir(&dir).expect("readdir").count());
            };
            let mut sweep = || drop(fx.subject.strategy.sweep(&fx.subject.layout).expect("sweep"));
            let param = n.to_string();
            paired(
                &mut g,
                "sweep",
                fx.subject.name,
                &param,
                &mut || fx.recreate_dead(),
                &mut sweep,
                &mut [("floor-readdir", &mut readdir)],
            );
            keep.push((root, fx));
        }
    }
    g.finish();
    // Churn: half the entries are leftovers, so the unlinks dominate; reported, no target.
    let mut g = c.benchmark_group("sweep-churn");
    g.sample_size(10);
    for reg in strategies() {
        let root = short_tempdir();
        let Some(fx) = SweepFixture::new(reg, root.path(), 1_000, 500) else {
            continue;
        };
        let dir = fx.dir.clone();
        let mut readdir = || {
            std::hint::black_box(std::fs::read_dir(&dir).expect("readdir").count());
        };
        let mut sweep = || drop(fx.subject.strategy.sweep(&fx.subject.layout).expect("sweep"));
        paired(
            &mut g,
            "sweep-churn",
            fx.subject.name,
            "1000",
            &mut || fx.recreate_dead(),
            &mut sweep,
            &mut [("floor-readdir", &mut readdir)],
        );
        keep.push((root, fx));
    }
    g.finish();
    drop(keep); // fixtures (and their temp dirs) live until every bench has run
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = binding;
    config = config();
    targets = bench_ensure, bench_bind, bench_connect, bench_walk, bench_datagram, bench_sweep
}
// Not `criterion_main!`: a measuring run records its manifest, test mode nothing.
fn main() {
    boxsock_benches::run::main("binding", &[binding]);
}
