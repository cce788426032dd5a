//! A squatted per-user directory, and the home's recorded fallback.
//!
//! `<base>/<prefix>-<uid>` has a predictable name in a shared directory. When another
//! user holds it (a directory, file or symlink of theirs), the strategy refuses it
//! loudly — and would refuse forever. The runtime then falls back to a place the
//! squatter can neither predict nor control: a fresh 0700 directory
//! `<base>/<prefix>.<10 random base62>` ([`boxsock_core::binding::fallback`]), with a warning
//! naming the squatter's uid. The choice is recorded in the home (`<home>/binding-dir`,
//! 0600, created once with `link`, so concurrent processes agree on one), every process
//! of the home builds its strategies with it, and `boxsock doctor` shows it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use boxsock_core::binding::{StrategyConfig, fallback};
use boxsock_core::error::BindingError;
use boxsock_core::layout::BoxLayout;

/// File name of the record in the home.
pub const RECORD: &str = "binding-dir";

/// The home's recorded fallback for `config`, if any and if it still has the shape of
/// one (directly in the configured base, `<prefix>.<random>`); anything else in the
/// record is ignored with a warning.
pub fn recorded(layout: &BoxLayout, config: &StrategyConfig) -> Option<PathBuf> {
    let path = layout.home().join(RECORD);
    let text = std::fs::read_to_string(&path).ok()?;
    let dir = PathBuf::from(text.trim_end_matches('\n'));
    if fallback::is_fallback_of(&dir, config) {
        Some(dir)
    } else {
        tracing::warn!(record = %boxsock_core::echo::path(&path), found = %boxsock_core::echo::path(&dir), base = %boxsock_core::echo::path(&config.base_dir), "ignoring a binding-dir record that is not a fallback of this base and prefix");
        None
    }
}

/// The uid that holds `config`'s default per-user directory, when it is not `config.uid`
/// (a squatter). `None` when it is ours, missing, or unreadable.
pub fn squatter(config: &StrategyConfig) -> Option<u32> {
    let m = std::fs::symlink_metadata(config.default_per_uid_dir()).ok()?;
    (m.uid() != config.uid).then_some(m.uid())
}

/// Create a fallback and record it in the home; if another process recorded one first,
/// use theirs (and remove ours).
pub fn fall_back(layout: &BoxLayout, config: &StrategyConfig, squatter_uid: u32) -> Result<PathBuf, BindingError> {
    let made = fallback::create(config)?;
    let record = layout.home().join(RECORD);
    let tmp = layout.home().join(format!(".{RECORD}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{}\n", made.display()).as_bytes()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&made);
        return Err(BindingError::io("write", &record, e));
    }
    let linked = std::fs::hard_link(&tmp, &record);
    let _ = std::fs::remove_file(&tmp);
    let chosen = match linked {
        Ok(()) => made,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_dir(&made);
            recorded(layout, config).ok_or_else(|| BindingError::Invalid {
                what: "binding directory record".into(),
                reason: format!("{} exists but does not name a fallback directory in {}", boxsock_core::echo::path(&record), boxsock_core::echo::path(&config.base_dir)),
            })?
        }
        Err(e) => {
            let _ = std::fs::remove_dir(&made);
            return Err(BindingError::io("record the fallback in", &record, e));
        }
    };
    tracing::warn!(
        squatted = %boxsock_core::echo::path(&config.default_per_uid_dir()),
        squatter_uid,
        fallback = %boxsock_core::echo::path(&chosen),
        record = %boxsock_core::echo::path(&record),
        "the per-user binding directory is held by another user (uid {squatter_uid}); using an unpredictable private directory instead"
    );
    Ok(chosen)
}

/// Whether `e` is the strategy refusing `config`'s default per-user directory.
pub fn is_squat_refusal(e: &BindingError, config: &StrategyConfig) -> bool {
    matches!(e, BindingError::Insecure { path, .. } if path == &config.default_per_uid_dir())
}

/// The path of the record (for `doctor`).
pub fn record_path(home: &Path) -> PathBuf {
    home.join(RECORD)
}
