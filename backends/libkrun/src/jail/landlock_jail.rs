//! Landlock for the shim (Linux). Handles every filesystem right of ABI 7 and scopes
//! abstract Unix sockets and signals to the sandbox.
//!
//! Grants: read+execute beneath `read_only`; everything beneath `read_write` (the box
//! directory); read, write and ioctl on `devices`; for each `Sockets` policy path, the
//! rights to make, remove and resolve sockets beneath its grant directory (the target of
//! a symlink leaf, see [`super::grant_dir`]), and the same on the inherited socket
//! directory descriptor (`socket_dir_fd`). Connecting to a pathname socket is not a
//! Landlock filesystem right at ABI 7, so binding and dialling through the alias both
//! work with these grants.

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::{JailAccess, JailError, JailSpec, grant_dir};

const ABI_USED: ABI = ABI::V7;

fn ll(e: impl std::fmt::Display) -> JailError {
    JailError::Landlock(e.to_string())
}

fn open(path: &std::path::Path, what: &'static str) -> Result<PathFd, JailError> {
    PathFd::new(path).map_err(|e| JailError::Open {
        path: path.to_path_buf(),
        what,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Whether the running kernel supports Landlock with abstract-socket scoping (ABI ≥ 6).
pub fn supported() -> bool {
    // SAFETY: landlock_create_ruleset with a NULL attr, size 0 and the VERSION flag only
    // returns the ABI version; it creates nothing and touches no memory.
    let v = unsafe {
        libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32 /* LANDLOCK_CREATE_RULESET_VERSION */)
    };
    v >= 6
}

/// Apply the jail to the calling process. Irreversible; call it in the shim only.
pub fn apply(spec: &JailSpec) -> Result<(), JailError> {
    let all = AccessFs::from_all(ABI_USED);
    let read: BitFlags<AccessFs> = AccessFs::from_read(ABI_USED);
    let sockets: BitFlags<AccessFs> = AccessFs::MakeSock | AccessFs::RemoveFile | AccessFs::ReadDir;
    let device: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;

    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(ll)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(ll)?
        .create()
        .map_err(ll)?;

    for p in &spec.read_only {
        if p.exists() {
            rs = rs.add_rule(PathBeneath::new(open(p, "read-only")?, read)).map_err(ll)?;
        }
    }
    for p in &spec.read_write {
        rs = rs.add_rule(PathBeneath::new(open(p, "read-write")?, all)).map_err(ll)?;
    }
    for p in &spec.devices {
        if p.exists() {
            rs = rs.add_rule(PathBeneath::new(open(p, "device")?, device)).map_err(ll)?;
        }
    }
    for p in &spec.sockets {
        let dir = grant_dir(p);
        let access = match p.access {
            JailAccess::Sockets => sockets,
            JailAccess::Read => read,
        };
        rs = rs.add_rule(PathBeneath::new(open(dir, "sockets")?, access)).map_err(ll)?;
    }
    if let Some(fd) = spec.socket_dir_fd {
        // SAFETY: the shim inherited this descriptor from the backend and keeps it open
        // for its whole life; it is only borrowed for the call.
        let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        rs = rs.add_rule(PathBeneath::new(dir, sockets)).map_err(ll)?;
    }
    let status = rs.restrict_self().map_err(ll)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced => {
            tracing::warn!("landlock is only partially enforced by this kernel (ABI below 7)");
            Ok(())
        }
        RulesetStatus::NotEnforced => Err(JailError::NotEnforced { status: "not enforced".into() }),
    }
}
