//! [`Libkrun`]: the [`Backend`] that runs each box as a `boxsock-krun-shim` process.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use boxsock_core::atomic::AtomicWrite;
use boxsock_core::backend::{
    AddressNeeds, Availability, BackendConfig, BackendError, BoxSettings, Isolation, LaunchSpec,
    Launched, WritableLayer,
};
use boxsock_core::catalogue::{self, SocketSpec};
use boxsock_core::layout::BoxLayout;
use boxsock_core::process::OwnedProcess;
use boxsock_core::spawn::{Spawn, SpawnError};
use boxsock_core::{Backend, BoxId, SocketAddress};

use crate::jail::{SYSTEM_DEVICES, SYSTEM_READ_ONLY};
use crate::passt::{DEFAULT_PASST, DEFAULT_PASST_TIMEOUT, Passt};
use crate::probe::HostProbe;
use crate::spec::{
    AGENT_VSOCK_PORT, BOX_LAYER_TAG, DEFAULT_RAM_MIB, DEFAULT_VCPUS, DiskSpec, GUEST_MAC,
    GuestExec, JailSpec, LOWER_TAG, MAX_VOLUMES, NetSpec, READY_VSOCK_PORT, ShimSpec,
    VirtiofsShare, VsockMap, agent_args, parent_of, volume_arg, volume_tag,
};
use crate::{NAME, SHIM_BINARY};

pub use crate::derived::NET;

/// The descriptor at which the shim inherits the box's verified socket directory.
pub const SHIM_SOCKET_DIR_FD: i32 = 3;

/// The most vCPUs a libkrun guest boots with on x86_64: libkrun writes an MP table of at
/// most 254 CPUs (`MAX_SUPPORTED_CPUS` in its `arch/x86_64/mptable.rs`) and fails to
/// boot beyond it.
pub const MAX_VCPUS: u8 = 254;

/// How long a start waits, at most, for a live passt to hold every published port.
const PORTS_BOUND_TIMEOUT: Duration = Duration::from_secs(30);

/// The least guest memory accepted: the guest kernel and the agent need it.
pub const MIN_RAM_MIB: u32 = 64;

/// This host's memory in MiB (`MemTotal` of `/proc/meminfo`); `None` when unreadable.
fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The descriptor at which the shim inherits its end of the `net` socketpair.
pub const SHIM_NET_FD: i32 = 4;

pub use crate::rootfs::DEFAULT_GUEST_AGENT;

/// Why [`Libkrun::find_agent`] found no agent binary for a guest root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FindAgentError {
    /// The `agent` option names no file.
    #[error("option agent={}: no such file", boxsock_core::echo::path(path))]
    NoSuchFile {
        /// The path given.
        path: PathBuf,
    },
    /// None of the places an agent is looked for holds one (the error lists them).
    #[error(transparent)]
    NotFound(#[from] boxsock_core::helpers::AgentNotFound),
}

/// Settings of the libkrun backend, from [`BackendConfig`] options.
///
/// | option | default | meaning |
/// |---|---|---|
/// | `shim` | `<helper_dir>/boxsock-krun-shim` | the shim binary |
/// | `passt` | `passt` | the passt binary |
/// | `guest_agent` | `/boxsock-agent` | the agent's path inside the guest root |
/// | `vcpus` | 1 | vCPUs |
/// | `ram_mib` | 512 | guest memory |
/// | `libkrunfw` | `libkrunfw.so.5` | what the availability probe loads |
/// | `read_only` | — | extra `:`-separated directories the shim may read (libkrunfw's) |
/// | `jail` | `on` | `off` runs the shim without Landlock (diagnosis only) |
/// | `configure_only` | `false` | the shim configures libkrun and exits 0 without booting; the availability probe is skipped (nothing boots), so the box process always exits before readiness |
/// | `agent` | found like the `host` backend finds it | the host `boxsock-agent` copied into each new box's guest root |
/// | `upper` | `disk` | where the box's writes go: `disk`, the box's ext4 disk image (kept across stop/start; decision 0023), or `tmpfs`, guest memory for one run (measurement and diagnosis) |
/// | `jail_probe` | — | diagnosis: once jailed, the shim tries to create this file and logs `jail probe: writing "<path>" was denied` or `… succeeded` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibkrunConfig {
    /// The shim binary.
    pub shim: PathBuf,
    /// The passt binary.
    pub passt: PathBuf,
    /// Path of the agent inside the guest root.
    pub guest_agent: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub ram_mib: u32,
    /// Extra read-only directories for the jail.
    pub extra_read_only: Vec<PathBuf>,
    /// Apply the jail in the shim.
    pub jail: bool,
    /// Configure only, do not boot.
    pub configure_only: bool,
    /// How long to wait for passt.
    pub passt_timeout: Duration,
    /// The availability probe.
    pub probe: HostProbe,
    /// The host agent binary copied into each new box's guest root (`agent` option);
    /// `None`: found as the `host` backend finds it.
    pub agent: Option<PathBuf>,
    /// Where helper binaries are looked for (from [`BackendConfig::helper_dir`]).
    pub helper_dir: Option<PathBuf>,
    /// Diagnosis: a file the jailed shim tries to create ([`ShimSpec::jail_probe`]).
    pub jail_probe: Option<PathBuf>,
    /// Where the overlay's upper lives (`upper` option).
    pub upper: Upper,
}

/// Where a box's writes go (the `upper` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upper {
    /// The box's disk image, `<box>/disk.ext4` (decision 0023): kept until `rm`.
    #[default]
    Disk,
    /// A tmpfs in guest memory, lost at `stop`: what boxes had before disks, kept to
    /// measure the disk against and for diagnosis.
    Tmpfs,
}

fn bad(reason: String) -> BackendError {
    BackendError::Spec { backend: NAME.into(), reason }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, BackendError> {
    match v {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(bad(format!("option {key}={v:?}: expected on/off"))),
    }
}

impl LibkrunConfig {
    /// Read the options. Unknown keys are logged and ignored; bad values are errors.
    pub fn from_backend_config(config: &BackendConfig) -> Result<Self, BackendError> {
        let helper_dir = match &config.helper_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let mut c = LibkrunConfig {
            shim: helper_dir.join(SHIM_BINARY),
            passt: PathBuf::from(DEFAULT_PASST),
            guest_agent: DEFAULT_GUEST_AGENT.into(),
            vcpus: DEFAULT_VCPUS,
            ram_mib: DEFAULT_RAM_MIB,
            extra_read_only: Vec::new(),
            jail: true,
            configure_only: false,
            passt_timeout: DEFAULT_PASST_TIMEOUT,
            probe: HostProbe::default(),
            agent: None,
            helper_dir: config.helper_dir.clone(),
            jail_probe: None,
            upper: Upper::Disk,
        };
        for (k, v) in &config.options {
            match k.as_str() {
                "shim" => c.shim = PathBuf::from(v),
                "passt" => c.passt = PathBuf::from(v),
                "guest_agent" => {
                    let p = Path::new(v);
                    if !p.is_absolute()
                        || !p
                            .components()
                            .skip(1)
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                    {
                        return Err(bad(format!(
                            "option guest_agent={v:?}: expected an absolute path inside the guest without '..'"
                        )));
                    }
                    c.guest_agent = v.clone()
                }
                "vcpus" => {
                    c.vcpus = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("option vcpus={v:?}: expected 1..=255")))?
                }
                "ram_mib" => {
                    c.ram_mib = v.parse().ok().filter(|n| *n >= 64).ok_or_else(|| {
                        bad(format!("option ram_mib={v:?}: expected a number of MiB >= 64"))
                    })?
                }
                "libkrunfw" => c.probe.libkrunfw = v.clone(),
                "read_only" => c
                    .extra_read_only
                    .extend(v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from)),
                "jail" => c.jail = parse_bool(k, v)?,
                "configure_only" => c.configure_only = parse_bool(k, v)?,
                "agent" => c.agent = Some(PathBuf::from(v)),
                "upper" => {
                    c.upper = match v.as_str() {
                        "disk" => Upper::Disk,
                        "tmpfs" => Upper::Tmpfs,
                        _ => {
                            return Err(bad(format!("option upper={v:?}: expected disk or tmpfs")));
                        }
                    }
                }
                "jail_probe" => {
                    if !Path::new(v).is_absolute() {
                        return Err(bad(format!(
                            "option jail_probe={v:?}: expected an absolute path"
                        )));
                    }
                    c.jail_probe = Some(PathBuf::from(v))
                }
                other => tracing::warn!(backend = NAME, option = other, "unknown option ignored"),
            }
        }
        Ok(c)
    }
}

/// The libkrun backend.
#[derive(Debug, Clone)]
pub struct Libkrun {
    config: LibkrunConfig,
}

impl boxsock_core::registry::Named for Libkrun {
    const NAME: &'static str = NAME;
}

/// The root of the box's image (`BoxLayout::image_root` of its manifest), checked to be
/// a directory; `None` for a box without an image.
fn image_root(spec: &LaunchSpec) -> Result<Option<PathBuf>, BackendError> {
    let Some(image) = &spec.settings.image else { return Ok(None) };
    let root = spec.layout.image_root(&image.manifest).ok_or_else(|| {
        bad(format!(
            "box {}: image {} has a manifest digest that is not sha256:<64 hex digits>",
            spec.id,
            boxsock_core::echo::echo(&image.reference)
        ))
    })?;
    if !root.is_dir() {
        return Err(bad(format!(
            "box {}: the root of image {} ({}) is missing: was the image removed and pruned? \
             Pull or import it again, then create the box again",
            spec.id,
            boxsock_core::echo::echo(&image.reference),
            boxsock_core::echo::path(&root)
        )));
    }
    Ok(Some(root))
}

/// The guest base the box's last launch recorded, if it still exists.
pub fn recorded_base(layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
    let key = std::fs::read_to_string(layout.box_dir(id).join(crate::rootfs::BASE_RECORD)).ok()?;
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let base = layout.home().join(crate::rootfs::BASE_DIR).join(key);
    base.is_dir().then_some(base)
}

fn path_address(spec: &LaunchSpec, name: &str) -> Result<PathBuf, BackendError> {
    match spec.sockets.addresses.get(name) {
        Some(SocketAddress::Path(p)) => Ok(p.clone()),
        Some(a @ SocketAddress::Abstract(_)) => Err(bad(format!(
            "libkrun maps vsock ports to host paths; the strategy gave socket {name:?} the abstract address {a}; use a path strategy such as short-symlink"
        ))),
        None => Err(bad(format!("the launch spec has no address for socket {name:?}"))),
    }
}

impl Libkrun {
    /// A backend with these settings.
    pub fn new(config: LibkrunConfig) -> Self {
        Libkrun { config }
    }

    /// The settings.
    pub fn config(&self) -> &LibkrunConfig {
        &self.config
    }

    /// Build the shim's spec from a launch spec. Every socket path comes from
    /// `spec.sockets` (the strategy, derived once by the runtime); an abstract or
    /// missing address is refused.
    pub fn shim_spec(&self, spec: &LaunchSpec) -> Result<ShimSpec, BackendError> {
        let net = if spec.network { Some(path_address(spec, NET.name)?) } else { None };
        let (agent, ready, tmpdir, socket_dir_fd) = if spec.sockets.dir.is_some() {
            // Through the verified directory the shim inherits at SHIM_SOCKET_DIR_FD.
            let through = |socket: &catalogue::Socket| -> Result<PathBuf, BackendError> {
                path_address(spec, socket.name)?;
                match spec.sockets.child_endpoint(socket, SHIM_SOCKET_DIR_FD)? {
                    SocketAddress::Path(p) => Ok(p),
                    a => Err(bad(format!("socket {socket}: {a} is not a path"))),
                }
            };
            let agent = through(&catalogue::AGENT)?;
            let ready = through(&catalogue::READY)?;
            let tmpdir = parent_of(&agent).map(Path::to_path_buf).ok_or_else(|| {
                bad(format!("{} has no directory", boxsock_core::echo::path(&agent)))
            })?;
            (agent, ready, tmpdir, Some(SHIM_SOCKET_DIR_FD))
        } else {
            let agent = path_address(spec, catalogue::AGENT.name)?;
            let ready = path_address(spec, catalogue::READY.name)?;
            let tmpdir = parent_of(net.as_deref().unwrap_or(&agent))
                .ok_or_else(|| {
                    bad(format!(
                        "socket address {} has no directory",
                        boxsock_core::echo::path(&agent)
                    ))
                })?
                .to_path_buf();
            (agent, ready, tmpdir, None)
        };
        let box_dir = spec.layout.box_dir(&spec.id);
        let mut read_only: Vec<PathBuf> = SYSTEM_READ_ONLY.iter().map(PathBuf::from).collect();
        read_only.extend(self.config.extra_read_only.iter().cloned());
        let box_layer = spec.layout.rootfs_dir(&spec.id);
        let mut args = agent_args(AGENT_VSOCK_PORT, READY_VSOCK_PORT);
        if let Some(name) = &spec.settings.hostname {
            // The guest's agent sets it once in the box's root (checked at create).
            args.extend(["--hostname".to_owned(), name.clone()]);
        }
        // The guest base this box launches from (recorded by `launch`/`prepare`); a box
        // made before bases boots from its own full copy in `<box>/rootfs`.
        let mut read_write = vec![box_dir.clone()];
        let mut disk = None;
        let (root_dir, shares) = match recorded_base(&spec.layout, &spec.id) {
            Some(base) => {
                // The lower layer: the image's root (its layers merged, whiteouts
                // applied, shared by every box of the image: decision 0018), the user's
                // directory, or the base.
                let lower = match (image_root(spec)?, &spec.settings.rootfs) {
                    (Some(image), _) => image,
                    (None, Some(user)) => user.clone(),
                    (None, None) => base.clone(),
                };
                read_only.push(base.clone());
                // The box's own layer is read-only to the guest and to the jail (the
                // only read-write grant is the disk image, below).
                read_only.push(box_layer.clone());
                if lower != base {
                    read_only.push(lower.clone());
                }
                let mut shares = vec![
                    VirtiofsShare {
                        tag: BOX_LAYER_TAG.into(),
                        host_path: box_layer,
                        read_only: true,
                    },
                    VirtiofsShare { tag: LOWER_TAG.into(), host_path: lower, read_only: true },
                ];
                for s in &shares {
                    args.extend(["--overlay-lower".to_owned(), s.tag.clone()]);
                }
                // The jail grants read-write on the disk image alone: nothing else of
                // the box directory is written by the VMM (its log is a descriptor, its
                // sockets are beneath the inherited socket directory).
                read_write.clear();
                if self.config.upper == Upper::Disk {
                    let path = crate::disk::path_in(&box_dir);
                    args.extend(["--upper-disk".to_owned(), crate::disk::LABEL.to_owned()]);
                    read_write.push(path.clone());
                    disk = Some(DiskSpec { block_id: crate::disk::LABEL.into(), path });
                }
                // One share per volume, read-only to libkrun's file server where `:ro`;
                // the jail grants exactly these host directories beside the box's own.
                for (i, v) in spec.settings.volumes.iter().enumerate() {
                    if !v.host.is_dir() {
                        return Err(bad(format!(
                            "box {}: volume {}: the host directory {} is gone or not a \
                             directory (it was one at create)",
                            spec.id,
                            boxsock_core::echo::echo(&v.to_string()),
                            boxsock_core::echo::path(&v.host)
                        )));
                    }
                    let tag = volume_tag(i);
                    args.extend(["--volume".to_owned(), volume_arg(&tag, &v.guest, v.read_only)]);
                    shares.push(VirtiofsShare {
                        tag,
                        host_path: v.host.clone(),
                        read_only: v.read_only,
                    });
                    if v.read_only {
                        read_only.push(v.host.clone());
                    } else {
                        read_write.push(v.host.clone());
                    }
                }
                (base, shares)
            }
            None if spec.settings.rootfs.is_some()
                || spec.settings.image.is_some()
                || !spec.settings.volumes.is_empty() =>
            {
                return Err(bad(format!(
                    "box {}: a root filesystem, an image or a volume needs the shared guest base, and {} records none (the box was not prepared by this backend)",
                    spec.id,
                    boxsock_core::echo::path(&box_dir.join(crate::rootfs::BASE_RECORD))
                )));
            }
            None => (box_layer, Vec::new()),
        };
        let shim = ShimSpec {
            box_id: spec.id.clone(),
            box_dir: box_dir.clone(),
            root_dir,
            shares,
            disk,
            exec: GuestExec { path: self.config.guest_agent.clone(), args, workdir: "/".into() },
            env: spec.env.clone(),
            console_log: spec.log_file.clone(),
            vcpus: spec.settings.vcpus.unwrap_or(self.config.vcpus),
            ram_mib: spec.settings.ram_mib.unwrap_or(self.config.ram_mib),
            agent: VsockMap { port: AGENT_VSOCK_PORT, host_path: agent },
            ready: VsockMap { port: READY_VSOCK_PORT, host_path: ready },
            net: net.map(|path| NetSpec {
                path,
                mac: GUEST_MAC,
                fd: socket_dir_fd.map(|_| SHIM_NET_FD),
            }),
            tmpdir,
            socket_dir_fd,
            jail: JailSpec {
                enabled: self.config.jail,
                read_only,
                read_write,
                devices: SYSTEM_DEVICES.iter().map(PathBuf::from).collect(),
                sockets: spec.policy.clone(),
                socket_dir_fd,
            },
            configure_only: self.config.configure_only,
            jail_probe: self.config.jail_probe.clone(),
        };
        shim.validate().map_err(|e| match e {
            crate::spec::SpecError::Budget(b) => BackendError::Binding(b),
            other => bad(other.to_string()),
        })?;
        Ok(shim)
    }

    /// [`Backend::launch`] without the availability probe: start passt (with a network)
    /// and the shim. For diagnosis on hosts that cannot boot (the shim then reports the
    /// failure of `krun_start_enter` in the box log) and with `configure_only`.
    pub fn launch_unchecked(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        // The base of the agent found now (built once per agent), so a box always boots
        // the current agent. Without an agent, a box made before bases still boots from
        // its own copy.
        match self.find_agent() {
            Ok(agent) => {
                self.ensure_base(&spec.layout, &spec.id, &agent)?;
            }
            Err(reason)
                if spec.settings.rootfs.is_some()
                    || spec.settings.image.is_some()
                    || recorded_base(&spec.layout, &spec.id).is_some() =>
            {
                return Err(bad(format!("box {}: no agent for the guest base: {reason}", spec.id)));
            }
            Err(_) => {}
        }
        let shim_spec = self.shim_spec(spec)?;
        if let Some(disk) = &shim_spec.disk {
            let size = spec.settings.disk_size.unwrap_or(crate::disk::DEFAULT_SIZE);
            crate::disk::ensure(&disk.path, size)
                .map_err(|e| bad(format!("box {}: {e}", spec.id)))?;
        }
        let guest_agent = shim_spec.root_dir.join(self.config.guest_agent.trim_start_matches('/'));
        if !guest_agent.exists() {
            return Err(bad(format!(
                "the guest root {} has no agent at {} (build it as docs/backends.md describes)",
                boxsock_core::echo::path(&shim_spec.root_dir),
                boxsock_core::echo::path(&guest_agent)
            )));
        }
        let Some(dir) = &spec.sockets.dir else {
            return Err(bad(format!(
                "box {}: no verified socket directory in the launch spec; the shim would re-resolve {} (the runtime always provides one for a path strategy)",
                spec.id,
                boxsock_core::echo::path(&shim_spec.agent.host_path)
            )));
        };
        let json = serde_json::to_vec(&shim_spec)
            .map_err(|e| bad(format!("cannot encode the shim spec: {e}")))?;
        let passt_err = |e: crate::passt::PasstError| match e {
            crate::passt::PasstError::Port { cause, output } => {
                let port = *cause.port();
                let reason = crate::passt::PasstError::Port { cause, output }.to_string();
                BackendError::Port { backend: NAME.into(), port, reason }
            }
            e => BackendError::Spawn {
                backend: NAME.into(),
                what: boxsock_core::echo::path(&self.config.passt).to_string(),
                source: std::io::Error::other(e.to_string()),
            },
        };
        if !spec.settings.ports.is_empty() && shim_spec.net.is_none() {
            return Err(bad(format!(
                "box {}: published ports need the box's network, and it has none",
                spec.id
            )));
        }
        let mut shim_net_end = None;
        let passt = match &shim_spec.net {
            Some(net) => {
                let log = spec.log_file.with_file_name("passt.log");
                let p = if net.fd.is_some() {
                    let (ours, theirs) = nix::sys::socket::socketpair(
                        nix::sys::socket::AddressFamily::Unix,
                        nix::sys::socket::SockType::Stream,
                        None,
                        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                    )
                    .map_err(|e| {
                        bad(format!("box {}: socketpair for the network: {e}", spec.id))
                    })?;
                    shim_net_end = Some(ours);
                    Passt::start_fd_forwarding(
                        &self.config.passt,
                        theirs,
                        &log,
                        crate::passt::PASST_SETTLE,
                        &spec.settings.ports,
                        // A live passt binds its ports at once; this bounds only a hung one.
                        self.config.passt_timeout.max(PORTS_BOUND_TIMEOUT),
                    )
                    .map_err(passt_err)?
                } else {
                    Passt::start(&self.config.passt, &net.path, &log, self.config.passt_timeout)
                        .map_err(passt_err)?
                };
                Some(p)
            }
            None => None,
        };
        let mut fds = vec![(dir.as_fd(), SHIM_SOCKET_DIR_FD)];
        if let Some(ours) = &shim_net_end {
            fds.push((ours.as_fd(), SHIM_NET_FD));
        }
        let spawned = self.spawn_shim(json, &spec.log_file, &fds);
        drop(fds);
        drop(shim_net_end);
        match spawned {
            Ok(process) => {
                let companions: Vec<OwnedProcess> =
                    passt.into_iter().filter_map(Passt::detach).collect();
                let pids: Vec<i32> = companions.iter().map(OwnedProcess::pid).collect();
                tracing::debug!(box_id = %spec.id, pid = process.pid(), companions = ?pids, "libkrun shim started");
                Ok(Launched { process, companions })
            }
            Err(e) => {
                if let Some(p) = passt {
                    p.kill();
                }
                Err(e)
            }
        }
    }

    /// The shared guest base of `agent` ([`crate::rootfs::ensure_base`]), recorded in
    /// the box directory ([`crate::rootfs::BASE_RECORD`]).
    pub fn ensure_base(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
        agent: &Path,
    ) -> Result<PathBuf, BackendError> {
        let fail =
            |reason: String| BackendError::Prepare { backend: NAME.into(), id: id.clone(), reason };
        let base =
            crate::rootfs::ensure_base(layout.home(), agent, Path::new(&self.config.guest_agent))
                .map_err(|e| fail(format!("guest base: {e}")))?;
        let key = base.file_name().map(|k| k.to_string_lossy().into_owned()).unwrap_or_default();
        let record = layout.box_dir(id).join(crate::rootfs::BASE_RECORD);
        if std::fs::read_to_string(&record).ok().as_deref().map(str::trim) != Some(key.as_str()) {
            AtomicWrite::new(0o600)
                .write(&record, format!("{key}\n").as_bytes())
                .map_err(|e| fail(format!("cannot record the guest base: {e}")))?;
        }
        Ok(base)
    }

    /// The host agent binary a new box's guest root gets: the `agent` option, else the
    /// first executable of [`boxsock_core::helpers::find_agent`] (helper dir,
    /// `$BOXSOCK_AGENT`, beside the current executable, its parent, `$PATH`), the same
    /// lookup as the `host` backend's.
    pub fn find_agent(&self) -> Result<PathBuf, FindAgentError> {
        if let Some(a) = &self.config.agent {
            return if a.is_file() {
                Ok(a.clone())
            } else {
                Err(FindAgentError::NoSuchFile { path: a.clone() })
            };
        }
        Ok(boxsock_core::helpers::find_agent(self.config.helper_dir.as_deref())?)
    }

    /// The shim in its own session, the spec as JSON on stdin, stdout and stderr
    /// appended to the box log, handed `fds` (source, target) and nothing else.
    fn spawn_shim(
        &self,
        json: Vec<u8>,
        log: &Path,
        fds: &[(BorrowedFd<'_>, i32)],
    ) -> Result<OwnedProcess, BackendError> {
        let mut cmd = Spawn::new(&self.config.shim);
        cmd.stdin_bytes(json).log_file(log).map_err(|e| BackendError::spawn(NAME, e))?;
        for (fd, target) in fds {
            cmd.hand(*fd, *target);
        }
        cmd.spawn().map_err(|e| match e {
            // A missing shim: say how to install it beside boxsock.
            SpawnError::Spawn { program, source }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let hint =
                    format!("{source}; install it beside boxsock with `{}`", crate::SHIM_INSTALL);
                BackendError::spawn(
                    NAME,
                    SpawnError::Spawn { program, source: std::io::Error::new(source.kind(), hint) },
                )
            }
            e => BackendError::spawn(NAME, e),
        })
    }
}

impl Backend for Libkrun {
    fn name(&self) -> &str {
        NAME
    }

    fn sockets(&self, network: bool) -> Vec<SocketSpec> {
        let mut v = vec![catalogue::AGENT, catalogue::READY];
        if network {
            v.push(NET);
        }
        v
    }

    fn address_needs(&self) -> AddressNeeds {
        AddressNeeds::PathOnly
    }

    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn available(&self) -> Availability {
        self.config.probe.probe()
    }

    /// The image's root is the lower layer of the guest's overlay, as a `--rootfs`
    /// directory is (decision 0018).
    fn runs_images(&self) -> bool {
        true
    }

    /// With `configure_only` nothing boots, so the probe does not apply: `Available`.
    fn available_for_launch(&self) -> Availability {
        if self.config.configure_only { Availability::Available } else { self.available() }
    }

    /// vcpus (1..=[`MAX_VCPUS`]), memory (at least [`MIN_RAM_MIB`], at most the host's),
    /// a root filesystem (an absolute directory; the runtime has canonicalised it),
    /// published ports (forwarded by passt; checked free at each start) and at most
    /// [`MAX_VOLUMES`] volumes.
    fn check_settings(&self, settings: &BoxSettings) -> Result<(), BackendError> {
        let bad_setting = |setting, reason: String| BackendError::BadSetting {
            backend: NAME.into(),
            setting,
            reason,
        };
        // Not `Unsupported`: its message points to libkrun. The sandbox backend does both.
        if let Some(ns) = &settings.network_namespace {
            return Err(bad_setting(
                "network_namespace",
                format!(
                    "{}: a guest has its own kernel, it cannot join a host network \
                     namespace (the sandbox backend can)",
                    boxsock_core::echo::path(ns)
                ),
            ));
        }
        if let Some(name) = &settings.hostname {
            boxsock_core::settings::check_hostname(name).map_err(|reason| {
                bad_setting("hostname", format!("{}: {reason}", boxsock_core::echo::echo(name)))
            })?;
        }
        if let Some(n) = settings.vcpus.filter(|n| !(1..=MAX_VCPUS).contains(n)) {
            return Err(bad_setting(
                "vcpus",
                format!("{n}: libkrun boots 1..={MAX_VCPUS} vCPUs (its x86_64 MP table's limit)"),
            ));
        }
        if let Some(m) = settings.ram_mib.filter(|m| *m < MIN_RAM_MIB) {
            return Err(bad_setting(
                "ram_mib",
                format!("{m} MiB: expected at least {MIN_RAM_MIB} MiB"),
            ));
        }
        if let (Some(m), Some(host)) = (settings.ram_mib, host_memory_mib()) {
            if u64::from(m) > host {
                return Err(bad_setting(
                    "ram_mib",
                    format!(
                        "{m} MiB: more than this host's memory ({host} MiB in /proc/meminfo); \
                         the guest's memory is the shim's"
                    ),
                ));
            }
        }
        if let Some(root) = &settings.rootfs {
            if !root.is_absolute() {
                return Err(bad_setting(
                    "rootfs",
                    format!("{}: not an absolute path", boxsock_core::echo::path(root)),
                ));
            }
            match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(bad_setting(
                        "rootfs",
                        format!("{}: not a directory", boxsock_core::echo::path(root)),
                    ));
                }
                Err(e) => {
                    return Err(bad_setting(
                        "rootfs",
                        format!("{}: {e}", boxsock_core::echo::path(root)),
                    ));
                }
            }
        }
        if settings.volumes.len() > MAX_VOLUMES {
            return Err(bad_setting(
                "volumes",
                format!(
                    "{} volumes: a libkrun box takes at most {MAX_VOLUMES} (each is a virtio-fs \
                     device with its own interrupt line, and libkrun has a fixed number of \
                     lines per guest)",
                    settings.volumes.len()
                ),
            ));
        }
        if let Some(size) = settings.disk_size {
            crate::disk::check_size(size).map_err(|e| bad_setting("disk_size", e.to_string()))?;
        }
        Ok(())
    }

    /// Make the box's files without copying anything per box: the shared guest base
    /// ([`crate::rootfs::ensure_base`], built once per agent) and an empty
    /// `<box>/rootfs`, the box's own layer on top of its root.
    fn prepare(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BackendError> {
        let fail =
            |reason: String| BackendError::Prepare { backend: NAME.into(), id: id.clone(), reason };
        let agent =
            self.find_agent().map_err(|e| fail(format!("no agent for the guest base: {e}")))?;
        let layer = layout.rootfs_dir(id);
        std::fs::create_dir_all(&layer).map_err(|e| {
            fail(format!("cannot create {}: {e}", boxsock_core::echo::path(&layer)))
        })?;
        let base = self.ensure_base(layout, id, &agent)?;
        tracing::debug!(box_id = %id, base = %boxsock_core::echo::path(&base), agent = %boxsock_core::echo::path(&agent), "guest base shared");
        Ok(())
    }

    /// The disk image (`<box>/disk.ext4`) and its host allocation, once the box's first
    /// start has made it.
    fn writable_layer(&self, layout: &BoxLayout, id: &BoxId) -> Option<WritableLayer> {
        let path = crate::disk::path_in(&layout.box_dir(id));
        let u = crate::disk::usage(&path)?;
        Some(WritableLayer::new(path, u.size, u.allocated))
    }

    /// Refuses with the probe's reason when no guest can boot, unless `configure_only`
    /// (the shim then configures libkrun and exits without booting).
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        if let Availability::Unavailable { reason } = self.available_for_launch() {
            return Err(BackendError::Unavailable { backend: NAME.into(), reason });
        }
        self.launch_unchecked(spec)
    }
}
