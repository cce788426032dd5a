//! What the `boxsock-oci` suites share: a bundle of a busybox root, the runtime binary,
//! a deep `--root`, and running `boxsock-oci` as an engine does.

#![allow(dead_code)] // each suite uses part of it

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub fn oci_bin() -> PathBuf {
    // Its agent must sit beside it (it finds it next to its own executable).
    boxsock_host::dev::built_binaries(&["boxsock-agent"]);
    PathBuf::from(env!("CARGO_BIN_EXE_boxsock-oci"))
}

/// The busybox applets the tests' roots link.
pub const APPLETS: &[&str] =
    &["sh", "echo", "cat", "sleep", "true", "false", "id", "hostname", "ls", "env", "pwd", "ps"];

/// A busybox root at `dir` (its `bin/` linking [`APPLETS`]).
pub fn busybox_root(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    for d in ["etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// A test's directory: a deep `--root` (longer than `sun_path` by itself) and bundles.
pub struct Env {
    /// Holds everything.
    pub tmp: tempfile::TempDir,
    /// `--root`.
    pub root: PathBuf,
    /// The busybox root the bundles share.
    pub rootfs: PathBuf,
}

impl Env {
    /// A new one (as root: the sandbox backend's namespaces).
    pub fn new() -> Env {
        assert!(nix::unistd::geteuid().is_root(), "the boxsock-oci suites run as root");
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run").join("x".repeat(60)).join("y".repeat(60)).join("oci");
        let rootfs = tmp.path().join("rootfs");
        busybox_root(&rootfs);
        Env { tmp, root, rootfs }
    }

    /// A bundle `name` running `args`, its `config.json` from `config` (a JSON object
    /// merged over the defaults: process.args, root.path, readonly false).
    pub fn bundle(&self, name: &str, args: &[&str], extra: serde_json::Value) -> PathBuf {
        let dir = self.tmp.path().join("bundles").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": self.rootfs, "readonly": false },
            "process": {
                "args": args,
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/",
                "user": { "uid": 0, "gid": 0 },
            },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs" },
            ],
            "linux": { "namespaces": [ { "type": "pid" }, { "type": "mount" } ] },
        });
        merge(&mut config, extra);
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap())
            .unwrap();
        dir
    }

    /// `boxsock-oci --root <root> ARGS`, its output collected.
    pub fn oci(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// `boxsock-oci --root <root> ARGS`, as a command to adjust.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(oci_bin());
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// The OCI state of `id`.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.oci(&["state", id]);
        assert!(out.status.success(), "state {id}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Assert a command succeeded, showing its output if not.
pub fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reap `pid` (a process this subreaper inherited: a supervisor once `create` or `exec`
/// exited), within `limit`.
pub fn reap(pid: i32, limit: std::time::Duration) -> nix::sys::wait::WaitStatus {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let t0 = std::time::Instant::now();
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {
                assert!(t0.elapsed() < limit, "process {pid} still running after {limit:?}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            s => return s,
        }
    }
}

/// The pid in a `--pid-file`.
pub fn pid_of(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}
