//! Small things kept for long must not keep the reads they arrived in. A client sends, in one
//! write each, a small packet the broker keeps (a retained message, a QoS 1 message for an
//! offline session, a subscription, a will) and 60 KB of other traffic: the broker reads both
//! in one read of up to 64 KiB. Before the kept data was copied out of the read, each 16-byte
//! retained message held its whole read: 2,000 of them took 166 MiB. The broker runs as a
//! child process (`tern serve`) and its resident memory (VmRSS) is read between the phases.

mod child;

use child::ChildBroker;
use std::time::Duration;
use tern_codec::{Ack, ByteStr, Connect, Packet, ProtocolVersion, Publish, QoS, Will};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

fn encode(p: &Packet) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    tern_codec::encode_packet(p, V3, &mut out).unwrap();
    out.to_vec()
}

fn publish(topic: &str, payload: Vec<u8>, qos: QoS, retain: bool, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: ByteStr::from(topic),
        packet_id: id,
        properties: Default::default(),
        payload: payload.into(),
    })
}

fn connect_packet(id: &str, clean: bool, will: Option<Will>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: V3,
        clean_start: clean,
        keep_alive: 600,
        client_id: ByteStr::from(id),
        will,
        username: None,
        password: None,
        properties: Default::default(),
    }))
}

/// Reads packets until `done` says so; fails on a close or after [`WAIT`].
async fn read_until(
    s: &mut TcpStream,
    buf: &mut bytes::BytesMut,
    mut done: impl FnMut(&Packet) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(p) = tern_codec::decode_packet(buf, V3, u32::MAX).unwrap() {
            if done(&p) {
                return;
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read_buf(buf))
            .await
            .expect("timed out waiting for the broker")
            .unwrap();
        assert!(n > 0, "the broker closed the connection");
    }
}

/// A connection with CONNACK received.
async fn connect(
    b: &ChildBroker,
    id: &str,
    clean: bool,
    will: Option<Will>,
) -> (TcpStream, bytes::BytesMut) {
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&encode(&connect_packet(id, clean, will)))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    read_until(&mut s, &mut buf, |p| match p {
        Packet::ConnAck(a) => {
            assert_eq!(a.code, 0, "{id}: CONNACK refused");
            true
        }
        other => panic!("{id}: expected CONNACK, got {other:?}"),
    })
    .await;
    (s, buf)
}

/// Sends PINGREQ and waits for PINGRESP: the broker has handled everything sent before.
async fn sync(s: &mut TcpStream, buf: &mut bytes::BytesMut) {
    s.write_all(&encode(&Packet::PingReq)).await.unwrap();
    read_until(s, buf, |p| matches!(p, Packet::PingResp)).await;
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
    let other = encode(&publish(
        "other/traffic",
        vec![b'o'; OTHER],
        QoS::AtMostOnce,
        false,
        None,
    ));

    // A persistent session subscribed at QoS 1 that goes away: what is published to it queues.
    let (mut s, mut buf) = connect(&b, "offline", false, None).await;
    s.write_all(&encode(&Packet::Subscribe(tern_codec::Subscribe {
        packet_id: 1,
        filters: vec![(
            ByteStr::from("queued/#"),
            tern_codec::SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    })))
    .await
    .unwrap();
    read_until(&mut s, &mut buf, |p| matches!(p, Packet::SubAck(_))).await;
    s.write_all(&encode(&Packet::Disconnect(Default::default())))
        .await
        .unwrap();
    drop(s);

    let (mut p, mut pbuf) = connect(&b, "publisher", true, None).await;
    sync(&mut p, &mut pbuf).await;
    let mut rss = b.rss_kib();

    // [MQTT-3.3.1-5] Retained messages, each on a topic of its own.
    for i in 0..KEPT {
        let mut write = encode(&publish(
            &format!("retained/{i}"),
            vec![b'r'; 16],
            QoS::AtMostOnce,
            true,
            None,
        ));
        write.extend_from_slice(&other);
        p.write_all(&write).await.unwrap();
    }
    sync(&mut p, &mut pbuf).await;
    rss = check_growth(&mut b, rss, KEPT, "retained messages");

    // QoS 1 messages queued for the offline session.
    for i in 0..KEPT {
        let id = u16::try_from(i + 1).unwrap();
        let mut write = encode(&publish(
            &format!("queued/{i}"),
            vec![b'q'; 16],
            QoS::AtLeastOnce,
            false,
            Some(id),
        ));
        write.extend_from_slice(&other);
        p.write_all(&write).await.unwrap();
    }
    let mut acked = 0;
    read_until(&mut p, &mut pbuf, |pk| {
        if let Packet::PubAck(Ack { .. }) = pk {
            acked += 1;
        }
        acked == KEPT
    })
    .await;
    sync(&mut p, &mut pbuf).await;
    rss = check_growth(&mut b, rss, KEPT, "messages queued for an offline session");

    // Subscriptions, one per SUBSCRIBE.
    for i in 0..KEPT {
        let mut write = encode(&Packet::Subscribe(tern_codec::Subscribe {
            packet_id: u16::try_from(i + 1).unwrap(),
            filters: vec![(ByteStr::from(format!("subscribed/{i}")), Default::default())],
            properties: Default::default(),
        }));
        write.extend_from_slice(&other);
        p.write_all(&write).await.unwrap();
    }
    let mut subacks = 0;
    read_until(&mut p, &mut pbuf, |pk| {
        if matches!(pk, Packet::SubAck(_)) {
            subacks += 1;
        }
        subacks == KEPT
    })
    .await;
    sync(&mut p, &mut pbuf).await;
    rss = check_growth(&mut b, rss, KEPT, "subscriptions");

    // Connections with a will, CONNECT and other traffic in the first write.
    let mut conns = Vec::new();
    for i in 0..WILLS {
        let will = Will {
            topic: ByteStr::from(format!("will/{i}")),
            payload: vec![b'w'; 16].into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        };
        let mut write = encode(&connect_packet(&format!("with-will-{i}"), true, Some(will)));
        write.extend_from_slice(&other);
        let mut s = TcpStream::connect(b.addr).await.unwrap();
        s.write_all(&write).await.unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        let mut buf = bytes::BytesMut::new();
        read_until(
            s,
            &mut buf,
            |p| matches!(p, Packet::ConnAck(a) if a.code == 0),
        )
        .await;
        sync(s, &mut buf).await;
    }
    check_growth(&mut b, rss, WILLS, "connections with a will");

    // What was kept is all there: the retained messages and the queue.
    let (mut c, mut cbuf) = connect(&b, "offline", false, None).await;
    let mut queued = 0;
    while queued < KEPT {
        let mut id = None;
        read_until(&mut c, &mut cbuf, |pk| {
            if let Packet::Publish(m) = pk {
                assert_eq!(&m.payload[..], &[b'q'; 16][..]);
                id = m.packet_id;
                queued += 1;
            }
            true
        })
        .await;
        if let Some(id) = id {
            // The in-flight window holds the rest back until this one is acknowledged.
            c.write_all(&encode(&Packet::PubAck(Ack::new(id))))
                .await
                .unwrap();
        }
    }
    drop(c);
    let (mut c, mut cbuf) = connect(&b, "retained-reader", true, None).await;
    c.write_all(&encode(&Packet::Subscribe(tern_codec::Subscribe {
        packet_id: 1,
        filters: vec![(ByteStr::from("retained/#"), Default::default())],
        properties: Default::default(),
    })))
    .await
    .unwrap();
    let mut retained = 0;
    read_until(&mut c, &mut cbuf, |pk| {
        if let Packet::Publish(m) = pk {
            assert!(m.retain && m.payload[..] == [b'r'; 16]);
            retained += 1;
        }
        retained == KEPT
    })
    .await;
    drop(conns);
}
