//! `xdg-hashed`: an example strategy written outside the built-ins, containerd-style.
//!
//! It proves that a strategy is one crate plus one dependency line in `cli/Cargo.toml`
//! (docs/strategies.md, "Adding a strategy"): nothing else in the workspace names it,
//! yet the CLI, the conformance run, the hostile suite and the benches all find it.
//!
//! ## Layout
//! Every box's sockets bind and dial through
//!
//! ```text
//! <root>/<hash of the home>/<box id>/<name>      <root>/<hash>/<id> -> <home>/boxes/<id>/sockets
//! ```
//!
//! - `<root>` is `$XDG_RUNTIME_DIR/boxsock` (a private per-user directory the session
//!   manager made, 0700, on a tmpfs): nothing in a shared `/tmp`. When
//!   `XDG_RUNTIME_DIR` is unset, empty, relative, or so long that the worst-case address
//!   would not fit `sun_path`, the root falls back to `<base>/<prefix>-x-<uid>` (by
//!   default `/tmp/boxsock-x-<uid>`), and [`XdgHashed::root`] says why (logged once at
//!   build). The choice depends only on the environment and the config, never on the
//!   disk, so every process of a home with the same environment computes the same
//!   addresses.
//!   That fallback root has a predictable name in a shared base, so it is the core's
//!   [`SharedDir`]: when another user made it first, the home moves to a fresh private
//!   `<base>/<prefix>-x.<10 random>`, recorded in `<home>/binding-dir.<prefix>-x`
//!   (decision 0011).
//! - `<hash of the home>` is 8 base32 characters of SHA-256 over the absolute home
//!   (containerd's `/run/containerd/s/<sha256>`): a fixed length whatever the home, and
//!   one directory per home, so two homes may use the same box id at once and a sweep
//!   of one home looks only at that home's directory.
//!
//! ## Security (decision 0001)
//! The root is created 0700 and checked on an opened descriptor (`O_NOFOLLOW`,
//! `fstat`): a symlink, a non-directory or another owner is refused with
//! [`BindingError::Insecure`] naming the path and the owner; group/other bits are
//! repaired. The parent must keep others from renaming the root away
//! (`$XDG_RUNTIME_DIR` owned by the uid and private; a fallback base sticky if others
//! can write it). Inside the root, each home's directory and its links are handled by
//! `boxsock-short-symlink`'s machinery (one instance per home, with the home's hashed
//! directory as its binding directory): descriptor-relative link operations, `flock`,
//! links compared by device+inode, binds and dials through a verified [`SocketDir`].

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use boxsock_core::binding::CrossUserProtection;
use boxsock_core::fallback::SharedDir;
use boxsock_core::peer::PeerPolicy;
use boxsock_core::registry::StrategyRegistration;
use boxsock_core::{
    BindingError, BoxId, BoxLayout, Capabilities, PathStrategy, Platform, PolicyPath,
    SocketBinding, SocketDir, StrategyConfig, SweepReport,
};
use boxsock_short_symlink::ShortSymlink;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

/// The registered name.
pub const NAME: &str = "xdg-hashed";

/// The registration, also usable in explicit registries.
pub const REGISTRATION: StrategyRegistration = StrategyRegistration {
    name: NAME,
    summary: "example third-party strategy: <$XDG_RUNTIME_DIR/boxsock>/<hash of home>/<id>, a symlink to <home>/boxes/<id>/sockets (containerd-style); /tmp/boxsock-x-<uid> without XDG_RUNTIME_DIR",
    build,
};

inventory::submit!(REGISTRATION);

fn build(config: &StrategyConfig) -> Result<Arc<dyn SocketBinding>, BindingError> {
    Ok(Arc::new(XdgHashed::new(config)?))
}

/// Characters of the home hash: 8 base32 characters, 40 bits. Collisions matter only
/// between one user's homes, and a collision is still safe: two homes then share a
/// directory, and the link machinery refuses a link to another live box (`Occupied`).
pub const HASH_LEN: usize = 8;

/// The directory made in `$XDG_RUNTIME_DIR`.
pub const XDG_DIR_NAME: &str = "boxsock";

/// The longest name a binder derives today (libkrun 1.19's unixgram socket), used to
/// decide whether `$XDG_RUNTIME_DIR` leaves room for every address.
const WORST_NAME: &str = "krun-net-4194304-4294967295.sock";

/// Where the per-home directories live, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `$XDG_RUNTIME_DIR/boxsock`.
    Xdg {
        /// The root.
        path: PathBuf,
    },
    /// `<base>/<prefix>-x-<uid>`, because `$XDG_RUNTIME_DIR` could not be used.
    Fallback {
        /// The root.
        path: PathBuf,
        /// Why `$XDG_RUNTIME_DIR` was not used.
        reason: String,
    },
}

impl Root {
    /// The root directory.
    pub fn path(&self) -> &Path {
        match self {
            Root::Xdg { path } | Root::Fallback { path, .. } => path,
        }
    }

    /// Choose the root from `xdg` (the value of `XDG_RUNTIME_DIR`) and `config`. Pure: no
    /// I/O, so every process with the same environment chooses the same root.
    pub fn choose(xdg: Option<&std::ffi::OsStr>, config: &StrategyConfig) -> Root {
        let fallback = |reason: String| Root::Fallback {
            path: config.base_dir.join(format!("{}-x-{}", config.prefix, config.uid)),
            reason,
        };
        let Some(xdg) = xdg.filter(|x| !x.is_empty()) else {
            return fallback("XDG_RUNTIME_DIR is unset or empty".into());
        };
        let xdg = Path::new(xdg);
        if !xdg.is_absolute() {
            return fallback(format!(
                "XDG_RUNTIME_DIR {} is not an absolute path",
                boxsock_core::echo::path(xdg)
            ));
        }
        let path = xdg.join(XDG_DIR_NAME);
        let worst = worst_case_len(&path);
        let limit = Platform::current().sun_len();
        if worst + 1 > limit {
            return fallback(format!(
                "XDG_RUNTIME_DIR {} is too long: the worst-case address under it is {worst} bytes, and {limit} with the NUL is the most",
                boxsock_core::echo::path(xdg)
            ));
        }
        Root::Xdg { path }
    }
}

/// `<root>/<hash>/<longest id>/<longest derived name>`.
fn worst_case_len(root: &Path) -> usize {
    root.as_os_str().len() + 1 + HASH_LEN + 1 + BoxId::MAX_LEN + 1 + WORST_NAME.len()
}

/// 8 base32 characters of SHA-256 over the home's bytes.
pub fn home_hash(home: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = Sha256::digest(home.as_os_str().as_bytes());
    let bits = digest.iter().take(5).fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    (0..HASH_LEN).map(|i| ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char).collect()
}

/// The `xdg-hashed` strategy.
#[derive(Debug)]
pub struct XdgHashed {
    config: StrategyConfig,
    root: Root,
    /// The root's fallback when it is in a shared base (the core's): a root another
    /// user took first is replaced by a fresh private one, recorded in the home.
    shared: Option<SharedDir>,
    /// One short-symlink instance per home (absolute home → the root it was built for
    /// and the instance), each with the home's hashed directory as its binding
    /// directory.
    homes: RwLock<HashMap<PathBuf, (PathBuf, Arc<ShortSymlink>)>>,
    /// The root, with its (dev, ino), when last created and checked.
    checked_root: RwLock<Option<(PathBuf, u64, u64)>>,
}

impl XdgHashed {
    /// A strategy for `config`, its root chosen from `XDG_RUNTIME_DIR` (see [`Root::choose`]).
    pub fn new(config: &StrategyConfig) -> Result<Self, BindingError> {
        Self::with_root(
            config,
            Root::choose(std::env::var_os("XDG_RUNTIME_DIR").as_deref(), config),
        )
    }

    /// A strategy with an explicit root (tests, embedders with their own runtime dir).
    pub fn with_root(config: &StrategyConfig, root: Root) -> Result<Self, BindingError> {
        if !root.path().is_absolute() {
            return Err(BindingError::Invalid {
                what: "xdg-hashed root".into(),
                reason: format!(
                    "{} is not an absolute path",
                    boxsock_core::echo::path(root.path())
                ),
            });
        }
        if let Root::Fallback { path, reason } = &root {
            tracing::debug!(strategy = NAME, root = %boxsock_core::echo::path(path), reason = %reason, "not using XDG_RUNTIME_DIR");
        }
        let shared = match &root {
            Root::Fallback { path, .. } => {
                let (Some(base), Some(stem)) = (
                    path.parent(),
                    path.file_name().and_then(|n| n.to_str()).and_then(|n| n.rsplit_once('-')),
                ) else {
                    return Err(BindingError::Invalid {
                        what: "xdg-hashed root".into(),
                        reason: format!(
                            "{} is not <base>/<stem>-<uid>",
                            boxsock_core::echo::path(path)
                        ),
                    });
                };
                let shared = SharedDir::new(config, base, stem.0);
                if shared.predictable() != *path {
                    return Err(BindingError::Invalid {
                        what: "xdg-hashed root".into(),
                        reason: format!(
                            "{} is not <base>/<stem>-{}",
                            boxsock_core::echo::path(path),
                            config.uid
                        ),
                    });
                }
                Some(shared)
            }
            Root::Xdg { .. } => None,
        };
        Ok(XdgHashed {
            config: config.clone(),
            root,
            shared,
            homes: RwLock::new(HashMap::new()),
            checked_root: RwLock::new(None),
        })
    }

    /// Where the per-home directories live, and why.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The root `layout`'s home uses: `$XDG_RUNTIME_DIR/boxsock`, or in a shared base
    /// the predictable root or the home's recorded fallback.
    pub fn root_for(&self, layout: &BoxLayout) -> PathBuf {
        match &self.shared {
            Some(s) => s.path_for(layout.home()),
            None => self.root.path().to_owned(),
        }
    }

    /// `<root>/<hash of the home>`, the home's directory of links.
    pub fn home_dir(&self, layout: &BoxLayout) -> Result<PathBuf, BindingError> {
        Ok(self.root_for(layout).join(home_hash(&absolute_home(layout)?)))
    }

    /// The short-symlink instance serving `layout`'s home (built again when the home's
    /// root changed: a fallback replaced).
    fn inner(&self, layout: &BoxLayout) -> Result<Arc<ShortSymlink>, BindingError> {
        let home = absolute_home(layout)?;
        let root = self.root_for(layout);
        if let Some((r, s)) = self.homes.read().unwrap_or_else(PoisonError::into_inner).get(&home) {
            if *r == root {
                return Ok(s.clone());
            }
        }
        let config = StrategyConfig {
            base_dir: root.clone(),
            binding_dir: Some(root.join(home_hash(&home))),
            ..self.config.clone()
        };
        let s = Arc::new(ShortSymlink::new(&config)?);
        let mut homes = self.homes.write().unwrap_or_else(PoisonError::into_inner);
        let e = homes.entry(home).or_insert_with(|| (root.clone(), s.clone()));
        if e.0 != root {
            *e = (root, s);
        }
        Ok(e.1.clone())
    }

    /// Whether `root` exists, is still the directory checked before, and is one: one
    /// `lstat` in the steady state.
    fn root_unchanged(&self, root: &Path) -> bool {
        let guard = self.checked_root.read().unwrap_or_else(PoisonError::into_inner);
        let Some((path, dev, ino)) = guard.as_ref() else { return false };
        path == root
            && matches!(std::fs::symlink_metadata(root), Ok(m) if m.is_dir() && m.dev() == *dev && m.ino() == *ino)
    }

    /// Create the root (0700) if missing and check it on a descriptor: a real directory
    /// of the configured uid, no group/other bits (repaired), in a parent others cannot
    /// rename it out of. In a shared base, a root another user holds is never used: the
    /// core's fallback replaces it.
    fn prepare_root(&self, layout: &BoxLayout) -> Result<(), BindingError> {
        if self.root_unchanged(&self.root_for(layout)) {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            let opened = shared.open(layout.home(), true)?.ok_or_else(|| {
                BindingError::errno("open", shared.path_for(layout.home()), Errno::ENOENT)
            })?;
            let st = nix::sys::stat::fstat(&opened.fd)
                .map_err(|e| BindingError::errno("stat", &opened.path, e))?;
            #[allow(clippy::unnecessary_cast)]
            let identity = (opened.path, st.st_dev as u64, st.st_ino as u64);
            *self.checked_root.write().unwrap_or_else(PoisonError::into_inner) = Some(identity);
            return Ok(());
        }
        let root = self.root.path();
        let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
            return Err(BindingError::Invalid {
                what: "xdg-hashed root".into(),
                reason: format!("{} has no parent", boxsock_core::echo::path(root)),
            });
        };
        let uid = self.config.uid;
        let (pfd, pst) = boxsock_core::trust::open_dir(parent, uid, "the xdg-hashed root")?;
        let pmode = mode_bits(pst.st_mode);
        match &self.root {
            Root::Xdg { .. } if pst.st_uid != uid || pmode & 0o077 != 0 => {
                return Err(BindingError::Insecure {
                    path: parent.to_owned(),
                    reason: format!(
                        "XDG_RUNTIME_DIR must be owned by uid {uid} with mode 0700 (it is uid {}, mode {pmode:04o}); unset it to use the fallback",
                        pst.st_uid
                    ),
                });
            }
            Root::Fallback { .. }
                if (pmode & 0o022 != 0 && pmode & 0o1000 == 0)
                    || (pst.st_uid != 0 && pst.st_uid != uid) =>
            {
                return Err(BindingError::Insecure {
                    path: parent.to_owned(),
                    reason: format!(
                        "the base directory (uid {}, mode {pmode:04o}) lets other users rename {} away: it must be owned by root or uid {uid}, and sticky if others can write it",
                        pst.st_uid,
                        boxsock_core::echo::path(root)
                    ),
                });
            }
            _ => {}
        }
        match nix::sys::stat::mkdirat(&pfd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                tracing::debug!(strategy = NAME, path = %boxsock_core::echo::path(root), "created root")
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(BindingError::errno("create directory", root, e)),
        }
        let fd = nix::fcntl::openat(
            &pfd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => BindingError::Insecure {
                path: root.to_owned(),
                reason: "it is not a directory (a symlink or a file): refusing to use it".into(),
            },
            e => BindingError::errno("open", root, e),
        })?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| BindingError::errno("stat", root, e))?;
        if st.st_uid != uid {
            return Err(BindingError::Insecure {
                path: root.to_owned(),
                reason: format!(
                    "it is owned by uid {}, not uid {uid} (squatted?): refusing to use it",
                    st.st_uid
                ),
            });
        }
        let mode = mode_bits(st.st_mode);
        if mode & 0o077 != 0 {
            tracing::warn!(strategy = NAME, path = %boxsock_core::echo::path(root), mode = format!("{mode:04o}"), "repairing the root's mode to 0700");
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o700))
                .map_err(|e| BindingError::errno("chmod", root, e))?;
        }
        #[allow(clippy::unnecessary_cast)]
        let identity = (root.to_owned(), st.st_dev as u64, st.st_ino as u64);
        *self.checked_root.write().unwrap_or_else(PoisonError::into_inner) = Some(identity);
        Ok(())
    }

    /// Whether the root `layout`'s home uses is there to look in (nothing to release
    /// or sweep without it, or in a shared root another user holds).
    fn root_usable(&self, layout: &BoxLayout) -> Result<bool, BindingError> {
        match &self.shared {
            Some(s) => Ok(s.open(layout.home(), false)?.is_some()),
            None => Ok(std::fs::symlink_metadata(self.root.path()).is_ok()),
        }
    }
}

/// A path strategy: the core's `Held` is its box binding and the core writes its
/// `open_box`. Each per-box method hands the box to the home's short-symlink instance.
impl PathStrategy for XdgHashed {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            path_addressable: true,
            filesystem_visible: true,
            peer_credentials: true,
            netns_scoped: false,
            home_length_independent: true,
            cross_user: CrossUserProtection::Both,
            platforms: &[Platform::Linux],
        }
    }

    /// Check (or make) the root, then the home's directory and the box's link.
    fn ensure(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        // Refuse a missing sockets directory before creating anything (the root included);
        // any other failure to look (ENAMETOOLONG, EACCES) is reported as itself.
        let sockets = layout.sockets_dir(id);
        match std::fs::metadata(&sockets) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BindingError::MissingSocketDir { id: id.to_string(), path: sockets });
            }
            Err(e) if matches!(e.raw_os_error(), Some(code) if code == Errno::ENOENT as i32 || code == Errno::ENOTDIR as i32) =>
            {
                return Err(BindingError::MissingSocketDir { id: id.to_string(), path: sockets });
            }
            Err(e) => return Err(BindingError::io("stat", sockets, e)),
        }
        self.prepare_root(layout)?;
        self.inner(layout)?.ensure(layout, id)
    }

    /// `<root>/<hash of the home>/<id>`, the box's link.
    fn socket_base(&self, layout: &BoxLayout, id: &BoxId) -> Result<PathBuf, BindingError> {
        self.inner(layout)?.socket_base(layout, id)
    }

    fn release(&self, layout: &BoxLayout, id: &BoxId) -> Result<(), BindingError> {
        if !self.root_usable(layout)? {
            return Ok(());
        }
        self.inner(layout)?.release(layout, id)
    }

    /// Dangling links in this home's directory only (other homes have their own).
    fn sweep(&self, layout: &BoxLayout) -> Result<SweepReport, BindingError> {
        if !self.root_usable(layout)? {
            return Ok(SweepReport::default());
        }
        PathStrategy::sweep(&*self.inner(layout)?, layout)
    }

    fn policy_paths(
        &self,
        layout: &BoxLayout,
        id: &BoxId,
    ) -> Result<Vec<PolicyPath>, BindingError> {
        self.inner(layout)?.policy_paths(layout, id)
    }

    fn binding_path(&self, layout: &BoxLayout, id: &BoxId) -> Option<PathBuf> {
        self.inner(layout).ok()?.binding_path(layout, id)
    }

    fn open_dir(&self, layout: &BoxLayout, id: &BoxId) -> Result<SocketDir, BindingError> {
        self.inner(layout)?.open_dir(layout, id)
    }

    /// The predictable root in a shared base (`<base>/<prefix>-x-<uid>`) when
    /// `XDG_RUNTIME_DIR` is not used: another user can take that name first.
    fn shared_dir(&self) -> Option<PathBuf> {
        self.shared.as_ref().map(SharedDir::predictable)
    }

    /// The owner and the embedder's `allowed_peer_uids`.
    fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy::allow_uids(
            std::iter::once(self.config.uid).chain(self.config.allowed_peer_uids.iter().copied()),
        )
    }
}

fn absolute_home(layout: &BoxLayout) -> Result<PathBuf, BindingError> {
    std::path::absolute(layout.home())
        .map_err(|e| BindingError::io("make absolute", layout.home(), e))
}

#[allow(clippy::unnecessary_cast)]
fn mode_bits(mode: nix::libc::mode_t) -> u32 {
    (mode as u32) & 0o7777
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StrategyConfig {
        StrategyConfig { base_dir: "/tmp".into(), uid: 1000, ..StrategyConfig::default() }
    }

    #[test]
    fn root_is_xdg_when_usable_and_falls_back_with_a_reason() {
        let c = config();
        assert_eq!(
            Root::choose(Some("/run/user/1000".as_ref()), &c),
            Root::Xdg { path: "/run/user/1000/boxsock".into() }
        );
        for (xdg, why) in
            [(None, "unset"), (Some(""), "unset"), (Some("run/user"), "not an absolute path")]
        {
            match Root::choose(xdg.map(AsRef::as_ref), &c) {
                Root::Fallback { path, reason } => {
                    assert_eq!(path, Path::new("/tmp/boxsock-x-1000"));
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("{xdg:?}: {other:?}"),
            }
        }
        let long = format!("/{}", "r".repeat(40));
        match Root::choose(Some(long.as_ref()), &c) {
            Root::Fallback { reason, .. } => {
                assert!(reason.contains("too long") && reason.contains("108"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn home_hash_is_fixed_length_plain_and_distinct() {
        let a = home_hash(Path::new("/srv/a"));
        assert_eq!(a.len(), HASH_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)), "{a}");
        assert_eq!(a, home_hash(Path::new("/srv/a")));
        assert_ne!(a, home_hash(Path::new("/srv/b")));
        assert_eq!(home_hash(Path::new(&format!("/{}", "h".repeat(4000)))).len(), HASH_LEN);
    }
}
