//! Pure path arithmetic for a runtime home. No I/O happens here.
//!
//! ```text
//! <home>/              0700, owned by the user, checked at every open
//!   .boxsock-home       marks the directory as a boxsock home
//!   boxsock.db          the SQLite store (0600, and its -wal, -shm)
//!   boxsock.lock        the home lock (flock, 0600)
//!   journal/create.<id> a create in progress (removed once the box's row exists)
//!   boxes/<id>/         one directory per box (0700)
//!     .boxsock-box      written first when create makes the directory
//!     sockets/          the real directory of the box's sockets (0700)
//!     logs/box.log      the box's console / process log
//!     rootfs/           a backend's guest root, when it has one
//!   images/             the image store (`boxsock-image`)
//!     roots/<hex>/root/ an image's root: its layers merged, whiteouts applied
//!                       (hard links to the layer files; decision 0018)
//! ```
//!
//! Socket *addresses* are not computed here: they come from the chosen
//! [`SocketBinding`](crate::binding::SocketBinding) at the point of use, and are never
//! persisted.

use std::path::{Path, PathBuf};

use crate::id::BoxId;

/// `<store>/roots/<hex>/root` for the manifest digest `sha256:<hex>` (64 lowercase hex
/// digits), `None` for any other string: the one rule both the image store (which
/// builds an image's root) and a backend (which shows it to a box) use.
pub fn image_root_in(store: &Path, manifest: &str) -> Option<PathBuf> {
    let hex = manifest.strip_prefix("sha256:")?;
    let ok =
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| store.join("roots").join(hex).join("root"))
}

/// The layout of one runtime home.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoxLayout {
    home: PathBuf,
}

impl BoxLayout {
    /// A layout rooted at `home`. The path is used as given (not canonicalised).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        BoxLayout { home: home.into() }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/boxsock.db`.
    pub fn store_path(&self) -> PathBuf {
        self.home.join("boxsock.db")
    }

    /// `<home>/boxsock.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.home.join("boxsock.lock")
    }

    /// `<home>/.boxsock-home`: the marker of a home.
    pub fn home_marker(&self) -> PathBuf {
        self.home.join(".boxsock-home")
    }

    /// `<home>/images`: the home's image store (`boxsock-image`).
    pub fn images_dir(&self) -> PathBuf {
        self.home.join("images")
    }

    /// `<home>/images/roots/<hex>/root`: the root of the image whose manifest digest is
    /// `manifest` (`sha256:<64 hex digits>`), as the image store builds it
    /// ([`image_root_in`]). `None` for anything else, so no stored string can name a
    /// path outside the store.
    pub fn image_root(&self, manifest: &str) -> Option<PathBuf> {
        image_root_in(&self.images_dir(), manifest)
    }

    /// `<home>/journal`: the create journal.
    pub fn journal_dir(&self) -> PathBuf {
        self.home.join("journal")
    }

    /// `<home>/journal/create.<id>`: box `id` is being created.
    pub fn create_journal(&self, id: &BoxId) -> PathBuf {
        self.journal_dir().join(format!("create.{id}"))
    }

    /// `<home>/boxes/<id>/.boxsock-box`: the marker create writes first in a new box
    /// directory.
    pub fn box_marker(&self, id: &BoxId) -> PathBuf {
        self.box_dir(id).join(".boxsock-box")
    }

    /// `<home>/boxes`.
    pub fn boxes_dir(&self) -> PathBuf {
        self.home.join("boxes")
    }

    /// `<home>/boxes/<id>`.
    pub fn box_dir(&self, id: &BoxId) -> PathBuf {
        self.boxes_dir().join(id.as_str())
    }

    /// `<home>/boxes/<id>/sockets`: the real directory holding the box's sockets.
    pub fn sockets_dir(&self, id: &BoxId) -> PathBuf {
        self.box_dir(id).join("sockets")
    }

    /// `<home>/boxes/<id>/logs`.
    pub fn logs_dir(&self, id: &BoxId) -> PathBuf {
        self.box_dir(id).join("logs")
    }

    /// `<home>/boxes/<id>/logs/box.log`.
    pub fn log_file(&self, id: &BoxId) -> PathBuf {
        self.logs_dir(id).join("box.log")
    }

    /// `<home>/boxes/<id>/rootfs`.
    pub fn rootfs_dir(&self, id: &BoxId) -> PathBuf {
        self.box_dir(id).join("rootfs")
    }

    /// `<home>/<name>`: a home-level file owned by one strategy (for example the
    /// `abstract` strategy's secret). `name` must be a plain file name.
    pub fn home_file(&self, name: &str) -> PathBuf {
        debug_assert!(!name.contains('/') && name != "." && name != "..");
        self.home.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_box_path_stays_under_the_box_dir() {
        let l = BoxLayout::new("/srv/home");
        let id = BoxId::parse("abc").unwrap();
        let b = l.box_dir(&id);
        assert_eq!(b, Path::new("/srv/home/boxes/abc"));
        for p in [l.sockets_dir(&id), l.logs_dir(&id), l.log_file(&id), l.rootfs_dir(&id)] {
            assert!(p.starts_with(&b), "{}", p.display());
        }
        assert_eq!(l.sockets_dir(&id), Path::new("/srv/home/boxes/abc/sockets"));
        assert!(l.store_path().starts_with(l.home()));
    }

    #[test]
    fn an_image_root_is_one_digest_component_under_the_store() {
        let l = BoxLayout::new("/srv/home");
        let hex = "0123456789abcdef".repeat(4);
        let root = l.image_root(&format!("sha256:{hex}")).unwrap();
        assert_eq!(root, Path::new("/srv/home/images/roots").join(&hex).join("root"));
        for bad in [
            "",
            "sha256:",
            "sha256:../../etc",
            "sha512:00",
            &format!("sha256:{}", hex.to_uppercase()),
        ] {
            assert_eq!(l.image_root(bad), None, "{bad}");
        }
        assert_eq!(l.image_root(&format!("sha256:{hex}/..")), None);
    }
}
