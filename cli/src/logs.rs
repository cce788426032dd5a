//! `boxsock logs ID [-f]`: a box's log file (`<home>/boxes/<id>/logs/box.log`: the
//! agent's or the VMM's output). Read-only: it opens the home as `ls` does.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use boxsock::Runtime;

/// How often `-f` looks for new bytes, and whether the box still runs.
const POLL: Duration = Duration::from_millis(100);

/// Copy the log to `out`; with `follow`, keep copying what is appended until the box
/// has no live process any more (then drain the rest), or until `stop` resolves.
pub async fn copy(
    rt: &Runtime,
    id_or_name: &str,
    follow: bool,
    out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), LogsError> {
    let info = rt.inspect(id_or_name)?;
    let path = std::path::PathBuf::from(&info.log);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        // A box made before logs existed, or removed meanwhile: nothing to show yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => None,
        Err(e) => return Err(LogsError::Io { path, source: e }),
    };
    let mut pos = 0u64;
    let mut drain = |file: &mut Option<std::fs::File>, pos: &mut u64| -> Result<(), LogsError> {
        if file.is_none() {
            *file = std::fs::File::open(&path).ok();
        }
        let Some(f) = file else { return Ok(()) };
        // A log truncated meanwhile starts again from its beginning.
        let len = f.metadata().map_err(|e| LogsError::Io { path: path.clone(), source: e })?.len();
        if len < *pos {
            *pos = 0;
        }
        f.seek(SeekFrom::Start(*pos))
            .map_err(|e| LogsError::Io { path: path.clone(), source: e })?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n =
                f.read(&mut buf).map_err(|e| LogsError::Io { path: path.clone(), source: e })?;
            if n == 0 {
                return Ok(());
            }
            *pos += n as u64;
            out(&buf[..n]).map_err(LogsError::Stdout)?;
        }
    };
    drain(&mut file, &mut pos)?;
    if !follow {
        return Ok(());
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(POLL) => {}
        }
        let running = match rt.inspect(id_or_name) {
            Ok(i) => i.alive,
            Err(_) => false,
        };
        drain(&mut file, &mut pos)?;
        if !running {
            return Ok(());
        }
    }
}

/// Why `logs` failed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The box could not be read.
    #[error(transparent)]
    Runtime(#[from] boxsock::RuntimeError),
    /// The log file could not be read.
    #[error("box log {}: {source}", boxsock::boxsock_core::echo::path(path))]
    Io {
        /// The log file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Stdout could not be written.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}
