//! Linux: the shim's jail is Landlock, the guest kernel is `libkrunfw.so.5`, and a
//! listening socket is seen in `/proc/net/unix`.

use std::path::Path;

use crate::jail::{JailError, JailSpec};

/// The library libkrun 1.19 loads at `krun_start_enter`.
pub(crate) const LIBKRUNFW: &str = "libkrunfw.so.5";

/// Apply `spec` to the calling process (irreversible): Landlock.
pub(crate) fn apply_jail(spec: &JailSpec) -> Result<(), JailError> {
    crate::jail::landlock_jail::apply(spec)
}

/// Whether a socket bound at `path` is listening, read from `/proc/net/unix` (no side
/// effect on the listener); a connect probe when that table cannot be read.
pub(crate) fn is_listening(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    let Ok(table) = std::fs::read("/proc/net/unix") else {
        return std::os::unix::net::UnixStream::connect(path).is_ok();
    };
    let want = path.as_os_str().as_bytes();
    table.split(|b| *b == b'\n').skip(1).any(|line| {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').filter(|f| !f.is_empty()).collect();
        let flags = std::str::from_utf8(fields.get(3).copied().unwrap_or_default())
            .ok()
            .and_then(|f| u32::from_str_radix(f, 16).ok());
        // The path is the last field and may contain spaces.
        fields.len() >= 8
            && line.ends_with(want)
            && line.len() > want.len()
            && line[line.len() - want.len() - 1] == b' '
            && flags.is_some_and(|f| f & SO_ACCEPTCON != 0)
    })
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
fn port_sockets(p: &boxsock_core::settings::PortMapping) -> Vec<PortSocket> {
    use boxsock_core::settings::Protocol;
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
pub(crate) fn port_holder(p: &boxsock_core::settings::PortMapping) -> crate::ports::Holder {
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
            let command = boxsock_core::echo::echo(&words.join(" ")).to_string();
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
pub(crate) fn holds_port(pid: i32, p: &boxsock_core::settings::PortMapping) -> Option<bool> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let inodes = socket_inodes(&pid.to_string());
    Some(port_sockets(p).iter().any(|s| inodes.contains(&s.inode)))
}
