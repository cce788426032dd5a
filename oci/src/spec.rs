//! A bundle's `config.json` made into a box.
//!
//! | `config.json` | the box |
//! |---|---|
//! | `root.path` | the box's root: the read-only lower, the box's writes in its own layer |
//! | `process` | the box's command: args, env, cwd, `user.uid:gid`; `terminal` a pty |
//! | `process.rlimits` | set by the box's agent in the command before exec (`sandbox`: also on the supervisor) |
//! | `mounts` of type `bind` of a directory | volumes (`ro` read-only) |
//! | `linux.resources.memory.limit`, `cpu.quota/period` | memory, cpus (rounded up) |
//! | `hostname` | the box's hostname |
//! | `linux.namespaces` `network` with a `path` | the box joins it (the engine's network) |
//! | annotation `io.boxsock.backend` | `sandbox` (the default) or `libkrun` |
//!
//! What engines always set and the box provides on its own (its `/proc`, `/sys`,
//! `/dev`, capabilities, seccomp filter, cgroup) is ignored and listed in
//! [`BoxSpec::ignored`]; what boxsock cannot honour is refused, naming the field
//! ([`OciError::Unsupported`]). docs/oci.md has the full table.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use boxsock::boxsock_core::echo;
use boxsock::{BoxProcess, ByteSize, Volume};
use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimit, PosixRlimitType, Process, Spec};

use crate::OciError;

/// The annotation that picks the backend.
pub const BACKEND_ANNOTATION: &str = "io.boxsock.backend";
/// The backend of a bundle without the annotation: it runs without KVM.
pub const DEFAULT_BACKEND: &str = "sandbox";
/// The backends a bundle may pick.
pub const BACKENDS: &[&str] = &["sandbox", "libkrun"];
/// The most of `config.json` or `process.json` read (engines write a few KiB).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Files engines bind over the root's own (`/etc/hosts`…): a box keeps its root's.
pub const ENGINE_FILES: &[&str] =
    &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv"];

/// A bundle made into a box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxSpec {
    /// The bundle directory, absolute.
    pub bundle: PathBuf,
    /// The backend (`io.boxsock.backend`).
    pub backend: String,
    /// `root.path`, absolute.
    pub rootfs: PathBuf,
    /// The command and how it runs.
    pub process: ProcessSpec,
    /// Bind mounts of directories.
    pub volumes: Vec<Volume>,
    /// `linux.resources.cpu`: quota over period, rounded up.
    pub cpus: Option<u8>,
    /// `linux.resources.memory.limit`.
    pub memory: Option<ByteSize>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// The network namespace to join (`linux.namespaces` `network` with a `path`).
    pub network_namespace: Option<PathBuf>,
    /// `annotations`, as given (the OCI state repeats them).
    pub annotations: BTreeMap<String, String>,
    /// The fields that were set and ignored, for the debug log (`--debug`).
    pub ignored: Vec<String>,
}

/// A `process` (of `config.json`, or `exec --process`'s `process.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSpec {
    /// argv, env, cwd and `uid:gid`.
    pub process: BoxProcess,
    /// `terminal`: the command runs on a pty, the engine gets its master
    /// (`--console-socket`).
    pub terminal: bool,
    /// `consoleSize` (rows, columns), the pty's first size.
    pub console_size: Option<(u16, u16)>,
}

impl BoxSpec {
    /// Read and map `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<BoxSpec, OciError> {
        let bundle = std::path::absolute(bundle).map_err(|e| OciError::Bundle {
            bundle: bundle.to_owned(),
            reason: format!("cannot make it absolute: {e}"),
        })?;
        let path = bundle.join("config.json");
        let spec: Spec = read_json(&path).map_err(|reason| OciError::Bundle {
            bundle: bundle.clone(),
            reason: format!("config.json: {reason}"),
        })?;
        BoxSpec::from_spec(&spec, &bundle)
    }

    /// Map a parsed `config.json` of the bundle `bundle` (absolute).
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Result<BoxSpec, OciError> {
        let mut ignored = Vec::new();
        let annotations: BTreeMap<String, String> =
            spec.annotations().clone().unwrap_or_default().into_iter().collect();
        let backend = match annotations.get(BACKEND_ANNOTATION) {
            None => DEFAULT_BACKEND.to_owned(),
            Some(b) if BACKENDS.contains(&b.as_str()) => b.clone(),
            Some(b) => {
                return Err(unsupported(
                    format!("annotations[{BACKEND_ANNOTATION}]"),
                    format!(
                        "{}: boxsock-oci runs boxes of {}",
                        echo::echo(b),
                        BACKENDS.join(" or ")
                    ),
                ));
            }
        };
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| unsupported("root", "missing: a box needs a root filesystem".into()))?;
        if root.readonly() == Some(true) {
            return Err(unsupported(
                "root.readonly",
                "true: a box always has a writable layer over its root (the root itself is \
                 never written); set it to false"
                    .into(),
            ));
        }
        let rootfs = bundle.join(root.path());
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| unsupported("process", "missing: a container needs a command".into()))?;
        let process = ProcessSpec::from_process(process, "process", &mut ignored)?;
        let volumes = volumes(spec.mounts().as_deref().unwrap_or_default(), &mut ignored)?;
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        if let Some(h) = &hostname {
            if h.len() > 64 || h.bytes().any(|b| b == 0 || b == b'/') {
                return Err(unsupported(
                    "hostname",
                    format!("{}: at most 64 bytes, no NUL or '/'", echo::echo(h)),
                ));
            }
        }
        let (mut cpus, mut memory, mut network_namespace) = (None, None, None);
        if spec.hooks().as_ref().is_some_and(|h| *h != Default::default()) {
            return Err(unsupported(
                "hooks",
                "boxsock-oci runs no hooks (the box's namespaces are made by its backend, \
                 after create returns)"
                    .into(),
            ));
        }
        if let Some(linux) = spec.linux() {
            if let Some(r) = linux.resources() {
                if let Some(limit) = r.memory().as_ref().and_then(|m| m.limit()) {
                    if limit > 0 {
                        memory = Some(ByteSize(limit as u64));
                    }
                }
                if let Some(c) = r.cpu() {
                    if let (Some(q), Some(p)) = (c.quota(), c.period()) {
                        if q > 0 && p > 0 {
                            let n = (q as u64).div_ceil(p).clamp(1, u8::MAX.into());
                            cpus = Some(n as u8);
                        }
                    }
                    if c.cpus().is_some() || c.shares().is_some() {
                        ignored.push("linux.resources.cpu (cpus, shares)".into());
                    }
                }
                if r.pids().is_some() {
                    ignored.push("linux.resources.pids (the box's own limit applies)".into());
                }
            }
            for (i, ns) in linux.namespaces().as_deref().unwrap_or_default().iter().enumerate() {
                let field = || format!("linux.namespaces[{i}]");
                match (ns.typ(), ns.path()) {
                    (LinuxNamespaceType::Network, Some(p)) => {
                        network_namespace = Some(p.clone());
                    }
                    (LinuxNamespaceType::User, _) => {
                        return Err(unsupported(
                            field(),
                            "a user namespace: the sandbox makes its own where it runs \
                             rootless; run the engine as root"
                                .into(),
                        ));
                    }
                    (t, Some(p)) => {
                        return Err(unsupported(
                            format!("{}.path", field()),
                            format!(
                                "{}: a box cannot join an existing {t:?} namespace, only a \
                                 network one",
                                echo::path(p)
                            ),
                        ));
                    }
                    (_, None) => {}
                }
            }
            if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
                return Err(unsupported(
                    "linux.uidMappings",
                    "user namespace mappings: run the engine as root".into(),
                ));
            }
            for (set, what) in [
                (linux.seccomp().is_some(), "linux.seccomp (docker's default filter applies)"),
                (linux.masked_paths().is_some(), "linux.maskedPaths"),
                (linux.readonly_paths().is_some(), "linux.readonlyPaths"),
                (linux.devices().is_some(), "linux.devices (the box's own /dev)"),
                (linux.cgroups_path().is_some(), "linux.cgroupsPath (the box's own cgroup)"),
                (linux.sysctl().is_some(), "linux.sysctl"),
            ] {
                if set {
                    ignored.push(what.into());
                }
            }
        }
        Ok(BoxSpec {
            bundle: bundle.to_owned(),
            backend,
            rootfs,
            process,
            volumes,
            cpus,
            memory,
            hostname,
            network_namespace,
            annotations,
            ignored,
        })
    }
}

impl ProcessSpec {
    /// Read and map an `exec --process` file.
    pub fn load(path: &Path) -> Result<ProcessSpec, OciError> {
        let p: Process = read_json(path).map_err(|reason| {
            OciError::Usage(format!("--process {}: {reason}", echo::path(path)))
        })?;
        ProcessSpec::from_process(&p, "process", &mut Vec::new())
    }

    /// Map a `process`; `field` prefixes the names in errors.
    pub fn from_process(
        p: &Process,
        field: &str,
        ignored: &mut Vec<String>,
    ) -> Result<ProcessSpec, OciError> {
        let f = |name: &str| format!("{field}.{name}");
        let argv = p.args().clone().unwrap_or_default();
        if argv.is_empty() || argv[0].is_empty() {
            return Err(unsupported(f("args"), "empty: give the command to run".into()));
        }
        if p.command_line().is_some() {
            return Err(unsupported(f("commandLine"), "Windows only: use args".into()));
        }
        let mut env = Vec::new();
        for (i, kv) in p.env().as_deref().unwrap_or_default().iter().enumerate() {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(unsupported(
                    format!("{}[{i}]", f("env")),
                    format!("{}: not NAME=value", echo::echo(kv)),
                ));
            };
            env.push((k.to_owned(), v.to_owned()));
        }
        let cwd = p.cwd();
        if !cwd.is_absolute() {
            return Err(unsupported(
                f("cwd"),
                format!("{}: not an absolute path", echo::path(cwd)),
            ));
        }
        let cwd = cwd
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| unsupported(f("cwd"), format!("{}: not UTF-8", echo::path(cwd))))?;
        let user = p.user();
        if user.additional_gids().as_ref().is_some_and(|g| !g.is_empty()) {
            ignored.push(format!(
                "{} (the user's groups are uid:gid's only)",
                f("user.additionalGids")
            ));
        }
        if user.umask().is_some() {
            ignored.push(f("user.umask"));
        }
        for (set, what) in [
            (p.capabilities().is_some(), "capabilities (docker's default set applies)"),
            (p.no_new_privileges().is_some(), "noNewPrivileges"),
            (p.apparmor_profile().is_some(), "apparmorProfile"),
            (p.selinux_label().is_some(), "selinuxLabel"),
            (p.oom_score_adj().is_some(), "oomScoreAdj"),
        ] {
            if set {
                ignored.push(f(what));
            }
        }
        let mut process = BoxProcess::new(argv);
        process.env = env;
        process.cwd = Some(cwd);
        process.user = Some(format!("{}:{}", user.uid(), user.gid()));
        // The box's agent sets them in the command before exec, as runc's init does.
        process.rlimits = p.rlimits().as_deref().unwrap_or_default().iter().map(rlimit).collect();
        let console_size = p
            .console_size()
            .map(|b| {
                (b.height().min(u16::MAX.into()) as u16, b.width().min(u16::MAX.into()) as u16)
            })
            .filter(|(r, c)| *r > 0 && *c > 0);
        Ok(ProcessSpec { process, terminal: p.terminal().unwrap_or(false), console_size })
    }
}

/// One of `process.rlimits`, named as `setrlimit(2)` names it.
fn rlimit(r: &PosixRlimit) -> boxsock::boxsock_core::proto::Rlimit {
    use PosixRlimitType as T;
    let resource = match r.typ() {
        T::RlimitCpu => "RLIMIT_CPU",
        T::RlimitFsize => "RLIMIT_FSIZE",
        T::RlimitData => "RLIMIT_DATA",
        T::RlimitStack => "RLIMIT_STACK",
        T::RlimitCore => "RLIMIT_CORE",
        T::RlimitRss => "RLIMIT_RSS",
        T::RlimitNproc => "RLIMIT_NPROC",
        T::RlimitNofile => "RLIMIT_NOFILE",
        T::RlimitMemlock => "RLIMIT_MEMLOCK",
        T::RlimitAs => "RLIMIT_AS",
        T::RlimitLocks => "RLIMIT_LOCKS",
        T::RlimitSigpending => "RLIMIT_SIGPENDING",
        T::RlimitMsgqueue => "RLIMIT_MSGQUEUE",
        T::RlimitNice => "RLIMIT_NICE",
        T::RlimitRtprio => "RLIMIT_RTPRIO",
        T::RlimitRttime => "RLIMIT_RTTIME",
    };
    boxsock::boxsock_core::proto::Rlimit {
        resource: resource.into(),
        soft: r.soft(),
        hard: r.hard(),
    }
}

/// The mounts: bind mounts of directories become volumes; what the box provides on its
/// own is ignored; anything else is refused.
fn volumes(mounts: &[Mount], ignored: &mut Vec<String>) -> Result<Vec<Volume>, OciError> {
    let mut out = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let dest = m.destination();
        let typ = m.typ().as_deref().unwrap_or("");
        let opts = m.options().as_deref().unwrap_or_default();
        let bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        let under = |top: &str| dest.starts_with(top);
        if under("/proc") || under("/sys") || under("/dev") {
            // The box mounts its own proc, sysfs, cgroup, /dev, devpts, shm and mqueue.
            ignored.push(format!("{field} ({typ} at {})", dest.display()));
            continue;
        }
        if typ == "tmpfs" && dest == Path::new("/run") {
            // containerd's default spec mounts one; a box's /run is in its writable layer.
            ignored.push(format!("{field} (tmpfs at /run)"));
            continue;
        }
        if !bind {
            return Err(unsupported(
                field,
                format!(
                    "a {} mount at {}: a box takes bind mounts of directories (volumes) only",
                    echo::echo(typ),
                    echo::path(dest)
                ),
            ));
        }
        let Some(source) = m.source() else {
            return Err(unsupported(format!("{field}.source"), "missing for a bind mount".into()));
        };
        match std::fs::metadata(source) {
            Ok(md) if md.is_dir() => {}
            Ok(_) if ENGINE_FILES.iter().any(|f| dest == Path::new(f)) => {
                ignored.push(format!(
                    "{field} (the engine's {}: the root's own is kept)",
                    dest.display()
                ));
                continue;
            }
            Ok(_) => {
                return Err(unsupported(
                    field,
                    format!("{} is not a directory: a volume is a directory", echo::path(source)),
                ));
            }
            Err(e) => {
                return Err(unsupported(
                    format!("{field}.source"),
                    format!("{}: {e}", echo::path(source)),
                ));
            }
        }
        let read_only = opts.iter().any(|o| o == "ro");
        out.push(Volume::new(source.clone(), dest.clone(), read_only));
    }
    Ok(out)
}

fn unsupported(field: impl Into<String>, reason: String) -> OciError {
    OciError::Unsupported { field: field.into(), reason }
}

/// Read a JSON file of at most [`MAX_SPEC_BYTES`].
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("larger than {MAX_SPEC_BYTES} bytes"));
    }
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> Result<BoxSpec, OciError> {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "process": { "args": ["sh"], "cwd": "/", "user": { "uid": 0, "gid": 0 } },
        });
        if let (Some(a), serde_json::Value::Object(b)) = (v.as_object_mut(), extra) {
            for (k, x) in b {
                a.insert(k, x);
            }
        }
        let s: Spec = serde_json::from_value(v).unwrap();
        BoxSpec::from_spec(&s, Path::new("/bundle"))
    }

    fn refused(extra: serde_json::Value, field: &str, words: &str) {
        match spec(extra.clone()) {
            Err(OciError::Unsupported { field: f, reason }) => {
                assert_eq!(f, field, "{extra}: {reason}");
                assert!(reason.contains(words), "{extra}: {reason:?} lacks {words:?}");
            }
            other => panic!("{extra}: expected {field} refused, got {other:?}"),
        }
    }

    #[test]
    fn a_bundle_maps_onto_a_box() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().to_str().unwrap();
        let s = spec(serde_json::json!({
            "process": {
                "args": ["sh", "-c", "x"], "env": ["A=1", "B=x=y"], "cwd": "/w",
                "user": { "uid": 1000, "gid": 7, "additionalGids": [9] },
                "rlimits": [{ "type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048 }],
                "terminal": true, "consoleSize": { "height": 30, "width": 100 },
            },
            "hostname": "web",
            "annotations": { "io.boxsock.backend": "libkrun", "k": "v" },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/run", "type": "tmpfs", "source": "tmpfs" },
                { "destination": "/dev/shm", "type": "bind", "source": vol, "options": ["rbind"] },
                { "destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts" },
                { "destination": "/data", "type": "bind", "source": vol, "options": ["rbind", "ro"] },
                { "destination": "/rw", "source": vol, "options": ["bind"] },
            ],
            "linux": {
                "resources": { "memory": { "limit": 268435456 },
                               "cpu": { "quota": 150000, "period": 100000 } },
                "namespaces": [{ "type": "pid" }, { "type": "network", "path": "/run/netns/x" }],
                "maskedPaths": ["/proc/kcore"],
            },
        }))
        .unwrap();
        assert_eq!(s.backend, "libkrun");
        assert_eq!(s.rootfs, Path::new("/bundle/rootfs"));
        let p = &s.process.process;
        assert_eq!(p.argv, ["sh", "-c", "x"]);
        assert_eq!(p.env, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
        assert_eq!((p.cwd.as_deref(), p.user.as_deref()), (Some("/w"), Some("1000:7")));
        assert!(s.process.terminal);
        assert_eq!(s.process.console_size, Some((30, 100)));
        let l = &s.process.process.rlimits[0];
        assert_eq!(l.resource, "RLIMIT_NOFILE");
        assert_eq!((l.soft, l.hard), (1024, 2048));
        assert_eq!(s.hostname.as_deref(), Some("web"));
        assert_eq!(s.cpus, Some(2), "1.5 CPUs round up");
        assert_eq!(s.memory, Some(ByteSize(256 << 20)));
        assert_eq!(s.network_namespace.as_deref(), Some(Path::new("/run/netns/x")));
        assert_eq!(
            s.volumes,
            [Volume::new(vol, "/data", true), Volume::new(vol, "/rw", false)],
            "binds of directories are volumes; /dev, /proc and the engine's files are not"
        );
        assert_eq!(s.annotations.get("k").map(String::as_str), Some("v"));
        for word in
            ["mounts[0]", "mounts[1]", "mounts[2]", "mounts[3]", "maskedPaths", "additionalGids"]
        {
            assert!(s.ignored.iter().any(|i| i.contains(word)), "{word} in {:?}", s.ignored);
        }
        assert_eq!(spec(serde_json::json!({})).unwrap().backend, "sandbox");
    }

    #[test]
    fn what_a_box_cannot_honour_is_refused_naming_the_field() {
        refused(
            serde_json::json!({ "root": { "path": "r", "readonly": true } }),
            "root.readonly",
            "writable layer",
        );
        refused(
            serde_json::json!({ "annotations": { "io.boxsock.backend": "host\u{1b}[2J" } }),
            "annotations[io.boxsock.backend]",
            "\\u{1b}",
        );
        refused(
            serde_json::json!({ "process": { "args": [], "cwd": "/", "user": { "uid": 0, "gid": 0 } } }),
            "process.args",
            "empty",
        );
        refused(
            serde_json::json!({ "process": { "args": ["sh"], "cwd": "rel", "user": { "uid": 0, "gid": 0 } } }),
            "process.cwd",
            "absolute",
        );
        refused(
            serde_json::json!({ "process": { "args": ["sh"], "cwd": "/", "env": ["NOEQ"], "user": { "uid": 0, "gid": 0 } } }),
            "process.env[0]",
            "NAME=value",
        );
        refused(
            serde_json::json!({ "mounts": [{ "destination": "/t", "type": "tmpfs", "source": "tmpfs" }] }),
            "mounts[0]",
            "bind mounts of directories",
        );
        refused(
            serde_json::json!({ "mounts": [{ "destination": "/f", "type": "bind", "source": "/etc/passwd" }] }),
            "mounts[0]",
            "not a directory",
        );
        refused(
            serde_json::json!({ "mounts": [{ "destination": "/f", "type": "bind", "source": "/no/such/dir" }] }),
            "mounts[0].source",
            "No such file",
        );
        refused(
            serde_json::json!({ "linux": { "namespaces": [{ "type": "user" }] } }),
            "linux.namespaces[0]",
            "user namespace",
        );
        refused(
            serde_json::json!({ "linux": { "namespaces": [{ "type": "pid" }, { "type": "ipc", "path": "/proc/1/ns/ipc" }] } }),
            "linux.namespaces[1].path",
            "only a network one",
        );
        refused(
            serde_json::json!({ "hooks": { "prestart": [{ "path": "/bin/true" }] } }),
            "hooks",
            "no hooks",
        );
        refused(serde_json::json!({ "hostname": "a/b" }), "hostname", "64 bytes");
    }
}
