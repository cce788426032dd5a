//! The fixture the sandbox's root suites share (`escape`, `limits`, `volumes_ports`): a
//! temporary home, link base and busybox root, a runtime with the sandbox and host
//! backends, and the boxes' processes killed if a test fails before removing them.

#![allow(dead_code)] // each suite uses part of it

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use boxsock_core::backend::BackendConfig;
use boxsock_core::binding::StrategyConfig;
use boxsock_core::registry::Registry;
use boxsock_runtime::{Runtime, RuntimeOptions};

/// A test's home, link base and busybox root.
pub struct Env {
    /// Holds everything below.
    pub tmp: tempfile::TempDir,
    /// The runtime's home.
    pub home: PathBuf,
    /// The busybox root (`--rootfs`).
    pub root: PathBuf,
    /// The boxes' processes, killed if a test fails before removing them.
    pub pids: std::sync::Mutex<Vec<i32>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in self.pids.lock().unwrap().drain(..) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Env {
    /// As root (`suite` names the tests in the assertion): a busybox root at
    /// `<tmp>/<root>` with `applets` linked in `bin/`.
    pub fn with_root(suite: &str, root: &str, applets: &[&str]) -> Env {
        assert!(nix::unistd::geteuid().is_root(), "the sandbox {suite} tests run as root");
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let root = tmp.path().join(root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for a in applets {
            symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("links")).unwrap();
        Env { tmp, home, root, pids: Default::default() }
    }

    /// A runtime on this home with the sandbox and host backends, short-symlink (and,
    /// with `abstract_too`, abstract), and these backend options.
    pub async fn open_runtime(&self, options: &[(&str, &str)], abstract_too: bool) -> Runtime {
        let helper_dir = boxsock_host::dev::built_binaries(&["boxsock-agent"]);
        let backends = Registry::from_entries(
            "backend",
            [&boxsock_sandbox::REGISTRATION, &boxsock_host::REGISTRATION],
        );
        let strategies = if abstract_too {
            Registry::from_entries(
                "strategy",
                [&boxsock_short_symlink::REGISTRATION, &boxsock_abstract::REGISTRATION],
            )
        } else {
            Registry::from_entries("strategy", [&boxsock_short_symlink::REGISTRATION])
        };
        let mut o = RuntimeOptions::new(strategies, backends);
        o.strategy_config =
            StrategyConfig { base_dir: self.tmp.path().join("links"), ..StrategyConfig::default() };
        o.backend_config = BackendConfig {
            helper_dir: Some(helper_dir),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        Runtime::open(&self.home, o).await.unwrap().0
    }

    /// Kill box `id`'s process with the test's others if the test fails.
    pub fn track(&self, rt: &Runtime, id: &str) {
        if let Some(pid) = rt.inspect(id).unwrap().pid {
            self.pids.lock().unwrap().push(pid);
        }
    }
}
