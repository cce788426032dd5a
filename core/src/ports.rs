//! Published ports (`-p`), shared by the backends that forward them through passt
//! (libkrun) or pasta (sandbox): the options that forward them (the two take the same
//! `ADDR/HOST_PORT:BOX_PORT` specs), and the check that each host address and port can
//! be bound before the forwarder starts, naming the process that holds one that cannot
//! (read from `/proc`, in the core's `sys`).

use std::net::{IpAddr, SocketAddr};

use crate::settings::{PortMapping, Protocol};

/// The passt (and pasta) options that forward `ports` to the box: one `-t`/`-u` per mapping,
/// `ADDR/HOST_PORT:BOX_PORT`, so passt binds exactly the address asked for (loopback
/// unless the user named another) and exits, naming the option, when it cannot.
pub fn passt_args(ports: &[PortMapping]) -> Vec<String> {
    let mut v = Vec::with_capacity(ports.len() * 2);
    for p in ports {
        v.push(match p.protocol {
            Protocol::Tcp => "--tcp-ports".to_owned(),
            Protocol::Udp => "--udp-ports".to_owned(),
        });
        v.push(format!("{}/{}:{}", p.host_ip, p.host_port, p.box_port));
    }
    v
}

/// `ADDR:PORT/PROTO` of a mapping's host side (`[::1]:8080/tcp` for IPv6).
pub fn host_side(p: &PortMapping) -> String {
    format!("{}/{}", SocketAddr::new(p.host_ip, p.host_port), p.protocol)
}

/// The process holding a host port, as far as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process this user can see: its pid and command line (escaped, bounded).
    Process {
        /// Its pid.
        pid: i32,
        /// Its command line, quoted by `echo`.
        command: String,
    },
    /// A socket owned by another uid whose process this user cannot see.
    OtherUser {
        /// The socket's owner.
        uid: u32,
    },
    /// Nothing in this network namespace's tables names it (gone meanwhile, or a
    /// socket without a process).
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Process { pid, command } => write!(f, "held by pid {pid}, command {command}"),
            Holder::OtherUser { uid } => {
                write!(f, "held by another user's process (uid {uid}; its pid cannot be read)")
            }
            Holder::Unknown => f.write_str("its holder could not be found in /proc"),
        }
    }
}

/// Why a host port cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Another socket is bound there.
    #[error("host port {} is already in use, {holder}", host_side(port))]
    InUse {
        /// The mapping.
        port: PortMapping,
        /// Who holds it.
        holder: Holder,
    },
    /// The address is not one of this host's.
    #[error("host port {}: {} is not an address of this host", host_side(port), port.host_ip)]
    NoSuchAddress {
        /// The mapping.
        port: PortMapping,
    },
    /// A port below 1024 without the privilege to bind it.
    #[error(
        "host port {}: binding a port below 1024 needs CAP_NET_BIND_SERVICE \
         (or a lower net.ipv4.ip_unprivileged_port_start)",
        host_side(port)
    )]
    Privileged {
        /// The mapping.
        port: PortMapping,
    },
    /// passt exited or timed out without binding it, and the port is free now.
    #[error("host port {}: passt did not bind it ({what})", host_side(port))]
    NotBound {
        /// The mapping.
        port: PortMapping,
        /// How passt ended, or how long it was waited for.
        what: String,
    },
    /// Any other failure of the trial bind.
    #[error("host port {}: cannot bind it: {errno}", host_side(port))]
    Other {
        /// The mapping.
        port: PortMapping,
        /// The error.
        errno: nix::errno::Errno,
    },
}

/// Whether passt will be able to bind `p`: a trial bind with the options passt uses
/// (`SO_REUSEADDR`, so a port left in TIME_WAIT is free, as it is for passt), closed at
/// once. The kernel is the judge; `/proc` only names the holder of a busy port.
pub fn check_free(p: &PortMapping) -> Result<(), PortError> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
    };
    let family = match p.host_ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let ty = match p.protocol {
        Protocol::Tcp => SockType::Stream,
        Protocol::Udp => SockType::Datagram,
    };
    let other = |errno| PortError::Other { port: *p, errno };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None).map_err(other)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(other)?;
    let addr = SockaddrStorage::from(SocketAddr::new(p.host_ip, p.host_port));
    match bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EADDRINUSE) => {
            Err(PortError::InUse { port: *p, holder: crate::sys::port_holder(p) })
        }
        Err(nix::errno::Errno::EADDRNOTAVAIL) => Err(PortError::NoSuchAddress { port: *p }),
        Err(nix::errno::Errno::EACCES) => Err(PortError::Privileged { port: *p }),
        Err(e) => Err(other(e)),
    }
}

impl PortError {
    /// The mapping it is about.
    pub fn port(&self) -> &PortMapping {
        match self {
            PortError::InUse { port, .. }
            | PortError::NoSuchAddress { port }
            | PortError::Privileged { port }
            | PortError::NotBound { port, .. }
            | PortError::Other { port, .. } => port,
        }
    }
}

/// [`check_free`] for each mapping, in order: the first that cannot be bound.
pub fn check_all_free(ports: &[PortMapping]) -> Result<(), PortError> {
    ports.iter().try_for_each(check_free)
}

/// Whether process `pid` holds a socket bound on `p` (the forwarder has bound the
/// port); `None` when its descriptors cannot be read (a process that made itself
/// non-dumpable, seen by a user without `CAP_SYS_PTRACE`).
pub fn holds_port(pid: i32, p: &PortMapping) -> Option<bool> {
    crate::sys::holds_port(pid, p)
}
