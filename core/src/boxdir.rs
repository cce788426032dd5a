//! Creating and removing a box's directories on disk (the I/O side of
//! [`BoxLayout`](crate::layout::BoxLayout)).

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use crate::id::BoxId;
use crate::layout::BoxLayout;

/// Create `<home>/boxes/<id>/{sockets,logs}`, each 0700. Existing directories are
/// kept (their mode is tightened to 0700). The home itself must exist.
pub fn create_box_dirs(layout: &BoxLayout, id: &BoxId) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.mode(0o700);
    for dir in [layout.boxes_dir(), layout.box_dir(id), layout.sockets_dir(id), layout.logs_dir(id)] {
        match b.create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m = std::fs::symlink_metadata(&dir)?;
                if !m.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a directory", dir.display()),
                    ));
                }
                if m.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                }
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("create {}: {e}", dir.display()))),
        }
    }
    Ok(())
}

/// Remove `<home>/boxes/<id>` and everything below it. Missing is not an error.
pub fn remove_box_dir(layout: &BoxLayout, id: &BoxId) -> io::Result<()> {
    match std::fs::remove_dir_all(layout.box_dir(id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0700_dirs_idempotently_and_removes() {
        let home = tempfile::tempdir().unwrap();
        let l = BoxLayout::new(home.path());
        let id = BoxId::generate();
        create_box_dirs(&l, &id).unwrap();
        create_box_dirs(&l, &id).unwrap();
        let mode = std::fs::metadata(l.sockets_dir(&id)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        remove_box_dir(&l, &id).unwrap();
        assert!(!l.box_dir(&id).exists());
        remove_box_dir(&l, &id).unwrap();
    }
}
