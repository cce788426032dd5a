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
use std::process::ExitCode;

use boxsock::RuntimeError;
use boxsock::term;
use clap::Parser;

use args::{Cli, ImageVerb, Verb};

mod args;
mod exit;
mod home;
mod lifeline;
mod logs;
mod tty;
mod verbs;
mod views;

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
    () => { $crate::write_out(format_args!(""))? };
    ($($t:tt)*) => { $crate::write_out(format_args!($($t)*))? };
}
// Imported by path (`use crate::outln`) in the verb modules.
use outln;

/// `eprintln!` that ignores a closed stderr (there is nowhere left to report to), the
/// line escaped and bounded ([`term::for_terminal`]).
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{}", ::boxsock::term::for_terminal(&format!($($t)*)));
    }};
}
// Imported by path (`use crate::errln`) in the verb modules.
use errln;

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
            errln!(
                "boxsock: RUST_LOG={}: invalid log filter ({e}); using \"warn\"",
                boxsock::boxsock_core::echo::echo(&v)
            );
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
            let _ =
                std::io::stderr().write_all(term::for_terminal(&e.render().to_string()).as_bytes());
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

fn json<T: serde::Serialize>(v: &T) -> Result<u8, Failure> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| Failure(format!("cannot encode JSON: {e}"), exit::FAILED))?;
    // Not through `write_out`: JSON is escaped its own way and never cut.
    let mut o = std::io::stdout().lock();
    o.write_all(term::json_for_terminal(&s).as_bytes())
        .and_then(|()| o.write_all(b"\n"))
        .map_err(|e| Failure::stdout(&e))?;
    Ok(0)
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let g = &cli.global;
    match cli.verb {
        Verb::Run(args) => verbs::run(g, args).await,
        Verb::Create { name, env, network, settings, image, workdir, cmd } => {
            verbs::create(g, name, env, network, settings, image, workdir, cmd).await
        }
        Verb::Start { attach, interactive, ids } => verbs::start(g, attach, interactive, ids).await,
        Verb::Exec { env, interactive, tty, workdir, user, id, cmd } => {
            verbs::exec(g, env, interactive, tty, workdir, user, id, cmd).await
        }
        Verb::Stop { timeout, ids } => verbs::stop(g, timeout, ids).await,
        Verb::Rm { force, ids } => verbs::rm(g, force, ids).await,
        Verb::Ls { json, all, quiet } => verbs::ls(g, json, all, quiet).await,
        Verb::Inspect { json, ids } => verbs::inspect(g, json, ids).await,
        Verb::Logs { follow, id } => verbs::logs(g, follow, id).await,
        Verb::Strategies { json } => verbs::strategies(g, json),
        Verb::Backends { json } => verbs::backends(g, json),
        Verb::Sweep => verbs::sweep(g).await,
        Verb::Lifeline { box_id, owner_pid, owner_start } => {
            verbs::lifeline(g, box_id, owner_pid, owner_start).await
        }
        Verb::Doctor { json } => verbs::doctor(g, json),
        Verb::Pull { insecure_registry, quiet, reference } => {
            verbs::image::pull(g, reference, insecure_registry, quiet).await
        }
        Verb::Login { username, password_stdin, registry } => {
            verbs::image::login(g, registry, username, password_stdin).await
        }
        Verb::Images { quiet, json } => verbs::image::images(g, quiet, json).await,
        Verb::Rmi { force, refs } => verbs::image::rmi(g, force, refs).await,
        Verb::Image { verb } => match verb {
            ImageVerb::Import { name, quiet, path } => {
                verbs::image::import(g, path, name, quiet).await
            }
            ImageVerb::Inspect { refs } => verbs::image::inspect(g, refs).await,
            ImageVerb::Save { output, reference } => verbs::image::save(g, reference, output).await,
            ImageVerb::Prune => verbs::image::prune(g).await,
        },
    }
}
