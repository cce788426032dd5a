//! Creating and removing a box's directories on disk (the I/O side of
//! [`BoxLayout`](crate::layout::BoxLayout)).

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use crate::id::BoxId;
use crate::layout::BoxLayout;

/// Why a box directory could not be made: the operation, the exact directory, and the
/// untouched OS error (its errno is kept).
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct BoxDirError {
    /// What was being done ("create directory", "inspect", "tighten mode of").
    pub op: &'static str,
    /// The directory it was done to.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Create `<home>/boxes/<id>/{sockets,logs}`, each 0700. Existing directories are
/// kept (their mode is tightened to 0700). The home itself must exist.
pub fn create_box_dirs(layout: &BoxLayout, id: &BoxId) -> Result<(), BoxDirError> {
    let mut b = DirBuilder::new();
    b.mode(0o700);
    for dir in [layout.boxes_dir(), layout.box_dir(id), layout.sockets_dir(id), layout.logs_dir(id)] {
        let fail = |op, source| BoxDirError { op, path: dir.clone(), source };
        match b.create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m = std::fs::symlink_metadata(&dir).map_err(|e| fail("inspect", e))?;
                if !m.is_dir() {
                    return Err(fail(
                        "create directory",
                        io::Error::new(io::ErrorKind::AlreadyExists, "it exists and is not a directory"),
                    ));
                }
                if m.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| fail("tighten mode of", e))?;
                }
            }
            Err(e) => return Err(fail("create directory", e)),
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

    #[test]
    fn a_failure_names_the_directory_once_and_keeps_the_errno() {
        let home = tempfile::tempdir().unwrap();
        let l = BoxLayout::new(home.path());
        std::fs::write(l.boxes_dir(), b"not a dir").unwrap();
        let e = create_box_dirs(&l, &BoxId::generate()).unwrap_err();
        assert_eq!(e.path, l.boxes_dir());
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        let missing = BoxLayout::new(home.path().join("no/such/home"));
        let e = create_box_dirs(&missing, &BoxId::generate()).unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOENT), "{e}");
        assert_eq!(e.to_string().matches("no/such/home/boxes").count(), 1, "{e}");
    }
}
