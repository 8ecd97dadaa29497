//! The log on disk: round trips, torn tails, corruption, headers, rotation, compaction.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{every_variant, fast, frames, message, segment_path, segments, small};
use tern_store::{Durability, Log, LogOptions, Record, StoreError, crc32c, encode};

/// Opens the log, and checks on a copy of the directory that the streaming open and its
/// replay find exactly the same records and report.
fn open(dir: &Path) -> (Log, tern_store::Recovered) {
    let copy = tempfile::tempdir().unwrap();
    if dir.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let streamed = Log::open_streaming(copy.path(), fast()).map(|(log, report)| {
        let mut records = Vec::new();
        log.replay(&mut |r| records.push(r)).unwrap();
        (records, report)
    });
    let (log, recovered) = Log::open(dir, fast()).unwrap();
    let (records, mut report) = streamed.unwrap();
    assert_eq!(records, recovered.records, "streamed replay differs");
    report.duration = recovered.report.duration;
    assert_eq!(
        report, recovered.report,
        "streamed open reports differently"
    );
    (log, recovered)
}

fn write_all(dir: &Path, records: &[Record]) {
    let (mut log, _) = open(dir);
    for r in records {
        log.append(r);
    }
    log.commit().unwrap();
}

fn five() -> Vec<Record> {
    vec![
        small(1),
        Record::Message(message(2, 100)),
        Record::Message(message(3, 100)),
        small(4),
        Record::Message(message(5, 300)),
    ]
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&crc32c(payload).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn record_frame(r: &Record) -> Vec<u8> {
    let mut p = Vec::new();
    encode(r, &mut p);
    frame(&p)
}

fn header(version: u32, number: u64) -> Vec<u8> {
    let mut h = b"TERNLOG\0".to_vec();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&number.to_le_bytes());
    h
}

#[test]
fn every_variant_round_trips_through_the_log_with_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let records = every_variant();
    {
        let (mut log, recovered) = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert!(recovered.records.is_empty());
        assert_eq!(recovered.report.segments, 0);
        assert_eq!(segments(dir.path()).len(), 1);
        for r in &records {
            log.append(r);
        }
        assert_eq!(log.pending_records(), records.len());
        let stats = log.commit().unwrap();
        assert_eq!(stats.records, records.len());
        assert!(stats.synced);
        assert_eq!(stats.bytes, log.bytes_since_snapshot());
        assert_eq!(log.pending_records(), 0);
        assert_eq!(log.commit().unwrap().records, 0);
    }
    let (mut log, recovered) = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(recovered.records, records);
    let report = &recovered.report;
    assert_eq!((report.records, report.segments), (records.len(), 1));
    assert!(!report.torn_tail_truncated);
    assert_eq!(report.corrupt_records_skipped, 0);
    assert_eq!(
        report.bytes,
        fs::metadata(&segments(dir.path())[0]).unwrap().len()
    );

    // Appending continues in the same segment.
    log.append(&small(99));
    log.commit().unwrap();
    drop(log);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), records.len() + 1);
    assert_eq!(recovered.records.last(), Some(&small(99)));
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn uncommitted_records_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = open(dir.path());
        log.append(&small(1));
        log.commit().unwrap();
        log.append(&small(2));
    }
    assert_eq!(open(dir.path()).1.records, vec![small(1)]);
}

#[test]
fn open_creates_missing_directories_and_ignores_foreign_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b");
    write_all(&dir, &[small(1)]);
    fs::write(dir.join("notes.txt"), b"hello").unwrap();
    fs::write(dir.join("seg-1.log"), b"not ours").unwrap();
    let (_, recovered) = open(&dir);
    assert_eq!(recovered.records, vec![small(1)]);
    assert!(dir.join("notes.txt").exists());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = open(dir.path());
    let err = Log::open(dir.path(), fast()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn torn_tail_at_every_offset_of_the_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let seg = segments(dir.path())[0].clone();
    let pristine = fs::read(&seg).unwrap();
    let (start, end) = *frames(&seg).last().unwrap();
    assert_eq!(end, pristine.len());

    for cut in start + 1..end {
        fs::write(&seg, &pristine[..cut]).unwrap();
        let (mut log, recovered) = open(dir.path());
        assert_eq!(recovered.records, records[..4], "cut at {cut}");
        assert!(recovered.report.torn_tail_truncated, "cut at {cut}");
        assert_eq!(recovered.report.torn_bytes, (cut - start) as u64);
        assert_eq!(recovered.report.corrupt_records_skipped, 0);
        assert_eq!(fs::metadata(&seg).unwrap().len(), start as u64);

        log.append(&small(77));
        log.commit().unwrap();
        drop(log);
        let (_, recovered) = open(dir.path());
        let mut expected = records[..4].to_vec();
        expected.push(small(77));
        assert_eq!(recovered.records, expected, "cut at {cut}");
        assert!(!recovered.report.torn_tail_truncated);
    }

    // Cut exactly at a frame boundary: nothing is torn.
    fs::write(&seg, &pristine[..start]).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, records[..4]);
    assert!(!recovered.report.torn_tail_truncated);
}

#[test]
fn zeros_after_the_last_frame_are_a_torn_tail() {
    // What a file system may show after a crash: the size grew, the data did not land.
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let seg = segments(dir.path())[0].clone();
    let len = fs::metadata(&seg).unwrap().len();
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &data).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, records);
    assert!(recovered.report.torn_tail_truncated);
    assert_eq!(recovered.report.torn_bytes, 4096);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
}

#[test]
fn a_corrupt_payload_skips_exactly_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let seg = segments(dir.path())[0].clone();
    let (start, end) = frames(&seg)[2];
    let mut data = fs::read(&seg).unwrap();
    data[(start + 8 + end) / 2] ^= 0x40;
    fs::write(&seg, &data).unwrap();

    let mut expected = records.clone();
    expected.remove(2);
    let (mut log, recovered) = open(dir.path());
    assert_eq!(recovered.records, expected);
    assert_eq!(recovered.report.corrupt_records_skipped, 1);
    assert_eq!(recovered.report.bytes_skipped, (end - start) as u64);
    assert!(!recovered.report.torn_tail_truncated);

    log.append(&small(6));
    log.commit().unwrap();
    drop(log);
    let (_, recovered) = open(dir.path());
    expected.push(small(6));
    assert_eq!(recovered.records, expected);
    assert_eq!(recovered.report.corrupt_records_skipped, 1);
}

#[test]
fn a_corrupt_checksum_field_skips_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let seg = segments(dir.path())[0].clone();
    let (start, _) = frames(&seg)[1];
    let mut data = fs::read(&seg).unwrap();
    data[start + 5] ^= 0x01;
    fs::write(&seg, &data).unwrap();
    let (_, recovered) = open(dir.path());
    let mut expected = records.clone();
    expected.remove(1);
    assert_eq!(recovered.records, expected);
    assert_eq!(recovered.report.corrupt_records_skipped, 1);
}

#[test]
fn a_corrupt_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let seg = segments(dir.path())[0].clone();
    let (start, end) = *frames(&seg).last().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data[end - 1] ^= 0xFF;
    fs::write(&seg, &data).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, records[..4]);
    assert!(recovered.report.torn_tail_truncated);
    assert_eq!(recovered.report.corrupt_records_skipped, 0);
    assert_eq!(fs::metadata(&seg).unwrap().len(), start as u64);
}

#[test]
fn a_corrupt_length_field_never_panics_and_keeps_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let seg = segments(dir.path())[0].clone();
    let pristine = fs::read(&seg).unwrap();
    let (start, _) = frames(&seg)[2];
    for byte in 0..4 {
        for flip in [0x01u8, 0x02, 0x10, 0x80, 0xFF] {
            let mut data = pristine.clone();
            data[start + byte] ^= flip;
            fs::write(&seg, &data).unwrap();
            let (mut log, recovered) = open(dir.path());
            assert!(recovered.records.len() >= 2);
            assert_eq!(
                recovered.records[..2],
                records[..2],
                "byte {byte} ^ {flip:#x}"
            );
            // Whatever was lost, the log goes on working.
            log.append(&small(42));
            log.commit().unwrap();
            drop(log);
            let (_, again) = open(dir.path());
            assert_eq!(
                again.records.last(),
                Some(&small(42)),
                "byte {byte} ^ {flip:#x}"
            );
            assert_eq!(again.records[..2], records[..2]);
        }
    }
}

#[test]
fn garbage_length_in_an_older_segment_loses_only_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_size: 128,
        ..fast()
    };
    {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        for i in 0..30 {
            log.append(&small(i));
            log.commit().unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let first = &segs[0];
    let first_frames = frames(first);
    let mut data = fs::read(first).unwrap();
    let (start, _) = first_frames[1];
    data[start + 3] = 0x7F; // a length far beyond the file
    fs::write(first, &data).unwrap();
    let first_len = data.len();

    let (_, recovered) = Log::open(dir.path(), options).unwrap();
    let lost = first_frames.len() - 1;
    let expected: Vec<Record> = (0..30)
        .filter(|&i| i == 0 || i > lost as u64)
        .map(small)
        .collect();
    assert_eq!(recovered.records, expected);
    assert!(!recovered.report.torn_tail_truncated);
    assert_eq!(recovered.report.bytes_skipped, (first_len - start) as u64);
    // An older segment is never cut.
    assert_eq!(fs::metadata(first).unwrap().len(), first_len as u64);
}

#[test]
fn a_newer_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &[small(1)]);
    let seg = segments(dir.path())[0].clone();
    let mut data = fs::read(&seg).unwrap();
    data[8..12].copy_from_slice(&2u32.to_le_bytes());
    fs::write(&seg, &data).unwrap();
    let err = Log::open(dir.path(), fast()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("version 2") && message.contains("newer"),
        "{message}"
    );
    // Nothing was touched.
    assert_eq!(fs::read(&seg).unwrap(), data);
}

#[test]
fn a_newer_version_in_a_later_segment_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &[small(1)]);
    let mut data = header(7, 2);
    data.extend_from_slice(&record_frame(&small(2)));
    fs::write(segment_path(dir.path(), 2), &data).unwrap();
    let err = Log::open(dir.path(), fast()).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 7, .. }),
        "{err}"
    );
}

#[test]
fn a_record_of_a_later_binary_is_skipped_alone() {
    // A record with a tag this binary does not know, as a later binary may write (new variants
    // take new tags, such as 17 `SessionOwner`): skipped with a warning, the rest is kept. So
    // going back to an earlier binary loses only what the new records add.
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &[small(1)]);
    let seg = segments(dir.path())[0].clone();
    let mut data = fs::read(&seg).unwrap();
    let unknown = [250, 1, b'c', 2, b'a', b'l'];
    data.extend_from_slice(&frame(&unknown));
    data.extend_from_slice(&record_frame(&small(2)));
    fs::write(&seg, &data).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, vec![small(1), small(2)]);
    assert_eq!(recovered.report.corrupt_records_skipped, 1);
    assert!(!recovered.report.torn_tail_truncated);
}

#[test]
fn a_garbage_last_segment_is_a_torn_tail() {
    for garbage in [
        Vec::new(),
        b"TERNLO".to_vec(),
        header(1, 2)[..19].to_vec(),
        (0..200u32).map(|i| (i * 37 % 256) as u8).collect(),
        [header(0, 2), vec![0; 50]].concat(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &[small(1), small(2)]);
        let torn = segment_path(dir.path(), 2);
        fs::write(&torn, &garbage).unwrap();

        let (mut log, recovered) = open(dir.path());
        assert_eq!(recovered.records, vec![small(1), small(2)]);
        assert!(recovered.report.torn_tail_truncated);
        assert_eq!(recovered.report.torn_bytes, garbage.len() as u64);
        assert!(!torn.exists());
        log.append(&small(3));
        log.commit().unwrap();
        drop(log);
        let (_, recovered) = open(dir.path());
        assert_eq!(recovered.records, vec![small(1), small(2), small(3)]);
    }
}

#[test]
fn a_damaged_header_with_good_frames_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &[small(1), small(2)]);
    let seg = segments(dir.path())[0].clone();
    let mut data = fs::read(&seg).unwrap();
    data[0] = b'X';
    fs::write(&seg, &data).unwrap();

    let (mut log, recovered) = open(dir.path());
    assert_eq!(recovered.records, vec![small(1), small(2)]);
    // Appending goes to a fresh segment, not after a header we cannot vouch for.
    log.append(&small(3));
    log.commit().unwrap();
    drop(log);
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(fs::read(&seg).unwrap(), data);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, vec![small(1), small(2), small(3)]);
}

#[test]
fn rotation_spreads_the_log_over_segments_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_size: 2048,
        durability: Durability::Fsync,
    };
    let expected: Vec<Record> = (0..300).map(small).collect();
    {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        for chunk in expected.chunks(10) {
            for r in chunk {
                log.append(r);
            }
            log.commit().unwrap();
        }
        assert!(log.segment_count() > 3);
        assert_eq!(log.segment_count(), segments(dir.path()).len());
    }
    for seg in segments(dir.path()) {
        let len = fs::metadata(&seg).unwrap().len();
        assert!(len <= 2048, "{} is {len} bytes", seg.display());
    }
    let (mut log, recovered) = Log::open(dir.path(), options.clone()).unwrap();
    assert_eq!(recovered.records, expected);
    assert_eq!(recovered.report.segments, segments(dir.path()).len());
    let total: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(recovered.report.bytes, total);
    assert_eq!(
        log.bytes_since_snapshot(),
        total - 20 * segments(dir.path()).len() as u64
    );

    // A batch larger than a segment gets a segment of its own.
    let big: Vec<Record> = (0..20).map(|i| Record::Message(message(i, 200))).collect();
    for r in &big {
        log.append(r);
    }
    log.commit().unwrap();
    drop(log);
    let (_, recovered) = Log::open(dir.path(), options).unwrap();
    assert_eq!(recovered.records, [expected, big].concat());
}

#[test]
fn compaction_replaces_the_log_by_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_size: 256,
        durability: Durability::Fsync,
    };
    let snapshot = vec![small(1000), Record::Message(message(1001, 50)), small(1002)];
    let (since, snap_bytes) = {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        for i in 0..100 {
            log.append(&small(i));
            log.commit().unwrap();
        }
        assert!(segments(dir.path()).len() > 2);
        let before = log.bytes_since_snapshot();
        assert!(before > 0);
        assert_eq!(log.snapshot_bytes(), 0);
        log.append(&small(100)); // pending: committed before the snapshot
        let stats = log.compact(&snapshot).unwrap();
        assert_eq!(stats.records, 3);
        assert!(stats.segments_removed > 2);
        assert_eq!(log.bytes_since_snapshot(), 0);
        assert!(log.snapshot_bytes() > 0);
        assert_eq!(segments(dir.path()).len(), 1);
        assert_eq!(log.segment_count(), 1);

        log.append(&small(2000));
        log.commit().unwrap();
        (log.bytes_since_snapshot(), log.snapshot_bytes())
    };
    let (log, recovered) = Log::open(dir.path(), options.clone()).unwrap();
    let mut expected = snapshot.clone();
    expected.push(small(2000));
    assert_eq!(recovered.records, expected);
    assert_eq!(log.bytes_since_snapshot(), since);
    assert_eq!(log.snapshot_bytes(), snap_bytes);
    drop(log);

    // Compacting again, to an empty state, works the same.
    let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
    log.compact(Vec::<Record>::new()).unwrap();
    drop(log);
    let (_, recovered) = Log::open(dir.path(), options).unwrap();
    assert!(recovered.records.is_empty());
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn a_partial_snapshot_written_by_hand_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let old = five();
    write_all(dir.path(), &old);
    let mut partial = header(1, 2);
    partial.extend_from_slice(&frame(&[0, 1])); // snapshot begins
    partial.extend_from_slice(&record_frame(&small(900)));
    partial.extend_from_slice(&record_frame(&small(901)));
    fs::write(segment_path(dir.path(), 2), &partial).unwrap();

    let (mut log, recovered) = open(dir.path());
    assert_eq!(recovered.records, old);
    assert_eq!(recovered.report.incomplete_snapshots_removed, 1);
    assert!(!segment_path(dir.path(), 2).exists());
    log.append(&small(6));
    log.commit().unwrap();
    drop(log);
    assert_eq!(open(dir.path()).1.records, [old, vec![small(6)]].concat());
}

/// Crash at every byte of the snapshot write: recovery sees either the old segments or the
/// complete snapshot, never a mix.
#[test]
fn compaction_is_crash_safe_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_size: 512,
        ..fast()
    };
    let old: Vec<Record> = (0..40).map(small).collect();
    {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        for r in &old {
            log.append(r);
            log.commit().unwrap();
        }
    }
    let old_files: Vec<(std::path::PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let snapshot = vec![small(500), Record::Message(message(501, 40)), small(502)];
    {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        log.compact(&snapshot).unwrap();
    }
    let snap_path = segments(dir.path()).pop().unwrap();
    let snap = fs::read(&snap_path).unwrap();

    for cut in 0..=snap.len() {
        for p in segments(dir.path()) {
            fs::remove_file(p).unwrap();
        }
        for (p, data) in &old_files {
            fs::write(p, data).unwrap();
        }
        fs::write(&snap_path, &snap[..cut]).unwrap();
        let (_, recovered) = Log::open(dir.path(), options.clone()).unwrap();
        if cut == snap.len() {
            assert_eq!(recovered.records, snapshot);
            assert_eq!(recovered.report.obsolete_segments_removed, old_files.len());
            assert_eq!(segments(dir.path()), vec![snap_path.clone()]);
        } else {
            assert_eq!(recovered.records, old, "cut at {cut}");
            // Removed, or (torn inside the marker frame) left as an empty segment.
            assert!(
                !snap_path.exists() || fs::metadata(&snap_path).unwrap().len() == 20,
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn crash_while_removing_old_segments_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_size: 256,
        ..fast()
    };
    {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        for i in 0..40 {
            log.append(&small(i));
            log.commit().unwrap();
        }
    }
    let old_files: Vec<(std::path::PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    {
        let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
        log.compact([small(7)]).unwrap();
    }
    // Only some of the old segments were removed before the crash.
    for (p, data) in old_files.iter().skip(2) {
        fs::write(p, data).unwrap();
    }
    let (_, recovered) = Log::open(dir.path(), options).unwrap();
    assert_eq!(recovered.records, vec![small(7)]);
    assert_eq!(
        recovered.report.obsolete_segments_removed,
        old_files.len() - 2
    );
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn interval_durability_defers_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        durability: Durability::Interval(Duration::from_secs(3600)),
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.next_sync_due(), None);
    log.append(&small(1));
    let stats = log.commit().unwrap();
    assert!(!stats.synced);
    assert!(log.next_sync_due().is_some());
    assert!(!log.sync_if_due().unwrap());
    log.sync().unwrap();
    assert_eq!(log.next_sync_due(), None);
    drop(log);
    // Written at commit: a process crash (the kernel keeps the pages) loses nothing.
    assert_eq!(open(dir.path()).1.records, vec![small(1)]);

    let options = LogOptions {
        durability: Durability::Interval(Duration::ZERO),
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open(dir.path(), options).unwrap();
    log.append(&small(2));
    assert!(log.commit().unwrap().synced);
}

#[test]
fn the_durable_trait_drives_a_log() {
    fn drive(store: &mut dyn tern_store::Durable) {
        store.append(&small(1));
        store.append(&small(2));
        assert_eq!(store.commit().unwrap().records, 2);
        assert!(store.bytes_since_snapshot() > 0);
        store.compact(&mut vec![small(3)].into_iter()).unwrap();
        assert_eq!(store.bytes_since_snapshot(), 0);
        assert!(store.snapshot_bytes() > 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    drive(&mut log);
    drop(log);
    assert_eq!(open(dir.path()).1.records, vec![small(3)]);
}

#[test]
fn truncated_files_of_every_length_never_panic() {
    // Every prefix of a two-segment log with a snapshot, as the last segment.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = open(dir.path());
        log.append(&small(1));
        log.commit().unwrap();
        log.compact([small(2), Record::Message(message(3, 20))])
            .unwrap();
        log.append(&small(4));
        log.commit().unwrap();
    }
    let seg = segments(dir.path())[0].clone();
    let pristine = fs::read(&seg).unwrap();
    for cut in 0..pristine.len() {
        fs::write(&seg, &pristine[..cut]).unwrap();
        let (log, _) = open(dir.path());
        drop(log);
        for p in segments(dir.path()) {
            fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn an_incomplete_snapshot_with_nothing_older_is_read_for_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = header(1, 1);
    data.extend_from_slice(&frame(&[0, 1]));
    data.extend_from_slice(&record_frame(&small(1)));
    data.extend_from_slice(&record_frame(&small(2)));
    fs::write(segment_path(dir.path(), 1), &data).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, vec![small(1), small(2)]);
    assert_eq!(recovered.report.incomplete_snapshots_removed, 0);
}

#[test]
fn a_corrupt_record_inside_a_snapshot_is_skipped_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = open(dir.path());
        log.append(&small(1));
        log.commit().unwrap();
        log.compact([small(10), small(11), small(12)]).unwrap();
        log.append(&small(13));
        log.commit().unwrap();
    }
    let seg = segments(dir.path())[0].clone();
    let (start, end) = frames(&seg)[2]; // marker, 10, 11, ...
    let mut data = fs::read(&seg).unwrap();
    data[end - 1] ^= 0x01;
    fs::write(&seg, &data).unwrap();
    assert!(start > 20);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records, vec![small(10), small(12), small(13)]);
    assert_eq!(recovered.report.corrupt_records_skipped, 1);
}

#[test]
fn a_snapshot_that_fails_midway_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let records = five();
    write_all(dir.path(), &records);
    let (mut log, _) = open(dir.path());
    let before = segments(dir.path());
    let snapshot = vec![
        Ok(small(10)),
        Ok(small(11)),
        Err(StoreError::Snapshot("a page could not be read".into())),
        Ok(small(12)),
    ];
    let err = log.try_compact(snapshot).unwrap_err();
    assert!(matches!(err, StoreError::Snapshot(_)), "{err}");
    assert_eq!(segments(dir.path()), before, "no partial snapshot is left");
    log.append(&small(6));
    log.commit().unwrap();
    drop(log);
    let (_, recovered) = open(dir.path());
    let mut expected = records;
    expected.push(small(6));
    assert_eq!(recovered.records, expected);
}
