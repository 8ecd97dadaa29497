//! Measures recovery: how long `tern serve` needs at start-up to rebuild N persistent sessions
//! and M queued messages from the durable log.
//!
//! `cargo run --release -p tern --example recovery_bench -- [SESSIONS] [MESSAGES]`
//! (defaults 100000 and 1000000). The state is made by the real core (each session connects,
//! subscribes at QoS 1 and leaves; a publisher then sends M QoS 1 messages spread over them),
//! its records written to a log in a temporary directory, and then timed: opening the log
//! (read + checksum + decode) and `Broker::restore`.

use bytes::Bytes;
use std::time::Instant;
use tern_codec::{
    ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use tern_core::{Action, Broker, Config};
use tern_store::{Durability, Log, LogOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let messages: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        persistence: true,
        max_queued_messages: usize::MAX,
        ..Config::default()
    };

    let build = Instant::now();
    let (mut log, _) = Log::open(
        dir.path(),
        LogOptions {
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let mut broker = Broker::new(config.clone());
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
    drop(log);
    drop(broker);
    let size: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "built {sessions} sessions and {messages} queued messages: {written} records, {:.1} MB on disk, in {:.1} s",
        size as f64 / 1e6,
        build.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let (_log, recovered) = Log::open(dir.path(), LogOptions::default()).unwrap();
    let read = t.elapsed();
    let mut restored = Broker::new(config);
    let now = Instant::now();
    restored.set_wall_clock(now, 1_800_000_000_000);
    let report = restored.restore(recovered.records, now);
    let total = t.elapsed();
    println!(
        "recovery: read+decode {:.2} s, restore {:.2} s, total {:.2} s; sessions {}, queued {}, subscriptions {}",
        read.as_secs_f64(),
        (total - read).as_secs_f64(),
        total.as_secs_f64(),
        report.sessions,
        report.queued,
        report.subscriptions
    );
    assert_eq!(report.sessions as u64, sessions);
    assert_eq!(report.queued as u64, messages);
}
