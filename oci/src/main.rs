//! `boxsock-oci`: a runc-compatible OCI runtime over boxsock (see the library).
//!
//! The command line is youki's `liboci-cli` (runc's flags, as runc spells them); each
//! command calls [`boxsock_oci::ops`]. Errors go to stderr and, with `--log`, to that
//! file as runc writes it (`--log-format json`: one `{"level","msg","time"}` object a
//! line, which conmon and containerd's shim read back).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use boxsock::boxsock_core::echo;
use boxsock_oci::ops::{self, Ctx};
use boxsock_oci::spec::ProcessSpec;
use boxsock_oci::state::{ContainerId, StateRoot};
use boxsock_oci::{OciError, supervise};
use clap::{Parser, Subcommand};
use liboci_cli::{CommonCmd, GlobalOpts, StandardCmd};

#[derive(Parser, Debug)]
#[command(
    name = "boxsock-oci",
    version,
    about = "A runc-compatible OCI runtime that runs boxsock boxes"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    /// A backend option, KEY=VALUE (repeatable), as boxsock's --backend-option.
    #[arg(long = "backend-option", global = true, value_name = "KEY=VALUE")]
    backend_options: Vec<String>,
    /// Where the backends' helper binaries are (default: beside this executable).
    #[arg(long, global = true, env = "BOXSOCK_HELPER_DIR", value_name = "DIR")]
    helper_dir: Option<PathBuf>,
    /// How long starting a box waits for its agent, in seconds (boxsock's
    /// --ready-timeout; default 10).
    #[arg(long, global = true, env = "BOXSOCK_READY_TIMEOUT", value_name = "SECS")]
    ready_timeout: Option<f64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Standard(Box<StandardCmd>),
    #[command(flatten)]
    Common(Box<CommonCmd>),
    /// The supervisor of a container (started by `create`).
    #[command(hide = true)]
    Supervise {
        id: String,
        #[arg(long)]
        tty: bool,
    },
    /// The supervisor of a detached exec (started by `exec`).
    #[command(hide = true)]
    SuperviseExec { id: String },
}

/// Where errors are logged besides stderr.
struct Log {
    file: Option<PathBuf>,
    json: bool,
}

impl Log {
    fn error(&self, msg: &str) {
        eprintln!("{}", boxsock::term::for_terminal(&format!("boxsock-oci: {msg}")));
        self.write("error", msg);
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = jiff::Timestamp::now().to_string();
        let line = match self.json {
            true => serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string(),
            false => format!("time=\"{time}\" level={level} msg={msg:?}"),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn main() -> ExitCode {
    // Engines run runtimes with signals blocked (podman's cleanup `delete` has SIGUSR1
    // blocked): a supervisor must receive what it forwards, and what it spawns (the
    // box's agent, its VMM) must not inherit a mask.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Help and version as clap prints them; its errors, which quote the command
        // line, escaped line by line (decision 0009).
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{}", boxsock::term::for_terminal(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let g = &cli.global;
    let log = Log { file: g.log.clone(), json: g.log_format.as_deref() == Some("json") };
    if g.debug {
        let filter = tracing_subscriber::EnvFilter::new("debug");
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
        match g
            .log
            .as_ref()
            .and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok())
        {
            Some(f) => builder.with_writer(std::sync::Mutex::new(f)).init(),
            None => builder.with_writer(std::io::stderr).init(),
        }
    }
    if let Some(f) = &g.log_format {
        if f != "json" && f != "text" {
            log.error(&format!("--log-format {}: expected text or json", echo::echo(f)));
            return ExitCode::FAILURE;
        }
    }
    // --systemd-cgroup is accepted: a box's cgroup is its backend's own.
    let mut pass: Vec<OsString> = Vec::new();
    let root = match StateRoot::new(g.root.clone()) {
        Ok(r) => r,
        Err(e) => {
            log.error(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    pass.extend(["--root".into(), root.path().as_os_str().to_owned()]);
    if let Some(l) = &g.log {
        pass.extend(["--log".into(), l.as_os_str().to_owned()]);
    }
    if let Some(f) = &g.log_format {
        pass.extend(["--log-format".into(), f.into()]);
    }
    if g.debug {
        pass.push("--debug".into());
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log.error(&format!("cannot find this executable: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut backend_config = boxsock::BackendConfig::default();
    for kv in &cli.backend_options {
        let Some((k, v)) = kv.split_once('=') else {
            log.error(&format!("--backend-option {}: expected KEY=VALUE", echo::echo(kv)));
            return ExitCode::FAILURE;
        };
        backend_config.options.insert(k.to_owned(), v.to_owned());
        pass.extend(["--backend-option".into(), kv.into()]);
    }
    if let Some(d) = &cli.helper_dir {
        backend_config.helper_dir = Some(d.clone());
        pass.extend(["--helper-dir".into(), d.as_os_str().to_owned()]);
    }
    let mut ready_timeout = None;
    if let Some(t) = cli.ready_timeout {
        match std::time::Duration::try_from_secs_f64(t) {
            Ok(d) if !d.is_zero() => ready_timeout = Some(d),
            _ => {
                log.error(&format!("--ready-timeout {t}: expected a positive number of seconds"));
                return ExitCode::FAILURE;
            }
        }
        pass.extend(["--ready-timeout".into(), t.to_string().into()]);
    }
    let mut ctx = Ctx::new(root, exe, pass);
    ctx.backend_config = backend_config;
    ctx.ready_timeout = ready_timeout;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(dispatch(&ctx, cli.cmd));
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    };
    // Supervisors may have a thread blocked reading stdin: exit without waiting.
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

async fn dispatch(ctx: &Ctx, cmd: Cmd) -> Result<i32, OciError> {
    let print = |s: String| {
        println!("{s}");
        Ok(0)
    };
    match cmd {
        Cmd::Standard(c) => match *c {
            StandardCmd::Create(c) => ops::create(
                ctx,
                ops::CreateArgs {
                    id: c.container_id,
                    bundle: c.bundle,
                    pid_file: c.pid_file,
                    console_socket: c.console_socket,
                    preserve_fds: c.preserve_fds,
                },
            )
            .await
            .map(|()| 0),
            StandardCmd::Start(c) => ops::start(ctx, &c.container_id).map(|()| 0),
            StandardCmd::State(c) => print(ops::state(ctx, &c.container_id)?),
            StandardCmd::Kill(c) => ops::kill(ctx, &c.container_id, &c.signal).map(|()| 0),
            StandardCmd::Delete(c) => ops::delete(ctx, &c.container_id, c.force).await.map(|()| 0),
        },
        Cmd::Common(c) => match *c {
            CommonCmd::Exec(e) => {
                let process = match &e.process {
                    Some(p) => ProcessSpec::load(p)?,
                    None => exec_process(&e)?,
                };
                ops::exec(
                    ctx,
                    ops::ExecArgs {
                        id: e.container_id,
                        process,
                        detach: e.detach,
                        pid_file: e.pid_file,
                        console_socket: e.console_socket,
                    },
                )
                .await
            }
            CommonCmd::Features(_) => print(ops::features()),
            CommonCmd::Ps(p) => {
                let json = p.format == "json";
                print(ops::ps(ctx, &p.container_id, json).await?)
            }
            CommonCmd::List(_) => print(ops::list(ctx)?),
            other => Err(OciError::Usage(format!(
                "{}: not supported by boxsock-oci (it has create, start, state, kill, delete, \
                 exec, features, ps and list)",
                command_name(&other)
            ))),
        },
        Cmd::Supervise { id, tty } => {
            let id = ContainerId::new(&id)?;
            Ok(supervise::main_supervisor(ctx, &id, tty).await)
        }
        Cmd::SuperviseExec { id } => {
            let id = ContainerId::new(&id)?;
            Ok(supervise::exec_supervisor(ctx, &id).await)
        }
    }
}

/// `exec` without `--process`: the command line's command, cwd, env, user, tty.
fn exec_process(e: &liboci_cli::Exec) -> Result<ProcessSpec, OciError> {
    if e.command.is_empty() {
        return Err(OciError::Usage("exec: give --process or a command".into()));
    }
    let mut p = boxsock::BoxProcess::new(e.command.clone());
    p.env = e.env.clone();
    p.cwd = e.cwd.as_ref().map(|c| c.to_string_lossy().into_owned());
    p.user = e.user.map(|(u, g)| format!("{u}:{}", g.unwrap_or(0)));
    Ok(ProcessSpec { process: p, terminal: e.tty, console_size: None })
}

fn command_name(c: &CommonCmd) -> &'static str {
    match c {
        CommonCmd::Checkpointt(_) => "checkpoint",
        CommonCmd::Events(_) => "events",
        CommonCmd::Pause(_) => "pause",
        CommonCmd::Resume(_) => "resume",
        CommonCmd::Run(_) => "run",
        CommonCmd::Update(_) => "update",
        CommonCmd::Spec(_) => "spec",
        _ => "this command",
    }
}
