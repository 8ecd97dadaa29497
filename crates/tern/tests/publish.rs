//! Byte-level PUBLISH flows over TCP: QoS 0/1/2 both ways, session queues, redelivery, limits.

mod common;

use common::*;
use tern::config::Config;
use tern_client::builder;
use tern_codec::{Ack, Packet, QoS};

fn publish(topic: &str, payload: &str, qos: QoS, pid: Option<u16>) -> Packet {
    builder::publish(topic, payload.to_string(), qos, false, pid)
}

#[tokio::test]
async fn qos_0_1_2_round_trip_with_minimum_qos() {
    // [MQTT-3.8.4-6] delivered QoS is the minimum of publish and subscription QoS.
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "sub", true).await;
    assert_eq!(
        subscribe(&mut sub, 1, &[("q/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let (mut publ, _) = b.connect(V3_1_1, "pub", true).await;

    publ.send(&publish("q/0", "zero", QoS::AtMostOnce, None))
        .await
        .unwrap();
    let p = next_publish(&mut sub).await;
    assert_eq!(
        (p.qos, &p.payload[..], p.packet_id),
        (QoS::AtMostOnce, &b"zero"[..], None)
    );

    publ.send(&publish("q/1", "one", QoS::AtLeastOnce, Some(10)))
        .await
        .unwrap();
    assert_eq!(next(&mut publ).await, Packet::PubAck(Ack::new(10)));
    let p = next_publish(&mut sub).await;
    assert_eq!((p.qos, &p.payload[..]), (QoS::AtLeastOnce, &b"one"[..]));
    sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
        .await
        .unwrap();

    publ.send(&publish("q/2", "two", QoS::ExactlyOnce, Some(11)))
        .await
        .unwrap();
    assert_eq!(next(&mut publ).await, Packet::PubRec(Ack::new(11)));
    publ.send(&Packet::PubRel(Ack::new(11))).await.unwrap();
    assert_eq!(next(&mut publ).await, Packet::PubComp(Ack::new(11)));
    let p = next_publish(&mut sub).await;
    assert_eq!(
        (p.qos, &p.payload[..]),
        (QoS::AtLeastOnce, &b"two"[..]),
        "downgraded to the subscription's QoS 1"
    );
}

#[tokio::test]
async fn qos2_inbound_is_forwarded_exactly_once() {
    // [MQTT-4.3.3-9] a re-sent PUBLISH with the same id before PUBREL is not forwarded again.
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "sub2", true).await;
    subscribe(&mut sub, 1, &[("x", QoS::AtMostOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "pub2", true).await;
    publ.send(&publish("x", "once", QoS::ExactlyOnce, Some(5)))
        .await
        .unwrap();
    assert_eq!(next(&mut publ).await, Packet::PubRec(Ack::new(5)));
    let mut again = builder::publish("x", "once", QoS::ExactlyOnce, false, Some(5));
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    publ.send(&again).await.unwrap();
    assert_eq!(next(&mut publ).await, Packet::PubRec(Ack::new(5)));
    publ.send(&Packet::PubRel(Ack::new(5))).await.unwrap();
    assert_eq!(next(&mut publ).await, Packet::PubComp(Ack::new(5)));
    assert_eq!(&next_publish(&mut sub).await.payload[..], b"once");
    nothing(&mut sub).await;
}

#[tokio::test]
async fn an_mqtt_3_clients_burst_of_qos2_publishes_is_taken_whole() {
    // MQTT 3.1.1 has no Receive Maximum: a client may send as many QoS 2 PUBLISHes as it has
    // packet ids before it sends a PUBREL (MQTT.js and others do, in a burst). tern used to
    // close such a client at 128 unreleased (our MQTT 5 Receive Maximum); Mosquitto takes them.
    // [MQTT-4.3.3-2] Each gets its PUBREC; each PUBREL its PUBCOMP; each is delivered once.
    const N: u16 = 1_000;
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "burst-sub", true).await;
    subscribe(&mut sub, 1, &[("burst/#", QoS::AtMostOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "burst-pub", true).await;
    let mut burst = bytes::BytesMut::new();
    for pid in 1..=N {
        let p = publish(&format!("burst/{pid}"), "x", QoS::ExactlyOnce, Some(pid));
        tern_codec::encode_packet(&p, tern_codec::ProtocolVersion::V3_1_1, &mut burst).unwrap();
    }
    publ.send_raw(&burst).await.unwrap();
    for pid in 1..=N {
        assert_eq!(next(&mut publ).await, Packet::PubRec(Ack::new(pid)));
    }
    for pid in 1..=N {
        publ.send(&Packet::PubRel(Ack::new(pid))).await.unwrap();
    }
    for pid in 1..=N {
        assert_eq!(next(&mut publ).await, Packet::PubComp(Ack::new(pid)));
    }
    for pid in 1..=N {
        assert_eq!(
            next_publish(&mut sub).await.topic.as_str(),
            format!("burst/{pid}")
        );
    }
    nothing(&mut sub).await;
}

#[tokio::test]
async fn qos2_outbound_flow() {
    // [MQTT-4.3.3-1..] PUBLISH -> PUBREC -> PUBREL -> PUBCOMP towards the subscriber.
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V5, "sub3", true).await;
    subscribe(&mut sub, 1, &[("y", QoS::ExactlyOnce)]).await;
    let (mut publ, _) = b.connect(V5, "pub3", true).await;
    publ.send(&publish("y", "exact", QoS::ExactlyOnce, Some(1)))
        .await
        .unwrap();
    let p = next_publish(&mut sub).await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let pid = p.packet_id.unwrap();
    assert_ne!(pid, 0, "[MQTT-2.2.1-3] non-zero packet id");
    sub.send(&Packet::PubRec(Ack::new(pid))).await.unwrap();
    assert_eq!(next(&mut sub).await, Packet::PubRel(Ack::new(pid)));
    sub.send(&Packet::PubComp(Ack::new(pid))).await.unwrap();
    nothing(&mut sub).await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_in_order_on_reconnect() {
    // [MQTT-4.4.0-1] [MQTT-4.6.0-1]
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "resend", false).await;
    subscribe(&mut sub, 1, &[("r", QoS::ExactlyOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "resend-pub", true).await;
    for (i, qos) in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce]
        .into_iter()
        .enumerate()
    {
        publ.send(&publish("r", &format!("m{i}"), qos, Some(i as u16 + 1)))
            .await
            .unwrap();
        next(&mut publ).await; // PUBACK / PUBREC
    }
    let first: Vec<_> = [
        next_publish(&mut sub).await,
        next_publish(&mut sub).await,
        next_publish(&mut sub).await,
    ]
    .into();
    assert!(first.iter().all(|p| !p.dup));
    sub.drop_connection().await;

    let (mut sub, ack) = b.connect(V3_1_1, "resend", false).await;
    assert!(ack.session_present);
    for (i, orig) in first.iter().enumerate() {
        let p = next_publish(&mut sub).await;
        assert!(p.dup, "[MQTT-3.3.1-1] DUP set on re-delivery");
        assert_eq!(p.packet_id, orig.packet_id);
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
    }
}

#[tokio::test]
async fn pubrel_is_resent_on_reconnect() {
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "rel", false).await;
    subscribe(&mut sub, 1, &[("rel", QoS::ExactlyOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "rel-pub", true).await;
    publ.send(&publish("rel", "m", QoS::AtLeastOnce, Some(1)))
        .await
        .unwrap();
    // Publish at QoS 1 reaches a QoS 2 subscription at QoS 1; use QoS 2 to get a PUBREL.
    publ.send(&publish("rel", "m2", QoS::ExactlyOnce, Some(2)))
        .await
        .unwrap();
    let p1 = next_publish(&mut sub).await;
    sub.send(&Packet::PubAck(Ack::new(p1.packet_id.unwrap())))
        .await
        .unwrap();
    let p2 = next_publish(&mut sub).await;
    let pid = p2.packet_id.unwrap();
    sub.send(&Packet::PubRec(Ack::new(pid))).await.unwrap();
    assert_eq!(next(&mut sub).await, Packet::PubRel(Ack::new(pid)));
    sub.drop_connection().await;
    let (mut sub, _) = b.connect(V3_1_1, "rel", false).await;
    assert_eq!(next(&mut sub).await, Packet::PubRel(Ack::new(pid)));
    sub.send(&Packet::PubComp(Ack::new(pid))).await.unwrap();
    nothing(&mut sub).await;
}

#[tokio::test]
async fn offline_session_queues_qos1_but_not_qos0() {
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "away", false).await;
    subscribe(&mut sub, 1, &[("away/#", QoS::AtLeastOnce)]).await;
    sub.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
    sub.expect_closed(WAIT).await.unwrap();

    let (mut publ, _) = b.connect(V3_1_1, "away-pub", true).await;
    publ.send(&publish("away/0", "lost", QoS::AtMostOnce, None))
        .await
        .unwrap();
    for i in 1..=3u16 {
        publ.send(&publish(
            "away/1",
            &format!("kept{i}"),
            QoS::AtLeastOnce,
            Some(i),
        ))
        .await
        .unwrap();
        assert_eq!(next(&mut publ).await, Packet::PubAck(Ack::new(i)));
    }
    let (mut sub, ack) = b.connect(V3_1_1, "away", false).await;
    assert!(ack.session_present);
    for i in 1..=3 {
        let p = next_publish(&mut sub).await;
        assert_eq!(&p.payload[..], format!("kept{i}").as_bytes());
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
            .await
            .unwrap();
    }
    nothing(&mut sub).await;
}

#[tokio::test]
async fn queue_limit_drops_beyond_max_queued_messages() {
    let mut config = Config::default();
    config.limits.max_queued_messages = 5;
    config.limits.max_inflight = 5;
    let b = TestBroker::with_config(config).await;
    let (mut sub, _) = b.connect(V3_1_1, "small", false).await;
    subscribe(&mut sub, 1, &[("s", QoS::AtLeastOnce)]).await;
    sub.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
    sub.expect_closed(WAIT).await.unwrap();
    let (mut publ, _) = b.connect(V3_1_1, "small-pub", true).await;
    for i in 1..=10u16 {
        publ.send(&publish("s", &format!("{i}"), QoS::AtLeastOnce, Some(i)))
            .await
            .unwrap();
        next(&mut publ).await;
    }
    let (mut sub, _) = b.connect(V3_1_1, "small", false).await;
    for i in 1..=5 {
        assert_eq!(
            &next_publish(&mut sub).await.payload[..],
            format!("{i}").as_bytes()
        );
    }
    nothing(&mut sub).await;
}

#[tokio::test]
async fn inflight_window_limits_unacknowledged_deliveries() {
    let mut config = Config::default();
    config.limits.max_inflight = 2;
    let b = TestBroker::with_config(config).await;
    let (mut sub, _) = b.connect(V3_1_1, "win", true).await;
    subscribe(&mut sub, 1, &[("w", QoS::AtLeastOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "win-pub", true).await;
    for i in 1..=4u16 {
        publ.send(&publish("w", &format!("{i}"), QoS::AtLeastOnce, Some(i)))
            .await
            .unwrap();
        next(&mut publ).await;
    }
    let a = next_publish(&mut sub).await;
    let _b2 = next_publish(&mut sub).await;
    nothing(&mut sub).await;
    sub.send(&Packet::PubAck(Ack::new(a.packet_id.unwrap())))
        .await
        .unwrap();
    assert_eq!(
        &next_publish(&mut sub).await.payload[..],
        b"3",
        "order is kept [MQTT-4.6.0-*]"
    );
    nothing(&mut sub).await;
}

#[tokio::test]
async fn new_subscription_to_same_filter_replaces_it() {
    // [MQTT-3.8.4-3]
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "rep", true).await;
    subscribe(&mut sub, 1, &[("rep", QoS::AtMostOnce)]).await;
    subscribe(&mut sub, 2, &[("rep", QoS::AtLeastOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "rep-pub", true).await;
    publ.send(&publish("rep", "x", QoS::AtLeastOnce, Some(1)))
        .await
        .unwrap();
    let p = next_publish(&mut sub).await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
        .await
        .unwrap();
    nothing(&mut sub).await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    // [MQTT-3.3.5-1]
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "over", true).await;
    let codes = subscribe(
        &mut sub,
        1,
        &[
            ("o/#", QoS::AtMostOnce),
            ("o/+", QoS::AtLeastOnce),
            ("o/x", QoS::AtMostOnce),
        ],
    )
    .await;
    assert_eq!(codes, vec![0, 1, 0]);
    let (mut publ, _) = b.connect(V3_1_1, "over-pub", true).await;
    publ.send(&publish("o/x", "x", QoS::ExactlyOnce, Some(1)))
        .await
        .unwrap();
    let p = next_publish(&mut sub).await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
        .await
        .unwrap();
    nothing(&mut sub).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    // [MQTT-3.10.4-4] UNSUBACK; [MQTT-3.10.4-1] the subscription is deleted.
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "uns", true).await;
    subscribe(&mut sub, 1, &[("u", QoS::AtMostOnce)]).await;
    sub.send(&builder::unsubscribe(2, &["u", "never-subscribed"]))
        .await
        .unwrap();
    match next(&mut sub).await {
        Packet::UnsubAck(a) => assert_eq!(a.packet_id, 2),
        other => panic!("{other:?}"),
    }
    let (mut publ, _) = b.connect(V3_1_1, "uns-pub", true).await;
    publ.send(&publish("u", "x", QoS::AtMostOnce, None))
        .await
        .unwrap();
    nothing(&mut sub).await;
}

#[tokio::test]
async fn invalid_filters_get_failure_codes() {
    // [MQTT-4.7.1-2] '#' last; [MQTT-4.7.1-3] '+' whole level; 0x80 in 3.1.1, 0x8F in v5.
    let b = TestBroker::start().await;
    let (mut sub, _) = b.connect(V3_1_1, "inv", true).await;
    let codes = subscribe(
        &mut sub,
        1,
        &[
            ("a/#/b", QoS::AtMostOnce),
            ("a+", QoS::AtMostOnce),
            ("ok/+", QoS::AtLeastOnce),
        ],
    )
    .await;
    assert_eq!(codes, vec![0x80, 0x80, 1]);
    let (mut sub5, _) = b.connect(V5, "inv5", true).await;
    let codes = subscribe(&mut sub5, 1, &[("a/#/b", QoS::AtMostOnce)]).await;
    assert_eq!(codes, vec![0x8F]);
}

#[tokio::test]
async fn publish_to_a_wildcard_topic_closes_the_connection() {
    // [MQTT-3.3.2-2]
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect(V3_1_1, "wild", true).await;
    c.send(&publish("a/+", "x", QoS::AtMostOnce, None))
        .await
        .unwrap();
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1]
    let b = TestBroker::start().await;
    let (mut all, _) = b.connect(V3_1_1, "all", true).await;
    subscribe(
        &mut all,
        1,
        &[("#", QoS::AtMostOnce), ("+/x", QoS::AtMostOnce)],
    )
    .await;
    let (mut sys, _) = b.connect(V3_1_1, "sys", true).await;
    subscribe(&mut sys, 1, &[("$app/#", QoS::AtMostOnce)]).await;
    let (mut publ, _) = b.connect(V3_1_1, "dollar-pub", true).await;
    publ.send(&publish("$app/x", "s", QoS::AtMostOnce, None))
        .await
        .unwrap();
    assert_eq!(&next_publish(&mut sys).await.payload[..], b"s");
    nothing(&mut all).await;
}
