//! Memory stays bounded while messages pile up for an offline client: `tern serve` (a child
//! process, so its resident memory is its own) with `limits.queue_memory` = 4 MiB takes
//! 64 MB of QoS 1 messages for an offline persistent session, pages them out to the spool,
//! survives a `kill -9` and a restart with them, and delivers every one, in order, when the
//! client comes back.

mod child;

use child::ChildBroker;
use std::net::SocketAddr;
use std::time::Duration;
use tern_client::{Connection, builder};
use tern_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};

const V: ProtocolVersion = ProtocolVersion::V5;
const WAIT: Duration = Duration::from_secs(30);
const MESSAGES: usize = 32_000;
const PAYLOAD: usize = 2000;
/// What the broker may hold resident with 64 MB queued: its own baseline (~15-25 MiB for a
/// debug build), the 4 MiB budget, buffers and allocator slack; far below the queued bytes.
const RSS_LIMIT_MIB: u64 = 48;

fn start(dir: &std::path::Path) -> ChildBroker {
    let config = dir.join("paging.toml");
    std::fs::write(
        &config,
        "[limits]\nqueue_memory = 4194304\nmax_queued_messages = 1000000\n",
    )
    .unwrap();
    ChildBroker::start(&config, &dir.join("data"), &[], "TERN_PAGING_VERBOSE")
}

async fn connect(addr: SocketAddr, id: &str, clean: bool) -> Connection {
    let mut c = Connection::connect(addr, V).await.unwrap();
    let mut connect = builder::connect(V, id, clean, 60);
    if !clean {
        connect.properties.session_expiry_interval = Some(3600);
    }
    c.send(&Packet::Connect(Box::new(connect))).await.unwrap();
    match c.recv_timeout(WAIT).await.unwrap() {
        Packet::ConnAck(a) => assert_eq!(a.code, 0, "{a:?}"),
        other => panic!("{other:?}"),
    }
    c
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:08}").into_bytes();
    p.resize(PAYLOAD, b'.');
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_page_out_and_memory_stays_bounded() {
    let t0 = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    let baseline = broker.rss_kib() / 1024;

    // The subscriber makes its session and leaves.
    let mut sub = connect(broker.addr, "pager", false).await;
    sub.send(&builder::subscribe(1, &[("paging/#", QoS::AtLeastOnce)]))
        .await
        .unwrap();
    assert!(matches!(
        sub.recv_timeout(WAIT).await.unwrap(),
        Packet::SubAck(_)
    ));
    drop(sub);

    // 96 MB of QoS 1 messages, 64 in flight; each PUBACK means it is on disk.
    let mut publisher = connect(broker.addr, "pager-pub", true).await;
    let mut acked = 0;
    let mut sent = 0;
    while acked < MESSAGES {
        while sent < MESSAGES && sent - acked < 64 {
            let p = Publish {
                qos: QoS::AtLeastOnce,
                topic: format!("paging/{}", sent % 10).as_str().into(),
                packet_id: Some((sent % 60_000 + 1) as u16),
                payload: payload(sent).into(),
                ..Publish::default()
            };
            publisher.send(&Packet::Publish(p)).await.unwrap();
            sent += 1;
        }
        match publisher.recv_timeout(WAIT).await.unwrap() {
            Packet::PubAck(_) => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    let loaded = broker.rss_kib() / 1024;
    eprintln!(
        "broker RSS: {baseline} MiB at start, {loaded} MiB with {} MB queued ({:?})",
        MESSAGES * PAYLOAD / 1_000_000,
        t0.elapsed()
    );
    assert!(
        loaded < RSS_LIMIT_MIB,
        "broker RSS {loaded} MiB with {} MB queued (limit {RSS_LIMIT_MIB} MiB)",
        MESSAGES * PAYLOAD / 1_000_000
    );
    drop(publisher);

    // kill -9 and restart: the queue is rebuilt from the log, paged out as it goes.
    broker.kill();
    let mut broker = start(dir.path());
    let restored = broker.rss_kib() / 1024;
    eprintln!(
        "broker RSS after restoring them: {restored} MiB ({:?})",
        t0.elapsed()
    );
    assert!(
        restored < RSS_LIMIT_MIB,
        "broker RSS {restored} MiB after restoring the queue (limit {RSS_LIMIT_MIB} MiB)"
    );

    // Everything comes back, in order, once.
    let mut sub = connect(broker.addr, "pager", false).await;
    let mut next = 0;
    while next < MESSAGES {
        match sub.recv_timeout(WAIT).await.unwrap() {
            Packet::Publish(p) => {
                let n: usize = std::str::from_utf8(&p.payload[..8])
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(n, next, "in order, no duplicate");
                assert_eq!(p.payload.len(), PAYLOAD);
                next += 1;
                sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                    .await
                    .unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    let drained = broker.rss_kib() / 1024;
    eprintln!(
        "broker RSS after delivering them: {drained} MiB ({:?})",
        t0.elapsed()
    );
    assert!(sub.recv_timeout(Duration::from_millis(300)).await.is_err());
    broker.kill();
}
