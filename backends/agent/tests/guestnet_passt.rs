//! The guest network setup (`guestnet::configure`) against a real passt, without a VM:
//! a TAP device in a fresh network namespace stands in for the guest's `eth0`, and
//! two threads pump its frames to and from passt's socket (qemu's stream protocol: a
//! 4-byte big-endian length, then the frame). Needs root, `/dev/net/tun` and passt.
//!
//! Why the agent runs DHCP itself: Debian 12's passt answers a DISCOVER with an OFFER,
//! which libkrun's init (Rapid Commit only) ignores, so without it a `--network` guest
//! has no IPv4 (docs/backends.md, "The guest network").

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_agent::guestnet;
use boxsock_test_support::{Need, skip};

fn passt_bin() -> Option<PathBuf> {
    let p = std::env::var_os("PATH")?;
    std::env::split_paths(&p).map(|d| d.join("passt")).find(|p| p.exists())
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TAP device named `name` in the calling thread's network namespace.
fn tap(name: &str) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an initialised ifreq on an open tun fd.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

fn pump(tap: std::fs::File, sock: UnixStream) {
    let (mut tap_r, mut tap_w) = (tap.try_clone().unwrap(), tap);
    let (mut sock_r, mut sock_w) = (sock.try_clone().unwrap(), sock);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = tap_r.read(&mut buf) {
            let mut out = (n as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&buf[..n]);
            if sock_w.write_all(&out).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let mut len = [0u8; 4];
        while sock_r.read_exact(&mut len).is_ok() {
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            if sock_r.read_exact(&mut frame).is_err() {
                break;
            }
            if std::env::var_os("PUMP_DEBUG").is_some() && frame.len() > 34 {
                eprintln!(
                    "from passt: {} bytes ethertype {:02x}{:02x} dst {:?} ip dst {:?}",
                    frame.len(),
                    frame[12],
                    frame[13],
                    &frame[0..6],
                    &frame[30..34]
                );
            }
            if tap_w.write_all(&frame).is_err() {
                break;
            }
        }
    });
}

#[test]
fn root_dhcp_against_a_real_passt_configures_address_route_and_resolver() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(Need::Root, "needs root for a TAP device in a network namespace");
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        skip(Need::Kernel("/dev/net/tun"), "needs /dev/net/tun for the guest's TAP");
        return;
    }
    let Some(bin) = passt_bin() else {
        skip(Need::Program { name: "passt", package: "passt" }, "passt is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("net.sock");
    let log = std::fs::File::create(dir.path().join("passt.log")).unwrap();
    let mut passt = Kill(
        Command::new(&bin)
            .args(["--foreground", "--quiet", "--runas", "0:0", "--socket"])
            .arg(&sock_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let passt_log = || std::fs::read_to_string(dir.path().join("passt.log")).unwrap_or_default();
    let sock = loop {
        if let Some(status) = passt.0.try_wait().unwrap() {
            panic!(
                "passt exited ({status}) before binding {}; its output: {}",
                sock_path.display(),
                passt_log()
            );
        }
        match UnixStream::connect(&sock_path) {
            Ok(s) => break s,
            // Generous: a contended machine must not turn into a failure; polled, so
            // no slower when passt is quick.
            Err(_) if t0.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                // A real failure (passt is installed and was started), never a skip.
                panic!("passt did not come up within 30 s ({e}); its output: {}", passt_log());
            }
        }
    };
    let resolv = dir.path().join("resolv.conf");
    let resolv2 = resolv.clone();
    // The "guest": a thread in its own network namespace, with a TAP as eth0.
    let guest = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let t = tap("eth0").expect("TAP eth0");
        pump(t.try_clone().unwrap(), sock);
        let lease = guestnet::configure("eth0", &resolv2, Duration::from_secs(10));
        // What the kernel now says, from inside the namespace.
        let addrs = Command::new("ip")
            .args(["-4", "addr", "show", "dev", "eth0"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let routes = Command::new("ip")
            .args(["-4", "route"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let link = Command::new("ip")
            .args(["link", "show", "dev", "eth0"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        // Configuring again is a no-op: the address is there.
        let again = guestnet::configure("eth0", &resolv2, Duration::from_secs(1));
        let absent = guestnet::configure("eth9", &resolv2, Duration::from_secs(1));
        drop(t);
        (lease, addrs, routes, link, again, absent)
    });
    let (lease, addrs, routes, link, again, absent) = guest.join().unwrap();
    drop(passt);
    let lease = lease.unwrap_or_else(|e| panic!("{e}")).expect("a lease");
    let addrs = addrs.unwrap_or_default();
    let routes = routes.unwrap_or_default();
    assert!(
        addrs.contains(&format!("inet {}/", lease.address)),
        "lease {lease:?}, ip addr: {addrs}"
    );
    let gw = lease.router.expect("passt names a router");
    assert!(routes.contains(&format!("default via {gw} dev eth0")), "ip route: {routes}");
    if !lease.dns.is_empty() {
        let text = std::fs::read_to_string(&resolv).unwrap();
        assert!(text.contains(&format!("nameserver {}", lease.dns[0])), "{text}");
    }
    // passt offers MTU 65520; a device without offloads keeps 1500 (never raised).
    let link = link.unwrap_or_default();
    assert!(link.contains("mtu 1500"), "lease {lease:?}; ip link: {link}");
    assert!(matches!(again, Ok(None)), "{again:?}");
    assert!(matches!(absent, Ok(None)), "{absent:?}");
}
