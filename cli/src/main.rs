//! The `boxsock` command line. See `docs/runtime.md`.
//!
//! Exit status ([`exit`]): `run` and `exec` exit with the command's status (126: it
//! cannot be executed, 127: not found, 128 + N: killed by signal N); a boxsock error
//! (usage errors included) exits 125 from every verb, with one line per error on
//! stderr. Logs (`RUST_LOG`, default `warn`; an invalid filter is reported) go to
//! stderr, never to stdout, coloured only on a terminal and never with `NO_COLOR`.
//!
//! A closed stdout (`boxsock doctor | head -3`) is not an error: every verb stops
//! writing and exits quietly with [`BROKEN_PIPE_EXIT`] (141, what a shell reports for a
//! command killed by SIGPIPE). `run`/`exec` first close the exec session, which makes
//! the agent kill the command's process group. A closed stderr is ignored.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use boxsock::{
    Access, BackendConfig, CreateOptions, LockMode, Runtime, RuntimeError, RuntimeOptions, StrategyConfig, builtin_backends,
    builtin_strategies,
};
use clap::{Args, Parser, Subcommand};

mod exit;
mod lifeline;
mod logs;
mod term;
mod tty;
mod views;

/// boxsock: micro-VM boxes whose sockets never hit the sun_path limit.
#[derive(Debug, Parser)]
#[command(name = "boxsock", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Args)]
struct Global {
    /// Runtime home [default: $BOXSOCK_HOME, else $XDG_DATA_HOME/boxsock, else
    /// ~/.local/share/boxsock].
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Socket strategy for new boxes.
    #[arg(long, global = true, env = "BOXSOCK_STRATEGY", default_value = boxsock::DEFAULT_STRATEGY)]
    strategy: String,
    /// Backend for new boxes.
    #[arg(long, global = true, env = "BOXSOCK_BACKEND", default_value = boxsock::DEFAULT_BACKEND)]
    backend: String,
    /// Base directory of the short binding links [default: /tmp].
    #[arg(long, global = true, env = "BOXSOCK_LINK_BASE", value_name = "DIR")]
    link_base: Option<PathBuf>,
    /// Directory holding boxsock-agent and the libkrun shim [default: next to boxsock].
    #[arg(long, global = true, env = "BOXSOCK_HELPER_DIR", value_name = "DIR")]
    helper_dir: Option<PathBuf>,
    /// A backend setting (repeatable), given to every backend; unknown keys are warned
    /// about and ignored. libkrun: `configure_only=true` configures libkrun for real and
    /// exits without booting (the availability probe is then skipped, so it works where
    /// no guest can boot; `start` reports that the box process exited before
    /// readiness); also `shim`, `passt`, `agent`, `vcpus`, `ram_mib`, `libkrunfw`,
    /// `read_only`, `jail` (see docs/backends.md). Not stored with the box: give it to
    /// every command that starts one.
    #[arg(long = "backend-option", global = true, value_name = "KEY=VALUE", value_parser = parse_env)]
    backend_options: Vec<(String, String)>,
    /// How long to wait for a home another process is using, in seconds.
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    lock_wait: f64,
    /// How long `start` waits for the box's agent, in seconds.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS")]
    ready_timeout: f64,
}

/// Backend settings that define a box: stored with it, so every `start` boots the same
/// box (unlike `--backend-option`, which is per invocation).
#[derive(Debug, Clone, Default, clap::Args)]
struct BoxArgs {
    /// Boot the box from this root filesystem directory (libkrun). The directory is
    /// never modified; writes in the box stay in the box. See docs/backends.md for how
    /// to make one (busybox, debootstrap).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Virtual CPUs (libkrun).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    vcpus: Option<u8>,
    /// Guest memory in MiB (libkrun; at least 64).
    #[arg(long = "ram-mib", value_name = "MIB", value_parser = clap::value_parser!(u32).range(64..))]
    ram_mib: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Create and start a box, run a command in it, print its output and exit with its
    /// status.
    ///
    /// Without --rm or -d the box is left stopped afterwards (like an exited
    /// container; its id is printed on stderr when interrupted).
    Run {
        /// Remove the box afterwards (also when starting it fails).
        #[arg(long, conflicts_with = "detach")]
        rm: bool,
        /// Detach: create and start the box, print its id and leave it running (no
        /// command: run commands in it with `boxsock exec`).
        #[arg(short, long, conflicts_with = "cmd")]
        detach: bool,
        /// Name the box.
        #[arg(long)]
        name: Option<String>,
        /// Extra environment for the command (repeatable); `KEY` alone passes the
        /// host's value through (not set when the host has none).
        #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env_or_host)]
        env: Vec<Option<(String, String)>>,
        /// Forward stdin to the command (otherwise it reads /dev/null).
        #[arg(short, long)]
        interactive: bool,
        #[command(flatten)]
        settings: BoxArgs,
        /// Run the command on a pseudo-terminal in the box (with -i, this terminal goes
        /// into raw mode until the command ends).
        #[arg(short, long)]
        tty: bool,
        /// Working directory of the command in the box (absolute).
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required_unless_present = "detach", value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Create a box (prints its id).
    Create {
        /// Name the box.
        #[arg(long)]
        name: Option<String>,
        /// Extra environment for the box's agent (repeatable); `KEY` alone passes the
        /// host's value through.
        #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env_or_host)]
        env: Vec<Option<(String, String)>>,
        /// Give the box a network.
        #[arg(long)]
        network: bool,
        #[command(flatten)]
        settings: BoxArgs,
    },
    /// Start created or stopped boxes (a running one is left as it is).
    Start {
        /// Box ids, unique id prefixes or names.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a command in a running box.
    Exec {
        /// Extra environment for the command (repeatable); `KEY` alone passes the
        /// host's value through (not set when the host has none).
        #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env_or_host)]
        env: Vec<Option<(String, String)>>,
        /// Forward stdin to the command (otherwise it reads /dev/null).
        #[arg(short, long)]
        interactive: bool,
        /// Run the command on a pseudo-terminal in the box (with -i, this terminal goes
        /// into raw mode until the command ends).
        #[arg(short, long)]
        tty: bool,
        /// Working directory of the command in the box (absolute).
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        /// Box id or name.
        id: String,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Stop boxes (agent shutdown, then SIGTERM, then SIGKILL).
    Stop {
        /// Seconds each step waits.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Box ids, unique id prefixes or names.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove boxes.
    Rm {
        /// Stop running boxes first (and remove corrupt rows).
        #[arg(short, long)]
        force: bool,
        /// Box ids or names.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List running boxes (-a: every box).
    #[command(visible_alias = "ps")]
    Ls {
        /// JSON output: `{"boxes": [...], "bad": [...]}`, each box as `inspect --json`
        /// shows it.
        #[arg(long)]
        json: bool,
        /// Every box, stopped and created ones too.
        #[arg(short, long)]
        all: bool,
        /// Only the ids, one per line.
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Show boxes: state, process, and every socket's live address, length and limit.
    Inspect {
        /// JSON output (one object; an array when several boxes are given).
        #[arg(long)]
        json: bool,
        /// Box ids, unique id prefixes or names.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print a box's log (its agent's or VMM's output).
    Logs {
        /// Follow: keep printing what is appended until the box stops (or Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// Box id, unique id prefix or name.
        id: String,
    },
    /// List the strategies.
    Strategies {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List the backends and whether they can run here.
    Backends {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove leftover bindings of dead boxes.
    Sweep,
    /// Check every strategy's addresses for this home and every backend's availability.
    Doctor {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// `run --rm`'s lifeline (started by `run --rm` with its pipe at descriptor 3; see
    /// cli/src/lifeline.rs): removes the box if the client dies first.
    #[command(name = lifeline::VERB, hide = true)]
    Lifeline {
        /// The box's id, chosen by the client before it creates the box.
        #[arg(long = "box", value_name = "ID")]
        box_id: String,
        /// The client's pid.
        #[arg(long, value_name = "PID")]
        owner_pid: i32,
        /// The client's start time (clock ticks after boot, /proc/<pid>/stat field 22).
        #[arg(long, value_name = "TICKS")]
        owner_start: u64,
    },
}

/// A command-line value that does not parse (clap prints it after the argument name).
#[derive(Debug, thiserror::Error)]
enum ArgError {
    /// Not `KEY=VALUE` with a non-empty key; the text is echoed safely.
    #[error("{echoed} is not KEY=VALUE")]
    NotKeyValue { echoed: String },
    /// `-e` with an empty name.
    #[error("an empty variable name is not KEY or KEY=VALUE")]
    EmptyName,
    /// A negative, NaN or overflowing number of seconds.
    #[error("--{flag} {value} is not a number of seconds")]
    Seconds { flag: &'static str, value: f64, source: std::time::TryFromFloatSecsError },
}

impl From<ArgError> for Failure {
    fn from(e: ArgError) -> Self {
        Failure(e.to_string(), exit::FAILED)
    }
}

fn parse_env(s: &str) -> Result<(String, String), ArgError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(ArgError::NotKeyValue { echoed: boxsock::boxsock_core::echo::echo(s).to_string() }),
    }
}

/// `KEY=VALUE`, or `KEY` alone: the host's value of `KEY` (`None` when the host has
/// none or it is not UTF-8, so the variable is not set, as with docker).
fn parse_env_or_host(s: &str) -> Result<Option<(String, String)>, ArgError> {
    if s.contains('=') {
        return parse_env(s).map(Some);
    }
    if s.is_empty() {
        return Err(ArgError::EmptyName);
    }
    Ok(std::env::var(s).ok().map(|v| (s.to_owned(), v)))
}

fn secs(value: f64, flag: &'static str) -> Result<Duration, ArgError> {
    Duration::try_from_secs_f64(value).map_err(|source| ArgError::Seconds { flag, value, source })
}

/// A CLI failure: the message (empty: exit quietly) and the exit status.
struct Failure(String, u8);

/// Exit status when stdout's reader has gone (`| head`): 128 + SIGPIPE, what a shell
/// reports for a command SIGPIPE killed.
const BROKEN_PIPE_EXIT: u8 = 128 + 13;

impl Failure {
    /// A failure to write stdout: quiet [`BROKEN_PIPE_EXIT`] when its reader is gone,
    /// else a message naming the error.
    fn stdout(e: &std::io::Error) -> Failure {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Failure(String::new(), BROKEN_PIPE_EXIT),
            _ => Failure(format!("cannot write to stdout: {e}"), exit::FAILED),
        }
    }
}

/// Write one line to stdout. Rust ignores SIGPIPE, so a closed stdout is an `EPIPE`
/// error here (never a panic, as with `println!`).
/// The line is escaped and bounded ([`term::for_terminal`]): it may show a path another
/// user named.
fn write_out(args: std::fmt::Arguments<'_>) -> Result<(), Failure> {
    let line = term::for_terminal(&args.to_string());
    let mut o = std::io::stdout().lock();
    o.write_all(line.as_bytes()).and_then(|()| o.write_all(b"\n")).map_err(|e| Failure::stdout(&e))
}

/// `println!` that returns a [`Failure`] from the enclosing function on a write error.
macro_rules! outln {
    () => { write_out(format_args!(""))? };
    ($($t:tt)*) => { write_out(format_args!($($t)*))? };
}

/// `eprintln!` that ignores a closed stderr (there is nowhere left to report to), the
/// line escaped and bounded ([`term::for_terminal`]).
macro_rules! errln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "{}", term::for_terminal(&format!($($t)*)));
    }};
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure(e.to_string(), exit::FAILED)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure(e, exit::FAILED)
    }
}

/// Install the log subscriber: `RUST_LOG` (default `warn`), on stderr, coloured only
/// when stderr is a terminal and `NO_COLOR` is unset or empty. An invalid `RUST_LOG`
/// is reported once and the default used.
fn init_logs() {
    use std::io::IsTerminal;
    let filter = match std::env::var("RUST_LOG") {
        Err(std::env::VarError::NotPresent) => tracing_subscriber::EnvFilter::new("warn"),
        Ok(v) if v.trim().is_empty() => tracing_subscriber::EnvFilter::new("warn"),
        Ok(v) => tracing_subscriber::EnvFilter::try_new(&v).unwrap_or_else(|e| {
            errln!("boxsock: RUST_LOG={}: invalid log filter ({e}); using \"warn\"", boxsock::boxsock_core::echo::echo(&v));
            tracing_subscriber::EnvFilter::new("warn")
        }),
        Err(std::env::VarError::NotUnicode(_)) => {
            errln!("boxsock: RUST_LOG is not UTF-8; using \"warn\"");
            tracing_subscriber::EnvFilter::new("warn")
        }
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || term::Escaping { allow_sgr: ansi })
        .init();
}

fn main() -> ExitCode {
    // Usage errors exit 125 like every boxsock failure (clap's own is 2); help and
    // version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap quotes a rejected value raw: its error is escaped and bounded like every
        // boxsock message (help and version are ours, printed as they are).
        Err(e) if e.use_stderr() => {
            let _ = std::io::stderr().write_all(term::for_terminal(&e.render().to_string()).as_bytes());
            return ExitCode::from(exit::FAILED);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(0);
        }
    };
    if matches!(cli.verb, Verb::Lifeline { .. }) {
        // Before anything else opens a descriptor: the guardian takes its pipe, and on
        // the normal path (the client disarms it) exits having done nothing else.
        match lifeline::wait() {
            Ok(lifeline::End::Disarmed) => return ExitCode::SUCCESS,
            Ok(lifeline::End::ClientGone) => {}
            Err(e) => {
                errln!("boxsock: {e}");
                return ExitCode::from(exit::FAILED);
            }
        }
    }
    init_logs();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("boxsock: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = rt.block_on(run(cli)).and_then(|code| {
        std::io::stdout().flush().map_err(|e| Failure::stdout(&e))?;
        Ok(code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(msg, code)) => {
            let _ = std::io::stdout().flush();
            if !msg.is_empty() {
                errln!("boxsock: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

impl Global {
    /// The home, made absolute (no symlink resolution) before anything checks it.
    fn home(&self) -> Result<PathBuf, Failure> {
        let home = self
            .home
            .clone()
            .or_else(boxsock::default_home)
            .ok_or_else(|| Failure("no home: pass --home or set BOXSOCK_HOME (HOME is not set either)".into(), exit::FAILED))?;
        std::path::absolute(&home).map_err(|e| Failure(format!("home {}: cannot make it absolute: {e}", boxsock::boxsock_core::echo::path(&home)), exit::FAILED))
    }

    fn options(&self) -> Result<RuntimeOptions, Failure> {
        let mut o = RuntimeOptions::new(builtin_strategies(), builtin_backends());
        let mut sc = StrategyConfig::default();
        if let Some(b) = &self.link_base {
            sc.base_dir = b.clone();
        }
        o.strategy_config = sc;
        o.backend_config =
            BackendConfig { helper_dir: self.helper_dir.clone(), options: self.backend_options.iter().cloned().collect() };
        // Many CLI processes may work on one home at once: lock per operation.
        o.lock_mode = LockMode::Shared;
        o.lock_wait = Some(secs(self.lock_wait, "lock-wait")?);
        o.ready_timeout = secs(self.ready_timeout, "ready-timeout")?;
        // A CLI process is short-lived: boxes are checked at each open instead.
        o.health_monitor = false;
        Ok(o)
    }

    /// Open the home. `writes` says whether the verb changes anything: only then does
    /// the open also remove `run --rm` boxes whose client is gone (read-only verbs
    /// delete nothing).
    async fn open(&self, writes: Writes) -> Result<Runtime, Failure> {
        self.open_with_report(writes).await.map(|(rt, _)| rt)
    }

    /// [`Global::open`], with what the opening sweep and recovery did (`sweep` prints
    /// it).
    async fn open_with_report(&self, writes: Writes) -> Result<(Runtime, boxsock::OpenReport), Failure> {
        let mut o = self.options()?;
        o.remove_abandoned_at_open = writes == Writes::Yes;
        let (rt, report) = Runtime::open(self.home()?, o).await.map_err(Failure::from)?;
        for id in &report.abandoned_removed {
            tracing::info!(box_id = %id, "removed a `run --rm` box whose client is gone");
        }
        for bad in &report.corrupt_rows {
            tracing::warn!(box_id = %bad.id, error = %bad.error, "corrupt box row (remove it with `boxsock rm -f`)");
        }
        Ok((rt, report))
    }

    /// Open the home read-only (`ls`, `inspect`): nothing is created, deleted,
    /// recovered or swept. `None` if the home does not exist.
    async fn open_read_only(&self) -> Result<Option<Runtime>, Failure> {
        let mut o = self.options()?;
        o.access = Access::ReadOnly;
        match Runtime::open(self.home()?, o).await {
            Ok((rt, report)) => {
                for bad in &report.corrupt_rows {
                    tracing::warn!(box_id = %bad.id, error = %bad.error, "corrupt box row (remove it with `boxsock rm -f`)");
                }
                Ok(Some(rt))
            }
            Err(RuntimeError::NoHome { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a home that must already exist: a verb naming a box in a missing home
    /// (a typo in `--home`) fails without creating it.
    async fn open_existing(&self, what: &str, writes: Writes) -> Result<Runtime, Failure> {
        let home = self.home()?;
        if !home.exists() {
            return Err(Failure(format!("no box with id or name {}: home {} does not exist", boxsock::boxsock_core::echo::echo(what), boxsock::boxsock_core::echo::path(&home)), exit::FAILED));
        }
        self.open(writes).await
    }

    /// The global options as arguments, for `run --rm`'s lifeline: it opens the home
    /// as this process did (home made absolute; values from the environment passed as
    /// options).
    fn lifeline_args(&self) -> Result<Vec<std::ffi::OsString>, Failure> {
        let mut a: Vec<std::ffi::OsString> = vec!["--home".into(), self.home()?.into_os_string()];
        a.extend(["--strategy".into(), self.strategy.clone().into()]);
        a.extend(["--backend".into(), self.backend.clone().into()]);
        if let Some(b) = &self.link_base {
            a.extend(["--link-base".into(), b.clone().into_os_string()]);
        }
        if let Some(d) = &self.helper_dir {
            a.extend(["--helper-dir".into(), d.clone().into_os_string()]);
        }
        for (k, v) in &self.backend_options {
            a.extend(["--backend-option".into(), format!("{k}={v}").into()]);
        }
        a.extend(["--lock-wait".into(), self.lock_wait.to_string().into()]);
        a.extend(["--ready-timeout".into(), self.ready_timeout.to_string().into()]);
        Ok(a)
    }

    fn create_options(&self, name: Option<String>, env: Vec<(String, String)>, network: bool, settings: &BoxArgs) -> CreateOptions {
        let mut b = CreateOptions::builder().strategy(self.strategy.clone()).backend(self.backend.clone()).network(network).envs(env);
        if let Some(n) = name {
            b = b.name(n);
        }
        if let Some(dir) = &settings.rootfs {
            b = b.rootfs(dir.clone());
        }
        if let Some(n) = settings.vcpus {
            b = b.vcpus(n);
        }
        if let Some(m) = settings.ram_mib {
            b = b.ram_mib(m);
        }
        b.build()
    }
}

/// Whether a verb changes the home (see [`Global::open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    Yes,
    No,
}

/// Add a hint when the default backend cannot be used.
fn backend_hint(e: RuntimeError, g: &Global) -> Failure {
    let msg = e.to_string();
    let hint = matches!(&e, RuntimeError::Registry(_) | RuntimeError::Backend(_) | RuntimeError::BackendUnavailable { .. })
        && g.backend != "host"
        && msg.contains(&g.backend);
    Failure(if hint { format!("{msg}; try --backend host (no isolation)") } else { msg }, exit::FAILED)
}

/// How `run`/`exec` run the command: `-i`, `-t`, `-w`; `started` is set once the
/// command runs and signals are forwarded to it.
#[derive(Debug, Clone, Copy)]
struct ExecOpts<'a> {
    interactive: bool,
    tty: bool,
    workdir: Option<&'a str>,
    started: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Run a command in a box, writing its output as it arrives (see `tty` for `-t`,
/// raw mode and the signals forwarded to the command). When stdout's reader goes away
/// (`| head`), the exec session is closed (the child dropped), so the agent kills the
/// command's process group, and this returns the quiet broken-pipe failure.
async fn exec_in(rt: &Runtime, id: &str, cmd: Vec<String>, env: Vec<(String, String)>, attach: ExecOpts<'_>) -> Result<i32, Failure> {
    use boxsock::exec::Stdio;
    use tokio::io::AsyncReadExt;
    if attach.tty && attach.interactive && !tty::stdin_is_tty() {
        return Err(Failure("the input device is not a TTY (drop -t, or run from a terminal)".into(), exit::FAILED));
    }
    let Some((program, args)) = cmd.split_first() else {
        return Err(Failure("no command given".into(), exit::FAILED));
    };
    let mut command = rt.command(id, program.as_str());
    command
        .args(args.iter().cloned())
        .envs(env)
        .stdin(if attach.interactive { Stdio::Inherit } else { Stdio::Null })
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    if attach.tty {
        let (rows, cols) = tty::window_size().unwrap_or((24, 80));
        command.window_size(rows, cols);
    }
    if let Some(dir) = attach.workdir {
        command.current_dir(dir);
    }
    // Raw mode before the command starts, so no typed byte is echoed locally.
    let raw = match attach.tty && attach.interactive {
        true => Some(tty::RawMode::enter().map_err(|e| Failure(format!("cannot put the terminal in raw mode: {e}"), exit::FAILED))?),
        false => None,
    };
    let mut child = command.spawn().await.map_err(|e| exec_failure_of(e, Some(program)))?;
    let forwarding = tty::forward_signals(child.control(), attach.tty);
    if let Some(started) = attach.started {
        started.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    // A closed stderr drops the command's stderr; the command goes on.
    let copy_err = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Some(Ok(n @ 1..)) = match err.as_mut() { Some(e) => Some(e.read(&mut buf).await), None => None } {
            let _ = std::io::stderr().lock().write_all(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    let copy_out = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Some(Ok(n @ 1..)) = match out.as_mut() { Some(o) => Some(o.read(&mut buf).await), None => None } {
            let mut o = std::io::stdout().lock();
            o.write_all(&buf[..n]).and_then(|()| o.flush())?;
        }
        std::io::Result::Ok(())
    };
    // A closed stdout ends both copies at once (the command may go on writing to
    // stderr).
    let copied = tokio::try_join!(copy_out, copy_err);
    let result = match copied {
        Err(e) => {
            tracing::debug!(box_id = id, error = %e, "stdout closed; ended the exec session");
            Err(Failure::stdout(&e))
        }
        Ok(((), ())) => child.wait().await.map(|s| s.shell_code()).map_err(|e| exec_failure_of(e, Some(program))),
    };
    forwarding.abort();
    drop(child);
    drop(raw);
    result
}

/// A failed `run`/`exec`: 127 when the command was not found, 126 when it cannot be
/// executed (as a shell does), else 125; see [`exit::exec_failure`].
fn exec_failure(e: RuntimeError) -> Failure {
    exec_failure_of(e, None)
}

fn exec_failure_of(e: RuntimeError, argv0: Option<&str>) -> Failure {
    let (msg, code) = exit::exec_failure(&e, argv0);
    Failure(msg, code)
}

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<u8, Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Failure(format!("cannot encode JSON: {e}"), exit::FAILED))?;
    // Not through `write_out`: JSON is escaped its own way and never cut.
    let mut o = std::io::stdout().lock();
    o.write_all(term::json_for_terminal(&s).as_bytes()).and_then(|()| o.write_all(b"\n")).map_err(|e| Failure::stdout(&e))?;
    Ok(0)
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let g = &cli.global;
    match cli.verb {
        Verb::Run { rm, detach, name, env, interactive, tty, workdir, settings, cmd } => {
            let env: Vec<(String, String)> = env.into_iter().flatten().collect();
            let rt = g.open(Writes::Yes).await.map_err(|f| Failure(f.0, exit::FAILED))?;
            let mut opts = g.create_options(name, Vec::new(), false, &settings);
            // Tie the box to this process: a lifeline (a guardian process told the id
            // before the box exists) removes it as soon as this process dies without
            // removing it (kill -9); the owner recorded with the row lets the next
            // writing command remove it if the lifeline was killed too.
            let guard = match rm {
                true => {
                    let owner = boxsock::ProcessIdentity::current().map_err(|e| {
                        Failure(format!("cannot read this process's identity: {e}"), exit::FAILED)
                    })?;
                    let id = boxsock::BoxId::generate();
                    let l = lifeline::Lifeline::spawn(g.lifeline_args()?, &id, owner)
                        .map_err(|e| Failure(e.to_string(), exit::FAILED))?;
                    opts.id = Some(id);
                    opts.auto_remove_owner = Some(owner);
                    Some(l)
                }
                false => None,
            };
            let b = match rt.create(opts).await {
                Ok(b) => b,
                Err(e) => {
                    // A failed create leaves nothing behind.
                    if let Some(l) = guard {
                        l.disarm();
                    }
                    return Err(Failure(backend_hint(e, g).0, exit::FAILED));
                }
            };
            let id = b.id.to_string();
            if detach {
                // A failed start leaves the box stopped (`rm` it, or `start` it again).
                rt.start(&id).await.map_err(|e| Failure(format!("{e} (box {id} is left stopped)"), exit::FAILED))?;
                outln!("{id}");
                return Ok(0);
            }
            // Ctrl-C or SIGTERM while the box starts stops the start; once the command
            // runs, they are forwarded to it (see `tty`) and it decides its status.
            // Either way a --rm box is removed, any other box stopped, and its id said.
            let exec_started = std::sync::atomic::AtomicBool::new(false);
            let work = async {
                rt.start(&id).await.map_err(exec_failure)?;
                exec_in(&rt, &id, cmd, env, ExecOpts { interactive, tty, workdir: workdir.as_deref(), started: Some(&exec_started) }).await
            };
            tokio::pin!(work);
            let mut interrupted_by = None;
            let result = loop {
                tokio::select! {
                    r = &mut work => break r,
                    sig = interrupted(), if interrupted_by.is_none() => {
                        interrupted_by = Some(sig);
                        if !exec_started.load(std::sync::atomic::Ordering::SeqCst) {
                            let code = if sig == "SIGINT" { 128 + 2 } else { 128 + 15 };
                            break Err(Failure(String::new(), code));
                        }
                    }
                }
            };
            if let Some(sig) = interrupted_by {
                let left = if rm { String::new() } else { format!("; box {id} is left stopped") };
                errln!("boxsock: interrupted by {sig}{left}");
            }
            if rm {
                if let Err(e) = rt.remove(&id, true).await {
                    errln!("boxsock: removing box {id}: {e}");
                }
            } else if let Err(e) = rt.stop(&id, None).await {
                // Like an exited container: the box stays, stopped.
                errln!("boxsock: stopping box {id}: {e}");
            }
            // Removed, or its failure said here: the lifeline has nothing left to do
            // (a box this removal could not remove is left to the next writing command).
            if let Some(l) = guard {
                l.disarm();
            }
            Ok(exit_byte(result?))
        }
        Verb::Create { name, env, network, settings } => {
            let env: Vec<(String, String)> = env.into_iter().flatten().collect();
            let rt = g.open(Writes::Yes).await?;
            let b = rt.create(g.create_options(name, env, network, &settings)).await.map_err(|e| backend_hint(e, g))?;
            outln!("{}", b.id);
            Ok(0)
        }
        Verb::Start { ids } => {
            let rt = &g.open_existing(&ids.join(", "), Writes::Yes).await?;
            // A running box is left as it is (and its id printed), like docker.
            each(ids, |id| async move { Ok(rt.start(&id).await?.id.to_string()) }).await
        }
        Verb::Exec { env, interactive, tty, workdir, id, cmd } => {
            let env: Vec<(String, String)> = env.into_iter().flatten().collect();
            let rt = g.open_existing(&id, Writes::Yes).await.map_err(|f| Failure(f.0, exit::FAILED))?;
            let code = exec_in(&rt, &id, cmd, env, ExecOpts { interactive, tty, workdir: workdir.as_deref(), started: None }).await?;
            Ok(exit_byte(code))
        }
        Verb::Stop { timeout, ids } => {
            let timeout = secs(timeout, "timeout")?;
            let rt = &g.open_existing(&ids.join(", "), Writes::Yes).await?;
            each(ids, |id| async move { Ok(rt.stop(&id, Some(timeout)).await?.id.to_string()) }).await
        }
        Verb::Rm { force, ids } => {
            let rt = &g.open_existing(&ids.join(", "), Writes::Yes).await?;
            each(ids, |id| async move { rt.remove(&id, force).await }).await
        }
        Verb::Ls { json: as_json, all, quiet } => {
            // Read-only: listing deletes, recovers and creates nothing. A home that does
            // not exist lists nothing, and says so.
            let (boxes, bad) = match g.open_read_only().await? {
                Some(rt) => {
                    let l = rt.list()?;
                    let mut boxes = Vec::new();
                    for b in l.boxes.iter().filter(|b| views::listed(b.state, all)) {
                        match rt.inspect(b.id.as_str()) {
                            Ok(i) if views::listed(i.state, all) => boxes.push(i),
                            Ok(_) => {}
                            // Removed meanwhile.
                            Err(RuntimeError::NotFound(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    (boxes, l.bad)
                }
                None => {
                    errln!("boxsock: home {} does not exist (no boxes)", boxsock::boxsock_core::echo::path(&g.home()?));
                    (Vec::new(), Vec::new())
                }
            };
            if as_json {
                return json(&serde_json::json!({ "boxes": boxes, "bad": bad }));
            }
            if quiet {
                for b in &boxes {
                    outln!("{}", b.id);
                }
            } else {
                for line in views::table(&boxes) {
                    outln!("{line}");
                }
            }
            for bad in &bad {
                errln!("boxsock: box {}: stored row is corrupt: {} (remove it with `boxsock rm -f {}`)", bad.id, bad.error, bad.id);
            }
            Ok(0)
        }
        Verb::Inspect { json: as_json, ids } => {
            let Some(rt) = g.open_read_only().await? else {
                return Err(Failure(format!("no box with id or name {}: home {} does not exist", boxsock::boxsock_core::echo::echo(&ids.join(", ")), boxsock::boxsock_core::echo::path(&g.home()?)), exit::FAILED));
            };
            let mut found = Vec::new();
            let mut failed = false;
            for id in &ids {
                match rt.inspect(id) {
                    Ok(i) => found.push(i),
                    Err(e) => {
                        errln!("boxsock: {e}");
                        failed = true;
                    }
                }
            }
            if as_json {
                match found.as_slice() {
                    [one] if ids.len() == 1 => json(one)?,
                    many => json(&many)?,
                };
            } else {
                for (n, i) in found.iter().enumerate() {
                    if n > 0 {
                        outln!();
                    }
                    print_info(i)?;
                }
            }
            if failed { Err(Failure(String::new(), exit::FAILED)) } else { Ok(0) }
        }
        Verb::Logs { follow, id } => {
            let Some(rt) = g.open_read_only().await? else {
                return Err(Failure(format!("no box with id or name {}: home {} does not exist", boxsock::boxsock_core::echo::echo(&id), boxsock::boxsock_core::echo::path(&g.home()?)), exit::FAILED));
            };
            let mut out = |b: &[u8]| {
                let mut o = std::io::stdout().lock();
                o.write_all(b).and_then(|()| o.flush())
            };
            match logs::copy(&rt, &id, follow, &mut out, async {
                interrupted().await;
            })
            .await
            {
                Ok(()) => Ok(0),
                Err(logs::LogsError::Stdout(e)) => Err(Failure::stdout(&e)),
                Err(e) => Err(Failure(e.to_string(), exit::FAILED)),
            }
        }
        Verb::Strategies { json: as_json } => {
            let o = g.options()?;
            let rows: Vec<serde_json::Value> = o
                .strategies
                .iter()
                .map(|r| {
                    let caps = o.strategies.build(r.name, &o.strategy_config).ok().map(|s| s.capabilities());
                    serde_json::json!({
                        "name": r.name,
                        "summary": r.summary,
                        "supported_here": caps.as_ref().is_some_and(|c| c.supported_here()),
                        "path_addressable": caps.as_ref().map(|c| c.path_addressable),
                        "home_length_independent": caps.as_ref().map(|c| c.home_length_independent),
                        "peer_credentials": caps.as_ref().map(|c| c.peer_credentials),
                        "default": r.name == boxsock::DEFAULT_STRATEGY,
                    })
                })
                .collect();
            if as_json {
                return json(&rows);
            }
            for r in &rows {
                outln!("{:<14} {}", r["name"].as_str().unwrap_or(""), r["summary"].as_str().unwrap_or(""));
            }
            Ok(0)
        }
        Verb::Backends { json: as_json } => {
            let report = boxsock::doctor(&g.home()?, &g.options()?);
            if as_json {
                return json(&report.backends);
            }
            for b in &report.backends {
                let avail = if b.available { "available".to_string() } else { format!("unavailable: {}", b.reason.as_deref().unwrap_or("?")) };
                outln!("{:<10} {}", b.name, b.summary);
                outln!("{:<10} {avail}", "");
                if !b.available && b.launch_available {
                    outln!("{:<10} probe skipped by a backend option: boxes are configured, never booted", "");
                }
                if let Some(iso) = &b.isolation {
                    outln!("{:<10} isolation: {iso}", "");
                }
            }
            Ok(0)
        }
        Verb::Sweep => {
            let (rt, opened) = g.open_with_report(Writes::No).await?;
            // What the opening sweep already removed counts as removed by this sweep.
            for (name, r) in &opened.swept {
                if let Ok(rep) = r {
                    if !rep.removed.is_empty() {
                        outln!("{name}: removed {} at open", rep.removed.len());
                        for p in &rep.removed {
                            outln!("  {}", boxsock::boxsock_core::echo::path(p));
                        }
                    }
                }
            }
            for id in &opened.orphan_dirs_removed {
                outln!("box directory without a row (an interrupted create): removed {id}");
            }
            for id in &opened.orphan_rows_removed {
                outln!("box row without a directory (an interrupted removal): removed {id}");
            }
            // `run --rm` boxes whose client is gone (killed before it could remove
            // them), then every strategy's leftover bindings.
            let abandoned = rt.remove_abandoned().await?;
            outln!("run --rm boxes whose client is gone: removed {}", abandoned.len());
            for id in abandoned {
                outln!("  {id}");
            }
            for (name, r) in rt.sweep().await? {
                match r {
                    Ok(rep) => {
                        outln!("{name}: removed {}, kept {}", rep.removed.len(), rep.kept);
                        for p in rep.removed {
                            outln!("  {}", boxsock::boxsock_core::echo::path(&p));
                        }
                    }
                    Err(e) => outln!("{name}: failed: {e}"),
                }
            }
            Ok(0)
        }
        Verb::Lifeline { box_id, owner_pid, owner_start } => {
            // Only reached once the client is gone without disarming (see `main`).
            let id = boxsock::BoxId::parse(&box_id).map_err(|e| {
                let echoed = boxsock::boxsock_core::echo::echo(&box_id);
                Failure(format!("box id {echoed}: {e}"), exit::FAILED)
            })?;
            let owner = boxsock::ProcessIdentity { pid: owner_pid, start_time: owner_start };
            // The pipe ends when the client's descriptors are closed, a moment before the
            // kernel has the process exited: wait for that (its pidfd), or the client
            // would still count as alive.
            if !boxsock::ProcessHandle::open(owner).wait_gone(lifeline::CLIENT_EXIT_WAIT).await {
                let waited = lifeline::CLIENT_EXIT_WAIT;
                return Err(Failure(
                    format!(
                        "box {id}: the `run --rm` client (pid {owner_pid}) closed its lifeline \
                         but is still running {waited:?} later; the box is left to it"
                    ),
                    exit::FAILED,
                ));
            }
            // Its own box only: other abandoned boxes are the next writing command's.
            let rt = g.open(Writes::No).await?;
            match rt.remove_owned(&id, owner).await {
                Ok(boxsock::OwnedRemoval::OwnerAlive) => Err(Failure(
                    format!(
                        "box {id}: its `run --rm` client (pid {owner_pid}) still runs; \
                         the box is left to it"
                    ),
                    exit::FAILED,
                )),
                Ok(done) => {
                    tracing::info!(box_id = %id, outcome = ?done, "run --rm client gone");
                    Ok(0)
                }
                Err(e) => Err(Failure(
                    format!(
                        "removing box {id} after its `run --rm` client died: {e} \
                         (the next writing command removes it)"
                    ),
                    exit::FAILED,
                )),
            }
        }
        Verb::Doctor { json: as_json } => {
            let home = g.home()?;
            let home_exists = std::fs::symlink_metadata(&home).is_ok();
            let report = boxsock::doctor(&home, &g.options()?);
            if as_json {
                let v = views::doctor_json(&report, home_exists).map_err(|e| Failure(format!("cannot encode JSON: {e}"), exit::FAILED))?;
                return json(&v);
            }
            outln!("home:     {} ({} bytes)", report.home, report.home_bytes);
            if !home_exists {
                outln!("home does not exist: the first writing command (create, run) makes it");
            }
            outln!("platform: {}, sun_path holds {} bytes including the NUL", report.platform, report.limit);
            outln!("worst-case box id: {} ({} bytes)", report.sample_id, report.sample_id.len());
            if let Some(uid) = report.binding_dir_squatted_by {
                outln!("WARNING: the predictable per-user binding directory is held by uid {uid} (squatted)");
            }
            if let Some(d) = &report.binding_dir_fallback {
                outln!("binding directory: {d} (fallback recorded in the home)");
            }
            for f in &report.fallbacks {
                outln!("fallback {} (recorded in {}): {}", f.dir, f.record, f.state);
                for n in &f.notes {
                    outln!("  {n}");
                }
            }
            for s in &report.strategies {
                outln!();
                // Addresses that could not be derived at all (not "too long"): say why
                // once, e.g. the abstract strategy's per-home secret in a home that does
                // not exist yet.
                let underivable = s.sockets.iter().all(|x| x.address.is_none()) && !s.sockets.is_empty();
                let verdict = if s.error.is_some() {
                    "cannot be built"
                } else if !s.supported_here {
                    "not supported on this platform"
                } else if s.all_fit {
                    "every address fits"
                } else if underivable {
                    "addresses cannot be derived here"
                } else {
                    "SOME ADDRESSES DO NOT FIT"
                };
                outln!("strategy {}: {verdict}", s.name);
                if let Some(e) = &s.error {
                    outln!("  {e}");
                }
                if let Some(d) = &s.binding_dir {
                    outln!("  binding directory: {d}");
                }
                if underivable {
                    outln!("  {}", s.sockets[0].error.as_deref().unwrap_or("?"));
                    continue;
                }
                for sock in &s.sockets {
                    print_socket(sock)?;
                }
            }
            outln!();
            for b in &report.backends {
                let avail = if b.available { "available".to_string() } else { format!("unavailable: {}", b.reason.as_deref().unwrap_or("?")) };
                outln!("backend {}: {avail}", b.name);
                if !b.available && b.launch_available {
                    outln!("  probe skipped by a backend option (configure_only): create/start go ahead, boxes are configured, never booted");
                }
                if let Some(iso) = &b.isolation {
                    outln!("  isolation: {iso}");
                }
                for (s, r) in &b.compatible {
                    match r {
                        Ok(()) => outln!("  with {s}: ok"),
                        Err(e) => outln!("  with {s}: no: {e}"),
                    }
                }
            }
            outln!();
            outln!("selected (--strategy {} --backend {}): {}", g.strategy, g.backend, selected_verdict(&report, g));
            Ok(0)
        }
    }
}

/// Run `f` for each id, printing what it returns (an id) on stdout and each failure
/// on its own stderr line as it happens. Every id is processed; the status is 125 if
/// any failed. A closed stdout does not stop the work asked for.
async fn each<F, Fut>(ids: Vec<String>, mut f: F) -> Result<u8, Failure>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, RuntimeError>>,
{
    let mut failed = false;
    let mut printed: Result<(), Failure> = Ok(());
    for id in ids {
        match f(id).await {
            Ok(done) => printed = printed.and_then(|()| write_out(format_args!("{done}"))),
            Err(e) => {
                errln!("boxsock: {e}");
                failed = true;
            }
        }
    }
    printed?;
    if failed { Err(Failure(String::new(), exit::FAILED)) } else { Ok(0) }
}

/// `inspect` without `--json`.
fn print_info(i: &boxsock::BoxInfo) -> Result<(), Failure> {
    outln!("id:        {}", i.id);
    outln!("name:      {}", i.name.as_deref().unwrap_or("-"));
    outln!("state:     {}", i.state);
    outln!("strategy:  {}", i.strategy);
    outln!("backend:   {}", i.backend);
    match (i.pid, i.start_time) {
        (Some(p), Some(st)) => outln!("process:   pid {p}, start time {st}, {}", if i.alive { "alive" } else { "gone" }),
        _ => outln!("process:   -"),
    }
    if let Some(c) = i.exit_code {
        outln!("exit code: {c}");
    }
    for c in &i.companions {
        outln!(
            "companion: pid {} ({}), start time {}, {}",
            c.pid,
            c.command.as_deref().unwrap_or("?"),
            c.start_time,
            if c.alive { "alive" } else { "gone" }
        );
    }
    outln!("dir:       {}", i.dir);
    outln!("log:       {}", i.log);
    if let Some(b) = &i.binding {
        outln!("binding:   {b}");
    }
    outln!("sockets:");
    for s in &i.sockets {
        print_socket(s)?;
    }
    Ok(())
}

/// One sentence on whether new boxes of the selected strategy and backend can be created
/// and started in this home on this machine: compatibility and budget first (they do
/// not depend on the machine), then availability.
fn selected_verdict(report: &boxsock::DoctorReport, g: &Global) -> String {
    let Some(b) = report.backends.iter().find(|b| b.name == g.backend) else {
        return format!("no backend {:?} is registered", g.backend);
    };
    match b.compatible.iter().find(|(s, _)| *s == g.strategy).map(|(_, r)| r) {
        None => format!("strategy {:?} is not registered or cannot be built here", g.strategy),
        Some(Err(e)) => format!("boxes cannot be created: {e}"),
        Some(Ok(())) if !b.launch_available => {
            format!("boxes cannot start here: {}", b.reason.as_deref().unwrap_or("the backend is unavailable"))
        }
        Some(Ok(())) if !b.available => "boxes are configured but never booted (a backend option skips the probe)".into(),
        Some(Ok(())) => "boxes can be created and started".into(),
    }
}

fn print_socket(s: &boxsock::boxsock_runtime::SocketReport) -> Result<(), Failure> {
    let addr = s.address.as_deref().unwrap_or("-");
    let bytes = s.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
    let fits = if s.fits { "fits" } else { "DOES NOT FIT" };
    outln!("  {:<40} {addr} ({bytes} bytes, limit {}: {fits})", s.socket, s.limit);
    if let Some(e) = &s.error {
        if !s.fits && s.address.is_none() {
            outln!("  {:<40} {e}", "");
        }
    }
    Ok(())
}
