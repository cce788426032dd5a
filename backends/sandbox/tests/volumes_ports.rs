//! Volumes and published ports on a real `sandbox` box (a busybox root), as root (CI
//! and the build machines are root; rootless volumes: `tests/rootless.rs`).
//!
//! The attack tests run their positive control in the same run: a naive path-based
//! bind mount that follows the planted symlink lands outside the root, and a naive
//! path-based open of the swapped host path reaches the symlink's target; each test
//! fails if its attack never landed on the naive victim.

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxsock_core::backend::BackendError;
use boxsock_core::settings::{PortMapping, Volume};
use boxsock_runtime::{CreateOptions, Output, Runtime, RuntimeError};

const APPLETS: &[&str] =
    &["sh", "cat", "echo", "ls", "mkdir", "touch", "grep", "httpd", "sleep", "wc", "rm", "mount"];

mod common;
use common::Env;

impl Env {
    fn new() -> Env {
        Env::with_root("volume", "roots/busybox", APPLETS)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn runtime(&self) -> Runtime {
        self.open_runtime(&[], false).await
    }

    fn opts(&self) -> boxsock_runtime::CreateOptionsBuilder {
        CreateOptions::builder().strategy("short-symlink").backend("sandbox").rootfs(&self.root)
    }

    async fn started(&self, rt: &Runtime, opts: CreateOptions) -> String {
        let rec = rt.create(opts).await.unwrap();
        rt.start(rec.id.as_str()).await.unwrap();
        self.track(rt, rec.id.as_str());
        rec.id.as_str().to_owned()
    }

    /// `start`, expected to fail: its error. A box that started anyway is killed with
    /// the test's other boxes before the test fails.
    async fn start_refused(&self, rt: &Runtime, id: &str, why: &str) -> RuntimeError {
        match rt.start(id).await {
            Ok(_) => {
                self.track(rt, id);
                panic!("{why}: box {id} started");
            }
            Err(e) => e,
        }
    }
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

/// Every path under `dir` with its contents (files) or link target.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            v.push((p.clone(), "dir".into()));
            v.extend(snapshot(&p));
        } else if t.is_symlink() {
            v.push((p.clone(), format!("-> {}", std::fs::read_link(&p).unwrap().display())));
        } else {
            v.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
        }
    }
    v.sort();
    v
}

fn upper(env: &Env, id: &str) -> PathBuf {
    env.home.join("boxes").join(id).join("sandbox/upper")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_shared_both_ways_and_ro_refuses_writes() {
    let env = Env::new();
    let rt = env.runtime().await;
    let rw = env.dir("rw");
    let ro = env.dir("ro");
    std::fs::write(rw.join("from-host"), "host\n").unwrap();
    std::fs::write(ro.join("kept"), "original\n").unwrap();
    let root_before = snapshot(&env.root);
    let ro_before = snapshot(&ro);
    let opts = env
        .opts()
        .volume(Volume::new(&rw, "/data", false))
        .volume(Volume::new(&ro, "/srv/ro", true))
        .build();
    let id = env.started(&rt, opts).await;
    let o =
        sh(&rt, &id, "cat /data/from-host && echo box > /data/from-box && cat /srv/ro/kept").await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "host\noriginal\n");
    assert_eq!(std::fs::read_to_string(rw.join("from-box")).unwrap(), "box\n");
    // That write went through the box's Landlock domain: its rule on `/` covers the
    // volumes (Landlock walks the mount hierarchy), so none is needed per volume.
    let log = std::fs::read_to_string(rt.inspect(&id).unwrap().log).unwrap();
    assert!(log.contains("landlock fully enforced"), "Landlock not in force here: {log}");
    std::fs::write(rw.join("later"), "after start\n").unwrap();
    let o = sh(&rt, &id, "cat /data/later").await;
    assert_eq!(text(&o.stdout), "after start\n", "a host write seen in the box: {}", show(&o));
    // `:ro`: the write fails with EROFS, whatever the box's capabilities.
    let o =
        sh(&rt, &id, "echo changed > /srv/ro/kept; echo new > /srv/ro/new; rm /srv/ro/kept").await;
    let err = text(&o.stderr);
    assert_eq!(err.matches("Read-only file system").count(), 3, "{}", show(&o));
    // Nor can the box make it writable again (no CAP_SYS_ADMIN, mount refused).
    let o = sh(&rt, &id, "mount -o remount,bind,rw /srv/ro; echo changed > /srv/ro/kept").await;
    assert!(text(&o.stderr).contains("Read-only file system"), "{}", show(&o));
    assert_eq!(snapshot(&ro), ro_before, "the :ro volume's host copy changed");
    // Both are nosuid,nodev; the :ro one read-only.
    let o = sh(&rt, &id, "grep -E ' /(data|srv/ro) ' /proc/self/mounts").await;
    let mounts = text(&o.stdout);
    for (path, ro_flag) in [("/data", "rw,"), ("/srv/ro", "ro,")] {
        let line = mounts.lines().find(|l| l.split(' ').nth(1) == Some(path));
        let line = line.unwrap_or_else(|| panic!("{path} not mounted: {mounts}"));
        let opts = line.split(' ').nth(3).unwrap();
        assert!(opts.starts_with(ro_flag), "{path}: {line}");
        assert!(opts.contains("nosuid") && opts.contains("nodev"), "{path}: {line}");
    }
    // The mount points were made in the box's own layer, never in the --rootfs.
    assert!(upper(&env, &id).join("srv/ro").is_dir());
    assert_eq!(snapshot(&env.root), root_before, "the --rootfs directory was written");
    // Across stop and start, and never touched by rm.
    rt.stop(&id, None).await.unwrap();
    rt.start(&id).await.unwrap();
    env.track(&rt, &id);
    let o = sh(&rt, &id, "cat /data/from-box /data/later").await;
    assert_eq!(text(&o.stdout), "box\nafter start\n", "{}", show(&o));
    rt.remove(&id, true).await.unwrap();
    assert_eq!(std::fs::read_to_string(rw.join("from-box")).unwrap(), "box\n");
    assert_eq!(snapshot(&ro), ro_before);
}

/// A naive bind: `mount --bind SRC DST` by path, in a private mount namespace of its
/// own (nothing reaches the host's), then `cat PROBE`: what the bind showed there.
fn naive_bind(src: &Path, dst: &Path, probe: &Path) -> String {
    let o = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' '{}' && cat '{}'",
            src.display(),
            dst.display(),
            probe.display()
        ))
        .output()
        .unwrap();
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// The image (here the `--rootfs` lower) holds `/data -> /etc`: the volume lands on the
/// box's own `/etc`, and the host's `/etc` is untouched. Control: a plain path-based
/// `mount --bind` onto `<root>/data` follows the link and covers the host's `/etc`.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_at_the_guest_path_in_the_image_cannot_move_the_mount_out_of_the_root() {
    let env = Env::new();
    let rt = env.runtime().await;
    let vol = env.dir("vol");
    let marker = format!("boxsock-vol-marker-{}", std::process::id());
    std::fs::write(vol.join(&marker), "the volume\n").unwrap();
    std::fs::create_dir_all(env.root.join("etc")).unwrap();
    std::fs::write(env.root.join("etc/box-etc"), "the box's own /etc\n").unwrap();
    symlink("/etc", env.root.join("data")).unwrap();
    let host_etc = Path::new("/etc").join(&marker);

    // Control first: the naive bind lands on the host's /etc.
    let shown = naive_bind(&vol, &env.root.join("data"), &host_etc);
    assert_eq!(shown, "the volume\n", "control: the naive bind did not follow the link");
    assert!(!host_etc.exists(), "the control's private mount namespace leaked");

    let opts = env.opts().volume(Volume::new(&vol, "/data", false)).build();
    let id = env.started(&rt, opts).await;
    let script = format!("cat /etc/{marker} && echo from-box > /data/written && ls /etc");
    let o = sh(&rt, &id, &script).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).starts_with("the volume\n"), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(vol.join("written")).unwrap(), "from-box\n");
    for f in [marker.as_str(), "written"] {
        assert!(!Path::new("/etc").join(f).exists(), "{f} reached the host's /etc");
    }
    rt.remove(&id, true).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(env.root.join("etc/box-etc")).unwrap(),
        "the box's own /etc\n"
    );
}

/// A `../`-climbing symlink planted in the box's upper (what the box itself can leave
/// there) names a host directory that does not exist inside the box: the start fails,
/// naming the volume's path in the box log, and the host directory is untouched.
/// Control: a plain path-based bind onto the link covers that host directory.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_in_the_upper_cannot_move_the_mount_out_of_the_root() {
    let env = Env::new();
    let rt = env.runtime().await;
    let victim = env.dir("victim");
    std::fs::write(victim.join("precious"), "host data\n").unwrap();
    let vol = env.dir("vol");
    std::fs::write(vol.join("marker"), "the volume\n").unwrap();
    let victim_before = snapshot(&victim);
    let opts = env.opts().volume(Volume::new(&vol, "/planted", false)).build();
    let rec = rt.create(opts).await.unwrap();
    let id = rec.id.as_str().to_owned();
    let link = upper(&env, &id).join("planted");
    symlink(format!("{}{}", "../".repeat(30), victim.display()), &link).unwrap();

    // Control: the naive bind follows the planted link to the victim.
    let shown = naive_bind(&vol, &link, &victim.join("marker"));
    assert_eq!(shown, "the volume\n", "control: the naive bind did not follow the link");
    assert_eq!(snapshot(&victim), victim_before, "the control leaked");

    let e = env.start_refused(&rt, &id, "its mount point dangles").await;
    let log = std::fs::read_to_string(rt.inspect(&id).unwrap().log).unwrap_or_default();
    assert!(
        log.contains("volume path /planted") && log.contains("guest path inside the box's root"),
        "the failure does not name the volume: {e}; log: {log}"
    );
    assert!(e.to_string().contains("volume path /planted"), "{e}");
    assert_eq!(snapshot(&victim), victim_before, "the host directory behind the link changed");
    // The link resolved inside the root, where it names nothing: the failure is not a
    // partial mount there either.
    assert!(!upper(&env, &id).join(victim.strip_prefix("/").unwrap()).exists());

    // With the link gone the mount point is made in the upper and the box starts.
    std::fs::remove_file(&link).unwrap();
    rt.start(&id).await.unwrap();
    env.track(&rt, &id);
    let o = sh(&rt, &id, "cat /planted/marker").await;
    assert_eq!(text(&o.stdout), "the volume\n", "{}", show(&o));
    rt.remove(&id, true).await.unwrap();
    assert_eq!(snapshot(&victim), victim_before);
}

/// The host directory is replaced by a symlink to another directory after create
/// (which resolved and stored it) and before start: the start fails naming the volume,
/// and the box never sees the symlink's target. Control: a plain path-based open of the
/// stored path now reaches the target. With the directory back, the box starts and sees
/// the original.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_dir_swapped_for_a_symlink_after_create_is_refused() {
    let env = Env::new();
    let rt = env.runtime().await;
    let vol = env.dir("vol");
    std::fs::write(vol.join("which"), "original\n").unwrap();
    let secret = env.dir("secret");
    std::fs::write(secret.join("which"), "secret\n").unwrap();
    let secret_before = snapshot(&secret);
    let opts = env.opts().volume(Volume::new(&vol, "/data", false)).build();
    let rec = rt.create(opts).await.unwrap();
    let id = rec.id.as_str().to_owned();
    let stored = rt.inspect(&id).unwrap().settings.volumes[0].host.clone();
    assert_eq!(stored, vol.canonicalize().unwrap());

    let aside = env.tmp.path().join("vol.aside");
    std::fs::rename(&vol, &aside).unwrap();
    symlink(&secret, &vol).unwrap();
    // Control: the swap lands for anyone who opens the stored path by name.
    assert_eq!(std::fs::read_to_string(stored.join("which")).unwrap(), "secret\n");

    let e = env.start_refused(&rt, &id, "a swapped volume").await;
    let msg = e.to_string();
    assert!(
        msg.contains("volume") && msg.contains("without following a symlink"),
        "the error does not say why: {msg}"
    );
    assert!(msg.contains(&vol.display().to_string()), "the error does not name the path: {msg}");
    assert_eq!(snapshot(&secret), secret_before);

    std::fs::remove_file(&vol).unwrap();
    std::fs::rename(&aside, &vol).unwrap();
    rt.start(&id).await.unwrap();
    env.track(&rt, &id);
    let o = sh(&rt, &id, "cat /data/which").await;
    assert_eq!(text(&o.stdout), "original\n", "{}", show(&o));
    rt.remove(&id, true).await.unwrap();
}

/// A volume inside another: mounted after its parent, its mount point made in the parent
/// volume (as docker does). A guest path that is a file in the root fails the start,
/// naming the path in the box log.
#[tokio::test(flavor = "multi_thread")]
async fn nested_volumes_mount_parents_first_and_a_file_guest_path_fails_the_start() {
    let env = Env::new();
    let rt = env.runtime().await;
    let outer = env.dir("outer");
    let inner = env.dir("inner");
    std::fs::write(inner.join("which"), "inner\n").unwrap();
    // Given inner first: the order of mounting is by depth, not as listed.
    let opts = env
        .opts()
        .volume(Volume::new(&inner, "/data/sub", true))
        .volume(Volume::new(&outer, "/data", false))
        .build();
    let id = env.started(&rt, opts).await;
    let o = sh(&rt, &id, "cat /data/sub/which && echo o > /data/o").await;
    assert_eq!(text(&o.stdout), "inner\n", "{}", show(&o));
    assert!(outer.join("sub").is_dir() && outer.join("o").is_file());
    rt.remove(&id, true).await.unwrap();

    std::fs::write(env.root.join("afile"), "not a directory\n").unwrap();
    let opts = env.opts().volume(Volume::new(&outer, "/afile", false)).build();
    let rec = rt.create(opts).await.unwrap();
    let e = env.start_refused(&rt, rec.id.as_str(), "a volume on a file").await;
    let log = std::fs::read_to_string(rt.inspect(rec.id.as_str()).unwrap().log).unwrap();
    assert!(log.contains("volume path /afile"), "{e}; log: {log}");
    // The start's error says it too, not only the agent's loader.
    let msg = e.to_string();
    assert!(msg.contains("volume path /afile") && msg.contains("guest path"), "{msg}");
    rt.remove(rec.id.as_str(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_over_the_agent_directory_is_refused_at_create() {
    let env = Env::new();
    let rt = env.runtime().await;
    let vol = env.dir("vol");
    for guest in ["/.boxsock", "/.boxsock/x"] {
        let opts = env.opts().volume(Volume::new(&vol, guest, false)).build();
        let e = rt.create(opts).await.expect_err(guest);
        assert!(
            matches!(e, RuntimeError::Backend(BackendError::BadSetting { .. })),
            "{guest}: {e}"
        );
        assert!(e.to_string().contains("agent"), "{e}");
    }
    // Control: the same volume elsewhere is accepted.
    let opts = env.opts().volume(Volume::new(&vol, "/boxsock", false)).build();
    let rec = rt.create(opts).await.unwrap();
    rt.remove(rec.id.as_str(), true).await.unwrap();
}

/// A port nobody holds right now (the kernel's choice for an ephemeral bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /path` on `127.0.0.1:port`, retried until the server answers (bounded: the
/// server is started by an exec just before); the response's body.
fn get(port: u16, path: &str, patience: Duration) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + patience;
    loop {
        let attempt = (|| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut all = Vec::new();
            s.read_to_end(&mut all)?;
            let at = all
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(|| std::io::Error::other("no header end"))?;
            if !all.starts_with(b"HTTP/1.0 200") && !all.starts_with(b"HTTP/1.1 200") {
                return Err(std::io::Error::other(text(&all[..at])));
            }
            Ok(all[at + 4..].to_vec())
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_port_serves_the_host_and_a_taken_one_fails_start() {
    let env = Env::new();
    let www = env.root.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // 1 MiB that a truncation or a mix-up would show.
    let body: Vec<u8> =
        (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(www.join("file"), &body).unwrap();
    let rt = env.runtime().await;
    let port = free_port();
    let mapping: PortMapping = format!("127.0.0.1:{port}:80").parse().unwrap();
    // -p implies the network, as on libkrun (decision 0024).
    let id = env.started(&rt, env.opts().port(mapping).build()).await;
    let info = rt.inspect(&id).unwrap();
    assert!(info.network, "-p did not turn the network on");
    assert_eq!(info.settings.ports, vec![mapping]);
    let o = sh(&rt, &id, "httpd -p 80 -h /www").await;
    assert!(o.status.success(), "{}", show(&o));
    let got = tokio::task::spawn_blocking(move || get(port, "/file", Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the published port did not serve the file");
    assert!(got == body, "the file arrived changed: {} bytes of {}", got.len(), body.len());

    // A second box asking for the same host port: refused at start, naming it and its
    // holder (the first box's pasta).
    let rec = rt.create(env.opts().port(mapping).build()).await.unwrap();
    let second = rec.id.as_str().to_owned();
    let e = env.start_refused(&rt, &second, "a taken published port").await;
    match &e {
        RuntimeError::Backend(BackendError::Port { port: p, reason, .. }) => {
            assert_eq!(*p, mapping);
            assert!(reason.contains(&port.to_string()), "{reason}");
            assert!(reason.contains("pasta"), "the holder is not named: {reason}");
        }
        other => panic!("not a port error: {other}"),
    }
    assert!(rt.inspect(&second).unwrap().pid.is_none(), "the refused box kept running");
    // The first box still serves.
    let again = tokio::task::spawn_blocking(move || get(port, "/file", Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    assert!(again == body);
    for b in [&id, &second] {
        rt.remove(b, true).await.unwrap();
    }
}

/// A box with a network but no `-p` serves a port in its own namespace (seen from
/// inside): the host cannot reach it. Control: the same server as a plain host process
/// on the same port is reached by the same client.
#[tokio::test(flavor = "multi_thread")]
async fn without_publish_the_box_port_is_unreachable_control_a_host_server_is_reached() {
    let env = Env::new();
    symlink("busybox", env.root.join("bin/wget")).unwrap();
    let www = env.root.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("file"), "served\n").unwrap();
    let rt = env.runtime().await;
    let port = free_port();
    let mut control = std::process::Command::new("busybox")
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
        .arg(&www)
        .spawn()
        .unwrap();
    let got = tokio::task::spawn_blocking(move || get(port, "/file", Duration::from_secs(30)))
        .await
        .unwrap();
    control.kill().unwrap();
    control.wait().unwrap();
    assert_eq!(got.expect("control: the host server was not reached"), b"served\n");

    let id = env.started(&rt, env.opts().network(true).build()).await;
    let serve = format!("httpd -p {port} -h /www && wget -q -O - http://127.0.0.1:{port}/file");
    let o = sh(&rt, &id, &serve).await;
    assert_eq!(text(&o.stdout), "served\n", "the box's own server: {}", show(&o));
    let r = tokio::task::spawn_blocking(move || get(port, "/file", Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(r.is_err(), "the box's unpublished port {port} was reached from the host");
    rt.remove(&id, true).await.unwrap();
}
