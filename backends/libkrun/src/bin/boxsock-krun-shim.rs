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
//! 4 libkrun call failed.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use boxsock_libkrun::ffi::LibKrun;
use boxsock_libkrun::{KrunApi, SHIM_SPEC_FILE, ShimSpec, configure, jail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("boxsock-krun-shim: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Write `input` to `<box_dir>/shim-spec.json` through a fresh temporary name
/// (`create_new` does not follow a symlink) renamed into place.
fn record_spec(box_dir: &Path, input: &[u8]) -> std::io::Result<PathBuf> {
    if !box_dir.is_absolute() || !box_dir.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("box dir {} is not an absolute directory", box_dir.display())));
    }
    let path = box_dir.join(SHIM_SPEC_FILE);
    let tmp = box_dir.join(format!(".{SHIM_SPEC_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = f.write_all(input).and_then(|()| f.write_all(b"\n"));
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(path)
}

/// The descriptors the backend handed over, checked again here before libkrun uses
/// them: the socket directory must be a directory of this uid that nobody else can
/// write (what the runtime verified), the network end a socket.
// mode_t, uid_t and the S_IF* constants differ in width across platforms.
#[allow(clippy::unnecessary_cast)]
fn check_inherited(spec: &ShimSpec) -> Result<(), String> {
    use nix::sys::stat::{SFlag, fstat};
    let me = nix::unistd::geteuid().as_raw();
    let stat_of = |fd: i32, what: &str| {
        // SAFETY: the fd number comes from the spec and is only borrowed for fstat; a
        // closed number fails with EBADF, which is reported.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        fstat(b).map_err(|e| format!("{what} (descriptor {fd}) was not inherited: {e}"))
    };
    let kind = |st: &nix::sys::stat::FileStat| (st.st_mode as u32) & (SFlag::S_IFMT.bits() as u32);
    if let Some(fd) = spec.socket_dir_fd {
        let st = stat_of(fd, "the socket directory")?;
        let mode = (st.st_mode as u32) & 0o7777;
        if kind(&st) != SFlag::S_IFDIR.bits() as u32 || st.st_uid != me || mode & 0o022 != 0 {
            return Err(format!(
                "descriptor {fd} is not a private socket directory of uid {me} (owner {}, mode {mode:04o}); refusing to bind or dial through it",
                st.st_uid
            ));
        }
    }
    if let Some(fd) = spec.net.as_ref().and_then(|n| n.fd) {
        let st = stat_of(fd, "the network socket")?;
        if kind(&st) != SFlag::S_IFSOCK.bits() as u32 {
            return Err(format!("descriptor {fd} for the network is not a socket"));
        }
    }
    Ok(())
}

fn run() -> Result<(), (u8, String)> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|e| (2, format!("reading the spec from stdin: {e}")))?;
    let spec: ShimSpec = serde_json::from_slice(&input).map_err(|e| (2, format!("invalid spec on stdin: {e}")))?;
    match record_spec(&spec.box_dir, &input) {
        Ok(path) => eprintln!("boxsock-krun-shim: box {}: spec recorded in {}", spec.box_id, path.display()),
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

    let mut api = LibKrun::new();
    let ctx = configure(&mut api, &spec).map_err(|e| (4, format!("box {}: {e}", spec.box_id)))?;
    if spec.configure_only {
        println!("boxsock-krun-shim: box {} configured (libkrun ctx {}); not booting (configure_only)", spec.box_id, ctx.0);
        return Ok(());
    }
    api.start_enter(ctx).map_err(|e| (4, format!("box {}: {e}", spec.box_id)))?;
    Ok(())
}
