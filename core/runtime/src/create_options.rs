//! [`CreateOptions`]: what a new box is made of, and [`CreateOptionsBuilder`].
//!
//! ```
//! use boxsock_runtime::CreateOptions;
//! let o = CreateOptions::builder().strategy("abstract").backend("host").name("web").network(true).env("A", "1").build();
//! assert_eq!((o.strategy.as_str(), o.backend.as_str(), o.network), ("abstract", "host", true));
//! ```
//!
//! The struct is `#[non_exhaustive]`: build it with [`CreateOptions::builder`] (or
//! [`CreateOptions::new`] and field assignment), so new options never break an
//! embedder.

use std::path::PathBuf;

use boxsock_core::backend::{BoxImage, BoxSettings, ByteSize, PortMapping, Volume};
use boxsock_core::id::BoxId;
use boxsock_core::registry::Named;

use crate::process::ProcessIdentity;
use crate::store::BoxProcess;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The box's id; `None` (the default) generates one. A caller chooses it when
    /// something must know the box before it exists: `run --rm`'s lifeline is told the
    /// id before `create` makes anything, so it can remove whatever a killed client
    /// left. An id already used (as an id or a name) is refused
    /// ([`crate::store::StoreError::IdTaken`]) before anything is written.
    pub id: Option<BoxId>,
    /// Optional unique name (same rules as ids).
    pub name: Option<String>,
    /// Strategy name.
    pub strategy: String,
    /// Backend name.
    pub backend: String,
    /// Whether the box has a network.
    pub network: bool,
    /// Extra environment for the agent.
    pub env: Vec<(String, String)>,
    /// Tie the box to this process (`run --rm` passes its own): once the process is
    /// gone (pid + start time), the box is stopped and removed by the next open that
    /// recovers (with [`crate::RuntimeOptions::remove_abandoned_at_open`]) or by
    /// [`crate::Runtime::remove_abandoned`]. Recorded with the box's row, atomically.
    pub auto_remove_owner: Option<ProcessIdentity>,
    /// The backend settings that define the box (vcpus, memory, root filesystem),
    /// stored with it so every start boots the same box. A `rootfs` is canonicalised
    /// at create; the backend refuses settings it does not support
    /// (`Backend::check_settings`).
    pub settings: BoxSettings,
    /// The box's own command and user, stored with it (decision 0020): what
    /// [`crate::Runtime::main_command`] runs, and the user of every command of the box
    /// that names none. Not a backend setting: every backend takes it.
    pub process: BoxProcess,
}

impl CreateOptions {
    /// A box with this strategy and backend, no name, no network, default settings.
    pub fn new(strategy: impl Into<String>, backend: impl Into<String>) -> Self {
        CreateOptions {
            id: None,
            name: None,
            strategy: strategy.into(),
            backend: backend.into(),
            network: false,
            env: Vec::new(),
            auto_remove_owner: None,
            settings: BoxSettings::default(),
            process: BoxProcess::default(),
        }
    }

    /// A builder. Choose the strategy and backend by name (`.strategy("abstract")`) or
    /// by type (`.strategy_of::<ShortSymlink>()`); without a choice `create` refuses
    /// with [`crate::RuntimeError::Unchosen`].
    pub fn builder() -> CreateOptionsBuilder {
        CreateOptionsBuilder { opts: CreateOptions::new(String::new(), String::new()) }
    }
}

/// Builds [`CreateOptions`]. Every method takes and returns the builder.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() and Runtime::create"]
pub struct CreateOptionsBuilder {
    opts: CreateOptions,
}

impl CreateOptionsBuilder {
    /// The strategy, by registered name.
    pub fn strategy(mut self, name: impl Into<String>) -> Self {
        self.opts.strategy = name.into();
        self
    }

    /// The strategy, by type (its registered [`Named::NAME`]).
    pub fn strategy_of<S: Named>(self) -> Self {
        self.strategy(S::NAME)
    }

    /// The backend, by registered name.
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.opts.backend = name.into();
        self
    }

    /// The backend, by type (its registered [`Named::NAME`]).
    pub fn backend_of<B: Named>(self) -> Self {
        self.backend(B::NAME)
    }

    /// The box's id (see [`CreateOptions::id`]).
    pub fn id(mut self, id: BoxId) -> Self {
        self.opts.id = Some(id);
        self
    }

    /// A unique name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// Give the box a network (stored with the box).
    pub fn network(mut self, on: bool) -> Self {
        self.opts.network = on;
        self
    }

    /// One more environment variable for the agent.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.env.push((key.into(), value.into()));
        self
    }

    /// Several environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.opts.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Virtual CPUs (stored with the box).
    pub fn vcpus(mut self, n: u8) -> Self {
        self.opts.settings.vcpus = Some(n);
        self
    }

    /// Guest memory in MiB (stored with the box).
    pub fn ram_mib(mut self, mib: u32) -> Self {
        self.opts.settings.ram_mib = Some(mib);
        self
    }

    /// Virtual CPUs (stored with the box): `--cpus`, the same as [`Self::vcpus`].
    pub fn cpus(self, n: u8) -> Self {
        self.vcpus(n)
    }

    /// Guest memory (stored with the box in whole MiB, rounded up): `--memory 512m`.
    pub fn memory(mut self, size: ByteSize) -> Self {
        self.opts.settings.ram_mib = Some(u32::try_from(size.mib_ceil()).unwrap_or(u32::MAX));
        self
    }

    /// Show a host directory to the box (repeatable; stored with the box, the host
    /// directory canonicalised at create, which refuses a missing one and two volumes
    /// on one guest path).
    pub fn volume(mut self, volume: Volume) -> Self {
        self.opts.settings.volumes.push(volume);
        self
    }

    /// Publish a box port on the host (repeatable; stored with the box). A box with a
    /// published port has a network: `create` turns it on (decision 0024).
    pub fn port(mut self, port: PortMapping) -> Self {
        self.opts.settings.ports.push(port);
        self
    }

    /// The size of the box's persistent writable layer where it is a disk image.
    pub fn disk_size(mut self, size: ByteSize) -> Self {
        self.opts.settings.disk_size = Some(size);
        self
    }

    /// The box's hostname (stored with the box; at most 64 bytes, no NUL or `/`).
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.opts.settings.hostname = Some(name.into());
        self
    }

    /// Join this network namespace (a path such as `/run/netns/NAME` or
    /// `/proc/PID/ns/net`, opened at each start) instead of the box's own network.
    pub fn network_namespace(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.settings.network_namespace = Some(path.into());
        self
    }

    /// Boot the box from this root filesystem directory (stored with the box after
    /// canonicalisation; never modified; writes in the box stay in the box).
    pub fn rootfs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.settings.rootfs = Some(dir.into());
        self
    }

    /// Run this OCI image (stored with the box: its manifest and layers, so every start
    /// uses the same ones). The image's root must exist in the home's image store
    /// (`BoxLayout::image_root`); the facade's `image` module resolves a reference and
    /// builds it. Exclusive with [`CreateOptionsBuilder::rootfs`]; the backend must
    /// run images (`Backend::runs_images`).
    pub fn image(mut self, image: BoxImage) -> Self {
        self.opts.settings.image = Some(image);
        self
    }

    /// The box's own command (stored with it; see [`CreateOptions::process`]).
    pub fn command<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.opts.process.argv = argv.into_iter().map(Into::into).collect();
        self
    }

    /// One more environment variable for the box's command (on top of the box's).
    pub fn command_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.process.env.push((key.into(), value.into()));
        self
    }

    /// The working directory of the box's command (absolute).
    pub fn command_cwd(mut self, dir: impl Into<String>) -> Self {
        self.opts.process.cwd = Some(dir.into());
        self
    }

    /// The user the box's command and every command that names none run as (`uid`,
    /// `uid:gid`, `name`, `name:group`, resolved in the box when a command starts).
    pub fn user(mut self, spec: impl Into<String>) -> Self {
        self.opts.process.user = Some(spec.into());
        self
    }

    /// The box's whole process (replaces what `command`, `command_env`,
    /// `command_cwd` and `user` set).
    pub fn process(mut self, process: BoxProcess) -> Self {
        self.opts.process = process;
        self
    }

    /// Tie the box to this process (see [`CreateOptions::auto_remove_owner`]).
    pub fn auto_remove_owner(mut self, owner: ProcessIdentity) -> Self {
        self.opts.auto_remove_owner = Some(owner);
        self
    }

    /// The options.
    pub fn build(self) -> CreateOptions {
        self.opts
    }
}

impl From<CreateOptionsBuilder> for CreateOptions {
    fn from(b: CreateOptionsBuilder) -> Self {
        b.build()
    }
}

/// `settings` with its root filesystem made absolute and canonical (the user's input,
/// stored as given after canonicalisation), checked to be a directory.
pub(crate) fn canonical_settings(
    mut settings: BoxSettings,
) -> Result<BoxSettings, crate::RuntimeError> {
    if let Some(given) = settings.rootfs.take() {
        let bad = |reason: String| crate::RuntimeError::BadRootfs { path: given.clone(), reason };
        let canonical =
            std::fs::canonicalize(&given).map_err(|e| bad(format!("cannot resolve it: {e}")))?;
        let meta = std::fs::metadata(&canonical).map_err(|e| {
            bad(format!("cannot inspect {}: {e}", boxsock_core::echo::path(&canonical)))
        })?;
        if !meta.is_dir() {
            return Err(bad(format!(
                "{} is not a directory",
                boxsock_core::echo::path(&canonical)
            )));
        }
        settings.rootfs = Some(canonical);
    }
    boxsock_core::settings::check_volumes_and_ports(&settings.volumes, &settings.ports)?;
    for v in &mut settings.volumes {
        let bad = |reason: String| boxsock_core::settings::SettingError {
            setting: "volume",
            input: boxsock_core::echo::echo(&v.to_string()).to_string(),
            reason,
        };
        let canonical = std::fs::canonicalize(&v.host).map_err(|e| {
            bad(format!(
                "the host directory {} cannot be used: {e}",
                boxsock_core::echo::path(&v.host)
            ))
        })?;
        if !std::fs::metadata(&canonical).is_ok_and(|m| m.is_dir()) {
            return Err(bad(format!(
                "the host path {} is not a directory",
                boxsock_core::echo::path(&canonical)
            ))
            .into());
        }
        v.host = canonical;
    }
    Ok(settings)
}

/// A box's own process is refused at create when it cannot run: a relative working
/// directory, an empty user, or a working directory or environment without a command.
pub(crate) fn check_process(p: &BoxProcess) -> Result<(), crate::RuntimeError> {
    let bad = |reason: String| Err(crate::RuntimeError::BadProcess { reason });
    let echo = |s: &str| boxsock_core::echo::echo(s).to_string();
    if let Some(d) = p.cwd.as_deref().filter(|d| !d.starts_with('/')) {
        return bad(format!("working directory {} is not absolute", echo(d)));
    }
    if p.user.as_deref().is_some_and(|u| u.is_empty()) {
        return bad("the user is empty".into());
    }
    if !p.has_command() && (p.cwd.is_some() || !p.env.is_empty()) {
        return bad("a working directory or environment without a command".into());
    }
    if p.argv.first().is_some_and(|a| a.is_empty()) {
        return bad("the program name is empty".into());
    }
    Ok(())
}

/// The root of a box's image (`BoxLayout::image_root` of its manifest) must be a
/// directory: the image store builds it when the image is resolved for a box; a box is
/// never created over a missing one.
pub(crate) fn check_image_root(
    layout: &boxsock_core::layout::BoxLayout,
    image: &BoxImage,
) -> Result<(), crate::RuntimeError> {
    let bad = |reason: String| crate::RuntimeError::BadImage {
        reference: boxsock_core::echo::echo(&image.reference).to_string(),
        reason,
    };
    let Some(root) = layout.image_root(&image.manifest) else {
        return Err(bad(format!(
            "manifest digest {} is not sha256:<64 hex digits>",
            boxsock_core::echo::echo(&image.manifest)
        )));
    };
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(bad(format!("{} is not a directory", boxsock_core::echo::path(&root)))),
        Err(e) => Err(bad(format!(
            "its root {} is missing ({e}): the image store builds it when the image is \
             resolved for a box (`boxsock create IMAGE`)",
            boxsock_core::echo::path(&root)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mine;
    impl Named for Mine {
        const NAME: &'static str = "mine";
    }

    #[test]
    fn the_builder_sets_every_field_and_takes_types_or_names() {
        let o = CreateOptions::builder()
            .strategy_of::<Mine>()
            .backend("libkrun")
            .name("b1")
            .network(true)
            .env("A", "1")
            .envs([("B", "2")])
            .vcpus(2)
            .ram_mib(1024)
            .rootfs("/srv/root")
            .command(["sh", "-c", "exit 3"])
            .command_env("C", "3")
            .command_cwd("/srv")
            .user("65534:65534")
            .build();
        assert_eq!(o.strategy, "mine");
        assert_eq!(o.backend, "libkrun");
        assert_eq!(o.name.as_deref(), Some("b1"));
        assert!(o.network);
        assert_eq!(o.env, vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "2".to_owned())]);
        assert_eq!((o.settings.vcpus, o.settings.ram_mib), (Some(2), Some(1024)));
        assert_eq!(o.settings.rootfs.as_deref(), Some(std::path::Path::new("/srv/root")));
        assert_eq!(o.process.argv, ["sh", "-c", "exit 3"]);
        assert_eq!(o.process.env, [("C".to_owned(), "3".to_owned())]);
        assert_eq!(o.process.cwd.as_deref(), Some("/srv"));
        assert_eq!(o.process.user.as_deref(), Some("65534:65534"));
        let plain = CreateOptions::builder().backend_of::<Mine>().build();
        assert_eq!((plain.strategy.as_str(), plain.backend.as_str()), ("", "mine"));
        assert!(plain.settings.is_default());
        assert!(plain.process.is_empty());
    }
}
