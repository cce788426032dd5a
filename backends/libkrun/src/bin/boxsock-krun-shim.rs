//! `boxsock-krun-shim`: one per box. Reads a [`ShimSpec`] (JSON) on stdin, checks every
//! socket path against the budget, checks the descriptors it inherited (the verified
//! socket directory at 3, through which libkrun binds `agent` and dials `ready` as
//! `/proc/self/fd/3/<name>`; the network socketpair end at 4), points `TMPDIR` at the
//! socket directory (`/proc/self/fd/3`),
//! applies the jail, configures libkrun and enters the VM (`krun_start_enter` takes the
//! process over and exits it when the guest ends).
//!
//! Before validating it, the shim records the spec exactly as received in
//! `<box dir>/shim-spec.json` ([`boxsock_libkrun::SHIM_SPEC_FILE`]): a diagnostic
//! artifact rewritten at each start, never read back.
//!
//! Exit codes: 0 configured (`configure_only`) or guest ended; 2 bad spec; 3 jail;
//! 4 libkrun call failed; 70 a thread panicked (libkrun's vCPU or device threads
//! included: a panic hook ends the process at once, with the panic in the box log).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use boxsock_libkrun::ffi::LibKrun;
use boxsock_libkrun::{KrunApi, SHIM_SPEC_FILE, ShimSpec, configure, jail};

/// Exit code when any thread of the shim panics (libkrun's vCPU and device threads
/// included): the process ends at once, so the runtime sees the box die with the panic
/// in its log instead of waiting out its ready timeout beside a dead VMM.
const PANIC_EXIT: i32 = 70;

/// Test hook: `BOXSOCK_SHIM_TEST_PANIC=<message>` panics a thread with that message
/// while the main thread blocks, as libkrun's vCPU thread does inside
/// `krun_start_enter`.
const TEST_PANIC_ENV: &str = "BOXSOCK_SHIM_TEST_PANIC";

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        // One write: the box log is what the runtime shows when the box dies.
        let _ = writeln!(
            std::io::stderr(),
            "boxsock-krun-shim: panic in thread {name:?}: {info}; the VMM cannot go on, exiting"
        );
        // SAFETY: _exit(2) ends the process without running destructors or atexit
        // handlers, which is what is wanted while another thread may hold libkrun's locks.
        unsafe { libc::_exit(PANIC_EXIT) };
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    if let Ok(msg) = std::env::var(TEST_PANIC_ENV) {
        let _ = std::thread::Builder::new().name("test-vcpu".into()).spawn(move || panic!("{msg}"));
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("boxsock-krun-shim: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Write `input` to `<box_dir>/shim-spec.json`, replacing it atomically. Not synced:
/// a diagnostic artifact, never read back, that a crash may lose.
fn record_spec(box_dir: &Path, input: &[u8]) -> std::io::Result<PathBuf> {
    if !box_dir.is_absolute() || !box_dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("box dir {} is not an absolute directory", boxsock_core::echo::path(box_dir)),
        ));
    }
    let path = box_dir.join(SHIM_SPEC_FILE);
    boxsock_core::atomic::AtomicWrite::new(0o600)
        .without_fsync()
        .write_with(&path, |f| f.write_all(input).and_then(|()| f.write_all(b"\n")))?;
    Ok(path)
}

/// Why an inherited descriptor was refused by [`check_inherited`].
#[derive(Debug, thiserror::Error)]
enum InheritError {
    /// The descriptor is not open.
    #[error("{what} (descriptor {fd}) was not inherited: {source}")]
    Missing {
        what: &'static str,
        fd: i32,
        #[source]
        source: nix::errno::Errno,
    },
    /// The socket directory is not a private directory of this uid.
    #[error(
        "descriptor {fd} is not a private socket directory of uid {uid} (owner {owner}, mode {mode:04o}); refusing to bind or dial through it"
    )]
    NotPrivateDir { fd: i32, uid: u32, owner: u32, mode: u32 },
    /// The network descriptor is not a socket.
    #[error("descriptor {fd} for the network is not a socket")]
    NotASocket { fd: i32 },
}

/// The descriptors the backend handed over, checked again here before libkrun uses
/// them: the socket directory must be a directory of this uid that nobody else can
/// write (what the runtime verified), the network end a socket.
// mode_t, uid_t and the S_IF* constants differ in width across platforms.
#[allow(clippy::unnecessary_cast)]
fn check_inherited(spec: &ShimSpec) -> Result<(), InheritError> {
    use nix::sys::stat::{SFlag, fstat};
    let me = nix::unistd::geteuid().as_raw();
    let stat_of = |fd: i32, what: &'static str| {
        // SAFETY: the fd number comes from the spec and is only borrowed for fstat; a
        // closed number fails with EBADF, which is reported.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        fstat(b).map_err(|source| InheritError::Missing { what, fd, source })
    };
    let kind = |st: &nix::sys::stat::FileStat| (st.st_mode as u32) & (SFlag::S_IFMT.bits() as u32);
    if let Some(fd) = spec.socket_dir_fd {
        let st = stat_of(fd, "the socket directory")?;
        let mode = (st.st_mode as u32) & 0o7777;
        if kind(&st) != SFlag::S_IFDIR.bits() as u32 || st.st_uid != me || mode & 0o022 != 0 {
            return Err(InheritError::NotPrivateDir { fd, uid: me, owner: st.st_uid as u32, mode });
        }
    }
    if let Some(fd) = spec.net.as_ref().and_then(|n| n.fd) {
        let st = stat_of(fd, "the network socket")?;
        if kind(&st) != SFlag::S_IFSOCK.bits() as u32 {
            return Err(InheritError::NotASocket { fd });
        }
    }
    Ok(())
}

fn run() -> Result<(), (u8, String)> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| (2, format!("reading the spec from stdin: {e}")))?;
    let spec: ShimSpec =
        serde_json::from_slice(&input).map_err(|e| (2, format!("invalid spec on stdin: {e}")))?;
    match record_spec(&spec.box_dir, &input) {
        Ok(path) => eprintln!(
            "boxsock-krun-shim: box {}: spec recorded in {}",
            spec.box_id,
            boxsock_core::echo::path(&path)
        ),
        Err(e) => eprintln!("boxsock-krun-shim: box {}: cannot record the spec: {e}", spec.box_id),
    }
    spec.validate().map_err(|e| (2, format!("box {}: {e}", spec.box_id)))?;
    check_inherited(&spec).map_err(|e| (2, format!("box {}: {e}", spec.box_id)))?;

    // libkrun derives its unixgram name in std::env::temp_dir(); keep it in the box's
    // binding directory, whose budget counts that name. Single-threaded here: no other
    // thread reads the environment.
    // SAFETY: the process has one thread at this point (libkrun starts its threads in
    // krun_start_enter), so nothing reads the environment concurrently.
    unsafe { std::env::set_var("TMPDIR", &spec.tmpdir) };

    if spec.jail.enabled {
        jail::apply(&spec.jail).map_err(|e| (3, format!("box {}: {e}", spec.box_id)))?;
    }
    if let Some(probe) = &spec.jail_probe {
        jail_probe(spec.box_id.as_ref(), probe);
    }

    // libkrun opens the console output with File::create, which truncates: given the box
    // log, it erased every line written before the boot (this shim's own, earlier
    // boots'). Give it a pipe instead, copied onto stderr (the box log, O_APPEND).
    let mut spec = spec;
    if !spec.configure_only {
        spec.console_log =
            console_pipe().map_err(|e| (4, format!("box {}: console pipe: {e}", spec.box_id)))?;
    }
    let mut api = LibKrun::new();
    let ctx = configure(&mut api, &spec).map_err(|e| (4, format!("box {}: {e}", spec.box_id)))?;
    if spec.configure_only {
        println!(
            "boxsock-krun-shim: box {} configured (libkrun ctx {}); not booting (configure_only)",
            spec.box_id, ctx.0
        );
        return Ok(());
    }
    api.start_enter(ctx).map_err(|e| (4, format!("box {}: {e}", spec.box_id)))?;
    Ok(())
}

/// The `jail_probe` diagnosis: try to create `path` from this (jailed) process and log
/// what happened.
fn jail_probe(box_id: &str, path: &Path) {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            eprintln!(
                "boxsock-krun-shim: box {box_id}: jail probe: writing {} succeeded (the jail does not cover it)",
                boxsock_core::echo::path(path)
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!(
                "boxsock-krun-shim: box {box_id}: jail probe: writing {} was denied: {e}",
                boxsock_core::echo::path(path)
            )
        }
        Err(e) => eprintln!(
            "boxsock-krun-shim: box {box_id}: jail probe: writing {} failed: {e}",
            boxsock_core::echo::path(path)
        ),
    }
}

/// A pipe whose read end a thread copies onto stderr; returns the write end as
/// `/proc/self/fd/<n>`, a path libkrun can `File::create` without truncating anything.
fn console_pipe() -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let (r, w) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", w.as_raw_fd()));
    // The write end stays open for the life of the process (libkrun opens its own copy).
    std::mem::forget(w);
    std::thread::Builder::new().name("console".into()).spawn(move || {
        let mut from = std::fs::File::from(r);
        let _ = std::io::copy(&mut from, &mut std::io::stderr());
    })?;
    Ok(path)
}
