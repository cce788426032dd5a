//! Typed box settings that users write on the command line and embedders pass to
//! `CreateOptions`: a [`ByteSize`] (`512m`, `2g`), a [`Volume`]
//! (`HOST_DIR:GUEST_PATH[:ro]`) and a [`PortMapping`]
//! (`[HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp]`). Each parses from its docker-style text
//! and prints back to it; parse errors name the input (escaped and bounded) and what was
//! expected. What needs the filesystem (a host directory exists) is checked by the
//! runtime at create, and what a backend cannot honour by `Backend::check_settings`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::echo;

/// A parse or validation error of a typed setting: which setting, the input as the user
/// gave it (escaped, bounded) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {input}: {reason}")]
pub struct SettingError {
    /// The setting (`memory`, `volume`, `publish`, `disk size`).
    pub setting: &'static str,
    /// The input, quoted and escaped by [`echo::echo`].
    pub input: String,
    /// What is wrong and what was expected.
    pub reason: String,
}

impl SettingError {
    fn new(setting: &'static str, input: &str, reason: impl Into<String>) -> Self {
        SettingError { setting, input: echo::echo(input).to_string(), reason: reason.into() }
    }
}

/// A size in bytes, written as docker writes memory: a whole number with an optional
/// binary unit `b`, `k`, `m`, `g` or `t` (case-insensitive, an optional trailing `b` or
/// `ib`: `512m`, `2G`, `10GiB`, `4096`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in whole mebibytes, rounded up.
    pub const fn mib_ceil(self) -> u64 {
        self.0.div_ceil(1024 * 1024)
    }
}

impl FromStr for ByteSize {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| SettingError::new("size", s, reason);
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if digits == 0 {
            return Err(bad("expected a whole number with an optional unit (512m, 2g)"));
        }
        let n: u64 = t[..digits].parse().map_err(|_| bad("the number is too large"))?;
        let unit = t[digits..].to_ascii_lowercase();
        let shift = match unit.as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(bad("unknown unit: expected b, k, m, g or t")),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| bad("the size does not fit in 64 bits"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly (`512m`, `2g`, `1000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "t"), (30, "g"), (20, "m"), (10, "k")] {
            if self.0 != 0 && self.0 % (1u64 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A host directory shown to the box at a guest path (`-v HOST_DIR:GUEST_PATH[:ro]`).
/// Both paths are absolute; the runtime canonicalises `host` at create and refuses one
/// that is missing or not a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Volume {
    /// The host directory.
    pub host: PathBuf,
    /// Where the box sees it (absolute, without `.` or `..`).
    pub guest: PathBuf,
    /// Whether the box may only read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl Volume {
    /// A volume; [`Volume::check`] validates its paths.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<PathBuf>, read_only: bool) -> Self {
        Volume { host: host.into(), guest: guest.into(), read_only }
    }

    /// Both paths absolute, the guest path plain (no `.`, `..`) and not `/` itself.
    pub fn check(&self) -> Result<(), SettingError> {
        let input = self.to_string();
        let bad = |reason: String| SettingError::new("volume", &input, reason);
        if !self.host.is_absolute() {
            return Err(bad(format!(
                "the host directory {} is not an absolute path",
                echo::path(&self.host)
            )));
        }
        if !plain_absolute(&self.guest) {
            return Err(bad(format!(
                "the guest path {} is not an absolute path without `.` or `..`",
                echo::path(&self.guest)
            )));
        }
        if self.guest == Path::new("/") {
            return Err(bad("the guest path is the box's root `/`".into()));
        }
        Ok(())
    }
}

fn plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl FromStr for Volume {
    type Err = SettingError;

    /// `HOST_DIR:GUEST_PATH`, `HOST_DIR:GUEST_PATH:ro` or `…:rw`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| SettingError::new("volume", s, reason);
        let parts: Vec<&str> = s.split(':').collect();
        let (host, guest, read_only) = match parts.as_slice() {
            [h, g] => (h, g, false),
            [h, g, "ro"] => (h, g, true),
            [h, g, "rw"] => (h, g, false),
            [_, _, _] => return Err(bad("the mode is not `ro` or `rw`")),
            _ => return Err(bad("expected HOST_DIR:GUEST_PATH[:ro]")),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(bad("expected HOST_DIR:GUEST_PATH[:ro], both paths given"));
        }
        let v = Volume::new(host, guest, read_only);
        v.check()?;
        Ok(v)
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.display(), self.guest.display())?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// The transport of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A box port published on the host (`-p [HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp]`).
/// Without a host address it is bound on `127.0.0.1` only, unlike docker's `0.0.0.0`:
/// a box's service reaches other machines only when the user names an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PortMapping {
    /// The host address the port is bound on.
    pub host_ip: IpAddr,
    /// The host port (1..=65535).
    pub host_port: u16,
    /// The box's port (1..=65535).
    pub box_port: u16,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortMapping {
    /// The default host address: loopback.
    pub const DEFAULT_HOST_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// `host_port` on loopback to `box_port`, TCP.
    pub fn tcp(host_port: u16, box_port: u16) -> Self {
        PortMapping { host_ip: Self::DEFAULT_HOST_IP, host_port, box_port, protocol: Protocol::Tcp }
    }

    /// The same mapping over another transport.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The same mapping bound on another host address.
    pub fn on(mut self, host_ip: IpAddr) -> Self {
        self.host_ip = host_ip;
        self
    }
}

impl FromStr for PortMapping {
    type Err = SettingError;

    /// `8080:80`, `127.0.0.1:8080:80`, `[::1]:8080:80/tcp`, `5353:53/udp`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| SettingError::new("publish", s, reason);
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Protocol::Tcp),
            Some((spec, "udp")) => (spec, Protocol::Udp),
            Some((_, other)) => {
                return Err(bad(format!(
                    "unknown protocol {}: expected tcp or udp",
                    echo::echo(other)
                )));
            }
            None => (s, Protocol::Tcp),
        };
        let (ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
            let (ip, rest) = rest
                .split_once("]:")
                .ok_or_else(|| bad("an IPv6 address needs `[ADDR]:`".into()))?;
            let ip: IpAddr =
                ip.parse().map_err(|_| bad(format!("{} is not an IP address", echo::echo(ip))))?;
            (Some(ip), rest)
        } else {
            match spec.matches(':').count() {
                1 => (None, spec),
                2 => {
                    let (ip, rest) = spec.split_once(':').expect("two colons");
                    let ip: IpAddr = ip
                        .parse()
                        .map_err(|_| bad(format!("{} is not an IP address", echo::echo(ip))))?;
                    (Some(ip), rest)
                }
                _ => return Err(bad("expected [HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp]".into())),
            }
        };
        let (h, b) = ports
            .split_once(':')
            .ok_or_else(|| bad("expected [HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp]".into()))?;
        let port = |p: &str, which: &str| -> Result<u16, SettingError> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(format!("the {which} port {} is not 1..=65535", echo::echo(p)))),
            }
        };
        Ok(PortMapping {
            host_ip: ip.unwrap_or(Self::DEFAULT_HOST_IP),
            host_port: port(h, "host")?,
            box_port: port(b, "box")?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            IpAddr::V6(ip) => write!(f, "[{ip}]:")?,
            IpAddr::V4(ip) => write!(f, "{ip}:")?,
        }
        write!(f, "{}:{}/{}", self.host_port, self.box_port, self.protocol)
    }
}

/// Checks that need no filesystem, across a box's volumes and ports: each volume's
/// paths ([`Volume::check`]), no two volumes on one guest path, and no two ports on
/// one host address, port and protocol.
pub fn check_volumes_and_ports(
    volumes: &[Volume],
    ports: &[PortMapping],
) -> Result<(), SettingError> {
    for (i, v) in volumes.iter().enumerate() {
        v.check()?;
        if let Some(other) = volumes[..i].iter().find(|o| o.guest == v.guest) {
            return Err(SettingError::new(
                "volume",
                &v.to_string(),
                format!(
                    "{} already has a volume ({other}): one volume per guest path",
                    echo::path(&v.guest)
                ),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let clash = ports[..i].iter().find(|o| {
            o.host_port == p.host_port
                && o.protocol == p.protocol
                && (o.host_ip == p.host_ip
                    || o.host_ip.is_unspecified()
                    || p.host_ip.is_unspecified())
        });
        if let Some(other) = clash {
            return Err(SettingError::new(
                "publish",
                &p.to_string(),
                format!("host port {} is published twice ({other})", p.host_port),
            ));
        }
    }
    Ok(())
}

/// A hostname the kernel takes and a user can read back: 1 to 64 bytes
/// (`HOST_NAME_MAX`), no NUL (the kernel would keep the bytes after it, every reader
/// would stop there) and no `/` (hostnames end up in file names, where it would make a
/// path). `Err` says why not.
pub fn check_hostname(name: &str) -> Result<(), String> {
    const MAX: usize = 64;
    if name.is_empty() {
        return Err("empty: give 1 to 64 bytes".into());
    }
    if name.len() > MAX {
        return Err(format!("{} bytes, above the kernel's limit of {MAX}", name.len()));
    }
    if name.contains('\0') {
        return Err("holds a NUL byte".into());
    }
    if name.contains('/') {
        return Err("holds a '/'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_print_back() {
        for (s, n) in [
            ("4096", 4096),
            ("512m", 512 << 20),
            ("512M", 512 << 20),
            ("2g", 2 << 30),
            ("10GiB", 10 << 30),
            ("1t", 1 << 40),
            ("3kb", 3 << 10),
        ] {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)), "{s}");
        }
        assert_eq!(ByteSize::mib(512).to_string(), "512m");
        assert_eq!(ByteSize::gib(2).to_string(), "2g");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(1 + (1 << 20)).mib_ceil(), 2);
        for bad in ["", "m", "12q", "-1m", "1.5g", "99999999999999999999", "16777216t"] {
            let e = bad.parse::<ByteSize>().unwrap_err();
            assert!(e.to_string().contains("size"), "{bad}: {e}");
        }
    }

    #[test]
    fn volumes_parse_and_refuse_relative_or_odd_paths() {
        let v: Volume = "/srv/data:/data:ro".parse().unwrap();
        assert_eq!(v, Volume::new("/srv/data", "/data", true));
        assert_eq!(v.to_string(), "/srv/data:/data:ro");
        assert!(!"/a:/b".parse::<Volume>().unwrap().read_only);
        assert!(!"/a:/b:rw".parse::<Volume>().unwrap().read_only);
        for (bad, says) in [
            ("data:/data", "not an absolute path"),
            ("/data:data", "guest path"),
            ("/data:/a/../b", "guest path"),
            ("/data:/", "root"),
            ("/data:/d:rx", "mode"),
            ("/data", "expected"),
            (":/d", "both paths"),
            ("/a:/b:ro:x", "expected"),
        ] {
            let e = bad.parse::<Volume>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn ports_parse_default_to_loopback_and_print_back() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(p, PortMapping::tcp(8080, 80));
        assert_eq!(p.to_string(), "127.0.0.1:8080:80/tcp");
        let p: PortMapping = "0.0.0.0:53:5353/udp".parse().unwrap();
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((p.host_port, p.box_port, p.protocol), (53, 5353, Protocol::Udp));
        let p: PortMapping = "[::1]:8443:443".parse().unwrap();
        assert_eq!(p.to_string(), "[::1]:8443:443/tcp");
        assert_eq!(p.to_string().parse::<PortMapping>(), Ok(p));
        for (bad, says) in [
            ("80", "expected"),
            ("0:80", "host port"),
            ("80:70000", "box port"),
            ("1.2.3:80:80", "IP address"),
            ("80:80/sctp", "protocol"),
            ("a:b:c:d", "expected"),
            ("[::1:80:80", "IPv6"),
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn one_volume_per_guest_path_and_one_mapping_per_host_port() {
        let a = Volume::new("/a", "/data", false);
        let b = Volume::new("/b", "/data", true);
        let e = check_volumes_and_ports(&[a.clone(), b], &[]).unwrap_err().to_string();
        assert!(e.contains("one volume per guest path"), "{e}");
        let p = PortMapping::tcp(8080, 80);
        let e = check_volumes_and_ports(std::slice::from_ref(&a), &[p, PortMapping::tcp(8080, 81)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("published twice"), "{e}");
        let udp = PortMapping::tcp(8080, 80).with_protocol(Protocol::Udp);
        assert_eq!(check_volumes_and_ports(&[a], &[p, udp]), Ok(()));
    }

    #[test]
    fn echoed_input_is_escaped_and_bounded() {
        let long = format!("\u{1b}[31m{}:/x", "a".repeat(10_000));
        let e = long.parse::<Volume>().unwrap_err().to_string();
        assert!(!e.contains('\u{1b}') && e.len() < 2_000, "{}", e.len());
    }
}
