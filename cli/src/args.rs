//! The command line's definition: the global options, the verbs and their arguments,
//! and the parsers of their values.

use std::path::PathBuf;
use std::time::Duration;

use boxsock::{ByteSize, PortMapping, Volume};
use clap::{Args, Parser, Subcommand};

use crate::{Failure, exit, lifeline};

/// boxsock: micro-VM boxes whose sockets never hit the sun_path limit.
#[derive(Debug, Parser)]
#[command(name = "boxsock", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) verb: Verb,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Runtime home [default: $BOXSOCK_HOME, else $XDG_DATA_HOME/boxsock, else
    /// ~/.local/share/boxsock].
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Socket strategy for new boxes.
    #[arg(long, global = true, env = "BOXSOCK_STRATEGY", default_value = boxsock::DEFAULT_STRATEGY)]
    pub(crate) strategy: String,
    /// Backend for new boxes.
    #[arg(long, global = true, env = "BOXSOCK_BACKEND", default_value = boxsock::DEFAULT_BACKEND)]
    pub(crate) backend: String,
    /// Base directory of the short binding links [default: /tmp].
    #[arg(long, global = true, env = "BOXSOCK_LINK_BASE", value_name = "DIR")]
    pub(crate) link_base: Option<PathBuf>,
    /// Directory holding boxsock-agent and the libkrun shim [default: next to boxsock].
    #[arg(long, global = true, env = "BOXSOCK_HELPER_DIR", value_name = "DIR")]
    pub(crate) helper_dir: Option<PathBuf>,
    /// A backend setting (repeatable), given to every backend; unknown keys are warned
    /// about and ignored. libkrun: `configure_only=true` configures libkrun for real and
    /// exits without booting (the availability probe is then skipped, so it works where
    /// no guest can boot; `start` reports that the box process exited before
    /// readiness); also `shim`, `passt`, `agent`, `vcpus`, `ram_mib`, `libkrunfw`,
    /// `read_only`, `jail` (see docs/backends.md). Not stored with the box: give it to
    /// every command that starts one.
    #[arg(long = "backend-option", global = true, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub(crate) backend_options: Vec<(String, String)>,
    /// How long to wait for a home another process is using, in seconds.
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    pub(crate) lock_wait: f64,
    /// How long `start` waits for the box's agent, in seconds.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) ready_timeout: f64,
}

/// Backend settings that define a box: stored with it, so every `start` boots the same
/// box (unlike `--backend-option`, which is per invocation).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct BoxArgs {
    /// Boot the box from this root filesystem directory (libkrun). The directory is
    /// never modified; writes in the box stay in the box. See docs/backends.md for how
    /// to make one (busybox, debootstrap).
    #[arg(long, value_name = "DIR")]
    pub(crate) rootfs: Option<PathBuf>,
    /// Virtual CPUs (libkrun: 1 to 254).
    #[arg(long = "cpus", visible_alias = "vcpus", value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub(crate) vcpus: Option<u8>,
    /// Guest memory in MiB (libkrun; at least 64).
    #[arg(long = "ram-mib", value_name = "MIB", value_parser = clap::value_parser!(u32).range(64..), conflicts_with = "memory")]
    pub(crate) ram_mib: Option<u32>,
    /// Guest memory: a size such as 512m or 2g (libkrun; at least 64m, at most the
    /// host's memory).
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<ByteSize>,
    /// Show a host directory to the box at a guest path, read-only with `:ro`
    /// (repeatable). Both paths absolute; the directory must exist.
    #[arg(short = 'v', long = "volume", value_name = "HOST_DIR:GUEST_PATH[:ro]")]
    pub(crate) volumes: Vec<Volume>,
    /// Publish a box port on the host (repeatable). Bound on 127.0.0.1 unless a host
    /// address is given (docker binds 0.0.0.0: here a box serves other machines only
    /// when asked to). Gives the box a network, as `--network` does; a host port in use
    /// fails `start`, naming its holder.
    #[arg(short = 'p', long = "publish", value_name = "[HOST_IP:]HOST_PORT:BOX_PORT[/tcp|/udp]")]
    pub(crate) ports: Vec<PortMapping>,
    /// The size of the box's persistent writable disk (libkrun), such as 2g; the disk
    /// is sparse: only what the box writes takes space.
    #[arg(long = "disk-size", value_name = "SIZE")]
    pub(crate) disk_size: Option<ByteSize>,
}

/// The image a new box runs, and docker's overrides of its config (`-e` and `-w` are
/// the verb's own options).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ImageArgs {
    /// The OCI image to run (a name such as `alpine` or `registry:5000/team/app:1.2`, an
    /// id or a unique id prefix), from this home's image store: get it with `boxsock
    /// pull` or `boxsock image import`. Its Entrypoint, Cmd, Env, WorkingDir and User
    /// apply, with docker's override rules. Not with --rootfs.
    #[arg(value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// Replace the image's Entrypoint with this program (its Cmd is then dropped; `""`
    /// clears the entrypoint). Needs an IMAGE.
    #[arg(long, value_name = "PROGRAM", requires = "image")]
    pub(crate) entrypoint: Option<String>,
    /// Run as this user (`uid`, `uid:gid`, `name`, `name:group`, resolved in the box's
    /// /etc/passwd and /etc/group); replaces the image's User. Stored with the box: its
    /// command and every `exec` without -u run as this user.
    #[arg(short, long, value_name = "USER")]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Verb {
    /// Create and start a box, run a command in it, print its output and exit with its
    /// status.
    ///
    /// Without --rm or -d the box is left stopped afterwards (like an exited
    /// container; its id is printed on stderr when interrupted).
    Run(RunArgs),
    /// Create a box (prints its id). A command after `--` (or an IMAGE's Entrypoint and
    /// Cmd) is stored as the box's own: `start -a` runs it.
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
        #[command(flatten)]
        image: ImageArgs,
        /// Working directory of the box's command (absolute).
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        /// The box's command and its arguments (with an IMAGE: replaces its Cmd).
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Start created or stopped boxes (a running one is left as it is).
    Start {
        /// Attach: run the box's own command (stored at create), print its output and
        /// exit with its status; the box is stopped afterwards. One box only.
        #[arg(short, long)]
        attach: bool,
        /// With -a: forward stdin to the command.
        #[arg(short, long, requires = "attach")]
        interactive: bool,
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
        /// Run as this user (`uid`, `uid:gid`, `name`, `name:group`, resolved in the
        /// box's /etc/passwd and /etc/group) [default: the box's user, else root].
        #[arg(short, long, value_name = "USER")]
        user: Option<String>,
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
    /// Pull an image from a registry (registry v2; plain HTTP only for a loopback
    /// registry or --insecure-registry). Credentials: `boxsock login`, else
    /// ~/.docker/config.json. Prints the image's id and names.
    Pull {
        /// A registry reached over plain HTTP although not loopback (repeatable).
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
        /// No progress bars; print only the image id.
        #[arg(short, long)]
        quiet: bool,
        /// `[registry/]repo[:tag]` or `…@sha256:…`.
        reference: String,
    },
    /// Store a user name and password for a registry (prompted for on the terminal
    /// without echo, or read from stdin with --password-stdin), kept 0600 in
    /// `<home>/auth.json` and used by `pull`.
    Login {
        /// The user name.
        #[arg(short, long)]
        username: String,
        /// Read the password from stdin (one line).
        #[arg(long)]
        password_stdin: bool,
        /// The registry (`host[:port]`; `docker.io` for Docker Hub).
        registry: String,
    },
    /// List images (one line per name).
    Images {
        /// Only the image ids, one per line.
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        /// JSON output: `{"images": [...], "bad": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Remove images (a name, or the image given by id or its last name): refused
    /// while a box uses the image, unless -f. Frees nothing on disk: see `image prune`.
    Rmi {
        /// Remove an image boxes use too (their layers stay until they are gone).
        #[arg(short, long)]
        force: bool,
        /// Image names, ids or unique id prefixes.
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Manage images (import, inspect, save, prune).
    Image {
        #[command(subcommand)]
        verb: ImageVerb,
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

/// `boxsock image …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ImageVerb {
    /// Import every image of an OCI image layout directory, an OCI archive or a `docker
    /// save` tarball (gzip or zstd compressed too); prints each image's id and names.
    Import {
        /// The name for an image the archive names only by tag, or not at all.
        #[arg(long, value_name = "REPO")]
        name: Option<String>,
        /// Print only the image ids.
        #[arg(short, long)]
        quiet: bool,
        /// The layout directory or archive.
        path: PathBuf,
    },
    /// Show images as JSON: record, layers and config.
    Inspect {
        /// Image names, ids or unique id prefixes.
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Write an image as an OCI archive.
    Save {
        /// The archive to write (replaced atomically once whole).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Image name, id or unique id prefix.
        reference: String,
    },
    /// Remove every blob and layer no image and no box uses; prints the bytes freed.
    Prune,
}

// `run`'s arguments: its help is the doc comment of `Verb::Run` (no doc comment
// here, which clap would take as the verb's help).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Remove the box afterwards (also when starting it fails).
    #[arg(long, conflicts_with = "detach")]
    pub(crate) rm: bool,
    /// Detach: create and start the box, print its id and leave it running (no
    /// command: run commands in it with `boxsock exec`).
    #[arg(short, long, conflicts_with = "cmd")]
    pub(crate) detach: bool,
    /// Name the box.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Extra environment for the command (repeatable); `KEY` alone passes the
    /// host's value through (not set when the host has none).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env_or_host)]
    pub(crate) env: Vec<Option<(String, String)>>,
    /// Forward stdin to the command (otherwise it reads /dev/null).
    #[arg(short, long)]
    pub(crate) interactive: bool,
    #[command(flatten)]
    pub(crate) settings: BoxArgs,
    #[command(flatten)]
    pub(crate) image: ImageArgs,
    /// Run the command on a pseudo-terminal in the box (with -i, this terminal goes
    /// into raw mode until the command ends).
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Working directory of the command in the box (absolute).
    #[arg(short, long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// The command and its arguments (with an IMAGE: replaces its Cmd; without one, the
    /// image's Entrypoint and Cmd run).
    #[arg(last = true, required_unless_present_any = ["detach", "image"], value_name = "CMD")]
    pub(crate) cmd: Vec<String>,
}

/// A command-line value that does not parse (clap prints it after the argument name).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArgError {
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
        _ => {
            Err(ArgError::NotKeyValue { echoed: boxsock::boxsock_core::echo::echo(s).to_string() })
        }
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

pub(crate) fn secs(value: f64, flag: &'static str) -> Result<Duration, ArgError> {
    Duration::try_from_secs_f64(value).map_err(|source| ArgError::Seconds { flag, value, source })
}
