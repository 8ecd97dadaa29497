//! Random sequences of appends, commits, crashes, torn writes, reopens and compactions, checked
//! against a model: the log returns exactly what was committed (or the last snapshot and what
//! was committed after it), in order.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use tern_store::{Durability, Log, LogOptions, Record, crc32c, encode};

#[derive(Debug, Clone)]
enum Op {
    Append(Record),
    Commit,
    /// Drop the log (pending records are lost) and open it again.
    Reopen,
    /// Like `Reopen`, but the crash tore the write of the first pending record after `cut`
    /// bytes (1..frame length).
    TornWrite(usize),
    /// Compact to the last `keep` committed records.
    Compact(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => common::record().prop_map(Op::Append),
        4 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(Op::TornWrite),
        1 => (0usize..6).prop_map(Op::Compact),
    ]
}

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        segment_size: 300,
    }
}

fn frame_of(record: &Record) -> Vec<u8> {
    let mut payload = Vec::new();
    encode(record, &mut payload);
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&crc32c(&payload).to_le_bytes());
    f.extend_from_slice(&payload);
    f
}

fn tear(dir: &Path, record: &Record, at: usize) {
    let frame = frame_of(record);
    let cut = 1 + at % (frame.len() - 1);
    let last = common::segments(dir).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(last).unwrap();
    file.write_all(&frame[..cut]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = Log::open(dir.path(), options()).unwrap();
        prop_assert!(recovered.records.is_empty());
        let mut durable: Vec<Record> = Vec::new();
        let mut pending: Vec<Record> = Vec::new();

        for op in ops {
            match op {
                Op::Append(r) => {
                    log.append(&r);
                    pending.push(r);
                }
                Op::Commit => {
                    let stats = log.commit().unwrap();
                    prop_assert_eq!(stats.records, pending.len());
                    durable.append(&mut pending);
                }
                Op::Reopen | Op::TornWrite(_) => {
                    let sizes = (log.bytes_since_snapshot(), log.snapshot_bytes());
                    drop(log);
                    let torn = match (&op, pending.first()) {
                        (Op::TornWrite(at), Some(first)) => {
                            tear(dir.path(), first, *at);
                            true
                        }
                        _ => false,
                    };
                    pending.clear();
                    // Reopen streams the records (twice, as the broker's restore does); a torn
                    // write is read back whole.
                    let (reopened, report) = if torn {
                        let (log, recovered) = Log::open(dir.path(), options()).unwrap();
                        prop_assert_eq!(&recovered.records, &durable);
                        (log, recovered.report)
                    } else {
                        let (log, report) = Log::open_streaming(dir.path(), options()).unwrap();
                        for _ in 0..2 {
                            let mut replayed = Vec::new();
                            let n = log.replay(&mut |r| replayed.push(r)).unwrap();
                            prop_assert_eq!(n, durable.len());
                            prop_assert_eq!(&replayed, &durable);
                        }
                        (log, report)
                    };
                    log = reopened;
                    prop_assert_eq!(report.records, durable.len());
                    prop_assert_eq!(report.torn_tail_truncated, torn);
                    prop_assert_eq!(report.corrupt_records_skipped, 0);
                    prop_assert_eq!((log.bytes_since_snapshot(), log.snapshot_bytes()), sizes);
                }
                Op::Compact(keep) => {
                    durable.append(&mut pending);
                    let snapshot = durable[durable.len().saturating_sub(keep)..].to_vec();
                    log.compact(&snapshot).unwrap();
                    prop_assert_eq!(log.bytes_since_snapshot(), 0);
                    prop_assert_eq!(common::segments(dir.path()).len(), 1);
                    durable = snapshot;
                }
            }
        }
        drop(log);
        let (_, recovered) = Log::open(dir.path(), options()).unwrap();
        prop_assert_eq!(recovered.records, durable);
        // Nothing but segments and the lock file is ever left behind.
        for entry in fs::read_dir(dir.path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            prop_assert!(name == "LOCK" || (name.starts_with("seg-") && name.ends_with(".log")), "{}", name);
        }
    }
}
