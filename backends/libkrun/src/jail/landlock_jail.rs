//! Landlock for the shim (Linux). Handles every filesystem right of ABI 7 and scopes
//! abstract Unix sockets and signals to the sandbox.
//!
//! Grants: read+execute beneath `read_only`; everything beneath `read_write` (the
//! box's disk image, with a file's rights only; the box directory for a box made
//! before bases); read, write and ioctl on `devices`; for each `Sockets` policy path, the
//! rights to make, remove and resolve sockets beneath its grant directory (the target of
//! a symlink leaf, see [`super::grant_dir`]), and the same on the inherited socket
//! directory descriptor (`socket_dir_fd`). Connecting to a pathname socket is not a
//! Landlock filesystem right at ABI 7, so binding and dialling through the alias both
//! work with these grants.
//!
//! **Fail closed on what the jail relies on** ([`required_fs`]): the ABI 1 rights
//! (execute, read, write, make and remove anything). A kernel without Landlock is
//! refused ([`JailError::Unenforceable`], naming the rights it lacks), and the landlock
//! crate is told the same (`CompatLevel::HardRequirement`).
//! **Warn on the optional rest** ([`optional_fs`], [`optional_scopes`]): `Refer` (ABI
//! 2; without it the kernel refuses every cross-directory rename or link, which is
//! stricter), `Truncate` (ABI 3, Linux 6.2; without it `truncate(2)` by path reaches
//! files outside the grants that the user may write — opening them for writing is still
//! denied), `IoctlDev` (ABI 5; without it ioctls on the devices the jail lets the shim
//! open are not filtered) and the scopes of abstract Unix sockets and signals (ABI 6).
//! `Truncate` is optional on purpose: Debian 12's Linux 6.1 (ABI 2), the kernel the
//! real-VM tier boots, would otherwise refuse every jailed box.
//! [`kernel_plan`] is the decision as a pure function of the kernel's ABI.

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use boxsock_core::PolicyAccess;

use super::{JailError, JailSpec, grant_dir};

const ABI_USED: ABI = ABI::V7;

/// Filesystem rights the jail relies on: a kernel that cannot enforce every one of them
/// is refused.
pub fn required_fs() -> BitFlags<AccessFs> {
    AccessFs::from_all(ABI::V1)
}

/// Filesystem rights handled when the kernel can, with a warning when it cannot.
pub fn optional_fs() -> BitFlags<AccessFs> {
    AccessFs::from_all(ABI_USED) & !required_fs()
}

/// Scopes applied when the kernel can (ABI 6), with a warning when it cannot.
pub fn optional_scopes() -> BitFlags<Scope> {
    Scope::AbstractUnixSocket | Scope::Signal
}

/// What the jail does on a kernel of Landlock ABI `abi` (0: no Landlock): `Err` naming
/// the required rights it cannot enforce, or the sentences to warn with (empty on ABI
/// 6 and later).
pub fn kernel_plan(abi: i32) -> Result<Vec<String>, JailError> {
    let supported = abi_of(abi).map(AccessFs::from_all).unwrap_or(BitFlags::EMPTY);
    let missing = required_fs() & !supported;
    if !missing.is_empty() {
        let missing: Vec<String> = missing.iter().map(|r| format!("{r:?}")).collect();
        return Err(JailError::Unenforceable { abi, missing: missing.join(", ") });
    }
    let mut warnings = Vec::new();
    let optional_missing = optional_fs() & !supported;
    if !optional_missing.is_empty() {
        let names: Vec<String> = optional_missing.iter().map(|r| format!("{r:?}")).collect();
        warnings.push(format!(
            "landlock ABI {abi} cannot handle the optional rights {}",
            names.join(", ")
        ));
    }
    if abi < 6 {
        warnings.push(format!(
            "landlock ABI {abi} cannot scope abstract Unix sockets and signals (needs ABI 6)"
        ));
    }
    Ok(warnings)
}

fn abi_of(v: i32) -> Option<ABI> {
    Some(match v {
        i32::MIN..=0 => return None,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        _ => ABI_USED,
    })
}

/// The running kernel's Landlock ABI version; 0 when Landlock is missing or disabled.
pub fn kernel_abi() -> i32 {
    // SAFETY: landlock_create_ruleset with a NULL attr, size 0 and the VERSION flag only
    // returns the ABI version; it creates nothing and touches no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, /* LANDLOCK_CREATE_RULESET_VERSION */
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

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
    kernel_abi() >= 6
}

/// Apply the jail to the calling process. Irreversible; call it in the shim only.
pub fn apply(spec: &JailSpec) -> Result<(), JailError> {
    let all = AccessFs::from_all(ABI_USED);
    let read: BitFlags<AccessFs> = AccessFs::from_read(ABI_USED);
    let sockets: BitFlags<AccessFs> = AccessFs::MakeSock | AccessFs::RemoveFile | AccessFs::ReadDir;
    let device: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;

    let abi = kernel_abi();
    let warnings = kernel_plan(abi)?;
    for w in &warnings {
        tracing::warn!(abi, "{w}; the jail's required filesystem rights are enforced");
    }
    // The crate checks the same per right: required ones are a hard requirement,
    // optional rights and scopes best effort.
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(required_fs())
        .map_err(ll)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(optional_fs())
        .map_err(ll)?
        .scope(optional_scopes())
        .map_err(ll)?
        .create()
        .map_err(ll)?;

    for p in &spec.read_only {
        if p.exists() {
            rs = rs.add_rule(PathBeneath::new(open(p, "read-only")?, read)).map_err(ll)?;
        }
    }
    for p in &spec.read_write {
        // A file (the box's disk image) takes only the rights that apply to files.
        let access = if p.is_file() { AccessFs::from_file(ABI_USED) } else { all };
        rs = rs.add_rule(PathBeneath::new(open(p, "read-write")?, access)).map_err(ll)?;
    }
    for p in &spec.devices {
        if p.exists() {
            rs = rs.add_rule(PathBeneath::new(open(p, "device")?, device)).map_err(ll)?;
        }
    }
    for p in &spec.sockets {
        let dir = grant_dir(p);
        let access = match p.access {
            PolicyAccess::Sockets => sockets,
            PolicyAccess::Read => read,
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
        // Only optional rights or scopes can be missing here (required ones are a hard
        // requirement above); `kernel_plan` already warned which.
        RulesetStatus::PartiallyEnforced => {
            tracing::debug!(abi, "landlock partially enforced: optional rights or scopes only");
            Ok(())
        }
        RulesetStatus::NotEnforced => Err(JailError::NotEnforced { status: "not enforced".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_right_is_either_required_or_optional() {
        assert_eq!(required_fs() | optional_fs(), AccessFs::from_all(ABI_USED));
        assert!((required_fs() & optional_fs()).is_empty());
        // What the jail relies on: writing, making and removing anything.
        for r in [
            AccessFs::WriteFile,
            AccessFs::MakeReg,
            AccessFs::MakeSock,
            AccessFs::RemoveFile,
            AccessFs::Execute,
        ] {
            assert!(required_fs().contains(r), "{r:?} must be required");
        }
        for r in [AccessFs::Refer, AccessFs::Truncate, AccessFs::IoctlDev] {
            assert!(optional_fs().contains(r), "{r:?} must be optional");
        }
    }

    #[test]
    fn kernels_without_landlock_are_refused_naming_what_they_lack_and_optional_gaps_warn() {
        for abi in [-1, 0] {
            let e = kernel_plan(abi).unwrap_err();
            assert!(matches!(&e, JailError::Unenforceable { abi: a, .. } if *a == abi), "{e}");
            assert!(
                e.to_string().contains("WriteFile")
                    && e.to_string().contains(&format!("ABI {abi}")),
                "{e}"
            );
        }
        // Debian 12's Linux 6.1 is ABI 2: jailed, warned about Truncate (and Refer on 1).
        let w = kernel_plan(1).unwrap();
        assert!(
            w[0].contains("Refer") && w[0].contains("Truncate") && w[0].contains("IoctlDev"),
            "{w:?}"
        );
        let w = kernel_plan(2).unwrap();
        assert!(
            w.len() == 2
                && w[0].contains("Truncate")
                && !w[0].contains("Refer")
                && w[1].contains("abstract"),
            "{w:?}"
        );
        let w = kernel_plan(3).unwrap();
        assert!(w.len() == 2 && w[0].contains("IoctlDev") && w[1].contains("abstract"), "{w:?}");
        assert_eq!(kernel_plan(4).unwrap().len(), 2);
        let w = kernel_plan(5).unwrap();
        assert!(w.len() == 1 && w[0].contains("abstract"), "{w:?}");
        for abi in [6, 7, 8, 10] {
            assert!(kernel_plan(abi).unwrap().is_empty(), "ABI {abi}");
        }
    }

    #[test]
    fn the_crate_accepts_the_hard_requirement_on_this_kernel_when_it_has_landlock() {
        let abi = kernel_abi();
        let built = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(required_fs());
        if abi >= 1 {
            built.expect("this kernel handles every required right");
        } else {
            eprintln!("note: this kernel has landlock ABI {abi}: the hard requirement is refused");
            assert!(built.is_err() || kernel_plan(abi).is_err());
        }
    }
}
