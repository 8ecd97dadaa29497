//! The promise itself: a child process appends and commits, printing what each commit made
//! durable; it is killed with SIGKILL at an arbitrary moment; everything it reported is then
//! recovered, in order, and nothing that was never appended.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::small;
use tern_store::{Durability, Log, LogOptions};

const CHILD_ENV: &str = "TERN_STORE_KILL9_CHILD";

fn options(mode: &str) -> LogOptions {
    LogOptions {
        durability: match mode {
            "fsync" => Durability::Fsync,
            _ => Durability::Interval(Duration::from_millis(50)),
        },
        // Small segments, so that the kill also lands around rotations.
        segment_size: 16 << 10,
    }
}

/// Not a test on its own: the body of the child process.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').unwrap();
    let (mut log, recovered) = Log::open(dir, options(mode)).unwrap();
    let mut next = recovered.records.len() as u64;
    let mut out = std::io::stdout().lock();
    for batch in (1..).map(|i: u64| 1 + (i * 7) % 23) {
        for _ in 0..batch {
            log.append(&small(next));
            next += 1;
        }
        log.commit().unwrap();
        writeln!(out, "acked {}", next).unwrap();
        out.flush().unwrap();
    }
}

fn kill_and_recover(mode: &str, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = 0u64;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{mode}:{}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().unwrap();
                seen += 1;
                if seen == 50 + 37 * round {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert_eq!(seen, 50 + 37 * round, "the child did not run");

        let (log, recovered) = Log::open(dir.path(), options(mode)).unwrap();
        let n = recovered.records.len() as u64;
        assert!(
            n >= acked,
            "{mode} round {round}: {n} records recovered, {acked} acknowledged"
        );
        let expected: Vec<_> = (0..n).map(small).collect();
        assert_eq!(recovered.records, expected, "{mode} round {round}");
        assert_eq!(recovered.report.corrupt_records_skipped, 0);
        drop(log);
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged_with_fsync() {
    kill_and_recover("fsync", 5);
}

#[test]
fn kill_9_loses_nothing_acknowledged_with_interval_sync() {
    // A process crash leaves the kernel's page cache intact: interval mode survives it too.
    kill_and_recover("interval", 5);
}
