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
#[error("{op} {}: {source}", crate::echo::path(path))]
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
    for dir in [layout.boxes_dir(), layout.box_dir(id), layout.sockets_dir(id), layout.logs_dir(id)]
    {
        let fail = |op, source| BoxDirError { op, path: dir.clone(), source };
        match b.create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m = std::fs::symlink_metadata(&dir).map_err(|e| fail("inspect", e))?;
                if !m.is_dir() {
                    return Err(fail(
                        "create directory",
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "it exists and is not a directory",
                        ),
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

/// Create a **new** box's directories for the runtime's `create`: `<home>/boxes/<id>`
/// must not exist (boxsock never adopts a directory it did not make); its marker
/// `.boxsock-box` is written first (`O_EXCL`), then `sockets/`, `logs/` (0700) and an
/// empty `logs/box.log` (0600, so a backend appending to it never creates it with the
/// umask's mode). `<home>/boxes` must exist.
pub fn create_new_box_dir(layout: &BoxLayout, id: &BoxId) -> Result<(), BoxDirError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut b = DirBuilder::new();
    b.mode(0o700);
    let dir = layout.box_dir(id);
    b.create(&dir).map_err(|source| BoxDirError {
        op: "create directory",
        path: dir.clone(),
        source,
    })?;
    let new_file = |path: PathBuf| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| BoxDirError { op: "create", path, source })
    };
    new_file(layout.box_marker(id))?;
    for d in [layout.sockets_dir(id), layout.logs_dir(id)] {
        b.create(&d).map_err(|source| BoxDirError {
            op: "create directory",
            path: d.clone(),
            source,
        })?;
    }
    new_file(layout.log_file(id))?;
    Ok(())
}

/// Remove `<home>/boxes/<id>` and everything below it. Missing is not an error.
///
/// A box can leave directories its owner cannot list or write (a rootless sandbox's
/// overlay `work/work` is mode 0, and a box may `mkdir -m 0`; root is not stopped by
/// modes, another user is): on `EACCES`, every directory below that this user owns is
/// given `u+rwx` (symlinks never followed) and the removal tried once more.
pub fn remove_box_dir(layout: &BoxLayout, id: &BoxId) -> io::Result<()> {
    let dir = layout.box_dir(id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_up(&dir, nix::unistd::geteuid().as_raw());
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Give every directory under `dir` owned by `uid` (not following symlinks) `u+rwx`.
fn open_up(dir: &std::path::Path, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() || meta.uid() != uid {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700
        && std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700)).is_err()
    {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&e.path(), uid);
            }
        }
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
    fn a_new_box_dir_is_marked_first_and_never_adopted() {
        let home = tempfile::tempdir().unwrap();
        let l = BoxLayout::new(home.path());
        std::fs::create_dir(l.boxes_dir()).unwrap();
        let id = BoxId::generate();
        create_new_box_dir(&l, &id).unwrap();
        assert!(l.box_marker(&id).is_file());
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(l.log_file(&id)), 0o600);
        assert_eq!(mode(l.sockets_dir(&id)), 0o700);
        let e = create_new_box_dir(&l, &id).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(e.path, l.box_dir(&id));
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
