//! The image verbs: `image import`, and the store they share (`<home>/images`).

use std::path::PathBuf;

use boxsock::boxsock_core::echo;
use boxsock::boxsock_image::{AddReport, ImageError, ImageStore, ImportOptions};

use crate::args::Global;
use crate::home::Writes;
use crate::{Failure, errln, exit, outln};

impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Self {
        Failure(e.to_string(), exit::FAILED)
    }
}

/// The home's image store, the home opened (made, checked) as every writing verb does.
async fn store(g: &Global) -> Result<ImageStore, Failure> {
    let rt = g.open(Writes::Yes).await?;
    Ok(ImageStore::open(rt.layout().home().join("images"))?)
}

/// `image import PATH`: every image of an OCI layout directory, OCI archive or `docker
/// save` tarball; prints each image's id and names.
pub(crate) async fn import(
    g: &Global,
    path: PathBuf,
    name: Option<String>,
    quiet: bool,
) -> Result<u8, Failure> {
    let store = store(g).await?;
    let opts = ImportOptions { name, ..Default::default() };
    let reports = store
        .import(&path, &opts)
        .map_err(|e| Failure(format!("import {}: {e}", echo::path(&path)), exit::FAILED))?;
    for r in &reports {
        print_added(r, quiet)?;
    }
    Ok(0)
}

/// One line per image added: its id, then its names (none: `<none>`).
fn print_added(r: &AddReport, quiet: bool) -> Result<(), Failure> {
    for note in &r.notes {
        errln!("boxsock: note: {note}");
    }
    if quiet {
        outln!("{}", r.image.id);
    } else if r.image.names.is_empty() {
        outln!("{} <none>", r.image.id);
    } else {
        outln!("{} {}", r.image.id, r.image.names.join(" "));
    }
    Ok(())
}
