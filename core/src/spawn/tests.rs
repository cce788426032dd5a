//! The spawn helper on real processes: what the child holds is read from
//! `/proc/<child>/fd` once it sleeps in the program it was exec'ed into.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::*;
use crate::process::{ProcessIdentity, read_stat};

/// A file of its own (distinct inode) opened close-on-exec at the lowest free number at
/// or above `at`; returns the descriptor and the file's inode.
fn file_at(dir: &tempfile::TempDir, name: &str, at: RawFd) -> (OwnedFd, u64) {
    let f = std::fs::File::create(dir.path().join(name)).unwrap();
    let ino = f.metadata().unwrap().ino();
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor of ours, or -1 (checked).
    let fd = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, at) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just made and nothing else owns it.
    (unsafe { OwnedFd::from_raw_fd(fd) }, ino)
}

/// Wait until `pid` sleeps (its program runs, past the loader), then its descriptors
/// and the inode each refers to.
fn fds_of(pid: i32) -> BTreeMap<RawFd, u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_stat(pid).unwrap().map(|s| s.state) != Some('S') {
        assert!(Instant::now() < deadline, "pid {pid} never slept");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let n: RawFd = e.file_name().to_str().unwrap().parse().unwrap();
            (n, std::fs::metadata(e.path()).map(|m| m.ino()).unwrap_or(0))
        })
        .collect()
}

fn sleeper<'a>() -> Spawn<'a> {
    let mut s = Spawn::new("/bin/sleep");
    s.arg("30");
    s
}

/// Hand `(source index, target)` pairs of `files` and check the child holds exactly
/// stdio and the targets, each the right file.
fn check_handed(files: &[(OwnedFd, u64)], pairs: &[(usize, RawFd)]) {
    let mut s = sleeper();
    for &(i, t) in pairs {
        s.hand(files[i].0.as_fd(), t);
    }
    let p = s.spawn().unwrap();
    let held = fds_of(p.pid());
    let mut want: Vec<RawFd> = vec![0, 1, 2];
    want.extend(pairs.iter().map(|(_, t)| *t));
    want.sort();
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), want, "pairs {pairs:?}");
    for &(i, t) in pairs {
        assert_eq!(held[&t], files[i].1, "descriptor {t} is not source {i} (pairs {pairs:?})");
    }
    p.kill_and_reap();
}

#[test]
fn descriptors_are_placed_whatever_the_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let a = file_at(&dir, "a", 300);
    let b = file_at(&dir, "b", a.0.as_raw_fd() + 1);
    let c = file_at(&dir, "c", b.0.as_raw_fd() + 1);
    let (na, nb, nc) = (a.0.as_raw_fd(), b.0.as_raw_fd(), c.0.as_raw_fd());
    let files = [a, b, c];
    // A swap: each source carries the other's target number.
    check_handed(&files, &[(0, nb), (1, na)]);
    // A chain and a cycle of three.
    check_handed(&files, &[(0, nb), (1, nc), (2, na)]);
    check_handed(&files, &[(0, nb), (1, nc)]);
    // In place (the source at its own target: it must still lose close-on-exec).
    check_handed(&files, &[(0, na)]);
    // One source at two targets, and low targets.
    check_handed(&files, &[(2, 3), (2, 4), (0, nc)]);
}

#[test]
fn nothing_else_is_inherited_and_the_control_shows_it_would_be() {
    let dir = tempfile::tempdir().unwrap();
    let (handed, ino) = file_at(&dir, "handed", 3);
    // Inheritable: a plain fork+exec would pass it on.
    let leak_file = std::fs::File::create(dir.path().join("leak")).unwrap();
    // SAFETY: F_DUPFD returns a fresh descriptor of ours (without close-on-exec) or -1.
    let leak = unsafe { libc::fcntl(leak_file.as_raw_fd(), libc::F_DUPFD, 3) };
    assert!(leak >= 0);
    // SAFETY: just made, owned here only.
    let leak = unsafe { OwnedFd::from_raw_fd(leak) };

    // Positive control: the standard library alone lets it through.
    let mut control = std::process::Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let control_fds = fds_of(control.id() as i32);
    control.kill().unwrap();
    control.wait().unwrap();
    assert!(
        control_fds.contains_key(&leak.as_raw_fd()),
        "the control did not inherit {leak:?}: {control_fds:?}"
    );

    let p = sleeper().hand(handed.as_fd(), 7).spawn().unwrap();
    let held = fds_of(p.pid());
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 7]);
    assert_eq!(held[&7], ino);
    p.kill_and_reap();
}

#[test]
fn it_leads_its_own_session_and_its_identity_is_captured() {
    let p = sleeper().spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(p.pid());
    assert_eq!(nix::unistd::getsid(Some(pid)).unwrap(), pid);
    assert_ne!(nix::unistd::getsid(None).unwrap(), pid);
    assert_eq!(p.identity(), ProcessIdentity::of(p.pid()).unwrap());
    assert!(p.pidfd().is_some());
    p.kill_and_reap();
}

#[test]
fn a_failed_spawn_names_the_program() {
    let missing = Path::new("/nonexistent/boxsock-spawn-test");
    let e = Spawn::new(missing).spawn().unwrap_err();
    assert!(
        matches!(&e, SpawnError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(e.to_string().contains("/nonexistent/boxsock-spawn-test"), "{e}");
    assert_eq!(e.program(), missing);

    let dir = tempfile::tempdir().unwrap();
    let (f, _) = file_at(&dir, "f", 3);
    let e = sleeper().hand(f.as_fd(), 2).spawn().unwrap_err();
    assert!(matches!(e, SpawnError::StdioTarget { target: 2, .. }), "{e:?}");
    let e = sleeper().hand(f.as_fd(), 9).hand(f.as_fd(), 9).spawn().unwrap_err();
    assert!(matches!(e, SpawnError::DuplicateTarget { target: 9, .. }), "{e:?}");
    assert!(e.to_string().contains("/bin/sleep"), "{e}");

    let e = sleeper().log_file(&dir.path().join("no/such/dir.log")).map(|_| ()).unwrap_err();
    assert!(
        e.to_string().contains("no/such/dir.log") && e.to_string().contains("/bin/sleep"),
        "{e}"
    );
}

#[test]
fn stdin_bytes_reach_the_program_and_the_log_gets_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::write(&log, "before\n").unwrap();
    let p = Spawn::new("/bin/cat")
        .stdin_bytes(b"from stdin\n".to_vec())
        .log_file(&log)
        .unwrap()
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(p.pid());
    assert!(matches!(
        nix::sys::wait::waitpid(pid, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(_, 0)
    ));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "before\nfrom stdin\n");
}
