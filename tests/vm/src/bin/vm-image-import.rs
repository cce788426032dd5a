//! `vm-image-import HOME ARCHIVE NAME`: import an OCI archive (or layout, or `docker
//! save` tarball) into the image store of a boxsock home (`<HOME>/images`), as `boxsock
//! image import` does, for the image scenarios of the real-VM tier when the CLI has no
//! `image import` verb. Prints the image's id.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [home, archive, name] = args.as_slice() else {
        eprintln!("usage: vm-image-import HOME ARCHIVE NAME");
        return ExitCode::from(2);
    };
    let layout = boxsock_core::layout::BoxLayout::new(PathBuf::from(home));
    let opts = boxsock_image::ImportOptions { name: Some(name.clone()), ..Default::default() };
    let imported = boxsock_image::ImageStore::open(layout.images_dir())
        .and_then(|s| s.import(std::path::Path::new(archive), &opts));
    match imported {
        Ok(r) if !r.is_empty() => {
            println!("{}", r[0].image.id);
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("vm-image-import: {archive}: no image in it");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vm-image-import: {e}");
            ExitCode::FAILURE
        }
    }
}
