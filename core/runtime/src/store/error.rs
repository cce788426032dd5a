//! [`StoreError`]: what went wrong in the store, with the file and the operation.

use std::path::PathBuf;

use boxsock_core::echo::echo;
use boxsock_core::id::BoxId;

use crate::state::BoxState;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {}: {op}: {source}", boxsock_core::echo::path(path))]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer boxsock.
    #[error(
        "store {} has schema version {found}, newer than this boxsock understands (at most {supported}); upgrade boxsock, the store was not modified",
        boxsock_core::echo::path(path)
    )]
    FutureSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A file system operation on the store's files failed.
    #[error("store {}: {op}: {source}", boxsock_core::echo::path(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A store file is not one this user can trust (a symlink, not a regular file, or
    /// owned by another user): somebody else could read or change the boxes' secrets.
    #[error("store {}: refusing to use it: {reason}", boxsock_core::echo::path(path))]
    Insecure {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A row could not be decoded.
    #[error("box {id}: stored row is corrupt: {reason}")]
    Corrupt {
        /// The row's id column.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Another box already has this name.
    #[error("the name {name:?} is already used by box {by}")]
    NameTaken {
        /// The name.
        name: String,
        /// The box that has it.
        by: String,
    },
    /// A box pinned to an image the store has no record of (removed by `rmi`
    /// meanwhile, or never added): refused in the insert's transaction, so no box pins
    /// an image whose removal has been committed.
    #[error("image {image} is not in the store (removed meanwhile?): box {id} not created")]
    ImageGone {
        /// The box.
        id: BoxId,
        /// The image's manifest digest, quoted.
        image: String,
    },
    /// Another box already has this id.
    #[error("a box with id {id} already exists")]
    IdTaken {
        /// The id.
        id: BoxId,
    },
    /// No such box.
    #[error("no box {id}")]
    NotFound {
        /// The id.
        id: BoxId,
    },
    /// An id prefix that starts several boxes' ids.
    #[error("{} is the start of several box ids ({}): give more of the id", echo(prefix), candidates.join(", "))]
    AmbiguousPrefix {
        /// The prefix given.
        prefix: String,
        /// Every id it starts.
        candidates: Vec<String>,
    },
    /// The state machine does not allow this change.
    #[error("box {id}: illegal state transition {from} -> {to}")]
    IllegalTransition {
        /// The box.
        id: BoxId,
        /// Its current state.
        from: BoxState,
        /// The requested state.
        to: BoxState,
    },
}
