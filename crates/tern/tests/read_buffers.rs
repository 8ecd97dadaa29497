//! Small things kept for long must not keep the reads they arrived in. A client sends, in one
//! write each, a small packet the broker keeps (a retained message, a QoS 1 message for an
//! offline session or for a connected one that does not read, a subscription, a will) and
//! 60 KB of other traffic: the broker reads both
//! in one read of up to 64 KiB. Before the kept data was copied out of the read, each 16-byte
//! retained message held its whole read: 2,000 of them took 166 MiB. The broker runs as a
//! child process (`tern serve`) and its resident memory (VmRSS) is read between the phases.

mod child;

use child::{ChildBroker, mqtt_connect};
use std::time::Duration;
use tern_client::{Connection, builder};
use tern_codec::{Ack, ByteStr, Packet, ProtocolVersion, QoS, Will};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
/// Kept things per phase.
const KEPT: usize = 1_000;
/// Connections with a will (fewer: each also costs its own few KiB, and a descriptor here).
const WILLS: usize = 500;
/// Bytes of other traffic sent with each (one PUBLISH nobody subscribes to).
const OTHER: usize = 60_000;
/// Most the broker's resident memory may grow in one phase. Holding the reads it would grow
/// by about 64 KiB per item (62 MiB for 1,000, 31 MiB for 500); what it keeps is a few hundred
/// bytes per item (a few KiB per connection).
const GROWTH_BOUND_KIB: u64 = 16 * 1024;
const WAIT: Duration = Duration::from_secs(30);

/// `kept` and `other` in one buffer, for one write.
fn with_other(kept: &Packet, other: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    tern_codec::encode_packet(kept, V3, &mut out).unwrap();
    out.extend_from_slice(other);
    out.to_vec()
}

async fn recv(c: &mut Connection) -> Packet {
    c.recv_timeout(WAIT)
        .await
        .expect("a packet from the broker")
}

/// Receives packets until `n` of them satisfy `count`.
async fn recv_counting(c: &mut Connection, n: usize, count: impl Fn(&Packet) -> bool) {
    let mut seen = 0;
    while seen < n {
        seen += usize::from(count(&recv(c).await));
    }
}

/// Sends PINGREQ and waits for PINGRESP: the broker has handled everything sent before.
async fn sync(c: &mut Connection) {
    c.send(&Packet::PingReq).await.unwrap();
    recv_counting(c, 1, |p| matches!(p, Packet::PingResp)).await;
}

/// Publishes `KEPT` QoS 1 messages of 16 bytes `fill` to `{prefix}/{i}`, each in one write
/// with `other`, and waits until every one is acknowledged and handled.
async fn publish_qos1_with_other(p: &mut Connection, prefix: &str, fill: u8, other: &[u8]) {
    for i in 0..KEPT {
        let id = u16::try_from(i + 1).unwrap();
        let kept = builder::publish(
            &format!("{prefix}/{i}"),
            vec![fill; 16],
            QoS::AtLeastOnce,
            false,
            Some(id),
        );
        p.send_raw(&with_other(&kept, other)).await.unwrap();
    }
    recv_counting(p, KEPT, |pk| matches!(pk, Packet::PubAck(_))).await;
    sync(p).await;
}

async fn connect(b: &ChildBroker, id: &str, clean: bool) -> Connection {
    let (c, code) = mqtt_connect(b.addr, V3, id, clean, 600).await;
    assert_eq!(code, 0, "{id}: CONNACK refused");
    c
}

fn check_growth(b: &mut ChildBroker, before: u64, count: usize, what: &str) -> u64 {
    let after = b.rss_kib();
    let grown = after.saturating_sub(before);
    eprintln!("read_buffers: VmRSS {before} -> {after} KiB after {count} {what}");
    assert!(
        grown < GROWTH_BOUND_KIB,
        "{count} {what}, each sent with {OTHER} bytes of other traffic, grew the broker by {grown} KiB \
         (bound {GROWTH_BOUND_KIB} KiB): it keeps the reads they came in"
    );
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_packets_do_not_keep_the_reads_they_came_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("read_buffers.toml");
    std::fs::write(
        &config,
        "sys_interval_secs = 0\ndurability = \"none\"\n\n[limits]\nmax_connection_rate_per_ip = 0\n",
    )
    .unwrap();
    let mut b = ChildBroker::start(
        &config,
        &dir.path().join("data"),
        &["--admin-listen", "off"],
        "TERN_TEST_VERBOSE",
    );
    let mut other = bytes::BytesMut::new();
    let junk = builder::publish(
        "other/traffic",
        vec![b'o'; OTHER],
        QoS::AtMostOnce,
        false,
        None,
    );
    tern_codec::encode_packet(&junk, V3, &mut other).unwrap();

    // A persistent session subscribed at QoS 1 that goes away: what is published to it queues.
    let mut s = connect(&b, "offline", false).await;
    s.send(&builder::subscribe(1, &[("queued/#", QoS::AtLeastOnce)]))
        .await
        .unwrap();
    recv_counting(&mut s, 1, |p| matches!(p, Packet::SubAck(_))).await;
    s.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
    drop(s);

    // A connected subscriber that does not read: past its in-flight window (64), what is
    // published to it queues while it stays connected.
    let mut slow = connect(&b, "slow-reader", true).await;
    slow.send(&builder::subscribe(1, &[("slow/#", QoS::AtLeastOnce)]))
        .await
        .unwrap();
    recv_counting(&mut slow, 1, |p| matches!(p, Packet::SubAck(_))).await;

    let mut p = connect(&b, "publisher", true).await;
    sync(&mut p).await;
    let mut rss = b.rss_kib();

    // [MQTT-3.3.1-5] Retained messages, each on a topic of its own.
    for i in 0..KEPT {
        let kept = builder::publish(
            &format!("retained/{i}"),
            vec![b'r'; 16],
            QoS::AtMostOnce,
            true,
            None,
        );
        p.send_raw(&with_other(&kept, &other)).await.unwrap();
    }
    sync(&mut p).await;
    rss = check_growth(&mut b, rss, KEPT, "retained messages");

    // QoS 1 messages queued for the offline session.
    publish_qos1_with_other(&mut p, "queued", b'q', &other).await;
    rss = check_growth(&mut b, rss, KEPT, "messages queued for an offline session");

    // QoS 1 messages queued for the connected subscriber that does not read. Before its queue
    // counted the reads it keeps, 3,000 of them held 251 MiB.
    publish_qos1_with_other(&mut p, "slow", b's', &other).await;
    rss = check_growth(
        &mut b,
        rss,
        KEPT,
        "messages queued for a connected subscriber that does not read",
    );

    // Subscriptions, one per SUBSCRIBE.
    for i in 0..KEPT {
        let id = u16::try_from(i + 1).unwrap();
        let kept = builder::subscribe(id, &[(&format!("subscribed/{i}"), QoS::AtMostOnce)]);
        p.send_raw(&with_other(&kept, &other)).await.unwrap();
    }
    recv_counting(&mut p, KEPT, |pk| matches!(pk, Packet::SubAck(_))).await;
    sync(&mut p).await;
    rss = check_growth(&mut b, rss, KEPT, "subscriptions");

    // Connections with a will, CONNECT and other traffic in the first write.
    let mut conns = Vec::new();
    for i in 0..WILLS {
        let mut connect = builder::connect(V3, &format!("with-will-{i}"), true, 600);
        connect.will = Some(Will {
            topic: ByteStr::from(format!("will/{i}")),
            payload: vec![b'w'; 16].into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        let mut c = Connection::connect(b.addr, V3).await.unwrap();
        c.send_raw(&with_other(&Packet::Connect(Box::new(connect)), &other))
            .await
            .unwrap();
        conns.push(c);
    }
    for c in &mut conns {
        recv_counting(c, 1, |p| matches!(p, Packet::ConnAck(a) if a.code == 0)).await;
        sync(c).await;
    }
    check_growth(&mut b, rss, WILLS, "connections with a will");

    // What was kept is all there: the queue, then the retained messages.
    let mut c = connect(&b, "offline", false).await;
    for _ in 0..KEPT {
        match recv(&mut c).await {
            Packet::Publish(m) => {
                assert_eq!(&m.payload[..], &[b'q'; 16][..]);
                // The in-flight window holds the rest back until this one is acknowledged.
                c.send(&Packet::PubAck(Ack::new(m.packet_id.unwrap())))
                    .await
                    .unwrap();
            }
            other => panic!("expected a queued PUBLISH, got {other:?}"),
        }
    }
    drop(c);
    // [MQTT-4.6.0-2] The slow reader gets all of its messages, in order, when it reads.
    for i in 0..KEPT {
        match recv(&mut slow).await {
            Packet::Publish(m) => {
                assert_eq!(m.topic.as_str(), format!("slow/{i}"));
                assert_eq!(&m.payload[..], &[b's'; 16][..]);
                slow.send(&Packet::PubAck(Ack::new(m.packet_id.unwrap())))
                    .await
                    .unwrap();
            }
            other => panic!("expected a PUBLISH for the slow reader, got {other:?}"),
        }
    }
    let mut c = connect(&b, "retained-reader", true).await;
    c.send(&builder::subscribe(1, &[("retained/#", QoS::AtMostOnce)]))
        .await
        .unwrap();
    recv_counting(&mut c, KEPT, |pk| match pk {
        Packet::Publish(m) => {
            assert!(m.retain && m.payload[..] == [b'r'; 16]);
            true
        }
        _ => false,
    })
    .await;
    drop(conns);
}
