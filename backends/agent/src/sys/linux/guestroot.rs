//! The box's root inside a libkrun guest (decision 0006): libkrun's virtio-fs root is
//! the shared, read-only guest base (this agent and its libraries); the box's own root
//! is an overlay the agent mounts early, before it reports ready, and then `chroot`s
//! into, so every command it runs sees that root:
//!
//! - each `--overlay-lower TAG` is a virtio-fs share the host made read-only
//!   (`krun_add_virtiofs3(…, read_only = true)`; the shim's Landlock jail grants it
//!   read-only too): the user's `--rootfs` directory, or the base itself, and the box's
//!   own `<box>/rootfs` layer on top;
//! - the upper layer (upper and work directories) is on the box's disk, an ext4
//!   virtio-blk device found by its label (`--upper-disk LABEL`, decision 0023), so
//!   writes survive `stop`/`start`; without one, a tmpfs in guest memory, for one run.
//!   Either way writes stay in the box, the user's directory is never written, and
//!   nothing is copied on the host. (Linux refuses a virtio-fs directory as an overlay
//!   upper, "not supported as upperdir".)
//!
//! Everything is mounted under a tmpfs at [`MOUNT_BASE`], because the base is
//! read-only: the base holds only that empty directory.
//!
//! Volumes (`--volume TAG:ro|rw:GUEST_PATH`, decision 0022) are mounted once the agent
//! is inside the box's root, so a guest path resolves there and nowhere else (an
//! absolute symlink in the root stays in the root). A missing mount point is created
//! through the merged root, so it lands in the writable upper layer and never in a
//! lower; one that exists and is not a directory is an error. Parents are mounted
//! before what nests in them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

/// Where the layers, the upper tmpfs and the merged root are mounted (a directory of
/// the guest base).
pub const MOUNT_BASE: &str = "/.boxsock";

/// Why the box root could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum GuestRootError {
    /// A mount failed.
    #[error(
        "cannot mount {what} ({fstype} {source_name}) on {}: {errno}",
        boxsock_core::echo::path(target)
    )]
    Mount {
        /// Which layer.
        what: String,
        /// The filesystem type.
        fstype: &'static str,
        /// The mount source (a virtio-fs tag…).
        source_name: String,
        /// The mount point.
        target: PathBuf,
        /// The error.
        errno: nix::Error,
    },
    /// A directory could not be created.
    #[error("cannot create {}: {source}", boxsock_core::echo::path(path))]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `chroot` or `chdir` into the merged root failed.
    #[error("cannot enter the box root {}: {errno}", boxsock_core::echo::path(root))]
    Enter {
        /// The merged root.
        root: PathBuf,
        /// The error.
        errno: nix::Error,
    },
    /// A volume's guest path exists in the box's root and is not a directory.
    #[error(
        "volume {tag}: the guest path {} exists in the box's root and is not a directory \
         (a volume is mounted on a directory; choose another guest path)",
        boxsock_core::echo::path(guest)
    )]
    VolumeTarget {
        /// The volume's virtio-fs tag.
        tag: String,
        /// The guest path.
        guest: PathBuf,
    },
    /// A `--volume` argument did not parse.
    #[error("--volume {}: {reason}", boxsock_core::echo::echo(arg))]
    VolumeArg {
        /// The argument as given.
        arg: String,
        /// What was expected.
        reason: &'static str,
    },
    /// No block device carries the disk's label.
    #[error("no disk labelled {label:?} among the block devices ({seen})")]
    NoDisk {
        /// The label looked for.
        label: String,
        /// The devices seen, with their labels.
        seen: String,
    },
    /// No lower layer was given, or a tag is not usable.
    #[error("invalid overlay layers {tags:?}: {reason}")]
    Layers {
        /// The tags given.
        tags: Vec<String>,
        /// Why.
        reason: &'static str,
    },
}

fn mount_err(
    what: impl Into<String>,
    fstype: &'static str,
    source_name: impl Into<String>,
    target: &Path,
) -> impl FnOnce(nix::Error) -> GuestRootError {
    let (what, source_name, target) = (what.into(), source_name.into(), target.to_path_buf());
    move |errno| GuestRootError::Mount { what, fstype, source_name, target, errno }
}

fn mkdir(p: &Path) -> Result<(), GuestRootError> {
    std::fs::create_dir_all(p)
        .map_err(|source| GuestRootError::Mkdir { path: p.to_path_buf(), source })
}

/// The `lowerdir=` option for layers mounted at `dirs` (top first), with `:` `,` and
/// `\` escaped as overlayfs expects.
pub fn lowerdir_option(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| {
            let mut s = String::new();
            for c in d.to_string_lossy().chars() {
                if matches!(c, ':' | ',' | '\\') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Check the virtio-fs tags (top first): at least one, each non-empty, at most 36
/// bytes (virtio-fs), without `,` (a mount option separator).
pub fn check_tags(tags: &[String]) -> Result<(), GuestRootError> {
    let bad = |reason| Err(GuestRootError::Layers { tags: tags.to_vec(), reason });
    if tags.is_empty() {
        return bad("at least one lower layer is needed");
    }
    if tags.iter().any(|t| t.is_empty() || t.len() > 36 || t.contains(',') || t.contains('\0')) {
        return bad("a tag must be 1 to 36 bytes without ',' or NUL");
    }
    Ok(())
}

/// Where the overlay's upper and work directories live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    /// A tmpfs in guest memory (lost when the guest ends).
    Tmpfs,
    /// The ext4 filesystem on this block device (the box's disk).
    Ext4(PathBuf),
}

/// Offset of the ext4 superblock on its device, and of its magic and volume name in it.
const SUPERBLOCK: u64 = 1024;
const MAGIC_AT: usize = 0x38;
const LABEL_AT: usize = 0x78;
const EXT_MAGIC: u16 = 0xEF53;

/// The label of the ext2/3/4 filesystem at the start of `dev`, if it has one.
pub fn ext4_label(dev: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dev).ok()?;
    let mut sb = [0u8; 256];
    f.read_exact_at(&mut sb, SUPERBLOCK).ok()?;
    if u16::from_le_bytes([sb[MAGIC_AT], sb[MAGIC_AT + 1]]) != EXT_MAGIC {
        return None;
    }
    let name = &sb[LABEL_AT..LABEL_AT + 16];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The virtio-blk device (`/dev/vd*`, listed in `sys_block`) whose ext4 label is
/// `label`: found by what the host wrote on it, not by the order devices appear in.
pub fn find_disk(sys_block: &Path, dev: &Path, label: &str) -> Result<PathBuf, GuestRootError> {
    let mut seen = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    for name in names.into_iter().filter(|n| n.starts_with("vd")) {
        let path = dev.join(&name);
        let found = ext4_label(&path);
        if found.as_deref() == Some(label) {
            return Ok(path);
        }
        seen.push(format!("{name}: {}", found.as_deref().unwrap_or("no ext4 label")));
    }
    let seen = if seen.is_empty() { "none".to_owned() } else { seen.join(", ") };
    Err(GuestRootError::NoDisk { label: label.to_owned(), seen })
}

/// One lower layer of the box's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// A virtio-fs share, by tag (in a guest).
    Virtiofs(String),
    /// A directory bind-mounted read-only (tests outside a guest).
    Bind(PathBuf),
}

/// A host directory shown in the box's root at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// What is mounted: a virtio-fs share (in a guest) or a directory (tests).
    pub source: Layer,
    /// Where, inside the box's root (absolute, without `.` or `..`).
    pub guest: PathBuf,
    /// Mounted read-only (writes fail with `EROFS`).
    pub read_only: bool,
}

impl VolumeMount {
    /// Parse the agent's `--volume TAG:ro|rw:GUEST_PATH` (the guest path last, so it may
    /// hold `:`).
    pub fn parse(arg: &str) -> Result<Self, GuestRootError> {
        let bad = |reason| GuestRootError::VolumeArg { arg: arg.to_owned(), reason };
        let mut parts = arg.splitn(3, ':');
        let (Some(tag), Some(mode), Some(guest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected TAG:ro|rw:GUEST_PATH"));
        };
        check_tags(&[tag.to_owned()]).map_err(|_| bad("the tag is 1 to 36 bytes, no ','"))?;
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            _ => return Err(bad("the mode is not ro or rw")),
        };
        let guest = PathBuf::from(guest);
        let plain = guest.is_absolute()
            && guest.components().all(|c| {
                matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_))
            });
        if !plain || guest == Path::new("/") {
            return Err(bad("the guest path is not absolute without . or .., or is /"));
        }
        Ok(VolumeMount { source: Layer::Virtiofs(tag.to_owned()), guest, read_only })
    }

    fn label(&self) -> String {
        match &self.source {
            Layer::Virtiofs(tag) => tag.clone(),
            Layer::Bind(p) => boxsock_core::echo::path(p).to_string(),
        }
    }
}

/// Mount the layers shared as `tags` (top first) read-only, the upper (the disk
/// labelled `disk_label`, else a tmpfs), the overlay of them, `/proc`, `/dev` and `/sys`
/// inside it, then `chroot` into it and mount the `volumes` there. Inside a libkrun
/// guest only (root, before the agent opens anything by path).
pub fn enter(
    tags: &[String],
    disk_label: Option<&str>,
    volumes: &[VolumeMount],
) -> Result<PathBuf, GuestRootError> {
    check_tags(tags)?;
    let layers: Vec<Layer> = tags.iter().cloned().map(Layer::Virtiofs).collect();
    let upper = match disk_label {
        Some(label) => Upper::Ext4(find_disk(Path::new("/sys/block"), Path::new("/dev"), label)?),
        None => Upper::Tmpfs,
    };
    enter_at(Path::new(MOUNT_BASE), &layers, &upper, volumes)
}

/// [`enter`] with the layer directory at `base` (an existing directory) and any kind of
/// [`Layer`]. Changes the calling process's mounts and root: call it in a private mount
/// namespace outside a guest.
pub fn enter_at(
    base: &Path,
    layers: &[Layer],
    upper: &Upper,
    volumes: &[VolumeMount],
) -> Result<PathBuf, GuestRootError> {
    if layers.is_empty() {
        return Err(GuestRootError::Layers {
            tags: Vec::new(),
            reason: "at least one lower layer is needed",
        });
    }
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(mount_err("the layer directory", "tmpfs", "tmpfs", base))?;
    let mut lowers = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let dir = base.join(format!("lower{i}"));
        mkdir(&dir)?;
        match layer {
            Layer::Virtiofs(tag) => mount(
                Some(tag.as_str()),
                &dir,
                Some("virtiofs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                None::<&str>,
            )
            .map_err(mount_err(
                format!("lower layer {i}"),
                "virtiofs",
                tag.as_str(),
                &dir,
            ))?,
            Layer::Bind(from) => {
                mount(Some(from.as_path()), &dir, None::<&OsStr>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(mount_err(
                    format!("lower layer {i}"),
                    "bind",
                    boxsock_core::echo::path(from).to_string(),
                    &dir,
                ))?;
                mount(
                    None::<&OsStr>,
                    &dir,
                    None::<&OsStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(mount_err(
                    format!("lower layer {i} (read-only)"),
                    "bind",
                    boxsock_core::echo::path(from).to_string(),
                    &dir,
                ))?
            }
        }
        lowers.push(dir);
    }
    let on = match upper {
        Upper::Tmpfs => base.to_path_buf(),
        Upper::Ext4(dev) => {
            // The ext4 journal replays here after a killed VMM; a full disk is ENOSPC.
            let disk = base.join("disk");
            mkdir(&disk)?;
            mount(Some(dev.as_path()), &disk, Some("ext4"), MsFlags::MS_NOATIME, None::<&str>)
                .map_err(mount_err(
                    "the box's disk",
                    "ext4",
                    boxsock_core::echo::path(dev).to_string(),
                    &disk,
                ))?;
            disk
        }
    };
    let (upper_dir, work, root) = (on.join("upper"), on.join("work"), base.join("root"));
    for d in [&upper_dir, &work, &root] {
        mkdir(d)?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir_option(&lowers),
        upper_dir.display(),
        work.display()
    );
    mount(Some("overlay"), &root, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
        .map_err(mount_err("the box root", "overlay", opts.clone(), &root))?;
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        mkdir(&root.join(d))?;
    }
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("/proc", "proc", "proc", &root.join("proc")))?;
    for d in ["dev", "sys"] {
        let from = Path::new("/").join(d);
        let to = root.join(d);
        mount(
            Some(from.as_path()),
            &to,
            None::<&OsStr>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err(
            format!("/{d}"),
            "bind",
            boxsock_core::echo::path(&from).to_string(),
            &to,
        ))?;
    }
    // A directory source (tests) is opened before the chroot hides it, and mounted
    // from the descriptor afterwards.
    let mut sources = Vec::new();
    for v in volumes {
        sources.push(match &v.source {
            Layer::Virtiofs(_) => None,
            Layer::Bind(from) => Some(
                std::fs::File::open(from)
                    .map_err(|source| GuestRootError::Mkdir { path: from.clone(), source })?,
            ),
        });
    }
    nix::unistd::chroot(&root)
        .map_err(|errno| GuestRootError::Enter { root: root.clone(), errno })?;
    nix::unistd::chdir("/").map_err(|errno| GuestRootError::Enter { root: root.clone(), errno })?;
    mount_volumes(volumes, &sources)?;
    tracing::info!(layers = ?layers, upper = ?upper, volumes = volumes.len(), "entered the box root (overlay)");
    Ok(root)
}

/// Inside the box's root: each volume on its guest path, parents first (a volume at
/// `/a` before one at `/a/b`, whose mount point is then made in `/a`'s volume).
fn mount_volumes(
    volumes: &[VolumeMount],
    sources: &[Option<std::fs::File>],
) -> Result<(), GuestRootError> {
    let mut order: Vec<usize> = (0..volumes.len()).collect();
    order.sort_by_key(|&i| volumes[i].guest.components().count());
    for i in order {
        let v = &volumes[i];
        let target = &v.guest;
        match std::fs::metadata(target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(GuestRootError::VolumeTarget { tag: v.label(), guest: target.clone() });
            }
            // Made through the merged root: the new directories land in the upper layer.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => mkdir(target)?,
            Err(source) => return Err(GuestRootError::Mkdir { path: target.clone(), source }),
        }
        let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
        if v.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let what = format!("volume {}", target.display());
        match (&v.source, &sources[i]) {
            (Layer::Virtiofs(tag), _) => {
                mount(Some(tag.as_str()), target, Some("virtiofs"), flags, None::<&str>)
                    .map_err(mount_err(what, "virtiofs", tag.as_str(), target))?
            }
            (Layer::Bind(from), file) => {
                use std::os::fd::AsRawFd;
                let Some(file) = file else {
                    return Err(GuestRootError::Mkdir {
                        path: from.clone(),
                        source: std::io::Error::other("the source was not opened"),
                    });
                };
                let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
                let label = boxsock_core::echo::path(from).to_string();
                mount(Some(&fd_path), target, None::<&OsStr>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(mount_err(what.clone(), "bind", label.clone(), target))?;
                mount(
                    None::<&OsStr>,
                    target,
                    None::<&OsStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                    None::<&str>,
                )
                .map_err(mount_err(what, "bind", label, target))?;
            }
        }
        tracing::info!(
            volume = %v.label(),
            guest = %target.display(),
            read_only = v.read_only,
            "volume mounted"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escapes_separators_and_keeps_order() {
        let dirs = vec![PathBuf::from("/.boxsock/lower0"), PathBuf::from("/a:b,c\\d")];
        assert_eq!(lowerdir_option(&dirs), "/.boxsock/lower0:/a\\:b\\,c\\\\d");
    }

    /// The disk is found by the label mkfs.ext4 wrote, whatever its device name; a
    /// device with another label or none is passed over and named in the error.
    #[test]
    fn the_disk_is_found_by_its_ext4_label() {
        use boxsock_test_support::{Need, skip};
        let d = tempfile::tempdir().unwrap();
        let (sys, dev) = (d.path().join("sys"), d.path().join("dev"));
        for n in ["sys/vda", "sys/vdb", "sys/loop0", "dev"] {
            std::fs::create_dir_all(d.path().join(n)).unwrap();
        }
        std::fs::write(dev.join("vda"), vec![0u8; 8192]).unwrap();
        let img = dev.join("vdb");
        std::fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "boxsock-upper"])
            .arg(&img)
            .status();
        if !matches!(mkfs, Ok(s) if s.success()) {
            skip(Need::Program { name: "mkfs.ext4", package: "e2fsprogs" }, "no mkfs.ext4");
            return;
        }
        assert_eq!(ext4_label(&img).as_deref(), Some("boxsock-upper"));
        assert_eq!(ext4_label(&dev.join("vda")), None);
        assert_eq!(find_disk(&sys, &dev, "boxsock-upper").unwrap(), img);
        let e = find_disk(&sys, &dev, "other").unwrap_err().to_string();
        assert!(e.contains("vda: no ext4 label") && e.contains("vdb: boxsock-upper"), "{e}");
    }

    #[test]
    fn bad_tags_are_errors_naming_them() {
        assert!(matches!(check_tags(&[]), Err(GuestRootError::Layers { .. })));
        let e = check_tags(&["ok".into(), "a,b".into()]).unwrap_err();
        assert!(e.to_string().contains("a,b"), "{e}");
        assert!(check_tags(&["x".repeat(37)]).is_err());
        check_tags(&["boxsock-box".into(), "boxsock-lower".into()]).unwrap();
    }

    /// The whole sequence, for real (root only): a child in its own mount namespace
    /// enters a box root made of a box layer over a static-busybox root (bind mounts
    /// standing in for virtio-fs), and runs `/bin/sh -c 'echo hi > /x; cat /x'`
    /// there. The user's root is unchanged afterwards, and so is the box layer.
    #[test]
    fn a_busybox_root_runs_sh_and_the_users_dir_is_unchanged() {
        use boxsock_test_support::{Need, skip};
        use std::os::unix::process::CommandExt;
        if !nix::unistd::geteuid().is_root() {
            skip(Need::Root, "needs root for mount namespaces");
            return;
        }
        let Some(busybox) =
            ["/usr/bin/busybox", "/bin/busybox"].into_iter().map(Path::new).find(|p| p.is_file())
        else {
            skip(Need::Program { name: "busybox", package: "busybox-static" }, "no static busybox");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let (user, layer, base) =
            (d.path().join("user-root"), d.path().join("box-layer"), d.path().join("mnt"));
        for dir in [user.join("bin"), user.join("etc"), layer.clone(), base.clone()] {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::copy(busybox, user.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", user.join("bin/sh")).unwrap();
        std::fs::write(user.join("etc/hostname"), "user\n").unwrap();
        std::fs::write(layer.join("from-layer"), "layer\n").unwrap();
        let snapshot = |root: &Path| -> Vec<(PathBuf, u64, i64)> {
            use std::os::unix::fs::MetadataExt;
            let mut v = Vec::new();
            let mut todo = vec![root.to_path_buf()];
            while let Some(p) = todo.pop() {
                let m = std::fs::symlink_metadata(&p).unwrap();
                v.push((p.clone(), m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
                if m.is_dir() {
                    todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
            }
            v.sort();
            v
        };
        let (before_user, before_layer) = (snapshot(&user), snapshot(&layer));
        let layers = vec![Layer::Bind(layer.clone()), Layer::Bind(user.clone())];
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "echo hi > /x; cat /x; cat /from-layer; echo more >> /etc/hostname; cat /etc/hostname; rm /bin/sh && echo removed"]);
        // SAFETY: runs in the forked child before exec; it only makes syscalls (unshare,
        // mount, chroot) and small allocations for paths, and the parent test thread
        // holds no lock the child needs.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(std::io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(std::io::Error::from)?;
                enter_at(&base, &layers, &Upper::Tmpfs, &[]).map_err(std::io::Error::other)?;
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("ENODEV") || stderr.contains("No such device") {
            skip(Need::Kernel("overlayfs"), format!("no overlayfs on this host: {stderr}"));
            return;
        }
        assert!(out.status.success(), "status {:?}, stderr {stderr}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nlayer\nuser\nmore\nremoved\n");
        assert_eq!(snapshot(&user), before_user, "the user's root changed");
        assert_eq!(snapshot(&layer), before_layer, "the box layer changed");
        assert_eq!(std::fs::read_to_string(user.join("etc/hostname")).unwrap(), "user\n");
        assert!(std::fs::symlink_metadata(user.join("bin/sh")).is_ok());
    }

    /// `sh -c script` in a child that enters a box root of `layers` with `volumes` in
    /// its own mount namespace. A failure to enter is printed on the child's stderr and
    /// ends it with status 42 (a `pre_exec` error would lose the message).
    fn run_in_root(
        base: &Path,
        layers: Vec<Layer>,
        volumes: Vec<VolumeMount>,
        script: &str,
    ) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        let base = base.to_path_buf();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", script]);
        // SAFETY: runs in the forked child before exec; it only makes syscalls (unshare,
        // mount, chroot, write, _exit) and small allocations for paths and the message,
        // and the parent test thread holds no lock the child needs.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(std::io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(std::io::Error::from)?;
                if let Err(e) = enter_at(&base, &layers, &Upper::Tmpfs, &volumes) {
                    let msg = format!("enter: {e}\n");
                    let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
                    nix::libc::_exit(42);
                }
                Ok(())
            });
        }
        cmd.output().unwrap()
    }

    /// Volumes for real (root only; bind mounts standing in for virtio-fs): a rw volume
    /// round-trips both ways, a `ro` one refuses a write with EROFS and its host
    /// directory is unchanged, a missing mount point (`/data/rw`, two levels) is made in
    /// the upper layer and never in the user's root, a nested volume is mounted after
    /// its parent, and a guest path that is a file in the root is an error naming it.
    #[test]
    fn volumes_round_trip_ro_refuses_and_mount_points_stay_out_of_the_users_root() {
        use boxsock_test_support::{Need, skip};
        if !nix::unistd::geteuid().is_root() {
            skip(Need::Root, "needs root for mount namespaces");
            return;
        }
        let Some(busybox) =
            ["/usr/bin/busybox", "/bin/busybox"].into_iter().map(Path::new).find(|p| p.is_file())
        else {
            skip(Need::Program { name: "busybox", package: "busybox-static" }, "no static busybox");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        let (user, base, rw, ro, nested) = (p("user"), p("mnt"), p("rw"), p("ro"), p("nested"));
        for dir in [user.join("bin"), user.join("etc"), base.clone(), rw.clone(), ro.clone()] {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::copy(busybox, user.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", user.join("bin/sh")).unwrap();
        std::fs::write(user.join("etc/not-a-dir"), "file\n").unwrap();
        std::fs::write(rw.join("from-host"), "host\n").unwrap();
        std::fs::write(ro.join("kept"), "ro\n").unwrap();
        std::fs::write(nested.join("inner"), "nested\n").unwrap();
        let vol = |from: &Path, guest: &str, read_only| VolumeMount {
            source: Layer::Bind(from.to_path_buf()),
            guest: PathBuf::from(guest),
            read_only,
        };
        // The nested volume comes first on purpose: it is mounted after its parent.
        let volumes = vec![
            vol(&nested, "/data/rw/sub", false),
            vol(&rw, "/data/rw", false),
            vol(&ro, "/ro", true),
        ];
        let out = run_in_root(
            &base,
            vec![Layer::Bind(user.clone())],
            volumes,
            "cat /data/rw/from-host; echo box > /data/rw/from-box; cat /data/rw/sub/inner; \
             cat /ro/kept; if echo x > /ro/new; then echo written; else echo refused; fi",
        );
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "status {:?}, stderr {stderr}", out.status);
        assert_eq!(stdout, "host\nnested\nro\nrefused\n", "stderr: {stderr}");
        assert!(stderr.contains("Read-only file system"), "{stderr}");
        assert_eq!(std::fs::read_to_string(rw.join("from-box")).unwrap(), "box\n");
        assert!(rw.join("sub").is_dir(), "the nested mount point is made in its parent volume");
        let names = |dir: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&ro), ["kept"], "the ro volume's host directory changed");
        assert_eq!(names(&user), ["bin", "etc"], "a mount point was made in the user's root");

        let out = run_in_root(
            &base,
            vec![Layer::Bind(user.clone())],
            vec![vol(&rw, "/etc/not-a-dir", false)],
            "echo entered",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(42), "stderr {stderr}");
        assert!(
            stderr.contains("\"/etc/not-a-dir\"") && stderr.contains("not a directory"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn volume_args_parse_and_bad_ones_are_errors_naming_them() {
        let v = VolumeMount::parse("boxsock-vol0:ro:/data/a:b").unwrap();
        assert_eq!(v.source, Layer::Virtiofs("boxsock-vol0".into()));
        assert_eq!(v.guest, Path::new("/data/a:b"));
        assert!(v.read_only);
        assert!(!VolumeMount::parse("t:rw:/x").unwrap().read_only);
        for bad in ["t:rw", "t:xx:/x", "t:rw:x", "t:rw:/a/../b", "t:rw:/", ":rw:/x", "a,b:rw:/x"] {
            let e = VolumeMount::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }
}
