//! Back-pressure on QoS 1/2 publishers: while a connected subscriber's queue is long, the
//! publisher's acknowledgements wait (in order), so a client that waits for them slows down
//! instead of having acknowledged messages dropped by the queue limit.

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Ack, Packet, QoS};
use tern_core::{Action, Config, ConnId};

/// In-flight window 2 and a queue of 8: publishers are held from 4 queued, let go at 2.
fn config() -> Config {
    Config {
        max_inflight: 2,
        max_queued_messages: 8,
        ..Config::default()
    }
}

/// The packet ids of the PUBACKs (or PUBRECs) sent to `conn` so far, in order.
fn acks(h: &mut Harness, conn: ConnId) -> Vec<u16> {
    h.take(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) | Packet::PubRec(a) => Some(a.packet_id),
            _ => None,
        })
        .collect()
}

/// A subscriber `s` of `t` at QoS 1 that does not acknowledge yet, and a publisher `p`.
fn setup(config: Config) -> (Harness, ConnId, ConnId) {
    let mut h = Harness::new(config);
    let s = subscriber(&mut h, "s", "t");
    let p = h.connect(V3_1_1, "p", true, None);
    (h, s, p)
}

/// A client `id` subscribed to `topic` at QoS 1 that does not acknowledge yet.
fn subscriber(h: &mut Harness, id: &str, topic: &str) -> ConnId {
    let c = h.connect(V3_1_1, id, true, None);
    h.subscribe(c, topic, QoS::AtLeastOnce);
    c
}

/// `rounds` times, the subscriber acknowledges every PUBLISH it has received so far (each
/// round frees its window for up to that many queued messages).
fn ack_rounds(h: &mut Harness, s: ConnId, rounds: usize) {
    for _ in 0..rounds {
        for d in h.publishes(s) {
            h.ack(s, &d);
        }
    }
}

/// Publishes QoS 1 messages with packet ids `ids` on `topic`.
fn publish(h: &mut Harness, p: ConnId, topic: &str, ids: std::ops::RangeInclusive<u16>) {
    for pid in ids {
        h.publish(p, topic, "m", QoS::AtLeastOnce, false, Some(pid));
    }
}

#[test]
fn acknowledgements_wait_while_the_subscribers_queue_is_long_and_leave_in_order() {
    let (mut h, s, p) = setup(config());
    // 1-2 go in flight, 3-6 are queued (the queue holds 4 after the 6th).
    publish(&mut h, p, "t", 1..=6);
    assert_eq!(acks(&mut h, p), vec![1, 2, 3, 4, 5, 6]);
    // The 7th joins a queue of 4: its PUBACK waits, and so does the PUBACK of a message to a
    // topic nobody has, sent after it: [MQTT-4.6.0-2] PUBACKs go in the order of the PUBLISHes.
    publish(&mut h, p, "t", 7..=7);
    publish(&mut h, p, "nobody", 8..=8);
    assert_eq!(acks(&mut h, p), Vec::<u16>::new());
    assert_eq!(h.broker.stats().publishers_held, 1);

    // The subscriber catches up: each PUBACK frees a slot of the window, which takes one from the
    // queue (5 -> 4 -> 3 -> 2). At a quarter of the limit the publisher's PUBACKs go, in order.
    let mut delivered = h.publishes(s);
    assert_eq!(delivered.len(), 2);
    for _ in 0..2 {
        let d = delivered.remove(0);
        h.ack(s, &d);
        delivered.extend(h.publishes(s));
        assert_eq!(acks(&mut h, p), Vec::<u16>::new());
    }
    let d = delivered.remove(0);
    h.ack(s, &d);
    assert_eq!(acks(&mut h, p), vec![7, 8]);
    // And nothing was dropped.
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
    // Once let go, the publisher is acknowledged at once again.
    publish(&mut h, p, "nobody", 9..=9);
    assert_eq!(acks(&mut h, p), vec![9]);
}

#[test]
fn qos2_publishers_are_held_back_through_pubrec() {
    let (mut h, _s, p) = setup(config());
    for pid in 1..=7 {
        h.publish(p, "t", "m", QoS::ExactlyOnce, false, Some(pid));
    }
    // [MQTT-4.6.0-3] PUBRECs in the order of the PUBLISHes; the 7th waits.
    assert_eq!(acks(&mut h, p), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_subscriber_that_leaves_lets_its_publishers_go() {
    let (mut h, s, p) = setup(config());
    publish(&mut h, p, "t", 1..=7);
    assert_eq!(acks(&mut h, p).len(), 6);
    h.lose(s);
    assert_eq!(acks(&mut h, p), vec![7]);
}

#[test]
fn a_stuck_subscriber_holds_publishers_back_for_backpressure_secs_at_most() {
    let (mut h, _s, p) = setup(Config {
        backpressure_secs: 3,
        ..config()
    });
    publish(&mut h, p, "t", 1..=7);
    assert_eq!(acks(&mut h, p).len(), 6);
    h.advance(2);
    assert_eq!(acks(&mut h, p), Vec::<u16>::new());
    h.advance(1);
    assert_eq!(acks(&mut h, p), vec![7]);
    assert_eq!(h.broker.stats().backpressure_timeouts, 1);
    // From now on this subscriber holds nobody back until its queue drains: the queue limit
    // applies as it would without back-pressure (5 queued; 3 more fit, the rest are dropped).
    publish(&mut h, p, "t", 8..=12);
    assert_eq!(acks(&mut h, p), vec![8, 9, 10, 11, 12]);
    assert_eq!(h.broker.stats().dropped_queue_full, 2);
    assert_eq!(h.broker.stats().publishers_held, 1);
}

#[test]
fn backpressure_secs_0_keeps_the_queue_limit_alone() {
    let (mut h, _s, p) = setup(Config {
        backpressure_secs: 0,
        ..config()
    });
    publish(&mut h, p, "t", 1..=12);
    assert_eq!(acks(&mut h, p), (1..=12).collect::<Vec<u16>>());
    // 2 in flight, 8 queued, 2 dropped.
    assert_eq!(h.broker.stats().dropped_queue_full, 2);
    assert_eq!(h.broker.stats().publishers_held, 0);
}

#[test]
fn a_held_publisher_that_disconnects_is_forgotten() {
    let (mut h, s, p) = setup(config());
    publish(&mut h, p, "t", 1..=7);
    assert_eq!(acks(&mut h, p).len(), 6);
    h.lose(p);
    // The subscriber drains its queue; nothing is sent to the closed connection.
    ack_rounds(&mut h, s, 8);
    assert_eq!(acks(&mut h, p), Vec::<u16>::new());
    // A new publisher is not held back by the old one's state.
    let p2 = h.connect(V5, "p2", true, None);
    h.publish(p2, "t", "m", QoS::AtLeastOnce, false, Some(1));
    assert_eq!(acks(&mut h, p2), vec![1]);
}

#[test]
fn a_client_is_not_held_back_by_its_own_queue() {
    // It may be waiting for its acknowledgements before it reads what it receives.
    let mut h = Harness::new(config());
    let c = h.connect(V3_1_1, "c", true, None);
    h.subscribe(c, "t", QoS::AtLeastOnce);
    publish(&mut h, c, "t", 1..=8);
    assert_eq!(acks(&mut h, c), (1..=8).collect::<Vec<u16>>());
    assert_eq!(h.broker.stats().publishers_held, 0);
}

#[test]
fn a_publisher_that_does_not_wait_for_its_acknowledgements_is_no_longer_read_from() {
    // More held than twice our Receive Maximum (128 by default): the client is not waiting for
    // them (an MQTT 3 client with a large window, or one that never waits). Letting it go would
    // let it fill the subscriber's queue again, so it is not read from until it is let go.
    let (mut h, s, p) = setup(config());
    publish(&mut h, p, "t", 1..=6);
    assert_eq!(acks(&mut h, p).len(), 6);
    publish(&mut h, p, "t", 7..=306);
    assert!(acks(&mut h, p).is_empty(), "acknowledged while held");
    // Paused once (at the queue's three quarters, 6 of 8, here; this harness reads on
    // regardless, as if the packets had been read before the pause took effect).
    assert_eq!(h.reading(p), vec![false]);
    assert_eq!(h.broker.stats().publishers_paused, 1);
    assert_eq!(h.broker.stats().publishers_held, 1);
    // The subscriber catches up: every held acknowledgement goes out in order, and only then
    // is the publisher read from again.
    ack_rounds(&mut h, s, 5);
    let resume = h
        .out
        .iter()
        .position(|a| matches!(a, Action::ResumeReading(c) if *c == p))
        .expect("reading resumed");
    let last_ack = h
        .out
        .iter()
        .rposition(|a| matches!(a, Action::Send(c, _) if *c == p))
        .expect("acknowledged");
    assert!(
        last_ack < resume,
        "reading resumed before the acknowledgements"
    );
    assert_eq!(acks(&mut h, p), (7..=306).collect::<Vec<u16>>());
    assert_eq!(h.reading(p), vec![true]);
}

#[test]
fn a_held_publisher_is_paused_past_256_held_acknowledgements() {
    // A queue of 2,000: held from 512 queued, three quarters at 1,500, so only the count of
    // held acknowledgements (more than twice Receive Maximum 128) pauses it.
    let (mut h, _s, p) = setup(Config {
        max_queued_messages: 2_000,
        ..config()
    });
    let mut pid = 0u16;
    while h.broker.stats().publishers_held == 0 {
        pid += 1;
        publish(&mut h, p, "t", pid..=pid);
    }
    let first_held = pid;
    assert_eq!(acks(&mut h, p).len(), usize::from(first_held) - 1);
    publish(&mut h, p, "t", first_held + 1..=first_held + 255);
    assert!(h.reading(p).is_empty(), "paused at 256 held");
    publish(&mut h, p, "t", first_held + 256..=first_held + 256);
    assert_eq!(h.reading(p), vec![false], "not paused at 257 held");
    assert!(acks(&mut h, p).is_empty(), "acknowledged while held");
}

#[test]
fn a_paused_client_is_read_from_again_when_others_come_to_wait_for_its_queue() {
    // a is paused, held for b's long queue (at three quarters). Then c is held for a's long
    // queue: a must read the acknowledgements that drain it, so it is read from again (still
    // held). Paused, it would keep c waiting until backpressure_secs (and if b waited for c's
    // answer, all of them).
    let mut h = Harness::new(config());
    let a = subscriber(&mut h, "a", "to_a");
    subscriber(&mut h, "b", "to_b");
    let c = h.connect(V3_1_1, "c", true, None);
    publish(&mut h, a, "to_b", 1..=8);
    assert_eq!(h.reading(a), vec![false], "a not paused");
    assert_eq!(acks(&mut h, a).len(), 6);
    publish(&mut h, c, "to_a", 1..=6);
    assert!(
        h.reading(a).is_empty(),
        "a resumed before anyone waited for it"
    );
    publish(&mut h, c, "to_a", 7..=7);
    assert_eq!(acks(&mut h, c).len(), 6, "c not held");
    assert_eq!(
        h.reading(a),
        vec![true],
        "a still paused with c waiting for it"
    );
    assert!(acks(&mut h, a).is_empty(), "a was let go");
}

#[test]
fn a_paused_publisher_with_many_packets_already_read_is_let_go() {
    // Receive Maximum 2: let go past 4 + 49,152 held (more than the packets a pause cannot
    // stop, those already read: an I/O layer that neither pauses nor keeps them back), so held
    // acknowledgements stay bounded.
    let (mut h, _s, p) = setup(Config {
        receive_maximum: 2,
        ..config()
    });
    publish(&mut h, p, "t", 1..=6);
    assert_eq!(acks(&mut h, p).len(), 6);
    publish(&mut h, p, "t", 7..=49_170);
    // Let go at 49,157 held (7..=49,163, in order), then held again (the subscriber is still
    // behind) and paused again.
    assert_eq!(acks(&mut h, p), (7..=49_163).collect::<Vec<u16>>());
    assert_eq!(h.reading(p), vec![false, true, false]);
    assert_eq!(h.broker.stats().publishers_held, 2);
}

#[test]
fn a_publisher_that_others_wait_for_is_let_go_rather_than_no_longer_read_from() {
    // Two clients publish to each other and neither acknowledges yet: each is held back for the
    // other's long queue. Paused, one would not read the acknowledgements that drain its own
    // queue, and the two would wait for each other until backpressure_secs.
    let mut h = Harness::new(config());
    let a = subscriber(&mut h, "a", "to_a");
    let b = subscriber(&mut h, "b", "to_b");
    publish(&mut h, a, "to_b", 1..=7);
    publish(&mut h, b, "to_a", 1..=7);
    assert_eq!(acks(&mut h, a).len(), 6);
    assert_eq!(acks(&mut h, b).len(), 6);
    // Past 256 held, a (whom b waits for) is let go, in order, and never paused.
    publish(&mut h, a, "to_b", 8..=263);
    assert_eq!(acks(&mut h, a), (7..=263).collect::<Vec<u16>>());
    assert!(h.reading(a).is_empty(), "a was paused");
    assert_eq!(h.broker.stats().publishers_paused, 0);
}

#[test]
fn a_subscriber_holds_publishers_back_again_once_its_queue_drained_after_a_timeout() {
    let (mut h, s, p) = setup(Config {
        backpressure_secs: 1,
        ..config()
    });
    publish(&mut h, p, "t", 1..=7);
    h.advance(1);
    assert_eq!(acks(&mut h, p).len(), 7);
    // Drained to a quarter (2 queued) by the subscriber's acknowledgements...
    ack_rounds(&mut h, s, 3);
    // ...it holds publishers back again when its queue is long.
    publish(&mut h, p, "t", 8..=20);
    let got = acks(&mut h, p);
    assert!(got.len() < 13, "nothing held: {got:?}");
    assert_eq!(h.broker.stats().publishers_held, 2);
}

#[test]
fn an_mqtt_3_qos2_publisher_is_held_back_past_receive_maximum_and_not_closed() {
    // Receive Maximum 8 binds MQTT 5 clients only. A 3.x QoS 2 publisher's PUBRECs are held
    // like PUBACKs; its unreleased packets, ours to count, may pass 8 without closing it (3.x
    // has no Receive Maximum), and no PUBREC is let go early for them: the queue limit would
    // then drop messages the broker has acknowledged.
    let (mut h, s, p) = setup(Config {
        receive_maximum: 8,
        ..config()
    });
    for pid in 1..=6 {
        h.publish(p, "t", "m", QoS::ExactlyOnce, false, Some(pid));
    }
    assert_eq!(acks(&mut h, p), vec![1, 2, 3, 4, 5, 6]);
    // 10 unreleased, past 8: the PUBRECs from the 7th wait for the subscriber's queue.
    for pid in 7..=10 {
        h.publish(p, "t", "m", QoS::ExactlyOnce, false, Some(pid));
    }
    assert_eq!(acks(&mut h, p), Vec::<u16>::new());
    assert!(
        !h.closed(p),
        "closed for unreleased QoS 2 packets past Receive Maximum"
    );
    // The subscriber catches up: the PUBRECs go, in order [MQTT-4.6.0-3], and it got all ten.
    let (mut delivered, mut released) = (0, Vec::new());
    while delivered < 10 {
        let got = h.publishes(s);
        assert!(!got.is_empty(), "stalled after {delivered} deliveries");
        for d in &got {
            h.ack(s, d);
        }
        delivered += got.len();
        released.extend(acks(&mut h, p));
    }
    assert_eq!(delivered, 10);
    assert_eq!(released, vec![7, 8, 9, 10]);
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
    // (3.1.1 section 4.3.3) Each PUBREL releases one, answered by PUBCOMP.
    for pid in 1..=10 {
        h.packet(p, Packet::PubRel(Ack::new(pid)));
    }
    let comps = h
        .take(p)
        .into_iter()
        .filter(|pk| matches!(pk, Packet::PubComp(_)))
        .count();
    assert_eq!(comps, 10);
}

#[test]
fn a_queue_half_full_in_bytes_holds_publishers_back_too() {
    // Large messages reach the byte limit before the count: half of it counts as long too.
    let (mut h, _s, p) = setup(Config {
        max_queued_messages: 1_000,
        max_queued_bytes: 40,
        ..config()
    });
    // 2 in flight, then 2 queued of 10 bytes: 20 bytes, half of the limit.
    for pid in 1..=5 {
        h.publish(p, "t", "0123456789", QoS::AtLeastOnce, false, Some(pid));
    }
    assert_eq!(acks(&mut h, p), vec![1, 2, 3, 4]);
    assert_eq!(h.broker.stats().publishers_held, 1);
    assert_eq!(h.broker.stats().dropped_queue_bytes, 0);
}

#[test]
fn a_long_queue_limit_holds_publishers_back_from_512_queued_and_lets_them_go_at_256() {
    // The default queue limit (10,000): half of it queued would be the latency of all 5,000
    // messages, so the count that holds publishers back is capped at 512 (256 to let go).
    let (mut h, s, p) = setup(Config {
        max_inflight: 2,
        ..Config::default()
    });
    // 2 go in flight, then 3..=514 make a queue of 512, each joining a shorter one.
    publish(&mut h, p, "t", 1..=514);
    assert_eq!(acks(&mut h, p).len(), 514);
    assert_eq!(h.broker.stats().publishers_held, 0);
    // The 515th joins a queue of 512: held.
    publish(&mut h, p, "t", 515..=515);
    assert!(acks(&mut h, p).is_empty(), "acknowledged with 512 queued");
    assert_eq!(h.broker.stats().publishers_held, 1);
    // The subscriber acknowledges one at a time; each frees a slot of its window, which takes
    // one message from the queue (513 -> 512 -> ...). The PUBACK goes at 256 queued, not before.
    let mut delivered = h.publishes(s);
    let mut queued = 513;
    while queued > 256 {
        assert!(acks(&mut h, p).is_empty(), "let go at {queued} queued");
        let d = delivered.remove(0);
        h.ack(s, &d);
        delivered.extend(h.publishes(s));
        queued -= 1;
    }
    assert_eq!(acks(&mut h, p), vec![515], "let go at 256 queued");
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
}
