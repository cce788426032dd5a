//! `rootfs::prepare` with the real `boxsock-agent`: the root it builds runs the agent
//! under `chroot` (as root), and it refuses to write through symlinks.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use boxsock_libkrun::rootfs::{self, RootfsError};
use boxsock_test_support::{Need, skip};

/// The current `boxsock-agent` binary of this profile, built if needed (a no-op when
/// fresh: `cargo test -p boxsock-libkrun` alone does not build other packages' bins).
fn agent() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf(); // target/debug
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-p", "boxsock-agent", "--bin", "boxsock-agent"]);
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let st = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().unwrap();
            assert!(st.success(), "building boxsock-agent failed");
            let agent = profile_dir.join("boxsock-agent");
            assert!(agent.exists(), "no {} after building", agent.display());
            agent
        })
        .clone()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Run `argv` chrooted into `root` (with `/` as the working directory).
fn run_chrooted(root: &Path, argv: &[&str]) -> Output {
    let root = root.to_owned();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).env_clear().stdin(Stdio::null());
    // SAFETY: between fork and exec the closure only calls chroot(2) and chdir(2)
    // through nix, which allocate nothing (the path is converted on the stack when
    // short, and `root` was built before the fork) and are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::chroot(&root)?;
            nix::unistd::chdir("/")?;
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn root_prepared_root_runs_the_agent_under_chroot() {
    if !is_root() {
        skip(Need::Root, "chroot needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("boxes/abc/rootfs");
    let g = rootfs::prepare(&root, &agent()).unwrap();
    assert_eq!(g.agent, root.join("boxsock-agent"));
    assert_eq!(std::fs::metadata(&g.agent).unwrap().permissions().mode() & 0o7777, 0o755);
    for (dir, mode) in rootfs::ROOT_DIRS {
        let m = std::fs::symlink_metadata(root.join(dir)).unwrap();
        assert!(m.is_dir(), "{dir}");
        assert_eq!(m.permissions().mode() & 0o7777, *mode, "{dir}");
    }
    for f in &g.files {
        let inside = root.join(f.guest_path.strip_prefix("/").unwrap());
        assert!(
            std::fs::symlink_metadata(&inside).unwrap().is_file(),
            "{} missing",
            inside.display()
        );
    }

    let out = run_chrooted(&root, &["/boxsock-agent", "--help"]);
    assert!(out.status.success(), "agent under chroot: {out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--agent") && help.contains("vsock://"), "{help}");

    // And the libraries are what makes it run: without libc it cannot start.
    if let Some(libc) = g.files.iter().find(|f| {
        f.guest_path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
    }) {
        std::fs::remove_file(root.join(libc.guest_path.strip_prefix("/").unwrap())).unwrap();
        let out = run_chrooted(&root, &["/boxsock-agent", "--help"]);
        assert!(!out.status.success(), "agent ran without libc: {out:?}");
    } else {
        assert!(g.is_static(), "a dynamic agent without libc among {:?}", g.files);
    }
}

#[test]
fn prepare_records_interpreter_and_libraries_and_is_repeatable() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    let first = rootfs::prepare(&root, &agent()).unwrap();
    assert_eq!(first.files[0].guest_path, Path::new("/boxsock-agent"));
    if let Some(interp) = &first.interpreter {
        assert!(interp.is_absolute());
        assert_eq!(first.files[1].guest_path, *interp);
        assert!(root.join(interp.strip_prefix("/").unwrap()).is_file());
        // Every copy is byte-identical to its source.
        for f in &first.files {
            let inside = root.join(f.guest_path.strip_prefix("/").unwrap());
            assert!(
                std::fs::read(&inside).unwrap() == std::fs::read(&f.from).unwrap(),
                "{} differs",
                inside.display()
            );
        }
    }
    let second = rootfs::prepare(&root, &agent()).unwrap();
    assert_eq!(first, second);
    // No temporary files left anywhere in the root.
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            assert!(
                !e.file_name().to_string_lossy().contains("boxsock-tmp"),
                "{}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn a_symlink_inside_the_root_is_refused_and_nothing_is_written_through_it() {
    let probe = tempfile::tempdir().unwrap();
    let g = rootfs::prepare(&probe.path().join("r"), &agent()).unwrap();
    let Some(interp) = g.interpreter else {
        let what = "a dynamically linked boxsock-agent";
        let by = "the workspace builds the agent against glibc, as `cargo test` in .ci/run does";
        skip(
            Need::Setup { what, provided_by: by },
            "the agent is static, nothing is copied below a directory",
        );
        return;
    };
    let top = interp.strip_prefix("/").unwrap().components().next().unwrap().as_os_str().to_owned();

    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join(&top)).unwrap();
    let err = rootfs::prepare(&root, &agent()).unwrap_err();
    assert!(
        matches!(err, RootfsError::SymlinkInRoot { ref path } if *path == root.join(&top)),
        "{err}"
    );
    assert!(err.to_string().contains(&root.join(&top).display().to_string()), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "wrote through the symlink");

    // A symlinked root is refused too.
    let link = d.path().join("link-root");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    assert!(matches!(rootfs::prepare(&link, &agent()), Err(RootfsError::BadRoot { .. })));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn a_non_elf_or_missing_agent_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("agent.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let err = rootfs::prepare(&d.path().join("r1"), &script).unwrap_err();
    assert!(
        matches!(err, RootfsError::Elf(boxsock_elf::ElfError::NotElf { ref path }) if *path == script),
        "{err}"
    );
    let missing = d.path().join("nope");
    let err = rootfs::prepare(&d.path().join("r2"), &missing).unwrap_err();
    assert!(
        matches!(err, RootfsError::Elf(boxsock_elf::ElfError::Io { ref path, .. }) if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

/// A static executable (as a musl agent would be) is the only file copied, and runs
/// under chroot on its own. Built here with `gcc -static` (glibc's libc.a).
#[test]
fn a_static_executable_is_copied_alone() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("t.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let exe = d.path().join("static-exe");
    let built = Command::new("cc")
        .arg("-static")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .stderr(Stdio::piped())
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let cc = Need::Program { name: "cc -static", package: "libc6-dev" };
            skip(
                cc,
                format!(
                    "cc -static failed (no static libc?): {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
            );
            return;
        }
        Err(e) => {
            let cc = Need::Program { name: "cc", package: "gcc" };
            skip(cc, format!("no C compiler to build a static executable: {e}"));
            return;
        }
    }
    let root = d.path().join("rootfs");
    let g = rootfs::prepare(&root, &exe).unwrap();
    assert!(g.is_static());
    assert_eq!(g.files.len(), 1);
    let regular_files = walk_files(&root);
    assert_eq!(regular_files, vec![root.join("boxsock-agent")]);
    if is_root() {
        let out = run_chrooted(&root, &["/boxsock-agent"]);
        assert!(out.status.success(), "{out:?}");
    } else {
        skip(Need::Root, "the chroot part needs root");
    }
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// `install_program` + `guest_symlink` (the busybox route): the host's `/bin/sh`
/// installed as `/bin/hostsh` with `/bin/sh -> hostsh` runs a command under chroot.
#[test]
fn root_an_extra_program_and_a_symlink_to_it_run_under_chroot() {
    if !is_root() {
        skip(Need::Root, "chroot needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    rootfs::prepare(&root, &agent()).unwrap();
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let (_, files) = rootfs::install_program(&root, &sh, Path::new("/bin/hostsh")).unwrap();
    assert_eq!(files[0].guest_path, Path::new("/bin/hostsh"));
    rootfs::guest_symlink(&root, Path::new("/bin/sh"), Path::new("hostsh")).unwrap();
    // Again: an existing symlink is replaced, not an error.
    rootfs::guest_symlink(&root, Path::new("/bin/sh"), Path::new("hostsh")).unwrap();
    assert_eq!(std::fs::read_link(root.join("bin/sh")).unwrap(), Path::new("hostsh"));
    let out = run_chrooted(&root, &["/bin/sh", "-c", "test -x /boxsock-agent && exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // A regular file in the way of the link is not replaced.
    std::fs::write(root.join("etc/file"), b"x").unwrap();
    assert!(matches!(
        rootfs::guest_symlink(&root, Path::new("/etc/file"), Path::new("hostsh")),
        Err(RootfsError::BadRoot { .. })
    ));
    assert_eq!(std::fs::read(root.join("etc/file")).unwrap(), b"x");
}
