//! The shim's behaviour when its VMM fails inside, and its jail diagnosis, without a
//! guest (the real-VM tier, tests/vm, covers both on booted guests).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_core::backend::BackendConfig;
use boxsock_libkrun::{Libkrun, LibkrunConfig};
use boxsock_test_support::{Need, skip};
use common::Fixture;

const SHIM: &str = env!("CARGO_BIN_EXE_boxsock-krun-shim");

fn backend(opts: &[(&str, &str)]) -> Libkrun {
    let cfg = BackendConfig {
        helper_dir: Some(PathBuf::from(SHIM).parent().unwrap().to_path_buf()),
        options: opts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    Libkrun::new(LibkrunConfig::from_backend_config(&cfg).unwrap())
}

fn wait_exit(pid: i32, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        match nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Some(c),
            Ok(nix::sys::wait::WaitStatus::Signaled(..)) => return None,
            _ if Instant::now() > deadline => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                panic!("pid {pid} still running after {within:?}");
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Regression (issue 11): libkrun's vCPU thread panicked (`Failed to activate device:
/// BadActivate`) while the shim's main thread stayed blocked in `krun_start_enter`, so
/// the box looked alive and `start` waited out its whole ready timeout.
#[test]
fn a_panic_in_any_shim_thread_ends_the_shim_at_once_with_the_panic_on_stderr() {
    let t0 = Instant::now();
    let mut child = Command::new(SHIM)
        .env("BOXSOCK_SHIM_TEST_PANIC", "Failed to activate device: BadActivate")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let code = wait_exit(child.id() as i32, Duration::from_secs(5));
    // Reaped by wait_exit; this only satisfies the Child's contract.
    let _ = child.try_wait();
    let elapsed = t0.elapsed();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(code, Some(70), "stderr: {err}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert!(
        err.contains("panic in thread \"test-vcpu\"") && err.contains("BadActivate"),
        "stderr: {err}"
    );
}

fn jail_probe_log(jail: &str, probe: &std::path::Path) -> String {
    let f = Fixture::new(120);
    f.ensure();
    std::fs::write(f.layout.rootfs_dir(&f.id).join("boxsock-agent"), b"#!/bin/true\n").unwrap();
    let b = backend(&[
        ("configure_only", "on"),
        ("jail", jail),
        ("jail_probe", probe.to_str().unwrap()),
    ]);
    let launched = b.launch_unchecked(&f.launch_spec_verified(false)).unwrap();
    let code = wait_exit(launched.process.pid(), Duration::from_secs(20));
    let log = std::fs::read_to_string(f.layout.log_file(&f.id)).unwrap();
    assert_eq!(code, Some(0), "shim log: {log}");
    log
}

/// The diagnostic `jail_probe` shows, from inside the shim's own process, that a write
/// outside its grants fails with the jail on and succeeds with it off.
#[test]
fn jail_probe_shows_a_write_outside_the_grants_denied_only_with_the_jail_on() {
    if landlock_abi() < 1 {
        skip(Need::Kernel("Landlock"), "Landlock is not enabled in this kernel");
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let probe = outside.path().join("escape");
    let log = jail_probe_log("on", &probe);
    assert!(
        log.contains(&format!(
            "jail probe: writing {} was denied",
            boxsock_core::echo::path(&probe)
        )),
        "{log}"
    );
    assert!(!probe.exists(), "the jailed shim created {}", probe.display());
    let log = jail_probe_log("off", &probe);
    assert!(
        log.contains(&format!(
            "jail probe: writing {} succeeded",
            boxsock_core::echo::path(&probe)
        )),
        "{log}"
    );
    assert!(!probe.exists(), "the probe file was not cleaned up");
}

#[test]
fn a_relative_jail_probe_is_refused_naming_the_option() {
    let cfg = BackendConfig {
        helper_dir: None,
        options: [("jail_probe".to_owned(), "rel/x".to_owned())].into_iter().collect(),
    };
    let err = LibkrunConfig::from_backend_config(&cfg).unwrap_err();
    assert!(err.to_string().contains("jail_probe") && err.to_string().contains("rel/x"), "{err}");
}

fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only
    // returns the ABI version (or -1); it reads no memory.
    unsafe {
        libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32)
    }
}
