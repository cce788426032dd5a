//! `vm-bare-launch`: libkrun without the runtime around it, for the overhead
//! measurement of the real-VM tier (docs/performance.md, "Real VM").
//!
//! - `vm-bare-launch start SPEC_JSON SHIM`: bind the spec's `ready` address, hand the
//!   spec (as the runtime recorded it in `shim-spec.json`) to the shim on stdin, wait for
//!   the guest agent's readiness frame, print `<shim pid> <ms from bind to readiness>`
//!   and exit, leaving the shim running — as `boxsock start` returns at readiness with
//!   the box running, so the caller times both commands the same way, from spawn to
//!   exit. On failure the shim is killed.
//! - `vm-bare-launch kill PID SPEC_JSON`: SIGKILL the shim `start` left, wait until it
//!   is gone, and remove the `ready` and `agent` sockets it left in the box.
//! - `vm-bare-launch exec AGENT_SOCK`: one `exec` of `/bin/busybox true` over a raw
//!   agent connection (no CLI, no store, no strategy), exit code of the command.
//! - `vm-bare-launch reap LOG -- CMD ARGS…`: what containerd's runc shim is to `runc
//!   create`: a child subreaper that runs CMD with its stdio, then reaps every process
//!   that ends under it (CMD, and whatever CMD left behind and is reparented here, as
//!   the pid of `--pid-file`), one line each to LOG (`child PID exited N` for CMD,
//!   `reaped PID exited N` or `reaped PID signaled N` for the others). It exits 0 once
//!   nothing is left under it. A shell cannot do this: it never reaps a process that
//!   is not its own child, and busybox has no subreaper.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use boxsock_libkrun::ShimSpec;
use boxsock_runtime::agent_client::{self, AgentClient};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("tokio runtime: {e}")),
    };
    let r = match args.get(1).map(String::as_str) {
        Some("start") if args.len() == 4 => rt.block_on(start(&args[2], &args[3])),
        Some("kill") if args.len() == 4 => kill(&args[2], &args[3]),
        Some("exec") if args.len() == 3 => rt.block_on(exec(&args[2])),
        Some("reap") if args.len() >= 5 && args[3] == "--" => reap(&args[2], &args[4..]),
        _ => Err("usage: vm-bare-launch start SPEC_JSON SHIM | kill PID SPEC_JSON | exec \
                  AGENT_SOCK | reap LOG -- CMD ARGS..."
            .into()),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("vm-bare-launch: {msg}");
    ExitCode::from(1)
}

async fn start(spec_path: &str, shim: &str) -> Result<u8, String> {
    let json = std::fs::read(spec_path).map_err(|e| format!("reading {spec_path}: {e}"))?;
    let spec: ShimSpec = serde_json::from_slice(&json).map_err(|e| format!("{spec_path}: {e}"))?;
    // The spec names sockets through the descriptor the shim inherits
    // (`/proc/self/fd/<n>/<name>`): hold the box's socket directory the same way, bind
    // `ready` through our own descriptor, and hand it to the shim at <n>.
    let dir = match spec.socket_dir_fd {
        Some(n) => {
            let sockets = spec.box_dir.join("sockets");
            let fd = nix::fcntl::open(
                &sockets,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("opening {}: {e}", sockets.display()))?;
            Some((fd, n))
        }
        None => None,
    };
    let ours = |p: &std::path::Path| -> std::path::PathBuf {
        match (&dir, p.file_name()) {
            (Some((fd, _)), Some(name)) => {
                std::path::Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name)
            }
            _ => p.to_path_buf(),
        }
    };
    let ready = ours(&spec.ready.host_path);
    let agent = ours(&spec.agent.host_path);
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&agent);
    let listener = tokio::net::UnixListener::bind(&ready)
        .map_err(|e| format!("binding {}: {e}", ready.display()))?;
    let t0 = Instant::now();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.console_log)
        .map_err(|e| format!("{}: {e}", spec.console_log.display()))?;
    let mut cmd = Command::new(shim);
    cmd.stdin(Stdio::piped()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
    if let Some((fd, n)) = &dir {
        let (src, dst) = (fd.as_raw_fd(), *n);
        // SAFETY: runs in the forked child before exec; dup2 and fcntl are
        // async-signal-safe and allocate nothing.
        unsafe {
            cmd.pre_exec(move || {
                if src == dst {
                    let flags = libc::fcntl(dst, libc::F_GETFD);
                    if flags == -1
                        || libc::fcntl(dst, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(src, dst) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawning {shim}: {e}"))?;
    let written = child.stdin.take().ok_or("no stdin pipe")?.write_all(&json);
    let pid = child.id();
    let result = async {
        written.map_err(|e| format!("writing the spec to the shim: {e}"))?;
        let exited = async {
            loop {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (mut s, _) = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(240), listener.accept()) => r
                .map_err(|_| "no readiness within 240 s".to_string())?
                .map_err(|e| format!("accept: {e}"))?,
            () = exited => return Err(format!("the shim exited before readiness; see {}", spec.console_log.display())),
        };
        agent_client::read_ready(&mut s).await.map_err(|e| format!("reading the ready frame: {e}"))
    }
    .await;
    let ms = t0.elapsed().as_millis();
    if let Err(e) = result {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(&agent);
        return Err(e);
    }
    println!("{pid} {ms}");
    Ok(0)
}

fn kill(pid: &str, spec_path: &str) -> Result<u8, String> {
    let pid: i32 = pid.parse().map_err(|_| format!("not a pid: {pid:?}"))?;
    let json = std::fs::read(spec_path).map_err(|e| format!("reading {spec_path}: {e}"))?;
    let spec: ShimSpec = serde_json::from_slice(&json).map_err(|e| format!("{spec_path}: {e}"))?;
    // Only the shim of this spec: its command line names the shim binary.
    let cmdline =
        std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| format!("pid {pid}: {e}"))?;
    if !String::from_utf8_lossy(&cmdline).contains("boxsock-krun-shim") {
        return Err(format!("pid {pid} is not a boxsock-krun-shim"));
    }
    let _ =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    // Reparented to the init of the TCG host once `start` exited: wait until it is gone
    // or a zombie.
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("shim {pid} still alive 30 s after SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sockets = spec.box_dir.join("sockets");
    for s in [&spec.ready.host_path, &spec.agent.host_path] {
        if let Some(name) = s.file_name() {
            let _ = std::fs::remove_file(sockets.join(name));
        }
    }
    Ok(0)
}

async fn exec(agent: &str) -> Result<u8, String> {
    let s = UnixStream::connect(agent).map_err(|e| format!("connecting {agent}: {e}"))?;
    let client = AgentClient::connect(s).map_err(|e| e.to_string())?;
    let out = client
        .exec_output(&["/bin/busybox", "true"], &[], None)
        .await
        .map_err(|e| e.to_string())?;
    u8::try_from(out.status.shell_code()).map_err(|_| format!("{}", out.status))
}

fn reap(log: &str, cmd: &[String]) -> Result<u8, String> {
    use nix::sys::wait::{WaitStatus, waitpid};
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error()));
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{log}: {e}"))?;
    let child = Command::new(&cmd[0]).args(&cmd[1..]).spawn();
    let child = child.map_err(|e| format!("spawning {}: {e}", cmd[0]))?;
    let first = child.id() as i32;
    loop {
        // Blocks until any process under this one ends; ECHILD once none is left.
        let (pid, what) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, c)) => (p.as_raw(), format!("exited {c}")),
            Ok(WaitStatus::Signaled(p, s, _)) => (p.as_raw(), format!("signaled {}", s as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => return Ok(0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        };
        let who = if pid == first { "child" } else { "reaped" };
        // Line by line, so the caller can read each as it comes.
        writeln!(out, "{who} {pid} {what}").map_err(|e| format!("{log}: {e}"))?;
    }
}
