//! Time-based behaviour of the core, driven with an explicit clock.

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Properties, PropertyValues, QoS};
use tern_core::Config;

/// A property set with only a Message Expiry Interval of `secs`.
fn expires_in(secs: u32) -> Properties {
    PropertyValues {
        message_expiry_interval: Some(secs),
        ..Default::default()
    }
    .into()
}

#[test]
fn v5_session_expires_after_its_interval() {
    let mut h = Harness::new(Config::default());
    let c = h.connect(V5, "exp", false, Some(10));
    h.subscribe(c, "t", QoS::AtLeastOnce);
    h.lose(c);
    h.advance(9);
    assert!(
        h.broker.session("exp").is_some(),
        "still within the interval"
    );
    h.advance(1);
    assert!(h.broker.session("exp").is_none(), "expired after 10 s");
    assert_eq!(
        h.broker.subscription_count(),
        0,
        "its subscriptions are gone too"
    );
}

#[test]
fn v3_persistent_session_gets_the_configured_expiry() {
    let config = Config {
        v3_session_expiry: 100,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let c = h.connect(V3_1_1, "old", false, None);
    h.lose(c);
    h.advance(99);
    assert!(h.broker.session("old").is_some());
    h.advance(1);
    assert!(h.broker.session("old").is_none());
}

#[test]
fn v5_session_expiry_can_be_changed_at_disconnect() {
    // MQTT 5.0 section 3.14.2.2.2
    let mut h = Harness::new(Config::default());
    let c = h.connect(V5, "chg", false, Some(10));
    let mut d = tern_codec::Disconnect::default();
    d.properties.session_expiry_interval = Some(1000);
    h.packet(c, tern_codec::Packet::Disconnect(d));
    h.advance(500);
    assert!(h.broker.session("chg").is_some());
    h.advance(500);
    assert!(h.broker.session("chg").is_none());
}

#[test]
fn disconnect_cannot_raise_expiry_from_zero() {
    // [MQTT-3.14.2-2]
    let mut h = Harness::new(Config::default());
    let c = h.connect(V5, "zero", false, None);
    let mut d = tern_codec::Disconnect::default();
    d.properties.session_expiry_interval = Some(1000);
    h.packet(c, tern_codec::Packet::Disconnect(d));
    let sent = h.take(c);
    assert!(
        matches!(&sent[..], [tern_codec::Packet::Disconnect(d)] if d.reason == 0x82),
        "{sent:?}"
    );
}

#[test]
fn delayed_will_is_published_after_the_delay() {
    let mut h = Harness::new(Config::default());
    let w = h.connect(V5, "watch", true, None);
    h.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut c = connect(V5, "dev", true);
    c.properties.session_expiry_interval = Some(100);
    c.will = Some(will("will/dev", "bye", Some(5)));
    let (dev, _) = h.connect_with(c);
    h.lose(dev);
    h.advance(4);
    assert!(h.publishes(w).is_empty());
    h.advance(1);
    let got = h.publishes(w);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"bye");
}

#[test]
fn delayed_will_is_not_published_when_the_client_returns_in_time() {
    let mut h = Harness::new(Config::default());
    let w = h.connect(V5, "watch", true, None);
    h.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut c = connect(V5, "dev", false);
    c.properties.session_expiry_interval = Some(100);
    c.will = Some(will("will/dev", "bye", Some(5)));
    let (dev, _) = h.connect_with(c);
    h.lose(dev);
    h.advance(3);
    h.connect(V5, "dev", false, Some(100));
    h.advance(10);
    assert!(h.publishes(w).is_empty());
}

#[test]
fn will_is_published_at_session_end_when_that_comes_first() {
    // The will is sent at the earlier of the will delay and the session's end.
    let mut h = Harness::new(Config::default());
    let w = h.connect(V5, "watch", true, None);
    h.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut c = connect(V5, "dev", true);
    c.properties.session_expiry_interval = Some(2);
    c.will = Some(will("will/dev", "bye", Some(60)));
    let (dev, _) = h.connect_with(c);
    h.lose(dev);
    h.advance(2);
    assert_eq!(h.publishes(w).len(), 1);
}

#[test]
fn expired_queued_message_is_not_delivered_and_the_interval_is_reduced() {
    // [MQTT-3.3.2-5] not delivered after expiry; [MQTT-3.3.2-6] forwarded interval reduced.
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "sub", false, Some(1000));
    h.subscribe(s, "e/#", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V5, "pub", true, None);
    let short = expires_in(5);
    let long = expires_in(100);
    h.publish_props(p, "e/short", "s", QoS::AtLeastOnce, false, Some(1), short);
    h.publish_props(p, "e/long", "l", QoS::AtLeastOnce, false, Some(2), long);
    h.advance(10);
    let s = h.connect(V5, "sub", false, Some(1000));
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "e/long");
    assert_eq!(got[0].properties.message_expiry_interval, Some(90));
}

#[test]
fn expired_retained_message_is_not_sent() {
    let mut h = Harness::new(Config::default());
    let p = h.connect(V5, "pub", true, None);
    let props = expires_in(5);
    h.publish_props(p, "r/x", "v", QoS::AtMostOnce, true, None, props);
    h.advance(3);
    let s = h.connect(V5, "sub", true, None);
    h.subscribe(s, "r/#", QoS::AtMostOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.message_expiry_interval, Some(2));
    h.advance(60);
    assert_eq!(h.broker.retained_count(), 0, "swept from the store");
}

#[test]
fn a_message_sent_before_it_expired_is_resent_with_at_least_one_second_left() {
    // [MQTT-4.4.0-1] An unacknowledged PUBLISH is resent on reconnection; it was already sent,
    // so its expiry no longer drops it, and the interval it carries is never 0.
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", false, Some(600));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    let expiring = expires_in(10);
    h.publish_props(p, "t", "x", QoS::AtLeastOnce, false, Some(1), expiring);
    let first = h.publishes(s);
    assert_eq!(first[0].properties.message_expiry_interval, Some(10));
    h.lose(s);
    h.advance(20);
    let s = h.connect(V5, "s", false, Some(600));
    let again = h.publishes(s);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    assert_eq!(again[0].properties.message_expiry_interval, Some(1));
}
