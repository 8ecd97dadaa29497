//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed; `path` is the file or directory it was about.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A segment written by a newer tern. We refuse rather than guess: the on-disk format is
    /// versioned so that an old binary never misreads (or truncates) a newer log.
    #[error(
        "{path}: log format version {found} is newer than this build supports ({supported}); \
         run a tern release that supports it, or move the data directory away"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Another process holds the data directory.
    #[error(
        "{path} is locked by another process (is another tern running on this data directory?)"
    )]
    Locked { path: PathBuf },
    /// An earlier fdatasync (or the repair of a failed write) failed. After a failed fsync the
    /// kernel may have dropped the dirty pages, so retrying could report success for data that
    /// is not on disk; the log refuses every further write. Restart to recover from the disk.
    #[error("the log is unusable after an earlier I/O failure ({0}); restart to recover from disk")]
    Poisoned(String),
    /// A record larger than a frame can hold was appended; nothing of that batch was written.
    #[error("a record of {len} bytes exceeds the frame limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// The records of a snapshot could not all be produced (see `Log::try_compact`); the log
    /// was left as it was.
    #[error("snapshot incomplete: {0}")]
    Snapshot(String),
    /// Bytes that are not a record (decoding only; the log skips such frames).
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
