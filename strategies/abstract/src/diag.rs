//! Who holds an abstract name: a `NETLINK_SOCK_DIAG` dump of the network namespace's
//! Unix sockets (`UNIX_DIAG_NAME`, and `UNIX_DIAG_UID` where the kernel reports it,
//! Linux ≥ 5.3), plus a best-effort search of `/proc/*/fd` for the process holding the
//! socket's inode (which sees every process only when run as root).
//!
//! Used to name a squatter when a bind finds its name taken. Every failure here is
//! reported as "unknown", never as an error of the bind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A socket bound at the name looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its inode (`socket:[ino]` in `/proc/<pid>/fd`, `Inode` in `/proc/net/unix`).
    pub inode: u32,
    /// The uid that created it, where the kernel reports it.
    pub uid: Option<u32>,
    /// A process holding a descriptor of it, where one could be found.
    pub pid: Option<i32>,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_UID: u16 = 7;
const NLMSG_HDR: usize = 16;
const UNIX_DIAG_MSG: usize = 16;

/// The sockets bound at abstract name `name` (without the leading NUL).
pub fn holders(name: &[u8]) -> io::Result<Vec<Holder>> {
    let mut found = dump(name)?;
    for h in &mut found {
        h.pid = pid_of_inode(h.inode);
    }
    Ok(found)
}

fn dump(name: &[u8]) -> io::Result<Vec<Holder>> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) just returned this descriptor; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    // nlmsghdr + unix_diag_req, native endian.
    let mut req = Vec::with_capacity(NLMSG_HDR + 24);
    req.extend_from_slice(&((NLMSG_HDR + 24) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.push(libc::AF_UNIX as u8); // sdiag_family
    req.push(0); // sdiag_protocol
    req.extend_from_slice(&0u16.to_ne_bytes()); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    req.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    req.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_UID).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // udiag_cookie: INET_DIAG_NOCOOKIE

    // SAFETY: sockaddr_nl is plain old data; all-zero is valid (pid 0 = the kernel).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` and `kernel` are valid for the lengths given for the whole call.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }

    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reading into a buffer we own, of the length given.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut msgs = &buf[..n as usize];
        if msgs.is_empty() {
            return Ok(found);
        }
        while msgs.len() >= NLMSG_HDR {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().expect("2 bytes"));
            if len < NLMSG_HDR || len > msgs.len() {
                return Err(io::Error::other(format!(
                    "malformed sock_diag message (length {len})"
                )));
            }
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => {
                    let errno = msgs
                        .get(NLMSG_HDR..NLMSG_HDR + 4)
                        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                    return Err(match errno {
                        Some(e) if e < 0 => io::Error::from_raw_os_error(-e),
                        _ => io::Error::other("sock_diag reported an error"),
                    });
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(h) = parse(&msgs[NLMSG_HDR..len], name) {
                        found.push(h);
                    }
                }
                _ => {}
            }
            msgs = &msgs[align4(len).min(msgs.len())..];
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One `unix_diag_msg` with its attributes; `Some` if its name is `\0name`.
fn parse(msg: &[u8], name: &[u8]) -> Option<Holder> {
    if msg.len() < UNIX_DIAG_MSG {
        return None;
    }
    let inode = u32::from_ne_bytes(msg[4..8].try_into().ok()?);
    let mut attrs = &msg[UNIX_DIAG_MSG..];
    let (mut matched, mut uid) = (false, None);
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes(attrs[0..2].try_into().ok()?));
        let kind = u16::from_ne_bytes(attrs[2..4].try_into().ok()?);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            UNIX_DIAG_NAME => matched = data.first() == Some(&0) && &data[1..] == name,
            UNIX_DIAG_UID if data.len() >= 4 => {
                uid = Some(u32::from_ne_bytes(data[..4].try_into().ok()?))
            }
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    matched.then_some(Holder { inode, uid, pid: None })
}

/// A process with a descriptor on socket inode `inode`, searching `/proc/*/fd`.
fn pid_of_inode(inode: u32) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    #[test]
    fn finds_our_own_listener_with_uid_inode_and_pid() {
        let name = format!("boxsock-test/diag/{}/{}", std::process::id(), rand::random::<u64>());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let hs = holders(name.as_bytes()).unwrap();
        assert_eq!(hs.len(), 1, "{hs:?}");
        let h = &hs[0];
        let st = nix::sys::stat::fstat(&l).unwrap();
        assert_eq!(u64::from(h.inode), st.st_ino);
        assert_eq!(h.uid, Some(nix::unistd::geteuid().as_raw()));
        assert_eq!(h.pid, Some(std::process::id() as i32));
        drop(l);
        assert!(holders(name.as_bytes()).unwrap().is_empty());
    }
}
