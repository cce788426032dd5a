//! `inspect` and `doctor`: what a box's (or a home's) sockets look like, address by
//! address, with byte lengths and the limit.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{Inner, RuntimeOptions};
use crate::sockets::{Incompatibility, check_addresses, compatibility, socket_specs};
use crate::state::BoxState;
use crate::store::BoxRecord;
use boxsock_core::backend::{
    AddressNeeds, Availability, Backend, BoxSettings, Isolation, WritableLayer,
};
use boxsock_core::binding::SocketBinding;
use boxsock_core::budget::{self, Platform};
use boxsock_core::catalogue::SocketSpec;
use boxsock_core::id::BoxId;
use boxsock_core::layout::BoxLayout;

/// One socket address (own or derived name) and whether it fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketReport {
    /// Logical socket, with the derived name when it is one (`net (derived: …)`).
    pub socket: String,
    /// The file name.
    pub file: String,
    /// The address, when the strategy could produce one.
    pub address: Option<String>,
    /// Its byte length without the NUL.
    pub bytes: Option<usize>,
    /// `sizeof(sun_path)` on this platform, NUL included.
    pub limit: usize,
    /// Whether it fits.
    pub fits: bool,
    /// Why there is no address (too long, unsupported…).
    pub error: Option<String>,
}

/// Every address of `specs` for box `id`, asked of the box's binding opened to look
/// ([`Opening::Inspect`](boxsock_core::boxbinding::Opening::Inspect): nothing is made or
/// checked, so read-only runtimes use it too).
fn socket_reports(
    strategy: &Arc<dyn SocketBinding>,
    layout: &BoxLayout,
    id: &BoxId,
    specs: &[SocketSpec],
) -> Vec<SocketReport> {
    let limit = Platform::current().sun_len();
    let binding = match strategy.inspect_box(layout, id) {
        Ok(b) => b,
        Err(e) => return vec![unknown(e.to_string())],
    };
    let mut out = Vec::new();
    for d in boxsock_core::boxbinding::each_address(|f| binding.derive(f), specs) {
        let (label, file) = (d.label, d.file);
        out.push(match d.address {
            Ok(addr) => SocketReport {
                socket: label,
                file,
                address: Some(addr.display_string()),
                bytes: Some(addr.byte_len()),
                limit,
                fits: budget::fits_in(&addr, limit),
                error: None,
            },
            Err(e) => {
                let (address, bytes) = match &e {
                    boxsock_core::error::BindingError::PathTooLong { path, len, .. } => {
                        (Some(path.clone()), Some(*len))
                    }
                    _ => (None, None),
                };
                SocketReport {
                    socket: label,
                    file,
                    address,
                    bytes,
                    limit,
                    fits: false,
                    error: Some(e.to_string()),
                }
            }
        });
    }
    out
}

/// The one report of a box whose sockets could not be asked about.
fn unknown(error: String) -> SocketReport {
    SocketReport {
        socket: "*".into(),
        file: String::new(),
        address: None,
        bytes: None,
        limit: Platform::current().sun_len(),
        fits: false,
        error: Some(error),
    }
}

/// A companion process of a box (passt…), as recorded with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompanionInfo {
    /// Its pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// Whether that exact process is alive now.
    pub alive: bool,
    /// Its command name (`/proc/<pid>/comm`), while it is alive.
    pub command: Option<String>,
}

/// Everything about one box.
#[derive(Debug, Clone, Serialize)]
pub struct BoxInfo {
    /// The id.
    pub id: BoxId,
    /// The name.
    pub name: Option<String>,
    /// The recorded state; for a read-only runtime, the observed one (a box whose
    /// recorded process is gone shows `stopped` before the next writing command records
    /// it).
    pub state: BoxState,
    /// Strategy name.
    pub strategy: String,
    /// Backend name.
    pub backend: String,
    /// Network flag.
    pub network: bool,
    /// The backend settings stored with the box (vcpus, memory, root filesystem);
    /// omitted when all are the backend's defaults.
    #[serde(skip_serializing_if = "BoxSettings::is_default")]
    pub settings: BoxSettings,
    /// The box's own command and user (decision 0020); omitted when it has neither.
    #[serde(skip_serializing_if = "crate::BoxProcess::is_empty")]
    pub process: crate::BoxProcess,
    /// The box process's pid, while it has one.
    pub pid: Option<i32>,
    /// Its start time (clock ticks since boot), the other half of its identity.
    pub start_time: Option<u64>,
    /// Whether that exact process is alive now.
    pub alive: bool,
    /// Whether the runtime holds a pidfd on it.
    pub pidfd: bool,
    /// The last exit code recorded.
    pub exit_code: Option<i32>,
    /// Creation time (ms since the epoch).
    pub created_at_ms: i64,
    /// Last update (ms since the epoch).
    pub updated_at_ms: i64,
    /// The box directory.
    pub dir: String,
    /// The box log.
    pub log: String,
    /// The filesystem entry the strategy keeps for this box (short-symlink's link
    /// `<base>/<prefix>-<uid>/<id>`), when it keeps one.
    pub binding: Option<String>,
    /// Every socket with its live address.
    pub sockets: Vec<SocketReport>,
    /// Its recorded companion processes (empty when it has none).
    pub companions: Vec<CompanionInfo>,
    /// Its writable layer on the host (libkrun: the disk image, its size and the bytes
    /// allocated to it), when the backend keeps one and it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<WritableLayer>,
}

pub(super) fn inspect(inner: &Inner, rec: BoxRecord) -> BoxInfo {
    let handle = inner.handle_for(&rec);
    let binding = inner
        .strategy(&rec.config.strategy)
        .ok()
        .and_then(|s| s.inspect_box(&inner.layout, &rec.id).ok())
        .and_then(|b| b.binding_path())
        .map(|p| p.display().to_string());
    let disk = inner
        .backend(&rec.config.backend)
        .ok()
        .and_then(|b| b.writable_layer(&inner.layout, &rec.id));
    let sockets = match (inner.strategy(&rec.config.strategy), inner.backend(&rec.config.backend)) {
        (Ok(s), Ok(b)) => {
            socket_reports(&s, &inner.layout, &rec.id, &socket_specs(&*b, rec.config.network))
        }
        (Err(e), _) | (_, Err(e)) => vec![unknown(e.to_string())],
    };
    let companions = inner
        .store
        .companions(rec.id.as_str())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let alive = c.is_alive();
            let command = alive
                .then(|| {
                    std::fs::read_to_string(format!("/proc/{}/comm", c.pid))
                        .ok()
                        .map(|s| s.trim_end().to_owned())
                })
                .flatten();
            CompanionInfo { pid: c.pid, start_time: c.start_time, alive, command }
        })
        .collect();
    BoxInfo {
        companions,
        name: rec.name,
        state: rec.state,
        strategy: rec.config.strategy,
        backend: rec.config.backend,
        network: rec.config.network,
        settings: rec.config.settings.clone(),
        process: rec.config.process.clone(),
        pid: rec.process.map(|p| p.pid),
        start_time: rec.process.map(|p| p.start_time),
        alive: handle.as_ref().is_some_and(|h| h.is_alive()),
        pidfd: handle.as_ref().is_some_and(|h| h.has_pidfd()),
        exit_code: rec.exit_code,
        created_at_ms: rec.created_at_ms,
        updated_at_ms: rec.updated_at_ms,
        dir: inner.layout.box_dir(&rec.id).display().to_string(),
        log: inner.layout.log_file(&rec.id).display().to_string(),
        binding,
        sockets,
        disk,
        id: rec.id,
    }
}

/// One strategy in a [`DoctorReport`].
#[derive(Debug, Clone, Serialize)]
pub struct StrategyReport {
    /// Name.
    pub name: String,
    /// Summary.
    pub summary: String,
    /// Whether it works on this platform.
    pub supported_here: bool,
    /// Whether its addresses are filesystem paths.
    pub path_addressable: bool,
    /// Whether every address fits whatever the home's length.
    pub home_length_independent: bool,
    /// Why it could not be built, if it could not.
    pub error: Option<String>,
    /// The shared per-user directory its bindings live in (short-symlink's
    /// `<base>/<prefix>-<uid>`), when it has one.
    pub binding_dir: Option<String>,
    /// Every socket of every backend (own and derived names) for a worst-case id.
    pub sockets: Vec<SocketReport>,
    /// Whether every address fits.
    pub all_fit: bool,
}

/// Why a strategy cannot be paired with a backend in a [`DoctorReport`]. Serialised
/// as its message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PairingError {
    /// The strategy cannot serve the backend at all.
    #[error(transparent)]
    Incompatible(#[from] Incompatibility),
    /// An address of a box of this backend would not fit (or cannot be made) in this
    /// home with this strategy.
    #[error(transparent)]
    Budget(std::sync::Arc<boxsock_core::error::BindingError>),
}

impl Serialize for PairingError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One backend in a [`DoctorReport`].
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// Name.
    pub name: String,
    /// Summary.
    pub summary: String,
    /// Whether it can run boxes here.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// Whether `create`/`start` go ahead anyway: differs from `available` when an
    /// option makes the backend skip its probe (libkrun `configure_only`).
    pub launch_available: bool,
    /// `none` (a plain host process) or `vm`.
    pub isolation: Option<String>,
    /// `path-only` or `path-or-abstract`.
    pub address_needs: Option<String>,
    /// What the backend checked on this machine ([`Backend::probes`]).
    pub probes: Vec<boxsock_core::backend::Probe>,
    /// Strategies it can be paired with, and for the others why not. Serialised as
    /// `"strategies": [{"strategy", "compatible", "reason"}]`, no `{"Ok":…}`.
    #[serde(rename = "strategies", serialize_with = "serialize_pairings")]
    pub compatible: Vec<(String, Result<(), PairingError>)>,
}

/// One strategy in [`BackendReport::compatible`] as JSON shows it.
#[derive(Serialize)]
struct Pairing<'a> {
    strategy: &'a str,
    compatible: bool,
    reason: Option<&'a PairingError>,
}

fn serialize_pairings<S: serde::Serializer>(
    pairings: &[(String, Result<(), PairingError>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(pairings.iter().map(|(strategy, r)| Pairing {
        strategy,
        compatible: r.is_ok(),
        reason: r.as_ref().err(),
    }))
}

/// What `boxsock doctor` prints for a home.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The home.
    pub home: String,
    /// Its length in bytes.
    pub home_bytes: usize,
    /// The platform.
    pub platform: String,
    /// `sizeof(sun_path)` here.
    pub limit: usize,
    /// The id used for the worst case (longest accepted).
    pub sample_id: String,
    /// Per strategy.
    pub strategies: Vec<StrategyReport>,
    /// Per backend.
    pub backends: Vec<BackendReport>,
    /// The home's recorded fallback binding directory, used because the predictable
    /// per-user directory was squatted (`None`: the default is used).
    pub binding_dir_fallback: Option<String>,
    /// Who holds the predictable per-user directory, when it is another uid.
    pub binding_dir_squatted_by: Option<u32>,
    /// Every fallback recorded in the home (every strategy's shared directory), what
    /// stands at it now, and why it was chosen or what it replaced.
    pub fallbacks: Vec<super::squat::FallbackReport>,
}

/// Diagnose a home without opening (or locking) it: every strategy × every socket a
/// box of any backend would have (derived names included), for the longest id; and
/// every backend's availability.
pub fn doctor(home: &Path, options: &RuntimeOptions) -> DoctorReport {
    let layout = BoxLayout::new(home);
    let sample = BoxId::parse(&"x".repeat(BoxId::MAX_LEN)).expect("a valid id");
    type Built = Result<std::sync::Arc<dyn Backend>, String>;
    let mut backends: Vec<(String, &'static str, Built)> = Vec::new();
    for reg in options.backends.iter() {
        backends.push((
            reg.name.to_owned(),
            reg.summary,
            options.backends.build(reg.name, &options.backend_config).map_err(|e| e.to_string()),
        ));
    }
    // Union of every backend's sockets (with network), by file name.
    let mut specs: Vec<SocketSpec> = Vec::new();
    for (_, _, b) in &backends {
        if let Ok(b) = b {
            for s in socket_specs(&**b, true) {
                if !specs.iter().any(|x| x.name == s.name && x.derived == s.derived) {
                    specs.push(s);
                }
            }
        }
    }
    if specs.is_empty() {
        specs = vec![
            boxsock_core::catalogue::AGENT,
            boxsock_core::catalogue::READY,
            boxsock_core::catalogue::NET,
        ];
    }
    let mut strategies = Vec::new();
    let mut built = Vec::new();
    let mut config = options.strategy_config.clone();
    // The doctor only looks: it may be pointed at a directory that is not a home yet.
    config.read_only = true;
    let binding_dir_fallback = match &config.binding_dir {
        None => super::squat::recorded(&layout, &config).map(|d| d.display().to_string()),
        Some(_) => None,
    };
    let binding_dir_squatted_by = super::squat::squatter(&config);
    let fallbacks = super::squat::reports(layout.home(), config.uid);
    for reg in options.strategies.iter() {
        match options.strategies.build(reg.name, &config) {
            Ok(s) => {
                let caps = s.capabilities();
                let sockets = socket_reports(&s, &layout, &sample, &specs);
                let all_fit = sockets.iter().all(|r| r.fits);
                strategies.push(StrategyReport {
                    name: reg.name.into(),
                    summary: reg.summary.into(),
                    supported_here: caps.supported_here(),
                    path_addressable: caps.path_addressable,
                    home_length_independent: caps.home_length_independent,
                    error: None,
                    binding_dir: s.binding_dir().map(|d| d.display().to_string()),
                    sockets,
                    all_fit,
                });
                built.push(s);
            }
            Err(e) => strategies.push(StrategyReport {
                name: reg.name.into(),
                summary: reg.summary.into(),
                supported_here: false,
                path_addressable: false,
                home_length_independent: false,
                error: Some(e.to_string()),
                binding_dir: None,
                sockets: Vec::new(),
                all_fit: false,
            }),
        }
    }
    let backends = backends
        .into_iter()
        .map(|(name, summary, b)| match b {
            Ok(b) => {
                let (available, reason) = match b.available() {
                    Availability::Available => (true, None),
                    Availability::Unavailable { reason } => (false, Some(reason)),
                };
                let launch_available = matches!(b.available_for_launch(), Availability::Available);
                let compatible = built
                    .iter()
                    .map(|s| {
                        let r =
                            compatibility(&**s, &*b).map_err(PairingError::from).and_then(|()| {
                                check_addresses(s, &layout, &sample, &socket_specs(&*b, true))
                                    .map(drop)
                                    .map_err(|e| PairingError::Budget(std::sync::Arc::new(e)))
                            });
                        (s.name().to_owned(), r)
                    })
                    .collect();
                BackendReport {
                    name,
                    summary: summary.into(),
                    available,
                    reason,
                    launch_available,
                    isolation: Some(match b.isolation() {
                        Isolation::None => {
                            "none (the box is a plain host process; no isolation)".into()
                        }
                        Isolation::Vm => "vm".into(),
                        Isolation::Namespaces => {
                            "namespaces (a sandbox on the host's kernel, not a VM)".into()
                        }
                    }),
                    address_needs: Some(match b.address_needs() {
                        AddressNeeds::PathOnly => "path-only".into(),
                        AddressNeeds::PathOrAbstract => "path-or-abstract".into(),
                    }),
                    probes: b.probes(),
                    compatible,
                }
            }
            Err(e) => BackendReport {
                name,
                summary: summary.into(),
                available: false,
                reason: Some(e),
                launch_available: false,
                isolation: None,
                address_needs: None,
                probes: Vec::new(),
                compatible: Vec::new(),
            },
        })
        .collect();
    DoctorReport {
        home: home.display().to_string(),
        home_bytes: home.as_os_str().len(),
        platform: Platform::current().name().into(),
        limit: Platform::current().sun_len(),
        sample_id: sample.to_string(),
        strategies,
        backends,
        binding_dir_fallback,
        binding_dir_squatted_by,
        fallbacks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_pairing_serialises_without_a_result_enum() {
        let b = BackendReport {
            name: "x".into(),
            summary: "s".into(),
            available: true,
            reason: None,
            launch_available: true,
            isolation: None,
            address_needs: None,
            probes: Vec::new(),
            compatible: vec![
                ("a".into(), Ok(())),
                (
                    "b".into(),
                    Err(Incompatibility::NeedsPaths { strategy: "b".into(), backend: "x".into() }
                        .into()),
                ),
            ],
        };
        let why = b.compatible[1].1.as_ref().unwrap_err().to_string();
        let s = serde_json::to_string(&b).unwrap();
        assert!(!s.contains("\"Ok\"") && !s.contains("\"Err\""), "{s}");
        let want = format!(
            r#"{{"name":"x","summary":"s","available":true,"reason":null,"launch_available":true,"isolation":null,"address_needs":null,"probes":[],"strategies":[{{"strategy":"a","compatible":true,"reason":null}},{{"strategy":"b","compatible":false,"reason":{}}}]}}"#,
            serde_json::to_string(&why).unwrap()
        );
        assert_eq!(s, want);
    }
}
