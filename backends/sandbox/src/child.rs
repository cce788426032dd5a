//! What the box's process does to itself between fork and exec: enter its namespaces,
//! build its root and pivot into it, then drop its privileges. Everything is built
//! before the fork ([`Plan::new`]); in the child ([`Plan::run`]) only raw system calls
//! on that data are made (the runtime is multi-threaded: nothing that allocates or
//! takes a lock may run there). A failing step writes one line naming itself and the
//! errno to stderr (the box log) and fails the spawn with that errno.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::privs::Privileges;

/// `/proc` entries made read-only (docker's `ReadonlyPaths`).
pub const PROC_READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];
/// `/proc` files hidden behind `/dev/null` (docker's `MaskedPaths`).
pub const PROC_MASKED_FILES: [&str; 6] =
    ["kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug"];
/// `/proc` directories hidden behind an empty read-only tmpfs.
pub const PROC_MASKED_DIRS: [&str; 3] = ["acpi", "scsi", "asound"];

/// `/sys` directories hidden behind an empty read-only tmpfs (docker's `MaskedPaths`:
/// firmware tables, power capping).
pub const SYS_MASKED_DIRS: [&str; 2] = ["firmware", "devices/virtual/powercap"];

/// Devices bound from the host into the box's `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn cs(p: &Path) -> CString {
    // Paths reaching here were checked for NUL by `Plan::new`'s callers (they come from
    // the filesystem or from `Path`s, which cannot hold NUL through the store's JSON).
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

struct Mount {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
    /// Remount read-only after a bind (a bind ignores MS_RDONLY on its first call).
    remount_ro: bool,
    /// A missing target (a `/proc` entry this kernel lacks) is no failure.
    optional: bool,
    what: &'static str,
}

/// Everything the child needs, built before the fork.
pub struct Plan {
    /// `cgroup.procs` of the box's cgroups, open in the parent: the child joins each.
    cgroup_procs: Vec<libc::c_int>,
    unshare: libc::c_int,
    /// Directories to create in the merged root before mounting (mode 0755).
    mkdirs: Vec<(CString, libc::mode_t)>,
    /// Files to create as bind targets.
    mkfiles: Vec<CString>,
    symlinks: Vec<(CString, CString)>,
    overlay: Mount,
    mounts: Vec<Mount>,
    merged: CString,
    hostname: Vec<u8>,
    /// A network namespace to join instead of making one ([`crate::netns`]), opened in
    /// the parent; held here until the plan is dropped after the spawn.
    netns: Option<OwnedFd>,
    dot: CString,
    slash: CString,
    privileges: Privileges,
    /// The box's volumes, their host sides already opened ([`crate::volume`]).
    volumes: Vec<crate::volume::Prepared>,
}

/// The box's directories on the host.
pub struct Dirs<'a> {
    /// The read-only lower (a `--rootfs` directory, an image's root, or the base).
    pub lower: &'a Path,
    /// The box's persistent upper.
    pub upper: &'a Path,
    /// Overlay's work directory (same file system as `upper`).
    pub work: &'a Path,
    /// The mount point of the merged root (in the box's private mount namespace).
    pub merged: &'a Path,
    /// The agent's base, bound read-only at `/.boxsock`.
    pub base: &'a Path,
}

/// Characters that overlay's option parser would split on.
pub fn overlay_unsafe(p: &Path) -> Option<char> {
    p.as_os_str().as_bytes().iter().map(|&b| b as char).find(|c| matches!(c, ',' | ':' | '\\'))
}

impl Plan {
    /// The plan for one box: `hostname` is the box's (its setting or its id; at most
    /// 64 bytes are used). Without `netns` the box gets a network namespace of its own
    /// with `lo` up (pasta adds the rest for `--network`); with it, the box joins that
    /// namespace (an engine's, [`crate::netns::open`]) and changes nothing in it.
    pub fn new(
        dirs: &Dirs<'_>,
        hostname: &str,
        privileges: Privileges,
        cgroup_procs: Vec<libc::c_int>,
        volumes: Vec<crate::volume::Prepared>,
        netns: Option<OwnedFd>,
    ) -> Plan {
        let m = |rel: &str| dirs.merged.join(rel);
        let ms = |rel: &str| cs(&m(rel));
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
        let mut mounts = vec![
            Mount {
                source: cs(dirs.base),
                target: ms(".boxsock"),
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
                remount_ro: true,
                optional: false,
                what: "bind the agent's base",
            },
            Mount {
                source: cstr("proc"),
                target: ms("proc"),
                fstype: Some(cstr("proc")),
                flags: nosuid | libc::MS_NOEXEC,
                data: None,
                remount_ro: false,
                optional: false,
                what: "mount /proc",
            },
            Mount {
                source: cstr("tmpfs"),
                target: ms("dev"),
                fstype: Some(cstr("tmpfs")),
                // The device nodes bound onto it keep their own mounts; one made here
                // does not open.
                flags: libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
                data: Some(cstr("mode=755,size=65536k")),
                remount_ro: false,
                optional: false,
                what: "mount /dev",
            },
        ];
        // As docker: what in /proc reaches the host's kernel is read-only (sysctls, the
        // sysrq trigger, irq and bus settings) or hidden (kernel memory, keys, timers).
        for entry in PROC_READ_ONLY {
            mounts.push(Mount {
                source: ms(&format!("proc/{entry}")),
                target: ms(&format!("proc/{entry}")),
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
                remount_ro: true,
                optional: true,
                what: "make a /proc entry read-only",
            });
        }
        for entry in PROC_MASKED_FILES {
            mounts.push(Mount {
                source: cstr("/dev/null"),
                target: ms(&format!("proc/{entry}")),
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
                remount_ro: false,
                optional: true,
                what: "mask a /proc file",
            });
        }
        for entry in PROC_MASKED_DIRS {
            mounts.push(Mount {
                source: cstr("tmpfs"),
                target: ms(&format!("proc/{entry}")),
                fstype: Some(cstr("tmpfs")),
                flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: Some(cstr("size=0")),
                remount_ro: false,
                optional: true,
                what: "mask a /proc directory",
            });
        }
        let mut mkfiles = Vec::new();
        let mut dev_mounts = Vec::new();
        for d in DEVICES {
            let target = m("dev").join(d);
            mkfiles.push(cs(&target));
            dev_mounts.push(Mount {
                source: cs(&Path::new("/dev").join(d)),
                target: cs(&target),
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
                remount_ro: false,
                optional: false,
                what: "bind a device",
            });
        }
        mounts.extend(dev_mounts);
        mounts.push(Mount {
            source: cstr("devpts"),
            target: ms("dev/pts"),
            fstype: Some(cstr("devpts")),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(cstr("newinstance,ptmxmode=0666,mode=0620")),
            remount_ro: false,
            optional: false,
            what: "mount /dev/pts",
        });
        mounts.push(Mount {
            source: cstr("shm"),
            target: ms("dev/shm"),
            fstype: Some(cstr("tmpfs")),
            flags: nosuid | libc::MS_NOEXEC,
            data: Some(cstr("mode=1777,size=65536k")),
            remount_ro: false,
            optional: false,
            what: "mount /dev/shm",
        });
        mounts.push(Mount {
            source: cstr("sysfs"),
            target: ms("sys"),
            fstype: Some(cstr("sysfs")),
            flags: nosuid | libc::MS_NOEXEC | libc::MS_RDONLY,
            data: None,
            remount_ro: false,
            optional: false,
            what: "mount /sys read-only",
        });
        for entry in SYS_MASKED_DIRS {
            mounts.push(Mount {
                source: cstr("tmpfs"),
                target: ms(&format!("sys/{entry}")),
                fstype: Some(cstr("tmpfs")),
                flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: Some(cstr("size=0")),
                remount_ro: false,
                optional: true,
                what: "mask a /sys directory",
            });
        }
        let overlay_data = format!(
            "lowerdir={},upperdir={},workdir={}",
            dirs.lower.display(),
            dirs.upper.display(),
            dirs.work.display()
        );
        let mut hostname = hostname.as_bytes().to_vec();
        hostname.truncate(64);
        let own_net = if netns.is_some() { 0 } else { libc::CLONE_NEWNET };
        Plan {
            cgroup_procs,
            unshare: libc::CLONE_NEWNS
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC
                | own_net
                | libc::CLONE_NEWCGROUP,
            mkdirs: vec![
                (ms(".boxsock"), 0o755),
                (ms("proc"), 0o555),
                (ms("dev"), 0o755),
                (ms("sys"), 0o555),
                (ms("tmp"), 0o1777),
            ],
            mkfiles,
            symlinks: vec![
                (cstr("pts/ptmx"), ms("dev/ptmx")),
                (cstr("/proc/self/fd"), ms("dev/fd")),
                (cstr("/proc/self/fd/0"), ms("dev/stdin")),
                (cstr("/proc/self/fd/1"), ms("dev/stdout")),
                (cstr("/proc/self/fd/2"), ms("dev/stderr")),
            ],
            overlay: Mount {
                source: cstr("overlay"),
                target: cs(dirs.merged),
                fstype: Some(cstr("overlay")),
                // No device node made in the box opens (there is no devices cgroup
                // or filter: CAP_MKNOD alone must not reach the host's disks).
                flags: libc::MS_NODEV,
                data: Some(CString::new(overlay_data).unwrap_or_default()),
                remount_ro: false,
                optional: false,
                what: "mount the overlay root",
            },
            mounts,
            merged: cs(dirs.merged),
            hostname,
            netns,
            dot: cstr("."),
            slash: cstr("/"),
            privileges,
            volumes,
        }
    }

    /// Run in the child, between fork and exec. See the module documentation.
    pub fn run(&self) -> io::Result<()> {
        // First, so that everything after (sysfs, the box's sockets) is in the
        // namespace the box joins. The descriptor was opened before the clone and the
        // handed descriptors are placed only after this set-up (`clone::spawn`), so
        // none is placed over it.
        if let Some(fd) = &self.netns {
            step(
                "join the network namespace",
                unsafe_call(|| {
                    // SAFETY: setns(2) on a descriptor the parent opened and holds.
                    unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }
                }),
            )?;
        }
        // Join the box's cgroups before the cgroup namespace is made, so that the box
        // sees its own cgroup as its root.
        for &fd in &self.cgroup_procs {
            // SAFETY: writes two bytes of a static buffer to a descriptor the parent
            // opened before the fork.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(fail("join the box's cgroup"));
            }
        }
        step(
            "unshare the namespaces",
            unsafe_call(|| {
                // SAFETY: unshare(2) takes flags only.
                unsafe { libc::unshare(self.unshare) }
            }),
        )?;
        step(
            "make the mounts private",
            unsafe_call(|| {
                // SAFETY: a null source/fstype/data is allowed for a propagation change;
                // the target is a static NUL-terminated string.
                unsafe {
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                }
            }),
        )?;
        mount(&self.overlay)?;
        for (dir, mode) in &self.mkdirs {
            // SAFETY: a NUL-terminated path built before the fork.
            let r = unsafe { libc::mkdir(dir.as_ptr(), *mode) };
            if r == -1 && errno() != libc::EEXIST {
                return Err(fail("create a mount point"));
            }
        }
        let mut dev_done = false;
        for mnt in &self.mounts {
            mount(mnt)?;
            if !dev_done && mnt.what == "mount /dev" {
                dev_done = true;
                for f in &self.mkfiles {
                    // SAFETY: a NUL-terminated path built before the fork.
                    let fd = unsafe {
                        libc::open(
                            f.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o666,
                        )
                    };
                    if fd == -1 {
                        return Err(fail("create a device node's mount point"));
                    }
                    // SAFETY: fd was just opened here.
                    unsafe { libc::close(fd) };
                }
                for (target, link) in &self.symlinks {
                    // SAFETY: NUL-terminated strings built before the fork.
                    if unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } == -1 {
                        return Err(fail("link in /dev"));
                    }
                }
                for sub in &self.mounts {
                    if sub.what == "mount /dev/pts" || sub.what == "mount /dev/shm" {
                        // SAFETY: a NUL-terminated path built before the fork.
                        if unsafe { libc::mkdir(sub.target.as_ptr(), 0o755) } == -1 {
                            return Err(fail("create /dev/pts or /dev/shm"));
                        }
                    }
                }
            }
        }
        // After the box's own mounts, so that a volume may sit under /dev or /tmp.
        crate::volume::mount_all(&self.merged, &self.volumes)?;
        // pivot_root(".", "."): the old root ends up stacked on the new one and is
        // detached at once, so no path from inside leads back to the host's root.
        step(
            "enter the new root",
            unsafe_call(|| {
                // SAFETY: a NUL-terminated path built before the fork.
                unsafe { libc::chdir(self.merged.as_ptr()) }
            }),
        )?;
        step(
            "pivot_root",
            unsafe_call(|| {
                // SAFETY: pivot_root(2) with two NUL-terminated paths.
                unsafe {
                    libc::syscall(libc::SYS_pivot_root, self.dot.as_ptr(), self.dot.as_ptr()) as i32
                }
            }),
        )?;
        step(
            "detach the old root",
            unsafe_call(|| {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::umount2(self.dot.as_ptr(), libc::MNT_DETACH) }
            }),
        )?;
        step(
            "chdir to /",
            unsafe_call(|| {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::chdir(self.slash.as_ptr()) }
            }),
        )?;
        step(
            "set the hostname",
            unsafe_call(|| {
                // SAFETY: a pointer and length of a buffer built before the fork.
                unsafe { libc::sethostname(self.hostname.as_ptr().cast(), self.hostname.len()) }
            }),
        )?;
        // A joined namespace is the engine's: its `lo` is its business.
        if self.netns.is_none() {
            loopback_up()?;
        }
        self.privileges.apply()
    }
}

fn mount(m: &Mount) -> io::Result<()> {
    let opt = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string built before the fork, or null.
    let r = unsafe {
        libc::mount(
            m.source.as_ptr(),
            m.target.as_ptr(),
            opt(&m.fstype),
            m.flags,
            opt(&m.data).cast(),
        )
    };
    if r == -1 {
        if m.optional && errno() == libc::ENOENT {
            return Ok(());
        }
        return Err(fail(m.what));
    }
    if m.remount_ro {
        let mut flags =
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        // Keep the flags the bind copied (noexec, the atime mode): in a user namespace
        // they are locked, and a remount that drops one is refused (EPERM).
        // glibc answers from statfs(2)'s flags (the kernel sets ST_VALID since 2.6.36;
        // only before that would it read /proc/mounts).
        // SAFETY: statvfs is plain data; all-zero is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs on a NUL-terminated path into a struct of ours.
        if unsafe { libc::statvfs(m.target.as_ptr(), &mut st) } == 0 {
            let keep = libc::MS_NOEXEC | libc::MS_NOATIME | libc::MS_NODIRATIME | libc::MS_RELATIME;
            flags |= st.f_flag as libc::c_ulong & keep;
        }
        // SAFETY: as above.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                m.target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if r == -1 {
            return Err(fail(m.what));
        }
    }
    Ok(())
}

/// Bring `lo` up (SIOCSIFFLAGS), the one interface of a box without a network.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constants.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(fail("open a socket to bring lo up"));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: fd is a socket opened here; req is a valid ifreq for SIOCSIFFLAGS.
    let r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) };
    let e = fail_if(r == -1, "bring lo up");
    // SAFETY: fd was opened here.
    unsafe { libc::close(fd) };
    e
}

fn unsafe_call(f: impl FnOnce() -> i32) -> i32 {
    f()
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn step(what: &'static str, r: i32) -> io::Result<()> {
    fail_if(r == -1, what)
}

fn fail_if(failed: bool, what: &'static str) -> io::Result<()> {
    if failed { Err(fail(what)) } else { Ok(()) }
}

/// Write `boxsock-sandbox: cannot <what> (errno N)` to stderr without allocating, and
/// return the error.
pub fn fail(what: &'static str) -> io::Error {
    let e = errno();
    let mut buf = [0u8; 160];
    let mut n = 0;
    for part in [b"boxsock-sandbox: cannot ".as_slice(), what.as_bytes(), b" (errno ".as_slice()] {
        for &b in part {
            if n < buf.len() - 12 {
                buf[n] = b;
                n += 1;
            }
        }
    }
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut v = e.unsigned_abs();
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 || k == digits.len() {
            break;
        }
    }
    while k > 0 {
        k -= 1;
        buf[n] = digits[k];
        n += 1;
    }
    buf[n] = b')';
    buf[n + 1] = b'\n';
    n += 2;
    // SAFETY: writes a buffer of ours to stderr.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
    io::Error::from_raw_os_error(e)
}
