//! `sandbox`: the in-box agent as PID 1 of new mount, PID, IPC, UTS, cgroup and
//! network namespaces, in a root of its own, with docker's default capabilities and
//! `no_new_privs`. Real isolation where no VM can boot (CI runners, cloud VMs without
//! nested virtualisation) — but the host's kernel is shared: a kernel bug is an escape.
//! Decision 0021 says what it isolates and what a VM isolates that it does not.
//!
//! **The box's process is the agent itself.** The backend spawns it with `clone(2)`
//! carrying its PID namespace ([`clone`]), so the process the runtime owns (pid, start
//! time and pidfd captured at spawn) is the agent, PID 1 of the box; it is the
//! runtime's direct child, reaped by it, and it leads its own session.
//!
//! **Rootless** ([`rootless`]): a runtime that is not root gives the box a user
//! namespace of its own in the same `clone`, where the runtime's user is root and
//! nobody else is mapped; the agent then accepts only that peer (uid 0), never the
//! overflow uid every other host user reads as (decision 0026). Between fork and exec the child builds the rest ([`child::Plan`]): the
//! namespaces, the root and the privileges. When it dies, the kernel kills every
//! process of the box (the PID namespace ends with its init).
//!
//! **A given hostname and network namespace** (decision 0027): the box's hostname is its
//! `hostname` setting, else its id; with `network_namespace` the child joins that
//! namespace ([`netns`], opened by the runtime at each start) instead of making one,
//! and leaves it as it is (no `lo` brought up, no pasta).
//!
//! **Sockets, as `host`:** the runtime binds `agent` in the host's namespaces (through
//! the strategy) and hands the listener at descriptor 3; readiness goes on an inherited
//! socket pair end at 4 (decision 0010). The box's network namespace has its own
//! abstract socket namespace: an abstract name bound inside would be unreachable from
//! the host, and no host abstract socket (the box's own agent name included) is
//! reachable from the box (containerd's CVE-2020-15257).
//!
//! **Root:** an overlay whose single read-only lower is the box's `--rootfs` directory,
//! its image's root ([`BoxLayout::image_root`](boxsock_core::layout::BoxLayout)) or,
//! with neither, the agent's base; its upper and work directories are the box's own
//! (`<box>/sandbox/upper`, `…/work`), so writes persist across stop and start and go
//! with `rm`. `/proc`, a minimal `/dev` (null, zero, full, random, urandom, tty, ptmx
//! and a private devpts, shm) and a read-only `/sys`; `pivot_root` into it and the old
//! root detached. The agent and its loader and libraries come from the agent's base
//! ([`base`]), bound read-only at `/.boxsock`. Volumes are bind mounts made from a
//! descriptor of the host directory onto a guest path resolved inside the root
//! ([`volume`], decision 0025); published ports are pasta's forwards ([`net`]).
//!
//! **Linux only.** Namespaces, seccomp, Landlock and cgroups are Linux's: elsewhere the
//! crate is empty, so the facade links it everywhere and registers the backend only on
//! Linux.
#![cfg(target_os = "linux")]

#[cfg(target_os = "linux")]
pub mod base;
#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(target_os = "linux")]
pub mod child;
#[cfg(target_os = "linux")]
pub mod clone;
#[cfg(target_os = "linux")]
pub mod net;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod privs;
#[cfg(target_os = "linux")]
pub mod probe;
#[cfg(target_os = "linux")]
pub mod seccomp;
#[cfg(target_os = "linux")]
pub mod volume;

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use boxsock_core::backend::{
    AddressNeeds, Availability, BackendConfig, BackendError, BoxSettings, Isolation, LaunchSpec,
    Launched, Readiness,
};
use boxsock_core::catalogue::Binder;
use boxsock_core::echo;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;
use boxsock_core::registry::BackendRegistration;
use boxsock_core::{Backend, SocketSpec, catalogue};

/// The registered name.
pub const NAME: &str = "sandbox";

/// The descriptor at which the agent inherits its listener (`--agent-fd`).
pub const AGENT_FD: i32 = 3;
/// The descriptor at which the agent inherits its end of the ready channel.
pub const READY_FD: i32 = 4;

/// The `agent` socket: bound by the runtime in the host's namespaces, handed over.
pub const AGENT: SocketSpec = SocketSpec { binder: Binder::Handed, ..catalogue::AGENT };

/// The least memory a box may be given (the agent alone needs a few MiB).
pub const MIN_MEMORY_MIB: u32 = 16;

/// The box's environment (the host's is never inherited).
pub const BOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The registration, also usable in explicit registries.
pub const REGISTRATION: BackendRegistration = BackendRegistration {
    name: NAME,
    summary: "the agent as PID 1 of Linux namespaces in a root of its own, docker's default capabilities: isolation without a VM (the host's kernel is shared)",
    build,
};

inventory::submit!(REGISTRATION);

fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(SandboxBackend::new(config.clone())))
}

/// The `sandbox` backend. See the crate documentation.
#[derive(Debug, Clone)]
pub struct SandboxBackend {
    config: BackendConfig,
}

impl boxsock_core::registry::Named for SandboxBackend {
    const NAME: &'static str = NAME;
}

/// The box's own directories: `<box>/sandbox/{upper,work,merged}`.
pub fn box_dirs(layout: &BoxLayout, id: &BoxId) -> [PathBuf; 3] {
    let d = layout.box_dir(id).join("sandbox");
    [d.join("upper"), d.join("work"), d.join("merged")]
}

impl SandboxBackend {
    /// A backend that looks for the agent as configured.
    pub fn new(config: BackendConfig) -> Self {
        SandboxBackend { config }
    }

    /// The agent binary (the core's lookup, as `host` and libkrun use).
    pub fn find_agent(&self) -> Result<PathBuf, BackendError> {
        boxsock_core::helpers::find_agent(self.config.helper_dir.as_deref())
            .map_err(|e| BackendError::Unavailable { backend: NAME.into(), reason: e.to_string() })
    }

    fn spec_error(&self, reason: String) -> BackendError {
        BackendError::Spec { backend: NAME.into(), reason }
    }

    /// The box's pids limit: the `pids_max` option, or [`cgroup::DEFAULT_PIDS_MAX`].
    fn pids_max(&self) -> Result<u64, BackendError> {
        match self.config.options.get("pids_max") {
            None => Ok(cgroup::DEFAULT_PIDS_MAX),
            Some(v) => v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                self.spec_error(format!("option pids_max={}: not a positive number", echo::echo(v)))
            }),
        }
    }

    /// The box's cgroups, made and limited; `None` only when the box asks for no
    /// limit and no cgroup can be made here (the pids limit is then missing: logged).
    fn cgroups(&self, spec: &LaunchSpec) -> Result<Option<cgroup::BoxCgroups>, BackendError> {
        let limits = cgroup::Limits {
            cpus: spec.settings.vcpus,
            memory_mib: spec.settings.ram_mib,
            pids_max: self.pids_max()?,
        };
        let asked = limits.cpus.is_some() || limits.memory_mib.is_some();
        let home = spec.layout.home();
        let made = cgroup::Hierarchy::detect().and_then(|h| {
            h.check_writable()?;
            let boxes = spec.layout.boxes_dir();
            h.sweep(&cgroup::home_tag(home), |id| !boxes.join(id).exists());
            cgroup::BoxCgroups::make(&h, &cgroup::cgroup_name(home, spec.id.as_str()), &limits)
        });
        match made {
            Ok(c) => Ok(Some(c)),
            Err(e) if asked => Err(self.spec_error(format!("box {}: its limits: {e}", spec.id))),
            Err(e) => {
                tracing::warn!(box_id = %spec.id, error = %e, "no cgroup: the box runs without a pids limit");
                Ok(None)
            }
        }
    }

    /// The read-only lower of the box's root.
    fn lower(&self, spec: &LaunchSpec, base: &Path) -> Result<PathBuf, BackendError> {
        if let Some(image) = &spec.settings.image {
            let root = spec.layout.image_root(&image.manifest).ok_or_else(|| {
                self.spec_error(format!(
                    "box {}: image {} has no root under the home",
                    spec.id,
                    echo::echo(&image.reference)
                ))
            })?;
            if !root.is_dir() {
                return Err(self.spec_error(format!(
                    "box {}: the root of image {} is missing: {} (was the image pruned?)",
                    spec.id,
                    echo::echo(&image.reference),
                    echo::path(&root)
                )));
            }
            return Ok(root);
        }
        if let Some(rootfs) = &spec.settings.rootfs {
            if !rootfs.is_dir() {
                return Err(self.spec_error(format!(
                    "box {}: its root filesystem {} is not a directory any more",
                    spec.id,
                    echo::path(rootfs)
                )));
            }
            return Ok(rootfs.clone());
        }
        Ok(base.to_path_buf())
    }
}

/// A failed spawn: the setup's own lines (`boxsock-sandbox: …`, written by the child
/// to the box log past `from`) say which step failed, and for a volume which path; the
/// spawn error alone names only the agent's loader.
fn setup_error(log: &Path, from: u64, e: boxsock_core::spawn::SpawnError) -> BackendError {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        if f.seek(std::io::SeekFrom::Start(from)).is_ok() {
            let _ = f.take(64 * 1024).read_to_string(&mut text);
        }
    }
    let lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("boxsock-sandbox: ")).rev().take(4).collect();
    if lines.is_empty() {
        return BackendError::spawn(NAME, e);
    }
    let steps: Vec<String> = lines
        .into_iter()
        .rev()
        .map(|l| echo::os(l.strip_prefix("boxsock-sandbox: ").unwrap_or(l).as_ref()).to_string())
        .collect();
    let source = e.into_io();
    BackendError::Spawn {
        backend: NAME.into(),
        what: "the box (its setup in the child)".into(),
        source: std::io::Error::new(
            source.kind(),
            format!("{}: {source} (log {})", steps.join("; "), echo::path(log)),
        ),
    }
}

fn make_dirs(layout: &BoxLayout, id: &BoxId) -> std::io::Result<()> {
    for d in box_dirs(layout, id) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&d)?;
    }
    // The upper's root is the box's `/`: readable by the box's other users.
    let [upper, ..] = box_dirs(layout, id);
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
}

pub use boxsock_core::settings::check_hostname;

/// Whether this runtime runs boxes rootless: in a user namespace of their own, where
/// the runtime's user is root and nobody else is mapped (decision 0026).
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// The uids the agent accepts as peers, as the agent sees them. As root, the runtime's
/// allowed uids (the runtime's own when none). Rootless, the agent sees the runtime's
/// user as 0 and every other host user as the overflow uid (65534): only 0 is allowed,
/// and a host uid that is not the runtime's cannot be told apart inside, so it is
/// dropped (logged), never passed through as a number the overflow uid could match.
pub fn allowed_uids(peer_uids: &[u32], user: Option<clone::UserMap>) -> Vec<u32> {
    match user {
        None if peer_uids.is_empty() => vec![nix::unistd::geteuid().as_raw()],
        None => peer_uids.to_vec(),
        Some(u) => {
            for &other in peer_uids.iter().filter(|&&p| p != u.uid) {
                tracing::warn!(
                    uid = other,
                    "a rootless box's agent cannot tell this user from any other host user \
                     (only the runtime's user is mapped): not allowed"
                );
            }
            vec![0]
        }
    }
}

impl Backend for SandboxBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn sockets(&self, _network: bool) -> Vec<SocketSpec> {
        vec![AGENT]
    }

    fn readiness(&self) -> Readiness {
        Readiness::Channel
    }

    fn address_needs(&self) -> AddressNeeds {
        AddressNeeds::PathOrAbstract
    }

    fn isolation(&self) -> Isolation {
        Isolation::Namespaces
    }

    fn probes(&self) -> Vec<boxsock_core::backend::Probe> {
        let root = nix::unistd::geteuid().is_root();
        vec![
            boxsock_core::backend::Probe::new(
                "root",
                true,
                if root {
                    "running as root: boxes run in the host's user namespace"
                } else {
                    "not root: boxes run rootless, in a user namespace of their own where \
                     this user is root (only it is mapped)"
                },
            ),
            probe::namespaces(),
            probe::user_namespaces(),
            probe::cgroups(),
            probe::seccomp(),
            probe::landlock(),
            probe::pasta(&net::pasta_binary(self.config.options.get("pasta"))),
        ]
    }

    fn available(&self) -> Availability {
        if let Err(e) = self.find_agent() {
            return Availability::Unavailable { reason: e.to_string() };
        }
        if rootless() {
            if let Err(why) = probe::unprivileged_userns() {
                return Availability::Unavailable {
                    reason: format!(
                        "not root, and the rootless mode needs a user namespace: {why}; \
                         run as root or use --backend host"
                    ),
                };
            }
        }
        Availability::Available
    }

    /// `rootfs` (an existing directory), `image`, `vcpus` / `ram_mib` as cgroup
    /// limits (refused, naming why, where no cgroup hierarchy this user may write
    /// offers the controllers: never ignored), `volumes` (bind mounts; not over the
    /// agent's `/.boxsock`) and `ports` (pasta's forwards, checked free at each start),
    /// `hostname` ([`check_hostname`]) and `network_namespace` (a network namespace's
    /// file, opened now and at each start; not with ports, not rootless: [`netns`]).
    /// `disk_size` is refused: the writable layer is a directory.
    fn check_settings(&self, settings: &BoxSettings) -> Result<(), BackendError> {
        let bad =
            |setting, reason| BackendError::BadSetting { backend: NAME.into(), setting, reason };
        if settings.vcpus == Some(0) {
            return Err(bad("vcpus", "0 CPUs: give at least 1".into()));
        }
        if let Some(mib) = settings.ram_mib {
            if mib < MIN_MEMORY_MIB {
                return Err(bad(
                    "ram_mib",
                    format!("{mib} MiB is below the {MIN_MEMORY_MIB} MiB a box needs"),
                ));
            }
        }
        for (set, setting) in
            [(settings.vcpus.is_some(), "vcpus"), (settings.ram_mib.is_some(), "ram_mib")]
        {
            if set {
                cgroup::Hierarchy::detect()
                    .and_then(|h| h.check_writable())
                    .map_err(|e| bad(setting, format!("cannot be applied here: {e}")))?;
            }
        }
        if let Some(rootfs) = &settings.rootfs {
            if !rootfs.is_dir() {
                return Err(BackendError::BadSetting {
                    backend: NAME.into(),
                    setting: "rootfs",
                    reason: format!("{} is not a directory", echo::path(rootfs)),
                });
            }
            if let Some(c) = child::overlay_unsafe(rootfs) {
                return Err(BackendError::BadSetting {
                    backend: NAME.into(),
                    setting: "rootfs",
                    reason: format!(
                        "{} holds {c:?}, which overlayfs's options cannot carry",
                        echo::path(rootfs)
                    ),
                });
            }
        }
        for v in &settings.volumes {
            let nul = |p: &Path| p.as_os_str().as_bytes().contains(&0);
            if nul(&v.host) || nul(&v.guest) {
                return Err(bad(
                    "volumes",
                    format!("{}: a path holds a NUL byte", echo::echo(&v.to_string())),
                ));
            }
            if volume::reserved(&v.guest) {
                return Err(bad(
                    "volumes",
                    format!(
                        "{}: the guest path {} is where the box's agent lives ({}); \
                         choose another",
                        echo::echo(&v.to_string()),
                        echo::path(&v.guest),
                        volume::RESERVED
                    ),
                ));
            }
        }
        if let Some(name) = &settings.hostname {
            check_hostname(name)
                .map_err(|reason| bad("hostname", format!("{}: {reason}", echo::echo(name))))?;
        }
        if let Some(path) = &settings.network_namespace {
            let shown = echo::path(path);
            if rootless() {
                return Err(bad(
                    "network_namespace",
                    format!(
                        "{shown}: a rootless box runs in a user namespace of its own, and \
                         joining a network namespace needs privilege over the user \
                         namespace that owns it, which the box has not; run as root"
                    ),
                ));
            }
            if !settings.ports.is_empty() {
                return Err(bad(
                    "network_namespace",
                    format!(
                        "{shown}: the box joins that namespace, so it has no network of its \
                         own to publish ports from ({} given); publish them where the \
                         namespace is made",
                        settings.ports.len()
                    ),
                ));
            }
            // At create too, so that a wrong path is said now rather than at each start.
            netns::open(path).map_err(|e| bad("network_namespace", e.to_string()))?;
        }
        // The writable layer is a directory in the box's directory: it has no size.
        if settings.disk_size.is_some() {
            return Err(BackendError::Unsupported {
                backend: NAME.into(),
                settings: "disk_size (the writable layer is a directory, not a disk)".into(),
            });
        }
        Ok(())
    }

    fn runs_images(&self) -> bool {
        true
    }

    fn prepare(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BackendError> {
        make_dirs(layout, id).map_err(|e| BackendError::Prepare {
            backend: NAME.into(),
            id: id.clone(),
            reason: format!(
                "cannot create {}: {e}",
                echo::path(&layout.box_dir(id).join("sandbox"))
            ),
        })
    }

    /// Its cgroups go (the box has no tasks left); a later launch in the home sweeps
    /// any a crash left.
    fn removing(&self, layout: &BoxLayout, id: &BoxId) {
        if let Ok(h) = cgroup::Hierarchy::detect() {
            cgroup::remove(&h, &cgroup::cgroup_name(layout.home(), id.as_str()));
        }
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        let agent = spec.sockets.handed(AGENT.name)?;
        let ready = spec.sockets.ready_channel.as_ref().ok_or_else(|| {
            self.spec_error(format!("box {}: no ready channel to hand to the agent", spec.id))
        })?;
        if let Some(path) = spec.settings.network_namespace.as_ref().filter(|_| spec.network) {
            return Err(self.spec_error(format!(
                "box {}: it joins the network namespace {} and cannot also have a network \
                 of its own",
                spec.id,
                echo::path(path)
            )));
        }
        if !spec.settings.ports.is_empty() && !spec.network {
            return Err(self.spec_error(format!(
                "box {}: published ports need the box's network, and it has none",
                spec.id
            )));
        }
        if spec.network && rootless() {
            net::rootless_tun().map_err(|why| {
                self.spec_error(format!(
                    "box {}: a rootless box's network (pasta) cannot run here: {why}; run \
                     as root, or without --network and ports",
                    spec.id
                ))
            })?;
        }
        // Before anything is spawned: a port another process holds fails the start at
        // once, naming its holder (checked again just before pasta binds them).
        boxsock_core::ports::check_all_free(&spec.settings.ports).map_err(net::port_error)?;
        let binary = self.find_agent()?;
        let home = spec.layout.home();
        let base = base::ensure(home, &binary)
            .map_err(|e| self.spec_error(format!("box {}: the agent's base: {e}", spec.id)))?;
        let lower = self.lower(spec, &base.dir)?;
        make_dirs(&spec.layout, &spec.id).map_err(|e| {
            self.spec_error(format!("box {}: cannot create its sandbox directories: {e}", spec.id))
        })?;
        let [upper, work, merged] = box_dirs(&spec.layout, &spec.id);
        for p in [&lower, &upper, &work] {
            if let Some(c) = child::overlay_unsafe(p) {
                return Err(self.spec_error(format!(
                    "box {}: {} holds {c:?}, which overlayfs's options cannot carry",
                    spec.id,
                    echo::path(p)
                )));
            }
        }
        let dirs = child::Dirs {
            lower: &lower,
            upper: &upper,
            work: &work,
            merged: &merged,
            base: &base.dir,
        };
        let privileges = privs::Privileges::docker_default(spec.network)
            .map_err(|e| self.spec_error(format!("box {}: {e}", spec.id)))?;
        let cgroups = self.cgroups(spec)?;
        let procs = cgroups.as_ref().map(|c| c.raw_procs()).unwrap_or_default();
        let volumes = volume::prepare(&spec.settings.volumes, rootless())
            .map_err(|e| self.spec_error(format!("box {}: {e}", spec.id)))?;
        // Opened at each start, as stored: a namespace removed since create fails here,
        // naming the path.
        let joined = match &spec.settings.network_namespace {
            None => None,
            Some(path) => Some(
                netns::open(path).map_err(|e| self.spec_error(format!("box {}: {e}", spec.id)))?,
            ),
        };
        let hostname = spec.settings.hostname.as_deref().unwrap_or(spec.id.as_str());
        let plan = child::Plan::new(&dirs, hostname, privileges, procs, volumes, joined);

        let in_box = |name: &str| format!("{}/{name}", base::BOX_DIR);
        let mut cmd = if base.dynamic {
            let mut c = clone::BoxExec::new(in_box(base::LOADER));
            c.arg("--library-path").arg(base::BOX_DIR).arg(in_box(base::AGENT));
            c
        } else {
            clone::BoxExec::new(in_box(base::AGENT))
        };
        cmd.arg("--agent-fd").arg(AGENT_FD.to_string()).arg("--ready-fd").arg(READY_FD.to_string());
        let user = rootless().then(clone::UserMap::current);
        for uid in allowed_uids(spec.sockets.peer_uids().unwrap_or_default(), user) {
            cmd.arg("--allow-uid").arg(uid.to_string());
        }
        cmd.env("PATH", BOX_PATH).env("HOME", "/root");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd.log_file(&spec.log_file)
            .map_err(|e| {
                self.spec_error(format!(
                    "box {}: cannot open log file {}: {}",
                    spec.id,
                    echo::path(&spec.log_file),
                    e.into_io()
                ))
            })?
            .hand(agent.as_fd().as_raw_fd(), AGENT_FD)
            .hand(ready.as_fd().as_raw_fd(), READY_FD);
        // The child's setup writes its failing step to the log: read from here on.
        let log_len = fs::metadata(&spec.log_file).map(|m| m.len()).unwrap_or(0);
        let process = {
            // ETXTBSY: the agent's loader is executed while some process holds it open
            // for writing. That is another thread's fork child which inherited the
            // descriptor of a base being copied (this home's or another's) and has not
            // reached its exec yet; a sandbox child does a lot before its exec, so the
            // window is wide when boxes start in parallel. It closes by itself: retry,
            // bounded (CI failed once on it, `limits` tests in parallel).
            let mut busy = 0;
            loop {
                // `Plan::run` makes only raw system calls on data built before the
                // clone (see the `child` module), as the child requires.
                match clone::spawn(&cmd, libc::CLONE_NEWPID, user, &|| plan.run()) {
                    Err(boxsock_core::spawn::SpawnError::Spawn { ref source, .. })
                        if source.raw_os_error() == Some(libc::ETXTBSY) && busy < 200 =>
                    {
                        busy += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    r => break r.map_err(|e| setup_error(&spec.log_file, log_len, e))?,
                }
            }
        };
        // The child joined them; the runtime's descriptors go now.
        drop(cgroups);
        tracing::info!(
            box_id = %spec.id,
            pid = process.pid(),
            root = %echo::path(&lower),
            listener = agent.as_fd().as_raw_fd(),
            "launched sandboxed agent"
        );
        let mut companions = Vec::new();
        if spec.network {
            let netns = spec.layout.box_dir(&spec.id).join("sandbox").join("netns");
            let log = spec.layout.logs_dir(&spec.id).join("pasta.log");
            let made = fs::File::create(&netns).map_err(|e| {
                self.spec_error(format!(
                    "box {}: cannot create {}: {e}",
                    spec.id,
                    echo::path(&netns)
                ))
            });
            let pasta = net::pasta_binary(self.config.options.get("pasta"));
            match made.and_then(|_| {
                net::start(&pasta, process.pid(), &netns, &log, &spec.settings.ports, rootless())
            }) {
                Ok(p) => companions.push(p),
                Err(e) => {
                    process.kill_and_reap();
                    return Err(e);
                }
            }
        }
        Ok(Launched { process, companions })
    }
}
