//! What `doctor` shows of squatted shared directories and the home's fallbacks.
//!
//! The mechanism is the core's ([`boxsock_core::fallback`]): a strategy whose
//! predictable directory in a shared base (`<base>/<prefix>-<uid>`) is held by another
//! user uses a fresh, unpredictable private directory recorded in the home
//! (`<home>/binding-dir`, `binding-dir.<stem>`), and replaces a recorded one that went
//! missing or was squatted in turn. This module only reads: the records, their notes
//! (why each was chosen or replaced) and what stands at each name now.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use boxsock_core::binding::StrategyConfig;
use boxsock_core::fallback::{self, Found};
use boxsock_core::layout::BoxLayout;

/// File name of the record of the default per-user directory in the home.
pub const RECORD: &str = fallback::RECORD;

/// The home's recorded fallback of `config`'s default per-user directory, if any and if
/// it has the shape of one (directly in the configured base, `<prefix>.<random>`).
pub fn recorded(layout: &BoxLayout, config: &StrategyConfig) -> Option<PathBuf> {
    let shared = fallback::SharedDir::new(config, &config.base_dir, &config.prefix);
    fallback::read_record(layout.home(), shared.record_name())
        .map(|r| r.dir)
        .filter(|d| shared.is_fallback(d))
}

/// The uid that holds `config`'s default per-user directory, when it is not `config.uid`
/// (a squatter). `None` when it is ours, missing, or unreadable.
pub fn squatter(config: &StrategyConfig) -> Option<u32> {
    let m = std::fs::symlink_metadata(config.default_per_uid_dir()).ok()?;
    (m.uid() != config.uid).then_some(m.uid())
}

/// One fallback record of a home, as `doctor` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FallbackReport {
    /// The record's file.
    pub record: String,
    /// The directory it names.
    pub dir: String,
    /// What stands at that name now: `in use`, or why the next writing command
    /// replaces it.
    pub state: String,
    /// Why it was chosen (and what it replaced), the newest first.
    pub notes: Vec<String>,
}

/// Every fallback record of `home`, with what stands at each directory now for `uid`.
pub fn reports(home: &Path, uid: u32) -> Vec<FallbackReport> {
    fallback::records(home)
        .into_iter()
        .map(|r| {
            let state = match fallback::look(&r.dir, uid) {
                Found::Usable => "in use".to_owned(),
                Found::Missing => "missing (removed by a cleaner or a reboot?): the next writing command replaces it".to_owned(),
                Found::Refused(why) => format!("refused: {why}; the next writing command replaces it"),
            };
            FallbackReport {
                record: boxsock_core::echo::path(&r.file).to_string(),
                dir: boxsock_core::echo::path(&r.dir).to_string(),
                state,
                notes: r.notes,
            }
        })
        .collect()
}

/// The path of the record (for `doctor`).
pub fn record_path(home: &Path) -> PathBuf {
    home.join(RECORD)
}
