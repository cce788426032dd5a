//! A Seatbelt (macOS `sandbox-exec`) profile rendered from the same policy model as the
//! Landlock jail. Pure text: the canonicaliser is passed in, so it is tested anywhere.
//!
//! The rule learned the hard way: **a symlink leaf stays literal and only its parent is
//! canonicalised.** `/tmp/boxsock-501/abc` (a link) becomes
//! `/private/tmp/boxsock-501/abc`, not the link's target; resolving the whole path
//! emitted rules for the target only, and the sandbox then denied the bind at the
//! symlink path. Each socket is therefore granted at both its binding alias and its real
//! path.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use boxsock_core::binding::PolicyIntent;
use boxsock_core::{PolicyAccess, PolicyPath};

use super::JailSpec;

/// Canonicalise a path (on macOS, `std::fs::canonicalize`; in tests, a fake).
pub type Canonicalise<'a> = &'a dyn Fn(&Path) -> PathBuf;

fn quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The alias form of a path: its parent canonicalised, its leaf kept literal.
pub fn alias_form(path: &Path, canon: Canonicalise<'_>) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(leaf)) if !parent.as_os_str().is_empty() => canon(parent).join(leaf),
        _ => canon(path),
    }
}

/// Each directory (alias and real) a socket path is reached through, deduplicated.
fn socket_dirs(p: &PolicyPath, canon: Canonicalise<'_>) -> Vec<PathBuf> {
    let mut v = match &p.intent {
        PolicyIntent::SymlinkToDirectory { target } => {
            vec![alias_form(&p.path, canon), canon(target)]
        }
        PolicyIntent::Directory | PolicyIntent::File => {
            vec![alias_form(&p.path, canon), canon(&p.path)]
        }
    };
    v.dedup();
    v
}

/// Render the profile. `socket_names` are the file names of the box's sockets
/// (`agent.sock`, `ready.sock`, `net.sock`, and derived names), each granted at every
/// directory its socket policy path is reached through.
pub fn render(spec: &JailSpec, socket_names: &[&str], canon: Canonicalise<'_>) -> String {
    let mut s = String::new();
    s.push_str("(version 1)\n(deny default)\n(import \"system.sb\")\n");
    s.push_str("(allow process-exec process-fork sysctl-read mach-lookup)\n");
    for p in &spec.read_only {
        let _ = writeln!(s, "(allow file-read* (subpath {}))", quote(&canon(p)));
    }
    for p in &spec.read_write {
        let c = canon(p);
        let _ = writeln!(s, "(allow file-read* file-write* (subpath {}))", quote(&c));
    }
    for p in &spec.sockets {
        let dirs = socket_dirs(p, canon);
        match p.access {
            PolicyAccess::Read => {
                for d in &dirs {
                    let _ = writeln!(s, "(allow file-read* (subpath {}))", quote(d));
                }
            }
            PolicyAccess::Sockets => {
                for d in &dirs {
                    let _ = writeln!(
                        s,
                        "(allow file-read* file-write* (literal {}) (subpath {}))",
                        quote(d),
                        quote(d)
                    );
                }
                for name in socket_names {
                    for d in &dirs {
                        let sock = quote(&d.join(name));
                        let _ = writeln!(
                            s,
                            "(allow network-bind (local unix-socket (path-literal {sock})))"
                        );
                        let _ = writeln!(
                            s,
                            "(allow network-outbound (remote unix-socket (path-literal {sock})))"
                        );
                    }
                }
            }
        }
    }
    s
}
