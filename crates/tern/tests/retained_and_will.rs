//! Retained messages and wills over TCP.

mod common;

use common::*;
use tern_client::builder;
use tern_codec::{Ack, ByteStr, Packet, QoS, Will};

fn retained(topic: &str, payload: &str, pid: u16) -> Packet {
    builder::publish(
        topic,
        payload.to_string(),
        QoS::AtLeastOnce,
        true,
        Some(pid),
    )
}

#[tokio::test]
async fn retained_messages_are_stored_replaced_and_deleted() {
    let b = TestBroker::start().await;
    let (mut publ, _) = b.connect(V3_1_1, "ret-pub", true).await;
    publ.send(&retained("home/kitchen/temp", "20", 1))
        .await
        .unwrap();
    next(&mut publ).await;
    publ.send(&retained("home/kitchen/temp", "21", 2))
        .await
        .unwrap(); // replaces
    next(&mut publ).await;
    publ.send(&retained("home/hall/temp", "18", 3))
        .await
        .unwrap();
    next(&mut publ).await;
    publ.send(&retained("home/cellar/temp", "9", 4))
        .await
        .unwrap();
    next(&mut publ).await;
    publ.send(&retained("home/cellar/temp", "", 5))
        .await
        .unwrap(); // [MQTT-3.3.1-6] deletes
    next(&mut publ).await;

    // [MQTT-3.3.1-8] sent with retain set, every match of the wildcard filter.
    let (mut sub, _) = b.connect(V3_1_1, "ret-sub", true).await;
    subscribe(&mut sub, 1, &[("home/+/temp", QoS::AtLeastOnce)]).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = next_publish(&mut sub).await;
        assert!(p.retain);
        got.push((
            p.topic.to_string(),
            String::from_utf8(p.payload.to_vec()).unwrap(),
        ));
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
            .await
            .unwrap();
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("home/hall/temp".into(), "18".into()),
            ("home/kitchen/temp".into(), "21".into())
        ]
    );
    nothing(&mut sub).await;

    // [MQTT-3.3.1-9] a live message to an existing subscription is forwarded with retain 0 (3.1.1).
    publ.send(&retained("home/hall/temp", "19", 6))
        .await
        .unwrap();
    let p = next_publish(&mut sub).await;
    assert!(!p.retain);
}

#[tokio::test]
async fn many_retained_messages_all_arrive() {
    let b = TestBroker::start().await;
    let (mut publ, _) = b.connect(V3_1_1, "many-pub", true).await;
    let n = 2000u16;
    for i in 1..=n {
        publ.send(&builder::publish(
            &format!("many/{i}"),
            "v",
            QoS::AtMostOnce,
            true,
            None,
        ))
        .await
        .unwrap();
    }
    // A round trip makes sure all of them were processed.
    publ.send(&Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut publ).await, Packet::PingResp);
    let (mut sub, _) = b.connect(V3_1_1, "many-sub", true).await;
    subscribe(&mut sub, 1, &[("many/#", QoS::AtMostOnce)]).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n as usize {
        let p = next_publish(&mut sub).await;
        assert!(p.retain);
        seen.insert(p.topic.to_string());
    }
}

fn connect_with_will(
    client_id: &str,
    will_topic: &str,
    qos: QoS,
    retain: bool,
) -> tern_codec::Connect {
    let mut c = builder::connect(V3_1_1, client_id, true, 60);
    c.will = Some(Will {
        topic: ByteStr::from(will_topic),
        payload: bytes::Bytes::from_static(b"gone"),
        qos,
        retain,
        properties: Default::default(),
    });
    c
}

#[tokio::test]
async fn will_is_published_on_ungraceful_close_with_its_qos_and_retain() {
    // [MQTT-3.1.2-8] published when the connection closes without DISCONNECT.
    let b = TestBroker::start().await;
    let (mut watcher, _) = b.connect(V3_1_1, "watcher", true).await;
    subscribe(&mut watcher, 1, &[("status/#", QoS::ExactlyOnce)]).await;
    let (dev, _) = b
        .connect_with(connect_with_will(
            "dev1",
            "status/dev1",
            QoS::AtLeastOnce,
            true,
        ))
        .await;
    dev.drop_connection().await;
    let p = next_publish(&mut watcher).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("status/dev1", &b"gone"[..], QoS::AtLeastOnce)
    );
    watcher
        .send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
        .await
        .unwrap();
    // Will retain: a later subscriber gets it as retained.
    let (mut late, _) = b.connect(V3_1_1, "late", true).await;
    subscribe(&mut late, 1, &[("status/dev1", QoS::AtMostOnce)]).await;
    let p = next_publish(&mut late).await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"gone");
}

#[tokio::test]
async fn will_is_not_published_after_disconnect() {
    // [MQTT-3.1.2-10] / [MQTT-3.14.4-3] DISCONNECT discards the will.
    let b = TestBroker::start().await;
    let (mut watcher, _) = b.connect(V3_1_1, "watcher2", true).await;
    subscribe(&mut watcher, 1, &[("status/#", QoS::AtMostOnce)]).await;
    let (mut dev, _) = b
        .connect_with(connect_with_will(
            "dev2",
            "status/dev2",
            QoS::AtMostOnce,
            false,
        ))
        .await;
    dev.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
    dev.expect_closed(WAIT).await.unwrap();
    nothing(&mut watcher).await;
}

#[tokio::test]
async fn will_is_published_on_protocol_error_and_takeover() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = b.connect(V3_1_1, "watcher3", true).await;
    subscribe(&mut watcher, 1, &[("status/#", QoS::AtMostOnce)]).await;
    // Protocol error: a second CONNECT.
    let (mut dev, _) = b
        .connect_with(connect_with_will(
            "dev3",
            "status/dev3",
            QoS::AtMostOnce,
            false,
        ))
        .await;
    dev.send(&Packet::Connect(Box::new(builder::connect(
        V3_1_1, "dev3", true, 60,
    ))))
    .await
    .unwrap();
    assert_eq!(
        next_publish(&mut watcher).await.topic.as_str(),
        "status/dev3"
    );
    // Takeover: the old connection's will is published.
    let (_old, _) = b
        .connect_with(connect_with_will(
            "dev4",
            "status/dev4",
            QoS::AtMostOnce,
            false,
        ))
        .await;
    let (_new, _) = b.connect(V3_1_1, "dev4", true).await;
    assert_eq!(
        next_publish(&mut watcher).await.topic.as_str(),
        "status/dev4"
    );
}
