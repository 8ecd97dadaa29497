//! The segmented append-only log: group commit, rotation, compaction.
//!
//! The caller [`append`](Log::append)s the records of a batch (one driver turn), then
//! [`commit`](Log::commit)s once: one `write` of the whole batch and, with
//! [`Durability::Fsync`], one `fdatasync`. Only after `commit` returns `Ok` may the broker
//! acknowledge what the batch carried: that is the durability promise.

use std::borrow::Borrow;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::StoreError;
use crate::record::Record;
use crate::recovery::RecoveryReport;
use crate::recovery::{self, Recovered, sync_dir};
use crate::segment::{self, HEADER_LEN, MAX_FRAME_LEN};

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit ends with `fdatasync`: an acknowledged message survives a power loss.
    #[default]
    Fsync,
    /// Commits are written at once (they survive `kill -9`: the kernel has them) but
    /// `fdatasync` runs at most once per interval, so a power loss or kernel crash loses at
    /// most the last interval. The driver calls [`Log::sync_if_due`] on its timer (see
    /// [`Log::next_sync_due`]) so that an idle broker does not keep data unsynced.
    Interval(Duration),
    /// No persistence: the broker does not open a log at all. Kept for configuration; a log
    /// opened with it writes on commit and never syncs except on rotation and compaction.
    None,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Fsync => f.write_str("fsync"),
            Durability::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
            Durability::None => f.write_str("none"),
        }
    }
}

/// Parses `fsync`, `none`, or `interval:<N>ms` / `interval:<N>s`.
impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid durability {s:?}: expected fsync, none or interval:<N>ms");
        match s {
            "fsync" => Ok(Durability::Fsync),
            "none" => Ok(Durability::None),
            _ => {
                let spec = s.strip_prefix("interval:").ok_or_else(bad)?;
                let (digits, unit) = match spec.strip_suffix("ms") {
                    Some(d) => (d, 1),
                    None => (spec.strip_suffix('s').ok_or_else(bad)?, 1000),
                };
                let n: u64 = digits.parse().map_err(|_| bad())?;
                let ms = n.checked_mul(unit).ok_or_else(bad)?;
                if ms == 0 {
                    return Err(bad());
                }
                Ok(Durability::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Default size after which a new segment is started.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub durability: Durability,
    /// A commit that would take the current segment past this size goes to a new segment
    /// (a single batch larger than this gets a segment of its own).
    pub segment_size: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Fsync,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// What one [`Log::commit`] wrote (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    pub records: usize,
    pub bytes: u64,
    /// The commit ended with an `fdatasync`.
    pub synced: bool,
}

/// What one [`Log::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactStats {
    /// Records in the snapshot.
    pub records: u64,
    /// Size of the snapshot segment.
    pub bytes: u64,
    /// Older segments removed.
    pub segments_removed: usize,
}

/// The durable log of one data directory. See the crate documentation.
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    /// Held (locked) as long as the log is open: two brokers on one directory would interleave
    /// their frames.
    _lock: File,
    /// The current segment, opened in append mode.
    file: File,
    number: u64,
    /// Bytes of the current segment on disk (header included).
    len: u64,
    /// Live segments, ascending; the last is the current one.
    segments: Vec<u64>,
    /// Never reused, even after a failed creation.
    next_number: u64,
    /// Frames appended and not yet committed.
    buf: Vec<u8>,
    pending: usize,
    /// Size of a record too large to frame, appended since the last commit.
    oversized: Option<usize>,
    /// Committed bytes not yet covered by an `fdatasync`.
    unsynced: bool,
    last_sync: Instant,
    since_snapshot: u64,
    snapshot_bytes: u64,
    poisoned: Option<String>,
    /// What [`Log::replay`] reads: the segments found at open and where their frames end.
    replay_plan: Vec<(u64, usize)>,
}

const LOCK_FILE: &str = "LOCK";
/// Compaction writes the snapshot in chunks of about this size.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// A commit buffer that grew past this is given back after the commit.
const KEEP_BUFFER: usize = 4 << 20;

impl Log {
    /// Opens (or creates) the log in `dir`, repairs a torn tail, and returns every valid
    /// record in order. Fails only on I/O errors, a directory locked by another process, or a
    /// segment of a newer format version, never because of damaged contents.
    pub fn open(
        dir: impl AsRef<Path>,
        options: LogOptions,
    ) -> Result<(Log, Recovered), StoreError> {
        Self::open_inner(dir.as_ref(), options, true)
    }

    /// Like [`Log::open`] (same repairs, same report), but returns no records: read them with
    /// [`Log::replay`], as often as needed, without holding them all in memory.
    pub fn open_streaming(
        dir: impl AsRef<Path>,
        options: LogOptions,
    ) -> Result<(Log, RecoveryReport), StoreError> {
        let (log, recovered) = Self::open_inner(dir.as_ref(), options, false)?;
        Ok((log, recovered.report))
    }

    /// Reads the records that were in the log when it was opened, in order, one at a time.
    /// Call it before appending or compacting (records committed since are not included, and a
    /// compaction removes the segments it reads). Returns the number of records.
    pub fn replay(&self, sink: &mut dyn FnMut(Record)) -> Result<usize, StoreError> {
        recovery::replay(&self.dir, &self.replay_plan, sink)
    }

    fn open_inner(
        dir: &Path,
        options: LogOptions,
        collect: bool,
    ) -> Result<(Log, Recovered), StoreError> {
        let dir = dir.to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
            // The new directory's own entry must be durable too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StoreError::io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path: dir }),
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("lock", &lock_path)(e)),
        }

        let (recovered, tail) = recovery::recover(&dir, collect)?;
        let replay_plan = tail.plan;
        let mut segments = tail.segments;
        let mut next_number = tail.next_number;
        let (file, number, len) = match tail.current {
            Some((number, len)) => {
                let path = dir.join(segment::file_name(number));
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(StoreError::io("open", &path))?;
                (file, number, len)
            }
            None => {
                let (file, number) = create_segment(&dir, &mut next_number)?;
                segments.push(number);
                (file, number, HEADER_LEN as u64)
            }
        };
        info!(dir = %dir.display(), "log opened: {}", recovered.report);
        let log = Log {
            dir,
            options,
            _lock: lock,
            file,
            number,
            len,
            segments,
            next_number,
            buf: Vec::new(),
            pending: 0,
            oversized: None,
            unsynced: false,
            last_sync: Instant::now(),
            since_snapshot: tail.bytes_since_snapshot,
            snapshot_bytes: tail.snapshot_bytes,
            poisoned: None,
            replay_plan,
        };
        Ok((log, recovered))
    }

    /// Adds a record to the current batch (memory only; nothing is durable before
    /// [`commit`](Log::commit)).
    pub fn append(&mut self, record: &Record) {
        match segment::push_record(&mut self.buf, record) {
            Ok(_) => self.pending += 1,
            Err(len) => self.oversized = Some(len),
        }
    }

    /// Writes the batch with one `write` and, per [`Durability`], one `fdatasync`. When it
    /// returns `Ok`, every record appended before it is durable to that mode's promise.
    ///
    /// On an error nothing of the batch may be acknowledged. A failed write is undone (the
    /// segment is cut back) and the batch kept, so `commit` may be retried; a failed
    /// `fdatasync` poisons the log (see [`StoreError::Poisoned`]). A batch holding a record
    /// too large to frame is dropped whole with [`StoreError::RecordTooLarge`].
    pub fn commit(&mut self) -> Result<CommitStats, StoreError> {
        self.check_poisoned()?;
        if let Some(len) = self.oversized.take() {
            self.discard_batch();
            return Err(StoreError::RecordTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if self.buf.is_empty() {
            let synced = self.sync_if_due()?;
            return Ok(CommitStats {
                synced,
                ..CommitStats::default()
            });
        }
        let bytes = self.buf.len() as u64;
        if self.len > HEADER_LEN as u64 && self.len + bytes > self.options.segment_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // Cut a partial write back, so that the next frames follow the last complete one.
            if let Err(e2) = self.file.set_len(self.len) {
                self.poisoned = Some(format!("cutting back a failed write: {e2}"));
            }
            return Err(StoreError::io("write", self.current_path())(e));
        }
        self.len += bytes;
        self.since_snapshot += bytes;
        self.unsynced = true;
        let synced = match self.options.durability {
            Durability::Fsync => {
                self.sync()?;
                true
            }
            Durability::Interval(_) => self.sync_if_due()?,
            Durability::None => false,
        };
        let records = self.pending;
        self.discard_batch();
        Ok(CommitStats {
            records,
            bytes,
            synced,
        })
    }

    /// `fdatasync`s the current segment if anything committed is not yet synced.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if !self.unsynced {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = Some(format!("fdatasync failed: {e}"));
            return Err(StoreError::io("fdatasync", self.current_path())(e));
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// With [`Durability::Interval`]: syncs if committed data is unsynced and the interval
    /// since the last sync has passed. Returns whether it synced.
    pub fn sync_if_due(&mut self) -> Result<bool, StoreError> {
        match self.next_sync_due() {
            Some(due) if Instant::now() >= due => self.sync().map(|()| true),
            _ => Ok(false),
        }
    }

    /// With [`Durability::Interval`] and unsynced data: when [`sync_if_due`](Log::sync_if_due)
    /// should be called.
    pub fn next_sync_due(&self) -> Option<Instant> {
        match self.options.durability {
            Durability::Interval(interval) if self.unsynced => Some(self.last_sync + interval),
            _ => None,
        }
    }

    /// Replaces the log by `snapshot`, the live state (as records that rebuild it).
    ///
    /// Writes the pending batch first, then a new segment: the snapshot marker, the records,
    /// the snapshot-complete marker; `fdatasync`s it and the directory; then removes every
    /// older segment. A crash before the directory sync leaves an incomplete snapshot that
    /// recovery ignores; a crash after it leaves old segments that recovery removes. Appending
    /// continues in the snapshot segment.
    pub fn compact<I>(&mut self, snapshot: I) -> Result<CompactStats, StoreError>
    where
        I: IntoIterator,
        I::Item: Borrow<Record>,
    {
        self.try_compact(snapshot.into_iter().map(Ok::<_, StoreError>))
    }

    /// [`Log::compact`] from records that may fail to come (a snapshot that reads queue pages
    /// back from the spool): on the first error the partial snapshot is removed, the log is
    /// left as it was, and the error is returned.
    pub fn try_compact<I, R>(&mut self, snapshot: I) -> Result<CompactStats, StoreError>
    where
        I: IntoIterator<Item = Result<R, StoreError>>,
        R: Borrow<Record>,
    {
        self.check_poisoned()?;
        if !self.buf.is_empty() || self.oversized.is_some() {
            self.commit()?;
        }
        self.sync()?;
        let number = self.next_number;
        self.next_number = number.saturating_add(1);
        let path = self.dir.join(segment::file_name(number));
        let (file, len, records) = match write_snapshot(&self.dir, &path, number, snapshot) {
            Ok(done) => done,
            Err(e) => {
                if let Err(e2) = fs::remove_file(&path) {
                    warn!(segment = %path.display(), error = %e2, "could not remove an incomplete snapshot");
                }
                return Err(e);
            }
        };
        // The snapshot is complete and durable: recovery starts from it from now on.
        self.file = file;
        self.number = number;
        self.len = len;
        self.segments = vec![number];
        self.since_snapshot = 0;
        self.snapshot_bytes = len - HEADER_LEN as u64;
        self.unsynced = false;
        self.last_sync = Instant::now();

        // Everything older goes, including leftovers of failed compactions.
        let mut segments_removed = 0;
        for old in recovery::list_segments(&self.dir)?
            .into_iter()
            .filter(|&n| n < number)
        {
            let old_path = self.dir.join(segment::file_name(old));
            match fs::remove_file(&old_path) {
                Ok(()) => segments_removed += 1,
                // Harmless: the next open removes segments older than the snapshot.
                Err(e) => {
                    warn!(segment = %old_path.display(), error = %e, "could not remove a compacted segment")
                }
            }
        }
        if let Err(e) = sync_dir(&self.dir) {
            warn!(error = %e, "directory fsync after compaction failed (the next open finishes the removal)");
        }
        debug!(records, bytes = len, segments_removed, "log compacted");
        Ok(CompactStats {
            records,
            bytes: len,
            segments_removed,
        })
    }

    /// Bytes committed since the last snapshot (or since the log began): with
    /// [`snapshot_bytes`](Log::snapshot_bytes), what the broker decides compaction on.
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.since_snapshot
    }

    /// Size of the last snapshot's records (0 without a snapshot).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
    }

    /// Records appended and not yet committed.
    pub fn pending_records(&self) -> usize {
        self.pending
    }

    /// Bytes appended and not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Live segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn discard_batch(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        self.pending = 0;
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(segment::file_name(self.number))
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        // The old segment must be complete on disk before a newer one can hold data, or a
        // crash could leave a hole before records that survive.
        self.sync()?;
        let (file, number) = create_segment(&self.dir, &mut self.next_number)?;
        debug!(from = self.number, to = number, "log segment rotated");
        self.file = file;
        self.number = number;
        self.len = HEADER_LEN as u64;
        self.segments.push(number);
        Ok(())
    }
}

impl fmt::Debug for Log {
    // Not derived: the batch buffer can be megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("segment", &self.number)
            .field("segment_len", &self.len)
            .field("segments", &self.segments.len())
            .field("pending_records", &self.pending)
            .field("pending_bytes", &self.buf.len())
            .field("bytes_since_snapshot", &self.since_snapshot)
            .field("snapshot_bytes", &self.snapshot_bytes)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Drop for Log {
    /// With [`Durability::Interval`], a clean close does not wait for the timer: what was
    /// committed is synced. Records appended and not committed are not written: they were
    /// never acknowledged.
    fn drop(&mut self) {
        if matches!(self.options.durability, Durability::Interval(_))
            && self.unsynced
            && self.poisoned.is_none()
            && let Err(e) = self.file.sync_data()
        {
            warn!(segment = %self.current_path().display(), error = %e, "fdatasync on close failed");
        }
    }
}

/// Creates segment `next_number` (and consumes the number whatever happens): header written,
/// file and directory synced.
fn create_segment(dir: &Path, next_number: &mut u64) -> Result<(File, u64), StoreError> {
    let number = *next_number;
    *next_number = number.saturating_add(1);
    let path = dir.join(segment::file_name(number));
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(StoreError::io("create", &path))?;
    let written = file
        .write_all(&segment::header(number))
        .and_then(|()| file.sync_data())
        .map_err(StoreError::io("write header", &path))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, number))
}

fn write_snapshot<I, R>(
    dir: &Path,
    path: &Path,
    number: u64,
    snapshot: I,
) -> Result<(File, u64, u64), StoreError>
where
    I: IntoIterator<Item = Result<R, StoreError>>,
    R: Borrow<Record>,
{
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(StoreError::io("create", path))?;
    let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK + 4096);
    buf.extend_from_slice(&segment::header(number));
    segment::push_snapshot_begin(&mut buf);
    let mut len = 0u64;
    let mut records = 0u64;
    for record in snapshot {
        let record = record?;
        segment::push_record(&mut buf, record.borrow()).map_err(|len| {
            StoreError::RecordTooLarge {
                len,
                max: MAX_FRAME_LEN,
            }
        })?;
        records += 1;
        if buf.len() >= SNAPSHOT_CHUNK {
            file.write_all(&buf)
                .map_err(StoreError::io("write", path))?;
            len += buf.len() as u64;
            buf.clear();
        }
    }
    segment::push_snapshot_end(&mut buf, records);
    file.write_all(&buf)
        .map_err(StoreError::io("write", path))?;
    len += buf.len() as u64;
    file.sync_data()
        .map_err(StoreError::io("fdatasync", path))?;
    sync_dir(dir)?;
    Ok((file, len, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_and_prints() {
        for (s, d) in [
            ("fsync", Durability::Fsync),
            ("none", Durability::None),
            (
                "interval:250ms",
                Durability::Interval(Duration::from_millis(250)),
            ),
            ("interval:2s", Durability::Interval(Duration::from_secs(2))),
        ] {
            assert_eq!(s.parse::<Durability>(), Ok(d));
        }
        assert_eq!(
            Durability::Interval(Duration::from_secs(2)).to_string(),
            "interval:2000ms"
        );
        for bad in [
            "",
            "sync",
            "interval:",
            "interval:0ms",
            "interval:5",
            "interval:-1s",
            "interval:99999999999999999999s",
        ] {
            assert!(bad.parse::<Durability>().is_err(), "{bad}");
        }
    }
}
