//! `boxsock-agent`: the in-box agent. See the library documentation of
//! `boxsock_agent` for what it does; this is only its command line.
//!
//! ```text
//! boxsock-agent (--agent <URI> | --agent-fd <N>) (--ready <URI> | --ready-fd <N>)
//!               [--allow-uid UID]... [--overlay-lower TAG]... [--upper-disk LABEL]
//!               [--volume TAG:ro|rw:PATH]...
//! ```
//!
//! `--agent-fd` is a listening Unix stream socket the agent inherited (the host
//! backend's way: the runtime binds, so no socket name is in the agent's argv);
//! `--ready-fd` a connected stream socket to write the readiness frame on.
//! URIs are `unix:///abs/path`, `abstract:name`, or inside a libkrun guest
//! `vsock://<port>` / `vsock://<cid>:<port>` (listening: every CID; the ready
//! notification: the host, CID 2). `--allow-uid` is refused with a vsock address:
//! vsock has no peer credentials. Logs go to stderr (filter from `RUST_LOG`, default
//! `info`); nothing is written to stdout. Exit status: 0 after a shutdown, 1 when the
//! agent cannot bind, notify or serve, with a one-line error on stderr. In a libkrun
//! guest, `--overlay-lower` makes the agent enter the box's root first
//! (`boxsock_agent::guestroot`, decision 0006).

use boxsock_agent::{AgentAddress, AgentConfig, parse_address};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The boxsock in-box agent.
#[derive(Debug, Parser)]
#[command(name = "boxsock-agent", version, about)]
struct Args {
    /// Address to listen on for requests (`unix:///abs/path`, `abstract:name`, or
    /// `vsock://<port>` on every CID of a guest).
    #[arg(
        long,
        value_name = "URI",
        required_unless_present = "agent_fd",
        conflicts_with = "agent_fd"
    )]
    agent: Option<String>,
    /// An inherited listening Unix stream socket to accept requests on, instead of
    /// `--agent`.
    #[arg(long, value_name = "N")]
    agent_fd: Option<i32>,
    /// Address to send the readiness notification to (`vsock://<port>` dials the
    /// host, CID 2).
    #[arg(
        long,
        value_name = "URI",
        required_unless_present = "ready_fd",
        conflicts_with = "ready_fd"
    )]
    ready: Option<String>,
    /// An inherited connected Unix stream socket to send the readiness notification
    /// on, instead of `--ready`.
    #[arg(long, value_name = "N")]
    ready_fd: Option<i32>,
    /// Peer uid allowed on both sockets (repeatable). Without any, peers are not
    /// checked and the filesystem must protect the addresses. Not allowed with a
    /// `vsock://` address (vsock carries no peer credentials).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Inside a libkrun guest: before anything else, mount these read-only virtio-fs
    /// shares (top first) under a tmpfs upper as the box's root and chroot into it
    /// (repeatable; see `boxsock_agent::guestroot`).
    #[arg(long = "overlay-lower", value_name = "TAG")]
    overlay_lower: Vec<String>,
    /// Inside a libkrun guest, with `--overlay-lower`: once in the box's root, mount the
    /// virtio-fs share TAG at GUEST_PATH (read-only with `ro`), making a missing mount
    /// point in the writable layer (repeatable).
    #[arg(long = "volume", value_name = "TAG:ro|rw:GUEST_PATH", requires = "overlay_lower")]
    volume: Vec<String>,
    /// With `--overlay-lower`: keep the overlay's upper on the ext4 disk with this
    /// label (the box's persistent writable layer) instead of a tmpfs.
    #[arg(long = "upper-disk", value_name = "LABEL", requires = "overlay_lower")]
    upper_disk: Option<String>,
    /// Inside a libkrun guest, with `--overlay-lower`: the box's hostname (1 to 64
    /// bytes), set once the box's root is entered.
    #[arg(long, value_name = "NAME", requires = "overlay_lower")]
    hostname: Option<String>,
}

fn main() {
    // Nothing the agent inherited beyond stdio (its listener and ready channel, or
    // whatever its parent leaked) reaches a command: marked close-on-exec here, the
    // agent itself still uses what it was handed (`--agent-fd`, `--ready-fd`). Everything the
    // agent opens later is close-on-exec already (the pty too), so a command without a
    // tty is spawned with no `pre_exec`, and keeps `posix_spawn`'s semantics (no
    // `/bin/sh` retry of a file that is not a program).
    if let Err(e) = boxsock_core::fds::cloexec_except(&[]) {
        eprintln!("boxsock-agent: cannot mark inherited descriptors close-on-exec: {e}");
        std::process::exit(1);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if let Err(e) = run(args) {
        eprintln!("boxsock-agent: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let address = |uri: Option<&String>, fd: Option<i32>| match (uri, fd) {
        (_, Some(fd)) => Ok(AgentAddress::Inherited(fd)),
        (Some(uri), None) => parse_address(uri),
        // clap requires one of the two.
        (None, None) => {
            Err(boxsock_agent::AgentError::Usage("an address or a descriptor is required"))
        }
    };
    let config = AgentConfig {
        agent: address(args.agent.as_ref(), args.agent_fd)?,
        ready: address(args.ready.as_ref(), args.ready_fd)?,
        allow_uids: args.allow_uid,
    };
    // Before anything below opens a descriptor (the tokio runtime's epoll would take the
    // number of one that was not inherited).
    boxsock_agent::check_inherited(&config)?;
    // In a libkrun guest: enter the box's root first, so the resolver configuration
    // below and every command see it.
    if !args.overlay_lower.is_empty() {
        let volumes = args
            .volume
            .iter()
            .map(|v| boxsock_agent::guestroot::VolumeMount::parse(v))
            .collect::<Result<Vec<_>, _>>()?;
        boxsock_agent::guestroot::enter(&args.overlay_lower, args.upper_disk.as_deref(), &volumes)?;
        if let Some(name) = &args.hostname {
            nix::unistd::sethostname(name)
                .map_err(|e| format!("cannot set the hostname {name:?}: {e}"))?;
        }
    }
    // In a libkrun guest: configure the box network (if it has one) before reporting
    // ready, so a `--network` box is ready only with its address, route and resolver.
    if matches!(config.agent, boxsock_agent::AgentAddress::Vsock(_)) {
        boxsock_agent::guestnet::configure(
            "eth0",
            std::path::Path::new("/etc/resolv.conf"),
            std::time::Duration::from_secs(15),
        )?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let served = rt.block_on(boxsock_agent::run(config));
    // In a guest, the VM ends with this process and the guest's page cache with it:
    // write the box's disk out first, so what a stopped box wrote is on the host's
    // image (a killed VMM loses only what was not yet written; the journal keeps the
    // filesystem whole).
    if args.upper_disk.is_some() {
        nix::unistd::sync();
        tracing::info!("box disk synced");
    }
    served?;
    Ok(())
}
