//! MQTT 5 features and shared subscriptions over TCP (the packet-level details are covered by
//! crates/core/tests; these check them end to end through the codec and the I/O layer).

mod common;

use bytes::Bytes;
use common::*;
use tern_client::builder;
use tern_codec::{Ack, Packet, PropertyValues, Publish, QoS, reason};

#[tokio::test]
async fn shared_subscription_splits_messages_between_v311_and_v5_members() {
    let b = TestBroker::start().await;
    let (mut a, _) = b.connect(V3_1_1, "worker-a", true).await;
    let (mut w5, _) = b.connect(V5, "worker-b", true).await;
    assert_eq!(
        subscribe(&mut a, 1, &[("$share/g/jobs/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    assert_eq!(
        subscribe(&mut w5, 1, &[("$share/g/jobs/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let (mut p, _) = b.connect(V5, "producer", true).await;
    for i in 1..=10u16 {
        p.send(&builder::publish(
            "jobs/x",
            format!("{i}"),
            QoS::AtLeastOnce,
            false,
            Some(i),
        ))
        .await
        .unwrap();
        assert_eq!(next(&mut p).await, Packet::PubAck(Ack::new(i)));
    }
    let mut got = Vec::new();
    for c in [&mut a, &mut w5] {
        for _ in 0..5 {
            let m = next_publish(c).await;
            c.send(&Packet::PubAck(Ack::new(m.packet_id.unwrap())))
                .await
                .unwrap();
            got.push(String::from_utf8(m.payload.to_vec()).unwrap());
        }
        nothing(c).await;
    }
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (1..=10).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn topic_alias_round_trip_over_tcp() {
    let b = TestBroker::start().await;
    let mut c = builder::connect(V5, "alias-sub", true, 60);
    c.properties.topic_alias_maximum = Some(4);
    let (mut sub, _) = b.connect_with(c).await;
    subscribe(&mut sub, 1, &[("al/#", QoS::AtMostOnce)]).await;
    let (mut p, _) = b.connect(V5, "alias-pub", true).await;
    let with_alias = |topic: &str, payload: &'static str| {
        Packet::Publish(Publish {
            topic: topic.into(),
            payload: Bytes::from_static(payload.as_bytes()),
            properties: PropertyValues {
                topic_alias: Some(2),
                ..Default::default()
            }
            .into(),
            ..Publish::default()
        })
    };
    p.send(&with_alias("al/one", "1")).await.unwrap();
    p.send(&with_alias("", "2")).await.unwrap();
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    assert_eq!(
        (first.topic.as_str(), first.properties.topic_alias),
        ("al/one", Some(1))
    );
    assert_eq!(
        (second.topic.as_str(), second.properties.topic_alias),
        ("", Some(1))
    );
    assert_eq!(&second.payload[..], b"2");
}

#[tokio::test]
async fn no_local_on_shared_subscription_is_disconnected_with_0x82() {
    // [MQTT-3.8.3-4]
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect(V5, "nl-shared", true).await;
    let mut s = builder::subscribe(1, &[("$share/g/t", QoS::AtMostOnce)]);
    if let Packet::Subscribe(s) = &mut s {
        s.filters[0].1.no_local = true;
    }
    c.send(&s).await.unwrap();
    match next(&mut c).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn hundred_thousand_retained_messages_all_reach_a_hash_subscriber() {
    // Issue: "A client subscribing # on a broker holding 100,000 retained messages receives all
    // of them, with flow control and no silent drop". QoS 1 subscription: at most the in-flight
    // window is unacknowledged at any time.
    let b = TestBroker::start().await;
    let (mut p, _) = b.connect(V3_1_1, "loader", true).await;
    const N: usize = 100_000;
    let mut raw = bytes::BytesMut::new();
    for i in 0..N {
        let pkt = builder::publish(
            &format!("fleet/{}/{}", i / 1000, i % 1000),
            "v",
            QoS::AtMostOnce,
            true,
            None,
        );
        tern_codec::encode_packet(&pkt, V3_1_1, &mut raw).unwrap();
    }
    p.send_raw(&raw).await.unwrap();
    p.send(&Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut p).await, Packet::PingResp);

    let (mut s, _) = b.connect(V3_1_1, "hash", true).await;
    // Retained messages were published at QoS 0, so they arrive at QoS 0 whatever we ask;
    // subscribe at QoS 1 anyway and also check a QoS 1 retained one goes through the window.
    subscribe(&mut s, 1, &[("#", QoS::AtLeastOnce)]).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N {
        let m = next_publish(&mut s).await;
        assert!(m.retain);
        if let Some(pid) = m.packet_id {
            s.send(&Packet::PubAck(Ack::new(pid))).await.unwrap();
        }
        seen.insert(m.topic.to_string());
    }
    assert_eq!(seen.len(), N);
}

#[tokio::test]
async fn retained_qos1_messages_flow_through_the_inflight_window() {
    let b = TestBroker::start().await;
    let (mut p, _) = b.connect(V3_1_1, "loader1", true).await;
    const N: u16 = 5_000;
    let mut raw = bytes::BytesMut::new();
    for i in 1..=N {
        let pkt = builder::publish(&format!("q1/{i}"), "v", QoS::AtLeastOnce, true, Some(i));
        tern_codec::encode_packet(&pkt, V3_1_1, &mut raw).unwrap();
    }
    p.send_raw(&raw).await.unwrap();
    for _ in 1..=N {
        assert!(matches!(next(&mut p).await, Packet::PubAck(_)));
    }
    let (mut s, _) = b.connect(V3_1_1, "q1sub", true).await;
    subscribe(&mut s, 1, &[("q1/#", QoS::AtLeastOnce)]).await;
    let mut count = 0;
    while count < N {
        let m = next_publish(&mut s).await;
        assert_eq!(m.qos, QoS::AtLeastOnce);
        s.send(&Packet::PubAck(Ack::new(m.packet_id.unwrap())))
            .await
            .unwrap();
        count += 1;
    }
    nothing(&mut s).await;
}
