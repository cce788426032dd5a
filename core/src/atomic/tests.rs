//! The atomic writer on real files, and a writer really killed between write and rename.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn replaces_the_file_with_the_mode_given_and_returns_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("record");
    std::fs::write(&p, "old").unwrap();
    let old_ino = std::fs::metadata(&p).unwrap().ino();
    let f = AtomicWrite::new(0o666).write(&p, b"new").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    let m = std::fs::metadata(&p).unwrap();
    // 0666 whatever the umask narrowed at creation.
    assert_eq!(m.mode() & 0o7777, 0o666);
    assert_ne!(m.ino(), old_ino, "a new inode is renamed into place");
    assert_eq!(f.metadata().unwrap().ino(), m.ino(), "the returned file is the one in place");
    AtomicWrite::new(0o600).without_fsync().write(&p, b"newer").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "newer");
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(names(d.path()), ["record"], "no temporary is left");
}

#[test]
fn a_failed_write_keeps_the_old_content_and_leaves_nothing_and_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("record");
    std::fs::write(&p, "old").unwrap();
    let e = AtomicWrite::new(0o600)
        .write_with(&p, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
    assert_eq!(e.op, "write");
    assert!(
        e.to_string().contains(&p.display().to_string()) && e.to_string().contains("disk on fire"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
    assert_eq!(names(d.path()), ["record"]);

    let e = AtomicWrite::new(0o600).write(&d.path().join("no/such/dir/x"), b"x").unwrap_err();
    assert_eq!(e.op, "open the directory");
    assert!(e.to_string().contains("no/such/dir/x"), "{e}");
}

#[test]
fn no_replace_publishes_once_and_never_touches_an_existing_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("secret");
    let once = AtomicWrite::new(0o600).no_replace();
    once.write(&p, b"first").unwrap();
    let e = once.write(&p, b"second").unwrap_err();
    assert_eq!((e.op, e.source.kind()), ("publish", io::ErrorKind::AlreadyExists), "{e}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "first");
    assert_eq!(std::fs::metadata(&p).unwrap().nlink(), 1, "the temporary link is gone");
    assert_eq!(names(d.path()), ["secret"]);
}

/// Set in the child process of the crash test: the file to replace, and how.
const CHILD_ENV: &str = "BOXSOCK_ATOMIC_TEST_CHILD";

/// The writer, in a child process: writes half of the new content, says so on stdout,
/// then waits to be killed.
#[test]
fn crash_child() {
    let Some(arg) = std::env::var_os(CHILD_ENV) else { return };
    let arg = arg.into_string().unwrap();
    let (how, path) = arg.split_once(':').unwrap();
    let half = vec![b'n'; 64 * 1024];
    let hook = |f: &mut File| -> io::Result<()> {
        f.write_all(&half)?;
        f.flush()?;
        println!("\nboxsock-atomic-hook-reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    };
    match how {
        "atomic" => {
            let _ = AtomicWrite::new(0o600).write_with(Path::new(path), hook);
        }
        // The positive control: rewriting in place.
        _ => {
            let mut f = File::create(path).unwrap();
            let _ = hook(&mut f);
        }
    }
}

/// Kill a writer at its hook, between write and rename: `(content under the name,
/// names in the directory)`.
fn kill_writer_midway(how: &str) -> (Vec<u8>, Vec<String>) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("record");
    std::fs::write(&p, "old content").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "atomic::tests::crash_child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, format!("{how}:{}", p.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Blocks until the hook (no clock involved); end of output means the child died.
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("boxsock-atomic-hook-reached"))),
        "the writer never reached its hook"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut content = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut content).unwrap();
    (content, names(d.path()))
}

#[test]
fn a_writer_killed_between_write_and_rename_leaves_the_old_content() {
    // Positive control: the naive writer, killed at the same point, leaves a torn file.
    let (content, _) = kill_writer_midway("in-place");
    assert_eq!(content.len(), 64 * 1024, "the control was not torn");
    let (content, names) = kill_writer_midway("atomic");
    assert_eq!(content, b"old content");
    // The half-written temporary is what is left besides it, under another name.
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with(".record.") && n.ends_with(".tmp")), "{names:?}");
}
