//! Which platform code is where (docs/platforms.md). Linux (x86_64) is the only platform
//! built and tested; no darwin target can be installed on the build machines, so a
//! macOS build is checked here on the sources instead:
//!
//! - every Linux-only call (pidfds, `SO_PEERCRED`/`SO_PEERPIDFD`/`SCM_CREDENTIALS`,
//!   vsock, netlink, Landlock, mounts, `O_PATH`) is in a Linux-only file: under a
//!   crate's `sys/linux*`, or a module declared under `#[cfg(target_os = "linux")]`;
//! - code for other platforms (`cfg(target_os = "macos")`, `cfg(not(target_os =
//!   "linux"))`) is only under a crate's `sys/`, one boundary per crate (crosvm style);
//! - a crate's `sys/macos.rs` says it was never compiled and stops a macOS build in one
//!   named place: one `compile_error!("<crate>: … see docs/platforms.md")`, the only
//!   one in the crate, declared from a `sys/mod.rs` that gates `linux` and `macos`.
//!
//! The shipped crates are scanned (core, runtime, image store, strategies, backends, the
//! facade); test code (`#[cfg(test)]` modules, `tests.rs`) is not: it only builds for
//! tests, here.

use std::path::{Path, PathBuf};

/// Linux-only kernel interfaces, as they appear in code (comments and string literals
/// are stripped before matching).
const LINUX_ONLY: &[&str] = &[
    "SYS_pidfd_open",
    "SYS_pidfd_send_signal",
    "SYS_close_range",
    "sockopt::PeerCredentials",
    "SO_PEERCRED",
    "SO_PEERPIDFD",
    "SO_PASSCRED",
    "sockopt::PassCred",
    "ScmCredentials",
    "libc::ucred",
    "AF_VSOCK",
    "VsockAddr",
    "sockaddr_vm",
    "VMADDR_",
    "AF_NETLINK",
    "NETLINK_",
    "landlock::",
    "AF_PACKET",
    "sockaddr_ll",
    "libc::ifreq",
    "MsFlags",
    "chroot",
    "O_PATH",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The shipped crates: `core`, `core/runtime`, `core/image`, every `strategies/*`,
/// `backends/*`, `cli`.
fn shipped_crates() -> Vec<PathBuf> {
    let root = root();
    let mut out = vec![
        root.join("core"),
        root.join("core/runtime"),
        root.join("core/image"),
        root.join("cli"),
    ];
    for parent in ["strategies", "backends"] {
        for e in std::fs::read_dir(root.join(parent)).unwrap() {
            let p = e.unwrap().path();
            if p.join("Cargo.toml").is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn crate_name(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
        .unwrap_or_else(|| panic!("{}: no package name", dir.display()))
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `text` with comments and the contents of string and char literals blanked (newlines
/// kept, so line numbers hold), and everything from the first `#[cfg(test)]` on cut.
fn code_only(text: &str) -> String {
    strip(text, true)
}

/// `text` with comments blanked, string literals kept (for attributes), test code cut.
fn without_comments(text: &str) -> String {
    strip(text, false)
}

fn strip(text: &str, blank_strings: bool) -> String {
    let text = match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { '\n' } else { ' ' }))
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let end = rest.windows(2).position(|w| w == b"*/").map_or(rest.len(), |p| p + 2);
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'r' && (rest.starts_with(b"r\"") || rest.starts_with(b"r#")) {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> =
                std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let body = 2 + hashes;
            let end = rest[body..]
                .windows(close.len())
                .position(|w| w == close)
                .map_or(rest.len(), |p| body + p + close.len());
            out.push('"');
            if blank_strings {
                blank(&mut out, &rest[1..end]);
            } else {
                out.push_str(std::str::from_utf8(&rest[1..end]).unwrap_or(""));
            }
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            out.push('"');
            let body = &rest[1..j.min(rest.len())];
            if blank_strings {
                blank(&mut out, body);
            } else {
                out.push_str(std::str::from_utf8(body).unwrap_or(""));
            }
            out.push('"');
            i += (j + 1).min(rest.len());
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\''), else a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = std::str::from_utf8(&rest[1..rest.len().min(5)]).ok().or_else(|| {
                    (2..5).rev().find_map(|n| std::str::from_utf8(&rest[1..rest.len().min(n)]).ok())
                });
                ch.and_then(|s| s.chars().next()).and_then(|c| {
                    let n = 1 + c.len_utf8();
                    (rest.get(n) == Some(&b'\'')).then_some(n + 1)
                })
            };
            match len {
                Some(n) => {
                    blank(&mut out, &rest[..n]);
                    i += n;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let n = std::str::from_utf8(&b[i..])
                .map_or(1, |s| s.chars().next().map_or(1, char::len_utf8));
            out.push_str(std::str::from_utf8(&b[i..i + n]).unwrap_or(" "));
            i += n;
        }
    }
    out
}

/// The Linux-only symbols in `code` (see [`code_only`]), as `(line, symbol)`.
fn linux_only_uses(code: &str) -> Vec<(usize, &'static str)> {
    let mut hits = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (n, line) in code.lines().enumerate() {
        for sym in LINUX_ONLY {
            // A whole identifier (a prefix such as `NETLINK_` or `landlock::` may go on),
            // not one reached through the boundary (`sys::O_PATH`).
            let prefix = sym.ends_with('_') || sym.ends_with(':');
            let found = line.match_indices(sym).any(|(at, _)| {
                let before = line[..at].chars().next_back().is_none_or(|c| !ident(c))
                    && !line[..at].ends_with("sys::");
                let after = line[at + sym.len()..].chars().next().is_none_or(|c| !ident(c));
                before && (prefix || after)
            });
            if found {
                hits.push((n + 1, *sym));
            }
        }
    }
    hits
}

/// Whether the file is compiled only on Linux: it is under `sys/linux`, it says so
/// itself (`#![cfg(target_os = "linux")]`), or its `mod` declaration is gated.
fn linux_only_file(file: &Path) -> bool {
    let s = file.to_string_lossy();
    if s.contains("/sys/linux/") || s.ends_with("/sys/linux.rs") {
        return true;
    }
    let text = std::fs::read_to_string(file).unwrap();
    if text.contains("#![cfg(target_os = \"linux\")]") {
        return true;
    }
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
    let (name, dir) = if stem == "mod" {
        (
            file.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned(),
            file.parent().unwrap().parent().unwrap(),
        )
    } else {
        (stem, file.parent().unwrap())
    };
    let parents =
        [dir.join("lib.rs"), dir.join("main.rs"), dir.join("mod.rs"), dir.with_extension("rs")];
    parents.iter().filter_map(|p| std::fs::read_to_string(p).ok()).any(|parent| {
        let lines: Vec<&str> = parent.lines().map(str::trim).collect();
        lines.windows(2).any(|w| {
            w[0] == "#[cfg(target_os = \"linux\")]"
                && (w[1] == format!("mod {name};") || w[1] == format!("pub mod {name};"))
        })
    })
}

fn is_sys_file(file: &Path) -> bool {
    file.components().any(|c| c.as_os_str() == "sys")
}

#[test]
fn every_linux_only_call_is_in_a_linux_only_file() {
    let mut bad = Vec::new();
    let mut seen = 0;
    for dir in shipped_crates() {
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let code = code_only(&std::fs::read_to_string(&f).unwrap());
            let hits = linux_only_uses(&code);
            seen += hits.len();
            if !hits.is_empty() && !linux_only_file(&f) {
                let rel = f.strip_prefix(root()).unwrap().display().to_string();
                bad.extend(hits.into_iter().map(|(line, sym)| format!("{rel}:{line}: {sym}")));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "Linux-only calls outside a Linux-only file (move them to the crate's sys/linux):\n{}",
        bad.join("\n")
    );
    // Not vacuous: the Linux-only code was found where it lives.
    assert!(seen >= 20, "only {seen} Linux-only uses found: is the scan looking at the sources?");
}

#[test]
fn code_for_other_platforms_is_only_behind_a_sys_boundary() {
    let mut bad = Vec::new();
    for dir in shipped_crates() {
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files.iter().filter(|f| !is_sys_file(f)) {
            let code = without_comments(&std::fs::read_to_string(f).unwrap());
            // Attributes only (`cfg!` picks a value, such as the sun_path budget).
            for (n, line) in code.lines().enumerate() {
                let line = line.trim();
                if !(line.starts_with("#[cfg(") || line.starts_with("#![cfg(")) {
                    continue;
                }
                let flat: String = line.split_whitespace().collect();
                let other = [
                    "target_os=\"macos\"",
                    "not(target_os=\"linux\")",
                    "not(any(target_os=\"linux\"",
                ];
                if other.iter().any(|o| flat.contains(o)) {
                    let rel = f.strip_prefix(root()).unwrap().display().to_string();
                    bad.push(format!("{rel}:{}: {line}", n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "code for another platform outside a sys/ module:\n{}", bad.join("\n"));
}

#[test]
fn a_macos_build_stops_in_one_named_place_per_crate() {
    let mut gated = Vec::new();
    for dir in shipped_crates() {
        let name = crate_name(&dir);
        let sys = dir.join("src/sys");
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        let errors: Vec<String> = files
            .iter()
            .filter(|f| code_only(&std::fs::read_to_string(f).unwrap()).contains("compile_error!"))
            .map(|f| f.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        if !sys.join("macos.rs").is_file() {
            assert!(errors.is_empty(), "{name}: compile_error! outside sys/macos.rs: {errors:?}");
            continue;
        }
        assert_eq!(
            errors,
            ["src/sys/macos.rs"],
            "{name}: exactly one compile_error!, in sys/macos.rs"
        );
        let macos = std::fs::read_to_string(sys.join("macos.rs")).unwrap();
        assert_eq!(
            macos.matches("compile_error!(").count(),
            1,
            "{name}: one compile_error! in sys/macos.rs"
        );
        let msg = &macos[macos.find("compile_error!(").unwrap()..];
        assert!(
            msg.contains(&format!("\"{name}: ")),
            "{name}: the error names the crate first: {msg}"
        );
        assert!(
            msg.contains("docs/platforms.md"),
            "{name}: the error points at docs/platforms.md: {msg}"
        );
        assert!(
            macos.contains("Never compiled in CI"),
            "{name}: sys/macos.rs does not say it is unbuilt"
        );
        let m = std::fs::read_to_string(sys.join("mod.rs")).unwrap();
        let lines: Vec<String> = m.lines().map(|l| l.split_whitespace().collect()).collect();
        let gate = |cfg: &str, module: &str| {
            lines.windows(2).any(|w| {
                w[0] == cfg
                    && (w[1] == format!("mod{module};") || w[1] == format!("pubmod{module};"))
            })
        };
        assert!(
            gate("#[cfg(target_os=\"linux\")]", "linux"),
            "{name}: sys/mod.rs must gate `mod linux` on Linux"
        );
        assert!(
            gate("#[cfg(not(target_os=\"linux\"))]", "macos"),
            "{name}: sys/mod.rs must gate `mod macos` on not Linux"
        );
        let root_file = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|r| dir.join(r))
            .find(|p| p.is_file())
            .unwrap();
        let first_mod = std::fs::read_to_string(&root_file)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("mod ") || l.starts_with("pub mod "))
            .map(str::to_owned);
        assert_eq!(
            first_mod.as_deref(),
            Some("mod sys;"),
            "{name}: `mod sys;` is the first module, so its error comes first"
        );
        gated.push(name);
    }
    // The crates with Linux-only calls each have their one place.
    for name in
        ["boxsock-agent", "boxsock-core", "boxsock-image", "boxsock-libkrun", "boxsock-runtime"]
    {
        assert!(gated.iter().any(|g| g == name), "{name} has no sys/macos.rs; gated: {gated:?}");
    }
}

/// The scanner can fail: a pidfd call in an ordinary file is found, the same text in a
/// comment or a string is not, and the file gates are recognised.
#[test]
fn the_scan_finds_what_it_looks_for() {
    let code = code_only(
        "fn a() { let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }; }\n\
         // SYS_pidfd_open in a comment\n\
         let s = \"SO_PEERCRED in a string\"; let c = 'x'; fn f<'a>(_: &'a str) {}\n\
         let r = r#\"O_PATH\"#; let o = OFlag::O_PATH;\n",
    );
    assert_eq!(linux_only_uses(&code), [(1, "SYS_pidfd_open"), (4, "O_PATH")], "{code}");
    let root = root();
    assert!(linux_only_file(&root.join("core/runtime/src/sys/linux.rs")));
    assert!(!linux_only_file(&root.join("core/runtime/src/process.rs")));
    assert!(linux_only_file(&root.join("backends/agent/src/sys/linux/vsock.rs")));
}
