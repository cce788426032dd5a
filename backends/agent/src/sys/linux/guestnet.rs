//! Guest-side network setup: inside a libkrun guest with a network (`eth0`, backed by
//! the box's passt), configure IPv4 with DHCP before the agent reports ready, so a
//! `--network` box comes up with its address, default route and resolver.
//!
//! libkrun's own init has a DHCP client (`KRUN_DHCP=1`), but it sends only a
//! DISCOVER with Rapid Commit (RFC 4039) and accepts only an immediate ACK; passt
//! releases before 2024 (Debian 12's) answer with an OFFER, so the guest was left with
//! an IPv6 link-local address only. [`configure`] runs the full exchange (DISCOVER,
//! OFFER, REQUEST, ACK), and does nothing when `eth0` is absent or already has an IPv4
//! address (a newer passt answered libkrun's init).
//!
//! Message building and parsing ([`discover`], [`request`], [`parse_reply`],
//! [`udp_payload`]) are pure. [`configure`] sends from a UDP socket bound to port 68 on
//! the interface and reads replies from an `AF_PACKET` socket on it (the same passt
//! sends its OFFER unicast to the address it offers, which the kernel's UDP stack
//! drops while the interface has none), then sets the address, netmask and default
//! route with ioctls and writes the resolvers.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the DHCP server handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address (`yiaddr`).
    pub address: Ipv4Addr,
    /// The netmask (option 1; /24 when absent).
    pub netmask: Ipv4Addr,
    /// The default gateway (option 3).
    pub router: Option<Ipv4Addr>,
    /// Name servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// The server (option 54, else the reply's source).
    pub server: Option<Ipv4Addr>,
    /// The MTU (option 26).
    pub mtu: Option<u16>,
}

/// Why the guest network could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A socket or ioctl call failed.
    #[error("{iface}: {what}: {source}")]
    Io {
        /// The interface.
        iface: String,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No usable answer in time.
    #[error("{iface}: no DHCP {expected} within {waited:?} ({sent} requests sent)")]
    NoAnswer {
        /// The interface.
        iface: String,
        /// OFFER or ACK.
        expected: &'static str,
        /// How long.
        waited: Duration,
        /// How many messages went out.
        sent: u32,
    },
}

/// The MTU of a virtio-net device without offloads; a lease never raises it.
pub const DEFAULT_MTU: u16 = 1500;

const MAGIC: [u8; 4] = [0x63, 0x82, 0x53, 0x63];
const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

fn header(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = OP_REQUEST;
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // broadcast: we have no address yet
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    m
}

/// A DHCPDISCOVER from `mac`.
pub fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut m = header(xid, mac);
    m.extend_from_slice(&[53, 1, DISCOVER, 55, 4, 1, 3, 6, 26, 255]);
    m
}

/// A DHCPREQUEST for `offer`.
pub fn request(xid: u32, mac: [u8; 6], offer: &Lease) -> Vec<u8> {
    let mut m = header(xid, mac);
    m.extend_from_slice(&[53, 1, REQUEST, 50, 4]);
    m.extend_from_slice(&offer.address.octets());
    if let Some(s) = offer.server {
        m.extend_from_slice(&[54, 4]);
        m.extend_from_slice(&s.octets());
    }
    m.extend_from_slice(&[55, 4, 1, 3, 6, 26, 255]);
    m
}

/// Parse a reply to transaction `xid`: its message type and lease. `None` for anything
/// else (not a reply, another transaction, malformed). Never panics on input.
pub fn parse_reply(b: &[u8], xid: u32) -> Option<(u8, Lease)> {
    if b.len() < 240 || b[0] != OP_REPLY || b[4..8] != xid.to_be_bytes() || b[236..240] != MAGIC {
        return None;
    }
    let ip = |s: &[u8]| Ipv4Addr::new(s[0], s[1], s[2], s[3]);
    let mut lease = Lease {
        address: ip(&b[16..20]),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: None,
        dns: Vec::new(),
        server: None,
        mtu: None,
    };
    let mut kind = None;
    let mut i = 240;
    while i < b.len() {
        let code = b[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 || i + 1 >= b.len() {
            break;
        }
        let len = b[i + 1] as usize;
        let Some(v) = b.get(i + 2..i + 2 + len) else { break };
        match (code, len) {
            (53, 1) => kind = Some(v[0]),
            (1, 4) => lease.netmask = ip(v),
            (3, l) if l >= 4 => lease.router = Some(ip(v)),
            (6, l) if l >= 4 => lease.dns = v.chunks_exact(4).map(ip).collect(),
            (54, 4) => lease.server = Some(ip(v)),
            (26, 2) => lease.mtu = Some(u16::from_be_bytes([v[0], v[1]])),
            _ => {}
        }
        i += 2 + len;
    }
    Some((kind?, lease))
}

/// Whether `iface` exists, and its IPv4 address if it has one.
fn ipv4_of(sock: &UdpSocket, iface: &str) -> Option<Option<Ipv4Addr>> {
    let mut ifr = ifreq(iface);
    // SAFETY: ifr is a valid, initialised ifreq with a NUL-terminated name; the kernel
    // writes at most sizeof(ifreq) bytes into it.
    let flags = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    if flags < 0 {
        return None;
    }
    let mut ifr = ifreq(iface);
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFADDR, &mut ifr) } < 0 {
        return Some(None);
    }
    // SAFETY: SIOCGIFADDR filled ifru_addr with a sockaddr_in (AF_INET socket).
    let sin: libc::sockaddr_in =
        unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(ifr.ifr_ifru.ifru_addr).cast()) };
    Some(Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
}

fn ifreq(iface: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    ifr
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; read_unaligned copies.
    unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(sin).cast()) }
}

/// Configure `iface` with DHCP unless it is absent or already has an IPv4 address.
/// Returns the lease applied, or `None` when there was nothing to do. Writes
/// `resolv` (e.g. `/etc/resolv.conf`) when the server names resolvers.
pub fn configure(iface: &str, resolv: &Path, timeout: Duration) -> Result<Option<Lease>, NetError> {
    let err = |what: &'static str| {
        move |source: io::Error| NetError::Io { iface: iface.to_owned(), what, source }
    };
    let sock =
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).map_err(err("socket"))?;
    match ipv4_of(&sock, iface) {
        None => return Ok(None),
        Some(Some(a)) => {
            tracing::info!(iface, address = %a, "network already configured");
            return Ok(None);
        }
        Some(None) => {}
    }
    drop(sock);
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
        .map_err(err("bind to port 68"))?;
    sock.set_broadcast(true).map_err(err("SO_BROADCAST"))?;
    let name = CString::new(iface).map_err(|_| NetError::Io {
        iface: iface.to_owned(),
        what: "interface name",
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    // SAFETY: name is a valid NUL-terminated string of the given length.
    if unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.as_bytes_with_nul().len() as libc::socklen_t,
        )
    } < 0
    {
        return Err(err("SO_BINDTODEVICE")(io::Error::last_os_error()));
    }
    let mut up = ifreq(iface);
    // SAFETY: ifr is a valid ifreq with a NUL-terminated name.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut up) } < 0 {
        return Err(err("SIOCGIFFLAGS")(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    unsafe { up.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: ifr valid, flags set from the kernel's own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &up) } < 0 {
        return Err(err("bring the interface up")(io::Error::last_os_error()));
    }
    let mut hw = ifreq(iface);
    // SAFETY: ifr valid as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut hw) } < 0 {
        return Err(err("SIOCGIFHWADDR")(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
    let data = unsafe { hw.ifr_ifru.ifru_hwaddr.sa_data };
    let mac =
        [data[0] as u8, data[1] as u8, data[2] as u8, data[3] as u8, data[4] as u8, data[5] as u8];
    let xid = std::process::id() ^ 0x6273_0000;
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

    // Replies may be unicast to the offered address, which the interface does not have
    // yet (passt before 2024 ignores the broadcast flag): the kernel's UDP stack drops
    // them, so they are read from a packet socket on the interface instead.
    let raw = packet_socket(iface).map_err(err("open a packet socket"))?;
    let exchange = |msg: &[u8], want: u8, expected: &'static str| -> Result<Lease, NetError> {
        let t0 = Instant::now();
        let mut sent = 0;
        let mut buf = [0u8; 1500];
        while t0.elapsed() < timeout {
            sock.send_to(msg, dest).map_err(err("send"))?;
            sent += 1;
            let resend = Instant::now() + Duration::from_millis(500);
            while Instant::now() < resend {
                let wait =
                    resend.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                match recv_timeout(&raw, &mut buf, wait) {
                    Ok(n) => match udp_payload(&buf[..n], 68)
                        .and_then(|(p, from)| parse_reply(p, xid).map(|r| (r, from)))
                    {
                        Some(((k, mut l), from)) if k == want => {
                            l.server.get_or_insert(from);
                            return Ok(l);
                        }
                        Some(((NAK, _), _)) => tracing::warn!(iface, "DHCP NAK; retrying"),
                        _ => {}
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(err("receive")(e)),
                }
            }
        }
        Err(NetError::NoAnswer { iface: iface.to_owned(), expected, waited: timeout, sent })
    };
    let offer = exchange(&discover(xid, mac), OFFER, "OFFER")?;
    let lease = exchange(&request(xid, mac, &offer), ACK, "ACK")?;

    ioctl_ifr(&sock, iface, libc::SIOCSIFADDR, |r| r.ifr_ifru.ifru_addr = sockaddr(lease.address))
        .map_err(err("set the address"))?;
    ioctl_ifr(&sock, iface, libc::SIOCSIFNETMASK, |r| {
        r.ifr_ifru.ifru_netmask = sockaddr(lease.netmask)
    })
    .map_err(err("set the netmask"))?;
    // Only ever lower the MTU: passt offers 65520, but libkrun's virtio-net (boxsock
    // negotiates no offloads) gives the guest 1518-byte receive buffers, so a larger MTU
    // makes the guest advertise an MSS whose segments it then cannot receive.
    if let Some(mtu) = lease.mtu.filter(|m| *m < DEFAULT_MTU) {
        let _ = ioctl_ifr(&sock, iface, libc::SIOCSIFMTU, |r| r.ifr_ifru.ifru_mtu = i32::from(mtu));
    }
    if let Some(gw) = lease.router {
        // SAFETY: rtentry is plain old data; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
        rt.rt_dev = name.as_ptr().cast_mut();
        // SAFETY: rt is initialised; rt_dev points to `name`, alive for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(err("add the default route")(e));
            }
        }
    }
    if !lease.dns.is_empty() {
        let text: String = lease.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        std::fs::write(resolv, text).map_err(err("write the resolver configuration"))?;
    }
    tracing::info!(iface, address = %lease.address, netmask = %lease.netmask, router = ?lease.router, dns = ?lease.dns, "network configured with DHCP");
    Ok(Some(lease))
}

/// The UDP payload of an IPv4 packet to `port`, and its source address.
pub fn udp_payload(ip: &[u8], port: u16) -> Option<(&[u8], Ipv4Addr)> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let udp = ip.get(ihl..total)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    Some((&udp[8..], Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])))
}

/// An `AF_PACKET` datagram socket receiving the IPv4 packets of `iface`.
fn packet_socket(iface: &str) -> io::Result<OwnedFd> {
    let name = CString::new(iface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: name is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, i32::from(proto))
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: sll is an initialised sockaddr_ll of the given size.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn recv_timeout(fd: &OwnedFd, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: pfd is one valid pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::ErrorKind::TimedOut.into()),
        _ => {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
        }
    }
}

fn ioctl_ifr(
    sock: &UdpSocket,
    iface: &str,
    req: libc::Ioctl,
    set: impl FnOnce(&mut libc::ifreq),
) -> io::Result<()> {
    let mut ifr = ifreq(iface);
    set(&mut ifr);
    // SAFETY: ifr is a valid ifreq for this request (name set, the union field the
    // request reads filled by `set`).
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, &mut ifr) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(xid: u32, kind: u8, opts: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = OP_REPLY;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 9, 1]);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(opts);
        m.push(255);
        m
    }

    #[test]
    fn a_passt_like_offer_parses_into_a_lease() {
        let opts = [
            1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 9, 254, 6, 8, 10, 0, 9, 254, 9, 9, 9, 9, 54, 4,
            10, 0, 9, 254, 26, 2, 0x05, 0xdc,
        ];
        let (k, l) = parse_reply(&reply(7, OFFER, &opts), 7).unwrap();
        assert_eq!(k, OFFER);
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 9, 1));
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 9, 254)));
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 9, 254), Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(l.server, Some(Ipv4Addr::new(10, 0, 9, 254)));
        assert_eq!(l.mtu, Some(1500));
    }

    #[test]
    fn other_transactions_requests_and_garbage_are_ignored_without_panicking() {
        assert!(parse_reply(&reply(7, OFFER, &[]), 8).is_none());
        assert!(parse_reply(&discover(7, [0; 6]), 7).is_none());
        let r = reply(7, ACK, &[3, 200]);
        let _ = parse_reply(&r, 7);
        for n in 0..r.len() {
            let _ = parse_reply(&r[..n], 7);
        }
        assert!(parse_reply(&[0xff; 300], 7).is_none());
    }

    #[test]
    fn udp_payloads_are_found_only_for_the_port_and_never_panic() {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 9, 254, 10, 0, 9, 1];
        ip.extend_from_slice(&[0, 67, 0, 68, 0, 11, 0, 0, b'a', b'b', b'c']);
        let total = ip.len() as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(udp_payload(&ip, 68), Some((&b"abc"[..], Ipv4Addr::new(10, 0, 9, 254))));
        assert_eq!(udp_payload(&ip, 67), None);
        for n in 0..ip.len() {
            let _ = udp_payload(&ip[..n], 68);
        }
        assert_eq!(udp_payload(&[0x4f; 30], 68), None);
    }

    #[test]
    fn discover_and_request_carry_the_mac_broadcast_flag_and_requested_address() {
        let mac = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
        let d = discover(42, mac);
        assert_eq!(&d[28..34], &mac);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[240..243], &[53, 1, DISCOVER]);
        let offer = Lease {
            address: Ipv4Addr::new(10, 0, 9, 1),
            netmask: Ipv4Addr::BROADCAST,
            router: None,
            dns: vec![],
            server: Some(Ipv4Addr::new(10, 0, 9, 254)),
            mtu: None,
        };
        let r = request(42, mac, &offer);
        assert_eq!(&r[240..243], &[53, 1, REQUEST]);
        assert!(r.windows(6).any(|w| w == [50, 4, 10, 0, 9, 1]));
        assert!(r.windows(6).any(|w| w == [54, 4, 10, 0, 9, 254]));
    }
}
