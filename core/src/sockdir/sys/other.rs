//! Other platforms (macOS): no `/proc/self/fd`. The directory is still opened and
//! verified, but sockets are addressed by its displayed path, so the check holds only
//! while nobody else can change that path (decision 0001).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

pub(crate) fn path_flag() -> OFlag {
    OFlag::O_RDONLY
}

pub(crate) fn through_fd(_fd: RawFd, shown: &Path, name: &str) -> PathBuf {
    shown.join(name)
}
