//! The per-home secret: 32 random bytes in `<home>/abstract-socket.key`, mode 0600,
//! owned by the effective uid, created once and race-free.
//!
//! Creation goes through the core's atomic writer with `no_replace` (a private 0600
//! temporary, synced, published with `link(2)`, which fails with `EEXIST` instead of
//! replacing an existing secret). Readers therefore see either no file or a complete
//! one, and of concurrent creators exactly one wins; the losers read the winner's
//! secret.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use boxsock_core::BindingError;
use boxsock_core::atomic::AtomicWrite;
use rand::RngCore;

use crate::name::SECRET_LEN;

/// File name of the secret inside the home.
pub const SECRET_FILE: &str = "abstract-socket.key";

/// A loaded secret. Its `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; SECRET_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Load the secret at `path`, creating it if it does not exist. `owner` is the uid the
/// file must belong to (the effective uid). A missing file is created with `restore`
/// if given (the secret this process already uses, so its names stay valid), else with
/// fresh random bytes.
pub fn load_or_create(
    path: &Path,
    owner: u32,
    restore: Option<&Secret>,
) -> Result<Secret, BindingError> {
    // Two rounds suffice: if our link loses, the winner's file exists and is complete.
    for _ in 0..3 {
        match load(path, owner) {
            Ok(s) => return Ok(s),
            Err(LoadError::Missing) => {}
            Err(LoadError::Other(e)) => return Err(e),
        }
        if let Some(s) = create(path, restore)? {
            if restore.is_some() {
                tracing::warn!(path = %boxsock_core::echo::path(path), "the abstract-socket secret had been deleted; restored it from memory");
            } else {
                tracing::debug!(path = %boxsock_core::echo::path(path), "created abstract-socket secret");
            }
            return Ok(s);
        }
    }
    Err(BindingError::io(
        "create secret",
        path,
        io::Error::other(
            "the secret file kept appearing and disappearing; is another process deleting it?",
        ),
    ))
}

/// Load the secret at `path` if it exists (checked as by [`load_or_create`]); never
/// creates it.
pub fn load_existing(path: &Path, owner: u32) -> Result<Option<Secret>, BindingError> {
    match load(path, owner) {
        Ok(s) => Ok(Some(s)),
        Err(LoadError::Missing) => Ok(None),
        Err(LoadError::Other(e)) => Err(e),
    }
}

/// Fresh random bytes for a secret that is never written (see
/// `StrategyConfig::read_only`).
pub fn throwaway() -> Secret {
    let mut key = [0u8; SECRET_LEN];
    rand::rng().fill_bytes(&mut key);
    Secret(key)
}

enum LoadError {
    Missing,
    Other(BindingError),
}

fn insecure(path: &Path, reason: String) -> LoadError {
    LoadError::Other(BindingError::Insecure { path: path.to_path_buf(), reason })
}

fn load(path: &Path, owner: u32) -> Result<Secret, LoadError> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(insecure(
                path,
                "it is a symlink; the secret must be a regular file".into(),
            ));
        }
        Err(e) => return Err(LoadError::Other(BindingError::io("open secret", path, e))),
    };
    let m = f.metadata().map_err(|e| LoadError::Other(BindingError::io("stat secret", path, e)))?;
    if !m.file_type().is_file() {
        return Err(insecure(path, "it is not a regular file".into()));
    }
    if m.uid() != owner {
        return Err(insecure(path, format!("it is owned by uid {}, not by uid {owner}", m.uid())));
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(insecure(
            path,
            format!(
                "its mode is {mode:04o}, which lets group or others read or change it; it must be 0600"
            ),
        ));
    }
    if m.len() != SECRET_LEN as u64 {
        return Err(insecure(path, format!("it is {} bytes long, not {SECRET_LEN}", m.len())));
    }
    let mut key = [0u8; SECRET_LEN];
    f.read_exact(&mut key)
        .map_err(|e| LoadError::Other(BindingError::io("read secret", path, e)))?;
    Ok(Secret(key))
}

/// Create the secret; `Ok(None)` if another process published one first.
fn create(path: &Path, restore: Option<&Secret>) -> Result<Option<Secret>, BindingError> {
    let key = match restore {
        Some(s) => s.0,
        None => {
            let mut key = [0u8; SECRET_LEN];
            rand::rng().fill_bytes(&mut key);
            key
        }
    };
    // Published only if no other process got there first; synced, file and directory.
    match AtomicWrite::new(0o600).no_replace().write(path, &key) {
        Ok(_) => Ok(Some(Secret(key))),
        Err(e) if e.source.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(BindingError::io(e.op, path, e.source)),
    }
}
