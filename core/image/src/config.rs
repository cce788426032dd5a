//! What a box runs, from an image's config and the user's overrides, by docker's rules:
//!
//! - `--entrypoint` replaces the image's Entrypoint and drops its Cmd (an empty
//!   entrypoint clears it); a command given on the command line replaces Cmd;
//!   the argv is Entrypoint followed by Cmd.
//! - `-e KEY=VALUE` replaces the image's `KEY` (and adds it if absent), in order; `PATH`
//!   gets docker's default when neither sets it.
//! - `-w` replaces WorkingDir (default `/`); `-u` replaces User (default root).
//!
//! A pure function: the runtime and the CLI call it at create, the VM tier checks it in
//! a guest.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

/// docker's `PATH` for a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an image config that decide what a box runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `KEY=VALUE` each.
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `User` (empty: root).
    pub user: String,
}

impl ImageConfig {
    /// The run-relevant part of a parsed OCI image config.
    pub fn from_oci(c: &ImageConfiguration) -> ImageConfig {
        let Some(cfg) = c.config() else { return ImageConfig::default() };
        ImageConfig {
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            env: cfg.env().clone().unwrap_or_default(),
            working_dir: cfg.working_dir().clone().unwrap_or_default(),
            user: cfg.user().clone().unwrap_or_default(),
        }
    }
}

/// What the user gave at create/run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--entrypoint` (`Some(vec![])` for `--entrypoint ""`).
    pub entrypoint: Option<Vec<String>>,
    /// The command after the image (`-- CMD…`); empty: the image's.
    pub cmd: Vec<String>,
    /// `-e KEY=VALUE`, in order.
    pub env: Vec<String>,
    /// `-w`.
    pub working_dir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
}

/// What a box runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `KEY=VALUE`, the image's first, overrides applied in place.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The user (`name`, `uid`, `uid:gid`…); empty is root.
    pub user: String,
}

/// Apply docker's override rules to an image config.
pub fn resolve(image: &ImageConfig, o: &Overrides) -> Result<Process> {
    let (entrypoint, image_cmd) = match &o.entrypoint {
        Some(e) => (e.clone(), Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let cmd = if o.cmd.is_empty() { image_cmd } else { o.cmd.clone() };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ImageError::NoCommand);
    }
    let mut env: Vec<String> = Vec::new();
    for kv in image.env.iter().chain(&o.env) {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(slot) => *slot = kv.clone(),
            None => env.push(kv.clone()),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let cwd = match (&o.working_dir, image.working_dir.as_str()) {
        (Some(w), _) => w.clone(),
        (None, "") => "/".to_owned(),
        (None, w) => w.to_owned(),
    };
    let user = o.user.clone().unwrap_or_else(|| image.user.clone());
    Ok(Process { argv, env, cwd, user })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: s(&["/entry"]),
            cmd: s(&["--default"]),
            env: s(&["PATH=/img/bin", "A=1", "B=2"]),
            working_dir: "/srv".into(),
            user: "app".into(),
        }
    }

    #[test]
    fn image_defaults_apply() {
        let p = resolve(&image(), &Overrides::default()).unwrap();
        assert_eq!(p.argv, s(&["/entry", "--default"]));
        assert_eq!(p.env, s(&["PATH=/img/bin", "A=1", "B=2"]));
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/srv", "app"));
    }

    #[test]
    fn a_command_replaces_cmd_and_keeps_the_entrypoint() {
        let o = Overrides { cmd: s(&["x", "y"]), ..Default::default() };
        assert_eq!(resolve(&image(), &o).unwrap().argv, s(&["/entry", "x", "y"]));
    }

    #[test]
    fn entrypoint_drops_the_image_cmd() {
        let o = Overrides { entrypoint: Some(s(&["/bin/sh"])), ..Default::default() };
        assert_eq!(resolve(&image(), &o).unwrap().argv, s(&["/bin/sh"]));
        let o = Overrides { entrypoint: Some(vec![]), cmd: s(&["ls"]), ..Default::default() };
        assert_eq!(resolve(&image(), &o).unwrap().argv, s(&["ls"]));
        let o = Overrides { entrypoint: Some(vec![]), ..Default::default() };
        assert!(matches!(resolve(&image(), &o), Err(ImageError::NoCommand)));
    }

    #[test]
    fn env_workdir_user_override() {
        let o = Overrides {
            env: s(&["A=9", "C=3"]),
            working_dir: Some("/tmp".into()),
            user: Some("0:0".into()),
            ..Default::default()
        };
        let p = resolve(&image(), &o).unwrap();
        assert_eq!(p.env, s(&["PATH=/img/bin", "A=9", "B=2", "C=3"]));
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/tmp", "0:0"));
        let bare = ImageConfig { cmd: s(&["sh"]), ..Default::default() };
        let p = resolve(&bare, &Overrides::default()).unwrap();
        assert_eq!(p.env, vec![format!("PATH={DEFAULT_PATH}")]);
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/", ""));
    }
}
