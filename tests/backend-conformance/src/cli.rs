//! The kit as a command, for a binary that links the backends to run it on (the real-VM
//! tier's `boxsock-backend-kit`, or a third party's):
//!
//! ```text
//! boxsock-backend-kit --backend NAME [--home DIR] [--helper-dir DIR]
//!     [--backend-option KEY=VALUE]... [--ready-timeout SECS] [--stop-timeout SECS]
//!     [--network] [--check NAME]...
//! ```
//!
//! It prints one line per check, `check <name>: pass <ms>ms|skip <reason>|FAIL <message>`, then
//! `summary pass=N fail=N skip=N`, and exits 0 when nothing failed, 1 when a check
//! failed, 2 on bad arguments (with a message naming the argument).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use boxsock_core::backend::BackendConfig;
use boxsock_core::registry::{BackendRegistration, Registry};

use crate::{CHECKS, Outcome, Target};

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The backend's registered name.
    pub backend: String,
    /// Where homes are made (default: temporary directories).
    pub home: Option<PathBuf>,
    /// The backend's helper directory.
    pub helper_dir: Option<PathBuf>,
    /// Backend options.
    pub options: BTreeMap<String, String>,
    /// Readiness timeout.
    pub ready_timeout: Option<Duration>,
    /// Stop step timeout.
    pub stop_timeout: Option<Duration>,
    /// Boxes with a network.
    pub network: bool,
    /// Only these checks (default: all).
    pub checks: Vec<String>,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn secs(flag: &str, v: &str) -> Result<Duration, UsageError> {
    v.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| UsageError(format!("{flag} takes whole seconds, got {v:?}")))
}

/// Parse the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, UsageError> {
    let mut it = args.into_iter();
    let mut out = Args {
        backend: String::new(),
        home: None,
        helper_dir: None,
        options: BTreeMap::new(),
        ready_timeout: None,
        stop_timeout: None,
        network: false,
        checks: Vec::new(),
    };
    while let Some(a) = it.next() {
        let mut value =
            |flag: &str| it.next().ok_or_else(|| UsageError(format!("{flag} needs a value")));
        match a.as_str() {
            "--backend" => out.backend = value("--backend")?,
            "--home" => out.home = Some(PathBuf::from(value("--home")?)),
            "--helper-dir" => out.helper_dir = Some(PathBuf::from(value("--helper-dir")?)),
            "--backend-option" => {
                let kv = value("--backend-option")?;
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    UsageError(format!("--backend-option takes KEY=VALUE, got {kv:?}"))
                })?;
                out.options.insert(k.to_owned(), v.to_owned());
            }
            "--ready-timeout" => {
                out.ready_timeout = Some(secs("--ready-timeout", &value("--ready-timeout")?)?)
            }
            "--stop-timeout" => {
                out.stop_timeout = Some(secs("--stop-timeout", &value("--stop-timeout")?)?)
            }
            "--network" => out.network = true,
            "--check" => {
                let c = value("--check")?;
                if crate::check_named(&c).is_none() {
                    let known: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
                    return Err(UsageError(format!(
                        "unknown check {c:?}; known: {}",
                        known.join(", ")
                    )));
                }
                out.checks.push(c);
            }
            other => return Err(UsageError(format!("unknown argument {other:?}"))),
        }
    }
    if out.backend.is_empty() {
        return Err(UsageError("--backend NAME is required".into()));
    }
    Ok(out)
}

/// Run the kit as the command line says against a backend of `backends`; returns the
/// exit code (see the module documentation).
pub fn main_with(
    backends: &Registry<BackendRegistration>,
    args: impl IntoIterator<Item = String>,
) -> i32 {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("boxsock-backend-kit: {e}");
            return 2;
        }
    };
    let registration = match backends.get(&args.backend) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("boxsock-backend-kit: {e}");
            return 2;
        }
    };
    let mut target = Target::new(
        registration,
        BackendConfig { helper_dir: args.helper_dir, options: args.options },
    );
    target.home_root = args.home;
    target.network = args.network;
    if let Some(t) = args.ready_timeout {
        target.ready_timeout = t;
    }
    if let Some(t) = args.stop_timeout {
        target.stop_timeout = t;
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for check in
        CHECKS.iter().filter(|c| args.checks.is_empty() || args.checks.iter().any(|n| n == c.name))
    {
        let t0 = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::run_check(check, &target)
        }));
        let took = t0.elapsed();
        match r {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!("check {}: pass {}ms", check.name, took.as_millis());
            }
            Ok(Outcome::Skipped(why)) => {
                skipped += 1;
                println!("check {}: skip {why}", check.name);
            }
            Err(p) => {
                failed += 1;
                println!(
                    "check {}: FAIL {}",
                    check.name,
                    crate::panic_message(&*p).replace('\n', "\n    ")
                );
            }
        }
    }
    println!("summary pass={passed} fail={failed} skip={skipped}");
    if failed > 0 { 1 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_every_flag() {
        let a = parse(args(&[
            "--backend",
            "libkrun",
            "--home",
            "/w/kit",
            "--helper-dir",
            "/opt/bin",
            "--backend-option",
            "read_only=/opt/krunfw",
            "--backend-option",
            "agent=/opt/bin/boxsock-agent",
            "--ready-timeout",
            "180",
            "--stop-timeout",
            "10",
            "--network",
            "--check",
            "companions_reaped",
        ]))
        .unwrap();
        assert_eq!(a.backend, "libkrun");
        assert_eq!(a.home, Some(PathBuf::from("/w/kit")));
        assert_eq!(a.helper_dir, Some(PathBuf::from("/opt/bin")));
        assert_eq!(a.options.get("read_only").map(String::as_str), Some("/opt/krunfw"));
        assert_eq!(a.options.get("agent").map(String::as_str), Some("/opt/bin/boxsock-agent"));
        assert_eq!(a.ready_timeout, Some(Duration::from_secs(180)));
        assert_eq!(a.stop_timeout, Some(Duration::from_secs(10)));
        assert!(a.network);
        assert_eq!(a.checks, ["companions_reaped"]);
    }

    #[test]
    fn bad_arguments_are_named() {
        for (argv, needle) in [
            (&["--home", "/x"][..], "--backend NAME is required"),
            (&["--backend"][..], "--backend needs a value"),
            (&["--backend", "b", "--backend-option", "novalue"][..], "KEY=VALUE, got \"novalue\""),
            (
                &["--backend", "b", "--ready-timeout", "soon"][..],
                "--ready-timeout takes whole seconds, got \"soon\"",
            ),
            (
                &["--backend", "b", "--check", "nope"][..],
                "unknown check \"nope\"; known: launch_and_readiness",
            ),
            (&["--backend", "b", "--frobnicate"][..], "unknown argument \"--frobnicate\""),
        ] {
            let e = parse(args(argv)).unwrap_err();
            assert!(e.0.contains(needle), "{argv:?}: {e}");
        }
    }

    #[test]
    fn an_unknown_backend_is_a_usage_error() {
        let empty = Registry::<BackendRegistration>::from_entries("backend", []);
        assert_eq!(main_with(&empty, args(&["--backend", "nope"])), 2);
    }
}
