//! Who an exec runs as: a user spec (`uid`, `uid:gid`, `name`, `name:group`) resolved
//! against the box's own `/etc/passwd` and `/etc/group`, by docker's (runc's) rules:
//!
//! - a name that no passwd entry has is an error naming it; so is a group name;
//! - a numeric uid without an entry runs as that uid with gid 0 and `HOME=/`;
//! - a numeric gid without an entry is used as it is;
//! - without an explicit group, the primary group is the entry's, and the
//!   supplementary groups are those `/etc/group` lists the user's name in; with one,
//!   there are no supplementary groups;
//! - `HOME` is the entry's home directory (`/` without an entry), unless the exec's own
//!   environment sets it.
//!
//! The files are parsed here, not through NSS (`getpwnam`), because they are the box's
//! files in its root, not the host's: the agent runs inside the box's root in a guest,
//! and the files are read from a root given as a directory (the host backend's agent,
//! which has no box root, reads the host's). A line that does not parse is skipped, as
//! runc does.

use std::io::Read;
use std::path::Path;

use boxsock_core::echo::echo;

/// Largest `/etc/passwd` or `/etc/group` read (a box's file; more is an error, not an
/// allocation the box chooses).
const MAX_FILE: u64 = 16 << 20;

/// Whom to run a command as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups (set with `setgroups`, possibly none).
    pub(crate) groups: Vec<u32>,
    /// The home directory, for `HOME`.
    pub(crate) home: String,
}

/// Why a user spec does not resolve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserError {
    /// The spec is empty where a user or a group is needed (`:`, `user:`).
    #[error("user {spec}: an empty user or group name")]
    Empty { spec: String },
    /// No passwd entry has this name.
    #[error("user {spec}: no user named {name} in the box's {file}")]
    NoUser { spec: String, name: String, file: String },
    /// No group entry has this name.
    #[error("user {spec}: no group named {name} in the box's {file}")]
    NoGroup { spec: String, name: String, file: String },
    /// A file could not be read (a missing file is read as empty).
    #[error("user {spec}: cannot read the box's {file}: {reason}")]
    Read { spec: String, file: String, reason: String },
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolve `spec` against `<root>/etc/passwd` and `<root>/etc/group`.
pub(crate) fn resolve(root: &Path, spec: &str) -> Result<Credentials, UserError> {
    let quoted = echo(spec).to_string();
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(UserError::Empty { spec: quoted });
    }
    let passwd_path = root.join("etc/passwd");
    let passwd = read(&passwd_path, &quoted)?.map(|t| parse_passwd(&t)).unwrap_or_default();
    let numeric_uid = user.parse::<u32>().ok();
    let entry = passwd.into_iter().find(|e| match numeric_uid {
        Some(uid) => e.uid == uid,
        None => e.name == user,
    });
    let mut creds = match (entry.as_ref(), numeric_uid) {
        (Some(e), _) => {
            Credentials { uid: e.uid, gid: e.gid, groups: Vec::new(), home: e.home.clone() }
        }
        (None, Some(uid)) => Credentials { uid, gid: 0, groups: Vec::new(), home: "/".into() },
        (None, None) => {
            return Err(UserError::NoUser {
                spec: quoted,
                name: echo(user).to_string(),
                file: passwd_path.display().to_string(),
            });
        }
    };
    // Groups matter with an explicit group, or for a named entry's supplementary groups.
    if group.is_none() && entry.is_none() {
        return Ok(creds);
    }
    let group_path = root.join("etc/group");
    let groups = read(&group_path, &quoted)?.map(|t| parse_group(&t)).unwrap_or_default();
    match group {
        Some(g) => {
            let numeric_gid = g.parse::<u32>().ok();
            let found = groups.iter().find(|e| match numeric_gid {
                Some(gid) => e.gid == gid,
                None => e.name == g,
            });
            creds.gid = match (found, numeric_gid) {
                (Some(e), _) => e.gid,
                (None, Some(gid)) => gid,
                (None, None) => {
                    return Err(UserError::NoGroup {
                        spec: quoted,
                        name: echo(g).to_string(),
                        file: group_path.display().to_string(),
                    });
                }
            };
        }
        None => {
            let name = entry.as_ref().map(|e| e.name.as_str()).unwrap_or_default();
            creds.groups = groups
                .iter()
                .filter(|e| e.members.iter().any(|m| m == name))
                .map(|e| e.gid)
                .collect();
            creds.groups.dedup();
        }
    }
    Ok(creds)
}

/// The file's text, `None` when it does not exist.
fn read(path: &Path, spec: &str) -> Result<Option<String>, UserError> {
    let fail = |reason: String| UserError::Read {
        spec: spec.to_owned(),
        file: path.display().to_string(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(fail(format!("it is larger than {MAX_FILE} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `name:password:uid:gid:gecos:home:shell` lines.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if l.starts_with('#') || f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).filter(|h| !h.is_empty()).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member` lines.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if l.starts_with('#') || f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\n\
             app:x:1000:1000::/home/app:/bin/sh\nnohome:x:1001:1001:::\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,root\naudio:x:29:app\nstaff:x:50:\n",
        )
        .unwrap();
        d
    }

    fn r(d: &tempfile::TempDir, spec: &str) -> Result<Credentials, UserError> {
        resolve(d.path(), spec)
    }

    #[test]
    fn names_and_numbers_resolve_by_dockers_rules() {
        let d = root();
        let app =
            Credentials { uid: 1000, gid: 1000, groups: vec![10, 29], home: "/home/app".into() };
        assert_eq!(r(&d, "app").unwrap(), app);
        assert_eq!(r(&d, "1000").unwrap(), app);
        let with_group = r(&d, "app:staff").unwrap();
        assert_eq!((with_group.uid, with_group.gid, with_group.groups.len()), (1000, 50, 0));
        let numeric = r(&d, "4242").unwrap();
        assert_eq!(numeric, Credentials { uid: 4242, gid: 0, groups: vec![], home: "/".into() });
        let both = r(&d, "4242:4343").unwrap();
        assert_eq!((both.uid, both.gid), (4242, 4343));
        assert_eq!(r(&d, "root").unwrap().groups, vec![10]);
        assert_eq!(r(&d, "nohome").unwrap().home, "/");
    }

    #[test]
    fn unknown_names_and_empty_parts_are_errors_naming_them() {
        let d = root();
        let e = r(&d, "ghost").unwrap_err().to_string();
        assert!(e.contains("no user named \"ghost\"") && e.contains("etc/passwd"), "{e}");
        let e = r(&d, "app:ghosts").unwrap_err().to_string();
        assert!(e.contains("no group named \"ghosts\"") && e.contains("etc/group"), "{e}");
        for spec in [":", "app:", ":0"] {
            assert!(matches!(r(&d, spec), Err(UserError::Empty { .. })), "{spec}");
        }
        let e = r(&d, "bad\x1b[2Jname").unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e:?}");
    }

    #[test]
    fn a_root_without_files_knows_only_numbers() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(resolve(d.path(), "7:8").unwrap().gid, 8);
        assert!(matches!(resolve(d.path(), "app"), Err(UserError::NoUser { .. })));
    }
}
