//! [`ShimSpec`]: everything the shim needs to configure one box's VM, as JSON on its
//! stdin, and [`configure`], the pure sequence of libkrun calls made from it.

use std::path::{Path, PathBuf};

use boxsock_core::{BindingError, BoxId, PolicyPath, budget};
use serde::{Deserialize, Serialize};

use crate::api::{KrunApi, KrunCtx, KrunError, NET_FEATURES_NONE, NET_FLAG_DHCP_CLIENT};
use crate::derived::NET;

/// Guest vsock port of the agent's request socket (host side: the `agent` address,
/// on which libkrun listens).
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Guest vsock port the agent dials once ready (host side: the `ready` address, bound
/// by the runtime; libkrun connects to it).
pub const READY_VSOCK_PORT: u32 = 1025;
/// Default vCPUs.
pub const DEFAULT_VCPUS: u8 = 1;
/// Default guest memory in MiB.
pub const DEFAULT_RAM_MIB: u32 = 512;
/// MAC address of the guest NIC (locally administered; one NIC per VM, so it need not be
/// unique across boxes: each box has its own passt).
pub const GUEST_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];

/// A guest vsock port mapped to a host Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockMap {
    /// Guest vsock port.
    pub port: u32,
    /// Host path (the strategy's address).
    pub host_path: PathBuf,
}

/// The box network: libkrun connects to a passt stream socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// The `net` address (the strategy's; used only when `fd` is `None`).
    pub path: PathBuf,
    /// The shim's end of a connected socketpair whose other end passt serves
    /// (`passt --fd`), inherited at this descriptor number: libkrun is handed the fd
    /// (`krun_add_net_unixstream(NULL, fd, …)`), so `net` needs no filesystem path at
    /// all. `None`: libkrun connects to `path` (older specs, tests).
    #[serde(default)]
    pub fd: Option<i32>,
    /// Guest MAC.
    pub mac: [u8; 6],
}

/// A host directory shared with the guest over virtio-fs (`krun_add_virtiofs3`), which
/// the agent mounts by tag as a layer of the box's root (decision 0006).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtiofsShare {
    /// The virtio-fs tag (at most 36 bytes).
    pub tag: String,
    /// The host directory.
    pub host_path: PathBuf,
    /// libkrun's file server refuses every write (host-enforced).
    pub read_only: bool,
}

/// The box's writable disk (decision 0023): a raw ext4 image in the box directory,
/// attached read-write with `krun_add_disk`, holding the overlay's upper and work
/// directories. The agent finds it by its filesystem label ([`crate::disk::LABEL`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// libkrun's block id (the device's serial in the guest).
    pub block_id: String,
    /// The image file (`<box>/disk.ext4`).
    pub path: PathBuf,
}

/// Tag of the box's own layer (`<box>/rootfs`, read-only to the guest), the top lower.
pub const BOX_LAYER_TAG: &str = "boxsock-box";
/// Tag of the box's root filesystem (the user's `--rootfs`, or the guest base).
pub const LOWER_TAG: &str = "boxsock-lower";
/// Tags of the box's volumes: `boxsock-vol0`, `boxsock-vol1`… in the order of
/// `BoxSettings::volumes`.
pub const VOLUME_TAG_PREFIX: &str = "boxsock-vol";

/// The most volumes a libkrun box takes. Every virtio-fs share is a virtio-mmio device
/// with its own interrupt line, and libkrun 1.19.7 on x86_64 has a fixed number of
/// lines for all of a guest's devices. The limit is what a box *with* a network takes
/// (the net device costs a line too, and so does the box's disk), so no box that passed
/// create fails its start for want of a line; the VM tier measures it (scenario
/// `volume-limit`, decision 0022).
pub const MAX_VOLUMES: usize = 2;

/// The virtio-fs tag of the `i`th volume.
pub fn volume_tag(i: usize) -> String {
    format!("{VOLUME_TAG_PREFIX}{i}")
}

/// The agent's `--volume` argument for a volume shared as `tag`:
/// `TAG:ro|rw:GUEST_PATH` (the guest path last, so it may hold `:`).
pub fn volume_arg(tag: &str, guest: &Path, read_only: bool) -> String {
    format!("{tag}:{}:{}", if read_only { "ro" } else { "rw" }, guest.display())
}

/// The program libkrun's init execs in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestExec {
    /// Path inside the guest root (`/boxsock-agent`).
    pub path: String,
    /// Arguments (without argv\[0\]); the agent takes `vsock://<port>` URIs.
    pub args: Vec<String>,
    /// Working directory inside the guest.
    pub workdir: String,
}

/// The sandbox around the shim: what it may read, write, and where its sockets live.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JailSpec {
    /// Whether to apply the jail at all (`jail=off` is for diagnosis only).
    pub enabled: bool,
    /// Read (and execute) beneath: system libraries, /etc, the guest firmware.
    pub read_only: Vec<PathBuf>,
    /// Read and write beneath: the box directory.
    pub read_write: Vec<PathBuf>,
    /// Devices opened read-write with ioctls (`/dev/kvm`).
    pub devices: Vec<PathBuf>,
    /// The strategy's policy paths, with their intent (core's types, serialised).
    pub sockets: Vec<PolicyPath>,
    /// The inherited descriptor of the box's verified socket directory (see
    /// [`ShimSpec::socket_dir_fd`]): socket rights are granted on it too, on the inode
    /// the runtime verified rather than on a path.
    #[serde(default)]
    pub socket_dir_fd: Option<i32>,
}

/// Everything the shim needs. Socket paths come only from the strategy (through
/// `LaunchSpec::sockets`); the shim never computes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimSpec {
    /// The box.
    pub box_id: BoxId,
    /// The box directory (`<home>/boxes/<id>`).
    pub box_dir: PathBuf,
    /// The virtio-fs root of the guest: the shared guest base (read-only to the shim's
    /// jail), or for a box made before bases, `<box>/rootfs`.
    pub root_dir: PathBuf,
    /// More virtio-fs shares: the layers of the box's root, top first (empty for a box
    /// made before bases).
    #[serde(default)]
    pub shares: Vec<VirtiofsShare>,
    /// The box's writable disk; `None`: the overlay's upper is a tmpfs (boxes made
    /// before bases, and the `upper=tmpfs` option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSpec>,
    /// The agent, as exec'd in the guest.
    pub exec: GuestExec,
    /// The guest's complete environment.
    pub env: Vec<(String, String)>,
    /// Console output file.
    pub console_log: PathBuf,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub ram_mib: u32,
    /// `agent`: libkrun listens on the host path (`listen=true`).
    pub agent: VsockMap,
    /// `ready`: libkrun connects to the host path (`listen=false`).
    pub ready: VsockMap,
    /// The network, if any.
    pub net: Option<NetSpec>,
    /// `TMPDIR` for the VMM process: the box's binding directory, so the name libkrun
    /// derives there (`krun-net-<pid>-<n>.sock`) stays inside the budget. With a
    /// socket directory descriptor, `/proc/self/fd/<n>`.
    pub tmpdir: PathBuf,
    /// The descriptor at which the shim inherits the box's socket directory, verified by
    /// the runtime at this start. `agent`, `ready` and `tmpdir` then name sockets
    /// through it (`/proc/self/fd/<n>/<name>`), so libkrun's own binds and dials never
    /// re-resolve a /tmp path; the shim checks the descriptor again (a directory of its
    /// own uid, no group/other write) before configuring anything.
    #[serde(default)]
    pub socket_dir_fd: Option<i32>,
    /// The jail.
    pub jail: JailSpec,
    /// Configure libkrun, then exit 0 without `krun_start_enter` (diagnosis).
    pub configure_only: bool,
    /// Diagnosis (`jail_probe` option): once jailed, the shim tries to create this file
    /// and logs whether the jail denied it (`jail probe: writing "<path>" was denied`)
    /// or not (`… succeeded`, and removes it). Shows the jail is enforced in the very
    /// process that enters the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail_probe: Option<PathBuf>,
}

/// Why a [`ShimSpec`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// An address (or a name libkrun derives) does not fit `sun_path`.
    #[error(transparent)]
    Budget(#[from] BindingError),
    /// A path must be absolute.
    #[error("{what} {} is not an absolute path", boxsock_core::echo::path(path))]
    NotAbsolute {
        /// Which field.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl ShimSpec {
    /// Check every path the VMM will bind, connect or derive against the budget, and
    /// the other fields for sanity. Runs in the backend (so errors reach the caller) and
    /// again in the shim, before anything is configured.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (what, p) in [
            ("box dir", &self.box_dir),
            ("root dir", &self.root_dir),
            ("console log", &self.console_log),
            ("agent address", &self.agent.host_path),
            ("ready address", &self.ready.host_path),
            ("TMPDIR", &self.tmpdir),
        ] {
            if !p.is_absolute() {
                return Err(SpecError::NotAbsolute { what, path: p.clone() });
            }
        }
        budget::check_path("agent", &self.agent.host_path)?;
        budget::check_path("ready", &self.ready.host_path)?;
        if let Some(net) = &self.net {
            if !net.path.is_absolute() {
                return Err(SpecError::NotAbsolute { what: "net address", path: net.path.clone() });
            }
            // `net` itself, then every name derived from it ([`NET`]'s list), each in
            // `TMPDIR`, the directory the VMM derives in (the socket's own, or the
            // inherited descriptor's).
            let mut names = NET.all_file_names().into_iter();
            if let Some((label, _)) = names.next() {
                budget::check_path(&label, &net.path)?;
            }
            for (label, file) in names {
                budget::check_path(&label, &self.tmpdir.join(file))?;
            }
        }
        for (i, share) in self.shares.iter().enumerate() {
            if share.tag.is_empty()
                || share.tag.len() > 36
                || share.tag.contains(',')
                || self.shares[..i].iter().any(|s| s.tag == share.tag)
            {
                return Err(SpecError::Invalid {
                    what: "virtio-fs tag",
                    reason: format!("{:?}: 1 to 36 bytes, no ',', unique", share.tag),
                });
            }
            if !share.host_path.is_absolute() {
                return Err(SpecError::NotAbsolute {
                    what: "virtio-fs share",
                    path: share.host_path.clone(),
                });
            }
        }
        if let Some(disk) = &self.disk {
            if !disk.path.is_absolute() {
                return Err(SpecError::NotAbsolute { what: "disk image", path: disk.path.clone() });
            }
            if disk.block_id.is_empty() || disk.block_id.len() > 20 {
                return Err(SpecError::Invalid {
                    what: "block id",
                    reason: format!("{:?}: 1 to 20 bytes (a virtio-blk serial)", disk.block_id),
                });
            }
        }
        if self.agent.port == self.ready.port {
            return Err(SpecError::Invalid {
                what: "vsock ports",
                reason: format!("agent and ready both use port {}", self.agent.port),
            });
        }
        if self.vcpus == 0 {
            return Err(SpecError::Invalid { what: "vcpus", reason: "must be at least 1".into() });
        }
        if self.ram_mib < 64 {
            return Err(SpecError::Invalid {
                what: "ram_mib",
                reason: format!("{} MiB is below 64 MiB", self.ram_mib),
            });
        }
        if !self.exec.path.starts_with('/') {
            return Err(SpecError::Invalid {
                what: "guest exec path",
                reason: format!("{:?} is not absolute", self.exec.path),
            });
        }
        Ok(())
    }
}

/// Make the libkrun calls for `spec`, in order, and return the context ready for
/// `krun_start_enter`. Pure: all effects go through `api`.
///
/// Order: create_ctx, set_vm_config, set_root, add_virtiofs3 (each share, in order),
/// add_disk (the writable disk, read-write), disable_implicit_vsock, add_vsock(0)
/// (no TSI: the guest has no implicit network), add_vsock_port2(agent, listen=true),
/// add_vsock_port2(ready, listen=false), add_net_unixstream (with a network),
/// set_workdir, set_exec (explicit env, never the host's), set_console_output.
pub fn configure(api: &mut dyn KrunApi, spec: &ShimSpec) -> Result<KrunCtx, KrunError> {
    let ctx = api.create_ctx()?;
    api.set_vm_config(ctx, spec.vcpus, spec.ram_mib)?;
    api.set_root(ctx, &spec.root_dir)?;
    for share in &spec.shares {
        api.add_virtiofs(ctx, &share.tag, &share.host_path, share.read_only)?;
    }
    if let Some(disk) = &spec.disk {
        api.add_disk(ctx, &disk.block_id, &disk.path, false)?;
    }
    api.disable_implicit_vsock(ctx)?;
    api.add_vsock(ctx, 0)?;
    api.add_vsock_port2(ctx, spec.agent.port, &spec.agent.host_path, true)?;
    api.add_vsock_port2(ctx, spec.ready.port, &spec.ready.host_path, false)?;
    if let Some(net) = &spec.net {
        match net.fd {
            Some(fd) => api.add_net_unixstream_fd(
                ctx,
                fd,
                net.mac,
                NET_FEATURES_NONE,
                NET_FLAG_DHCP_CLIENT,
            )?,
            None => api.add_net_unixstream(
                ctx,
                &net.path,
                net.mac,
                NET_FEATURES_NONE,
                NET_FLAG_DHCP_CLIENT,
            )?,
        }
    }
    api.set_workdir(ctx, &spec.exec.workdir)?;
    api.set_exec(ctx, &spec.exec.path, &spec.exec.args, &spec.env)?;
    api.set_console_output(ctx, &spec.console_log)?;
    Ok(ctx)
}

/// The agent's guest command line (`boxsock-agent --agent <URI> --ready <URI>`): listen on
/// the agent vsock port, dial the ready vsock port.
pub fn agent_args(agent_port: u32, ready_port: u32) -> Vec<String> {
    vec![
        "--agent".into(),
        format!("vsock://{agent_port}"),
        "--ready".into(),
        format!("vsock://{ready_port}"),
    ]
}

/// The directory in which a socket path lives (for `TMPDIR`).
pub(crate) fn parent_of(p: &Path) -> Option<&Path> {
    p.parent().filter(|d| !d.as_os_str().is_empty())
}
