//! Opening a log: scan the segments, decide what is valid, repair the tail.
//!
//! Rules (see `docs/storage.md`):
//! - Reading starts at the newest *complete* snapshot segment (one whose first frame is the
//!   snapshot marker and which holds the snapshot-complete marker). Older segments are left
//!   over from a compaction that crashed after its snapshot was durable: they are removed.
//! - A snapshot segment without its end marker is a compaction that crashed while writing: it
//!   is ignored and removed, the older segments still hold everything. (Only if no older
//!   segment is left is it read for what it holds.)
//! - A frame with a bad checksum (or that does not decode) is skipped with a warning naming the
//!   segment and the offset; a length that cannot be right (zero, or beyond the end of the file)
//!   makes the rest of that segment unreadable.
//! - In the last segment, everything after the last good frame is a torn write: the file is
//!   truncated there, and appending continues from it. A last segment whose header is damaged
//!   and that holds no readable frame is a torn creation: it is removed.
//! - A segment written by a newer format version is an error: we refuse rather than misread.
//!
//! Damage never stops the broker from starting; only an I/O error or a newer format does.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::codec::FORMAT_VERSION;
use crate::error::StoreError;
use crate::record::Record;
use crate::segment::{self, Frame, FrameReader, HEADER_LEN, HeaderCheck, Step};
use std::io::{BufReader, Read};

/// What [`Log::open`](crate::Log::open) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read (from the newest complete snapshot on).
    pub segments: usize,
    /// Records returned.
    pub records: usize,
    /// Bytes read.
    pub bytes: u64,
    /// The last segment ended in a torn write that was cut off (or a torn new segment removed).
    pub torn_tail_truncated: bool,
    /// Bytes cut off (or removed) as the torn tail.
    pub torn_bytes: u64,
    /// Frames before the tail skipped for a bad checksum or an undecodable payload.
    pub corrupt_records_skipped: usize,
    /// Bytes skipped before the tail: corrupt frames, and the unreadable rest of a segment
    /// after a garbage length field.
    pub bytes_skipped: u64,
    /// Segments older than the newest complete snapshot, removed (a compaction interrupted
    /// after its snapshot was durable is finished here).
    pub obsolete_segments_removed: usize,
    /// Snapshot segments without their end marker (a compaction interrupted while writing),
    /// ignored and removed.
    pub incomplete_snapshots_removed: usize,
    /// Time taken by the scan and repair.
    pub duration: Duration,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records from {} segments ({} bytes) in {:?}",
            self.records, self.segments, self.bytes, self.duration
        )?;
        if self.torn_tail_truncated {
            write!(f, "; torn tail of {} bytes truncated", self.torn_bytes)?;
        }
        if self.corrupt_records_skipped > 0 || self.bytes_skipped > 0 {
            write!(
                f,
                "; {} corrupt records skipped ({} bytes)",
                self.corrupt_records_skipped, self.bytes_skipped
            )?;
        }
        if self.obsolete_segments_removed > 0 {
            write!(
                f,
                "; {} obsolete segments removed",
                self.obsolete_segments_removed
            )?;
        }
        if self.incomplete_snapshots_removed > 0 {
            write!(
                f,
                "; {} incomplete snapshots removed",
                self.incomplete_snapshots_removed
            )?;
        }
        Ok(())
    }
}

/// The records of a log, in the order they were appended, and the report.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub records: Vec<Record>,
    pub report: RecoveryReport,
}

/// Where appending goes on after recovery.
pub(crate) struct Tail {
    /// Live segment numbers, ascending.
    pub segments: Vec<u64>,
    /// The segments to read on replay, and where their good frames end.
    pub plan: Vec<(u64, usize)>,
    /// The segment to append to and its length, unless a new one must be started.
    pub current: Option<(u64, u64)>,
    pub next_number: u64,
    pub bytes_since_snapshot: u64,
    pub snapshot_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Snapshot {
    No,
    Incomplete,
    Complete { end: usize },
}

struct SegmentScan {
    number: u64,
    path: PathBuf,
    /// Bytes read; `file_len` is the length after a repair.
    read_len: usize,
    file_len: usize,
    header_ok: bool,
    records: Vec<Record>,
    record_count: usize,
    snapshot: Snapshot,
    /// Offset just after the last good frame (the header's end if none).
    good_end: usize,
    /// Skipped frames: offset, end, why.
    corrupt: Vec<(usize, usize, String)>,
    /// Where framing failed, and why; the rest of the segment is unreadable.
    unframed: Option<(usize, &'static str)>,
}

pub(crate) fn recover(dir: &Path, collect: bool) -> Result<(Recovered, Tail), StoreError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let numbers = list_segments(dir)?;
    let mut removed_any = false;

    // Newest first, down to the newest complete snapshot.
    let mut scans = Vec::new();
    let mut first_kept = 0;
    for (i, &number) in numbers.iter().enumerate().rev() {
        let scan = scan_segment(dir, number, collect)?;
        let complete = matches!(scan.snapshot, Snapshot::Complete { .. });
        scans.push(scan);
        if complete {
            first_kept = i;
            break;
        }
    }
    scans.reverse();

    for &number in &numbers[..first_kept] {
        let path = dir.join(segment::file_name(number));
        fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
        removed_any = true;
        report.obsolete_segments_removed += 1;
    }
    if report.obsolete_segments_removed > 0 {
        info!(
            segments = report.obsolete_segments_removed,
            "removed segments older than the newest complete snapshot (finishing an interrupted compaction)"
        );
    }

    let mut kept: Vec<SegmentScan> = Vec::with_capacity(scans.len());
    for (k, scan) in scans.into_iter().enumerate() {
        if scan.snapshot == Snapshot::Incomplete {
            if k > 0 {
                warn!(
                    segment = %scan.path.display(),
                    "snapshot segment is incomplete (a compaction was interrupted); ignored and removed, \
                     the older segments hold the state"
                );
                fs::remove_file(&scan.path).map_err(StoreError::io("remove", &scan.path))?;
                removed_any = true;
                report.incomplete_snapshots_removed += 1;
                continue;
            }
            warn!(
                segment = %scan.path.display(),
                "snapshot segment lacks its end marker and no older segment is left; reading what it holds"
            );
        }
        kept.push(scan);
    }

    // The tail: the last segment is where a crash tears writes.
    let mut needs_new_segment = false;
    if let Some(last) = kept.last_mut() {
        if !last.header_ok {
            needs_new_segment = true;
            if last.record_count == 0 {
                warn!(
                    segment = %last.path.display(),
                    bytes = last.file_len,
                    "last segment has a damaged header and no readable record: a torn segment creation, removed"
                );
                fs::remove_file(&last.path).map_err(StoreError::io("remove", &last.path))?;
                removed_any = true;
                report.torn_tail_truncated = true;
                report.torn_bytes += last.file_len as u64;
                report.bytes += last.file_len as u64;
                kept.pop();
            } else {
                warn!(
                    segment = %last.path.display(),
                    "last segment has a damaged header; its readable records are kept and appending \
                     continues in a new segment"
                );
            }
        } else if last.good_end < last.file_len {
            let reason = match (
                &last.unframed,
                last.corrupt.iter().find(|c| c.0 >= last.good_end),
            ) {
                (_, Some(c)) => c.2.clone(),
                (Some((_, reason)), None) => (*reason).to_owned(),
                (None, None) => String::new(),
            };
            warn!(
                segment = %last.path.display(),
                offset = last.good_end,
                bytes = last.file_len - last.good_end,
                reason,
                "torn write at the tail of the log: truncated to the last complete record"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&last.path)
                .map_err(StoreError::io("open", &last.path))?;
            file.set_len(last.good_end as u64)
                .and_then(|()| file.sync_all())
                .map_err(StoreError::io("truncate", &last.path))?;
            report.torn_tail_truncated = true;
            report.torn_bytes += (last.file_len - last.good_end) as u64;
            let good_end = last.good_end;
            last.corrupt.retain(|c| c.0 < good_end);
            last.unframed = None;
            last.file_len = good_end;
        }
    }

    let mut records = Vec::new();
    let mut bytes_since_snapshot = 0u64;
    let mut snapshot_bytes = 0u64;
    for (k, scan) in kept.iter_mut().enumerate() {
        for (offset, end, reason) in &scan.corrupt {
            warn!(segment = %scan.path.display(), offset, bytes = end - offset, reason, "corrupt record skipped");
            report.corrupt_records_skipped += 1;
            report.bytes_skipped += (end - offset) as u64;
        }
        if let Some((offset, reason)) = scan.unframed {
            warn!(
                segment = %scan.path.display(),
                offset,
                bytes = scan.file_len - offset,
                reason,
                "the rest of this segment cannot be framed; skipped"
            );
            report.bytes_skipped += (scan.file_len - offset) as u64;
        }
        let body = scan.good_end.saturating_sub(HEADER_LEN) as u64;
        match scan.snapshot {
            Snapshot::Complete { end } if k == 0 => {
                snapshot_bytes = (end - HEADER_LEN) as u64;
                bytes_since_snapshot += scan.good_end.saturating_sub(end) as u64;
            }
            _ => bytes_since_snapshot += body,
        }
        report.bytes += scan.read_len as u64;
        report.records += scan.record_count;
        records.append(&mut scan.records);
    }

    if removed_any {
        sync_dir(dir)?;
    }

    let next_number = match numbers.last() {
        None => 1,
        Some(n) => n
            .checked_add(1)
            .ok_or(StoreError::Malformed("segment numbers exhausted"))?,
    };
    let current = match kept.last() {
        Some(last) if !needs_new_segment => Some((last.number, last.file_len as u64)),
        _ => None,
    };
    report.segments = kept.len();
    report.duration = started.elapsed();
    let tail = Tail {
        segments: kept.iter().map(|s| s.number).collect(),
        plan: kept.iter().map(|s| (s.number, s.good_end)).collect(),
        current,
        next_number,
        bytes_since_snapshot,
        snapshot_bytes,
    };
    Ok((Recovered { records, report }, tail))
}

/// Segment numbers in `dir`, ascending. Other files are not ours and are left alone.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("read directory", dir))? {
        let entry = entry.map_err(StoreError::io("read directory", dir))?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

fn scan_segment(dir: &Path, number: u64, collect: bool) -> Result<SegmentScan, StoreError> {
    let path = dir.join(segment::file_name(number));
    let file = fs::File::open(&path).map_err(StoreError::io("read", &path))?;
    let file_len = file
        .metadata()
        .map_err(StoreError::io("read", &path))?
        .len() as usize;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut head = vec![0u8; HEADER_LEN.min(file_len)];
    reader
        .read_exact(&mut head)
        .map_err(StoreError::io("read", &path))?;
    let header_ok = match segment::check_header(&head, number) {
        HeaderCheck::Ok => true,
        HeaderCheck::Newer(found) => {
            return Err(StoreError::UnsupportedVersion {
                path,
                found,
                supported: FORMAT_VERSION,
            });
        }
        HeaderCheck::Garbled(reason) => {
            warn!(segment = %path.display(), reason, "segment header is damaged");
            false
        }
    };
    let mut scan = SegmentScan {
        number,
        read_len: file_len,
        file_len,
        header_ok,
        records: Vec::new(),
        record_count: 0,
        snapshot: Snapshot::No,
        good_end: HEADER_LEN.min(file_len),
        corrupt: Vec::new(),
        unframed: None,
        path,
    };
    let mut snapshot_records = 0u64;
    let mut frames = FrameReader::new(reader, HEADER_LEN.min(file_len), file_len);
    while let Some(step) = frames
        .next_step()
        .map_err(StoreError::io("read", &scan.path))?
    {
        match step {
            Step::Frame { offset, end } => match segment::decode_frame(frames.payload()) {
                Ok(Frame::Record(record)) => {
                    if collect {
                        scan.records.push(record);
                    }
                    scan.record_count += 1;
                    scan.good_end = end;
                    if scan.snapshot == Snapshot::Incomplete {
                        snapshot_records += 1;
                    }
                }
                Ok(Frame::SnapshotBegin) => {
                    scan.good_end = end;
                    if offset == HEADER_LEN {
                        scan.snapshot = Snapshot::Incomplete;
                    } else {
                        warn!(segment = %scan.path.display(), offset, "snapshot marker inside a segment ignored");
                    }
                }
                Ok(Frame::SnapshotEnd { records }) => {
                    scan.good_end = end;
                    if scan.snapshot == Snapshot::Incomplete {
                        if records != snapshot_records {
                            warn!(
                                segment = %scan.path.display(),
                                expected = records,
                                found = snapshot_records,
                                "snapshot holds fewer records than it announces"
                            );
                        }
                        scan.snapshot = Snapshot::Complete { end };
                    } else {
                        warn!(segment = %scan.path.display(), offset, "stray snapshot end marker ignored");
                    }
                }
                Err(e) => scan
                    .corrupt
                    .push((offset, end, format!("checksum matches but {e}"))),
            },
            Step::BadChecksum { offset, end } => {
                scan.corrupt
                    .push((offset, end, "checksum mismatch".to_owned()));
            }
            Step::Unframed { offset, reason } => scan.unframed = Some((offset, reason)),
        }
    }
    Ok(scan)
}

/// Reads the records of the segments recovery kept, in order, without holding them all: what
/// [`Log::replay`](crate::Log::replay) does. Corrupt frames were reported by the scan at open
/// and are skipped silently here.
pub(crate) fn replay(
    dir: &Path,
    plan: &[(u64, usize)],
    sink: &mut dyn FnMut(Record),
) -> Result<usize, StoreError> {
    let mut n = 0;
    for &(number, good_end) in plan {
        let path = dir.join(segment::file_name(number));
        let file = fs::File::open(&path).map_err(StoreError::io("read", &path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let start = HEADER_LEN.min(good_end);
        let mut head = vec![0u8; start];
        reader
            .read_exact(&mut head)
            .map_err(StoreError::io("read", &path))?;
        let mut frames = FrameReader::new(reader, start, good_end);
        while let Some(step) = frames.next_step().map_err(StoreError::io("read", &path))? {
            if let Step::Frame { .. } = step
                && let Ok(Frame::Record(record)) = segment::decode_frame(frames.payload())
            {
                sink(record);
                n += 1;
            }
        }
    }
    Ok(n)
}
