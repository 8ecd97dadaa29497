//! Limits against abuse that the core enforces, each with its answer and its counter.

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Packet, QoS, reason};
use tern_core::Config;

#[test]
fn subscriptions_per_client_are_capped_with_0x97() {
    let mut h = Harness::new(Config {
        max_subscriptions_per_client: 2,
        ..Config::default()
    });
    let c = h.connect(V5, "c", true, None);
    assert_eq!(h.subscribe_opts(c, "a", Default::default(), None), vec![0]);
    assert_eq!(h.subscribe_opts(c, "b", Default::default(), None), vec![0]);
    assert_eq!(
        h.subscribe_opts(c, "c", Default::default(), None),
        vec![reason::QUOTA_EXCEEDED]
    );
    // Replacing an existing one is not a new subscription.
    assert_eq!(h.subscribe_opts(c, "a", Default::default(), None), vec![0]);
    let c3 = h.connect(V3_1_1, "c3", true, None);
    h.subscribe(c3, "a", QoS::AtMostOnce);
    h.subscribe(c3, "b", QoS::AtMostOnce);
    assert_eq!(
        h.subscribe_opts(c3, "c", Default::default(), None),
        vec![0x80]
    );
    assert_eq!(h.broker.stats().limit_subscriptions, 2);
}

#[test]
fn topic_levels_are_capped() {
    let mut h = Harness::new(Config {
        max_topic_levels: 3,
        ..Config::default()
    });
    let c = h.connect(V5, "c", true, None);
    assert_eq!(
        h.subscribe_opts(c, "a/b/c/d", Default::default(), None),
        vec![reason::TOPIC_FILTER_INVALID]
    );
    h.publish(c, "a/b/c/d", "x", QoS::AtMostOnce, false, None);
    assert!(
        matches!(&h.take(c)[..], [Packet::Disconnect(d)] if d.reason == reason::TOPIC_NAME_INVALID)
    );
    assert_eq!(h.broker.stats().limit_topic_levels, 2);
}

#[test]
fn queued_bytes_per_session_are_capped() {
    let mut h = Harness::new(Config {
        max_queued_bytes: 10,
        ..Config::default()
    });
    let s = h.connect(V3_1_1, "s", false, None);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V3_1_1, "p", true, None);
    for i in 1..=4u16 {
        h.publish(p, "t", "abcd", QoS::AtLeastOnce, false, Some(i));
    }
    let s = h.connect(V3_1_1, "s", false, None);
    assert_eq!(
        h.publishes(s).len(),
        2,
        "two messages of 5 bytes (topic and payload) fit in 10 bytes"
    );
    assert_eq!(h.broker.stats().dropped_queue_bytes, 2);
}

#[test]
fn queued_bytes_count_the_properties_too() {
    // One payload byte with 1,000 bytes of user properties: counting the payload alone let a
    // queue hold a thousand times its `max_queued_bytes`.
    let mut h = Harness::new(Config {
        max_queued_bytes: 3_000,
        ..Config::default()
    });
    let s = h.connect(V5, "s", false, Some(3600));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V5, "p", true, None);
    let mut properties = tern_codec::Properties::default();
    properties
        .user_properties
        .push(("k".into(), "v".repeat(999).as_str().into()));
    for i in 1..=4u16 {
        h.publish_props(
            p,
            "t",
            "x",
            QoS::AtLeastOnce,
            false,
            Some(i),
            properties.clone(),
        );
    }
    let s = h.connect(V5, "s", false, Some(3600));
    let got = h.publishes(s);
    assert_eq!(got.len(), 2, "two messages of 1,002 bytes fit in 3,000");
    // [MQTT-3.3.2-17] The user properties are forwarded unchanged.
    assert_eq!(got[0].properties.user_properties[0].1.len(), 999);
    assert_eq!(h.broker.stats().dropped_queue_bytes, 2);
}

#[test]
fn message_rate_is_capped_with_0x96() {
    let mut h = Harness::new(Config {
        max_message_rate: 5,
        ..Config::default()
    });
    let c = h.connect(V5, "c", true, None);
    for _ in 0..5 {
        h.publish(c, "t", "x", QoS::AtMostOnce, false, None);
    }
    assert!(
        h.take(c).is_empty(),
        "a burst of one second's worth is fine"
    );
    h.advance(1);
    for _ in 0..5 {
        h.publish(c, "t", "x", QoS::AtMostOnce, false, None);
    }
    assert!(h.take(c).is_empty(), "the bucket refills");
    h.publish(c, "t", "x", QoS::AtMostOnce, false, None);
    assert!(
        matches!(&h.take(c)[..], [Packet::Disconnect(d)] if d.reason == reason::MESSAGE_RATE_TOO_HIGH)
    );
    assert_eq!(h.broker.stats().limit_message_rate, 1);
}

/// Eight retained messages under `r/`, published by a client of their own.
fn eight_retained(h: &mut Harness, qos: QoS) {
    let p = h.connect(V3_1_1, "retainer", true, None);
    for i in 1..=8u16 {
        let pid = (qos != QoS::AtMostOnce).then_some(i);
        h.publish(p, &format!("r/{i}"), "x", qos, true, pid);
    }
    h.take(p);
}

#[test]
fn a_client_repeating_its_subscribe_is_not_sent_the_retained_store_each_time() {
    // [MQTT-3.8.4-3] A SUBSCRIBE that replaces a subscription sends the retained messages
    // again. A client repeating it without reading must not have the retained store queued
    // once per packet: a budget of `max_queued_messages` (10, more than the 8 retained) a
    // second, a packet served whole while the budget is above minus its size.
    let mut h = Harness::new(Config {
        max_queued_messages: 10,
        ..Config::default()
    });
    eight_retained(&mut h, QoS::AtMostOnce);
    let s = h.connect(V3_1_1, "s", true, None);
    let mut bursts = Vec::new();
    for _ in 0..100 {
        h.subscribe(s, "r/#", QoS::AtMostOnce);
        bursts.push(h.publishes(s).len());
    }
    // 10 - 8 = 2, 2 - 8 = -6, -6 - 8 = -14: three bursts, each whole.
    assert_eq!(&bursts[..4], &[8, 8, 8, 0]);
    assert_eq!(bursts.iter().sum::<usize>(), 24);
    assert_eq!(h.broker.stats().dropped_retained, 97, "counted by filter");
    // A second later the budget is at -4: one more burst.
    h.advance(1);
    h.subscribe(s, "r/#", QoS::AtMostOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|p| p.retain), "[MQTT-3.3.1-8]");
    h.subscribe(s, "r/#", QoS::AtMostOnce);
    assert!(h.publishes(s).is_empty());
    // Left alone for three seconds, the session's budget is whole again.
    h.advance(3);
    for _ in 0..3 {
        h.subscribe(s, "r/#", QoS::AtMostOnce);
        assert_eq!(h.publishes(s).len(), 8);
    }
}

#[test]
fn the_whole_retained_store_twice_at_connect_is_sent() {
    // The budget is at least the retained store: a client that subscribes to everything in
    // one packet and to part of it in others right after (`#` then `$SYS/#`, say) gets every
    // burst, however small `max_queued_messages` is. Here QoS 1, with a window of 2: the queue
    // is past its limit after the first burst, and the second is queued all the same.
    let mut h = Harness::new(Config {
        max_queued_messages: 4,
        max_inflight: 2,
        ..Config::default()
    });
    eight_retained(&mut h, QoS::AtLeastOnce);
    let s = h.connect(V3_1_1, "s", true, None);
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    h.subscribe(s, "r/1", QoS::AtLeastOnce);
    h.subscribe(s, "r/2", QoS::AtMostOnce);
    let mut total = 0;
    let mut pending = h.publishes(s);
    while let Some(p) = pending.pop() {
        total += 1;
        if p.qos != QoS::AtMostOnce {
            h.ack(s, &p);
        }
        pending.extend(h.publishes(s));
    }
    assert_eq!(total, 10, "8 + 1 + 1");
    assert_eq!(h.broker.stats().dropped_retained, 0);
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
}

#[test]
fn a_session_that_does_not_acknowledge_stops_getting_qos1_retained_bursts() {
    // A queue as long as `max_queued_messages` (10) plus the retained store (8) takes no more
    // QoS 1 bursts, whatever the budget says.
    let mut h = Harness::new(Config {
        max_queued_messages: 10,
        max_inflight: 2,
        ..Config::default()
    });
    eight_retained(&mut h, QoS::AtLeastOnce);
    let s = h.connect(V3_1_1, "s", false, None);
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    let first = h.publishes(s);
    assert_eq!(first.len(), 2, "two in flight, six queued");
    let queued = |h: &Harness| h.broker.session("s").unwrap().queue.len();
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    assert_eq!(queued(&h), 14);
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    assert_eq!(queued(&h), 22, "14 was under 18");
    // The budget whole again (-14 three seconds ago), but the queue holds 22 >= 18.
    h.advance(3);
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    assert_eq!(queued(&h), 22);
    assert_eq!(h.broker.stats().dropped_retained, 1);
    // The client takes its messages: three bursts whole, none lost.
    let mut total = first.len();
    let mut pending = first;
    while let Some(p) = pending.pop() {
        h.ack(s, &p);
        let more = h.publishes(s);
        total += more.len();
        pending.extend(more);
    }
    assert_eq!(total, 24);
    assert_eq!(queued(&h), 0);
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
}

#[test]
fn retained_messages_are_capped_in_number_and_in_bytes() {
    let mut h = Harness::new(Config {
        max_retained_messages: 3,
        max_retained_bytes: 100,
        ..Config::default()
    });
    let watcher = h.connect(V3_1_1, "watcher", true, None);
    h.subscribe(watcher, "r/#", QoS::AtMostOnce);
    let p = h.connect(V3_1_1, "p", true, None);
    for i in 1..=4 {
        h.publish(p, &format!("r/{i}"), "x", QoS::AtMostOnce, true, None);
    }
    assert_eq!(h.broker.retained_count(), 3, "a fourth topic is not stored");
    assert_eq!(h.broker.stats().limit_retained_messages, 1);
    assert_eq!(h.publishes(watcher).len(), 4, "but it is delivered");
    // At the limit, a retained message can still be replaced, and deleted to make room.
    h.publish(p, "r/1", "y", QoS::AtMostOnce, true, None);
    h.publish(p, "r/2", "", QoS::AtMostOnce, true, None);
    h.publish(p, "r/4", "x", QoS::AtMostOnce, true, None);
    assert_eq!(h.broker.retained_count(), 3);
    assert_eq!(h.broker.stats().limit_retained_messages, 1);
    // Bytes: replacing r/1's 4 bytes (topic and payload) with 103 would pass 100. Not stored,
    // and the message it replaces is gone too: no later subscriber gets a superseded value.
    h.publish(p, "r/1", &"z".repeat(100), QoS::AtMostOnce, true, None);
    assert_eq!(h.broker.stats().limit_retained_bytes, 1);
    assert_eq!(h.publishes(watcher).len(), 4, "delivered all the same");
    let s = h.connect(V3_1_1, "s", true, None);
    h.subscribe(s, "r/#", QoS::AtMostOnce);
    let mut got: Vec<String> = h
        .publishes(s)
        .iter()
        .map(|p| format!("{}={}", p.topic, String::from_utf8_lossy(&p.payload)))
        .collect();
    got.sort();
    assert_eq!(got, ["r/3=x", "r/4=x"]);
}

/// One SUBSCRIBE packet with the given filters.
fn subscribe_packet(filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(tern_codec::Subscribe {
        packet_id: 1,
        filters: filters
            .iter()
            .map(|&(f, qos)| {
                let options = tern_codec::SubscriptionOptions {
                    qos,
                    ..Default::default()
                };
                (f.into(), options)
            })
            .collect(),
        properties: Default::default(),
    })
}

#[test]
fn a_subscribe_listing_a_filter_many_times_gets_each_retained_message_once() {
    // One packet listing `r/#` 10,000 times (4 bytes each) must not cost 10,000 retained
    // stores: each message goes once per packet.
    let mut h = Harness::new(Config::default());
    eight_retained(&mut h, QoS::AtMostOnce);
    let s = h.connect(V5, "s", true, None);
    h.packet(s, subscribe_packet(&[("r/#", QoS::AtMostOnce); 10_000]));
    assert_eq!(h.publishes(s).len(), 8);

    // Overlapping filters: each message once, at the highest QoS its filters grant.
    let mut h = Harness::new(Config::default());
    eight_retained(&mut h, QoS::AtLeastOnce);
    let s = h.connect(V5, "s", true, None);
    h.packet(
        s,
        subscribe_packet(&[("r/#", QoS::AtMostOnce), ("r/1", QoS::AtLeastOnce)]),
    );
    let got = h.publishes(s);
    assert_eq!(got.len(), 8);
    for p in &got {
        let want = if p.topic.as_str() == "r/1" {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!((p.topic.as_str(), p.qos), (p.topic.as_str(), want));
    }
}

#[test]
fn a_retained_message_that_does_not_grow_the_store_replaces_its_topic_even_over_the_limit() {
    // Over the byte limit (lowered since, or filled by someone else), a topic kept up to date
    // with values of the same size or smaller is not wiped; a larger one is refused.
    let mut h = Harness::new(Config {
        max_retained_bytes: 10,
        ..Config::default()
    });
    let p = h.connect(V3_1_1, "p", true, None);
    h.publish(p, "r/1", "12345", QoS::AtMostOnce, true, None);
    // `$SYS` messages are not held to the limit: 8 + 28 bytes, over 10.
    let sys = [("$SYS/broker/x".to_string(), "0123456789abcdef".to_string())];
    let now = h.now;
    h.broker.publish_sys(sys, now, &mut h.out);
    assert_eq!(h.broker.retained_count(), 2);
    h.publish(p, "r/1", "54321", QoS::AtMostOnce, true, None);
    h.publish(p, "r/1", "5432", QoS::AtMostOnce, true, None);
    assert_eq!(h.broker.stats().limit_retained_bytes, 0);
    let s = h.connect(V3_1_1, "s", true, None);
    h.subscribe(s, "r/#", QoS::AtMostOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"5432");
    // Larger: not stored, and the superseded "5432" is not kept either.
    h.publish(p, "r/1", "543210", QoS::AtMostOnce, true, None);
    assert_eq!(h.broker.stats().limit_retained_bytes, 1);
    assert_eq!(h.broker.retained_count(), 1, "only the $SYS message");
}

#[test]
fn client_ids_longer_than_the_limit_are_refused() {
    // [MQTT-3.1.3-5] 1 to 23 bytes must be accepted; a server may accept more, up to a limit.
    let mut h = Harness::new(Config {
        max_client_id_len: 24,
        ..Config::default()
    });
    let (_, ack) = h.connect_with(connect(V5, &"x".repeat(24), true));
    assert_eq!(ack.code, 0);
    let (c, ack) = h.connect_with(connect(V5, &"x".repeat(25), true));
    assert_eq!(ack.code, reason::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(h.closed(c));
    let (_, ack) = h.connect_with(connect(V3_1_1, &"y".repeat(25), true));
    assert_eq!(ack.code, reason::v3::IDENTIFIER_REJECTED);
    assert_eq!(h.broker.stats().limit_client_id_len, 2);
}

#[test]
fn new_persistent_sessions_past_the_limit_are_refused() {
    let mut h = Harness::new(Config {
        max_sessions: 2,
        ..Config::default()
    });
    for id in ["a", "b"] {
        let c = h.connect(V3_1_1, id, false, None);
        h.lose(c);
    }
    // A third session that would outlive its connection: 0x97 (v5), 0x03 (3.x).
    let mut c = connect(V5, "c", false);
    c.properties.session_expiry_interval = Some(3600);
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.code, reason::QUOTA_EXCEEDED);
    assert!(h.closed(conn));
    let (_, ack) = h.connect_with(connect(V3_1_1, "d", false));
    assert_eq!(ack.code, reason::v3::SERVER_UNAVAILABLE);
    assert_eq!(h.broker.stats().limit_sessions, 2);
    // Resuming one, and a session that ends with its connection, are not refused.
    let (_, ack) = h.connect_with(connect(V3_1_1, "a", false));
    assert_eq!((ack.code, ack.session_present), (0, true));
    let (e, ack) = h.connect_with(connect(V3_1_1, "e", true));
    assert_eq!(ack.code, 0);
    // `e` again, now asking for a session that outlives the connection: refused before the
    // takeover, so the connection it would have taken over stays.
    let (again, ack) = h.connect_with(connect(V3_1_1, "e", false));
    assert_eq!(ack.code, reason::v3::SERVER_UNAVAILABLE);
    assert!(h.closed(again));
    assert!(!h.closed(e), "the refused CONNECT took the connection over");
    assert_eq!(h.broker.stats().takeovers, 0);
}
