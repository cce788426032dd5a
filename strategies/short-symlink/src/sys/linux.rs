//! Linux: `renameat2(RENAME_NOREPLACE)`.

use std::os::fd::BorrowedFd;

use nix::fcntl::{RenameFlags, renameat2};

/// Rename `old` to `new` inside `dir`, failing with `EEXIST` instead of replacing an
/// existing `new`.
pub(crate) fn rename_noreplace(dir: BorrowedFd<'_>, old: &str, new: &str) -> nix::Result<()> {
    renameat2(dir, old, dir, new, RenameFlags::RENAME_NOREPLACE)
}
