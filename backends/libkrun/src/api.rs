//! The seam between boxsock and libkrun: [`KrunApi`] has one method per libkrun call the
//! shim makes. [`crate::ffi::LibKrun`] implements it over `libkrun-sys`;
//! [`RecordingKrun`] records the exact calls and arguments for tests.

use std::path::{Path, PathBuf};

/// A libkrun configuration context, as returned by `krun_create_ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KrunCtx(pub u32);

/// What went wrong in a libkrun call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KrunError {
    /// libkrun returned a negative errno.
    #[error("libkrun {call} failed: {} (errno {errno})", std::io::Error::from_raw_os_error(*errno))]
    Call {
        /// The C function (`krun_add_vsock_port2`…).
        call: &'static str,
        /// The negated return value.
        errno: i32,
    },
    /// An argument cannot become a C string.
    #[error("libkrun {call}: argument {what} contains a NUL byte: {value:?}")]
    Nul {
        /// The C function.
        call: &'static str,
        /// Which argument.
        what: &'static str,
        /// The value, printable.
        value: String,
    },
}

/// Virtio-net offload features passed to `krun_add_net_unixstream` (libkrun.h
/// `NET_FEATURE_*`). boxsock passes none: passt handles plain frames.
pub const NET_FEATURES_NONE: u32 = 0;
/// `NET_FLAG_DHCP_CLIENT` (libkrun.h): libkrun's init runs a DHCP client in the guest
/// (passt answers it).
pub const NET_FLAG_DHCP_CLIENT: u32 = 1 << 1;

/// One method per libkrun call boxsock makes. Implementations convert arguments and map
/// negative returns to [`KrunError::Call`].
pub trait KrunApi {
    /// `krun_create_ctx`.
    fn create_ctx(&mut self) -> Result<KrunCtx, KrunError>;
    /// `krun_set_vm_config`.
    fn set_vm_config(&mut self, ctx: KrunCtx, vcpus: u8, ram_mib: u32) -> Result<(), KrunError>;
    /// `krun_set_root`: the virtio-fs root of the guest.
    fn set_root(&mut self, ctx: KrunCtx, root: &Path) -> Result<(), KrunError>;
    /// `krun_add_virtiofs3`: share host directory `path` with the guest as virtio-fs
    /// `tag` (the guest mounts it by tag); `read_only`: libkrun's file server refuses
    /// every write (the host enforces it, whatever the guest does).
    fn add_virtiofs(
        &mut self,
        ctx: KrunCtx,
        tag: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(), KrunError>;
    /// `krun_add_disk`: attach the raw disk image `path` as a virtio-blk device with
    /// this `block_id`; the guest sees disks in the order they are added (`/dev/vda`
    /// first). `read_only`: the device refuses writes.
    fn add_disk(
        &mut self,
        ctx: KrunCtx,
        block_id: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(), KrunError>;
    /// `krun_disable_implicit_vsock`: drop the default vsock device (which has TSI on).
    fn disable_implicit_vsock(&mut self, ctx: KrunCtx) -> Result<(), KrunError>;
    /// `krun_add_vsock`: a vsock device with these TSI features (0: no TSI, so the
    /// guest gets no implicit host network).
    fn add_vsock(&mut self, ctx: KrunCtx, tsi_features: u32) -> Result<(), KrunError>;
    /// `krun_add_vsock_port2`: map guest vsock `port` to host Unix socket `path`;
    /// `listen` = libkrun listens on the host path (else it connects to it).
    fn add_vsock_port2(
        &mut self,
        ctx: KrunCtx,
        port: u32,
        path: &Path,
        listen: bool,
    ) -> Result<(), KrunError>;
    /// `krun_add_net_unixstream` with a path (no fd): libkrun connects to the proxy.
    fn add_net_unixstream(
        &mut self,
        ctx: KrunCtx,
        path: &Path,
        mac: [u8; 6],
        features: u32,
        flags: u32,
    ) -> Result<(), KrunError>;
    /// `krun_add_net_unixstream` with a connected socket (no path): `fd` is one end of
    /// a socketpair whose other end the proxy (passt `--fd`) serves.
    fn add_net_unixstream_fd(
        &mut self,
        ctx: KrunCtx,
        fd: i32,
        mac: [u8; 6],
        features: u32,
        flags: u32,
    ) -> Result<(), KrunError>;
    /// `krun_set_workdir`: the guest working directory of the exec'd process.
    fn set_workdir(&mut self, ctx: KrunCtx, workdir: &str) -> Result<(), KrunError>;
    /// `krun_set_exec`: the guest program, its arguments (without argv\[0\]) and its
    /// complete environment (never inherited from the host).
    fn set_exec(
        &mut self,
        ctx: KrunCtx,
        path: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), KrunError>;
    /// `krun_set_console_output`: the console goes to this file.
    fn set_console_output(&mut self, ctx: KrunCtx, path: &Path) -> Result<(), KrunError>;
    /// `krun_start_enter`: boots the VM; on success it does not return (libkrun exits
    /// the process when the guest ends).
    fn start_enter(&mut self, ctx: KrunCtx) -> Result<(), KrunError>;
}

/// One recorded libkrun call, with owned arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // The fields are the C arguments of the call of the same name.
pub enum KrunCall {
    CreateCtx,
    SetVmConfig { ctx: KrunCtx, vcpus: u8, ram_mib: u32 },
    SetRoot { ctx: KrunCtx, root: PathBuf },
    AddVirtiofs { ctx: KrunCtx, tag: String, path: PathBuf, read_only: bool },
    AddDisk { ctx: KrunCtx, block_id: String, path: PathBuf, read_only: bool },
    DisableImplicitVsock { ctx: KrunCtx },
    AddVsock { ctx: KrunCtx, tsi_features: u32 },
    AddVsockPort2 { ctx: KrunCtx, port: u32, path: PathBuf, listen: bool },
    AddNetUnixstream { ctx: KrunCtx, path: PathBuf, mac: [u8; 6], features: u32, flags: u32 },
    AddNetUnixstreamFd { ctx: KrunCtx, fd: i32, mac: [u8; 6], features: u32, flags: u32 },
    SetWorkdir { ctx: KrunCtx, workdir: String },
    SetExec { ctx: KrunCtx, path: String, args: Vec<String>, env: Vec<(String, String)> },
    SetConsoleOutput { ctx: KrunCtx, path: PathBuf },
    StartEnter { ctx: KrunCtx },
}

impl KrunCall {
    /// The C function name.
    pub fn c_name(&self) -> &'static str {
        match self {
            KrunCall::CreateCtx => "krun_create_ctx",
            KrunCall::SetVmConfig { .. } => "krun_set_vm_config",
            KrunCall::SetRoot { .. } => "krun_set_root",
            KrunCall::AddVirtiofs { .. } => "krun_add_virtiofs3",
            KrunCall::AddDisk { .. } => "krun_add_disk",
            KrunCall::DisableImplicitVsock { .. } => "krun_disable_implicit_vsock",
            KrunCall::AddVsock { .. } => "krun_add_vsock",
            KrunCall::AddVsockPort2 { .. } => "krun_add_vsock_port2",
            KrunCall::AddNetUnixstream { .. } | KrunCall::AddNetUnixstreamFd { .. } => {
                "krun_add_net_unixstream"
            }
            KrunCall::SetWorkdir { .. } => "krun_set_workdir",
            KrunCall::SetExec { .. } => "krun_set_exec",
            KrunCall::SetConsoleOutput { .. } => "krun_set_console_output",
            KrunCall::StartEnter { .. } => "krun_start_enter",
        }
    }
}

/// A [`KrunApi`] that records every call and argument, for tests. It can be told to
/// fail one call with an errno, to test error paths.
#[derive(Debug, Default)]
pub struct RecordingKrun {
    /// The calls, in order.
    pub calls: Vec<KrunCall>,
    /// Fail the first call with this C name, returning this errno.
    pub fail: Option<(&'static str, i32)>,
    next_ctx: u32,
}

impl RecordingKrun {
    /// A recorder that succeeds at every call.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that fails `call` (a C name) with `errno`.
    pub fn failing(call: &'static str, errno: i32) -> Self {
        RecordingKrun { fail: Some((call, errno)), ..Self::default() }
    }

    fn record(&mut self, call: KrunCall) -> Result<(), KrunError> {
        let name = call.c_name();
        self.calls.push(call);
        match self.fail {
            Some((f, errno)) if f == name => {
                self.fail = None;
                Err(KrunError::Call { call: name, errno })
            }
            _ => Ok(()),
        }
    }
}

impl KrunApi for RecordingKrun {
    fn create_ctx(&mut self) -> Result<KrunCtx, KrunError> {
        self.record(KrunCall::CreateCtx)?;
        let ctx = KrunCtx(self.next_ctx);
        self.next_ctx += 1;
        Ok(ctx)
    }
    fn set_vm_config(&mut self, ctx: KrunCtx, vcpus: u8, ram_mib: u32) -> Result<(), KrunError> {
        self.record(KrunCall::SetVmConfig { ctx, vcpus, ram_mib })
    }
    fn set_root(&mut self, ctx: KrunCtx, root: &Path) -> Result<(), KrunError> {
        self.record(KrunCall::SetRoot { ctx, root: root.to_path_buf() })
    }
    fn add_virtiofs(
        &mut self,
        ctx: KrunCtx,
        tag: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(), KrunError> {
        self.record(KrunCall::AddVirtiofs {
            ctx,
            tag: tag.to_owned(),
            path: path.to_path_buf(),
            read_only,
        })
    }
    fn add_disk(
        &mut self,
        ctx: KrunCtx,
        block_id: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(), KrunError> {
        self.record(KrunCall::AddDisk {
            ctx,
            block_id: block_id.to_owned(),
            path: path.to_path_buf(),
            read_only,
        })
    }
    fn disable_implicit_vsock(&mut self, ctx: KrunCtx) -> Result<(), KrunError> {
        self.record(KrunCall::DisableImplicitVsock { ctx })
    }
    fn add_vsock(&mut self, ctx: KrunCtx, tsi_features: u32) -> Result<(), KrunError> {
        self.record(KrunCall::AddVsock { ctx, tsi_features })
    }
    fn add_vsock_port2(
        &mut self,
        ctx: KrunCtx,
        port: u32,
        path: &Path,
        listen: bool,
    ) -> Result<(), KrunError> {
        self.record(KrunCall::AddVsockPort2 { ctx, port, path: path.to_path_buf(), listen })
    }
    fn add_net_unixstream(
        &mut self,
        ctx: KrunCtx,
        path: &Path,
        mac: [u8; 6],
        features: u32,
        flags: u32,
    ) -> Result<(), KrunError> {
        self.record(KrunCall::AddNetUnixstream {
            ctx,
            path: path.to_path_buf(),
            mac,
            features,
            flags,
        })
    }
    fn add_net_unixstream_fd(
        &mut self,
        ctx: KrunCtx,
        fd: i32,
        mac: [u8; 6],
        features: u32,
        flags: u32,
    ) -> Result<(), KrunError> {
        self.record(KrunCall::AddNetUnixstreamFd { ctx, fd, mac, features, flags })
    }
    fn set_workdir(&mut self, ctx: KrunCtx, workdir: &str) -> Result<(), KrunError> {
        self.record(KrunCall::SetWorkdir { ctx, workdir: workdir.to_owned() })
    }
    fn set_exec(
        &mut self,
        ctx: KrunCtx,
        path: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), KrunError> {
        self.record(KrunCall::SetExec {
            ctx,
            path: path.to_owned(),
            args: args.to_vec(),
            env: env.to_vec(),
        })
    }
    fn set_console_output(&mut self, ctx: KrunCtx, path: &Path) -> Result<(), KrunError> {
        self.record(KrunCall::SetConsoleOutput { ctx, path: path.to_path_buf() })
    }
    fn start_enter(&mut self, ctx: KrunCtx) -> Result<(), KrunError> {
        self.record(KrunCall::StartEnter { ctx })
    }
}
