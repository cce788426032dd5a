//! Another local user cannot drive a container: its directory is 0700 and its FIFOs
//! 0600, so uid 65534 cannot write a signal into its `ctl.fifo` (nor `kill`, `start` or
//! read it through boxsock-oci), and the container runs on. The positive control in the
//! same run: the same container with the modes a naive runtime would leave (0755
//! directories, a 0644 record, a 0666 FIFO) is killed by that user's write.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, ok};

/// `boxsock-oci ARGS` run as uid/gid 65534.
fn as_nobody(env: &Env, args: &[&str]) -> std::process::Output {
    env.command(args).uid(65534).gid(65534).stdin(std::process::Stdio::null()).output().unwrap()
}

/// As uid 65534, write SIGKILL's number into `fifo` as `kill` would (the attack).
fn write_as_nobody(fifo: &Path) -> std::process::Output {
    let bytes = 9i32.to_ne_bytes().iter().map(|b| format!("\\{b:03o}")).collect::<String>();
    std::process::Command::new("/bin/sh")
        .args(["-c", &format!("printf '{bytes}' > \"$1\""), "sh"])
        .arg(fifo)
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Wait until `id`'s status is `want` (or fail after 20 s).
fn status_becomes(env: &Env, id: &str, want: &str) {
    let t0 = Instant::now();
    while env.state(id)["status"] != want {
        assert!(t0.elapsed() < Duration::from_secs(20), "{id} never became {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn another_user_cannot_signal_start_or_read_a_container() {
    let env = Env::new();
    // The binary must be reachable by uid 65534 for this test to mean anything: it is
    // under the build directory, readable by all here; the temporary directory is made
    // traversable so only the runtime's own modes stand in the way.
    chmod(env.tmp.path(), 0o755);
    let start = |id: &str| {
        let b = env.bundle(id, &["sleep", "1000"], serde_json::json!({}));
        let files = |n: &str| std::fs::File::create(env.tmp.path().join(n)).unwrap();
        let st = env
            .command(&["create", "--bundle", b.to_str().unwrap(), id])
            .stdout(files(&format!("{id}.out")))
            .stderr(files(&format!("{id}.err")))
            .status()
            .unwrap();
        assert!(st.success(), "create {id}");
        ok("start", &env.oci(&["start", id]));
        assert_eq!(env.state(id)["status"], "running");
    };
    start("kept");
    start("naive");
    // Everything on the way to the root traversable by all, as an engine's /run is.
    for d in env.root.ancestors().take_while(|d| d.starts_with(env.tmp.path())) {
        chmod(d, 0o755);
    }
    chmod(&env.root.join("containers"), 0o755);

    // The naive container: its directory 0755, its record 0644, its FIFO 0666. The
    // other user's kill lands: the positive control.
    let naive = env.root.join("containers/naive");
    chmod(&naive, 0o755);
    chmod(&naive.join("state.json"), 0o644);
    chmod(&naive.join("ctl.fifo"), 0o666);
    let out = write_as_nobody(&naive.join("ctl.fifo"));
    assert!(out.status.success(), "the control: uid 65534's write did not land: {out:?}");
    status_becomes(&env, "naive", "stopped");

    // boxsock-oci's own modes: 0700 and 0600. Nothing the other user tries gets through,
    // and the container runs on.
    let kept = env.root.join("containers/kept");
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o700);
    let out = write_as_nobody(&kept.join("ctl.fifo"));
    assert!(!out.status.success(), "uid 65534 wrote a signal into kept's FIFO: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    // Nor through boxsock-oci, which refuses a state directory that is not its user's.
    for args in [&["kill", "kept", "KILL"][..], &["start", "kept"], &["state", "kept"]] {
        let out = as_nobody(&env, args);
        assert!(!out.status.success(), "uid 65534 could {args:?}: {out:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.state("kept")["status"], "running");
    for id in ["kept", "naive"] {
        ok(&format!("delete {id}"), &env.oci(&["delete", "--force", id]));
    }

    // A --root in a directory another user owns is refused before anything is written
    // there (that user could swap the records and FIFOs), naming the directory and its
    // owner.
    let theirs = env.tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let b = env.bundle("x", &["true"], serde_json::json!({}));
    let out = std::process::Command::new(common::oci_bin())
        .arg("--root")
        .arg(theirs.join("oci"))
        .args(["create", "--bundle", b.to_str().unwrap(), "x"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("owned by uid 65534"), "{e}");
    assert!(!theirs.join("oci").exists(), "made in another user's directory");
}
