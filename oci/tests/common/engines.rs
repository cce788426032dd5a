//! The engines the `boxsock-oci` suites drive, as users run them: podman (with conmon)
//! and a private containerd (`ctr`, `containerd-shim-runc-v2`), each isolated from the
//! machine's own engine state; the image both load (an OCI archive of a busybox root the
//! test builds); a pty to play a user on; the runtime under test as a path, so that the
//! same scenario runs with `boxsock-oci` and, as the positive control, with runc.
//!
//! A suite includes it beside `common` (`#[path = "common/engines.rs"] mod engines;`).

#![allow(dead_code)] // each suite uses part of it

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxsock_test_support::{Need, skip};
use serde_json::json;
use sha2::Digest as _;

use crate::common::busybox_root;

/// The positive control's runtime: Debian's runc, which both engines drive by default.
pub const RUNC: &str = "/usr/sbin/runc";

/// The image every scenario runs, in both engines' stores.
pub const IMAGE: &str = "localhost/boxsock-test/busybox:1";

/// The longest an engine command may take before the test fails naming it. A bound
/// against hangs, not a speed check: commands take well under a second here.
pub const LIMIT: Duration = Duration::from_secs(120);

/// The busybox applets the image links beyond [`crate::common::APPLETS`]: an HTTP
/// server for `-p`, and what the scenarios' shells call.
pub const MORE_APPLETS: &[&str] =
    &["httpd", "nc", "kill", "tty", "touch", "mkdir", "rm", "grep", "wc", "head", "test"];

/// The runc positive control's runtime, or `None` after a skip (a failure under CI).
pub fn runc() -> Option<PathBuf> {
    if Path::new(RUNC).is_file() {
        Some(PathBuf::from(RUNC))
    } else {
        skip(Need::Program { name: "runc", package: "runc" }, format!("no {RUNC}"));
        None
    }
}

/// Whether `name` is on `PATH` (or an absolute path that exists); skips when not.
fn need_program(name: &'static str, package: &'static str) -> bool {
    let found = if name.starts_with('/') {
        Path::new(name).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if !found {
        skip(Need::Program { name, package }, format!("`{name}` is not installed"));
    }
    found
}

/// Root, or a skip (a failure under CI, which runs as root).
fn need_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        skip(Need::Root, "the engines run rootful containers");
    }
    root
}

// ---------------------------------------------------------------------------------------
// Running engine commands.

/// Run `cmd` with stdin from `/dev/null` (unless set), its output collected through
/// files (an engine's daemonised helpers may keep a pipe open long after the command
/// exits), failing the test if it runs past [`LIMIT`].
#[track_caller]
pub fn run_limited(cmd: &mut Command) -> Output {
    try_run(cmd, LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_limited`] that reports instead of panicking (for `Drop`), within `limit`.
pub fn try_run(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let files = || -> std::io::Result<[File; 4]> {
        let (out, err) = (tempfile::tempfile()?, tempfile::tempfile()?);
        Ok([out.try_clone()?, err.try_clone()?, out, err])
    };
    let [o, e, mut out, mut err] = files().map_err(|e| format!("cannot run {what}: {e}"))?;
    cmd.stdout(o).stderr(e);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let status = wait_limited(&mut child, limit);
    let read = |f: &mut File| {
        let mut v = Vec::new();
        let _ = f.rewind().and_then(|_| f.read_to_end(&mut v));
        v
    };
    let (stdout, stderr) = (read(&mut out), read(&mut err));
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(format!(
            "{what} still running after {limit:?} (killed)\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// Wait for `child` up to `limit`; on expiry kill it, reap it and return `None`.
pub fn wait_limited(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `f` until it returns `Some`, up to [`LIMIT`]; the panic names `what`.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, failing (with the output) if it was something else.
#[track_caller]
pub fn code(what: &str, o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

// ---------------------------------------------------------------------------------------
// The image.

/// The image's root at `dir`: [`busybox_root`] plus [`MORE_APPLETS`], `/www` with a
/// page, and `/root` (HOME of `/etc/passwd`'s root).
pub fn image_root(dir: &Path) {
    busybox_root(dir);
    for a in MORE_APPLETS {
        let link = dir.join("bin").join(a);
        if !link.exists() {
            symlink("busybox", link).unwrap();
        }
    }
    for d in ["www", "root", "run", "var/tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("www/index.html"), "image page\n").unwrap();
}

/// An OCI archive (`oci-archive:` as skopeo writes it: a tar of an image layout) of
/// [`image_root`] at `path`, named [`IMAGE`] in its index: what `podman load` and
/// `ctr images import` both take. Written by hand, one uncompressed layer.
pub fn image_archive(path: &Path) {
    let root = tempfile::tempdir().unwrap();
    image_root(root.path());
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.mode(tar::HeaderMode::Deterministic);
    layer.append_dir_all(".", root.path()).unwrap();
    let layer = layer.into_inner().unwrap();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |bytes: Vec<u8>| {
        let d = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
        let size = bytes.len();
        blobs.push((d.clone(), bytes));
        (d, size)
    };
    let (diff, layer_size) = put(layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    });
    let (config_d, config_size) = put(serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff, "size": layer_size}],
    });
    let (manifest_d, manifest_size) = put(serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_d, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": IMAGE}}],
    });
    let mut archive = tar::Builder::new(File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut h, name, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &serde_json::to_vec(&index).unwrap());
    for (d, bytes) in &blobs {
        add(&format!("blobs/sha256/{}", &d["sha256:".len()..]), bytes);
    }
    archive.into_inner().unwrap().sync_all().unwrap();
}

// ---------------------------------------------------------------------------------------
// Leaving nothing behind.

/// Unmount every mount at or under `dir` (deepest first, lazily: a busy one goes when
/// its last user does), so that removing `dir` never crosses into a mounted file system.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_point(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pids of processes whose command line contains `needle` (a path only this test
/// made: proof that the process is one of ours), other than this process.
fn processes_naming(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// The time since boot in clock ticks, the unit of a process's start time in
/// `/proc/<pid>/stat`.
fn ticks_now() -> u64 {
    // SAFETY: sysconf reads a constant; no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = up.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (secs * hz) as u64
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn started_at(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold anything.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// SIGKILL the processes named by the pid files a runtime wrote under our directory
/// (the container's process, or boxsock-oci's supervisor), when the engine's own
/// clean-up left them alive (a runtime whose `kill` or `delete` failed). A pid is
/// ours only if its process started after `since` (not a reused pid).
fn kill_pid_files(files: impl IntoIterator<Item = PathBuf>, since: u64) {
    for f in files {
        let Some(pid) = std::fs::read_to_string(&f).ok().and_then(|s| s.trim().parse().ok()) else {
            continue;
        };
        if pid > 1 && started_at(pid).is_some_and(|t| t >= since) {
            kill_all(&[pid]);
        }
    }
}

/// The entries of `dir` (none if it cannot be read).
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

/// `pid` and all its descendants (children lists of every thread, recursively),
/// descendants first. conmon and the containerd shim are subreapers: a container's
/// processes (runc's init, boxsock-oci's supervisor) end up as their children.
fn tree(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in entries(Path::new(&format!("/proc/{pid}/task"))) {
        let children = std::fs::read_to_string(task.join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.extend(tree(child));
        }
    }
    out.push(pid);
    out
}

/// SIGKILL `pids`, then wait (a little) until each is gone or a zombie: a cgroup holding
/// a dying process cannot be removed yet.
fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let alive = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rfind(')').and_then(|i| s.get(i + 2..i + 3)) != Some("Z"))
    };
    let t0 = Instant::now();
    while pids.iter().any(alive) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// podman.

/// `run`/`create` options every podman container gets: podman's default rlimits
/// (1048576 open files) exceed this machine kind's hard limits, and runc fails the
/// container with `setrlimit … Operation not permitted` without these.
pub const ULIMITS: [&str; 4] = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

/// Rootful podman isolated in a temp directory: its own storage (graph root, run root,
/// tmp dir), containers.conf, storage.conf, registries.conf (no registry: nothing is
/// ever pulled) and events file; cgroupfs; `--runtime` the path under test.
///
/// What it shares with the machine is what every rootful podman shares: the network.
/// The default network's `podman0` bridge, netavark's iptables chains, its IPAM
/// (`/run/containers/networks`), `/run/netns/` entries while a container runs, and the
/// lock that serialises their set-up and tear-down: `netavark.lock` in the network
/// config dir (`/etc/containers/networks`). A private config dir would give each test
/// its own lock, and concurrent tests then race on the shared chains (seen here:
/// `iptables: Chain already exists`, `No chain/target/match by that name`). Also the
/// runtime's own default state root (podman passes no `--root` to the runtime).
pub struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    /// When it was made, in clock ticks since boot.
    since: u64,
}

impl Podman {
    /// A fresh podman whose containers run under `runtime`, with [`IMAGE`] loaded; `None`
    /// after a skip (a failure under CI).
    pub fn new(runtime: &Path) -> Option<Podman> {
        if !(need_root()
            && need_program("podman", "podman")
            && need_program("conmon", "conmon")
            && need_program("/usr/lib/podman/netavark", "netavark")
            && need_program("iptables", "iptables"))
        {
            return None;
        }
        let since = ticks_now();
        let dir = tempfile::Builder::new().prefix("podman").tempdir().unwrap();
        let d = dir.path();
        for sub in ["root", "run", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\nlog_driver = \"k8s-file\"\n\n[engine]\ncgroup_manager = \
                 \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{}\"\n\
                 \n[network]\nnetwork_backend = \"netavark\"\n",
                d.join("events.log").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("run").display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
        let p = Podman { dir, runtime: runtime.to_owned(), since };
        let archive = p.dir.path().join("image.tar");
        image_archive(&archive);
        p.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
        Some(p)
    }

    /// The temp directory everything of this podman is in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman <global flags> ARGS`, to adjust and spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// `podman ARGS`, bounded by [`LIMIT`].
    pub fn podman(&self, args: &[&str]) -> Output {
        run_limited(&mut self.command(args))
    }

    /// `podman ARGS`, which must succeed; its stdout trimmed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        code(&format!("podman {}", args.join(" ")), &o, 0);
        stdout(&o).trim().to_owned()
    }

    /// `run --pull never ULIMITS OPTS IMAGE CMD`, as arguments.
    pub fn run_args<'a>(opts: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run", "--pull", "never"];
        v.extend_from_slice(&ULIMITS);
        v.extend_from_slice(opts);
        v.push(IMAGE);
        v.extend_from_slice(cmd);
        v
    }

    /// `podman run --pull never ULIMITS OPTS IMAGE CMD`, bounded.
    pub fn run(&self, opts: &[&str], cmd: &[&str]) -> Output {
        self.podman(&Self::run_args(opts, cmd))
    }

    /// `podman inspect --format FORMAT ID`.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, id])
    }

    /// The config.json podman wrote for container `id` (its bundle, under the graph
    /// root while the container exists).
    pub fn config_json(&self, id: &str) -> serde_json::Value {
        let p = self.dir.path().join("root/overlay-containers").join(id).join("userdata");
        serde_json::from_slice(&std::fs::read(p.join("config.json")).unwrap()).unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let ids = try_run(&mut self.command(&["ps", "-a", "-q", "--no-trunc"]), LIMIT)
            .map(|o| stdout(&o).split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default();
        // Every container, running or not, through the runtime (`delete --force`).
        let rm = try_run(&mut self.command(&["rm", "--all", "--force", "--time", "0"]), LIMIT);
        if let Err(e) = rm {
            eprintln!("podman cleanup: {e}");
        }
        // A conmon that outlived that (a runtime that never let its container die) names
        // our directory in its arguments; nothing else does. Its tree holds the container.
        let d = self.dir.path().to_string_lossy().into_owned();
        for conmon in processes_naming(&format!("{d}/")) {
            kill_all(&tree(conmon));
        }
        // Containers (and execs) the runtime did not end: their pid files.
        let run = entries(&self.dir.path().join("run/overlay-containers"));
        let root = entries(&self.dir.path().join("root/overlay-containers"));
        let execs = root.iter().flat_map(|c| entries(&c.join("userdata")));
        let files = run.iter().map(|c| c.join("userdata/pidfile"));
        kill_pid_files(files.chain(execs.map(|e| e.join("exec_pid"))), self.since);
        unmount_under(self.dir.path());
        // The cgroups runc makes under cgroupfs (`libpod_parent/libpod-<id>`) stay when
        // its `delete` failed; those of our containers go once empty.
        for controller in entries(Path::new("/sys/fs/cgroup")) {
            for id in &ids {
                let _ = std::fs::remove_dir(
                    controller.join("libpod_parent").join(format!("libpod-{id}")),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// containerd.

/// The `ctr` namespace prefix; each daemon adds its directory's unique suffix, so that
/// the cgroups runc makes (`/<namespace>/<id>`) are this test's alone.
const NAMESPACE_PREFIX: &str = "bst";

/// A private containerd: its root, state, gRPC and ttrpc sockets in a short temp
/// directory under /tmp (`/tmp/bscXXXXXX/s`: the socket path must fit in `sun_path`'s
/// 108 bytes, and containerd binds it directly), CRI and the `/opt/containerd` plugin
/// off. `ctr` commands get `--address` and a namespace unique to it; tasks run under the
/// runtime under test with `--runc-root` deep under the temp directory (containerd
/// appends the namespace) and FIFOs in it. Killed on drop with the shims it started.
///
/// What it shares with the machine: `containerd-shim-runc-v2` binds its socket in
/// `/run/containerd/s/` (fixed in containerd 1.6; the name is a hash of our address,
/// namespace and id), and `ctr` puts a tty's console socket under /tmp.
pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    runtime: PathBuf,
    namespace: String,
    /// When it was made, in clock ticks since boot.
    since: u64,
}

impl Containerd {
    /// A started containerd whose tasks run under `runtime`, with [`IMAGE`] imported;
    /// `None` after a skip (a failure under CI).
    pub fn new(runtime: &Path) -> Option<Containerd> {
        if !(need_root()
            && need_program("containerd", "containerd")
            && need_program("ctr", "containerd")
            && need_program("containerd-shim-runc-v2", "containerd"))
        {
            return None;
        }
        let since = ticks_now();
        let dir = tempfile::Builder::new().prefix("bsc").tempdir_in("/tmp").unwrap();
        let d = dir.path();
        let suffix = d.file_name().unwrap().to_string_lossy()["bsc".len()..].to_lowercase();
        let namespace = format!("{NAMESPACE_PREFIX}-{suffix}");
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \
                 \"io.containerd.internal.v1.opt\", \"io.containerd.snapshotter.v1.btrfs\", \
                 \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.aufs\", \
                 \"io.containerd.snapshotter.v1.devmapper\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("s").display(),
                ttrpc = d.join("t").display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("fifo")).unwrap();
        let log = File::create(d.join("containerd.log")).unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(d.join("config.toml"));
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let daemon = cmd.spawn().expect("spawn containerd");
        let c = Containerd { dir, daemon, runtime: runtime.to_owned(), namespace, since };
        c.wait_ready();
        let archive = c.dir.path().join("image.tar");
        image_archive(&archive);
        c.ok(&["images", "import", archive.to_str().unwrap()]);
        Some(c)
    }

    fn wait_ready(&self) {
        let t0 = Instant::now();
        loop {
            let o = run_limited(&mut self.command(&["version"]));
            if o.status.success() {
                return;
            }
            assert!(
                t0.elapsed() < LIMIT,
                "containerd not serving on {} after {LIMIT:?}: {}\n{}",
                self.dir.path().join("s").display(),
                stderr(&o),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The temp directory everything of this containerd is in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `--runc-root` its tasks get: deep, as engines' state roots are (containerd
    /// appends `/<namespace>`).
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("r".repeat(100)).join("runtime")
    }

    /// `ctr --address … --namespace … ARGS`, to adjust and spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("s"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// `ctr ARGS`, bounded by [`LIMIT`].
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_limited(&mut self.command(args))
    }

    /// `ctr ARGS`, which must succeed; its stdout trimmed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        code(&format!("ctr {}", args.join(" ")), &o, 0);
        stdout(&o).trim().to_owned()
    }

    /// `ctr run --runc-binary RUNTIME --runc-root … --fifo-dir … OPTS IMAGE ID CMD`.
    pub fn run(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Output {
        let root = self.runtime_root();
        let fifo = self.dir.path().join("fifo");
        let mut c = self.command(&["run"]);
        c.arg("--runc-binary")
            .arg(&self.runtime)
            .arg("--runc-root")
            .arg(root)
            .arg("--fifo-dir")
            .arg(fifo)
            .args(opts)
            .arg(IMAGE)
            .arg(id)
            .args(cmd);
        run_limited(&mut c)
    }

    /// `ctr task exec --fifo-dir … --exec-id EXEC_ID ID CMD`.
    pub fn exec(&self, id: &str, exec_id: &str, cmd: &[&str]) -> Output {
        let mut c = self.command(&["task", "exec", "--exec-id", exec_id, "--fifo-dir"]);
        c.arg(self.dir.path().join("fifo")).arg(id).args(cmd);
        run_limited(&mut c)
    }

    /// The STATUS column of `ctr task ls` for `id` (`RUNNING`, `STOPPED`, …), if listed.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let ls = self.ok(&["task", "ls"]);
        ls.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
    }

    /// The config.json containerd wrote for task `id` (its bundle, under the state dir).
    pub fn config_json(&self, id: &str) -> serde_json::Value {
        let p = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
            .join("config.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks through the runtime (kill, delete), then their containers, while the
        // daemon still serves.
        let ids = |args: &[&str]| -> Vec<String> {
            try_run(&mut self.command(args), LIMIT)
                .map(|o| stdout(&o).split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let quiet = |args: &[&str]| {
            let _ = try_run(&mut self.command(args), LIMIT);
        };
        for id in ids(&["task", "ls", "-q"]) {
            quiet(&["task", "kill", "-s", "SIGKILL", &id]);
            quiet(&["task", "delete", "--force", &id]);
        }
        for id in ids(&["container", "ls", "-q"]) {
            quiet(&["container", "delete", &id]);
        }
        let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // Past the limit, wait_limited kills and reaps it.
        let _ = wait_limited(&mut self.daemon, Duration::from_secs(10));
        // Shims it started name our socket (`-address /tmp/bscXXXXXX/s`); they outlive
        // the daemon by design. Their trees hold the tasks a runtime did not end.
        let sock = self.dir.path().join("s").to_string_lossy().into_owned();
        for shim in processes_naming(&format!("-address {sock} ")) {
            kill_all(&tree(shim));
        }
        // Tasks (and execs) the runtime did not end: the pid files in their bundles.
        let tasks = self.dir.path().join("state/io.containerd.runtime.v2.task");
        let files = entries(&tasks.join(&self.namespace))
            .into_iter()
            .flat_map(|bundle| entries(&bundle))
            .filter(|f| f.extension().is_some_and(|e| e == "pid"));
        kill_pid_files(files, self.since);
        unmount_under(self.dir.path());
        // The cgroups runc made for this namespace (`/<namespace>/<id>`: the id's is
        // removed by a `delete` that worked, the namespace's never); ours alone, removed
        // when empty.
        let cgroups = PathBuf::from("/sys/fs/cgroup");
        let mut hierarchies = entries(&cgroups);
        hierarchies.push(cgroups);
        for ns in hierarchies.iter().map(|c| c.join(&self.namespace)) {
            for task in entries(&ns).into_iter().filter(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(task);
            }
            let _ = std::fs::remove_dir(ns);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A terminal.

/// A pty whose slave is the controlling terminal of a spawned engine client (`podman
/// run -it`), and everything that appeared on its master: the test plays the user.
pub struct Terminal {
    master: File,
    _slave: OwnedFd,
    screen: Arc<Mutex<Vec<u8>>>,
    child: Child,
}

impl Terminal {
    /// Spawn `cmd` with the pty's slave as stdin, stdout, stderr and controlling tty.
    pub fn spawn(mut cmd: Command) -> Terminal {
        let ws = libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(&ws, None).unwrap();
        let s = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        cmd.stdin(s(&pty.slave)).stdout(s(&pty.slave)).stderr(s(&pty.slave));
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe calls on the
        // child's own descriptors.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let master = File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        // Reads until the test ends (the test keeps a slave open, so no EOF comes).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal { master, _slave: pty.slave, screen, child }
    }

    /// What appeared on the terminal so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Wait until the screen satisfies `pred`; fails at once if the client exits first.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let t0 = Instant::now();
        while !pred(&self.text()) {
            if let Ok(Some(s)) = self.child.try_wait() {
                // What it wrote before exiting may still be on its way to the screen.
                std::thread::sleep(Duration::from_millis(200));
                if !pred(&self.text()) {
                    panic!("the client exited ({s}) before {what}: {:?}", self.text());
                }
                return;
            }
            assert!(t0.elapsed() < LIMIT, "no {what} on the terminal: {:?}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Type `bytes`.
    pub fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// The client's exit code, once it exits.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let s = wait_limited(&mut self.child, LIMIT);
        assert!(s.is_some(), "the client did not exit: {:?}", self.text());
        s.unwrap().code()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Ports.

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /` from 127.0.0.1:`port`: the whole response, or `None` if nothing answered.
pub fn http_get(port: u16) -> Option<String> {
    use std::net::TcpStream;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).ok()?;
    (!v.is_empty()).then(|| String::from_utf8_lossy(&v).into_owned())
}

/// Each scenario as a test under boxsock-oci and under runc.
#[allow(unused_macros)]
macro_rules! under_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod boxsock_oci {
            $(#[test]
            fn $name() {
                super::$name(&crate::common::oci_bin());
            })*
        }
        mod runc {
            $(#[test]
            fn $name() {
                if let Some(r) = crate::engines::runc() {
                    super::$name(&r);
                }
            })*
        }
    };
}
