//! Prepare a libkrun guest root: `guest-root DIR AGENT [--busybox PATH]`.
//! `scripts/build-guest-root.sh` wraps it. See `boxsock_libkrun::rootfs`.

use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, agent, busybox) = match args.as_slice() {
        [d, a] => (d, a, None),
        [d, a, flag, b] if flag == "--busybox" => (d, a, Some(b)),
        _ => {
            eprintln!("usage: guest-root DIR AGENT [--busybox PATH]");
            std::process::exit(2);
        }
    };
    let root = PathBuf::from(dir);
    let result = boxsock_libkrun::rootfs::prepare(&root, Path::new(agent)).and_then(|g| {
        let mut files = g.files;
        if let Some(b) = busybox {
            let (_, more) = boxsock_libkrun::rootfs::install_program(
                &root,
                Path::new(b),
                Path::new("/bin/busybox"),
            )?;
            boxsock_libkrun::rootfs::guest_symlink(
                &root,
                Path::new("/bin/sh"),
                Path::new("busybox"),
            )?;
            files.extend(more);
        }
        Ok((g.interpreter, files))
    });
    match result {
        Ok((interp, files)) => {
            match interp {
                None => println!("static agent: no interpreter or libraries needed"),
                Some(i) => println!("dynamic agent: interpreter {}", i.display()),
            }
            for f in files {
                println!("{} <- {}", f.guest_path.display(), f.from.display());
            }
        }
        Err(e) => {
            eprintln!("guest-root: {e}");
            std::process::exit(1);
        }
    }
}
