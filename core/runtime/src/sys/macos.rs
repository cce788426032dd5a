//! macOS: not implemented. Never compiled in CI (no darwin target is built anywhere;
//! docs/platforms.md). A macOS process handle needs a kqueue `EVFILT_PROC` watch
//! instead of a pidfd, and a process start time from `proc_pidinfo` instead of
//! `/proc/<pid>/stat`; until then a macOS build stops here, in one named place.

compile_error!(
    "boxsock-runtime: process handles (pidfd_open, pidfd_send_signal) and process start \
     times (/proc/<pid>/stat) are not implemented for macOS yet; see docs/platforms.md"
);
