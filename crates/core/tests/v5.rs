//! MQTT 5.0 features of the core, byte-exact at the packet level, citing the spec.

mod harness;

use bytes::Bytes;
use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{
    Ack, Auth, ByteStr, Disconnect, Packet, Properties, PropertyValues, QoS, RetainHandling,
    SubscriptionOptions, reason,
};
use tern_core::{AuthExchange, AuthStep, Config, EnhancedAuth};

#[test]
fn connack_advertises_what_the_broker_does() {
    // MQTT 5.0 section 3.2.2.3
    let config = Config {
        receive_maximum: 20,
        max_packet_size: 4096,
        topic_alias_maximum: 10,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let (_, ack) = h.connect_with(connect(V5, "c", true));
    assert_eq!(ack.properties.receive_maximum, Some(20));
    assert_eq!(ack.properties.maximum_packet_size, Some(4096));
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    // Absent means available / QoS 2 (MQTT 5.0 sections 3.2.2.3.4-3.2.2.3.13).
    assert_eq!(ack.properties.maximum_qos, None);
    assert_eq!(ack.properties.retain_available, None);
    assert_eq!(ack.properties.wildcard_subscription_available, None);
    assert_eq!(ack.properties.shared_subscription_available, None);
    assert_eq!(ack.properties.subscription_identifier_available, None);
}

#[test]
fn server_keep_alive_caps_the_clients() {
    // [MQTT-3.2.2-21] the client must use the Server Keep Alive.
    let mut h = Harness::new(Config {
        max_keep_alive: 30,
        ..Config::default()
    });
    let (_, ack) = h.connect_with(connect(V5, "c", true));
    assert_eq!(ack.properties.server_keep_alive, Some(30));
}

#[test]
fn topic_alias_from_client_is_resolved() {
    // MQTT 5.0 section 3.3.2.3.4: set up with topic + alias, then use with an empty topic.
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "a/#", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    let alias: Properties = PropertyValues {
        topic_alias: Some(3),
        ..Default::default()
    }
    .into();
    h.publish_props(
        p,
        "a/long/topic",
        "1",
        QoS::AtMostOnce,
        false,
        None,
        alias.clone(),
    );
    h.publish_props(p, "", "2", QoS::AtMostOnce, false, None, alias);
    let got = h.publishes(s);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|m| m.topic == "a/long/topic" && m.properties.topic_alias.is_none())
    );
}

#[test]
fn deliveries_without_properties_carry_no_property_set() {
    // Not a protocol rule: a message without properties must not gain an (empty) heap-allocated
    // property set on its way through the broker, for QoS 0 and 1, to 5.0 and 3.1.1 subscribers;
    // one with properties keeps them.
    let mut h = Harness::new(Config::default());
    let s5 = h.connect(V5, "s5", true, None);
    let s3 = h.connect(V3_1_1, "s3", true, None);
    h.subscribe(s5, "a/#", QoS::AtLeastOnce);
    h.subscribe(s3, "a/#", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "a/0", "x", QoS::AtMostOnce, false, None);
    h.publish(p, "a/1", "y", QoS::AtLeastOnce, false, Some(1));
    for s in [s5, s3] {
        let mut got = h.publishes(s);
        assert_eq!(got.len(), 2);
        assert!(got.iter_mut().all(|m| m.properties.values_mut().is_none()));
    }
    let typed: Properties = PropertyValues {
        content_type: Some("text/plain".into()),
        ..Default::default()
    }
    .into();
    h.publish_props(p, "a/2", "z", QoS::AtMostOnce, false, None, typed);
    let got = h.publishes(s5);
    assert_eq!(
        got[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    // A publisher's alias-only property set is empty once the alias is taken off.
    for (qos, id) in [(QoS::AtMostOnce, None), (QoS::AtLeastOnce, Some(2))] {
        let alias: Properties = PropertyValues {
            topic_alias: Some(1),
            ..Default::default()
        }
        .into();
        h.publish_props(p, "a/3", "w", qos, false, id, alias);
        let mut got = h.publishes(s5);
        assert_eq!(got.len(), 1);
        assert!(got[0].properties.values_mut().is_none(), "{:?}", got[0]);
    }
    // Nor does a resend to a returning session gain one.
    for version in [V5, V3_1_1] {
        let id = format!("r{}", version.level());
        let r = h.connect(version, &id, false, Some(600));
        h.subscribe(r, "b", QoS::AtLeastOnce);
        h.publish(p, "b", "v", QoS::AtLeastOnce, false, Some(3));
        assert_eq!(h.publishes(r).len(), 1); // not acknowledged
        h.lose(r);
        let r = h.connect(version, &id, false, Some(600));
        let mut again = h.publishes(r);
        assert_eq!(again.len(), 1);
        assert!(again[0].dup);
        assert!(again[0].properties.values_mut().is_none(), "{:?}", again[0]);
    }
}

#[test]
fn topic_alias_above_maximum_is_0x94() {
    // [MQTT-3.3.2-10]
    let mut h = Harness::new(Config {
        topic_alias_maximum: 5,
        ..Config::default()
    });
    let p = h.connect(V5, "p", true, None);
    let alias: Properties = PropertyValues {
        topic_alias: Some(6),
        ..Default::default()
    }
    .into();
    h.publish_props(p, "t", "x", QoS::AtMostOnce, false, None, alias);
    let sent = h.take(p);
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)] if d.reason == reason::TOPIC_ALIAS_INVALID),
        "{sent:?}"
    );
    assert!(h.closed(p));
}

#[test]
fn unknown_topic_alias_is_a_protocol_error() {
    let mut h = Harness::new(Config::default());
    let p = h.connect(V5, "p", true, None);
    let alias: Properties = PropertyValues {
        topic_alias: Some(1),
        ..Default::default()
    }
    .into();
    h.publish_props(p, "", "x", QoS::AtMostOnce, false, None, alias);
    assert!(
        matches!(&h.take(p)[..], [Packet::Disconnect(d)] if d.reason == reason::PROTOCOL_ERROR)
    );
}

#[test]
fn topic_aliases_towards_a_client_that_allows_them() {
    // MQTT 5.0 section 3.3.2.3.4, server to client.
    let mut h = Harness::new(Config::default());
    let mut c = connect(V5, "s", true);
    c.properties.topic_alias_maximum = Some(1);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "#", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    for t in ["x/1", "x/1", "x/2"] {
        h.publish(p, t, "m", QoS::AtMostOnce, false, None);
    }
    let got = h.publishes(s);
    assert_eq!(
        (got[0].topic.as_str(), got[0].properties.topic_alias),
        ("x/1", Some(1))
    );
    assert_eq!(
        (got[1].topic.as_str(), got[1].properties.topic_alias),
        ("", Some(1))
    );
    assert_eq!(
        (got[2].topic.as_str(), got[2].properties.topic_alias),
        ("x/2", None),
        "only one alias allowed"
    );
}

#[test]
fn the_broker_uses_no_more_aliases_than_it_grants() {
    // A client may allow 65,535 aliases; each one the broker sets up is a topic it keeps for
    // the connection. It uses at most its own `topic_alias_maximum` (2 here).
    let mut h = Harness::new(Config {
        topic_alias_maximum: 2,
        ..Config::default()
    });
    let mut c = connect(V5, "s", true);
    c.properties.topic_alias_maximum = Some(u16::MAX);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "#", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    for t in ["x/1", "x/2", "x/3", "x/1", "x/3"] {
        h.publish(p, t, "m", QoS::AtMostOnce, false, None);
    }
    let got: Vec<_> = h
        .publishes(s)
        .iter()
        .map(|p| (p.topic.to_string(), p.properties.topic_alias))
        .collect();
    let expect = [
        ("x/1", Some(1)),
        ("x/2", Some(2)),
        ("x/3", None),
        ("", Some(1)),
        ("x/3", None),
    ];
    assert_eq!(
        got,
        expect.map(|(t, a)| (t.to_string(), a)),
        "aliases 1..=2 only: the broker's own limit, under the client's ([MQTT-3.3.2-11])"
    );
}

#[test]
fn receive_maximum_towards_client_is_honoured() {
    // [MQTT-3.3.4-9] never more unacknowledged QoS 1/2 messages than the client's Receive Maximum.
    let mut h = Harness::new(Config::default());
    let mut c = connect(V5, "s", true);
    c.properties.receive_maximum = Some(2);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    for i in 1..=5u16 {
        h.publish(p, "t", "m", QoS::AtLeastOnce, false, Some(i));
    }
    let got = h.publishes(s);
    assert_eq!(got.len(), 2);
    h.ack(s, &got[0]);
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn client_exceeding_our_receive_maximum_gets_0x93() {
    // [MQTT-3.3.4-8]
    let mut h = Harness::new(Config {
        receive_maximum: 2,
        ..Config::default()
    });
    let p = h.connect(V5, "p", true, None);
    for i in 1..=3u16 {
        h.publish(p, "t", "m", QoS::ExactlyOnce, false, Some(i));
    }
    let sent = h.take(p);
    assert!(
        matches!(sent.last(), Some(Packet::Disconnect(d)) if d.reason == reason::RECEIVE_MAXIMUM_EXCEEDED),
        "{sent:?}"
    );
}

#[test]
fn packet_too_large_for_the_client_is_not_sent() {
    // [MQTT-3.1.2-24] (v5): discarded as if delivered.
    let mut h = Harness::new(Config::default());
    let mut c = connect(V5, "s", true);
    c.properties.maximum_packet_size = Some(64);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", &"x".repeat(100), QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "t", "small", QoS::AtLeastOnce, false, Some(2));
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"small");
    assert_eq!(h.broker.stats().dropped_too_large, 1);
}

#[test]
fn packet_too_large_for_the_client_is_not_sent_at_qos_0() {
    // [MQTT-3.1.2-24] (v5): a message forwarded unchanged to several subscribers is measured
    // for each of them; the one with the limit loses only what exceeds it.
    let mut h = Harness::new(Config::default());
    let mut limited = Vec::new();
    for (id, version) in [("s1", V5), ("s2", V5), ("s3", V3_1_1)] {
        let mut c = connect(version, id, true);
        if version == V5 {
            c.properties.maximum_packet_size = Some(64);
        }
        let (s, _) = h.connect_with(c);
        h.subscribe(s, "t", QoS::AtMostOnce);
        limited.push(s);
    }
    let other = h.connect(V5, "o", true, None);
    h.subscribe(other, "t", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    // A v5 QoS 0 PUBLISH on "t" is 6 bytes and the payload (fixed header 2, topic 3, property
    // length 1): 58 bytes fit in 64 exactly; 59 do not, though they would in 3.1.1's encoding.
    for n in [100, 59, 58] {
        h.publish(p, "t", &"x".repeat(n), QoS::AtMostOnce, false, None);
    }
    h.publish(p, "t", "small", QoS::AtMostOnce, false, None);
    for s in &limited[..2] {
        let got: Vec<usize> = h.publishes(*s).iter().map(|p| p.payload.len()).collect();
        assert_eq!(got, [58, 5]);
    }
    // The 3.1.1 subscriber has no Maximum Packet Size to send.
    assert_eq!(h.publishes(limited[2]).len(), 4);
    assert_eq!(h.publishes(other).len(), 4);
    assert_eq!(h.broker.stats().dropped_too_large, 4);
}

#[test]
fn qos_0_forward_carries_the_expiry_to_v5_and_no_properties_to_v3() {
    // [MQTT-3.3.2-6] The Message Expiry Interval is forwarded (what is left of it); an MQTT
    // 3.1.1 subscriber of the same message gets a PUBLISH without properties. Both subscribers
    // get the one message the core routes, built for each protocol.
    let mut h = Harness::new(Config::default());
    let s5 = h.connect(V5, "s5", true, None);
    h.subscribe(s5, "t", QoS::AtMostOnce);
    let s3 = h.connect(V3_1_1, "s3", true, None);
    h.subscribe(s3, "t", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    let properties: Properties = PropertyValues {
        message_expiry_interval: Some(30),
        content_type: Some(ByteStr::from("text/plain")),
        ..Default::default()
    }
    .into();
    h.publish_props(p, "t", "m", QoS::AtMostOnce, true, None, properties);
    let got5 = h.publishes(s5);
    assert_eq!(got5.len(), 1);
    assert_eq!(got5[0].properties.message_expiry_interval, Some(30));
    assert_eq!(
        got5[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    // [MQTT-3.3.1-12] A live message is forwarded with RETAIN 0 (no Retain As Published).
    assert!(!got5[0].retain);
    let got3 = h.publishes(s3);
    assert_eq!(got3.len(), 1);
    assert_eq!(got3[0].properties, Properties::default());
    assert_eq!(&got3[0].payload[..], b"m");
}

/// [MQTT-3.8.3-3] No Local depends on the publisher, not only on the topic: the core reuses the
/// last topic's matches (`route_cache`), and one list must serve a publisher that is excluded
/// and one that is not, in either order, and a session with a second filter that is not
/// No Local still gets one copy ([MQTT-3.3.4-2]).
#[test]
fn no_local_applies_per_publisher_when_a_topic_is_routed_again() {
    let mut h = Harness::new(Config::default());
    let c = h.connect(V5, "c", true, None);
    let o = h.connect(V5, "o", true, None);
    let no_local = SubscriptionOptions {
        no_local: true,
        ..Default::default()
    };
    h.subscribe_opts(c, "nl/t", no_local, None);
    h.publish(c, "nl/t", "mine", QoS::AtMostOnce, false, None);
    h.publish(o, "nl/t", "theirs", QoS::AtMostOnce, false, None);
    h.publish(c, "nl/t", "mine again", QoS::AtMostOnce, false, None);
    let got = h.publishes(c);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&got[0].payload[..], b"theirs");
    // A second filter without No Local: c now gets its own messages, once each.
    h.subscribe_opts(c, "nl/+", SubscriptionOptions::default(), None);
    h.publish(c, "nl/t", "mine", QoS::AtMostOnce, false, None);
    h.publish(c, "nl/t", "mine again", QoS::AtMostOnce, false, None);
    let got = h.publishes(c);
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn no_local_retain_as_published_and_retain_handling() {
    let mut h = Harness::new(Config::default());
    let c = h.connect(V5, "c", true, None);
    // [MQTT-3.8.3-3] No Local: own messages are not delivered back.
    h.subscribe_opts(
        c,
        "nl",
        SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
        None,
    );
    h.publish(c, "nl", "mine", QoS::AtMostOnce, false, None);
    assert!(h.publishes(c).is_empty());
    // [MQTT-3.3.1-12] Retain As Published keeps the retain flag on live messages.
    let o = h.connect(V5, "o", true, None);
    h.subscribe_opts(
        o,
        "rap",
        SubscriptionOptions {
            retain_as_published: true,
            ..Default::default()
        },
        None,
    );
    h.subscribe_opts(o, "norap", SubscriptionOptions::default(), None);
    h.publish(c, "rap", "r", QoS::AtMostOnce, true, None);
    h.publish(c, "norap", "r", QoS::AtMostOnce, true, None);
    let got = h.publishes(o);
    assert!(got[0].retain && !got[1].retain, "{got:?}");
    // [MQTT-3.3.1-10] Retain Handling 1: only for a new subscription; [MQTT-3.3.1-11] 2: never.
    let n = h.connect(V5, "n", true, None);
    let rh1 = SubscriptionOptions {
        retain_handling: RetainHandling::OnNewSubscribe,
        ..Default::default()
    };
    h.subscribe_opts(n, "rap", rh1, None);
    assert_eq!(h.publishes(n).len(), 1);
    h.subscribe_opts(n, "rap", rh1, None);
    assert_eq!(h.publishes(n).len(), 0);
    let rh2 = SubscriptionOptions {
        retain_handling: RetainHandling::Never,
        ..Default::default()
    };
    h.subscribe_opts(n, "norap", rh2, None);
    assert_eq!(h.publishes(n).len(), 0);
}

#[test]
fn overlapping_subscriptions_carry_every_identifier() {
    // [MQTT-3.3.4-3] / [MQTT-3.3.4-5] one message with all matching subscription identifiers.
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe_opts(s, "a/+", SubscriptionOptions::default(), Some(7));
    h.subscribe_opts(
        s,
        "a/#",
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
        Some(9),
    );
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "a/b", "m", QoS::AtLeastOnce, false, Some(1));
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![7, 9]);
}

#[test]
fn properties_are_forwarded_unaltered_and_in_order() {
    // [MQTT-3.3.2-17] [MQTT-3.3.2-18] user properties in order; content type, response topic,
    // correlation data, payload format indicator forwarded.
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "req", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    let props: Properties = PropertyValues {
        payload_format_indicator: Some(1),
        content_type: Some(ByteStr::from("text/plain")),
        response_topic: Some(ByteStr::from("resp/p")),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        ..Default::default()
    }
    .into();
    h.publish_props(
        p,
        "req",
        "hello",
        QoS::AtMostOnce,
        false,
        None,
        props.clone(),
    );
    let got = h.publishes(s);
    assert_eq!(got[0].properties, props);
}

#[test]
fn invalid_utf8_with_payload_format_indicator_is_refused_with_0x99() {
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    let props: Properties = PropertyValues {
        payload_format_indicator: Some(1),
        ..Default::default()
    }
    .into();
    h.packet(
        p,
        Packet::Publish(tern_codec::Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            packet_id: Some(4),
            properties: props,
            payload: Bytes::from_static(b"\xff\xfe"),
            ..Default::default()
        }),
    );
    assert!(
        matches!(&h.take(p)[..], [Packet::PubAck(a)] if a.reason == reason::PAYLOAD_FORMAT_INVALID)
    );
    assert!(h.publishes(s).is_empty());
}

#[test]
fn response_information_when_requested() {
    let mut h = Harness::new(Config::default());
    let mut c = connect(V5, "rr", true);
    c.properties.request_response_information = Some(1);
    let (_, ack) = h.connect_with(c);
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("response/rr")
    );
    let (_, ack) = h.connect_with(connect(V5, "plain", true));
    assert_eq!(
        ack.properties.response_information, None,
        "[MQTT-3.1.2-28] only when asked"
    );
}

#[test]
fn server_disconnect_carries_a_reason_string() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V5, "dup", true, None);
    h.connect(V5, "dup", true, None);
    match &h.take(a)[..] {
        [Packet::Disconnect(d)] => {
            assert_eq!(d.reason, reason::SESSION_TAKEN_OVER);
            assert!(d.properties.reason_string.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    // MQTT 5.0 section 3.14.2.1, reason 0x04.
    let mut h = Harness::new(Config::default());
    let w = h.connect(V5, "w", true, None);
    h.subscribe(w, "will", QoS::AtMostOnce);
    let mut c = connect(V5, "d", true);
    c.will = Some(will("will", "bye", None));
    let (d, _) = h.connect_with(c);
    h.packet(
        d,
        Packet::Disconnect(Disconnect {
            reason: reason::DISCONNECT_WITH_WILL,
            properties: Properties::default(),
        }),
    );
    assert_eq!(h.publishes(w).len(), 1);
}

#[test]
fn resubscribing_on_a_resumed_session_does_not_duplicate_queued_messages() {
    let mut h = Harness::new(Config::default());
    let s = h.connect(V3_1_1, "s", false, None);
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V3_1_1, "p", true, None);
    for i in 1..=3u16 {
        h.publish(p, "q", &format!("{i}"), QoS::AtLeastOnce, false, Some(i));
    }
    let s = h.connect(V3_1_1, "s", false, None);
    h.subscribe(s, "q", QoS::AtLeastOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn optional_retry_resends_to_311_clients_but_never_to_v5() {
    let mut h = Harness::new(Config {
        retry_interval: 10,
        ..Config::default()
    });
    let old = h.connect(V3_1_1, "old", true, None);
    let new = h.connect(V5, "new", true, None);
    h.subscribe(old, "t", QoS::AtLeastOnce);
    h.subscribe(new, "t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", "m", QoS::AtLeastOnce, false, Some(1));
    let first = h.publishes(old);
    assert_eq!(h.publishes(new).len(), 1);
    h.advance(10);
    let again = h.publishes(old);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    assert_eq!(again[0].packet_id, first[0].packet_id);
    assert!(
        h.publishes(new).is_empty(),
        "[MQTT-4.4.0-1] v5: no resend on the same connection"
    );
    h.ack(old, &again[0]);
    h.advance(10);
    assert!(h.publishes(old).is_empty());
}

struct Toy;
struct ToyExchange;

impl EnhancedAuth for Toy {
    fn method(&self) -> &str {
        "TOY"
    }
    fn start(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&[u8]>,
    ) -> (Box<dyn AuthExchange>, AuthStep) {
        (
            Box::new(ToyExchange),
            AuthStep::Continue(Bytes::from_static(b"challenge")),
        )
    }
}

impl AuthExchange for ToyExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        if data == Some(b"secret") {
            AuthStep::Success(Some(Bytes::from_static(b"welcome")))
        } else {
            AuthStep::Fail(reason::NOT_AUTHORIZED)
        }
    }
}

fn auth(method: &str, data: &'static [u8]) -> Packet {
    let properties: Properties = PropertyValues {
        authentication_method: Some(method.into()),
        authentication_data: Some(Bytes::from_static(data)),
        ..Default::default()
    }
    .into();
    Packet::Auth(Auth {
        reason: reason::CONTINUE_AUTHENTICATION,
        properties,
    })
}

#[test]
fn enhanced_authentication_exchange() {
    // MQTT 5.0 section 4.12: CONNECT -> AUTH 0x18 -> AUTH 0x18 -> CONNACK.
    let mut h = Harness::new(Config::default());
    h.broker.add_auth_method(Box::new(Toy));
    let mut c = connect(V5, "a", true);
    c.properties.authentication_method = Some("TOY".into());
    h.packet(1, Packet::Connect(Box::new(c.clone())));
    match &h.take(1)[..] {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason, reason::CONTINUE_AUTHENTICATION);
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"challenge"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    h.packet(1, auth("TOY", b"secret"));
    match &h.take(1)[..] {
        [Packet::ConnAck(a)] => {
            assert_eq!(a.code, 0);
            assert_eq!(a.properties.authentication_method.as_deref(), Some("TOY"));
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"welcome"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    // A wrong answer is refused.
    h.packet(2, Packet::Connect(Box::new(c)));
    h.take(2);
    h.packet(2, auth("TOY", b"guess"));
    assert!(matches!(&h.take(2)[..], [Packet::ConnAck(a)] if a.code == reason::NOT_AUTHORIZED));
    assert!(h.closed(2));
}

#[test]
fn an_authentication_exchange_left_unanswered_is_refused_after_the_timeout() {
    // Until CONNACK a connection has no keep alive: a client that starts an exchange and
    // says nothing more would hold its connection and CONNECT for good.
    let mut h = Harness::new(Config {
        auth_timeout_secs: 5,
        ..Config::default()
    });
    h.broker.add_auth_method(Box::new(Toy));
    let mut c = connect(V5, "a", true);
    c.keep_alive = 0;
    c.properties.authentication_method = Some("TOY".into());
    h.packet(1, Packet::Connect(Box::new(c)));
    assert!(matches!(&h.take(1)[..], [Packet::Auth(_)]));
    h.advance(4);
    assert!(h.take(1).is_empty(), "refused before its time");
    assert!(!h.closed(1));
    h.advance(1);
    assert!(
        matches!(&h.take(1)[..], [Packet::ConnAck(a)] if a.code == reason::NOT_AUTHORIZED),
        "no CONNACK 0x87 after the timeout (MQTT 5.0 section 4.12: the server may end the exchange with a refusal)"
    );
    assert!(h.closed(1));
    assert_eq!(h.broker.stats().auth_failures, 1);
}

#[test]
fn unknown_authentication_method_gets_0x8c() {
    let mut h = Harness::new(Config::default());
    let mut c = connect(V5, "a", true);
    c.properties.authentication_method = Some("NOPE".into());
    h.packet(1, Packet::Connect(Box::new(c)));
    assert!(
        matches!(&h.take(1)[..], [Packet::ConnAck(a)] if a.code == reason::BAD_AUTHENTICATION_METHOD)
    );
    assert!(h.closed(1));
}

#[test]
fn pubrec_with_error_ends_the_delivery() {
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", "m", QoS::ExactlyOnce, false, Some(1));
    let got = h.publishes(s);
    let rec = Ack {
        packet_id: got[0].packet_id.unwrap(),
        reason: reason::UNSPECIFIED_ERROR,
        properties: Properties::default(),
    };
    h.packet(s, Packet::PubRec(rec));
    assert!(h.take(s).is_empty(), "no PUBREL after a failed PUBREC");
}
