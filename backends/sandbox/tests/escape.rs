//! Escape attempts from a real `sandbox` box (a busybox root), each beside its positive
//! control in the same run: the same action on the `host` backend (or a naive bind
//! mount) succeeds, so a refusal in the box is the sandbox's doing, not a broken test.
//! As root (CI and the build machines are root); rootless boxes: `tests/rootless.rs`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use boxsock_runtime::{CreateOptions, Output, Runtime};

const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "echo",
    "ls",
    "mount",
    "umount",
    "kill",
    "unshare",
    "grep",
    "hostname",
    "insmod",
    "ping",
    "pivot_root",
    "mkdir",
    "touch",
    "id",
    "head",
    "wc",
    "tr",
];

mod common;
use common::Env;

impl Env {
    fn new() -> Env {
        Env::with_root("escape", "roots/busybox", APPLETS)
    }

    async fn runtime(&self) -> Runtime {
        self.open_runtime(&[], true).await
    }
}

async fn boxed(rt: &Runtime, env: &Env) -> String {
    let opts = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("sandbox")
        .rootfs(&env.root)
        .build();
    started(rt, env, opts).await
}

async fn started(rt: &Runtime, env: &Env, opts: CreateOptions) -> String {
    let rec = rt.create(opts).await.unwrap();
    rt.start(rec.id.as_str()).await.unwrap();
    if let Some(pid) = rt.inspect(rec.id.as_str()).unwrap().pid {
        env.pids.lock().unwrap().push(pid);
    }
    rec.id.as_str().to_owned()
}

async fn host_box(rt: &Runtime, env: &Env) -> String {
    let opts = CreateOptions::builder().strategy("short-symlink").backend("host").build();
    started(rt, env, opts).await
}

async fn sh(rt: &Runtime, id: &str, script: &str) -> Output {
    rt.command(id, "/bin/sh").args(["-c", script]).output().await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!("{:?}: stdout {:?} stderr {:?}", o.status, text(&o.stdout), text(&o.stderr))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        v.push(e.path());
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&e.path()));
        }
    }
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_runs_in_its_own_root_and_its_writes_persist_in_its_own_layer() {
    let env = Env::new();
    let rt = env.runtime().await;
    let before = walk(&env.root);
    let id = boxed(&rt, &env).await;
    let o = sh(&rt, &id, "echo hi > /made-in-box && cat /made-in-box && hostname && echo $$").await;
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hi");
    assert_eq!(lines[1], id, "the box's hostname is its id");
    let o = sh(&rt, &id, "cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert!(text(&o.stdout).contains("boxsock-agent"), "PID 1 is the agent: {}", show(&o));
    assert_eq!(walk(&env.root), before, "the --rootfs directory was written");
    rt.stop(&id, None).await.unwrap();
    rt.start(&id).await.unwrap();
    let o = sh(&rt, &id, "cat /made-in-box").await;
    assert_eq!(text(&o.stdout), "hi\n", "a write survives stop and start: {}", show(&o));
    rt.remove(&id, true).await.unwrap();
    assert!(!env.home.join("boxes").join(&id).exists(), "rm removes the box's layer");
    assert_eq!(walk(&env.root), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_can_neither_see_nor_signal_host_pids_control_host_backend_can() {
    let env = Env::new();
    let rt = env.runtime().await;
    let me = std::process::id();
    let probe = format!("kill -0 {me} && echo signalled; ls /proc/{me} >/dev/null && echo seen");
    let id = boxed(&rt, &env).await;
    let host = host_box(&rt, &env).await;
    let control = sh(&rt, &host, &probe).await;
    assert_eq!(text(&control.stdout), "signalled\nseen\n", "control: {}", show(&control));
    let o = sh(&rt, &id, &probe).await;
    assert_eq!(text(&o.stdout), "", "the box reached host pid {me}: {}", show(&o));
    let o = sh(&rt, &id, "ls /proc | grep -c '^[0-9]'").await;
    let n: u32 = text(&o.stdout).trim().parse().unwrap();
    assert!(n <= 4, "the box sees {n} processes: only its own (agent, sh, ls, grep)");
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_cannot_write_its_rootfs_control_a_naive_bind_mount_can() {
    let env = Env::new();
    let rt = env.runtime().await;
    let id = boxed(&rt, &env).await;
    let o = sh(
        &rt,
        &id,
        "echo x > /bin/planted; mount -o remount,rw / ; echo x > /bin/planted2; \
         mkdir -p /m && mount --bind / /m && echo x > /m/bin/planted3; true",
    )
    .await;
    for f in ["planted", "planted2", "planted3"] {
        assert!(!env.root.join("bin").join(f).exists(), "{f} reached the rootfs: {}", show(&o));
    }
    // Control: the same root bound naively (read-write) into a mount namespace takes
    // the write.
    let mnt = env.tmp.path().join("naive");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind {} {} && echo x > {}/bin/planted",
            env.root.display(),
            mnt.display(),
            mnt.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(env.root.join("bin/planted").exists(), "control: the naive bind did not write");
    rt.remove(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_unshare_and_pivot_root_are_refused_control_host_backend_allows() {
    let env = Env::new();
    let rt = env.runtime().await;
    let id = boxed(&rt, &env).await;
    let host = host_box(&rt, &env).await;
    let scratch = env.tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let attempts = [
        format!("mount -t tmpfs none {}", scratch.display()),
        "unshare -m true".to_string(),
        "umount -l /proc".to_string(),
        "mkdir -p /n/old && pivot_root /n /n/old".to_string(),
    ];
    // Control: as a host process (root) the first two succeed.
    for a in &attempts[..2] {
        let o = sh(&rt, &host, &format!("unshare -m sh -c '{a}'")).await;
        assert!(o.status.success(), "control {a}: {}", show(&o));
    }
    for a in &attempts {
        let o = sh(&rt, &id, a).await;
        assert!(!o.status.success(), "the box could {a}: {}", show(&o));
    }
    // What in /proc reaches the host's kernel is read-only: a sysctl (written back with
    // its own value, so a write that lands changes nothing). Control: on the host
    // backend it is writable. (This kernel has no /proc/sysrq-trigger or /proc/kcore;
    // where they exist they are read-only and masked the same way.)
    let sysctl = "/proc/sys/kernel/printk_ratelimit";
    let control = sh(&rt, &host, &format!("[ -w {sysctl} ] && echo writable")).await;
    assert_eq!(text(&control.stdout), "writable\n", "control: {}", show(&control));
    let write_back = format!("v=$(cat {sysctl}) && echo $v > {sysctl} && echo written");
    let o = sh(&rt, &id, &write_back).await;
    assert_eq!(text(&o.stdout), "", "a host sysctl written from the box: {}", show(&o));
    assert!(text(&o.stderr).contains("Read-only"), "{}", show(&o));
    // Firmware tables are hidden (empty); control: the host backend lists them.
    let firmware = "ls /sys/firmware | wc -l";
    let control = sh(&rt, &host, firmware).await;
    assert_ne!(text(&control.stdout).trim(), "0", "control: {}", show(&control));
    let o = sh(&rt, &id, firmware).await;
    assert_eq!(text(&o.stdout).trim(), "0", "/sys/firmware in the box: {}", show(&o));
    let o = sh(&rt, &id, "ls /proc/1 >/dev/null && echo still").await;
    assert_eq!(text(&o.stdout), "still\n", "{}", show(&o));
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_file_outside_the_root_is_unreadable_control_host_backend_reads_it() {
    let env = Env::new();
    let rt = env.runtime().await;
    let secret = env.tmp.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let id = boxed(&rt, &env).await;
    let host = host_box(&rt, &env).await;
    let read = format!("cat {}; cat {}/boxsock.db", secret.display(), env.home.display());
    let control = sh(&rt, &host, &read).await;
    assert!(text(&control.stdout).starts_with("s3cret\n"), "control: {}", show(&control));
    let o = sh(&rt, &id, &read).await;
    assert!(!text(&o.stdout).contains("s3cret"), "the box read a host file: {}", show(&o));
    assert!(o.stdout.is_empty(), "the box read the runtime's home: {}", show(&o));
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_are_docker_defaults_no_module_load_no_raw_socket_control_host() {
    let env = Env::new();
    let rt = env.runtime().await;
    let id = boxed(&rt, &env).await;
    let host = host_box(&rt, &env).await;
    // Docker's default set less CAP_NET_RAW (no network): bits 0 1 3 4 5 6 7 8 10 18 27
    // 29 31.
    let expected: u64 =
        [0u32, 1, 3, 4, 5, 6, 7, 8, 10, 18, 27, 29, 31].iter().fold(0, |m, b| m | (1 << b));
    let caps = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; \
                grep -E '^(NoNewPrivs|Seccomp)' /proc/self/status";
    let o = sh(&rt, &id, caps).await;
    let out = text(&o.stdout);
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert!(
            out.contains(&format!("{set}:\t{expected:016x}")),
            "{set} is not docker's default: {out}"
        );
    }
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "no seccomp filter: {out}");
    assert!(out.contains("Seccomp_filters:\t2"), "not both filters: {out}");
    let control = sh(&rt, &host, caps).await;
    let control = text(&control.stdout);
    assert!(!control.contains(&format!("CapBnd:\t{expected:016x}")), "control: {control}");
    assert!(control.contains("Seccomp:\t0"), "control: {control}");
    let layout = boxsock_core::layout::BoxLayout::new(&env.home);
    let log = layout.log_file(&boxsock_core::id::BoxId::parse(&id).unwrap());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("boxsock-sandbox: landlock fully enforced"), "box log: {log}");
    // Loading a module (busybox itself as one): refused for lack of CAP_SYS_MODULE in
    // the box; on the host the kernel gets as far as refusing its format.
    let insmod = "insmod /bin/busybox";
    let o = sh(&rt, &id, insmod).await;
    assert!(text(&o.stderr).contains("not permitted"), "module load: {}", show(&o));
    let control = sh(&rt, &host, "busybox insmod /bin/busybox").await;
    assert!(
        !control.status.success() && !text(&control.stderr).contains("not permitted"),
        "control insmod: {}",
        show(&control)
    );
    // A raw socket (busybox ping opens one): refused without --network.
    let o = sh(&rt, &id, "ping -c 1 -W 1 127.0.0.1").await;
    assert!(!o.status.success(), "ping in the box: {}", show(&o));
    let control = sh(&rt, &host, "busybox ping -c 1 -W 1 127.0.0.1").await;
    assert!(control.status.success(), "control ping: {}", show(&control));
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}

/// The probe's role, played by this very test binary inside a box (run by the box's
/// copy of the agent's loader: it needs the same libraries as the agent): connect to
/// the abstract name in `SANDBOX_PROBE_ABSTRACT` and say whether it worked.
#[test]
fn probe_role() {
    let Some(name) = std::env::var_os("SANDBOX_PROBE_ABSTRACT") else { return };
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_encoded_bytes()).unwrap();
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(_) => println!("PROBE CONNECTED"),
        Err(e) => println!("PROBE REFUSED {e}"),
    }
}

async fn probe(rt: &Runtime, id: &str, in_box: bool, name: &str) -> String {
    let me = std::env::current_exe().unwrap();
    let mut c = if in_box {
        let mut c = rt.command(id, "/.boxsock/ld.so");
        c.args(["--library-path", "/.boxsock", "/bin/probe"]);
        c
    } else {
        rt.command(id, me.to_str().unwrap())
    };
    let o = c
        .args(["--exact", "probe_role", "--nocapture", "--test-threads=1"])
        .env("SANDBOX_PROBE_ABSTRACT", name)
        .output()
        .await
        .unwrap();
    let out = text(&o.stdout);
    let line = out.lines().find_map(|l| l.find("PROBE ").map(|i| &l[i..]));
    line.unwrap_or_else(|| panic!("{}", show(&o))).into()
}

#[tokio::test(flavor = "multi_thread")]
async fn host_abstract_sockets_and_the_box_own_agent_name_are_unreachable_control_host() {
    let env = Env::new();
    std::fs::copy(std::env::current_exe().unwrap(), env.root.join("bin/probe")).unwrap();
    let rt = env.runtime().await;
    // A host abstract socket (what containerd's shim listened on: CVE-2020-15257).
    let name = format!("boxsock-sandbox-test-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    // The box's own agent under the abstract strategy: bound in the host's namespace.
    let opts =
        CreateOptions::builder().strategy("abstract").backend("sandbox").rootfs(&env.root).build();
    let id = started(&rt, &env, opts).await;
    let info = rt.inspect(&id).unwrap();
    let agent =
        info.sockets.iter().find(|s| s.socket == "agent").and_then(|s| s.address.clone()).unwrap();
    let agent = agent.strip_prefix('@').unwrap_or_else(|| panic!("{agent}")).to_owned();
    let host = host_box(&rt, &env).await;
    for target in [&name, &agent] {
        let control = probe(&rt, &host, false, target).await;
        assert_eq!(control, "PROBE CONNECTED", "control: the host backend reaches {target}");
        let o = probe(&rt, &id, true, target).await;
        assert!(o.starts_with("PROBE REFUSED"), "the box reached {target}: {o}");
    }
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}

/// `--network`: pasta connects the box (its gateway reaches the host's loopback); without
/// it the same fetch finds no route. Both in one run, each the other's control.
#[tokio::test(flavor = "multi_thread")]
async fn network_only_with_the_flag_through_pasta() {
    let env = Env::new();
    for a in ["wget", "ip", "cut"] {
        symlink("busybox", env.root.join("bin").join(a)).unwrap();
    }
    let rt = env.runtime().await;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in server.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom-host");
        }
    });
    let fetch = format!(
        "gw=$(ip route | grep default | cut -d' ' -f3); wget -q -O - http://${{gw:-192.0.2.1}}:{port}/"
    );
    let with = CreateOptions::builder()
        .strategy("short-symlink")
        .backend("sandbox")
        .rootfs(&env.root)
        .network(true)
        .build();
    let net = started(&rt, &env, with).await;
    let o = sh(&rt, &net, &fetch).await;
    assert_eq!(text(&o.stdout), "from-host", "with --network: {}", show(&o));
    let info = rt.inspect(&net).unwrap();
    assert_eq!(info.companions.len(), 1, "pasta is the box's companion");
    let without = boxed(&rt, &env).await;
    let o = sh(&rt, &without, &fetch).await;
    assert!(!o.status.success() && o.stdout.is_empty(), "without --network: {}", show(&o));
    for b in [&net, &without] {
        rt.remove(b, true).await.unwrap();
    }
}

/// `exec -t`: a command on a pty of the box's own devpts, as its controlling terminal,
/// with its window size.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_runs_on_a_pty_of_the_box() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new();
    symlink("busybox", env.root.join("bin/stty")).unwrap();
    symlink("busybox", env.root.join("bin/tty")).unwrap();
    let rt = env.runtime().await;
    let id = boxed(&rt, &env).await;
    let mut child = rt
        .command(&id, "/bin/sh")
        .tty(true)
        .window_size(50, 132)
        .stdin(boxsock_runtime::exec::Stdio::Piped)
        .stdout(boxsock_runtime::exec::Stdio::Piped)
        .spawn()
        .await
        .unwrap();
    child.stdin.take().unwrap().write_all(b"tty; stty size; exit 7\n").await.unwrap();
    let mut screen = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut screen).await.unwrap();
    let status = child.wait().await.unwrap();
    let screen = text(&screen);
    assert_eq!(status.code(), Some(7), "{screen}");
    assert!(screen.contains("/dev/pts/0"), "not on the box's devpts: {screen}");
    assert!(screen.contains("50 132"), "window size: {screen}");
    rt.remove(&id, true).await.unwrap();
}

/// `CAP_MKNOD` is docker's, but no device node made in the box opens (every writable
/// mount of the box is `nodev`; there is no devices cgroup), so a node of the host's
/// disk would not either. The node made here is `/dev/zero`'s (1:5): the build
/// machines refuse every open of a block device, so a disk node can show nothing there.
/// Control: the same node made on the host backend (a plain ext4 directory) reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_node_made_in_the_box_does_not_open_control_host_backend_reads_it() {
    let env = Env::new();
    for a in ["mknod", "rm"] {
        symlink("busybox", env.root.join("bin").join(a)).unwrap();
    }
    let rt = env.runtime().await;
    let id = boxed(&rt, &env).await;
    let host = host_box(&rt, &env).await;
    let node = env.tmp.path().join("zero-node");
    let read = |p: &str| format!("mknod {p} c 1 5 && head -c 4 {p} | wc -c; rm -f {p}");
    let control = sh(&rt, &host, &read(&node.display().to_string())).await;
    assert_eq!(text(&control.stdout).trim(), "4", "control: {}", show(&control));
    for place in ["/tmp/zero", "/dev/zero2", "/dev/shm/zero"] {
        let o = sh(&rt, &id, &read(place)).await;
        assert_eq!(
            text(&o.stdout).trim(),
            "0",
            "a node made in the box opened at {place}: {}",
            show(&o)
        );
    }
    for b in [&id, &host] {
        rt.remove(b, true).await.unwrap();
    }
}
