//! Hostile clients against the real binary (`tern serve` as a child process): random bytes,
//! truncated packets, a remaining length of 268,435,455 with no body, a CONNECT then garbage,
//! the same SUBSCRIBE 20,000 times over a retained store (each one asks for every retained
//! message again), a million subscriptions from one client, a flood of connects from one address, and slow-loris
//! clients. After each attack a fresh client must still get PINGRESP and a publish/subscribe
//! round trip, and the broker's resident memory (VmRSS from /proc) must stay under
//! [`RSS_BOUND`] (the bound stated in docs/security.md).
//!
//! No assertion is about speed: the waits are upper bounds for things the broker must do
//! (close a connection after `packet_timeout_secs`), generous on a slow machine.

mod child;

use child::ChildBroker;
use std::net::SocketAddr;
use std::time::Duration;
use tern_client::{ClientError, Connection, builder};
use tern_codec::{Packet, ProtocolVersion, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const WAIT: Duration = Duration::from_secs(10);
/// The broker's resident memory must stay below this through every attack (docs/security.md).
const RSS_BOUND: u64 = 256 * 1024 * 1024;
/// Subscriptions one client tries to make.
const SUBSCRIPTIONS: usize = 1_000_000;
/// Filters per SUBSCRIBE packet (each ~15 bytes: well under the 1 MiB packet limit).
const FILTERS_PER_PACKET: usize = 1_000;
/// The default `limits.max_subscriptions_per_client`.
const MAX_SUBS: usize = 10_000;
/// Connections in the connect flood, and how many are open at once.
const FLOOD: usize = 2_000;
const FLOOD_PARALLEL: usize = 200;

/// The broker (killed when dropped) and its directory.
struct Broker {
    child: ChildBroker,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hostile.toml");
        std::fs::write(
            &config,
            "sys_interval_secs = 0\ndurability = \"none\"\n\n[limits]\n\
             connect_timeout_secs = 2\npacket_timeout_secs = 2\n\
             max_connection_rate_per_ip = 50\n",
        )
        .unwrap();
        let child = ChildBroker::start(
            &config,
            &dir.path().join("data"),
            &["--admin-listen", "off"],
            "TERN_HOSTILE_VERBOSE",
        );
        Broker {
            addr: child.addr,
            child,
            _dir: dir,
        }
    }

    /// Resident memory in bytes, from /proc/PID/status.
    fn rss(&mut self) -> u64 {
        self.child.rss_kib() * 1024
    }

    fn check_rss(&mut self, after: &str) {
        let rss = self.rss();
        eprintln!("hostile: VmRSS after {after}: {} KiB", rss / 1024);
        assert!(
            rss < RSS_BOUND,
            "VmRSS {} MiB after {after}: over the {} MiB bound",
            rss >> 20,
            RSS_BOUND >> 20
        );
    }

    /// A fresh client still gets PINGRESP and a QoS 1 publish/subscribe round trip.
    async fn healthy(&mut self, after: &str) {
        assert!(
            self.child.child.try_wait().unwrap().is_none(),
            "the broker exited after {after}"
        );
        let id = format!("fresh-{}", after.replace(' ', "-"));
        let mut c = connect(self.addr, V5, &id).await;
        c.send(&Packet::PingReq).await.unwrap();
        match c.recv_timeout(WAIT).await {
            Ok(Packet::PingResp) => {}
            other => panic!("after {after}: expected PINGRESP, got {other:?}"),
        }
        let topic = format!("fresh/{id}");
        c.send(&builder::subscribe(1, &[(&topic, QoS::AtLeastOnce)]))
            .await
            .unwrap();
        match c.recv_timeout(WAIT).await {
            Ok(Packet::SubAck(s)) => assert_eq!(s.reasons, vec![1], "after {after}"),
            other => panic!("after {after}: expected SUBACK, got {other:?}"),
        }
        c.send(&builder::publish(
            &topic,
            &b"still serving"[..],
            QoS::AtLeastOnce,
            false,
            Some(2),
        ))
        .await
        .unwrap();
        let (mut acked, mut got) = (false, false);
        while !(acked && got) {
            match c.recv_timeout(WAIT).await {
                Ok(Packet::PubAck(_)) => acked = true,
                Ok(Packet::Publish(p)) => {
                    assert_eq!(&p.payload[..], b"still serving");
                    if let Some(id) = p.packet_id {
                        c.send(&Packet::PubAck(tern_codec::Ack::new(id)))
                            .await
                            .unwrap();
                    }
                    got = true;
                }
                other => panic!("after {after}: expected PUBACK / PUBLISH, got {other:?}"),
            }
        }
        c.send(&Packet::Disconnect(Default::default()))
            .await
            .unwrap();
        eprintln!("hostile: broker healthy after {after}");
    }
}

/// Connects and waits for a successful CONNACK, retrying while the per-address connection rate
/// limit closes the connection at accept.
async fn connect(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Connection {
    for _ in 0..100 {
        let Ok(mut c) = Connection::connect(addr, version).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let connect = builder::connect(version, id, true, 60);
        if c.send(&Packet::Connect(Box::new(connect))).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        match c.recv_timeout(WAIT).await {
            Ok(Packet::ConnAck(a)) => {
                assert_eq!(a.code, 0, "CONNACK refused: {a:?}");
                return c;
            }
            Ok(other) => panic!("expected CONNACK, got {other:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("could not connect {id}");
}

/// Waits for the broker to close `c` (a DISCONNECT before the close is fine).
async fn closed(c: &mut Connection, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left).await {
            Ok(Packet::Disconnect(_)) => {}
            Err(ClientError::Closed) => return,
            Err(ClientError::Io(_)) => return,
            // A malformed answer cannot come from the broker; anything else is a failure.
            other => panic!("{what}: expected the connection closed, got {other:?}"),
        }
    }
}

/// xorshift64*: seeded, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    tern_codec::encode_packet(p, v, &mut out).unwrap();
    out.to_vec()
}

async fn random_bytes(b: &Broker, rng: &mut Rng) {
    for i in 0..40 {
        let Ok(mut s) = tokio::net::TcpStream::connect(b.addr).await else {
            continue;
        };
        // Half the time start with a plausible CONNECT header byte, so the garbage reaches
        // deeper into the decoder.
        let len = 1 + (rng.next() % 4096) as usize;
        let mut data = rng.bytes(len);
        if i % 2 == 0 {
            data[0] = 0x10;
        }
        let _ = s.write_all(&data).await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
    }
}

async fn truncated(b: &Broker) {
    let packet = encode(
        &Packet::Connect(Box::new(builder::connect(V5, "truncated", true, 30))),
        V5,
    );
    for cut in 1..packet.len() {
        let Ok(mut s) = tokio::net::TcpStream::connect(b.addr).await else {
            continue;
        };
        let _ = s.write_all(&packet[..cut]).await;
        // Close with the packet unfinished.
        let _ = s.shutdown().await;
        drop(s);
        if cut % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A truncated PUBLISH after a good CONNECT, then the client vanishes.
    let mut c = connect(b.addr, V3, "truncated-pub").await;
    let publish = encode(
        &builder::publish("t/x", vec![7u8; 100], QoS::AtLeastOnce, false, Some(1)),
        V3,
    );
    c.send_raw(&publish[..publish.len() / 2]).await.unwrap();
    c.drop_connection().await;
}

async fn huge_remaining_length(b: &Broker) {
    // 268,435,455: the largest remaining length MQTT can express, with no body.
    let huge = [0xFF, 0xFF, 0xFF, 0x7F];
    let mut c = Connection::connect(b.addr, V3).await.unwrap();
    let mut first = vec![0x10];
    first.extend_from_slice(&huge);
    c.send_raw(&first).await.unwrap();
    closed(&mut c, "CONNECT with remaining length 268435455").await;
    for (version, id) in [(V3, "huge-v3"), (V5, "huge-v5")] {
        let mut c = connect(b.addr, version, id).await;
        let mut publish = vec![0x30];
        publish.extend_from_slice(&huge);
        c.send_raw(&publish).await.unwrap();
        closed(&mut c, "PUBLISH with remaining length 268435455").await;
    }
}

async fn connect_then_garbage(b: &Broker, rng: &mut Rng) {
    for i in 0..10 {
        let mut c = connect(b.addr, if i % 2 == 0 { V3 } else { V5 }, "garbage").await;
        // A reserved packet type (0) or a PUBLISH with QoS 3 first, so the bytes are certainly
        // malformed, then noise.
        let mut data = vec![if i % 2 == 0 { 0x00 } else { 0x36 }];
        data.extend(rng.bytes(512));
        let _ = c.send_raw(&data).await;
        closed(&mut c, "garbage after CONNECT").await;
    }
}

async fn million_subscriptions(b: &Broker) {
    let c = connect(b.addr, V5, "subscriber-hog").await;
    let (stream, mut rbuf) = c.into_parts();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut next = 0usize;
        for pid in 1..=(SUBSCRIPTIONS / FILTERS_PER_PACKET) {
            let filters: Vec<String> = (next..next + FILTERS_PER_PACKET)
                .map(|i| format!("hog/{i}"))
                .collect();
            next += FILTERS_PER_PACKET;
            let refs: Vec<(&str, QoS)> = filters
                .iter()
                .map(|f| (f.as_str(), QoS::AtMostOnce))
                .collect();
            let packet = encode(&builder::subscribe(pid as u16, &refs), V5);
            wr.write_all(&packet).await.unwrap();
        }
        wr
    });
    let (mut granted, mut refused, mut acks) = (0usize, 0usize, 0usize);
    while acks < SUBSCRIPTIONS / FILTERS_PER_PACKET {
        match tern_codec::decode_packet(&mut rbuf, V5, u32::MAX).unwrap() {
            Some(Packet::SubAck(s)) => {
                acks += 1;
                for r in s.reasons {
                    match r {
                        0 => granted += 1,
                        0x97 => refused += 1,
                        other => panic!("unexpected SUBACK reason {other:#x}"),
                    }
                }
            }
            Some(other) => panic!("expected SUBACK, got {other:?}"),
            None => {
                rbuf.reserve(64 * 1024);
                let n = tokio::time::timeout(Duration::from_secs(60), rd.read_buf(&mut rbuf))
                    .await
                    .expect("SUBACKs keep coming")
                    .unwrap();
                assert!(
                    n > 0,
                    "the broker closed the subscriber after {acks} SUBACKs"
                );
            }
        }
    }
    let _wr = writer.await.unwrap();
    assert_eq!(
        granted, MAX_SUBS,
        "granted up to max_subscriptions_per_client"
    );
    assert_eq!(
        refused,
        SUBSCRIPTIONS - MAX_SUBS,
        "the rest refused with 0x97"
    );
    eprintln!("hostile: {granted} subscriptions granted, {refused} refused with 0x97");

    // MQTT 3.1.1: refused filters get 0x80.
    let mut c = connect(b.addr, V3, "subscriber-hog-v3").await;
    let mut failures = 0;
    for pid in 1..=11u16 {
        let filters: Vec<String> = (0..FILTERS_PER_PACKET)
            .map(|i| format!("hog3/{pid}/{i}"))
            .collect();
        let refs: Vec<(&str, QoS)> = filters
            .iter()
            .map(|f| (f.as_str(), QoS::AtMostOnce))
            .collect();
        c.send(&builder::subscribe(pid, &refs)).await.unwrap();
        match c.recv_timeout(WAIT * 3).await {
            Ok(Packet::SubAck(s)) => failures += s.reasons.iter().filter(|&&r| r == 0x80).count(),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
    assert_eq!(failures, 11 * FILTERS_PER_PACKET - MAX_SUBS);
}

async fn connect_flood(b: &Broker) {
    let addr = b.addr;
    let connect = encode(
        &Packet::Connect(Box::new(builder::connect(V3, "", true, 30))),
        V3,
    );
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        if tasks.len() >= FLOOD_PARALLEL {
            match tasks.join_next().await.unwrap().unwrap() {
                true => accepted += 1,
                false => refused += 1,
            }
        }
        let connect = connect.clone();
        tasks.spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            if s.write_all(&connect).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 4];
            // CONNACK: 0x20 0x02 0x00 0x00.
            let ok = matches!(
                tokio::time::timeout(WAIT, s.read_exact(&mut buf)).await,
                Ok(Ok(_)) if buf == [0x20, 0x02, 0x00, 0x00]
            );
            let _ = i;
            ok
        });
    }
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            true => accepted += 1,
            false => refused += 1,
        }
    }
    eprintln!("hostile: connect flood: {accepted} accepted, {refused} closed at accept");
    assert_eq!(accepted + refused, FLOOD);
    assert!(accepted > 0, "some connections of the flood get through");
    assert!(
        refused > 0,
        "limits.max_connection_rate_per_ip closes most of a flood of {FLOOD} connections"
    );
    // Let the per-address token bucket refill before the next client.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

async fn slow_loris(b: &Broker) {
    // Before CONNECT: the start of a CONNECT and nothing more; closed by connect_timeout_secs.
    let mut c = Connection::connect(b.addr, V3).await.unwrap();
    c.send_raw(&[0x10, 0x20, 0x00]).await.unwrap();
    closed(&mut c, "a CONNECT never finished").await;
    // After CONNECT: the start of a PUBLISH and nothing more; closed by packet_timeout_secs
    // (2 s here) although the keep alive (60 s) is far away.
    for (version, id) in [(V3, "loris-v3"), (V5, "loris-v5")] {
        let mut c = connect(b.addr, version, id).await;
        c.send_raw(&[0x30, 0x20, 0x00, 0x03, b'a']).await.unwrap();
        closed(&mut c, "a PUBLISH never finished").await;
    }
}

async fn resubscribe_flood(b: &Broker) {
    // 1,000 retained messages of 1 KiB, half of them QoS 1: 1 MB for every SUBSCRIBE to
    // `flood/#`, which [MQTT-3.8.4-3] sends again each time the same subscription is replaced.
    let mut p = connect(b.addr, V3, "retainer").await;
    let payload = vec![b'r'; 1024];
    for i in 0..1000u16 {
        let (qos, id) = if i % 2 == 0 {
            (QoS::AtMostOnce, None)
        } else {
            (QoS::AtLeastOnce, Some(i))
        };
        let topic = format!("flood/{i}");
        p.send(&builder::publish(&topic, payload.clone(), qos, true, id))
            .await
            .unwrap();
    }
    for _ in 0..500 {
        match p.recv_timeout(WAIT).await {
            Ok(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // 20,000 of the same SUBSCRIBE (QoS 1) and a PINGREQ, written by one task while another
    // reads (the broker may stop reading until its answers are taken): 20 GB of deliveries if
    // each SUBSCRIBE were sent its burst (10 million QoS 1 ones queued).
    let stream = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let connect = Packet::Connect(Box::new(builder::connect(V3, "resubscriber", true, 60)));
    let one = encode(&builder::subscribe(1, &[("flood/#", QoS::AtLeastOnce)]), V3);
    let mut flood = encode(&connect, V3);
    flood.extend(one.iter().copied().cycle().take(one.len() * 20_000));
    flood.extend(encode(&Packet::PingReq, V3));
    let writer = tokio::spawn(async move {
        wr.write_all(&flood).await.unwrap();
        wr
    });
    // The PINGRESP comes after everything the SUBSCRIBEs produced: by then each was handled.
    let (mut subacks, mut publishes) = (0, 0);
    let mut buf = bytes::BytesMut::new();
    'read: loop {
        while let Some(packet) = tern_codec::decode_packet(&mut buf, V3, u32::MAX).unwrap() {
            match packet {
                Packet::ConnAck(a) => assert_eq!(a.code, 0),
                Packet::SubAck(_) => subacks += 1,
                Packet::Publish(_) => publishes += 1,
                Packet::PingResp => break 'read,
                other => panic!("expected SUBACK / PUBLISH / PINGRESP, got {other:?}"),
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(60), rd.read_buf(&mut buf))
            .await
            .expect("the broker answers")
            .unwrap();
        assert!(n > 0, "the broker closed the connection");
    }
    eprintln!("hostile: resubscribe flood: {subacks} SUBACKs, {publishes} retained PUBLISHes");
    assert_eq!(subacks, 20_000, "every SUBSCRIBE is answered");
    // The first burst: 500 at QoS 0, and 64 of the 500 at QoS 1 (the in-flight window).
    assert!(publishes >= 564, "the first SUBSCRIBE gets its burst whole");
    assert!(
        publishes < 20_000 * 1000 / 100,
        "{publishes} retained PUBLISHes: most of the repeated bursts must be refused"
    );
    writer.await.unwrap();
    p.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_do_not_take_the_broker_down() {
    let mut b = Broker::start();
    let mut rng = Rng(0x7E2E_5EED_0BAD_F00D);
    b.healthy("start").await;
    let start_rss = b.rss();
    eprintln!("hostile: VmRSS at start: {} KiB", start_rss / 1024);

    random_bytes(&b, &mut rng).await;
    b.healthy("random bytes").await;

    truncated(&b).await;
    b.healthy("truncated packets").await;

    huge_remaining_length(&b).await;
    b.healthy("huge remaining length").await;

    connect_then_garbage(&b, &mut rng).await;
    b.healthy("connect then garbage").await;

    slow_loris(&b).await;
    b.healthy("slow loris").await;

    // The peak of this attack alone, not what is left after it (the deliveries are freed once
    // the client has read them): VmHWM, reset first (writing 5 to clear_refs).
    std::fs::write(format!("/proc/{}/clear_refs", b.child.child.id()), "5").unwrap();
    resubscribe_flood(&b).await;
    let peak = b.child.status_field("VmHWM") * 1024;
    eprintln!(
        "hostile: VmHWM after a resubscribe flood: {} KiB",
        peak / 1024
    );
    assert!(
        peak < RSS_BOUND,
        "peak VmRSS {} MiB in a resubscribe flood: over the {} MiB bound",
        peak >> 20,
        RSS_BOUND >> 20
    );
    b.healthy("a resubscribe flood").await;

    million_subscriptions(&b).await;
    b.check_rss("a million subscriptions");
    b.healthy("a million subscriptions").await;

    connect_flood(&b).await;
    b.check_rss("a connect flood");
    b.healthy("a connect flood").await;
}
