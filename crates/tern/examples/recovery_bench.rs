//! Measures recovery: how long `tern serve` needs at start-up to rebuild N persistent sessions
//! and M queued messages from the durable log, and how much memory the broker holds while
//! building that state and after restoring it.
//!
//! `cargo run --release -p tern --example recovery_bench -- [SESSIONS] [MESSAGES] [QUEUE_MEMORY] [compact]`
//! (defaults 100000, 1000000 and the default budget, 64 MiB; `compact` replaces the log by a
//! snapshot before the restart, as the broker does once its log has grown). The state is made by the real
//! core in one child process (each session connects, subscribes at QoS 1 and leaves; a
//! publisher then sends M QoS 1 messages spread over them; queues page out to a spool as
//! `tern serve` does), its records written to a log in a temporary directory. A second child
//! process then times opening the log and `Broker::restore_from` (the log read twice, queues
//! paged out as they are rebuilt), as `tern serve` does at start-up. Each child reports its
//! peak resident memory (VmHWM).

use bytes::Bytes;
use std::time::Instant;
use tern_codec::{
    ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use tern_core::{Action, Broker, Config};
use tern_store::{Durability, Log, LogOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => return build(&args[1..]),
        Some("recover") => return recover(&args[1..]),
        _ => {}
    }
    let sessions = args.first().cloned().unwrap_or_else(|| "100000".into());
    let messages = args.get(1).cloned().unwrap_or_else(|| "1000000".into());
    let budget = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| Config::default().queue_memory.to_string());
    let compact = args.get(3).cloned().unwrap_or_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let me = std::env::current_exe().expect("own path");
    for phase in ["build", "recover"] {
        let status = std::process::Command::new(&me)
            .args([
                phase,
                &dir.path().display().to_string(),
                &sessions,
                &messages,
                &budget,
                &compact,
            ])
            .status()
            .expect("run a phase");
        assert!(status.success(), "{phase} failed");
    }
}

fn config(budget: &str) -> Config {
    Config {
        persistence: true,
        max_queued_messages: usize::MAX,
        queue_memory: budget.parse().expect("QUEUE_MEMORY in bytes"),
        ..Config::default()
    }
}

/// Peak and current resident memory of this process, in MiB.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0.0, |kb| kb as f64 / 1024.0)
    };
    format!(
        "peak RSS {:.0} MiB, RSS now {:.0} MiB",
        field("VmHWM:"),
        field("VmRSS:")
    )
}

fn build(args: &[String]) {
    let dir = std::path::Path::new(&args[0]);
    let sessions: u64 = args[1].parse().unwrap();
    let messages: u64 = args[2].parse().unwrap();
    let config = config(&args[3]);

    let build = Instant::now();
    let (mut log, _) = Log::open(
        dir,
        LogOptions {
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let mut broker = Broker::new(config.clone());
    broker.set_spool(tern_store::Spool::open(dir.join("spool")).unwrap());
    let now = Instant::now();
    broker.set_wall_clock(now, 1_800_000_000_000);
    let mut out = Vec::new();
    let mut written = 0u64;
    let mut flush = |out: &mut Vec<Action>, log: &mut Log, force: bool| {
        if out.len() < 100_000 && !force {
            return;
        }
        for a in out.drain(..) {
            if let Action::Persist(r) = a {
                log.append(&r);
                written += 1;
            }
        }
        log.commit().unwrap();
    };
    for i in 0..sessions {
        let conn = i + 1;
        let c = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: false,
            keep_alive: 60,
            client_id: ByteStr::from(format!("device-{i}")),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        };
        broker.handle_packet(conn, Packet::Connect(Box::new(c)), now, &mut out);
        let sub = Subscribe {
            packet_id: 1,
            filters: vec![(
                ByteStr::from(format!("devices/{i}/cmd")),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            properties: Properties::default(),
        };
        broker.handle_packet(conn, Packet::Subscribe(sub), now, &mut out);
        broker.connection_lost(conn, now, &mut out);
        flush(&mut out, &mut log, false);
    }
    let publisher = sessions + 1;
    let c = Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteStr::from("publisher"),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    broker.handle_packet(publisher, Packet::Connect(Box::new(c)), now, &mut out);
    let payload = Bytes::from(vec![b'x'; 64]);
    for m in 0..messages {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from(format!("devices/{}/cmd", m % sessions.max(1))),
            packet_id: Some((m % 65535 + 1) as u16),
            payload: payload.clone(),
            ..Publish::default()
        };
        broker.handle_packet(publisher, Packet::Publish(p), now, &mut out);
        flush(&mut out, &mut log, false);
    }
    flush(&mut out, &mut log, true);
    if args.get(4).is_some_and(|a| a == "compact") {
        // What the broker does once the log has grown enough: the live state as one snapshot,
        // each session's deliveries together.
        let stats = log.try_compact(broker.snapshot(now)).unwrap();
        println!(
            "compacted to a snapshot of {} records, {:.1} MB",
            stats.records,
            stats.bytes as f64 / 1e6
        );
    }
    drop(log);
    let paged = broker.pager_stats();
    let size: u64 = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "built {sessions} sessions and {messages} queued messages: {written} records, {:.1} MB of log, in {:.1} s; \
         queues in memory {:.1} MiB (budget {:.0} MiB), {} deliveries paged out; {}",
        size as f64 / 1e6,
        build.elapsed().as_secs_f64(),
        paged.memory as f64 / 1048576.0,
        paged.budget as f64 / 1048576.0,
        paged.deliveries_paged_out,
        memory()
    );
}

fn recover(args: &[String]) {
    let dir = std::path::Path::new(&args[0]);
    let sessions: u64 = args[1].parse().unwrap();
    let messages: u64 = args[2].parse().unwrap();
    let config = config(&args[3]);
    let t = Instant::now();
    let (log, report) = Log::open_streaming(dir, LogOptions::default()).unwrap();
    let opened = t.elapsed();
    let mut restored = Broker::new(config);
    restored.set_spool(tern_store::Spool::open(dir.join("spool")).unwrap());
    let now = Instant::now();
    restored.set_wall_clock(now, 1_800_000_000_000);
    let report2 = restored
        .restore_from(|sink| log.replay(sink).map(drop), now)
        .unwrap();
    tern::release_free_memory();
    let total = t.elapsed();
    println!(
        "recovery: open (scan, checksum, repair) {:.2} s, restore (two replays) {:.2} s, total {:.2} s; \
         {} records; sessions {}, queued {}, paged out {}, subscriptions {}; queues in memory {:.1} MiB; {}",
        opened.as_secs_f64(),
        (total - opened).as_secs_f64(),
        total.as_secs_f64(),
        report.records,
        report2.sessions,
        report2.queued,
        report2.paged,
        report2.subscriptions,
        restored.pager_stats().memory as f64 / 1048576.0,
        memory()
    );
    assert_eq!(report2.sessions as u64, sessions);
    assert_eq!(report2.queued as u64, messages);
}
