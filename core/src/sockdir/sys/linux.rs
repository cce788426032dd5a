//! Linux: `O_PATH` descriptors, addressed through `/proc/self/fd/<n>/<name>`.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// `O_PATH`: the descriptor only anchors lookups.
pub(crate) fn path_flag() -> OFlag {
    OFlag::O_PATH
}

/// `/proc/self/fd/<fd>/<name>`: resolved by the kernel through the descriptor itself,
/// so no directory anyone else controls is looked up. At most 14 + 10 + 1 + name bytes.
pub(crate) fn through_fd(fd: RawFd, _shown: &Path, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}/{name}"))
}
