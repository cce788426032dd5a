//! The box's privileges: capabilities cut to docker's default set (all five sets),
//! `no_new_privs`, Landlock where the kernel has it, docker's default seccomp profile
//! ([`crate::seccomp`]).
//!
//! Landlock handles every filesystem right of the newest ABI and grants them all beneath
//! the box's `/` (added in the child, after `pivot_root`), and scopes abstract Unix
//! sockets and signals: a path that resolves outside the box's tree (a magic link, a
//! descriptor leaked from outside) is denied, and no process of the box connects to an
//! abstract socket or signals a process outside its domain, whatever namespace it
//! reaches. Volumes are covered by the rule beneath `/` (Landlock walks the mount
//! hierarchy); a `:ro` volume is read-only by its mount's flag, which the box cannot
//! change (no `CAP_SYS_ADMIN`, `mount` refused by seccomp): Landlock rules only add, so
//! none could take writes away from one path beneath a rule granting `/`. Best effort: an older kernel enforces what it has; the box log says which
//! (`boxsock-sandbox: landlock fully enforced`, `partially enforced`, `not enforced`). Built before the fork,
//! applied in the child with raw system calls ([`Privileges::apply`]).

use std::io;

use crate::child::fail;

/// Docker's default capabilities (moby `oci/caps/defaults.go`), by number.
pub const DOCKER_DEFAULT: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// `CAP_NET_RAW`: kept only for a box with a network (a box without one has only
/// `lo`; raw sockets there serve nothing but probing the kernel).
pub const CAP_NET_RAW: u32 = 13;

/// The box's privileges, ready to apply.
#[derive(Debug)]
pub struct Privileges {
    /// The Landlock ruleset, created before the fork; its rule (the box's `/`) is added
    /// and it is enforced in the child. Taken once.
    landlock: std::sync::Mutex<Option<landlock::RulesetCreated>>,
    /// The seccomp programs, applied in order after `no_new_privs`.
    seccomp: Vec<seccompiler::BpfProgram>,
    /// Capability numbers kept (a bit mask over 64 capabilities).
    keep: u64,
    /// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`).
    last_cap: u32,
}

impl Privileges {
    /// Docker's default set (without `network`, less `CAP_NET_RAW`) and its default
    /// seccomp profile.
    pub fn docker_default(network: bool) -> Result<Privileges, crate::seccomp::FilterError> {
        let mut keep = 0u64;
        for &(n, _) in DOCKER_DEFAULT {
            if n != CAP_NET_RAW || network {
                keep |= 1 << n;
            }
        }
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let seccomp = crate::seccomp::programs()?.into();
        let landlock = std::sync::Mutex::new(landlock_ruleset());
        Ok(Privileges { landlock, seccomp, keep, last_cap })
    }

    /// The capability numbers kept.
    pub fn kept(&self) -> Vec<u32> {
        (0..64).filter(|n| self.keep & (1 << n) != 0).collect()
    }

    /// In the child: drop every other capability from the bounding set, clear the
    /// ambient set, set effective = permitted = inheritable = the kept set, then
    /// `no_new_privs`, then the seccomp filters.
    pub fn apply(&self) -> io::Result<()> {
        for cap in 0..=self.last_cap.min(63) {
            if self.keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl(2) with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r == -1 && errno() != libc::EINVAL {
                return Err(fail("drop a capability from the bounding set"));
            }
        }
        // SAFETY: prctl(2) with integer arguments.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if r == -1 {
            return Err(fail("clear the ambient capabilities"));
        }
        let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let lo = self.keep as u32;
        let hi = (self.keep >> 32) as u32;
        let data = [
            CapData { effective: lo, permitted: lo, inheritable: lo },
            CapData { effective: hi, permitted: hi, inheritable: hi },
        ];
        // SAFETY: capset(2) with a v3 header and its two data words, both ours.
        let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
        if r == -1 {
            return Err(fail("set the capabilities"));
        }
        // SAFETY: prctl(2) with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
            return Err(fail("set no_new_privs"));
        }
        self.landlock()?;
        for program in &self.seccomp {
            if seccompiler::apply_filter(program).is_err() {
                return Err(fail("install the seccomp filter"));
            }
        }
        Ok(())
    }
}

/// The newest Landlock ABI whose rights and scopes the box asks for.
const LANDLOCK_ABI: landlock::ABI = landlock::ABI::V7;

fn landlock_ruleset() -> Option<landlock::RulesetCreated> {
    use landlock::{Access, AccessFs, Ruleset, RulesetAttr, Scope};
    let made = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
        .and_then(|r| r.create());
    match made {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no Landlock ruleset for the box");
            None
        }
    }
}

impl Privileges {
    /// In the child, after `pivot_root`: grant everything beneath `/` and enforce.
    fn landlock(&self) -> io::Result<()> {
        use landlock::{Access, AccessFs, PathBeneath, RulesetCreatedAttr, RulesetStatus};
        let Some(ruleset) = self.landlock.lock().ok().and_then(|mut g| g.take()) else {
            return Ok(());
        };
        // SAFETY: open(2) of a static path; the descriptor is owned right after.
        let fd = unsafe {
            libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        };
        if fd == -1 {
            return Err(fail("open / for Landlock"));
        }
        // SAFETY: fd was just opened here and is owned by nothing else.
        let root = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let status = ruleset
            .add_rule(PathBeneath::new(&root, AccessFs::from_all(LANDLOCK_ABI)))
            .and_then(|r| r.restrict_self());
        let line: &[u8] = match status {
            Ok(s) => match s.ruleset {
                RulesetStatus::FullyEnforced => b"boxsock-sandbox: landlock fully enforced\n",
                RulesetStatus::PartiallyEnforced => {
                    b"boxsock-sandbox: landlock partially enforced\n"
                }
                RulesetStatus::NotEnforced => b"boxsock-sandbox: landlock not enforced\n",
            },
            Err(_) => return Err(fail("enforce Landlock")),
        };
        // SAFETY: writes a static buffer to stderr (the box log).
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        Ok(())
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
