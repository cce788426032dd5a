//! Linux: `O_PATH` descriptors addressed through `/proc/self/fd/<n>/<name>`, and peer
//! credentials from the kernel (`SO_PEERCRED`, `SO_PEERPIDFD`, `SCM_CREDENTIALS`), and
//! the holder of a published port read from `/proc/net/{tcp,udp}*` and `/proc/*/fd`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::peer::PeerCred;

/// `O_PATH`: the descriptor only anchors lookups.
pub(crate) fn path_flag() -> OFlag {
    OFlag::O_PATH
}

/// `/proc/self/fd/<fd>/<name>`: resolved by the kernel through the descriptor itself,
/// so no directory anyone else controls is looked up. At most 14 + 10 + 1 + name bytes.
pub(crate) fn through_fd(fd: RawFd, _shown: &Path, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}/{name}"))
}

/// Read the peer credentials of a connected Unix socket (`SO_PEERCRED`).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let c = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(PeerCred { pid: c.pid(), uid: c.uid(), gid: c.gid() })
}

/// A pidfd of the peer (`SO_PEERPIDFD`, Linux ≥ 6.5); `Ok(None)` where the kernel does
/// not support it.
pub fn peer_pidfd(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // `SO_PEERPIDFD` from the kernel's uapi `asm/socket.h` (not yet in the libc crate
    // for every target): 77, except on sparc.
    #[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
    const SO_PEERPIDFD: libc::c_int = 77;
    #[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
    const SO_PEERPIDFD: libc::c_int = 0x0056;
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a valid open descriptor for the duration of the borrow; the option
    // value points to a c_int we own and `len` holds its size, as SO_PEERPIDFD expects.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut pidfd).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    if pidfd < 0 {
        return Ok(None);
    }
    // SAFETY: on success the kernel installed a new descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// Turn on `SO_PASSCRED`: the kernel attaches `SCM_CREDENTIALS` to every datagram
/// queued from now on.
pub fn set_pass_cred(sock: BorrowedFd<'_>) -> io::Result<()> {
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)?;
    Ok(())
}

/// Receive one datagram into `buf`, with the sender's `SCM_CREDENTIALS` when the kernel
/// attached them (retrying on `EINTR`).
pub(crate) fn recv_with_cred(
    sock: &UnixDatagram,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<PeerCred>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    let mut iov = [io::IoSliceMut::new(buf)];
    loop {
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), flags) {
            Ok(msg) => {
                let mut cred = None;
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmCredentials(uc) = c {
                        cred = Some(PeerCred { pid: uc.pid(), uid: uc.uid(), gid: uc.gid() });
                    }
                }
                return Ok((msg.bytes, cred));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The abstract socket address `@name`.
pub(crate) fn abstract_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

/// The abstract socket address `@name`, as nix takes it.
pub(crate) fn abstract_unix_addr(n: &[u8]) -> io::Result<nix::sys::socket::UnixAddr> {
    Ok(nix::sys::socket::UnixAddr::new_abstract(n)?)
}

/// `close_range(first, last, CLOSE_RANGE_CLOEXEC)` (Linux 5.11): marks the range
/// close-on-exec. `ENOSYS` or `EINVAL` on an older kernel (the caller falls back).
pub(crate) fn close_range_cloexec(first: RawFd, last: Option<RawFd>) -> io::Result<()> {
    let last = last.map_or(libc::c_uint::MAX, |l| l as libc::c_uint);
    // SAFETY: close_range only changes descriptor flags of this process; no memory is
    // passed.
    let r = unsafe {
        libc::syscall(libc::SYS_close_range, first as libc::c_uint, last, libc::CLOSE_RANGE_CLOEXEC)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A pidfd of `pid` (Linux ≥ 5.3).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1; no
    // memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process a pidfd refers to has exited (the pidfd polls readable), now.
pub(crate) fn pidfd_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes the one pollfd on the stack passed, for the call.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r > 0)
}

/// The text of `/proc/<pid>/stat` (parsed by `process::parse_stat`).
pub(crate) fn read_stat_text(pid: i32) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
}

/// SIGKILL the process a pidfd refers to (never a process that reused its pid).
pub(crate) fn pidfd_send_sigkill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor valid for the call, a signal number,
    // a null siginfo pointer (the kernel fills in the default info) and zero flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A socket in `/proc/net/{tcp,tcp6,udp,udp6}` on a mapping's port: its inode and
/// owner uid.
struct PortSocket {
    inode: u64,
    uid: u32,
    listening: bool,
}

/// The sockets of this network namespace bound on `p`'s protocol and port at an
/// address that clashes with `p`'s (the same, or either is the wildcard).
fn port_sockets(p: &crate::settings::PortMapping) -> Vec<PortSocket> {
    use crate::settings::Protocol;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let tables: [&str; 2] = match p.protocol {
        Protocol::Tcp => ["/proc/net/tcp", "/proc/net/tcp6"],
        Protocol::Udp => ["/proc/net/udp", "/proc/net/udp6"],
    };
    let parse_ip = |hex: &str| -> Option<IpAddr> {
        // The kernel prints each 32-bit word of the address in host byte order.
        let word = |i: usize| {
            hex.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
                .map(u32::to_ne_bytes)
        };
        match hex.len() {
            8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
            32 => {
                let mut b = [0u8; 16];
                for i in 0..4 {
                    b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
                }
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    };
    let clashes = |ip: IpAddr| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        ip == p.host_ip || ip.is_unspecified() || p.host_ip.is_unspecified()
    };
    let mut found = Vec::new();
    for table in tables {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(uid), Some(inode)) =
                (f.get(1), f.get(3), f.get(7), f.get(9))
            else {
                continue;
            };
            let Some((ip, port)) = local.split_once(':') else { continue };
            let (Some(ip), Ok(port)) = (parse_ip(ip), u16::from_str_radix(port, 16)) else {
                continue;
            };
            let (Ok(uid), Ok(inode)) = (uid.parse(), inode.parse()) else { continue };
            // TIME_WAIT sockets have inode 0 and no process.
            if port == p.host_port && inode != 0 && clashes(ip) {
                found.push(PortSocket { inode, uid, listening: *st == "0A" });
            }
        }
    }
    // A listener first: it is the one a user recognises.
    found.sort_by_key(|s| !s.listening);
    found
}

/// The socket inodes among `pid`'s descriptors (`socket:[N]` links).
fn socket_inodes(pid: &str) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.filter_map(|e| {
        let target = std::fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// Who holds `p`: the first process whose descriptors include a clashing socket
/// (pid and command line), else the socket's owner when it is another uid.
pub(crate) fn port_holder(p: &crate::settings::PortMapping) -> crate::ports::Holder {
    use crate::ports::Holder;
    let sockets = port_sockets(p);
    if sockets.is_empty() {
        return Holder::Unknown;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return Holder::Unknown };
    for e in procs.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let inodes = socket_inodes(pid);
        if sockets.iter().any(|s| inodes.contains(&s.inode)) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            let command = crate::echo::echo(&words.join(" ")).to_string();
            return Holder::Process { pid: pid.parse().unwrap_or(0), command };
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    match sockets.iter().find(|s| s.uid != me) {
        Some(s) => Holder::OtherUser { uid: s.uid },
        None => Holder::Unknown,
    }
}

/// Whether process `pid` holds a socket bound on `p` (passt has bound the port);
/// `None` when its descriptors cannot be read (a process that made itself
/// non-dumpable, seen by a user without `CAP_SYS_PTRACE`).
pub(crate) fn holds_port(pid: i32, p: &crate::settings::PortMapping) -> Option<bool> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let inodes = socket_inodes(&pid.to_string());
    Some(port_sockets(p).iter().any(|s| inodes.contains(&s.inode)))
}
