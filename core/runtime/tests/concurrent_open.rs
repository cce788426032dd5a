//! Many processes open one home at the same instant (issue 24): a home that does not
//! exist yet, one that exists, and one whose store must be upgraded (an older schema in
//! rollback-journal mode, so the opens race to switch it to WAL and to migrate it).
//! Every open succeeds; none gets `SQLITE_BUSY` ("database is locked").
//!
//! Real processes: each worker is this test binary run again (`open_worker`), blocked
//! on its stdin until the parent releases all of them at once by closing the pipes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_core::registry::Registry;
use boxsock_runtime::store::Store;
use boxsock_runtime::{Access, LockMode, Runtime, RuntimeOptions};

const HOME_ENV: &str = "BOXSOCK_OPEN_HOME";
const ACCESS_ENV: &str = "BOXSOCK_OPEN_ACCESS";

fn options(access: Access) -> RuntimeOptions {
    // No strategy or backend: opening is what is tested (sweep and recovery still run).
    let mut o = RuntimeOptions::new(
        Registry::from_entries("strategy", []),
        Registry::from_entries("backend", []),
    );
    o.lock_mode = LockMode::Shared;
    o.lock_wait = Some(Duration::from_secs(30));
    o.health_monitor = false;
    o.access = access;
    o
}

/// Worker: wait for the parent's go (EOF on stdin), open the home, list it, print
/// `@@OPENED <n>` or `@@FAILED <error>`.
#[test]
#[ignore = "worker process of the concurrent-open tests"]
fn open_worker() {
    let Some(home) = std::env::var_os(HOME_ENV) else { return };
    let access = match std::env::var(ACCESS_ENV).as_deref() {
        Ok("read-only") => Access::ReadOnly,
        _ => Access::ReadWrite,
    };
    let mut go = Vec::new();
    std::io::stdin().read_to_end(&mut go).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(async {
        let (rt, _) = Runtime::open(PathBuf::from(&home), options(access)).await?;
        Ok::<_, boxsock_runtime::RuntimeError>(rt.list()?.boxes.len())
    });
    match r {
        Ok(n) => println!("\n@@OPENED {n}"),
        // A read-only open of a home nobody has made yet is a correct answer.
        Err(boxsock_runtime::RuntimeError::NoHome { .. }) if access == Access::ReadOnly => {
            println!("\n@@OPENED no-home")
        }
        Err(e) => println!("\n@@FAILED {e} ({e:?})"),
    }
}

/// Worker: three runtimes on one home in this process (two read-write, one read-only),
/// then another process opens the home while they are open, then they read their
/// stores again. Prints `@@OPENED <n>` or dies.
#[test]
#[ignore = "worker process of the concurrent-open tests"]
fn two_runtimes_in_one_process_worker() {
    let Some(home) = std::env::var_os(HOME_ENV) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let n = rt.block_on(async {
        let (a, _) = Runtime::open(PathBuf::from(&home), options(Access::ReadWrite)).await.unwrap();
        a.list().unwrap();
        let (b, _) = Runtime::open(PathBuf::from(&home), options(Access::ReadWrite)).await.unwrap();
        b.list().unwrap();
        let (c, _) = Runtime::open(PathBuf::from(&home), options(Access::ReadOnly)).await.unwrap();
        c.list().unwrap();
        // SQLite's lock on the shared WAL index (the "DMS" byte of `-shm`) says that a
        // process uses the index; another process that finds it unlocked resets it.
        let o = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dms_probe_worker",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(HOME_ENV, &home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("@@DMS read-locked"),
            "the WAL index lock of this process is gone: {out}"
        );
        let o = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "open_worker", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(HOME_ENV, &home)
            .env(ACCESS_ENV, "read-write")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("@@OPENED"),
            "the other process failed: {o:?}"
        );
        for _ in 0..3 {
            a.list().unwrap();
            b.list().unwrap();
            c.list().unwrap();
        }
        a.list().unwrap().boxes.len()
    });
    println!("\n@@OPENED {n}");
}

/// Worker: print how the DMS byte of `<home>/boxsock.db-shm` is locked by other
/// processes (`F_GETLK`; offset 128: SQLite's `UNIX_SHM_DMS`).
#[test]
#[ignore = "worker process of the concurrent-open tests"]
fn dms_probe_worker() {
    let Some(home) = std::env::var_os(HOME_ENV) else { return };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(&home).join("boxsock.db-shm"))
        .unwrap();
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 128,
        l_len: 1,
        l_pid: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETLK on a descriptor we own, with a valid, initialised flock struct the
    // kernel writes into for the duration of the call.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    assert_eq!(r, 0);
    let what = match i32::from(fl.l_type) {
        libc::F_RDLCK => "read-locked",
        libc::F_WRLCK => "write-locked",
        _ => "unlocked",
    };
    println!("\n@@DMS {what}");
}

/// Issue 24, found by the load test: a second store opened in a process whose first
/// store was open closed a descriptor of the store's files, which dropped the first
/// connection's SQLite locks; another process then reset the shared WAL index under it
/// (SIGBUS). Ten trials, a new home each.
#[test]
fn a_second_runtime_in_a_process_keeps_the_first_ones_store_locks() {
    let root = tempfile::tempdir().unwrap();
    for t in 0..10 {
        let home = root.path().join(format!("home-{t}"));
        let o = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "two_runtimes_in_one_process_worker",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(HOME_ENV, &home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("@@OPENED"),
            "trial {t}: {:?}\n{out}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// What one trial's workers printed: failures (with their messages).
fn race(home: &Path, writers: usize, readers: usize) -> Vec<String> {
    let mut children = Vec::new();
    for i in 0..writers + readers {
        let access = if i < writers { "read-write" } else { "read-only" };
        let c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "open_worker", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(HOME_ENV, home)
            .env(ACCESS_ENV, access)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(c);
    }
    // Let every worker reach its read, then release them together.
    std::thread::sleep(Duration::from_millis(100));
    let mut pipes: Vec<_> = children.iter_mut().map(|c| c.stdin.take().unwrap()).collect();
    for p in &mut pipes {
        let _ = p.flush();
    }
    drop(pipes);
    let mut failures = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let line = out.lines().find(|l| l.starts_with("@@OPENED") || l.starts_with("@@FAILED"));
        match line {
            Some(l) if l.starts_with("@@OPENED") && o.status.success() => {}
            Some(l) => failures.push(l.to_owned()),
            None => failures.push(format!(
                "worker died: {:?}: {out}{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            )),
        }
    }
    failures
}

/// Run `trials` races of `writers` + `readers` processes on homes made by `prepare`;
/// fail listing every failure, with how many trials had one.
fn trials(what: &str, trials: usize, writers: usize, readers: usize, prepare: impl Fn(&Path)) {
    let t0 = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let mut failed_trials = 0;
    let mut all = Vec::new();
    for t in 0..trials {
        let home = root.path().join(format!("home-{t}"));
        prepare(&home);
        let f = race(&home, writers, readers);
        if !f.is_empty() {
            failed_trials += 1;
            all.extend(f);
        }
        // Every trial ends with a home at the current schema that a new open accepts.
        let s = Store::open(home.join("boxsock.db")).unwrap();
        assert!(s.list().unwrap().boxes.is_empty());
    }
    let busy = all.iter().filter(|l| l.contains("DatabaseBusy")).count();
    eprintln!(
        "{what}: {trials} trials of {writers} writing + {readers} read-only processes, {failed_trials} with a failure; \
         {} failed opens, {busy} of them SQLITE_BUSY; {:.1} s",
        all.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        all.is_empty(),
        "{what}: {failed_trials} of {trials} trials had failures:\n{}",
        all.join("\n")
    );
}

#[test]
fn sixteen_processes_create_a_home_that_does_not_exist_yet() {
    trials("fresh home", 40, 12, 4, |_| {});
}

#[test]
fn sixteen_processes_open_an_existing_home() {
    trials("existing home", 10, 12, 4, |home| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(Runtime::open(home.to_path_buf(), options(Access::ReadWrite))).unwrap();
    });
}

#[test]
fn sixteen_processes_upgrade_an_old_store_in_rollback_mode() {
    trials("upgrade", 40, 12, 4, |home| {
        // A home of an older boxsock: the marker, `boxes/`, and a schema-1 store whose
        // journal mode is still the default (delete).
        std::fs::create_dir(home).unwrap();
        std::fs::write(home.join(".boxsock-home"), b"boxsock home\n").unwrap();
        std::fs::create_dir(home.join("boxes")).unwrap();
        let c = rusqlite::Connection::open(home.join("boxsock.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE boxes (id TEXT PRIMARY KEY NOT NULL, name TEXT UNIQUE, state TEXT NOT NULL,
             config TEXT NOT NULL, pid INTEGER, start_time INTEGER, exit_code INTEGER,
             created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        drop(c);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.join("boxsock.db"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    });
}
