//! Exit statuses of the `boxsock` binary (docs/runtime.md, "Exit status"), the
//! conventions of `docker`/`podman run`:
//!
//! | status | meaning |
//! |---|---|
//! | the command's | `run`/`exec`: the command ran and exited |
//! | 125 | boxsock itself failed (usage errors included), any verb |
//! | 126 | the command could not be executed (permission denied, not executable) |
//! | 127 | the command was not found |
//! | 128 + N | the command died of signal N |
//! | 141 | stdout's reader went away (128 + SIGPIPE), quietly |

use boxsock::boxsock_core::proto::ErrorCode;
use boxsock::{ClientError, RuntimeError};

/// boxsock itself failed (a usage error, a box that does not exist, a start that
/// failed…), so the status cannot be mistaken for a command's.
pub const FAILED: u8 = 125;
/// The command exists but cannot be executed (EACCES, ENOEXEC…).
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;

/// Why the agent could not start a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnFailure {
    /// No such program (ENOENT).
    NotFound,
    /// It exists but cannot be executed (EACCES, ENOEXEC, …).
    CannotExecute,
}

impl SpawnFailure {
    /// The exit status for it.
    pub fn status(self) -> u8 {
        match self {
            SpawnFailure::NotFound => NOT_FOUND,
            SpawnFailure::CannotExecute => CANNOT_EXECUTE,
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            SpawnFailure::NotFound => "command not found",
            SpawnFailure::CannotExecute => "permission denied or not executable",
        }
    }
}

/// The seam where a spawn failure is classified. Protocol v2 agents report the kind
/// themselves: `NotFound` (ENOENT, 127), `PermissionDenied` (EACCES, ENOEXEC, 126);
/// any other failure to start the command is `Spawn`, which is 126 too (it exists
/// but could not be executed).
pub fn spawn_failure(code: ErrorCode) -> Option<SpawnFailure> {
    match code {
        ErrorCode::NotFound => Some(SpawnFailure::NotFound),
        ErrorCode::PermissionDenied | ErrorCode::Spawn => Some(SpawnFailure::CannotExecute),
        _ => None,
    }
}

/// The status and one human sentence for a failed `run`/`exec`. A command that could
/// not be started is said as such (`box X: cannot run "nope": command not found`),
/// without the agent's internals; anything else is boxsock's failure.
pub fn exec_failure(e: &RuntimeError, argv0: Option<&str>) -> (String, u8) {
    if let RuntimeError::Agent { id, source: ClientError::Agent { code, message }, .. } = e {
        if let Some(kind) = spawn_failure(*code) {
            let what = argv0
                .map(|a| format!(" {}", boxsock::boxsock_core::echo::echo(a)))
                .unwrap_or_default();
            return (format!("box {id}: cannot run{what}: {}", kind.sentence()), kind.status());
        }
        return (format!("box {id}: the agent refused the command: {message}"), FAILED);
    }
    (e.to_string(), FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_errors_map_to_127_and_126_and_nothing_else_is_a_spawn_failure() {
        assert_eq!(spawn_failure(ErrorCode::NotFound), Some(SpawnFailure::NotFound));
        assert_eq!(spawn_failure(ErrorCode::PermissionDenied), Some(SpawnFailure::CannotExecute));
        assert_eq!(spawn_failure(ErrorCode::Spawn), Some(SpawnFailure::CannotExecute));
        assert_eq!(spawn_failure(ErrorCode::BadRequest), None);
        assert_eq!(SpawnFailure::NotFound.status(), 127);
        assert_eq!(SpawnFailure::CannotExecute.status(), 126);
    }
}
