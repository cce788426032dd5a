//! `host`: runs the in-box agent (`boxsock-agent`) as a plain host process.
//!
//! **It isolates nothing.** The "box" is a process of the calling user, sharing the
//! host's filesystem, network, pids and everything else; commands run through it can
//! do whatever the user can. It exists to develop and test the runtime, the socket
//! strategies and the agent protocol on machines without a usable hypervisor, and as
//! the reference backend for the runtime's tests.
//!
//! Sockets: the runtime binds `agent` (through the strategy, with its rotation of
//! squatted names and its peer policy) and hands the listening descriptor to the agent
//! at [`AGENT_FD`]; the agent reports readiness on the box's end of a socket pair at
//! [`READY_FD`] ([`Readiness::Channel`]). So the agent is told no socket name or path
//! at all: nothing in its argv or environment can be read from `/proc` and bound by
//! another user before it (decision 0010). The agent is always started with
//! `--allow-uid` for every uid of the box's peer policy
//! ([`BoxSockets::peer`](boxsock_core::backend::BoxSockets::peer): the owner and every
//! `allowed_peer_uids` of the embedder, the same uids the runtime's listeners admit),
//! so it checks peer credentials on every accept, as the runtime's listener would.
//!
//! Process model and reaping: [`Backend::launch`] forks the agent as a direct child of
//! the caller, in a new session (`setsid`), and returns it as an owned process (pid,
//! start time and pidfd captured at spawn) without waiting. The
//! agent is the box's process (`Launched::process`): the runtime sends it signals and
//! **must reap it** — `waitpid(pid, WNOHANG)` in its health monitor and after killing
//! it — or it stays a zombie until the runtime exits (then init adopts and reaps it).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use boxsock_core::backend::{
    AddressNeeds, Availability, BackendConfig, BackendError, Isolation, LaunchSpec, Launched,
    Readiness,
};
use boxsock_core::catalogue::Binder;
use boxsock_core::echo;
use boxsock_core::registry::BackendRegistration;
use boxsock_core::spawn::Spawn;
use boxsock_core::{Backend, SocketSpec, catalogue};

/// The registered name.
pub const NAME: &str = "host";

/// The descriptor number at which the agent inherits its listening socket
/// (`--agent-fd`).
pub const AGENT_FD: i32 = 3;

/// The descriptor number at which the agent inherits its end of the ready channel
/// (`--ready-fd`).
pub const READY_FD: i32 = 4;

/// The host backend's `agent` socket: [`catalogue::AGENT`], bound by the runtime and
/// handed to the agent.
pub const AGENT: SocketSpec = SocketSpec { binder: Binder::Handed, ..catalogue::AGENT };

/// The agent's file name, its environment variable and install command (the lookup is
/// the core's, shared with every backend that needs the agent).
pub use boxsock_core::helpers::{AGENT_BINARY, AGENT_ENV, AGENT_INSTALL};

/// The registration, also usable in explicit registries.
pub const REGISTRATION: BackendRegistration = BackendRegistration {
    name: NAME,
    summary: "the agent as a plain host process: NO isolation (shares the host's filesystem, network and users); for development and tests",
    build,
};

inventory::submit!(REGISTRATION);

fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(HostBackend::new(config.clone())))
}

/// The `host` backend. See the crate documentation.
#[derive(Debug, Clone)]
pub struct HostBackend {
    config: BackendConfig,
}

impl boxsock_core::registry::Named for HostBackend {
    const NAME: &'static str = NAME;
}

impl HostBackend {
    /// A backend that looks for the agent as configured.
    pub fn new(config: BackendConfig) -> Self {
        HostBackend { config }
    }

    /// Where the agent binary is looked for, in order
    /// ([`boxsock_core::helpers::agent_candidates`]): `helper_dir`, `$BOXSOCK_AGENT`,
    /// beside the current executable, its parent, then `$PATH`.
    pub fn agent_candidates(&self) -> Vec<PathBuf> {
        boxsock_core::helpers::agent_candidates(self.config.helper_dir.as_deref())
    }

    /// The agent binary: the first candidate that is an executable file.
    pub fn find_agent(&self) -> Result<PathBuf, BackendError> {
        boxsock_core::helpers::find_agent(self.config.helper_dir.as_deref())
            .map_err(|e| BackendError::Unavailable { backend: NAME.into(), reason: e.to_string() })
    }

    fn spec_error(&self, reason: String) -> BackendError {
        BackendError::Spec { backend: NAME.into(), reason }
    }
}

impl Backend for HostBackend {
    fn name(&self) -> &str {
        NAME
    }

    /// `agent` only ([`AGENT`]: bound by the runtime, handed to the agent); readiness
    /// goes through an inherited channel, not a `ready` socket. `network` is ignored: a
    /// host process shares the host's network, there is nothing to set up.
    fn sockets(&self, _network: bool) -> Vec<SocketSpec> {
        vec![AGENT]
    }

    /// [`Readiness::Channel`]: the agent writes `Ready` on its inherited end of a
    /// socket pair ([`READY_FD`]).
    fn readiness(&self) -> Readiness {
        Readiness::Channel
    }

    fn address_needs(&self) -> AddressNeeds {
        AddressNeeds::PathOrAbstract
    }

    fn isolation(&self) -> Isolation {
        Isolation::None
    }

    fn available(&self) -> Availability {
        match self.find_agent() {
            Ok(_) => Availability::Available,
            Err(BackendError::Unavailable { reason, .. }) => Availability::Unavailable { reason },
            Err(e) => Availability::Unavailable { reason: e.to_string() },
        }
    }

    /// Start `boxsock-agent --agent-fd 3 --ready-fd 4 --allow-uid <uid>...` in its own
    /// session: descriptor 3 the listener the runtime bound for `agent`
    /// ([`BoxSockets::handed`](boxsock_core::backend::BoxSockets::handed)), 4 the box's
    /// end of the ready channel; stdin `/dev/null`, stdout and stderr appended to
    /// `spec.log_file`, the caller's environment plus `spec.env`. Returns at once; the
    /// caller owns and reaps the process (see the crate documentation).
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        let agent = spec.sockets.handed(AGENT.name)?;
        let ready = spec.sockets.ready_channel.as_ref().ok_or_else(|| {
            self.spec_error(format!(
                "box {}: no ready channel to hand to the agent (the runtime makes one for a \
                 backend of Readiness::Channel)",
                spec.id
            ))
        })?;
        let binary = self.find_agent()?;
        // Descriptors, never names: a name in the agent's argv or environment can be
        // read from /proc/<pid>/cmdline by anyone and bound before the agent binds it.
        let mut cmd = Spawn::new(&binary);
        cmd.arg("--agent-fd").arg(AGENT_FD.to_string()).arg("--ready-fd").arg(READY_FD.to_string());
        // The agent checks every peer's uid on its listener with the box's peer policy
        // (the owner and the embedder's allowed uids), never one rebuilt from the
        // address variant. A policy that checks no uid (a strategy whose filesystem
        // permissions are its only check) still gets the owner.
        let mut uids = spec.sockets.peer_uids().map(<[u32]>::to_vec).unwrap_or_default();
        if uids.is_empty() {
            uids.push(nix::unistd::geteuid().as_raw());
        }
        for uid in &uids {
            cmd.arg("--allow-uid").arg(uid.to_string());
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .log_file(&spec.log_file)
            .map_err(|e| {
                self.spec_error(format!(
                    "box {}: cannot open log file {}: {}",
                    spec.id,
                    echo::path(&spec.log_file),
                    e.into_io()
                ))
            })?
            // The agent inherits stdio, its listener and its ready channel, nothing else.
            .hand(agent.as_fd(), AGENT_FD)
            .hand(ready.as_fd(), READY_FD);
        let process = cmd.spawn().map_err(|e| BackendError::spawn(NAME, e))?;
        let pid = process.pid();
        tracing::info!(
            box_id = %spec.id,
            pid,
            binary = %echo::path(&binary),
            agent = %agent.address(),
            allow_uids = ?uids,
            "launched agent"
        );
        Ok(Launched { process, companions: Vec::new() })
    }
}

/// For this workspace's own tests and benches: the workspace's binaries, built. Only
/// with the `test-support` feature (it runs `cargo build`).
#[cfg(feature = "test-support")]
pub mod dev {
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};

    /// `target/<profile>` of the running test or bench, after `cargo build --bins` of
    /// `packages` in the same profile (a no-op when they are fresh). `cargo test -p X`
    /// builds no other package's binaries, and a stale binary would test old code, so
    /// every test process calls this once per package set. Panics when the build fails:
    /// it is only for tests.
    ///
    /// `boxsock` is built with `boxsock-runtime/test-support` (the crash hook the hostile
    /// suite drives) and the example strategy (`boxsock-xdg-hashed`), the same features
    /// the test builds that dev-depend on it unify to, so the two builds do not
    /// overwrite each other's binary with a different one.
    pub fn built_binaries(packages: &[&str]) -> PathBuf {
        static DONE: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir =
            exe.parent().and_then(|d| d.parent()).expect("target/<profile>").to_path_buf();
        let key = packages.join(",");
        let mut done = DONE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        if !done.contains(&key) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build.arg("build").arg("--bins");
            for p in packages {
                build.args(["-p", p]);
            }
            if packages.contains(&"boxsock") {
                // Unqualified: `boxsock/…` would name the facade's dev-dependency on itself.
                build.args(["--features", "boxsock-runtime/test-support,boxsock-xdg-hashed"]);
            }
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let st =
                build.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo build");
            assert!(st.success(), "cargo build --bins -p {} failed", packages.join(" -p "));
            done.push(key);
        }
        for p in packages {
            let bin = profile_dir.join(p);
            assert!(bin.exists(), "no {} after building", bin.display());
        }
        profile_dir
    }
}
