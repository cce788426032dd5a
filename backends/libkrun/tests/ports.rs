//! Published ports on the host side: the passt argv that forwards them, the check that
//! a host port is free (naming the process that holds it), and passt's own failure when
//! another process takes the port between the check and passt's bind.
//!
//! Real parts: real listeners held by child processes (busybox `httpd`, Debian's
//! python3 for UDP), the real kernel's bind as the judge, `/proc` as the source of the
//! holder, the real passt.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxsock_core::settings::{PortMapping, Protocol};
use boxsock_libkrun::passt::{Passt, PasstError, fd_args};
use boxsock_libkrun::ports::{Holder, PortError, check_free, passt_args};
use boxsock_test_support::{Need, skip};

const BUSYBOX: Need = Need::Program { name: "busybox", package: "busybox-static" };
const PYTHON: Need = Need::Program { name: "python3", package: "python3" };
const PASST: Need = Need::Program { name: "passt", package: "passt" };

fn find(name: &str) -> Option<PathBuf> {
    let p = std::env::var_os("PATH")?;
    std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.exists())
}

/// A port nobody holds right now (the kernel's choice for an ephemeral bind).
fn free_port(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        Protocol::Udp => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            return s.local_addr().unwrap().port();
        }
    }
    .local_addr()
    .unwrap()
    .port()
}

/// A child that is killed and reaped when dropped.
struct Holding(Child);
impl Drop for Holding {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until `p` is busy (the child has bound it), or panic after 60 s.
fn wait_busy(p: &PortMapping, child: &mut Holding) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while check_free(p).is_ok() {
        assert!(child.0.try_wait().unwrap().is_none(), "the holder exited");
        assert!(Instant::now() < deadline, "the holder never bound {p}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn httpd_on(busybox: &PathBuf, port: u16) -> Holding {
    let dir = std::env::temp_dir();
    Holding(
        Command::new(busybox)
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn the_passt_argv_forwards_each_port_on_its_address() {
    let ports = [
        PortMapping::tcp(8080, 80),
        PortMapping::tcp(5353, 53).with_protocol(Protocol::Udp).on(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        PortMapping::tcp(8443, 443).on("0.0.0.0".parse().unwrap()),
    ];
    assert_eq!(
        passt_args(&ports),
        [
            "--tcp-ports",
            "127.0.0.1/8080:80",
            "--udp-ports",
            "::1/5353:53",
            "--tcp-ports",
            "0.0.0.0/8443:443"
        ]
    );
    assert_eq!(
        fd_args(1000, 1001, &ports[..1]),
        [
            "--foreground",
            "--quiet",
            "--runas",
            "1000:1001",
            "--fd",
            "3",
            "--tcp-ports",
            "127.0.0.1/8080:80"
        ]
    );
    // Without ports, passt forwards nothing (its default is `none`).
    assert_eq!(fd_args(0, 0, &[]).len(), 6);
}

/// A TCP port held by another process is refused naming the address, port, protocol
/// and the holder's pid and command; once the holder is gone the same port is free
/// (the control: the check tells the two apart).
#[test]
fn a_busy_tcp_port_names_its_holder_pid_and_command() {
    let Some(busybox) = find("busybox") else {
        skip(BUSYBOX, "busybox holds the port");
        return;
    };
    let port = free_port(Protocol::Tcp);
    let p = PortMapping::tcp(port, 80);
    assert_eq!(check_free(&p), Ok(()), "control: free before the holder runs");
    let mut holder = httpd_on(&busybox, port);
    wait_busy(&p, &mut holder);
    let e = check_free(&p).unwrap_err();
    match &e {
        PortError::InUse { port: got, holder: Holder::Process { pid, command } } => {
            assert_eq!(got, &p);
            assert_eq!(*pid, holder.0.id() as i32, "{e}");
            assert!(command.contains("httpd") && command.contains(&port.to_string()), "{e}");
        }
        other => panic!("not InUse with a process: {other:?}"),
    }
    let msg = e.to_string();
    for want in [format!("127.0.0.1:{port}/tcp"), "in use".into(), format!("pid {}", holder.0.id())]
    {
        assert!(msg.contains(&want), "{want:?} not in {msg}");
    }
    // The wildcard clashes with the specific address: 0.0.0.0 is refused too.
    let any = p.on("0.0.0.0".parse().unwrap());
    assert!(matches!(check_free(&any), Err(PortError::InUse { .. })), "{any}");
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(60);
    while check_free(&p).is_err() {
        assert!(Instant::now() < deadline, "the port stayed busy after its holder died");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The same for UDP (a socket bound without `SO_REUSEADDR`, as most programs do).
#[test]
fn a_busy_udp_port_names_its_holder() {
    let Some(python) = find("python3") else {
        skip(PYTHON, "python3 holds the UDP port");
        return;
    };
    let port = free_port(Protocol::Udp);
    let p = PortMapping::tcp(port, 53).with_protocol(Protocol::Udp);
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1',{port}))\ntime.sleep(600)"
    );
    let mut holder =
        Holding(Command::new(python).args(["-c", &script]).stdin(Stdio::null()).spawn().unwrap());
    wait_busy(&p, &mut holder);
    let e = check_free(&p).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}/udp")), "{msg}");
    assert!(msg.contains(&format!("pid {}", holder.0.id())) && msg.contains("python3"), "{msg}");
    // TCP on the same number is another port.
    let tcp = PortMapping::tcp(port, 53);
    let _ = check_free(&tcp); // may be taken by chance; only UDP is asserted
}

/// An address this host does not have is named as such.
#[test]
fn an_address_not_on_this_host_is_named() {
    let p = PortMapping::tcp(free_port(Protocol::Tcp), 80).on("192.0.2.1".parse().unwrap());
    let e = check_free(&p).unwrap_err();
    assert!(matches!(e, PortError::NoSuchAddress { .. }), "{e:?}");
    assert!(e.to_string().contains("192.0.2.1:"), "{e}");
}

/// passt losing the race: the port is free at the check, then another process takes it
/// before passt binds (a wrapper starts the holder, waits until it listens, then execs
/// the real passt). passt exits; the error names the port, the holder's pid and
/// passt's own words. Control: the same wrapper without the holder serves the port.
#[test]
fn passt_losing_the_race_for_a_port_is_reported_with_the_holder() {
    let (Some(passt), Some(busybox)) = (find("passt"), find("busybox")) else {
        skip(PASST, "passt and busybox are needed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("passt.log");
    let race = |take: bool| -> (Result<Passt, PasstError>, PortMapping, Option<i32>) {
        let port = free_port(Protocol::Tcp);
        let p = PortMapping::tcp(port, 80);
        let pidfile = dir.path().join(format!("holder-{port}"));
        let wrapper = dir.path().join(format!("passt-{port}"));
        let holder = if take {
            format!(
                "{bb} httpd -f -p 127.0.0.1:{port} -h / & echo $! > {pf}\n\
                 while ! grep -q ':{port:04X} 00000000:0000 0A' /proc/net/tcp; do \
                 {bb} sleep 0.05; done\n",
                bb = busybox.display(),
                pf = pidfile.display()
            )
        } else {
            String::new()
        };
        std::fs::write(&wrapper, format!("#!/bin/sh\n{holder}exec {} \"$@\"\n", passt.display()))
            .unwrap();
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let r = Passt::start_fd_forwarding(
            &wrapper,
            theirs.into(),
            &log,
            Duration::from_millis(100),
            &[p],
            Duration::from_secs(120),
        );
        drop(ours);
        let pid = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok());
        (r, p, pid)
    };
    // Control: no holder, passt holds the port.
    let (r, p, _) = race(false);
    let passt_proc = r.expect("passt forwards a free port");
    assert!(matches!(check_free(&p), Err(PortError::InUse { .. })), "passt holds {p}");
    passt_proc.kill();

    let (r, p, holder) = race(true);
    let holder = holder.expect("the wrapper started the holder");
    let _reap = KillOnDrop(holder);
    let e = r.expect_err("passt cannot bind a taken port");
    let PasstError::Port { cause, output } = &e else { panic!("not a port error: {e:?}") };
    assert_eq!(cause.port(), &p);
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{}/tcp", p.host_port)), "{msg}");
    assert!(msg.contains(&format!("pid {holder}")) && msg.contains("httpd"), "{msg}");
    let output = output.as_deref().unwrap_or_default();
    assert!(output.contains("Failed to bind"), "passt's own words: {output}");
}

struct KillOnDrop(i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::SIGKILL);
    }
}

/// Run by [`another_users_port_is_named_as_such_to_an_unprivileged_user`] in a child
/// that has dropped to uid 65534: print what `check_free` says of the port in
/// `BOXSOCK_TEST_PORT` (nothing when the variable is unset: a no-op as a plain test).
#[test]
fn helper_check_port_from_env() {
    let Ok(port) = std::env::var("BOXSOCK_TEST_PORT") else { return };
    let p = PortMapping::tcp(port.parse().unwrap(), 80);
    match check_free(&p) {
        Ok(()) => println!("RESULT free"),
        Err(e) => println!("RESULT {e}"),
    }
}

/// A port held by root's process, checked by uid 65534 (who cannot read root's
/// descriptors): "held by another user's process (uid 0…)". Control: root, checking the
/// same port in this process, names the pid.
#[test]
fn another_users_port_is_named_as_such_to_an_unprivileged_user() {
    use std::os::unix::process::CommandExt;
    let Some(busybox) = find("busybox") else {
        skip(BUSYBOX, "busybox holds the port");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        skip(Need::Root, "dropping to uid 65534 needs root");
        return;
    }
    let port = free_port(Protocol::Tcp);
    let p = PortMapping::tcp(port, 80);
    let mut holder = httpd_on(&busybox, port);
    wait_busy(&p, &mut holder);
    let control = check_free(&p).unwrap_err().to_string();
    assert!(control.contains(&format!("pid {}", holder.0.id())), "{control}");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args(["--exact", "helper_check_port_from_env", "--nocapture", "--test-threads=1"])
        .env("BOXSOCK_TEST_PORT", port.to_string())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find_map(|l| l.split_once("RESULT ").map(|x| x.1)).unwrap_or_else(|| {
            panic!("no result from uid 65534: {text} {}", String::from_utf8_lossy(&out.stderr))
        });
    assert!(line.contains("already in use"), "{line}");
    assert!(line.contains("held by another user's process (uid 0"), "{line}");
    assert!(!line.contains(&format!("pid {}", holder.0.id())), "{line}");
}
