//! Test-only helpers shared by every boxsock test crate (a path-only dev-dependency, so
//! no published crate carries it).
//!
//! [`skip`] is the one way a test skips because the machine lacks something:
//!
//! - Outside CI it prints `SKIPPED: <test>: <reason>` (past libtest's capture) and
//!   records the skip for the run's summary.
//! - With `CI=true` it panics, naming the condition and how `.ci/run` makes it true: a
//!   CI run cannot pass by skipping.
//!
//! [`skip_allowed`] is for the few conditions CI cannot make true. Each is a variant of
//! [`Unmakeable`], the explicit allow-list, with the reason why; those skips are printed
//! and recorded under CI too, never failed.
//!
//! Records are one file per skip under [`records_dir`]; `.ci/run` clears that directory
//! before the test command and prints `skipped: N (<reason>: <count>, …)` from it after.

use std::fmt::Display;
use std::io::Write as _;
use std::path::PathBuf;

/// A machine condition a test needs, and how CI makes it true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running as root (another uid, chown, chroot, mounts, namespaces).
    Root,
    /// A program on `PATH`, from a Debian package.
    Program {
        /// The program's name.
        name: &'static str,
        /// The Debian package `.ci/run` installs it from.
        package: &'static str,
    },
    /// The `vsock_loopback` transport (CID 1) where the kernel has it as a module.
    VsockLoopback,
    /// Something this machine kind's kernel provides to root (a namespace, a file
    /// system, a device, a Landlock ABI): nothing to install, a CI machine without it
    /// is not of the project's kind.
    Kernel(&'static str),
    /// Something the workspace's own build or `.ci/run`'s environment provides.
    Setup {
        /// What is missing.
        what: &'static str,
        /// What provides it in CI.
        provided_by: &'static str,
    },
}

impl Need {
    /// The short label the summary counts by.
    pub fn label(&self) -> String {
        match self {
            Need::Root => "not root".into(),
            Need::Program { name, .. } => format!("no `{name}`"),
            Need::VsockLoopback => "no vsock_loopback".into(),
            Need::Kernel(what) => format!("no {what}"),
            Need::Setup { what, .. } => format!("missing {what}"),
        }
    }

    /// How `.ci/run` makes the condition true.
    pub fn fix(&self) -> String {
        match self {
            Need::Root => "CI runs as root; run the tests as root".into(),
            Need::Program { name, package } => {
                format!(".ci/run installs Debian package `{package}` for `{name}`; it did not")
            }
            Need::VsockLoopback => {
                ".ci/run loads the module (`modprobe vsock_loopback`); it is not loaded".into()
            }
            Need::Kernel(what) => format!(
                "the CI machine kind's kernel gives root {what}; this machine does not, so it \
                 is not of that kind (or the test lost root)"
            ),
            Need::Setup { provided_by, .. } => format!("{provided_by}; it did not"),
        }
    }
}

/// The allow-list: skips CI cannot make into runs, each with why. These never fail a
/// CI run; everything else does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmakeable {
    /// The strategy or backend under test lacks the capability the check is about (the
    /// kits' capability needs, a backend without companions): a property of the code
    /// under test, not of the machine.
    Capability,
    /// No hardware virtualisation: the CI machine kind's `/dev/kvm` is `kvm_pvm`, on
    /// which libkrun cannot boot a guest, and no package provides another. The real-VM
    /// tier (`tests/vm`, required in CI) boots libkrun guests under QEMU TCG instead.
    NoHardwareKvm,
    /// The test covers a machine where libkrun cannot boot; CI cannot take a working
    /// KVM away from a machine that has one. On the CI machine kind it always runs.
    KvmAvailable,
    /// The kernel has no `vsock_loopback` at all (built without
    /// `CONFIG_VSOCKETS_LOOPBACK`, no module to load: the CI machine kind's kernel). The
    /// agent's vsock path is exercised end to end by the real-VM tier's guests.
    NoVsockLoopbackInKernel,
}

impl Unmakeable {
    /// The short label the summary counts by.
    pub fn label(self) -> &'static str {
        match self {
            Unmakeable::Capability => "capability not offered",
            Unmakeable::NoHardwareKvm => "no hardware KVM",
            Unmakeable::KvmAvailable => "libkrun can boot here",
            Unmakeable::NoVsockLoopbackInKernel => "kernel without vsock_loopback",
        }
    }

    /// Why CI cannot make this condition true.
    pub fn why(self) -> &'static str {
        match self {
            Unmakeable::Capability => "a property of the code under test, not of the machine",
            Unmakeable::NoHardwareKvm => {
                "/dev/kvm on the CI machine kind is kvm_pvm; the real-VM tier boots libkrun \
                 under QEMU TCG instead"
            }
            Unmakeable::KvmAvailable => "CI cannot take a working KVM away",
            Unmakeable::NoVsockLoopbackInKernel => {
                "the kernel lacks CONFIG_VSOCKETS_LOOPBACK and has no module for it; the \
                 real-VM tier covers vsock"
            }
        }
    }
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Skip the calling test because the machine lacks `need`; `detail` says what exactly.
/// The caller returns right after. Under CI this panics (the test fails), naming the
/// condition and how `.ci/run` makes it true.
#[track_caller]
pub fn skip(need: Need, detail: impl Display) {
    let at = std::panic::Location::caller();
    let test = test_name();
    if in_ci() {
        panic!(
            "{test} would be skipped, and under CI=true a skip is a failure: {} ({detail}). \
             {} (at {}:{})",
            need.label(),
            need.fix(),
            at.file(),
            at.line()
        );
    }
    report(&test, &need.label(), &detail.to_string(), at);
}

/// Skip the calling test for a condition CI cannot make true ([`Unmakeable`]); printed
/// and recorded, under CI too.
#[track_caller]
pub fn skip_allowed(why: Unmakeable, detail: impl Display) {
    let at = std::panic::Location::caller();
    report(&test_name(), why.label(), &format!("{detail} [allowed in CI: {}]", why.why()), at);
}

/// Where skip records go: `$BOXSOCK_SKIP_DIR`, else `<target>/boxsock-skips` (the
/// target directory as `$CARGO_TARGET_DIR` or the workspace's `target/`).
pub fn records_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BOXSOCK_SKIP_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")))
        .join("boxsock-skips")
}

/// libtest runs each test on a thread named after it; otherwise the executable's name.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_owned(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".into()),
    }
}

/// One line on stderr itself (libtest captures `eprintln!` of a passing test) and one
/// record file: `<label>\t<test>\t<detail>\t<file:line>`.
fn report(test: &str, label: &str, detail: &str, at: &std::panic::Location<'_>) {
    let detail = detail.replace(['\n', '\t'], " ");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {label}: {detail}");
    let dir = records_dir();
    let line = format!("{label}\t{test}\t{detail}\t{}:{}\n", at.file(), at.line());
    let write = || -> std::io::Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&dir)?;
        // pid, time and a counter: pids are reused across the many test processes of a run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{nanos}-{n}.skip", std::process::id());
        std::fs::write(dir.join(name), line)
    };
    if let Err(e) = write() {
        let _ = writeln!(std::io::stderr(), "cannot record the skip in {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HELPER: &str = "BOXSOCK_TEST_SUPPORT_HELPER";

    /// Not a test on its own: the skipping test, run in a child with its environment.
    #[test]
    fn helper_skips() {
        if std::env::var_os(HELPER).is_none() {
            return;
        }
        skip(Need::Program { name: "no-such-program", package: "no-such-package" }, "forced");
    }

    /// Runs [`helper_skips`] in a child (CI is process-wide state) with `ci` as `CI`.
    fn run_helper(ci: Option<&str>, dir: &std::path::Path) -> std::process::Output {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "tests::helper_skips", "--nocapture", "--test-threads=1"])
            .env(HELPER, "1")
            .env("BOXSOCK_SKIP_DIR", dir);
        match ci {
            Some(v) => c.env("CI", v),
            None => c.env_remove("CI"),
        };
        c.output().unwrap()
    }

    fn records(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_skip_fails_under_ci_and_is_printed_and_recorded_outside() {
        let base = std::env::temp_dir().join(format!("boxsock-skip-test-{}", std::process::id()));
        let (outside, ci) = (base.join("outside"), base.join("ci"));

        let o = run_helper(None, &outside);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("SKIPPED: tests::helper_skips: no `no-such-program`: forced"),
            "{err}"
        );
        let r = records(&outside);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("no `no-such-program`\ttests::helper_skips\tforced\t"), "{r:?}");

        let o = run_helper(Some("true"), &ci);
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a skip passed under CI=true: {out}");
        assert!(
            out.contains("under CI=true a skip is a failure") && out.contains("no-such-package"),
            "{out}"
        );
        assert!(records(&ci).is_empty());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn labels_name_the_condition() {
        assert_eq!(Need::Program { name: "script", package: "bsdutils" }.label(), "no `script`");
        assert!(Need::Program { name: "script", package: "bsdutils" }.fix().contains("bsdutils"));
        assert!(Need::VsockLoopback.fix().contains("modprobe vsock_loopback"));
    }
}
