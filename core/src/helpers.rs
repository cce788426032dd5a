//! Where the in-box agent binary (`boxsock-agent`) is found on the host.
//!
//! Every backend that starts the agent, or copies it into a guest root, looks in the
//! same places, in the same order, so the lookup lives here rather than in one backend
//! that the others would then have to depend on (backends depend on the core only).

use std::path::{Path, PathBuf};

/// File name of the agent binary.
pub const AGENT_BINARY: &str = "boxsock-agent";

/// Environment variable naming the agent binary explicitly.
pub const AGENT_ENV: &str = "BOXSOCK_AGENT";

/// How a user installs the agent beside `boxsock` (named in the error when it is missing).
pub const AGENT_INSTALL: &str =
    "cargo install boxsock-agent (from a checkout: cargo install --path backends/agent)";

/// No candidate of [`agent_candidates`] is an executable file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no executable {AGENT_BINARY} found; looked at {} (install it beside boxsock with \
     `{AGENT_INSTALL}`, or set {AGENT_ENV} or the helper directory)",
    list(candidates)
)]
pub struct AgentNotFound {
    /// Every place looked at, in order.
    pub candidates: Vec<PathBuf>,
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| crate::echo::path(p).to_string()).collect::<Vec<_>>().join(", ")
}

/// Where the agent binary is looked for, in order: `helper_dir`, `$BOXSOCK_AGENT`,
/// the directory of the current executable (where `cargo install` puts it beside
/// `boxsock`), that directory's parent (so `target/debug/boxsock-agent` is found
/// from `target/debug/deps/<test>`), then every absolute directory of `$PATH`.
pub fn agent_candidates(helper_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = helper_dir {
        out.push(dir.join(AGENT_BINARY));
    }
    if let Some(p) = std::env::var_os(AGENT_ENV).filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        out.push(dir.join(AGENT_BINARY));
        if let Some(parent) = dir.parent() {
            out.push(parent.join(AGENT_BINARY));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        let dirs = std::env::split_paths(&path).filter(|d| d.is_absolute());
        out.extend(dirs.map(|d| d.join(AGENT_BINARY)));
    }
    out
}

/// The agent binary: the first of [`agent_candidates`] that is an executable file.
pub fn find_agent(helper_dir: Option<&Path>) -> Result<PathBuf, AgentNotFound> {
    let candidates = agent_candidates(helper_dir);
    match candidates.iter().find(|p| is_executable(p)) {
        Some(p) => Ok(p.clone()),
        None => Err(AgentNotFound { candidates }),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_dir_comes_first_and_a_non_executable_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join(AGENT_BINARY);
        assert_eq!(agent_candidates(Some(dir.path()))[0], agent);
        std::fs::write(&agent, b"#!/bin/sh\n").unwrap();
        assert_ne!(find_agent(Some(dir.path())).ok(), Some(agent.clone()));
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(find_agent(Some(dir.path())).unwrap(), agent);
    }

    #[test]
    fn the_error_lists_every_place_looked_and_the_install_command() {
        let e = AgentNotFound { candidates: vec!["/a/boxsock-agent".into(), "/b/x".into()] };
        let msg = e.to_string();
        assert!(msg.contains(r#""/a/boxsock-agent", "/b/x""#), "{msg}");
        assert!(msg.contains("cargo install boxsock-agent") && msg.contains(AGENT_ENV), "{msg}");
    }
}
