//! The box's limits: `--cpus` (`vcpus`: a CFS quota of that many CPUs), `--memory`
//! (`ram_mib`, no swap beyond it) and a pids limit, through cgroup v2 where the v2
//! hierarchy has the cpu, memory and pids controllers, else through the v1 hierarchies
//! of each (a hybrid host mounts v1 controllers beside an empty v2, as this project's
//! build machines do), as runc does.
//!
//! The runtime makes the box's cgroup and writes its limits before the fork, and opens
//! each `cgroup.procs` there; the child writes `0` to each (joining them) before it
//! makes its cgroup namespace, so the box sees its own cgroup as `/`. v1 cgroups are
//! made beneath the runtime's own cgroup of each controller (a box stays inside any
//! limit its runtime is under); v2 at `<mount>/boxsock/<id>` (v2 forbids processes in a
//! cgroup that delegates controllers, so not beneath the runtime's own).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use boxsock_core::echo;

/// The controllers a box needs.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The pids limit of a box unless the `pids_max` backend option says otherwise.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

/// The CFS period used for `--cpus`.
pub const CFS_PERIOD_US: u64 = 100_000;

/// What the box's cgroup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPUs (a quota of `cpus` × the period per period).
    pub cpus: Option<u8>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
    /// At most this many tasks.
    pub pids_max: u64,
}

/// Where cgroups are made on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup v2 mount whose root offers every controller in [`CONTROLLERS`].
    V2(PathBuf),
    /// v1: for each controller of [`CONTROLLERS`], in order, the directory of the
    /// runtime's own cgroup in that controller's hierarchy.
    V1(Vec<(&'static str, PathBuf)>),
}

/// Why limits cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No hierarchy offers the controller.
    #[error(
        "no cgroup hierarchy offers the {controller} controller (neither a cgroup2 mount \
         listing it in cgroup.controllers nor a cgroup v1 mount of it)"
    )]
    NoController {
        /// The controller.
        controller: &'static str,
    },
    /// Not root: the cgroups are not ours to make (no delegation).
    #[error(
        "limits need cgroups the runtime may write: {} is not writable by uid {uid} \
         (no cgroup delegation)",
        echo::path(path)
    )]
    NotDelegated {
        /// The directory.
        path: PathBuf,
        /// The runtime's uid.
        uid: u32,
    },
    /// A cgroup file operation failed.
    #[error("cgroup: cannot {action} {}: {source}", echo::path(path))]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { action, path: path.to_owned(), source }
}

/// `/proc/self/mountinfo`'s cgroup mounts: (mount point, fstype, super options).
fn cgroup_mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let opts = post.nth(1)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| (PathBuf::from(mount), fstype.to_owned(), opts.to_owned()))
        })
        .collect()
}

/// The runtime's own cgroup path in the v1 hierarchy of `controller`.
fn own_v1_path(controller: &str) -> Option<String> {
    let cg = fs::read_to_string("/proc/self/cgroup").ok()?;
    cg.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, list, path) = (f.next()?, f.next()?, f.next()?);
        list.split(',').any(|c| c == controller).then(|| path.to_owned())
    })
}

impl Hierarchy {
    /// This machine's hierarchy for the box controllers.
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let mounts = cgroup_mounts();
        for (mount, fstype, _) in &mounts {
            if fstype != "cgroup2" {
                continue;
            }
            let offered = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            let offered: Vec<&str> = offered.split_whitespace().collect();
            if CONTROLLERS.iter().all(|c| offered.contains(c)) {
                return Ok(Hierarchy::V2(mount.clone()));
            }
        }
        let mut dirs = Vec::new();
        for controller in CONTROLLERS {
            let (mount, ..) = mounts
                .iter()
                .find(|(_, t, o)| t == "cgroup" && o.split(',').any(|x| x == controller))
                .ok_or(CgroupError::NoController { controller })?;
            let own = own_v1_path(controller).unwrap_or_else(|| "/".into());
            dirs.push((controller, mount.join(own.trim_start_matches('/'))));
        }
        Ok(Hierarchy::V1(dirs))
    }

    /// Whether this user can make cgroups here (root, or a delegated, writable one).
    pub fn check_writable(&self) -> Result<(), CgroupError> {
        let uid = nix::unistd::geteuid();
        let dirs: Vec<&Path> = match self {
            Hierarchy::V2(m) => vec![m],
            Hierarchy::V1(d) => d.iter().map(|(_, p)| p.as_path()).collect(),
        };
        for d in dirs {
            if nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_err() {
                return Err(CgroupError::NotDelegated { path: d.to_owned(), uid: uid.as_raw() });
            }
        }
        Ok(())
    }

    /// The directories holding the boxes' cgroups (one for v2, one per controller for
    /// v1), with the prefix of each box's name there.
    fn parents(&self) -> Vec<(Option<&'static str>, PathBuf, &'static str)> {
        match self {
            Hierarchy::V2(m) => vec![(None, m.join("boxsock"), "")],
            Hierarchy::V1(d) => d.iter().map(|(c, p)| (Some(*c), p.clone(), "boxsock-")).collect(),
        }
    }

    /// The box's cgroup directories (one for v2, one per controller for v1); `name` is
    /// [`cgroup_name`]'s.
    pub fn box_dirs(&self, name: &str) -> Vec<(Option<&'static str>, PathBuf)> {
        self.parents().into_iter().map(|(c, p, pre)| (c, p.join(format!("{pre}{name}")))).collect()
    }

    /// Remove the cgroups of this home's boxes that no longer exist (`gone(id)`), so
    /// that `rm` leaves none behind for long: the backend is not told of removals, and
    /// a cgroup can only go once its tasks have. `rmdir` of a cgroup with tasks fails
    /// (EBUSY), so a running box's cgroup is never removed.
    pub fn sweep(&self, home_tag: &str, gone: impl Fn(&str) -> bool) {
        for (_, parent, pre) in self.parents() {
            let Ok(entries) = fs::read_dir(&parent) else { continue };
            let prefix = format!("{pre}{home_tag}-");
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(id) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                    continue;
                };
                if gone(id) {
                    let dir = e.path();
                    match fs::remove_dir(&dir) {
                        Ok(()) => tracing::debug!(cgroup = %echo::path(&dir), "removed"),
                        Err(e) => {
                            tracing::debug!(cgroup = %echo::path(&dir), error = %e, "not removed")
                        }
                    }
                }
            }
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut f = OpenOptions::new().write(true).open(path).map_err(io_err("open", path))?;
    f.write_all(value.as_bytes()).map_err(io_err("write", path))
}

/// The box's cgroups, made and limited, with their `cgroup.procs` open for the child.
#[derive(Debug)]
pub struct BoxCgroups {
    /// The directories.
    pub dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each, open for writing (close-on-exec).
    pub procs: Vec<OwnedFd>,
}

impl BoxCgroups {
    /// Make (or reuse, emptied of nothing: a stopped box's cgroup has no tasks) the
    /// box's cgroups and write `limits`.
    pub fn make(h: &Hierarchy, name: &str, limits: &Limits) -> Result<BoxCgroups, CgroupError> {
        if let Hierarchy::V2(m) = h {
            let parent = m.join("boxsock");
            fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
            for dir in [m.as_path(), parent.as_path()] {
                let ctl = dir.join("cgroup.subtree_control");
                write(&ctl, "+cpu +memory +pids")?;
            }
        }
        let mut dirs = Vec::new();
        let mut procs = Vec::new();
        for (controller, dir) in h.box_dirs(name) {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &dir)(e)),
            }
            let has = |c: &str| controller.is_none_or(|x| x == c);
            if has("cpu") {
                if let Some(cpus) = limits.cpus {
                    let quota = u64::from(cpus) * CFS_PERIOD_US;
                    match controller {
                        None => write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?,
                        Some(_) => {
                            write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                        }
                    }
                }
            }
            if has("memory") {
                if let Some(mib) = limits.memory_mib {
                    let bytes = (u64::from(mib) << 20).to_string();
                    match controller {
                        None => {
                            write(&dir.join("memory.max"), &bytes)?;
                            let swap = dir.join("memory.swap.max");
                            if swap.exists() {
                                write(&swap, "0")?;
                            }
                        }
                        Some(_) => {
                            write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                            let memsw = dir.join("memory.memsw.limit_in_bytes");
                            if memsw.exists() {
                                write(&memsw, &bytes)?;
                            }
                        }
                    }
                }
            }
            if has("pids") {
                write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
            }
            let p = dir.join("cgroup.procs");
            let f: File = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&p)
                .map_err(io_err("open", &p))?;
            procs.push(f.into());
            dirs.push(dir);
        }
        Ok(BoxCgroups { dirs, procs })
    }

    /// The raw descriptors, for the child.
    pub fn raw_procs(&self) -> Vec<i32> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }
}

/// A box's cgroup name: `<home tag>-<id>`, the tag 8 hex digits of SHA-256 of the
/// home's path, so that a home's sweep touches only its own boxes' cgroups.
pub fn cgroup_name(home: &Path, id: &str) -> String {
    format!("{}-{id}", home_tag(home))
}

/// The home's tag in cgroup names.
pub fn home_tag(home: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let d = Sha256::digest(home.as_os_str().as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Remove a box's cgroups once it has no tasks. `rmdir` of a cgroup with tasks fails
/// (EBUSY), so a running box's cgroup is never removed; a box whose agent just died
/// may still have processes the kernel is killing (its PID namespace ends with them),
/// so EBUSY is retried for at most [`REMOVE_WAIT`].
pub fn remove(h: &Hierarchy, name: &str) {
    let deadline = std::time::Instant::now() + REMOVE_WAIT;
    for (_, dir) in h.box_dirs(name) {
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => tracing::debug!(cgroup = %echo::path(&dir), "removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(e) => tracing::warn!(cgroup = %echo::path(&dir), error = %e, "not removed"),
            }
            break;
        }
    }
}

/// How long [`remove`] waits for a box's last processes to be gone.
pub const REMOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
