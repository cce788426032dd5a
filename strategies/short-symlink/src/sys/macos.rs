//! macOS: `renameatx_np(RENAME_EXCL)`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Rename `old` to `new` inside `dir`, failing with `EEXIST` instead of replacing an
/// existing `new`.
pub(crate) fn rename_noreplace(dir: BorrowedFd<'_>, old: &str, new: &str) -> nix::Result<()> {
    let old = CString::new(old).map_err(|_| Errno::EINVAL)?;
    let new = CString::new(new).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `dir` is a live descriptor borrowed for the call; `old` and `new` are
    // NUL-terminated strings that outlive it; the call writes no memory of ours.
    let rc = unsafe { libc::renameatx_np(dir.as_raw_fd(), old.as_ptr(), dir.as_raw_fd(), new.as_ptr(), libc::RENAME_EXCL) };
    Errno::result(rc).map(drop)
}
