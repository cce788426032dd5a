//! `host`: runs the in-box agent (`boxsock-agent`) as a plain host process.
//!
//! **It isolates nothing.** The "box" is a process of the calling user, sharing the
//! host's filesystem, network, pids and everything else; commands run through it can
//! do whatever the user can. It exists to develop and test the runtime, the socket
//! strategies and the agent protocol on machines without a usable hypervisor, and as
//! the reference backend for the runtime's tests.
//!
//! Sockets: the agent binds `agent`, the runtime binds `ready` (see
//! [`Backend::sockets`]). Both may be paths or abstract names. For paths the agent
//! inherits the runtime's verified socket directory at descriptor [`SOCKET_DIR_FD`]
//! and is given `unix:///proc/self/fd/3/<name>`, so it never re-resolves a /tmp path.
//! The agent is always started with `--allow-uid` for every uid of the box's peer
//! policy ([`BoxSockets::peer`](boxsock_core::backend::BoxSockets::peer): the owner and
//! every `allowed_peer_uids` of the embedder, the same uids the runtime's listeners
//! admit), so it checks peer credentials on every accept and on the ready listener.
//!
//! Process model and reaping: [`Backend::launch`] forks the agent as a direct child of
//! the caller, in a new session (`setsid`), and returns its pid without waiting. The
//! agent is the box's process (`Launched::pid`): the runtime sends it signals and
//! **must reap it** — `waitpid(pid, WNOHANG)` in its health monitor and after killing
//! it — or it stays a zombie until the runtime exits (then init adopts and reaps it).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use boxsock_core::backend::{AddressNeeds, Availability, BackendConfig, BackendError, Isolation, LaunchSpec, Launched};
use boxsock_core::registry::BackendRegistration;
use boxsock_core::{Backend, SocketAddress, SocketSpec, catalogue};

/// The registered name.
pub const NAME: &str = "host";

/// The descriptor number at which the agent inherits the box's verified socket
/// directory.
pub const SOCKET_DIR_FD: i32 = 3;

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

    fn address<'a>(&self, spec: &'a LaunchSpec, name: &str) -> Result<&'a SocketAddress, BackendError> {
        spec.sockets
            .addresses
            .get(name)
            .ok_or_else(|| self.spec_error(format!("box {}: no address for socket {name:?}", spec.id)))
    }
}

impl Backend for HostBackend {
    fn name(&self) -> &str {
        NAME
    }

    /// `agent` (bound by the agent) and `ready` (bound by the runtime). `network` is
    /// ignored: a host process shares the host's network, there is nothing to set up.
    fn sockets(&self, _network: bool) -> Vec<SocketSpec> {
        vec![catalogue::AGENT, catalogue::READY]
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

    /// Start `boxsock-agent --agent <uri> --ready <uri> [--allow-uid <owner>]` in its
    /// own session, stdin `/dev/null`, stdout and stderr appended to `spec.log_file`,
    /// the caller's environment plus `spec.env`. Returns at once; the caller reaps the
    /// pid (see the crate documentation).
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, BackendError> {
        let agent = self.address(spec, catalogue::AGENT.name)?;
        let ready = self.address(spec, catalogue::READY.name)?;
        let binary = self.find_agent()?;
        let log = OpenOptions::new().create(true).append(true).open(&spec.log_file).map_err(|e| {
            self.spec_error(format!("box {}: cannot open log file {}: {e}", spec.id, boxsock_core::echo::path(&spec.log_file)))
        })?;
        let log_err = log.try_clone().map_err(|e| BackendError::Spawn {
            backend: NAME.into(),
            what: boxsock_core::echo::path(&spec.log_file).to_string(),
            source: e,
        })?;

        // The agent reaches both sockets through the verified socket directory it
        // inherits at descriptor SOCKET_DIR_FD (`/proc/self/fd/3/<name>`), never by the
        // /tmp path, which others could redirect between the runtime's check and the
        // agent's bind. Abstract names are passed as they are.
        let agent_uri = spec.child_address(catalogue::AGENT.name, SOCKET_DIR_FD)?.to_uri();
        let ready_uri = spec.child_address(catalogue::READY.name, SOCKET_DIR_FD)?.to_uri();
        let mut cmd = Command::new(&binary);
        cmd.arg("--agent").arg(&agent_uri).arg("--ready").arg(&ready_uri);
        // The agent checks every peer's uid on every address, path or abstract, with the
        // box's peer policy (the owner and the embedder's allowed uids), never one
        // rebuilt from the address variant. A policy that checks no uid (a strategy
        // whose filesystem permissions are its only check) still gets the owner.
        let mut uids = spec.sockets.peer_uids().map(<[u32]>::to_vec).unwrap_or_default();
        if uids.is_empty() {
            uids.push(nix::unistd::geteuid().as_raw());
        }
        for uid in &uids {
            cmd.arg("--allow-uid").arg(uid.to_string());
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let dir_fd: Option<i32> = spec.sockets.dir.as_ref().map(|d| d.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setsid(2), dup2(2), fcntl(2) and close_range(2), which are async-signal-safe; it allocates
        // nothing and touches no lock. `dir_fd` is a descriptor the parent keeps open
        // (the spec's socket directory) until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = dir_fd {
                    if fd == SOCKET_DIR_FD {
                        // Already in place: only let it survive exec.
                        if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                            return Err(io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, SOCKET_DIR_FD) == -1 {
                        // dup2 clears FD_CLOEXEC on the new descriptor.
                        return Err(io::Error::last_os_error());
                    }
                }
                // The agent inherits stdio and the socket directory, nothing else.
                match dir_fd {
                    Some(_) => boxsock_core::fds::cloexec_except(&[SOCKET_DIR_FD]),
                    None => boxsock_core::fds::cloexec_except(&[]),
                }
            });
        }
        let child = cmd.spawn().map_err(|source| BackendError::Spawn {
            backend: NAME.into(),
            what: boxsock_core::echo::path(&binary).to_string(),
            source,
        })?;
        let pid = child.id() as i32;
        // Dropping a std `Child` neither waits nor kills: the caller reaps by pid.
        drop(child);
        tracing::info!(box_id = %spec.id, pid, binary = %boxsock_core::echo::path(&binary), agent = %agent, ready = %ready, agent_uri, ready_uri, allow_uids = ?uids, "launched agent");
        Ok(Launched { pid, companions: Vec::new() })
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
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>").to_path_buf();
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
            let st = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo build");
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
