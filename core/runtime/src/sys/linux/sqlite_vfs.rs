//! The SQLite VFS `boxsock-fd` (decision 0004): the default `unix` VFS, except that a
//! name under `/proc/self/fd/` is kept as SQLite's full path name. The `unix` VFS
//! would resolve that magic link back to the long path and fail past its 512-byte
//! limit; kept, the store opens however deep the home.

use std::ffi::{CStr, OsStr, c_char, c_int};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{Connection, OpenFlags, ffi};

/// Open the SQLite database `name` inside the directory `dir` as
/// `/proc/self/fd/<dir>/<name>`, through this VFS (`_path`, the store's full path, is
/// for platforms without such names). The outer error: the VFS could not be
/// registered; the inner one: SQLite's open.
pub(crate) fn open_sqlite_in(
    dir: &OwnedFd,
    name: &OsStr,
    _path: &Path,
    flags: OpenFlags,
) -> std::io::Result<rusqlite::Result<Connection>> {
    register().map_err(std::io::Error::other)?;
    let short = Path::new(std::str::from_utf8(PREFIX).unwrap_or("/proc/self/fd/"))
        .join(dir.as_raw_fd().to_string())
        .join(name);
    Ok(Connection::open_with_flags_and_vfs(&short, flags, NAME))
}

/// The registered name.
const NAME: &CStr = c"boxsock-fd";
/// Names kept as they are; everything else goes to the default VFS.
const PREFIX: &[u8] = b"/proc/self/fd/";

type FullPathname =
    unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int, *mut c_char) -> c_int;
static BASE_FULL_PATHNAME: OnceLock<FullPathname> = OnceLock::new();
static REGISTERED: OnceLock<Result<(), VfsError>> = OnceLock::new();

/// Why the `boxsock-fd` VFS could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum VfsError {
    /// `sqlite3_vfs_find(NULL)` found no default VFS.
    #[error("SQLite has no default VFS")]
    NoDefault,
    /// The default VFS lacks the method this one wraps.
    #[error("the default VFS has no xFullPathname")]
    NoFullPathname,
    /// `sqlite3_vfs_register` failed.
    #[error("sqlite3_vfs_register failed with code {code}")]
    Register {
        /// SQLite's result code.
        code: c_int,
    },
}

unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    z_path: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated file name.
    let path = unsafe { CStr::from_ptr(z_path) }.to_bytes_with_nul();
    if path.starts_with(PREFIX) {
        if path.len() > usize::try_from(n_out).unwrap_or(0) {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: z_out holds n_out bytes (the xFullPathname contract) and the name,
        // NUL included, is no longer than that; the buffers do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(z_path, z_out, path.len()) };
        return ffi::SQLITE_OK;
    }
    match BASE_FULL_PATHNAME.get() {
        // SAFETY: the default VFS's own method, called with its own contract.
        Some(f) => unsafe { f(vfs, z_path, n_out, z_out) },
        None => ffi::SQLITE_ERROR,
    }
}

/// Register the VFS once per process (idempotent).
fn register() -> Result<(), VfsError> {
    REGISTERED
        .get_or_init(|| {
            // SAFETY: a null name asks for the default VFS; sqlite3_vfs_find
            // initialises SQLite first. A registered VFS is never freed.
            let base = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
            if base.is_null() {
                return Err(VfsError::NoDefault);
            }
            // SAFETY: `base` points to a live, registered sqlite3_vfs (plain data and
            // function pointers); we copy it and never write through `base`.
            let mut vfs: ffi::sqlite3_vfs = unsafe { std::ptr::read(base) };
            let Some(f) = vfs.xFullPathname else { return Err(VfsError::NoFullPathname) };
            let _ = BASE_FULL_PATHNAME.set(f);
            // Everything else (pAppData included, which the unix VFS's xOpen uses)
            // stays the default VFS's.
            vfs.zName = NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xFullPathname = Some(full_pathname);
            let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
            // SAFETY: `vfs` lives for the rest of the process, as SQLite requires;
            // makeDflt = 0 leaves the default VFS the default.
            let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
            if rc == ffi::SQLITE_OK { Ok(()) } else { Err(VfsError::Register { code: rc }) }
        })
        .clone()
}
