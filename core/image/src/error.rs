//! `ImageError`: every failure of the image store, with the facts a person needs (the
//! path, the entry, the digest, the limit). Input a layer or a registry chose is quoted
//! through `boxsock_core::echo` before it lands in a variant: bounded, controls escaped.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// An error of the image store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file system operation on the store or a layer failed.
    #[error("{op} {}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// What was being done (`create`, `rename`…).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A digest string that is not `sha256:<64 lower-case hex>`.
    #[error("bad digest {digest}: {reason}")]
    BadDigest {
        /// The digest, quoted.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Content whose digest is not the one it was named or referenced by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (`blob`, `layer diff id`…).
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// A blob that ended before its declared size.
    #[error("truncated blob {digest}: {got} of {expected} bytes")]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Its declared size.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// A blob or document larger than its declared size or a limit.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was read.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A layer that decompresses to more than `UnpackLimits::max_bytes`.
    #[error("layer {layer} decompresses to more than the limit of {limit} bytes")]
    LayerTooLarge {
        /// The layer blob.
        layer: Digest,
        /// The limit.
        limit: u64,
    },
    /// A layer with more entries than `UnpackLimits::max_entries`.
    #[error("layer {layer} has more than the limit of {limit} entries")]
    TooManyEntries {
        /// The layer blob.
        layer: Digest,
        /// The limit.
        limit: u64,
    },
    /// A tar entry whose name could land outside the layer directory.
    #[error("layer {layer}: entry {entry} is refused: {reason}")]
    UnsafeEntry {
        /// The layer blob.
        layer: Digest,
        /// The entry's name, quoted.
        entry: String,
        /// Why (`absolute path`, `..` component, `goes through a symlink`…).
        reason: String,
    },
    /// A layer stream that is not a valid (compressed) tar, or ends early.
    #[error("layer {layer}: bad or truncated archive: {reason}")]
    BadLayer {
        /// The layer blob.
        layer: Digest,
        /// What the decoder said, quoted (tar's messages carry entry names).
        reason: String,
    },
    /// A layer media type this store does not unpack.
    #[error("unsupported layer media type {media_type}")]
    UnsupportedLayer {
        /// The media type, quoted.
        media_type: String,
    },
    /// A document with a media type other than the one its place requires.
    #[error("{what} has media type {found}, expected {expected}")]
    WrongMediaType {
        /// Which document.
        what: &'static str,
        /// The media type found, quoted.
        found: String,
        /// What is accepted there.
        expected: &'static str,
    },
    /// A document (manifest, index, config, layout) that does not parse.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// Which document.
        what: String,
        /// The parser's message, quoted.
        reason: String,
    },
    /// An index or manifest list with no entry for this platform.
    #[error("no image for {wanted} in the index; it has: {}", available.join(", "))]
    NoMatchingPlatform {
        /// `linux/<arch>`.
        wanted: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },
    /// An image reference that does not parse.
    #[error("bad image reference {reference}: {reason}")]
    BadReference {
        /// The reference, quoted.
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No image in the store matches.
    #[error("no such image: {reference}")]
    NotFound {
        /// What was looked for, quoted.
        reference: String,
    },
    /// A short id that matches more than one image.
    #[error("image id prefix {prefix} is ambiguous: {count} images match")]
    Ambiguous {
        /// The prefix, quoted.
        prefix: String,
        /// How many match.
        count: usize,
    },
    /// An archive or layout to import that is none of the known kinds, or is malformed.
    #[error("cannot import {}: {reason}", boxsock_core::echo::path(path))]
    Import {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store index is corrupt.
    #[error("image index {} is corrupt: {reason}", boxsock_core::echo::path(path))]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// An image that boxes are pinned to, asked to be removed without force.
    #[error(
        "image {image} is used by {} box(es): {}{} (remove them first, or force)",
        count, boxes.join(", "), if *count > boxes.len() { ", …" } else { "" }
    )]
    InUse {
        /// The image (its id, or the name given), quoted.
        image: String,
        /// The boxes' names or ids (at most 16, quoted).
        boxes: Vec<String>,
        /// How many boxes use it.
        count: usize,
    },
    /// The store that keeps the image records failed (the runtime's SQLite store).
    #[error("image records: {0}")]
    Records(String),
    /// A registry refused or failed a request.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// `host[:port]`.
        registry: String,
        /// What the client or the registry said, quoted.
        reason: String,
    },
    /// A docker credentials file that cannot be read.
    #[error("credentials in {}: {reason}", boxsock_core::echo::path(path))]
    Credentials {
        /// The file (`~/.docker/config.json`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image whose config leaves nothing to run, after the overrides.
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io { op, path: path.into(), source }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
