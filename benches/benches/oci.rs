//! Criterion bench of `boxsock-oci` (issue 23) as an engine drives it: `podman run --rm
//! IMAGE true` with `--runtime <boxsock-oci>` (the sandbox backend, its default), timed
//! interleaved in the same samples with the same command under `--runtime runc` (Debian's
//! runc) for the same image.
//!
//! podman's storage, run root and temp dir are a private temp dir (the machine's own
//! containers are never touched); the image is imported once from a busybox root tarball
//! (`podman import`). `boxsock-oci` is this bench's profile's build, its agent beside it.
//!
//! As root (podman rootful, the sandbox backend and runc need it): CI runs as root, and
//! `.ci/run` installs podman, runc and busybox-static. Elsewhere it prints why it skips;
//! under `CI=true` a missing condition fails (boxsock-test-support).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use boxsock_benches::{no_setup, paired};
use boxsock_test_support::{Need, skip};
use criterion::{Criterion, SamplingMode, criterion_group};

/// The image both runtimes run.
const IMAGE: &str = "localhost/boxsock-bench/busybox:1";

/// podman's defaults for these exceed this machine kind's hard limits (runc refuses
/// them too): the same explicit limits for both sides.
const ULIMITS: &[&str] = &["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

struct Fixture {
    /// podman's storage, run root and temp dir, and the image's tarball.
    dir: tempfile::TempDir,
    podman: PathBuf,
    boxsock_oci: PathBuf,
    runc: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn show(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tarball of a busybox root (`/bin/busybox`, static, and the applets it runs), what
/// `podman import` takes.
fn busybox_tarball(path: &Path) {
    let mut t = tar::Builder::new(std::fs::File::create(path).expect("create the tarball"));
    let mut dir = |name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        t.append_data(&mut h, name, std::io::empty()).expect("tar dir");
    };
    for d in ["bin", "etc", "dev", "proc", "sys", "tmp"] {
        dir(d);
    }
    t.append_path_with_name("/bin/busybox", "bin/busybox").expect("tar /bin/busybox");
    for applet in ["sh", "true", "echo"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        t.append_link(&mut h, format!("bin/{applet}"), "busybox").expect("tar applet link");
    }
    for (name, text) in
        [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")]
    {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(text.len() as u64);
        t.append_data(&mut h, name, text.as_bytes()).expect("tar file");
    }
    t.into_inner().expect("finish the tarball");
}

impl Fixture {
    /// `podman` with its state in the fixture's directory.
    fn podman(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(&self.podman);
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .stdin(Stdio::null());
        c
    }

    /// `podman --runtime <runtime> run --rm … IMAGE true`, which must succeed.
    fn run_true(&self, runtime: &Path) {
        let out = self
            .podman()
            .arg("--runtime")
            .arg(runtime)
            .args(["run", "--rm", "--network", "none"])
            .args(ULIMITS)
            .args([IMAGE, "true"])
            .output()
            .expect("run podman");
        assert!(out.status.success(), "podman --runtime {}: {}", runtime.display(), show(&out));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Unmount and remove podman's storage before the temp dir goes (c/storage leaves
        // its overlay home mounted otherwise).
        match self.podman().args(["system", "reset", "--force"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("podman system reset: {}", show(&o)),
            Err(e) => eprintln!("podman system reset: {e}"),
        }
    }
}

fn fixture() -> Option<Fixture> {
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "rootful podman, the sandbox backend and runc need root");
        return None;
    }
    let mut found = Vec::new();
    for (name, package) in [
        ("podman", "podman"),
        ("conmon", "conmon"),
        ("runc", "runc"),
        ("busybox", "busybox-static"),
    ] {
        match which(name) {
            Some(p) => found.push(p),
            None => {
                skip(Need::Program { name, package }, "the oci bench's engine, floor and image");
                return None;
            }
        }
    }
    let dir = tempfile::Builder::new().prefix("bso").tempdir_in("/tmp").expect("tempdir");
    for d in ["root", "run", "tmp"] {
        std::fs::create_dir(dir.path().join(d)).expect("podman dir");
    }
    // boxsock-oci finds its agent beside its own executable.
    let profile = boxsock_host::dev::built_binaries(&["boxsock-oci", "boxsock-agent"]);
    let fx = Fixture {
        podman: found[0].clone(),
        runc: found[2].clone(),
        boxsock_oci: profile.join("boxsock-oci"),
        dir,
    };
    let tarball = fx.dir.path().join("busybox.tar");
    busybox_tarball(&tarball);
    let out = fx
        .podman()
        .arg("import")
        .args([OsStr::new("--quiet"), tarball.as_os_str(), OsStr::new(IMAGE)])
        .output()
        .expect("run podman import");
    assert!(out.status.success(), "podman import: {}", show(&out));
    // A box's exit unmounts its overlay, which syncs the filesystem of its upper (and so
    // writes back everyone's dirty pages there): the build above must not be flushed
    // inside the first samples.
    nix::unistd::sync();
    Some(fx)
}

fn bench_oci(c: &mut Criterion) {
    let Some(fx) = fixture() else { return };
    let mut g = c.benchmark_group("oci");
    // A call of each side takes a large fraction of a second: a few per sample.
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(20));
    let mut boxsock = || fx.run_true(&fx.boxsock_oci);
    let mut runc = || fx.run_true(&fx.runc);
    paired(
        &mut g,
        "oci",
        "podman-run-rm-true",
        "busybox-image",
        &mut no_setup,
        &mut boxsock,
        &mut [("floor-podman-runc", &mut runc)],
    );
    g.finish();
    let out = fx.podman().args(["ps", "--all", "--quiet"]).output().expect("podman ps");
    assert!(out.status.success() && out.stdout.is_empty(), "containers left: {}", show(&out));
}

criterion_group! {
    name = oci;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).configure_from_args();
    targets = bench_oci
}
// Not `criterion_main!`: a measuring run records its manifest, test mode nothing.
fn main() {
    boxsock_benches::run::main("oci", &[oci]);
}
