//! Linux: the shim's jail is Landlock, the guest kernel is `libkrunfw.so.5`, and a
//! listening socket is seen in `/proc/net/unix`.

use std::path::Path;

use crate::jail::{JailError, JailSpec};

/// The library libkrun 1.19 loads at `krun_start_enter`.
pub(crate) const LIBKRUNFW: &str = "libkrunfw.so.5";

/// Apply `spec` to the calling process (irreversible): Landlock.
pub(crate) fn apply_jail(spec: &JailSpec) -> Result<(), JailError> {
    crate::jail::landlock_jail::apply(spec)
}

/// Whether a socket bound at `path` is listening, read from `/proc/net/unix` (no side
/// effect on the listener); a connect probe when that table cannot be read.
pub(crate) fn is_listening(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    let Ok(table) = std::fs::read("/proc/net/unix") else {
        return std::os::unix::net::UnixStream::connect(path).is_ok();
    };
    let want = path.as_os_str().as_bytes();
    table.split(|b| *b == b'\n').skip(1).any(|line| {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').filter(|f| !f.is_empty()).collect();
        let flags = std::str::from_utf8(fields.get(3).copied().unwrap_or_default())
            .ok()
            .and_then(|f| u32::from_str_radix(f, 16).ok());
        // The path is the last field and may contain spaces.
        fields.len() >= 8
            && line.ends_with(want)
            && line.len() > want.len()
            && line[line.len() - want.len() - 1] == b' '
            && flags.is_some_and(|f| f & SO_ACCEPTCON != 0)
    })
}
