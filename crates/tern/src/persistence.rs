//! The durable store's thread: it appends the records of each driver turn to the log and
//! commits them with one write and one `fdatasync` (group commit: records of every turn that
//! arrived while the previous sync ran share the next one), then tells the driver which turn is
//! durable so the turn's held packets can go out.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tern_store::{Durability, Log, LogOptions, Record, RecoveryReport};
use tokio::sync::mpsc;

/// A request to the store thread.
pub(crate) enum StoreCmd {
    /// Records of one driver turn.
    Batch { ticket: u64, records: Vec<Record> },
    /// Replace the log by this snapshot of the live state (its queue pages are read back from
    /// the spool here, on the store thread).
    Compact { snapshot: tern_core::Snapshot },
}

/// What the store thread reports after each commit.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// Every turn up to this one is durable.
    pub(crate) ticket: u64,
    pub(crate) records: usize,
    pub(crate) bytes_since_snapshot: u64,
    pub(crate) snapshot_bytes: u64,
    pub(crate) latency: Duration,
    /// A compaction was abandoned since the last report (the driver may try again).
    pub(crate) compaction_abandoned: bool,
}

/// The driver's side of the store thread.
pub(crate) struct StoreHandle {
    tx: std_mpsc::Sender<StoreCmd>,
    pub(crate) committed: mpsc::UnboundedReceiver<Result<Committed, String>>,
}

impl StoreHandle {
    pub(crate) fn send(&self, cmd: StoreCmd) -> bool {
        self.tx.send(cmd).is_ok()
    }
}

/// Opens the log in `dir` (repairing a torn tail); its records are read with `Log::replay`
/// before [`start`].
pub(crate) fn open(dir: &Path, durability: Durability) -> anyhow::Result<(Log, RecoveryReport)> {
    let options = LogOptions {
        durability,
        ..LogOptions::default()
    };
    Log::open_streaming(dir, options)
        .map_err(|e| anyhow::anyhow!("cannot open the data directory {}: {e}", dir.display()))
}

/// Starts the store thread on an opened log.
pub(crate) fn start(log: Log) -> anyhow::Result<StoreHandle> {
    let (tx, rx) = std_mpsc::channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("tern-store".into())
        .spawn(move || run(log, rx, done_tx))
        .map_err(|e| anyhow::anyhow!("cannot start the store thread: {e}"))?;
    Ok(StoreHandle {
        tx,
        committed: done_rx,
    })
}

fn run(
    mut log: Log,
    rx: std_mpsc::Receiver<StoreCmd>,
    done: mpsc::UnboundedSender<Result<Committed, String>>,
) {
    loop {
        // With interval durability, wake up for the deferred sync even when idle.
        let first = match log.next_sync_due() {
            Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(cmd) => cmd,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = log.sync_if_due() {
                        let _ = done.send(Err(e.to_string()));
                        return;
                    }
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(cmd) => cmd,
                Err(_) => break,
            },
        };
        let started = Instant::now();
        let mut compaction_abandoned = false;
        let mut ticket = None;
        let mut records = 0;
        let mut next = Some(first);
        // Everything queued while the last sync ran goes into this commit.
        while let Some(cmd) = next {
            match cmd {
                StoreCmd::Batch {
                    ticket: t,
                    records: batch,
                } => {
                    records += batch.len();
                    for r in &batch {
                        log.append(r);
                    }
                    ticket = Some(t);
                }
                StoreCmd::Compact { snapshot } => {
                    match log.try_compact(snapshot) {
                        Ok(stats) => tracing::info!(
                            records = stats.records,
                            bytes = stats.bytes,
                            removed_segments = stats.segments_removed,
                            "store compacted"
                        ),
                        // A queue page that cannot be read: the log was left as it was and
                        // still holds everything; the next compaction tries again.
                        Err(e @ tern_store::StoreError::Snapshot(_)) => {
                            tracing::error!(error = %e, "store compaction abandoned");
                            compaction_abandoned = true;
                        }
                        Err(e) => {
                            let _ = done.send(Err(e.to_string()));
                            return;
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let Some(ticket) = ticket else { continue };
        match log.commit() {
            Ok(_) => {
                let _ = done.send(Ok(Committed {
                    ticket,
                    records,
                    bytes_since_snapshot: log.bytes_since_snapshot(),
                    snapshot_bytes: log.snapshot_bytes(),
                    latency: started.elapsed(),
                    compaction_abandoned,
                }));
            }
            Err(e) => {
                let _ = done.send(Err(e.to_string()));
                return;
            }
        }
    }
    // The driver is gone: make whatever was committed durable before the process ends
    // (interval durability may have a sync pending).
    if let Err(e) = log.commit().and_then(|_| log.sync()) {
        tracing::error!(error = %e, "final store commit failed");
    }
}
