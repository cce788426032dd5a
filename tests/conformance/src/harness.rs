//! The [`Harness`]: a private temporary world for one check (homes, a base directory, a
//! [`StrategyConfig`] pointing at it), and the [`Kit`] that pairs it with a freshly built
//! strategy.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use boxsock_core::{
    BindingError, BoxId, BoxLayout, Capabilities, SocketBinding, StrategyConfig, boxdir,
};

/// How a strategy is built: the registry's `build` fn type. Each check builds a fresh
/// instance against its own harness.
pub type Constructor = fn(&StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError>;

/// A temporary world for one check.
///
/// Everything lives under one fresh directory in `/tmp` (not `$TMPDIR`, which can be long
/// on macOS), created mode 0755 so that only the strategy's own directories (and the 0700
/// box directories) keep other users out: the cross-user checks would prove nothing if the
/// temp directory itself were 0700. Everything is removed on drop.
#[derive(Debug)]
pub struct Harness {
    dir: tempfile::TempDir,
    config: StrategyConfig,
    counter: AtomicUsize,
}

impl Harness {
    /// A fresh world: `<tmp>/b` is the strategy's base directory.
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bsk-").tempdir_in("/tmp")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let base = dir.path().join("b");
        std::fs::create_dir(&base)?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))?;
        let config = StrategyConfig { base_dir: base, ..StrategyConfig::default() };
        Ok(Harness { dir, config, counter: AtomicUsize::new(0) })
    }

    /// The root of the temporary world.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The strategy's base directory (`StrategyConfig::base_dir`).
    pub fn base_dir(&self) -> &Path {
        &self.config.base_dir
    }

    /// The configuration every strategy in this harness is built from.
    pub fn config(&self) -> &StrategyConfig {
        &self.config
    }

    fn next(&self) -> usize {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh, empty directory under the root (mode 0755), for decoys and scratch.
    pub fn scratch_dir(&self, what: &str) -> PathBuf {
        let p = self.root().join(format!("{what}-{}", self.next()));
        std::fs::create_dir(&p)
            .unwrap_or_else(|e| panic!("create scratch dir {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        p
    }

    /// A fresh, empty home (mode 0755).
    pub fn new_home(&self) -> BoxLayout {
        BoxLayout::new(self.scratch_dir("h"))
    }

    /// A fresh home whose path is exactly `len` bytes, created on disk; `None` if `len` is
    /// too short to be made under the root (or too long for the platform's `PATH_MAX`
    /// once box directories are added).
    pub fn home_of_len(&self, len: usize) -> Option<BoxLayout> {
        let first = format!("h{}-", self.next());
        let root_len = self.root().as_os_str().len();
        // "/<first>" is the least we can add.
        // Leave room for `/boxes/<id>/sockets/<name>` under the platform's PATH_MAX.
        let path_max = libc::PATH_MAX as usize;
        if len < root_len + 1 + first.len() + 1 || len + 128 > path_max {
            return None;
        }
        // Split the remaining bytes into components "/name" of at most 201 bytes.
        let mut rem = len - root_len;
        let mut comps: Vec<usize> = Vec::new();
        while rem > 201 {
            comps.push(200);
            rem -= 201;
        }
        if rem == 1 {
            // a lone "/" cannot be a component: borrow one byte from the previous one
            let last = comps.last_mut()?;
            *last -= 1;
            rem += 1;
        }
        comps.push(rem - 1);
        let mut p = self.root().to_path_buf();
        for (i, n) in comps.iter().enumerate() {
            let name = if i == 0 {
                if *n < first.len() + 1 {
                    return None;
                }
                format!("{first}{}", "x".repeat(n - first.len()))
            } else {
                "y".repeat(*n)
            };
            p.push(name);
        }
        debug_assert_eq!(p.as_os_str().len(), len);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create home of {len} bytes: {e}"));
        Some(BoxLayout::new(p))
    }

    /// Create a new box (random id) with its directories in `layout`.
    pub fn new_box(&self, layout: &BoxLayout) -> BoxId {
        let id = BoxId::generate();
        self.create_box(layout, &id);
        id
    }

    /// Create the directories of box `id` in `layout` (`boxdir::create_box_dirs`).
    pub fn create_box(&self, layout: &BoxLayout, id: &BoxId) {
        boxdir::create_box_dirs(layout, id).unwrap_or_else(|e| {
            panic!("create box dirs of {id} in {}: {e}", layout.home().display())
        });
    }

    /// A random id of exactly `BoxId::MAX_LEN` bytes (the worst case of every budget).
    pub fn longest_id(&self) -> BoxId {
        let mut s = String::new();
        while s.len() < BoxId::MAX_LEN {
            s.push_str(BoxId::generate().as_str());
        }
        s.truncate(BoxId::MAX_LEN);
        BoxId::parse(&s).expect("generated characters are valid")
    }
}

/// A harness plus a strategy built for it: what every check receives.
#[derive(Debug)]
pub struct Kit {
    /// The temporary world.
    pub harness: Harness,
    /// The strategy under test, built by the constructor from `harness.config()`.
    pub strategy: Arc<dyn SocketBinding>,
    ctor: Constructor,
}

impl Kit {
    /// Build a harness and a strategy in it.
    pub fn new(ctor: Constructor) -> Result<Kit, KitError> {
        let harness = Harness::new().map_err(KitError::Harness)?;
        let strategy = ctor(harness.config()).map_err(KitError::Build)?;
        Ok(Kit { harness, strategy, ctor })
    }

    /// The constructor under test.
    pub fn constructor(&self) -> Constructor {
        self.ctor
    }

    /// Another instance of the strategy with the same configuration (a "restart").
    pub fn fresh(&self) -> Arc<dyn SocketBinding> {
        (self.ctor)(self.harness.config())
            .unwrap_or_else(|e| panic!("building a second instance failed: {e}"))
    }

    /// The strategy's capabilities.
    pub fn caps(&self) -> Capabilities {
        self.strategy.capabilities()
    }
}

/// Why a [`Kit`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The temporary world could not be created.
    #[error("creating the harness: {0}")]
    Harness(#[source] io::Error),
    /// The constructor failed.
    #[error("building the strategy: {0}")]
    Build(#[source] BindingError),
}
