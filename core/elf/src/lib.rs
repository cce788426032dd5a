//! The files a dynamically linked program needs, found as its loader finds them: its
//! `PT_INTERP` and every `DT_NEEDED` library, transitively, through `DT_RUNPATH` (or
//! `DT_RPATH`) with `$ORIGIN` and then the directories a loader without a cache searches.
//!
//! The libkrun backend copies the agent and these files into each guest's base; the
//! sandbox backend into the agent's base that it bind-mounts into a box. The headers
//! are read as the loader reads them, from the program headers only (a stripped file may
//! lack section headers); every malformed or truncated file is an error that says what
//! is wrong, never a panic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::StringTable;
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use object::{Endianness, FileKind};

/// Why a program's files could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// A file that should be an executable or a library is not ELF.
    #[error("{}: not an ELF file", boxsock_core::echo::path(path))]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// An ELF file whose headers cannot be read.
    #[error("{}: malformed ELF: {reason}", boxsock_core::echo::path(path))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A needed library was not found in any directory the loader searches.
    #[error(
        "{library} (needed by {}) not found; searched {}",
        boxsock_core::echo::path(needed_by),
        display_dirs(searched)
    )]
    LibraryNotFound {
        /// The `DT_NEEDED` name.
        library: String,
        /// The file that needs it.
        needed_by: PathBuf,
        /// Every directory tried, in order.
        searched: Vec<PathBuf>,
    },
    /// Reading a file failed.
    #[error("cannot {action} {}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn display_dirs(d: &[PathBuf]) -> String {
    d.iter().map(|p| boxsock_core::echo::path(p).to_string()).collect::<Vec<_>>().join(", ")
}

/// One library a program needs: its `DT_NEEDED` name and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The `DT_NEEDED` name (`libc.so.6`).
    pub name: String,
    /// The file found for it.
    pub path: PathBuf,
}

/// Every library `exe` (already read as `exe_elf`) needs, over `DT_NEEDED`
/// transitively, each name once, in the order found. Empty for a static program. The
/// interpreter may be among them (`ld-linux-*.so.2`), at the path the search finds.
pub fn libraries(exe: &Path, exe_elf: &Elf) -> Result<Vec<Library>, ElfError> {
    let mut out: Vec<Library> = Vec::new();
    if exe_elf.interp.is_none() {
        return Ok(out);
    }
    let mut queue: Vec<(PathBuf, Elf)> = vec![(exe.to_owned(), exe_elf.clone())];
    while let Some((from, elf)) = queue.pop() {
        for name in &elf.needed {
            if out.iter().any(|l| &l.name == name) {
                continue;
            }
            let (found, lib) = resolve(name, &from, &elf, exe_elf)?;
            out.push(Library { name: name.clone(), path: found.clone() });
            queue.push((found, lib));
        }
    }
    Ok(out)
}

/// The directories a cache-less loader searches after `DT_RPATH`/`DT_RUNPATH`.
pub fn default_dirs(machine: elf::Machine, class64: bool) -> Vec<PathBuf> {
    let multiarch = match machine {
        elf::EM_X86_64 => Some("x86_64-linux-gnu"),
        elf::EM_AARCH64 => Some("aarch64-linux-gnu"),
        elf::EM_386 => Some("i386-linux-gnu"),
        elf::EM_ARM => Some("arm-linux-gnueabihf"),
        elf::EM_RISCV => Some(if class64 { "riscv64-linux-gnu" } else { "riscv32-linux-gnu" }),
        _ => None,
    };
    let mut dirs = Vec::new();
    if let Some(m) = multiarch {
        dirs.push(PathBuf::from(format!("/lib/{m}")));
        dirs.push(PathBuf::from(format!("/usr/lib/{m}")));
    }
    if class64 {
        dirs.push("/lib64".into());
        dirs.push("/usr/lib64".into());
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

/// Find `name` (needed by `from`, read as `elf`) as the loader would, keeping only a
/// library of the program's class and machine (`program`).
pub fn resolve(
    name: &str,
    from: &Path,
    elf: &Elf,
    program: &Elf,
) -> Result<(PathBuf, Elf), ElfError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        let lib = Elf::read(&p)?;
        return Ok((p, lib));
    }
    let origin = from.parent().unwrap_or(Path::new("/")).to_string_lossy().into_owned();
    let mut searched = Vec::new();
    let rpaths = if elf.runpath.is_empty() { &elf.rpath } else { &elf.runpath };
    for entry in rpaths.iter().flat_map(|r| r.split(':')).filter(|e| !e.is_empty()) {
        searched
            .push(PathBuf::from(entry.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)));
    }
    searched.extend(default_dirs(program.machine, program.class64));
    for dir in &searched {
        let candidate = dir.join(name);
        if !candidate.is_file() {
            continue;
        }
        match Elf::read(&candidate) {
            Ok(lib) if lib.machine == program.machine && lib.class64 == program.class64 => {
                return Ok((candidate, lib));
            }
            Ok(_) => {
                tracing::debug!(candidate = %boxsock_core::echo::path(&candidate), "wrong ELF class or machine; skipped")
            }
            Err(e) => {
                tracing::debug!(candidate = %boxsock_core::echo::path(&candidate), error = %e, "not a usable library; skipped")
            }
        }
    }
    Err(ElfError::LibraryNotFound {
        library: name.to_owned(),
        needed_by: from.to_owned(),
        searched,
    })
}

/// A program or library as its loader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// 64-bit (`ELFCLASS64`).
    pub class64: bool,
    /// `e_machine`.
    pub machine: elf::Machine,
    /// `PT_INTERP`: the program's loader; `None` for a static program.
    pub interp: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` entries.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` entries.
    pub runpath: Vec<String>,
}

impl Elf {
    /// Read and parse the file at `path`.
    pub fn read(path: &Path) -> Result<Elf, ElfError> {
        let bytes = fs::read(path).map_err(|source| ElfError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        Elf::parse(&bytes).map_err(|e| match e {
            None => ElfError::NotElf { path: path.to_owned() },
            Some(reason) => ElfError::Malformed { path: path.to_owned(), reason },
        })
    }

    /// `Err(None)`: not ELF; `Err(Some(reason))`: malformed.
    pub fn parse(b: &[u8]) -> Result<Elf, Option<String>> {
        if b.len() < 16 || !b.starts_with(&elf::ELFMAG) {
            return Err(None);
        }
        match FileKind::parse(b) {
            Ok(FileKind::Elf32) => Elf::parse_as::<elf::FileHeader32<Endianness>>(b),
            Ok(FileKind::Elf64) => Elf::parse_as::<elf::FileHeader64<Endianness>>(b),
            // ELF's magic with a class byte that is neither 32- nor 64-bit.
            _ => Err(Some(format!("unknown ELF class {}", b[4]))),
        }
    }

    /// What the loader reads, as it reads it: from the program headers (`PT_INTERP`,
    /// `PT_DYNAMIC`, the `PT_LOAD` segment holding `DT_STRTAB`), never the section
    /// headers, which a stripped file may lack.
    fn parse_as<H: FileHeader<Endian = Endianness>>(b: &[u8]) -> Result<Elf, Option<String>> {
        let bad = |e: object::read::Error| Some(e.to_string());
        let header = H::parse(b).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        let phdrs = header.program_headers(endian, b).map_err(bad)?;
        let mut elf = Elf {
            class64: header.is_type_64(),
            machine: header.e_machine(endian),
            interp: None,
            needed: vec![],
            rpath: vec![],
            runpath: vec![],
        };
        let utf8 = |s: &[u8], what: &str| {
            String::from_utf8(s.to_vec()).map_err(|_| Some(format!("{what} is not UTF-8")))
        };
        if let Some(ph) = phdrs.iter().find(|p| p.p_type(endian) == elf::PT_INTERP) {
            let interp = ph.interpreter(endian, b).map_err(bad)?.unwrap_or_default();
            elf.interp = Some(utf8(interp, "PT_INTERP")?);
        }
        let Some(ph) = phdrs.iter().find(|p| p.p_type(endian) == elf::PT_DYNAMIC) else {
            return Ok(elf);
        };
        let dynamic = ph.dynamic(endian, b).map_err(bad)?.unwrap_or_default();
        let (mut strtab, mut strsz) = (None, None);
        let mut names = Vec::new();
        for d in dynamic.iter().take_while(|d| d.d_tag(endian) != elf::DT_NULL) {
            match d.d_tag(endian) {
                elf::DT_STRTAB => strtab = Some(d.val(endian)),
                elf::DT_STRSZ => strsz = Some(d.val(endian)),
                elf::DT_NEEDED | elf::DT_RPATH | elf::DT_RUNPATH => names.push(d),
                _ => {}
            }
        }
        if names.is_empty() {
            return Ok(elf);
        }
        let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
            return Err(Some("DT_NEEDED without DT_STRTAB and DT_STRSZ".into()));
        };
        let mut strings = None;
        for p in phdrs.iter().filter(|p| p.p_type(endian) == elf::PT_LOAD) {
            let past_end = |()| Some("a PT_LOAD segment lies past the end of the file".to_string());
            if let Some(data) = p.data_range(endian, b, strtab, strsz).map_err(past_end)? {
                strings = Some(data);
                break;
            }
        }
        let outside = || Some("DT_STRTAB is outside every PT_LOAD segment".to_string());
        let strings = strings.ok_or_else(outside)?;
        let strings = StringTable::new(strings, 0, strings.len() as u64);
        for d in names {
            let s = d.string(endian, strings).map_err(bad)?;
            let s = utf8(s, "a dynamic string")?;
            match d.d_tag(endian) {
                elf::DT_NEEDED => elf.needed.push(s),
                elf::DT_RPATH => elf.rpath.push(s),
                _ => elf.runpath.push(s),
            }
        }
        Ok(elf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_and_truncated_are_errors_not_panics() {
        assert_eq!(Elf::parse(b"#!/bin/sh\n"), Err(None));
        assert_eq!(Elf::parse(b""), Err(None));
        let mut h = b"\x7fELF\x02\x01\x01".to_vec();
        h.resize(20, 0);
        assert!(matches!(Elf::parse(&h), Err(Some(r)) if r.contains("ELF header size")));
        let mut bad_class = b"\x7fELF\x07\x01".to_vec();
        bad_class.resize(64, 0);
        assert!(matches!(Elf::parse(&bad_class), Err(Some(r)) if r.contains("class 7")));
    }

    #[test]
    fn every_truncation_or_corruption_of_a_real_binary_is_an_error_or_a_parse() {
        // This very test binary: dynamically linked, so it has an interpreter and
        // libraries; cut at every length up to 4 KiB and at 2 000 points past that,
        // and with each of its first 4 KiB flipped: never a panic.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let full = Elf::parse(&me).unwrap();
        assert_eq!(full.class64, cfg!(target_pointer_width = "64"));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(full.interp.as_deref().is_some_and(|i| i.starts_with('/')), "{full:?}");
            assert!(full.needed.iter().any(|n| n.starts_with("libc.so")), "{full:?}");
        }
        let step = (me.len() / 2000).max(1);
        for n in (0..me.len().min(4096)).chain((4096..me.len()).step_by(step)) {
            let _ = Elf::parse(&me[..n]);
        }
        let mut head = me[..me.len().min(4096)].to_vec();
        for i in 0..head.len() {
            head[i] ^= 0xff;
            let _ = Elf::parse(&head);
            head[i] ^= 0xff;
        }
    }

    /// A minimal 32-bit ELF (`big`: big-endian) the way a linker lays one out: its program
    /// headers `PT_INTERP`, `PT_LOAD` (the whole file at 0x1000) and `PT_DYNAMIC`, whose
    /// entries are `dynamic` plus `DT_NULL`, given the string table's offset in the file.
    fn elf32(big: bool, dynamic: impl Fn(u32) -> Vec<(u32, u32)>) -> Vec<u8> {
        let w16 =
            |v: &mut Vec<u8>, x: u16| v.extend(if big { x.to_be_bytes() } else { x.to_le_bytes() });
        let w32 =
            |v: &mut Vec<u8>, x: u32| v.extend(if big { x.to_be_bytes() } else { x.to_le_bytes() });
        let interp = b"/lib/ld-linux.so.3\0";
        let strtab = b"\0libfoo.so.1\0$ORIGIN/lib\0";
        let (interp_at, strtab_at) = (52 + 3 * 32, 52 + 3 * 32 + interp.len() as u32);
        let dyn_at = strtab_at + strtab.len() as u32;
        let mut entries = dynamic(strtab_at);
        entries.push((0, 0));
        let end = dyn_at + 8 * entries.len() as u32;
        let mut v = b"\x7fELF\x01".to_vec();
        v.extend([if big { 2 } else { 1 }, 1]);
        v.resize(16, 0);
        w16(&mut v, 3); // ET_DYN
        w16(&mut v, elf::EM_ARM.0);
        for x in [1, 0, 52, 0, 0] {
            w32(&mut v, x); // e_version, e_entry, e_phoff, e_shoff, e_flags
        }
        for x in [52, 32, 3, 40, 0, 0] {
            // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
            w16(&mut v, x);
        }
        let len = interp.len() as u32;
        for (ty, off, vaddr, size) in [
            (elf::PT_INTERP, interp_at, 0x1000 + interp_at, len),
            (elf::PT_LOAD, 0, 0x1000, end),
            (elf::PT_DYNAMIC, dyn_at, 0x1000 + dyn_at, end - dyn_at),
        ] {
            for x in [ty.0, off, vaddr, vaddr, size, size, 4, 4] {
                w32(&mut v, x);
            }
        }
        v.extend(interp);
        v.extend(strtab);
        for (tag, val) in entries {
            w32(&mut v, tag);
            w32(&mut v, val);
        }
        v
    }

    const DT_NEEDED: u32 = 1;
    const DT_STRTAB: u32 = 5;
    const DT_STRSZ: u32 = 10;
    const DT_RUNPATH: u32 = 29;

    #[test]
    fn a_32_bit_elf_of_either_byte_order_parses_as_the_loader_reads_it() {
        let table = |at: u32| {
            vec![(DT_NEEDED, 1), (DT_RUNPATH, 13), (DT_STRTAB, 0x1000 + at), (DT_STRSZ, 25)]
        };
        for big in [false, true] {
            let e = Elf::parse(&elf32(big, table)).unwrap();
            assert!(!e.class64);
            assert_eq!(e.machine, elf::EM_ARM);
            assert_eq!(e.interp.as_deref(), Some("/lib/ld-linux.so.3"));
            assert_eq!(e.needed, ["libfoo.so.1"]);
            assert_eq!(e.runpath, ["$ORIGIN/lib"]);
            assert!(e.rpath.is_empty());
        }
    }

    #[test]
    fn malformed_dynamic_sections_are_errors_that_say_what_is_wrong() {
        type Table<'a> = &'a dyn Fn(u32) -> Vec<(u32, u32)>;
        let cases: [(&str, Table); 3] = [
            ("dyn string", &|at| vec![(DT_NEEDED, 999), (DT_STRTAB, 0x1000 + at), (DT_STRSZ, 25)]),
            ("outside every PT_LOAD", &|_| {
                vec![(DT_NEEDED, 1), (DT_STRTAB, 0x9000), (DT_STRSZ, 25)]
            }),
            ("DT_STRSZ", &|at| vec![(DT_NEEDED, 1), (DT_STRTAB, 0x1000 + at)]),
        ];
        for (want, table) in cases {
            match Elf::parse(&elf32(false, table)) {
                Err(Some(reason)) => assert!(reason.contains(want), "{want}: {reason}"),
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
