//! The [`Backend`] trait: how the runtime starts a box's process (a VMM shim, or the
//! in-box agent as a host process) with every socket address already chosen by the
//! strategy.
//!
//! The runtime asks the backend which sockets it needs ([`Backend::sockets`]) and
//! whether it can take abstract addresses ([`Backend::address_needs`]); it refuses an
//! incompatible strategy at create time, checks every address and derived name against
//! the budget, runs `ensure`, binds its own sockets, and only then calls
//! [`Backend::launch`]. A backend never computes a socket path itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::binding::PolicyPath;
pub use crate::boxsockets::BoxSockets;
use crate::catalogue::SocketSpec;
use crate::error::BindingError;
use crate::id::BoxId;
use crate::layout::BoxLayout;
pub use crate::process::OwnedProcess;
pub use crate::settings::{ByteSize, PortMapping, Protocol, Volume};
use crate::spawn::SpawnError;

/// Configuration every backend is built from. Backends ignore what they do not use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendConfig {
    /// Directory holding the workspace's helper binaries (`boxsock-agent`, the libkrun
    /// shim). Default: the directory of the current executable.
    pub helper_dir: Option<PathBuf>,
    /// Backend-specific settings (`key=value` from the CLI or the embedder).
    pub options: BTreeMap<String, String>,
}

/// What kind of addresses a backend can hand to its VMM or process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressNeeds {
    /// Only filesystem paths (libkrun maps vsock ports to host paths).
    PathOnly,
    /// Paths or Linux abstract names.
    PathOrAbstract,
}

/// Whether the backend can run boxes on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// It can.
    Available,
    /// It cannot, and why (printed by `boxsock doctor`).
    Unavailable {
        /// A sentence a person can act on.
        reason: String,
    },
}

/// One thing a backend checked on this machine, shown by `boxsock doctor`: the facts
/// behind [`Backend::available`] (kernel features, helpers), each with what was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    /// What was checked (`user namespaces`, `cgroups`, `seccomp`, `landlock`).
    pub name: String,
    /// Whether it is there and usable by this user.
    pub ok: bool,
    /// What was found, as a sentence a person can act on.
    pub detail: String,
}

impl Probe {
    /// A probe's finding.
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Probe {
        Probe { name: name.to_owned(), ok, detail: detail.into() }
    }
}

/// How much a backend isolates the box from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// None: the box is a plain host process.
    None,
    /// A hardware-virtualised guest.
    Vm,
    /// Linux namespaces, a root of its own, cut capabilities, seccomp and Landlock:
    /// the host's kernel is shared (`sandbox`; decision 0021).
    Namespaces,
}

/// How a box's process tells the runtime it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// It dials the `ready` socket the runtime binds (a VMM relaying the guest's
    /// vsock connection, which cannot inherit a descriptor from the runtime).
    Socket,
    /// It writes the `Ready` frame on an inherited descriptor, the box's end of a
    /// socket pair ([`BoxSockets::ready_channel`]); no `ready` socket is bound, so no
    /// name of it exists to be read or squatted.
    Channel,
}

/// Everything a backend needs to start one box. Addresses come from the strategy and
/// have passed the budget; the runtime has already run `ensure`.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The box.
    pub id: BoxId,
    /// The home's layout.
    pub layout: BoxLayout,
    /// Every socket of the box for this start: addresses by logical name (derived
    /// once by the runtime from the strategy), the verified socket directory and the
    /// box's peer policy. See [`BoxSockets`].
    pub sockets: BoxSockets,
    /// The box's log file (console output goes here).
    pub log_file: PathBuf,
    /// Whether the box has a network.
    pub network: bool,
    /// Paths a sandbox around the backend's process must allow, from the strategy.
    pub policy: Vec<PolicyPath>,
    /// Extra environment for the in-box agent.
    pub env: Vec<(String, String)>,
    /// The settings that define this box (vcpus, memory, root filesystem), as stored
    /// with it at create: every start of the box launches the same machine.
    pub settings: BoxSettings,
}

/// Backend settings that define a box, stored with it (`BoxConfig::settings` in the
/// runtime's store) so that a later `start` boots the same box. `None` is the backend's
/// default. Never a socket path: `rootfs` is the user's own directory, as given
/// (canonicalised at create).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BoxSettings {
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_mib: Option<u32>,
    /// The user's root filesystem directory (absolute, canonical). The backend shows
    /// its contents to the box and never modifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    /// The OCI image the box runs, pinned at create: a later `start` uses these very
    /// layers even if the tag has moved. Exclusive with `rootfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<BoxImage>,
    /// Host directories shown to the box (`-v`), host paths canonical: at most one per
    /// guest path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Box ports published on the host (`-p`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// The size of the box's persistent writable layer where it is a disk image
    /// (libkrun); `None` is the backend's stated default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<ByteSize>,
    /// The box's hostname: 1 to 64 bytes, no NUL, no `/` (the backend checks);
    /// `None`: the backend's (its id, where it sets one). `sandbox` sets it; `libkrun`
    /// and `host` refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A network namespace the box joins instead of having its own (an OCI engine's:
    /// `linux.namespaces` `network` with a `path`): an absolute path such as
    /// `/run/netns/NAME` or `/proc/PID/ns/net`, stored as given and opened at each start
    /// (a namespace removed since fails that start). Exclusive with a network of the
    /// box's own and with published ports (the runtime refuses both at create).
    /// `sandbox` joins it as root and refuses it rootless; `libkrun` and `host` refuse
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespace: Option<PathBuf>,
}

/// A box's writable layer as the host stores it (libkrun: its disk image), for
/// `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WritableLayer {
    /// The file or directory holding it.
    pub path: PathBuf,
    /// Its size (the most the box can write), in bytes.
    pub size: u64,
    /// Bytes the host has allocated to it (`st_blocks` × 512): what it costs the host,
    /// an upper bound of what the box holds.
    pub allocated: u64,
}

impl WritableLayer {
    /// A layer at `path` of `size` bytes, `allocated` of them allocated on the host.
    pub fn new(path: PathBuf, size: u64, allocated: u64) -> Self {
        Self { path, size, allocated }
    }
}

/// The image a box was created from, as stored with the box (`$.settings.image` in the
/// runtime store's config JSON; the image store's "is this image in use" query reads
/// `$.settings.image.manifest`). Digests are `algorithm:hex` strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BoxImage {
    /// The reference the user gave, normalised (`registry/repo:tag` or `…@digest`).
    pub reference: String,
    /// The manifest's digest: the image's identity.
    pub manifest: String,
    /// The layers' diff ids, bottom first: the unpacked, shared, read-only layer
    /// directories the backend stacks (resolved under the home by the runtime).
    pub layers: Vec<String>,
}

impl BoxImage {
    /// An image record for a box.
    pub fn new(reference: String, manifest: String, layers: Vec<String>) -> Self {
        Self { reference, manifest, layers }
    }
}

impl BoxSettings {
    /// Whether every setting is the backend's default.
    pub fn is_default(&self) -> bool {
        *self == BoxSettings::default()
    }

    /// The names of the settings that are set (`vcpus`, `ram_mib`, `rootfs`, `image`,
    /// `volumes`, `ports`, `disk_size`, `hostname`, `network_namespace`), for
    /// messages of backends that support none of them.
    pub fn set_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.vcpus.is_some() {
            v.push("vcpus");
        }
        if self.ram_mib.is_some() {
            v.push("ram_mib");
        }
        if self.rootfs.is_some() {
            v.push("rootfs");
        }
        if self.image.is_some() {
            v.push("image");
        }
        if !self.volumes.is_empty() {
            v.push("volumes");
        }
        if !self.ports.is_empty() {
            v.push("ports");
        }
        if self.disk_size.is_some() {
            v.push("disk_size");
        }
        if self.hostname.is_some() {
            v.push("hostname");
        }
        if self.network_namespace.is_some() {
            v.push("network_namespace");
        }
        v
    }
}

/// A started box process and its companions, owned: each an [`OwnedProcess`] whose
/// identity (pid + start time) and pidfd were captured at spawn
/// ([`crate::spawn::Spawn`]). The runtime takes them over as they are.
#[derive(Debug)]
pub struct Launched {
    /// The box's main process (the shim / the agent), a session leader.
    pub process: OwnedProcess,
    /// Companion processes whose lifetime is tied to the box (e.g. passt), each in its
    /// own session. The runtime records them (pid + start time) with the box and kills
    /// and reaps them on stop, remove, a failed start, the box process's death and
    /// recovery after a runtime crash.
    pub companions: Vec<OwnedProcess>,
}

impl BackendError {
    /// [`BackendError::Spawn`] from the spawn helper's error, naming its program.
    pub fn spawn(backend: &str, e: SpawnError) -> Self {
        let what = crate::echo::path(e.program()).to_string();
        BackendError::Spawn { backend: backend.to_owned(), what, source: e.into_io() }
    }
}

/// What went wrong in a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend cannot run here.
    #[error("backend {backend:?} is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: String,
        /// Why.
        reason: String,
    },
    /// A helper process could not be started.
    #[error("backend {backend:?}: cannot start {what}: {source}")]
    Spawn {
        /// Backend name.
        backend: String,
        /// What was being started (path of the binary).
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The launch spec is unusable (a missing address, an abstract address for a
    /// path-only consumer…).
    #[error("backend {backend:?}: {reason}")]
    Spec {
        /// Backend name.
        backend: String,
        /// What is wrong.
        reason: String,
    },
    /// A socket operation failed.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// The backend does not support these box settings.
    #[error(
        "backend {backend:?} does not support the box setting(s) {settings} (use a backend that does, e.g. libkrun)"
    )]
    Unsupported {
        /// Backend name.
        backend: String,
        /// The settings, comma-separated (`rootfs, vcpus`).
        settings: String,
    },
    /// A box setting has a value the backend cannot use.
    #[error("backend {backend:?}: box setting {setting}: {reason}")]
    BadSetting {
        /// Backend name.
        backend: String,
        /// The setting (`rootfs`…).
        setting: &'static str,
        /// Why, naming the value (a path, a number and its limits).
        reason: String,
    },
    /// A published host port cannot be bound at start (in use, an address not on this
    /// host, a privileged port): the start fails at once, naming the address, port,
    /// protocol and, where it can be read, the holder.
    #[error("backend {backend:?}: cannot publish {port}: {reason}")]
    Port {
        /// Backend name.
        backend: String,
        /// The mapping (`127.0.0.1:8080:80/tcp`).
        port: crate::settings::PortMapping,
        /// Why, naming the holder where it can be read.
        reason: String,
    },
    /// A new box's files (its guest root…) could not be prepared.
    #[error("backend {backend:?}: cannot prepare box {id}: {reason}")]
    Prepare {
        /// Backend name.
        backend: String,
        /// The box.
        id: BoxId,
        /// What failed, naming the path.
        reason: String,
    },
}

/// A VMM backend (or the host backend). See the module documentation.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The registered name.
    fn name(&self) -> &str;

    /// The sockets a box of this backend has, with who binds each and the names each
    /// binder derives. `network` says whether the box has a network.
    fn sockets(&self, network: bool) -> Vec<SocketSpec>;

    /// Whether it can hand abstract addresses to its processes.
    fn address_needs(&self) -> AddressNeeds;

    /// How its box's process reports readiness. Default: [`Readiness::Socket`], the
    /// `ready` socket (added to [`Backend::sockets`] by the runtime when not listed).
    fn readiness(&self) -> Readiness {
        Readiness::Socket
    }

    /// How much it isolates.
    fn isolation(&self) -> Isolation;

    /// Whether boxes can run here, with the reason when not.
    fn available(&self) -> Availability;

    /// What this backend checked on this machine, for `doctor` (default: nothing beyond
    /// [`Backend::available`]). Cheap and side-effect free: no process, no mount.
    fn probes(&self) -> Vec<Probe> {
        Vec::new()
    }

    /// Whether `create` and `start` may go ahead here. Default: [`Backend::available`].
    /// A backend in a mode that never boots a guest (libkrun's `configure_only`) may
    /// answer `Available` here while [`Backend::available`] keeps describing the
    /// machine, so `doctor` still tells the truth.
    fn available_for_launch(&self) -> Availability {
        self.available()
    }

    /// Check a new box's settings at create, before anything is written. Default: only
    /// the defaults are accepted ([`BackendError::Unsupported`] names each setting),
    /// so a backend that ignores vcpus, memory or a root filesystem says so instead of
    /// creating a box that is not what was asked for.
    fn check_settings(&self, settings: &BoxSettings) -> Result<(), BackendError> {
        match settings.set_names().as_slice() {
            [] => Ok(()),
            names => Err(BackendError::Unsupported {
                backend: self.name().to_owned(),
                settings: names.join(", "),
            }),
        }
    }

    /// Whether boxes of this backend can run an OCI image ([`BoxSettings::image`]): show
    /// the image's root (`BoxLayout::image_root` of its manifest: its layers merged,
    /// whiteouts applied, read-only and shared by every box of the image) as the box's
    /// root, with the box's own writable layer on top. Default: `false`. The runtime
    /// asks before anything is written and refuses an image box of a backend that
    /// cannot, naming the backends that can; a backend without a root of its own to
    /// switch to (`host`) must answer `false`.
    fn runs_images(&self) -> bool {
        false
    }

    /// Prepare a new box's files (for a VM, its guest root under
    /// [`BoxLayout::rootfs_dir`]). The runtime calls it from `create`, after the box's
    /// directories, row and binding exist; an error undoes the whole create. It must
    /// write only beneath the box directory, or in one shared directory of its own
    /// under the home that no box's removal needs (libkrun: `<home>/guest-base/`, one
    /// read-only guest base per agent). Default: nothing to prepare.
    fn prepare(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BackendError> {
        let _ = (layout, id);
        Ok(())
    }

    /// The box has no process any more and is being removed: release what this backend
    /// made for it outside the box directory (the sandbox's cgroups). Default: nothing.
    /// Failures are the backend's to log; the removal goes on.
    fn removing(&self, layout: &BoxLayout, id: &BoxId) {
        let _ = (layout, id);
    }

    /// The box's writable layer as stored on the host, for `inspect`: read-only, it
    /// makes nothing. Default: `None` (the backend keeps none).
    fn writable_layer(&self, layout: &BoxLayout, id: &BoxId) -> Option<WritableLayer> {
        let _ = (layout, id);
        None
    }

    /// Start the box's process, detached (own session; [`crate::spawn::Spawn`] does
    /// it). Returns once it is spawned, handing over the owned process and its
    /// companions; the runtime waits for readiness.
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError>;
}
