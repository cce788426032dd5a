//! What `boxsock doctor` shows for the sandbox backend: each kernel feature a box is
//! made of, checked without side effects (files under /proc and /sys, one Landlock
//! version query), with what was found.

use std::fs;
use std::path::Path;

use boxsock_core::backend::Probe;

use crate::cgroup::Hierarchy;

/// The namespaces a box is made of (issue 22), by their /proc/self/ns names.
const NAMESPACES: [&str; 6] = ["mnt", "pid", "ipc", "uts", "cgroup", "net"];

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The box's namespaces: each must exist in this kernel.
pub fn namespaces() -> Probe {
    let missing: Vec<&str> = NAMESPACES
        .iter()
        .copied()
        .filter(|n| !Path::new("/proc/self/ns").join(n).exists())
        .collect();
    if missing.is_empty() {
        Probe::new("namespaces", true, format!("{} (each in /proc/self/ns)", NAMESPACES.join(", ")))
    } else {
        Probe::new(
            "namespaces",
            false,
            format!("this kernel lacks the {} namespace(s) a box needs", missing.join(", ")),
        )
    }
}

/// Whether a user who is not root may make user namespaces here (what a rootless box
/// is made in), from the kernel's switches: `Err` says which one refuses.
pub fn unprivileged_userns() -> Result<String, String> {
    let max =
        read_trimmed("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse::<u64>().ok());
    match max {
        None => return Err("this kernel has no user namespaces".into()),
        Some(0) => return Err("user namespaces are disabled (user.max_user_namespaces = 0)".into()),
        Some(_) => {}
    }
    // Debian's switch; absent on kernels without the patch (then allowed).
    if read_trimmed("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err("unprivileged users may not make user namespaces \
                    (kernel.unprivileged_userns_clone = 0)"
            .into());
    }
    // Ubuntu's AppArmor switch: set, an unconfined program gets a namespace without
    // capabilities in it.
    if read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
        == Some("1")
    {
        return Err("AppArmor restricts unprivileged user namespaces \
                    (kernel.apparmor_restrict_unprivileged_userns = 1)"
            .into());
    }
    Ok(format!("up to {}; unprivileged users may make them", max.unwrap_or(0)))
}

/// User namespaces: what boxes of a user who is not root are made in (rootless mode).
pub fn user_namespaces() -> Probe {
    let root = nix::unistd::geteuid().is_root();
    match unprivileged_userns() {
        Ok(found) => Probe::new(
            "user namespaces",
            true,
            if root {
                format!("{found} (boxes of other users run rootless)")
            } else {
                format!("{found}: this user's boxes run rootless, the user mapped to root")
            },
        ),
        // As root, boxes need no user namespace: only other users' boxes are refused.
        Err(why) if root => Probe::new(
            "user namespaces",
            true,
            format!("{why}: only root can run sandbox boxes here"),
        ),
        Err(why) => Probe::new("user namespaces", false, format!("{why}: no rootless boxes")),
    }
}

/// cgroups: which hierarchy limits would use, and whether this user may write it.
pub fn cgroups() -> Probe {
    let h = match Hierarchy::detect() {
        Ok(h) => h,
        Err(e) => {
            return Probe::new(
                "cgroups",
                false,
                format!("{e}: --cpus and --memory are refused, boxes run without a pids limit"),
            );
        }
    };
    let found = match &h {
        Hierarchy::V2(m) => format!("v2 at {}", m.display()),
        Hierarchy::V1(d) => format!(
            "v1 ({})",
            d.iter().map(|(c, p)| format!("{c} at {}", p.display())).collect::<Vec<_>>().join(", ")
        ),
    };
    match h.check_writable() {
        Ok(()) => {
            Probe::new("cgroups", true, format!("{found}; --cpus, --memory and a pids limit apply"))
        }
        Err(e) => Probe::new("cgroups", false, format!("{found}, but {e}: limits are refused")),
    }
}

/// seccomp filters: the kernel's support, and the box's profile compiles.
pub fn seccomp() -> Probe {
    let actions = read_trimmed("/proc/sys/kernel/seccomp/actions_avail");
    let Some(actions) = actions else {
        return Probe::new("seccomp", false, "this kernel has no seccomp filters");
    };
    let needed = ["errno", "kill_process"];
    if let Some(m) = needed.iter().find(|a| !actions.split_whitespace().any(|x| x == **a)) {
        return Probe::new("seccomp", false, format!("the kernel lacks the {m} action"));
    }
    match crate::seccomp::programs() {
        Ok(_) => Probe::new(
            "seccomp",
            true,
            format!("docker's default profile compiles (kernel actions: {actions})"),
        ),
        Err(e) => Probe::new("seccomp", false, format!("the box's profile does not compile: {e}")),
    }
}

/// Landlock: the kernel's ABI version (the box asks for up to ABI 7; an older one is
/// enforced partially, and the box's log says so).
pub fn landlock() -> Probe {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: landlock_create_ruleset(2) with a null attr, size 0 and the VERSION flag
    // only returns the ABI version (or -1); it creates nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v >= 1 {
        let how = if v >= 7 { "fully" } else { "partially (the box asks for ABI 7)" };
        Probe::new("landlock", true, format!("ABI {v}: enforced {how}"))
    } else {
        let e = std::io::Error::last_os_error();
        Probe::new("landlock", false, format!("not available ({e}): boxes run without it"))
    }
}

/// pasta, for `--network` and published ports.
pub fn pasta(binary: &Path) -> Probe {
    let found = if binary.components().count() > 1 {
        binary.is_file().then(|| binary.to_owned())
    } else {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(binary)).find(|c| c.is_file()))
    };
    match found {
        Some(p) => match (nix::unistd::geteuid().is_root(), crate::net::rootless_tun()) {
            (false, Err(why)) => Probe::new(
                "pasta",
                false,
                format!(
                    "{}, but a rootless box cannot use it: {why}; boxes run, but not with \
                     --network or -p",
                    p.display()
                ),
            ),
            _ => Probe::new("pasta", true, format!("{} (for --network and -p)", p.display())),
        },
        None => Probe::new(
            "pasta",
            false,
            format!(
                "{} not found (Debian's passt package): boxes run, but not with --network or -p",
                binary.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine (and CI's) has every feature: each probe says so, with a detail.
    #[test]
    fn every_probe_finds_this_machines_features() {
        for p in [namespaces(), user_namespaces(), seccomp(), landlock()] {
            assert!(p.ok, "{p:?}");
            assert!(!p.detail.is_empty());
        }
        assert!(landlock().detail.starts_with("ABI "), "{:?}", landlock());
    }

    #[test]
    fn a_missing_pasta_is_named() {
        let p = pasta(Path::new("/nonexistent/pasta"));
        assert!(!p.ok && p.detail.contains("/nonexistent/pasta"), "{p:?}");
    }
}
