//! The rootless `sandbox` (decision 0026): a real box run by a user who is not root,
//! in a user namespace of its own where that user is root and nobody else is mapped.
//!
//! CI runs as root, so each test plays the user with a child of this test binary that
//! really drops to uid 65534 (groups, gid, uid: std's `Command::uid`), on a temporary
//! home and link base that user owns. The attack (another host user dialling a box's
//! agent by its abstract name) is played by a child that drops to uid 65533, beside its
//! controls: the box's own user is accepted, and a naive agent that allows the
//! runtime's host uid inside a user namespace (what the root-mode code would pass) lets
//! the attacker in, since every unmapped user reads there as the overflow uid.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use boxsock_core::backend::BackendConfig;
use boxsock_core::binding::StrategyConfig;
use boxsock_core::registry::Registry;
use boxsock_runtime::{CreateOptions, Output as BoxOutput, Runtime, RuntimeOptions};

/// The user who runs the rootless boxes.
const USER: u32 = 65534;
/// Another host user: the attacker.
const OTHER: u32 = 65533;

const ROLE: &str = "SANDBOX_ROOTLESS_ROLE";
const DIR: &str = "SANDBOX_ROOTLESS_DIR";
const HELPERS: &str = "SANDBOX_ROOTLESS_HELPERS";
const NAME: &str = "SANDBOX_ROOTLESS_NAME";

const APPLETS: &[&str] =
    &["sh", "cat", "echo", "ls", "kill", "id", "touch", "grep", "wc", "stat", "mkdir", "chmod"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!("{:?}: stdout {:?} stderr {:?}", o.status, text(&o.stdout), text(&o.stderr))
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

/// Root's side: a temporary directory owned by [`USER`] with a busybox root (owned by
/// the user, as an image the user imported) and the link base; the agent binary built.
struct Env {
    tmp: tempfile::TempDir,
    helpers: PathBuf,
}

impl Env {
    fn new() -> Env {
        assert!(nix::unistd::geteuid().is_root(), "CI runs as root; the test plays the user");
        let helpers = boxsock_host::dev::built_binaries(&["boxsock-agent"]);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("roots/busybox");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for a in APPLETS {
            symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("links")).unwrap();
        chown_tree(tmp.path(), USER);
        Env { tmp, helpers }
    }

    /// This test binary's `test`, as `uid`, playing `role`.
    fn as_user(&self, uid: u32, test: &str, role: &str) -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(DIR, self.tmp.path())
            .env(HELPERS, &self.helpers)
            .current_dir("/")
            .uid(uid)
            .gid(uid);
        use std::os::unix::process::CommandExt;
        c
    }
}

/// The user's side of a test (the role's process), from the environment.
struct User {
    dir: PathBuf,
    helpers: PathBuf,
    /// The boxes' processes, killed if the test fails before removing them (a box
    /// outlives the role's process otherwise).
    pids: std::sync::Mutex<Vec<i32>>,
}

impl Drop for User {
    fn drop(&mut self) {
        // Only on a failure: after a test's own removals the pids may be reused.
        if !std::thread::panicking() {
            return;
        }
        for pid in self.pids.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl User {
    fn from_env() -> Option<(String, User)> {
        let role = std::env::var(ROLE).ok()?;
        assert_eq!(nix::unistd::geteuid().as_raw() as u64, role_uid(&role), "role {role}");
        let dir = std::env::var_os(DIR).unwrap().into();
        let helpers = std::env::var_os(HELPERS).unwrap().into();
        Some((role, User { dir, helpers, pids: Default::default() }))
    }

    fn root(&self) -> PathBuf {
        self.dir.join("roots/busybox")
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    async fn runtime(&self) -> Runtime {
        let backends = Registry::from_entries(
            "backend",
            [&boxsock_sandbox::REGISTRATION, &boxsock_host::REGISTRATION],
        );
        let strategies = Registry::from_entries(
            "strategy",
            [&boxsock_short_symlink::REGISTRATION, &boxsock_abstract::REGISTRATION],
        );
        let mut o = RuntimeOptions::new(strategies, backends);
        o.strategy_config =
            StrategyConfig { base_dir: self.dir.join("links"), ..StrategyConfig::default() };
        o.backend_config =
            BackendConfig { helper_dir: Some(self.helpers.clone()), ..Default::default() };
        Runtime::open(&self.home(), o).await.unwrap().0
    }

    /// Start box `id` and remember its process.
    async fn start(&self, rt: &Runtime, id: &str) -> Result<(), boxsock_runtime::RuntimeError> {
        rt.start(id).await?;
        if let Some(pid) = rt.inspect(id).ok().and_then(|i| i.pid) {
            self.pids.lock().unwrap().push(pid);
        }
        Ok(())
    }

    fn sandbox(&self, strategy: &str) -> CreateOptions {
        CreateOptions::builder().strategy(strategy).backend("sandbox").rootfs(self.root()).build()
    }
}

fn role_uid(role: &str) -> u64 {
    if role.starts_with("attack") { OTHER as u64 } else { USER as u64 }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(f)
}

async fn sh(rt: &Runtime, id: &str, script: &str) -> BoxOutput {
    rt.command(id, "/bin/sh").args(["-c", script]).output().await.unwrap()
}

fn shown(o: &BoxOutput) -> String {
    format!("{:?}: stdout {:?} stderr {:?}", o.status, text(&o.stdout), text(&o.stderr))
}

/// Run `test` as the user and require its `OK` line.
fn run_as_user(env: &Env, test: &str) -> String {
    let o = env.as_user(USER, test, "user").output().unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success() && out.contains("ROLE OK"), "{}", show(&o));
    for l in out.lines().filter(|l| l.contains("refused") || l.contains("failed:")) {
        println!("as uid {USER}: {l}");
    }
    out
}

/// Isolation basics of a rootless box: root in the box, its own PID namespace (a
/// handful of pids; the test's process unseen and unsignalled, while a `host` box of
/// the same user, the control, signals it), the `--rootfs` lower never written, and
/// what the box writes is the user's on the host.
#[test]
fn a_rootless_box_is_root_inside_isolated_and_the_user_outside() {
    let Some((_, user)) = User::from_env() else {
        let env = Env::new();
        run_as_user(&env, "a_rootless_box_is_root_inside_isolated_and_the_user_outside");
        return;
    };
    block_on(async {
        let rt = user.runtime().await;
        let rec = rt.create(user.sandbox("short-symlink")).await.unwrap();
        let id = rec.id.as_str().to_owned();
        user.start(&rt, &id).await.unwrap();
        let me = std::process::id();
        let o = sh(&rt, &id, "id -u; id -g").await;
        assert_eq!(text(&o.stdout), "0\n0\n", "{}", shown(&o));
        let o = sh(&rt, &id, "ls /proc | grep -c '^[0-9]'").await;
        let pids: u32 = text(&o.stdout).trim().parse().unwrap_or_else(|_| panic!("{}", shown(&o)));
        assert!(pids <= 4, "the box sees {pids} pids: {}", shown(&o));
        let o = sh(&rt, &id, &format!("kill -0 {me} && echo SIGNALLED; ls -d /proc/{me}")).await;
        assert!(!text(&o.stdout).contains("SIGNALLED"), "the box signalled us: {}", shown(&o));
        assert!(!o.status.success(), "the box sees pid {me}: {}", shown(&o));
        // Control: the same user's `host` box signals and sees this process.
        let host = CreateOptions::builder().strategy("short-symlink").backend("host").build();
        let h = rt.create(host).await.unwrap();
        user.start(&rt, h.id.as_str()).await.unwrap();
        let o = sh(&rt, h.id.as_str(), &format!("kill -0 {me} && ls -d /proc/{me}")).await;
        assert!(o.status.success(), "control: a host box signals {me}: {}", shown(&o));
        rt.remove(h.id.as_str(), true).await.unwrap();
        // Writes: into the box's upper, owned by the user on the host; the lower stays.
        let o =
            sh(&rt, &id, "echo w > /bin/made-here && touch /made-here && cat /bin/made-here").await;
        assert_eq!(text(&o.stdout), "w\n", "{}", shown(&o));
        assert!(!user.root().join("bin/made-here").exists(), "the lower was written");
        // A directory the user cannot list on the host (the box's root may make one):
        // the removal below still takes the box's directory.
        let o = sh(&rt, &id, "mkdir -p /locked/in && chmod 0 /locked && echo LOCKED").await;
        assert_eq!(text(&o.stdout), "LOCKED\n", "{}", shown(&o));
        let upper = user.home().join("boxes").join(&id).join("sandbox/upper");
        for f in ["bin/made-here", "made-here"] {
            let m = std::fs::metadata(upper.join(f)).unwrap();
            assert_eq!((m.uid(), m.gid()), (USER, USER), "{f} on the host");
        }
        // The box's process is the user's outside, root inside.
        let pid = rt.inspect(&id).unwrap().pid.unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(uids.split_whitespace().nth(1), Some("65534"), "{uids}");
        // Only uid 0 is mapped: another user in the box cannot be switched to, and the
        // agent says why; root (a user spec naming it) still runs.
        let o = rt.command(&id, "/bin/id").user("1000").output().await;
        let e = o.expect_err("ran as uid 1000").to_string();
        assert!(e.contains("uid 1000 is not mapped"), "{e}");
        println!("exec -u 1000 refused: {e}");
        let o = rt.command(&id, "/bin/id").arg("-u").user("0").output().await.unwrap();
        assert_eq!(text(&o.stdout), "0\n", "{}", shown(&o));
        rt.remove(&id, true).await.unwrap();
        assert!(!user.home().join("boxes").join(&id).exists(), "the box's directory stayed");
    });
    println!("ROLE OK");
}

/// `--memory` without a delegated cgroup is refused at create, saying why; as root
/// (the control) the same box is created.
#[test]
fn a_rootless_memory_limit_without_delegation_is_refused_at_create() {
    let Some((_, user)) = User::from_env() else {
        let env = Env::new();
        run_as_user(&env, "a_rootless_memory_limit_without_delegation_is_refused_at_create");
        // Control: root may apply the limit.
        let b = boxsock_sandbox::SandboxBackend::new(BackendConfig::default());
        let mut s = boxsock_core::backend::BoxSettings::default();
        s.ram_mib = Some(64);
        boxsock_core::Backend::check_settings(&b, &s).expect("control: root applies limits");
        return;
    };
    block_on(async {
        let rt = user.runtime().await;
        let mut opts = user.sandbox("short-symlink");
        opts.settings.ram_mib = Some(64);
        let e = rt.create(opts).await.expect_err("a memory limit nobody can apply");
        let msg = e.to_string();
        assert!(msg.contains("no cgroup delegation") && msg.contains("65534"), "{msg}");
        println!("refused: {msg}");
    });
    println!("ROLE OK");
}

/// A network namespace cannot be joined by a rootless box (it has no privilege over
/// the user namespace that owns one): refused at create, saying why; as root (the
/// control) the same setting is accepted.
#[test]
fn a_rootless_box_joining_a_network_namespace_is_refused_at_create() {
    const NS: &str = "/proc/self/ns/net";
    let Some((_, user)) = User::from_env() else {
        let env = Env::new();
        run_as_user(&env, "a_rootless_box_joining_a_network_namespace_is_refused_at_create");
        let b = boxsock_sandbox::SandboxBackend::new(BackendConfig::default());
        let mut s = boxsock_core::backend::BoxSettings::default();
        s.network_namespace = Some(NS.into());
        boxsock_core::Backend::check_settings(&b, &s).expect("control: root joins one");
        return;
    };
    block_on(async {
        let rt = user.runtime().await;
        let mut opts = user.sandbox("short-symlink");
        opts.settings.network_namespace = Some(NS.into());
        let e = rt.create(opts).await.expect_err("a rootless box joining a namespace");
        let msg = e.to_string();
        assert!(msg.contains("a rootless box") && msg.contains(NS), "{msg}");
        println!("refused: {msg}");
    });
    println!("ROLE OK");
}

/// Ping the agent at abstract `name`: `PONG`, or `REFUSED …`.
fn ping(name: &str) -> String {
    use boxsock_core::proto::{Frame, Request, Response, decode, encode};
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut s = match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(e) => return format!("REFUSED at connect: {e}"),
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut hello =
        encode(&Frame::Control(Request::Hello { version: boxsock_core::proto::VERSION }));
    hello.extend(encode(&Frame::Control(Request::Ping {})));
    if let Err(e) = s.write_all(&hello) {
        return format!("REFUSED at write: {e}");
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some((f, used))) = decode::<Response>(&buf) {
            buf.drain(..used);
            match f {
                Frame::Control(Response::Hello { .. }) => {}
                Frame::Control(Response::Pong { .. }) => return "PONG".into(),
                other => return format!("REFUSED with {other:?}"),
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return "REFUSED: closed".into(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return format!("REFUSED: {e}"),
        }
    }
}

/// The attacker's (or the control's) dial, as a role: prints `PING <result>`.
#[test]
fn ping_role() {
    if std::env::var(ROLE).as_deref().is_ok_and(|r| r.starts_with("attack") || r == "own") {
        assert_eq!(nix::unistd::geteuid().as_raw() as u64, role_uid(&std::env::var(ROLE).unwrap()));
        println!("PING {}", ping(&std::env::var(NAME).unwrap()));
    }
}

fn dial_as(env: &Env, uid: u32, name: &str) -> String {
    let role = if uid == USER { "own" } else { "attack" };
    let o = env.as_user(uid, "ping_role", role).env(NAME, name).output().unwrap();
    let out = text(&o.stdout);
    out.lines()
        .find_map(|l| l.find("PING ").map(|i| l[i + 5..].to_owned()))
        .unwrap_or_else(|| panic!("{}", show(&o)))
}

/// Another host user dials a rootless box's agent by its abstract name (the abstract
/// strategy: no file permission stands in the way, only the agent's peer check). In
/// the box's user namespace that user reads as the overflow uid 65534 — the number of
/// the box's own user outside — so the agent must allow the mapped uid 0, never the
/// host uid. Refused; controls in the same run: the box's own user is accepted, and a
/// naive agent in a user namespace allowing the host uid (65534) lets the attacker in.
#[test]
fn another_user_cannot_reach_a_rootless_box_agent_control_own_user_and_naive_agent() {
    if let Some((_, user)) = User::from_env() {
        // The box's user: start the box, say its agent's name, hold it until told.
        block_on(async {
            let rt = user.runtime().await;
            let rec = rt.create(user.sandbox("abstract")).await.unwrap();
            let id = rec.id.as_str().to_owned();
            user.start(&rt, &id).await.unwrap();
            let info = rt.inspect(&id).unwrap();
            let agent = info
                .sockets
                .iter()
                .find(|s| s.socket == "agent")
                .and_then(|s| s.address.clone())
                .unwrap();
            println!("AGENT {}", agent.strip_prefix('@').unwrap_or_else(|| panic!("{agent}")));
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let o = sh(&rt, &id, "echo still-mine").await;
            assert_eq!(text(&o.stdout), "still-mine\n", "{}", shown(&o));
            rt.remove(&id, true).await.unwrap();
        });
        println!("ROLE OK");
        return;
    }
    let env = Env::new();
    let mut holder = env
        .as_user(
            USER,
            "another_user_cannot_reach_a_rootless_box_agent_control_own_user_and_naive_agent",
            "user",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut name = None;
    let mut seen = String::new();
    for line in (&mut out).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(n) = line.find("AGENT ").map(|i| line[i + 6..].to_owned()) {
            name = Some(n);
            break;
        }
    }
    let Some(name) = name else {
        let _ = holder.kill();
        panic!("the box's user did not start its box: {seen}");
    };
    let own = dial_as(&env, USER, &name);
    let attack = dial_as(&env, OTHER, &name);
    // Control: a naive agent in a user namespace of the same user, allowing the host
    // uid 65534, which every other host user also reads as there.
    let naive = naive_agent_is_reached(&env);
    drop(holder.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let st = holder.wait().unwrap();
    assert!(st.success() && rest.contains("ROLE OK"), "the box's user: {seen}{rest}");
    assert_eq!(own, "PONG", "control: the box's own user is accepted");
    assert_eq!(naive, "PONG", "control: the attack reaches a naive agent allowing 65534");
    assert!(attack.starts_with("REFUSED"), "uid {OTHER} reached the box's agent: {attack}");
}

/// A `boxsock-agent` run by [`USER`] in a user namespace of its own (`unshare -U -r`)
/// with `--allow-uid 65534` on an abstract name; the attacker dials it.
fn naive_agent_is_reached(env: &Env) -> String {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::process::CommandExt;
    let tag = format!("boxsock-rootless-naive-{}", std::process::id());
    let ready_name = format!("{tag}-ready");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(ready_name.as_bytes()).unwrap();
    let ready = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let mut agent = Command::new("unshare")
        .args(["-U", "-r", "--"])
        .arg(env.helpers.join("boxsock-agent"))
        .args(["--agent", &format!("abstract:{tag}"), "--ready", &format!("abstract:{ready_name}")])
        .args(["--allow-uid", "65534"])
        .uid(USER)
        .gid(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut r, _) = ready.accept().unwrap();
    r.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 64];
    let _ = r.read(&mut b);
    let result = dial_as(env, OTHER, &tag);
    let _ = agent.kill();
    let o = agent.wait_with_output().unwrap();
    if result != "PONG" {
        eprintln!("naive agent: {}", text(&o.stderr));
    }
    result
}

/// `--network` rootless: pasta must open `/dev/net/tun` inside the box's user
/// namespace, where a device only root may open (mode 0600, as on the build machines)
/// opens for nobody. Then the start fails naming the device and why; where the device
/// is open to all, the box gets its default route.
#[test]
fn a_rootless_network_runs_or_is_refused_naming_dev_net_tun() {
    let Some((_, user)) = User::from_env() else {
        let env = Env::new();
        run_as_user(&env, "a_rootless_network_runs_or_is_refused_naming_dev_net_tun");
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let open_to_all =
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    block_on(async {
        let rt = user.runtime().await;
        let mut opts = user.sandbox("short-symlink");
        opts.network = true;
        let rec = rt.create(opts).await.unwrap();
        let id = rec.id.as_str().to_owned();
        match user.start(&rt, &id).await {
            Ok(_) => {
                assert!(open_to_all, "started though /dev/net/tun is not open to all");
                let o = sh(&rt, &id, "cat /proc/net/route").await;
                assert!(text(&o.stdout).contains("00000000"), "{}", shown(&o));
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!open_to_all, "/dev/net/tun is open to all, yet: {msg}");
                assert!(msg.contains("/dev/net/tun") && msg.contains("0600"), "{msg}");
                println!("refused: {msg}");
            }
        }
        rt.remove(&id, true).await.unwrap();
    });
    println!("ROLE OK");
}

/// Volumes rootless: a directory of the user's, bound into the box (cloned in the
/// box's own mount namespace after the same no-symlink open; decision 0026): the box
/// writes the rw one (the file is the user's on the host) and cannot write the `:ro`
/// one, whose host copy stays unchanged; a host directory swapped for a symlink after
/// create fails the start naming the volume, the target never shown.
#[test]
fn rootless_volumes_are_bound_rw_and_ro_and_a_swapped_one_fails() {
    let Some((_, user)) = User::from_env() else {
        let env = Env::new();
        for d in ["rw", "ro", "swap", "target"] {
            let p = env.tmp.path().join("vol").join(d);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("host-file"), format!("{d}\n")).unwrap();
        }
        chown_tree(&env.tmp.path().join("vol"), USER);
        run_as_user(&env, "rootless_volumes_are_bound_rw_and_ro_and_a_swapped_one_fails");
        return;
    };
    use boxsock_core::settings::Volume;
    let vol = user.dir.join("vol");
    block_on(async {
        let rt = user.runtime().await;
        let opts = CreateOptions::builder()
            .strategy("short-symlink")
            .backend("sandbox")
            .rootfs(user.root())
            .volume(Volume::new(vol.join("rw"), "/data", false))
            .volume(Volume::new(vol.join("ro"), "/srv/ro", true))
            .build();
        let rec = rt.create(opts).await.unwrap();
        let id = rec.id.as_str().to_owned();
        user.start(&rt, &id).await.unwrap();
        let o = sh(&rt, &id, "cat /data/host-file /srv/ro/host-file; echo box > /data/made").await;
        assert_eq!(text(&o.stdout), "rw\nro\n", "{}", shown(&o));
        let m = std::fs::metadata(vol.join("rw/made")).unwrap();
        assert_eq!(
            (m.uid(), std::fs::read_to_string(vol.join("rw/made")).unwrap()),
            (USER, "box\n".into())
        );
        let o = sh(
            &rt,
            &id,
            "echo x > /srv/ro/host-file || echo REFUSED; touch /srv/ro/new || echo REFUSED",
        )
        .await;
        assert_eq!(text(&o.stdout), "REFUSED\nREFUSED\n", "{}", shown(&o));
        assert_eq!(std::fs::read_to_string(vol.join("ro/host-file")).unwrap(), "ro\n");
        assert!(!vol.join("ro/new").exists());
        rt.remove(&id, true).await.unwrap();
        // A host directory swapped for a symlink after create.
        let opts = CreateOptions::builder()
            .strategy("short-symlink")
            .backend("sandbox")
            .rootfs(user.root())
            .volume(Volume::new(vol.join("swap"), "/data", false))
            .build();
        let rec = rt.create(opts).await.unwrap();
        std::fs::rename(vol.join("swap"), vol.join("swap-old")).unwrap();
        symlink(vol.join("target"), vol.join("swap")).unwrap();
        // Control: a path-based open of the stored path reaches the link's target.
        let naive = std::fs::read_to_string(vol.join("swap/host-file")).unwrap();
        assert_eq!(naive, "target\n", "control: the swap redirects a path-based open");
        let e =
            user.start(&rt, rec.id.as_str()).await.expect_err("started through a swapped volume");
        let msg = e.to_string();
        assert!(msg.contains("without following a") && msg.contains("swap"), "{msg}");
        println!("refused: {msg}");
        rt.remove(rec.id.as_str(), true).await.unwrap();
    });
    println!("ROLE OK");
}
