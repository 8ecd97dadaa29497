//! Measures the log: durable commits per second by batch size, and recovery time.
//!
//! ```sh
//! cargo run -p tern-store --release --example log_bench [-- DIR [SECONDS]]
//! ```
//!
//! DIR (default: a temporary directory) must be on the disk you want to measure; each batch
//! size runs for SECONDS (default 3).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_store::{Durability, Log, LogOptions, Record, StoredMessage};

fn message(id: u64) -> Record {
    Record::Message(StoredMessage {
        id,
        topic: format!("bench/{}", id % 100),
        payload: Bytes::from(vec![0xA5; 256]),
        qos: 1,
        retain: false,
        properties: Bytes::new(),
        expires_at_ms: None,
    })
}

fn small(i: u64) -> Record {
    Record::Completed {
        client_id: format!("client-{}", i % 1000),
        seq: i,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn commits(dir: &Path, durability: Durability, batch: usize, run_for: Duration) {
    let _ = std::fs::remove_dir_all(dir);
    let options = LogOptions {
        durability,
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open(dir, options).unwrap();
    let mut id = 0u64;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < run_for {
        for _ in 0..batch {
            log.append(&message(id));
            id += 1;
        }
        let t = Instant::now();
        let stats = log.commit().unwrap();
        latencies.push(t.elapsed());
        records += stats.records as u64;
        bytes += stats.bytes;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "{:>8} batch {:>5}: {:>9.0} records/s {:>7.0} commits/s {:>6.1} MB/s  commit p50 {:>7.1?} p99 {:>7.1?} ({} B/record)",
        durability.to_string(),
        batch,
        records as f64 / secs,
        latencies.len() as f64 / secs,
        bytes as f64 / secs / 1e6,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        bytes / records.max(1),
    );
}

/// The ceiling: a plain 281-byte append and `fdatasync` per write, no log.
fn raw_fdatasync(dir: &Path, run_for: Duration) {
    use std::io::Write;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .unwrap();
    let record = [0x5Au8; 281];
    let mut n = 0u64;
    let started = Instant::now();
    while started.elapsed() < run_for {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    println!(
        "     raw append+fdatasync: {:>9.0} writes/s (the disk's ceiling for batch 1)",
        n as f64 / started.elapsed().as_secs_f64()
    );
}

fn recovery(dir: &Path, count: u64, make: fn(u64) -> Record, what: &str) {
    let _ = std::fs::remove_dir_all(dir);
    let options = LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    };
    {
        let (mut log, _) = Log::open(dir, options.clone()).unwrap();
        for i in 0..count {
            log.append(&make(i));
            if i % 1000 == 999 {
                log.commit().unwrap();
            }
        }
        log.commit().unwrap();
        log.sync().unwrap();
    }
    let mut best = Duration::MAX;
    let mut report = None;
    for _ in 0..3 {
        let started = Instant::now();
        let (log, recovered) = Log::open(dir, options.clone()).unwrap();
        best = best.min(started.elapsed());
        assert_eq!(recovered.records.len() as u64, count);
        drop(log);
        report = Some(recovered.report);
    }
    let report = report.unwrap();
    println!(
        "recovery of {count} {what}: {best:.2?} (best of 3, page cache warm), {} segments, {:.1} MB, {:.2} M records/s, {:.0} MB/s",
        report.segments,
        report.bytes as f64 / 1e6,
        count as f64 / best.as_secs_f64() / 1e6,
        report.bytes as f64 / best.as_secs_f64() / 1e6,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let temp = tempfile::tempdir().unwrap();
    let root = args
        .next()
        .map(Into::into)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let secs: f64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(3.0);
    let run_for = Duration::from_secs_f64(secs);
    let dir = root.join("tern-log-bench");
    println!(
        "log bench in {} ({secs} s per line; 256-byte payload messages)",
        dir.display()
    );

    raw_fdatasync(&dir, run_for);
    for batch in [1, 10, 100, 1000] {
        commits(&dir, Durability::Fsync, batch, run_for);
    }
    for batch in [1, 100] {
        commits(&dir, Durability::None, batch, run_for);
    }
    recovery(&dir, 1_000_000, small, "small records");
    recovery(&dir, 200_000, message, "256-byte messages");
    let _ = std::fs::remove_dir_all(&dir);
}
