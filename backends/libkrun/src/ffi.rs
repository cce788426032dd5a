//! [`LibKrun`]: the real [`KrunApi`] over the `libkrun-sys` declarations.
//!
//! `libkrun-sys` only declares the C functions (published, it builds in stub mode). The
//! implementation is linked by naming the `libkrun` crate (lib name `krun`) below, or,
//! with the `system-libkrun` feature, a system `libkrun.so` found by pkg-config.

use std::ffi::{CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libkrun_sys as sys;

use crate::api::{KrunApi, KrunCtx, KrunError};

// Link the implementation of the functions libkrun-sys declares.
#[cfg(all(feature = "bundled-libkrun", not(feature = "system-libkrun")))]
use krun as _;

/// The real libkrun. Every call goes straight to the C API; nothing is cached.
#[derive(Debug, Default)]
pub struct LibKrun {
    _private: (),
}

impl LibKrun {
    /// The real API.
    pub fn new() -> Self {
        LibKrun { _private: () }
    }
}

fn check(call: &'static str, rc: i32) -> Result<i32, KrunError> {
    if rc < 0 { Err(KrunError::Call { call, errno: -rc }) } else { Ok(rc) }
}

fn cstr(call: &'static str, what: &'static str, bytes: &[u8]) -> Result<CString, KrunError> {
    CString::new(bytes).map_err(|_| KrunError::Nul {
        call,
        what,
        value: String::from_utf8_lossy(bytes).into_owned(),
    })
}

fn cpath(call: &'static str, what: &'static str, p: &Path) -> Result<CString, KrunError> {
    cstr(call, what, p.as_os_str().as_bytes())
}

/// A NULL-terminated `char *[]` whose pointers borrow `owned`.
fn ptr_array(owned: &[CString]) -> Vec<*const c_char> {
    owned.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

impl KrunApi for LibKrun {
    fn create_ctx(&mut self) -> Result<KrunCtx, KrunError> {
        // SAFETY: no arguments; libkrun allocates a context and returns its id or -errno.
        let rc = unsafe { sys::krun_create_ctx() };
        check("krun_create_ctx", rc).map(|id| KrunCtx(id as u32))
    }

    fn set_vm_config(&mut self, ctx: KrunCtx, vcpus: u8, ram_mib: u32) -> Result<(), KrunError> {
        // SAFETY: plain integer arguments.
        let rc = unsafe { sys::krun_set_vm_config(ctx.0, vcpus, ram_mib) };
        check("krun_set_vm_config", rc).map(drop)
    }

    fn set_root(&mut self, ctx: KrunCtx, root: &Path) -> Result<(), KrunError> {
        let c = cpath("krun_set_root", "root_path", root)?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; libkrun
        // copies it.
        let rc = unsafe { sys::krun_set_root(ctx.0, c.as_ptr()) };
        check("krun_set_root", rc).map(drop)
    }

    fn add_virtiofs(
        &mut self,
        ctx: KrunCtx,
        tag: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(), KrunError> {
        let t = cstr("krun_add_virtiofs3", "mount_tag", tag.as_bytes())?;
        let p = cpath("krun_add_virtiofs3", "host_path", path)?;
        // SAFETY: `t` and `p` are valid NUL-terminated strings that outlive the call;
        // libkrun copies them. A zero shm size means no DAX window.
        let rc = unsafe { sys::krun_add_virtiofs3(ctx.0, t.as_ptr(), p.as_ptr(), 0, read_only) };
        check("krun_add_virtiofs3", rc).map(drop)
    }

    fn add_disk(
        &mut self,
        ctx: KrunCtx,
        block_id: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(), KrunError> {
        let id = cstr("krun_add_disk", "block_id", block_id.as_bytes())?;
        let p = cpath("krun_add_disk", "disk_path", path)?;
        // SAFETY: `id` and `p` are valid NUL-terminated strings that outlive the call;
        // libkrun copies them into its block device configuration.
        let rc = unsafe { sys::krun_add_disk(ctx.0, id.as_ptr(), p.as_ptr(), read_only) };
        check("krun_add_disk", rc).map(drop)
    }

    fn disable_implicit_vsock(&mut self, ctx: KrunCtx) -> Result<(), KrunError> {
        // SAFETY: plain integer argument.
        let rc = unsafe { sys::krun_disable_implicit_vsock(ctx.0) };
        check("krun_disable_implicit_vsock", rc).map(drop)
    }

    fn add_vsock(&mut self, ctx: KrunCtx, tsi_features: u32) -> Result<(), KrunError> {
        // SAFETY: plain integer arguments.
        let rc = unsafe { sys::krun_add_vsock(ctx.0, tsi_features) };
        check("krun_add_vsock", rc).map(drop)
    }

    fn add_vsock_port2(
        &mut self,
        ctx: KrunCtx,
        port: u32,
        path: &Path,
        listen: bool,
    ) -> Result<(), KrunError> {
        let c = cpath("krun_add_vsock_port2", "filepath", path)?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; libkrun
        // copies it into its port map.
        let rc = unsafe { sys::krun_add_vsock_port2(ctx.0, port, c.as_ptr(), listen) };
        check("krun_add_vsock_port2", rc).map(drop)
    }

    fn add_net_unixstream(
        &mut self,
        ctx: KrunCtx,
        path: &Path,
        mac: [u8; 6],
        features: u32,
        flags: u32,
    ) -> Result<(), KrunError> {
        let c = cpath("krun_add_net_unixstream", "c_path", path)?;
        // SAFETY: `c` is a valid C string and `mac` a 6-byte array, both alive for the
        // call (libkrun copies both); fd -1 means "use the path".
        let rc = unsafe {
            sys::krun_add_net_unixstream(ctx.0, c.as_ptr(), -1, mac.as_ptr(), features, flags)
        };
        check("krun_add_net_unixstream", rc).map(drop)
    }

    fn add_net_unixstream_fd(
        &mut self,
        ctx: KrunCtx,
        fd: i32,
        mac: [u8; 6],
        features: u32,
        flags: u32,
    ) -> Result<(), KrunError> {
        // SAFETY: a NULL path with a descriptor is the documented "use this connected
        // socket" form; `mac` is a 6-byte array alive for the call (libkrun copies it);
        // `fd` is an open descriptor this process owns and hands to libkrun.
        let rc = unsafe {
            sys::krun_add_net_unixstream(ctx.0, std::ptr::null(), fd, mac.as_ptr(), features, flags)
        };
        check("krun_add_net_unixstream", rc).map(drop)
    }

    fn set_workdir(&mut self, ctx: KrunCtx, workdir: &str) -> Result<(), KrunError> {
        let c = cstr("krun_set_workdir", "workdir_path", workdir.as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { sys::krun_set_workdir(ctx.0, c.as_ptr()) };
        check("krun_set_workdir", rc).map(drop)
    }

    fn set_exec(
        &mut self,
        ctx: KrunCtx,
        path: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), KrunError> {
        const CALL: &str = "krun_set_exec";
        let exec = cstr(CALL, "exec_path", path.as_bytes())?;
        let argv: Vec<CString> =
            args.iter().map(|a| cstr(CALL, "argv", a.as_bytes())).collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                if k.is_empty() || k.contains('=') {
                    return Err(KrunError::Nul {
                        call: CALL,
                        what: "envp (name empty or containing '=')",
                        value: k.clone(),
                    });
                }
                cstr(CALL, "envp", format!("{k}={v}").as_bytes())
            })
            .collect::<Result<_, _>>()?;
        let argv_p = ptr_array(&argv);
        let envp_p = ptr_array(&envp);
        // SAFETY: every pointer points into a CString in `exec`/`argv`/`envp`, all alive
        // until after the call; both arrays are NULL-terminated as libkrun expects, and
        // libkrun copies the strings. A non-NULL envp means the host environment is not
        // inherited by the guest.
        let rc =
            unsafe { sys::krun_set_exec(ctx.0, exec.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        check(CALL, rc).map(drop)
    }

    fn set_console_output(&mut self, ctx: KrunCtx, path: &Path) -> Result<(), KrunError> {
        let c = cpath("krun_set_console_output", "filepath", path)?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { sys::krun_set_console_output(ctx.0, c.as_ptr()) };
        check("krun_set_console_output", rc).map(drop)
    }

    fn start_enter(&mut self, ctx: KrunCtx) -> Result<(), KrunError> {
        // SAFETY: integer argument; on success libkrun runs the VM on this process and
        // exits it when the guest ends, so it only returns on failure.
        let rc = unsafe { sys::krun_start_enter(ctx.0) };
        check("krun_start_enter", rc).map(drop)
    }
}
