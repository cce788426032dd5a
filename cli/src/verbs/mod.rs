//! The verbs: one function per verb (in groups), each taking its parsed arguments and
//! the global options; `main`'s `run` dispatches to them.

mod guardian;
pub(crate) mod image;
mod lifecycle;
mod listing;
mod report;
mod sweep;

pub(crate) use guardian::lifeline;
pub(crate) use lifecycle::{create, exec, rm, run, start, stop};
pub(crate) use listing::{inspect, logs, ls};
pub(crate) use report::{backends, doctor, strategies};
pub(crate) use sweep::sweep;

use crate::{Failure, outln};

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
