//! Opening the home: the runtime options the global options make, and the ways a verb
//! opens the home (writing, read-only, one that must exist).

use std::path::PathBuf;

use boxsock::{
    Access, BackendConfig, CreateOptions, LockMode, Runtime, RuntimeError, RuntimeOptions,
    StrategyConfig, builtin_backends, builtin_strategies,
};

use boxsock::boxsock_core::backend::BoxImage;
use boxsock::boxsock_core::layout::BoxLayout;

use crate::args::{BoxArgs, Global, secs};
use crate::{Failure, exit};

impl Global {
    /// The home, made absolute (no symlink resolution) before anything checks it.
    pub(crate) fn home(&self) -> Result<PathBuf, Failure> {
        let home = self.home.clone().or_else(boxsock::default_home).ok_or_else(|| {
            Failure(
                "no home: pass --home or set BOXSOCK_HOME (HOME is not set either)".into(),
                exit::FAILED,
            )
        })?;
        std::path::absolute(&home).map_err(|e| {
            Failure(
                format!(
                    "home {}: cannot make it absolute: {e}",
                    boxsock::boxsock_core::echo::path(&home)
                ),
                exit::FAILED,
            )
        })
    }

    pub(crate) fn options(&self) -> Result<RuntimeOptions, Failure> {
        let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
        let mut sc = StrategyConfig::default();
        if let Some(b) = &self.link_base {
            sc.base_dir = b.clone();
        }
        o.strategy_config = sc;
        o.backend_config = BackendConfig {
            helper_dir: self.helper_dir.clone(),
            options: self.backend_options.iter().cloned().collect(),
        };
        // Many CLI processes may work on one home at once: lock per operation.
        o.lock_mode = LockMode::Shared;
        o.lock_wait = Some(secs(self.lock_wait, "lock-wait")?);
        o.ready_timeout = secs(self.ready_timeout, "ready-timeout")?;
        // A CLI process is short-lived: boxes are checked at each open instead.
        o.health_monitor = false;
        Ok(o)
    }

    /// Open the home. `writes` says whether the verb changes anything: only then does
    /// the open also remove `run --rm` boxes whose client is gone (read-only verbs
    /// delete nothing).
    pub(crate) async fn open(&self, writes: Writes) -> Result<Runtime, Failure> {
        self.open_with_report(writes).await.map(|(rt, _)| rt)
    }

    /// [`Global::open`], with what the opening sweep and recovery did (`sweep` prints
    /// it).
    pub(crate) async fn open_with_report(
        &self,
        writes: Writes,
    ) -> Result<(Runtime, boxsock::OpenReport), Failure> {
        let mut o = self.options()?;
        o.remove_abandoned_at_open = writes == Writes::Yes;
        let (rt, report) = Runtime::open(self.home()?, o).await.map_err(Failure::from)?;
        for id in &report.abandoned_removed {
            tracing::info!(box_id = %id, "removed a `run --rm` box whose client is gone");
        }
        for bad in &report.corrupt_rows {
            tracing::warn!(box_id = %bad.id, error = %bad.error, "corrupt box row (remove it with `boxsock rm -f`)");
        }
        Ok((rt, report))
    }

    /// Open the home read-only (`ls`, `inspect`): nothing is created, deleted,
    /// recovered or swept. `None` if the home does not exist.
    pub(crate) async fn open_read_only(&self) -> Result<Option<Runtime>, Failure> {
        let mut o = self.options()?;
        o.access = Access::ReadOnly;
        match Runtime::open(self.home()?, o).await {
            Ok((rt, report)) => {
                for bad in &report.corrupt_rows {
                    tracing::warn!(box_id = %bad.id, error = %bad.error, "corrupt box row (remove it with `boxsock rm -f`)");
                }
                Ok(Some(rt))
            }
            Err(RuntimeError::NoHome { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a home that must already exist: a verb naming a box in a missing home
    /// (a typo in `--home`) fails without creating it.
    pub(crate) async fn open_existing(
        &self,
        what: &str,
        writes: Writes,
    ) -> Result<Runtime, Failure> {
        let home = self.home()?;
        if !home.exists() {
            return Err(Failure(
                format!(
                    "no box with id or name {}: home {} does not exist",
                    boxsock::boxsock_core::echo::echo(what),
                    boxsock::boxsock_core::echo::path(&home)
                ),
                exit::FAILED,
            ));
        }
        self.open(writes).await
    }

    /// The global options as arguments, for `run --rm`'s lifeline: it opens the home
    /// as this process did (home made absolute; values from the environment passed as
    /// options).
    pub(crate) fn lifeline_args(&self) -> Result<Vec<std::ffi::OsString>, Failure> {
        let mut a: Vec<std::ffi::OsString> = vec!["--home".into(), self.home()?.into_os_string()];
        a.extend(["--strategy".into(), self.strategy.clone().into()]);
        a.extend(["--backend".into(), self.backend.clone().into()]);
        if let Some(b) = &self.link_base {
            a.extend(["--link-base".into(), b.clone().into_os_string()]);
        }
        if let Some(d) = &self.helper_dir {
            a.extend(["--helper-dir".into(), d.clone().into_os_string()]);
        }
        for (k, v) in &self.backend_options {
            a.extend(["--backend-option".into(), format!("{k}={v}").into()]);
        }
        a.extend(["--lock-wait".into(), self.lock_wait.to_string().into()]);
        a.extend(["--ready-timeout".into(), self.ready_timeout.to_string().into()]);
        Ok(a)
    }

    pub(crate) fn create_options(
        &self,
        name: Option<String>,
        env: Vec<(String, String)>,
        network: bool,
        settings: &BoxArgs,
        image: Option<BoxImage>,
        process: boxsock::BoxProcess,
    ) -> CreateOptions {
        let mut b = CreateOptions::builder()
            .strategy(self.strategy.clone())
            .backend(self.backend.clone())
            .network(network)
            .envs(env);
        if let Some(n) = name {
            b = b.name(n);
        }
        if let Some(dir) = &settings.rootfs {
            b = b.rootfs(dir.clone());
        }
        if let Some(n) = settings.vcpus {
            b = b.vcpus(n);
        }
        if let Some(m) = settings.ram_mib {
            b = b.ram_mib(m);
        }
        if let Some(m) = settings.memory {
            b = b.memory(m);
        }
        for v in &settings.volumes {
            b = b.volume(v.clone());
        }
        for p in &settings.ports {
            b = b.port(*p);
        }
        if let Some(d) = settings.disk_size {
            b = b.disk_size(d);
        }
        if let Some(i) = image {
            b = b.image(i);
        }
        b.process(process).build()
    }
}

/// What a new box of an image is made of: the image pinned (manifest and layers) and
/// what it runs by docker's rules.
#[derive(Debug, Clone)]
pub(crate) struct ImageBox {
    /// Stored with the box.
    pub(crate) image: BoxImage,
    /// The image config with the user's overrides applied.
    pub(crate) process: boxsock_image::Process,
}

impl Global {
    /// Resolve `reference` in the home's image store (`<home>/images`), apply the
    /// overrides to its config, and make sure its root (its layers merged, whiteouts
    /// applied; shared by every box of the image) exists. A missing image says how to
    /// get it; the store is not created to say so.
    pub(crate) fn image_box(
        &self,
        rt: &Runtime,
        reference: &str,
        overrides: &boxsock_image::Overrides,
    ) -> Result<ImageBox, Failure> {
        use boxsock::boxsock_core::echo;
        let dir = BoxLayout::new(self.home()?).images_dir();
        let missing = || {
            Failure(
                format!(
                    "no image {} in this home's image store: get it with `boxsock pull {}` or \
                     `boxsock image import FILE`",
                    echo::echo(reference),
                    echo::echo(reference)
                ),
                exit::FAILED,
            )
        };
        if !dir.is_dir() {
            return Err(missing());
        }
        let failed = |e: boxsock_image::ImageError| {
            Failure(format!("image {}: {e}", echo::echo(reference)), exit::FAILED)
        };
        // The store with the home's records (SQLite, decision 0019).
        let store = rt.images().map_err(|e| Failure(e.to_string(), exit::FAILED))?;
        let info = match store.inspect(reference) {
            Ok(i) => i,
            Err(boxsock_image::ImageError::NotFound { .. }) => return Err(missing()),
            Err(e) => return Err(failed(e)),
        };
        let process = boxsock_image::config::resolve(&info.config, overrides).map_err(failed)?;
        let diff_ids: Vec<boxsock_image::Digest> =
            info.record.layers.iter().map(|l| l.diff_id.clone()).collect();
        store.ensure_root(&info.record.id, &diff_ids).map_err(failed)?;
        let named = reference
            .parse::<boxsock_image::Reference>()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| info.record.id.to_string());
        let image = BoxImage::new(
            named,
            info.record.id.to_string(),
            diff_ids.iter().map(ToString::to_string).collect(),
        );
        Ok(ImageBox { image, process })
    }
}

/// Whether a verb changes the home (see [`Global::open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writes {
    Yes,
    No,
}
