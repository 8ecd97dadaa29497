//! Durable storage of the broker: the record types and a crash-safe segmented log with group
//! commit.
//!
//! The promise: once [`Log::commit`] (with [`Durability::Fsync`]) returns, every record appended
//! before it is on disk and comes back from [`Log::open`] after `kill -9`, a power loss, and
//! a restart. The broker appends the records of a whole driver turn and commits once, so one
//! `fdatasync` covers many acknowledgements (group commit).
//!
//! Module map:
//! - [`record`]: [`Record`], every durable state change, and [`StoredMessage`].
//! - [`codec`]: the versioned binary encoding of a record ([`encode`], [`decode`]).
//! - `segment`: segment files: name, header, frames (`len | crc32c | payload`), snapshot markers.
//! - [`log`]: [`Log`]: append, commit, rotation, compaction.
//! - `recovery`: what [`Log::open`] does with the files it finds: which segments count, torn
//!   tails, corrupt records ([`Recovered`], [`RecoveryReport`]).
//! - [`spool`]: [`Spool`], where queues beyond the broker's memory budget are paged out (not
//!   durable: the log holds the truth; the spool only keeps it out of memory).
//! - `crc`: CRC-32C, table-driven.
//! - [`Durable`]: what the broker's driver needs of a store, so another store (replicated, or
//!   in memory for tests) can take the log's place.
//!
//! `commit` and `compact` block on the disk; the caller runs them off the async runtime's
//! worker threads. The format is described in `docs/storage.md`.

pub mod codec;
mod crc;
mod error;
pub mod log;
pub mod record;
mod recovery;
mod segment;
pub mod spool;

pub use codec::{FORMAT_VERSION, decode, encode};
pub use crc::crc32c;
pub use error::StoreError;
pub use log::{CommitStats, CompactStats, DEFAULT_SEGMENT_SIZE, Durability, Log, LogOptions};
pub use record::{Record, StoredMessage};
pub use recovery::{Recovered, RecoveryReport};
pub use segment::MAX_FRAME_LEN;
pub use spool::{SPOOL_SEGMENT_SIZE, Spool, SpoolPage, SpoolStats};

/// The durable store as the broker's driver uses it.
///
/// The driver appends the records of a turn, commits once, and only then sends the
/// acknowledgements of that turn. It compacts when the log has grown enough past the last
/// snapshot (for instance `bytes_since_snapshot() > max(4 * snapshot_bytes(), 64 MiB)`).
pub trait Durable: Send {
    /// Adds a record to the current batch.
    fn append(&mut self, record: &Record);
    /// Makes the batch durable (per the store's durability mode).
    fn commit(&mut self) -> Result<CommitStats, StoreError>;
    /// Replaces everything stored by `snapshot`, the live state.
    fn compact(
        &mut self,
        snapshot: &mut dyn Iterator<Item = Record>,
    ) -> Result<CompactStats, StoreError>;
    /// Bytes committed since the last snapshot.
    fn bytes_since_snapshot(&self) -> u64;
    /// Size of the last snapshot.
    fn snapshot_bytes(&self) -> u64;
    /// Syncs committed data whose sync was deferred, if its time has come (interval
    /// durability); returns whether it synced.
    fn sync_if_due(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// When [`sync_if_due`](Durable::sync_if_due) should next be called, if at all.
    fn next_sync_due(&self) -> Option<std::time::Instant> {
        None
    }
}

impl Durable for Log {
    fn append(&mut self, record: &Record) {
        Log::append(self, record);
    }

    fn commit(&mut self) -> Result<CommitStats, StoreError> {
        Log::commit(self)
    }

    fn compact(
        &mut self,
        snapshot: &mut dyn Iterator<Item = Record>,
    ) -> Result<CompactStats, StoreError> {
        Log::compact(self, snapshot)
    }

    fn bytes_since_snapshot(&self) -> u64 {
        Log::bytes_since_snapshot(self)
    }

    fn snapshot_bytes(&self) -> u64 {
        Log::snapshot_bytes(self)
    }

    fn sync_if_due(&mut self) -> Result<bool, StoreError> {
        Log::sync_if_due(self)
    }

    fn next_sync_due(&self) -> Option<std::time::Instant> {
        Log::next_sync_due(self)
    }
}
