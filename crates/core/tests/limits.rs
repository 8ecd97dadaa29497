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
        "two 4-byte payloads fit in 10 bytes"
    );
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
