//! macOS: not implemented. Never compiled in CI (no darwin target is built anywhere;
//! docs/platforms.md).
//!
//! What is missing: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, on which
//! every unpacked entry's placement rests; macOS would need a component-by-component
//! walk with `O_NOFOLLOW | O_DIRECTORY` (and `O_SYMLINK` checks) instead. Until this is
//! done, a macOS build stops here, in one named place.

compile_error!(
    "boxsock-image: unpacking layers beneath a held directory without following \
     symlinks (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) is not implemented for \
     macOS yet; see docs/platforms.md"
);
