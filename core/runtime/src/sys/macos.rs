//! macOS: not implemented. Never compiled in CI (no darwin target is built anywhere;
//! docs/platforms.md). A macOS process handle needs a kqueue `EVFILT_PROC` watch
//! instead of a pidfd, and a process start time from `proc_pidinfo` instead of
//! `/proc/<pid>/stat`; until then a macOS build stops here, in one named place.

compile_error!(
    "boxsock-runtime: process handles (pidfd_open, pidfd_send_signal) and process start \
     times (/proc/<pid>/stat) are not implemented for macOS yet; see docs/platforms.md"
);

/// Open the store's SQLite database by its full path `path`: macOS has no traversable
/// `/dev/fd/<n>/` directories, so the store's 512-byte path limit remains there
/// (decision 0004).
pub(crate) fn open_sqlite_in(
    _dir: &std::os::fd::OwnedFd,
    _name: &std::ffi::OsStr,
    path: &std::path::Path,
    flags: rusqlite::OpenFlags,
) -> std::io::Result<rusqlite::Result<rusqlite::Connection>> {
    Ok(rusqlite::Connection::open_with_flags(path, flags))
}
