//! What the broker keeps past the turn must not hold on to the read a PUBLISH was decoded from.
//! A decoded topic and payload are slices of the whole read (up to 64 KiB, shared with the
//! PUBLISHes around it): 16 bytes retained, queued for an offline session or kept as a topic
//! alias held all of it, so memory grew by the reads, not by the messages. Each test builds a
//! PUBLISH as slices of a 64 KiB "read" that says when it is freed. A connected subscriber's
//! queue keeps reads (copying there would cost every queue-bound subscriber), but only in
//! proportion to what it holds.

mod harness;

use bytes::Bytes;
use harness::Harness;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tern_codec::{ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS};
use tern_core::{Config, ReadRef};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const READ: usize = 64 * 1024;

/// A read buffer that sets its flag when it is freed.
struct Read {
    bytes: Vec<u8>,
    freed: Arc<AtomicBool>,
}

impl AsRef<[u8]> for Read {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Read {
    fn drop(&mut self) {
        self.freed.store(true, Ordering::SeqCst);
    }
}

/// A PUBLISH whose topic and payload are slices of a 64 KiB read, and the read's flag.
fn publish_in_read(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
    properties: Properties,
) -> (Publish, Arc<AtomicBool>) {
    let freed = Arc::new(AtomicBool::new(false));
    let mut bytes = vec![b'x'; READ];
    let end = topic.len() + payload.len();
    bytes[..topic.len()].copy_from_slice(topic.as_bytes());
    bytes[topic.len()..end].copy_from_slice(payload);
    let read = Bytes::from_owner(Read {
        bytes,
        freed: freed.clone(),
    });
    let p = Publish {
        dup: false,
        qos,
        retain,
        topic: ByteStr::from_utf8(read.slice(..topic.len())).unwrap(),
        packet_id,
        properties,
        payload: read.slice(topic.len()..end),
    };
    (p, freed)
}

#[test]
fn a_retained_message_does_not_keep_its_read() {
    let mut h = Harness::new(Config::default());
    let publisher = h.connect(V3, "publisher", true, None);
    let (p, freed) = publish_in_read(
        "kept/retained",
        b"16 bytes of data",
        QoS::AtMostOnce,
        true,
        None,
        Properties::default(),
    );
    h.packet(publisher, Packet::Publish(p));
    h.take(publisher);
    assert!(
        freed.load(Ordering::SeqCst),
        "the retained message keeps its 64 KiB read"
    );
    assert_eq!(h.broker.retained_count(), 1);

    // [MQTT-3.3.1-6] It is still the retained message a new subscriber gets.
    let subscriber = h.connect(V3, "subscriber", true, None);
    h.subscribe(subscriber, "kept/#", QoS::AtMostOnce);
    let got = h.publishes(subscriber);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "kept/retained");
    assert_eq!(&got[0].payload[..], b"16 bytes of data");
    assert!(got[0].retain);
}

#[test]
fn a_message_queued_for_offline_sessions_does_not_keep_its_read() {
    let mut h = Harness::new(Config::default());
    // Two persistent sessions subscribed at QoS 1, both offline.
    let mut subscribers = Vec::new();
    for id in ["offline-1", "offline-2"] {
        let conn = h.connect(V3, id, false, None);
        h.subscribe(conn, "queued/#", QoS::AtLeastOnce);
        h.lose(conn);
        subscribers.push(id);
    }
    let publisher = h.connect(V3, "publisher", true, None);
    let (p, freed) = publish_in_read(
        "queued/a",
        b"for later",
        QoS::AtLeastOnce,
        false,
        Some(7),
        Properties::default(),
    );
    h.packet(publisher, Packet::Publish(p));
    assert!(
        h.take(publisher)
            .iter()
            .any(|p| matches!(p, Packet::PubAck(a) if a.packet_id == 7)),
        "no PUBACK"
    );
    assert!(
        freed.load(Ordering::SeqCst),
        "the queued message keeps its 64 KiB read"
    );

    // [MQTT-3.1.2-4] Both sessions get it when they come back, from one copy, not one each.
    let mut payloads = Vec::new();
    for id in subscribers {
        let conn = h.connect(V3, id, false, None);
        let got = h.publishes(conn);
        assert_eq!(got.len(), 1, "{id}");
        assert_eq!(got[0].topic.as_str(), "queued/a");
        assert_eq!(&got[0].payload[..], b"for later");
        payloads.push(got[0].payload.clone());
    }
    assert_eq!(
        payloads[0].as_ptr(),
        payloads[1].as_ptr(),
        "each session queued a copy of its own"
    );
}

#[test]
fn a_topic_alias_does_not_keep_its_read() {
    let mut h = Harness::new(Config::default());
    let subscriber = h.connect(V5, "subscriber", true, None);
    h.subscribe(subscriber, "aliased/#", QoS::AtMostOnce);
    let publisher = h.connect(V5, "publisher", true, None);
    let mut properties = Properties::default();
    properties.topic_alias = Some(1);
    let (p, freed) = publish_in_read(
        "aliased/topic",
        b"first",
        QoS::AtMostOnce,
        false,
        None,
        properties.clone(),
    );
    h.packet(publisher, Packet::Publish(p));
    assert_eq!(h.publishes(subscriber).len(), 1);
    h.out.clear(); // the forwarded message was written (the I/O layer drops its reference)
    assert!(
        freed.load(Ordering::SeqCst),
        "the topic alias keeps its 64 KiB read"
    );

    // MQTT 5.0 section 3.3.2.3.4: a PUBLISH with the alias and an empty topic uses the alias.
    h.packet(
        publisher,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::new(),
            packet_id: None,
            properties,
            payload: Bytes::from_static(b"second"),
        }),
    );
    let got = h.publishes(subscriber);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "aliased/topic");
    assert_eq!(&got[0].payload[..], b"second");
}

#[test]
fn what_a_session_keeps_when_it_goes_offline_does_not_keep_its_reads() {
    // One message in flight, two queued behind it while the subscriber is connected (not
    // copied: that queue drains as the client reads). When it goes offline they may wait for
    // hours.
    let mut h = Harness::new(Config {
        max_inflight: 1,
        ..Config::default()
    });
    let subscriber = h.connect(V3, "subscriber", false, None);
    h.subscribe(subscriber, "kept/#", QoS::AtLeastOnce);
    let publisher = h.connect(V3, "publisher", true, None);
    let mut reads = Vec::new();
    for (i, payload) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        let (p, freed) = publish_in_read(
            "kept/topic",
            payload,
            QoS::AtLeastOnce,
            false,
            Some(id),
            Properties::default(),
        );
        h.packet(publisher, Packet::Publish(p));
        reads.push(freed);
    }
    h.take(publisher);
    assert_eq!(h.publishes(subscriber).len(), 1, "the window holds one");
    assert!(
        reads.iter().all(|r| !r.load(Ordering::SeqCst)),
        "a connected session's queue was copied"
    );
    h.lose(subscriber);
    for (i, read) in reads.iter().enumerate() {
        assert!(
            read.load(Ordering::SeqCst),
            "message {i} keeps its 64 KiB read offline"
        );
    }

    // [MQTT-4.4.0-1] The one in flight is sent again, then the queue, in order.
    let subscriber = h.connect(V3, "subscriber", false, None);
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = h.publishes(subscriber);
        assert_eq!(p.len(), 1);
        h.ack(subscriber, &p[0]);
        got.push(p[0].payload.clone());
    }
    assert_eq!(got, [&b"one"[..], b"two", b"three"]);
}

#[test]
fn a_topic_alias_towards_a_subscriber_does_not_keep_the_publishers_read() {
    let mut h = Harness::new(Config::default());
    // The subscriber accepts topic aliases: the broker sets one up for the topic it forwards.
    let mut c = harness::connect(V5, "subscriber", true);
    c.properties.topic_alias_maximum = Some(10);
    let (subscriber, ack) = h.connect_with(c);
    assert_eq!(ack.code, 0);
    h.subscribe(subscriber, "aliased/#", QoS::AtMostOnce);
    let publisher = h.connect(V5, "publisher", true, None);
    let (p, freed) = publish_in_read(
        "aliased/out",
        b"first",
        QoS::AtMostOnce,
        false,
        None,
        Properties::default(),
    );
    h.packet(publisher, Packet::Publish(p));
    let got = h.publishes(subscriber);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].properties.topic_alias,
        Some(1),
        "no alias was set up"
    );
    drop(got);
    h.out.clear();
    assert!(
        freed.load(Ordering::SeqCst),
        "the outgoing alias keeps the publisher's 64 KiB read"
    );
}

/// `n` PUBLISHes of `payload` to `topic`, slices of one read exactly their size, and the
/// read's flag and length.
fn publishes_in_one_read(
    n: usize,
    topic: &str,
    payload: &[u8],
    first_id: u16,
) -> (Vec<Publish>, Arc<AtomicBool>, u32) {
    let freed = Arc::new(AtomicBool::new(false));
    let one = topic.len() + payload.len();
    let mut bytes = Vec::with_capacity(n * one);
    for _ in 0..n {
        bytes.extend_from_slice(topic.as_bytes());
        bytes.extend_from_slice(payload);
    }
    let len = u32::try_from(bytes.len()).unwrap();
    let read = Bytes::from_owner(Read {
        bytes,
        freed: freed.clone(),
    });
    let publishes = (0..n)
        .map(|i| Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteStr::from_utf8(read.slice(i * one..i * one + topic.len())).unwrap(),
            packet_id: Some(first_id + u16::try_from(i).unwrap()),
            properties: Properties::default(),
            payload: read.slice(i * one + topic.len()..(i + 1) * one),
        })
        .collect();
    (publishes, freed, len)
}

#[test]
fn a_slow_readers_queue_keeps_reads_only_in_proportion_to_what_it_holds() {
    // A connected subscriber that does not read (nor acknowledge): one message in flight, the
    // rest queued. Each 16-byte message came in a 64 KiB read of its own with other traffic.
    let mut h = Harness::new(Config {
        max_inflight: 1,
        ..Config::default()
    });
    let subscriber = h.connect(V3, "slow", true, None);
    h.subscribe(subscriber, "kept/#", QoS::AtLeastOnce);
    let publisher = h.connect(V3, "publisher", true, None);
    const N: usize = 100;
    let mut reads = Vec::new();
    for i in 0..N {
        let id = u16::try_from(i + 1).unwrap();
        let payload = format!("message {i:>8}");
        let (p, freed) = publish_in_read(
            "kept/topic",
            payload.as_bytes(),
            QoS::AtLeastOnce,
            false,
            Some(id),
            Properties::default(),
        );
        let read = ReadRef {
            id: u32::from(id),
            len: READ as u32,
        };
        h.packet_from_read(publisher, Packet::Publish(p), read);
        reads.push(freed);
    }
    let acks = h.take(publisher);
    assert_eq!(acks.len(), N, "every PUBLISH acknowledged");
    let first = h.publishes(subscriber);
    assert_eq!(first.len(), 1, "the window holds one");
    h.out.clear();

    // The queue keeps 1 MiB of reads on top of twice its own memory (a few hundred bytes a
    // delivery): 16 or 17 of these reads, and the one in flight. The rest were copied.
    let kept = reads.iter().filter(|r| !r.load(Ordering::SeqCst)).count();
    let queue = &h.broker.session("slow").unwrap().queue;
    assert_eq!(queue.len(), N - 1);
    assert!(
        (17..=19).contains(&kept),
        "{kept} of {N} reads kept by a slow reader's queue of {} messages (pinned {} bytes)",
        queue.len(),
        queue.pinned()
    );
    assert!(queue.pinned() <= (1 << 20) + READ, "{}", queue.pinned());

    // [MQTT-4.6.0-2] Copied or not, they all arrive, in order.
    let mut got = vec![first[0].payload.clone()];
    h.ack(subscriber, &first[0]);
    while got.len() < N {
        let p = h.publishes(subscriber);
        assert_eq!(p.len(), 1);
        h.ack(subscriber, &p[0]);
        got.push(p[0].payload.clone());
    }
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(&payload[..], format!("message {i:>8}").as_bytes());
    }
    assert_eq!(h.broker.session("slow").unwrap().queue.pinned(), 0);
}

#[test]
fn a_queue_of_messages_that_fill_their_reads_is_not_copied() {
    // The usual queue-bound subscriber: a publisher faster than its reader, whose reads are
    // all messages for it. Copying them would cost the broker a copy per message for nothing.
    // (Back-pressure off: it would hold the publisher's PUBACKs from 512 queued on; this test
    // is about the queue's reads.)
    let mut h = Harness::new(Config {
        max_inflight: 1,
        backpressure_secs: 0,
        ..Config::default()
    });
    let subscriber = h.connect(V3, "behind", true, None);
    h.subscribe(subscriber, "kept/#", QoS::AtLeastOnce);
    let publisher = h.connect(V3, "publisher", true, None);
    const READS: usize = 40;
    const PER_READ: usize = 100;
    let mut reads = Vec::new();
    let mut total = 0;
    for r in 0..READS {
        let first_id = u16::try_from(r * PER_READ + 1).unwrap();
        let (publishes, freed, len) =
            publishes_in_one_read(PER_READ, "kept/topic", &[b'p'; 32], first_id);
        let read = ReadRef {
            id: u32::try_from(r + 1).unwrap(),
            len,
        };
        for p in publishes {
            h.packet_from_read(publisher, Packet::Publish(p), read);
        }
        reads.push(freed);
        total += len as usize;
    }
    assert_eq!(h.take(publisher).len(), READS * PER_READ);
    assert_eq!(h.publishes(subscriber).len(), 1);
    h.out.clear();
    let queue = &h.broker.session("behind").unwrap().queue;
    assert_eq!(queue.len(), READS * PER_READ - 1);
    assert!(
        reads.iter().all(|r| !r.load(Ordering::SeqCst)),
        "messages that fill their reads were copied"
    );
    // Each read charged once, by the first of its deliveries in the queue.
    assert_eq!(queue.pinned(), total);
}

#[test]
fn a_message_that_fills_its_read_is_kept_without_a_copy() {
    // A device that sends one retained message per write: its read is the message, and
    // keeping it keeps nothing else. A copy would cost an allocation and a copy for nothing.
    let mut h = Harness::new(Config::default());
    let publisher = h.connect(V3, "publisher", true, None);
    let (mut publishes, freed, len) = publishes_in_one_read(1, "kept/state", b"on", 1);
    let mut p = publishes.remove(0);
    (p.qos, p.packet_id, p.retain) = (QoS::AtMostOnce, None, true);
    let read = ReadRef { id: 1, len };
    h.packet_from_read(publisher, Packet::Publish(p), read);
    h.take(publisher);
    assert_eq!(h.broker.retained_count(), 1);
    assert!(
        !freed.load(Ordering::SeqCst),
        "a message that fills its read was copied"
    );

    // The same message in a 64 KiB read is copied out of it.
    let (p, freed) = publish_in_read(
        "kept/state",
        b"off",
        QoS::AtMostOnce,
        true,
        None,
        Properties::default(),
    );
    let read = ReadRef {
        id: 2,
        len: READ as u32,
    };
    h.packet_from_read(publisher, Packet::Publish(p), read);
    h.take(publisher);
    assert!(freed.load(Ordering::SeqCst), "the 64 KiB read is kept");
    // [MQTT-3.3.1-5] The newer one replaced the first.
    let subscriber = h.connect(V3, "subscriber", true, None);
    h.subscribe(subscriber, "kept/#", QoS::AtMostOnce);
    let got = h.publishes(subscriber);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"off");
}

/// A 64 KiB buffer starting with `prefix` (the strings a test slices out of it), and its flag:
/// a packet a session keeps strings of (CONNECT, SUBSCRIBE) may be as large as
/// `max_packet_size`, most of it user properties.
fn packet_read(prefix: &[u8]) -> (Bytes, Arc<AtomicBool>) {
    let freed = Arc::new(AtomicBool::new(false));
    let mut bytes = vec![b'x'; READ];
    bytes[..prefix.len()].copy_from_slice(prefix);
    let read = Bytes::from_owner(Read {
        bytes,
        freed: freed.clone(),
    });
    (read, freed)
}

#[test]
fn a_subscription_does_not_keep_its_subscribe() {
    let mut h = Harness::new(Config::default());
    let subscriber = h.connect(V5, "subscriber", false, Some(3600));
    let (read, freed) = packet_read(b"kept/filter/#");
    let filter = ByteStr::from_utf8(read.slice(..13)).unwrap();
    drop(read);
    h.packet(
        subscriber,
        Packet::Subscribe(tern_codec::Subscribe {
            packet_id: 1,
            filters: vec![(filter, tern_codec::SubscriptionOptions::default())],
            properties: Properties::default(),
        }),
    );
    assert!(
        h.take(subscriber)
            .iter()
            .any(|p| matches!(p, Packet::SubAck(s) if s.reasons == [0])),
        "no SUBACK"
    );
    assert!(
        freed.load(Ordering::SeqCst),
        "the session's subscription keeps the 64 KiB SUBSCRIBE"
    );
    // The subscription works from its copy.
    let publisher = h.connect(V5, "publisher", true, None);
    h.publish(
        publisher,
        "kept/filter/a",
        "hello",
        QoS::AtMostOnce,
        false,
        None,
    );
    let got = h.publishes(subscriber);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "kept/filter/a");
}

#[test]
fn a_session_does_not_keep_its_connect() {
    let mut h = Harness::new(Config::default());
    let (read, freed) = packet_read(b"device-7will/topicgone");
    let mut c = harness::connect(V5, "unused", false);
    c.client_id = ByteStr::from_utf8(read.slice(..8)).unwrap();
    c.properties.session_expiry_interval = Some(3600);
    let mut will = harness::will("x", "x", None);
    will.topic = ByteStr::from_utf8(read.slice(8..18)).unwrap();
    will.payload = read.slice(18..22);
    c.will = Some(will);
    drop(read);
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.code, 0);
    assert!(
        freed.load(Ordering::SeqCst),
        "the session keeps the 64 KiB CONNECT (client id or will)"
    );
    // The will and the client id work from their copies.
    let watcher = h.connect(V5, "watcher", true, None);
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    h.lose(conn);
    let got = h.publishes(watcher);
    assert_eq!(got.len(), 1, "the will");
    assert_eq!(got[0].topic.as_str(), "will/topic");
    assert_eq!(&got[0].payload[..], b"gone");
    let (_, ack) = h.connect_with(harness::connect(V5, "device-7", false));
    assert!(
        ack.session_present,
        "[MQTT-3.2.2-3] the session is found by its id"
    );
}
