//! boxsock's image store: OCI images imported, saved and (later) pulled, kept once.
//!
//! One job: images. The crate depends on `boxsock-core` only; the runtime and the CLI
//! (`boxsock pull`, `run IMAGE`, image records in SQLite, `rmi` refused while a box
//! uses an image) build on its API:
//!
//! - [`ImageStore::open`] a directory; [`ImageStore::import`] an OCI layout, an OCI
//!   archive or a `docker save` tarball; [`ImageStore::save`] an OCI archive;
//!   [`ImageStore::list`], [`ImageStore::inspect`], [`ImageStore::remove`],
//!   [`ImageStore::prune`] (bytes freed).
//! - [`ImageStore::layers`]: the unpacked, read-only layer directories of an image,
//!   bottom first, shared by every image and box that uses them (keyed by diff id).
//! - [`config::resolve`]: what a box runs, from the image config and the user's
//!   overrides, by docker's rules.
//!
//! What it guarantees:
//!
//! - Blobs are content-addressed and verified: a blob gets its name only once it is
//!   whole, synced and its digest checked; every use verifies again as it reads.
//! - A layer is unpacked into a temporary directory held by a lock, synced, then
//!   renamed into place: `kill -9` at any point leaves either no layer or a whole one,
//!   and the next open removes the leftovers.
//! - Unpacking never follows a symlink and never writes outside the layer directory
//!   (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` on the held directory
//!   descriptor); hostile entries are refused with an error naming the entry.
//!
//! Image records are kept through the [`Records`] trait: boxsock's homes keep them in
//! the runtime's SQLite store (decision 0019), the library alone in a JSON file in the
//! store directory ([`JsonRecords`]). Decision 0015 has the store's choices.

mod sys;

pub mod blobs;
pub mod config;
mod crash;
pub mod digest;
pub mod error;
mod fsutil;
mod import;
pub mod index;
pub mod manifest;
#[cfg(feature = "registry")]
pub mod pull;
pub mod reference;
pub mod root;
mod save;
pub mod store;
pub mod unpack;

pub use config::{ImageConfig, Overrides, Process};
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use import::ImportOptions;
pub use index::{BadRecord, ImageRecord, JsonRecords, LayerRecord, RecordList, Records};
pub use manifest::Platform;
#[cfg(feature = "registry")]
pub use pull::{Credentials, PullOptions, PullReport};
pub use reference::Reference;
pub use root::RootReport;
pub use store::{AddReport, ImageId, ImageInfo, ImageStore, Progress, PruneReport, Removed};
pub use unpack::{UnpackLimits, UnpackReport};
