//! Byte-level CONNECT / CONNACK / session tests over TCP, citing the normative statements.

mod common;

use common::*;
use std::time::Duration;
use tern::config::Config;
use tern_client::builder;
use tern_codec::{Packet, QoS, reason};

#[tokio::test]
async fn first_packet_must_be_connect() {
    // [MQTT-3.1.0-1]
    let b = TestBroker::start().await;
    let mut c = b.raw(V3_1_1).await;
    c.send(&Packet::PingReq).await.unwrap();
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2]
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect(V3_1_1, "twice", true).await;
    c.send(&Packet::Connect(Box::new(builder::connect(
        V3_1_1, "twice", true, 60,
    ))))
    .await
    .unwrap();
    c.expect_closed(WAIT).await.unwrap();

    let (mut c, _) = b.connect(V5, "twice5", true).await;
    c.send(&Packet::Connect(Box::new(builder::connect(
        V5, "twice5", true, 60,
    ))))
    .await
    .unwrap();
    match next(&mut c).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_and_close() {
    // [MQTT-3.1.2-2] A CONNECT with protocol level 2 (name "MQTT").
    let b = TestBroker::start().await;
    let mut c = b.raw(V3_1_1).await;
    c.send_raw(&[
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x02, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ])
    .await
    .unwrap();
    // Level 2 is below anything we speak: 3.x format, return code 0x01.
    match next(&mut c).await {
        Packet::ConnAck(a) => assert_eq!(a.code, reason::v3::UNACCEPTABLE_PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn future_protocol_level_gets_v5_connack_0x84() {
    let b = TestBroker::start().await;
    let mut c = b.raw(V5).await;
    c.send_raw(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x00,
    ])
    .await
    .unwrap();
    match next(&mut c).await {
        Packet::ConnAck(a) => assert_eq!(a.code, reason::UNSUPPORTED_PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn mqtt_3_1_mqisdp_is_accepted() {
    let b = TestBroker::start().await;
    let (mut c, ack) = b.connect(V3_1, "old-client", true).await;
    assert!(!ack.session_present);
    assert_eq!(
        subscribe(&mut c, 1, &[("v31/t", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    c.send(&builder::publish(
        "v31/t",
        "hi",
        QoS::AtLeastOnce,
        false,
        Some(7),
    ))
    .await
    .unwrap();
    let mut got_ack = false;
    let mut got_msg = false;
    for _ in 0..2 {
        match next(&mut c).await {
            Packet::PubAck(a) => got_ack = a.packet_id == 7,
            Packet::Publish(p) => got_msg = &p.payload[..] == b"hi",
            other => panic!("{other:?}"),
        }
    }
    assert!(got_ack && got_msg);
}

#[tokio::test]
async fn empty_client_id_v311_needs_clean_session() {
    // [MQTT-3.1.3-8] empty id with clean session 0: CONNACK 0x02 and close.
    let b = TestBroker::start().await;
    let mut c = b.raw(V3_1_1).await;
    c.send(&Packet::Connect(Box::new(builder::connect(
        V3_1_1, "", false, 60,
    ))))
    .await
    .unwrap();
    match next(&mut c).await {
        Packet::ConnAck(a) => assert_eq!(a.code, reason::v3::IDENTIFIER_REJECTED),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
    // [MQTT-3.1.3-6] with clean session 1 the server assigns one.
    let (_c, ack) = b.connect(V3_1_1, "", true).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn empty_client_id_v5_gets_assigned_identifier() {
    // [MQTT-3.2.2-16]
    let b = TestBroker::start().await;
    let (_c, ack) = b.connect(V5, "", true).await;
    let id = ack
        .properties
        .assigned_client_identifier
        .clone()
        .expect("Assigned Client Identifier");
    assert!(!id.is_empty());
    let (_c2, ack2) = b.connect(V5, "", true).await;
    assert_ne!(
        ack2.properties.assigned_client_identifier.clone().unwrap(),
        id,
        "assigned ids are unique"
    );
}

#[tokio::test]
async fn takeover_closes_the_old_connection() {
    // [MQTT-3.1.4-3] v3.1.1: the old connection is closed.
    let b = TestBroker::start().await;
    let (mut old, _) = b.connect(V3_1_1, "dup-id", true).await;
    let (_new, _) = b.connect(V3_1_1, "dup-id", true).await;
    old.expect_closed(WAIT).await.unwrap();

    // v5: the old connection gets DISCONNECT 0x8E first.
    let (mut old, _) = b.connect(V5, "dup-id5", true).await;
    let (mut new, _) = b.connect(V5, "dup-id5", true).await;
    match next(&mut old).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::SESSION_TAKEN_OVER),
        other => panic!("{other:?}"),
    }
    old.expect_closed(WAIT).await.unwrap();
    // The new connection works.
    new.send(&Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut new).await, Packet::PingResp);
}

#[tokio::test]
async fn connection_without_connect_is_closed_after_the_connect_timeout() {
    let mut config = Config::default();
    config.limits.connect_timeout_secs = 1;
    let b = TestBroker::with_config(config).await;
    let mut c = b.raw(V3_1_1).await;
    c.expect_closed(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn keep_alive_timeout_closes_a_silent_client() {
    // [MQTT-3.1.2-24] silent for 1.5 x keep alive (1 s): closed; v5 gets DISCONNECT 0x8D.
    let b = TestBroker::start().await;
    let (mut c, _) = b
        .connect_with(builder::connect(V5, "sleepy", true, 1))
        .await;
    match c.recv_timeout(Duration::from_secs(5)).await.unwrap() {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::KEEP_ALIVE_TIMEOUT),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn pingreq_keeps_a_client_alive() {
    let b = TestBroker::start().await;
    let (mut c, _) = b
        .connect_with(builder::connect(V3_1_1, "pinger", true, 1))
        .await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(&Packet::PingReq).await.unwrap();
        assert_eq!(next(&mut c).await, Packet::PingResp);
    }
    // [MQTT-3.1.2-24] Each packet moved the deadline later; once the pings stop it still comes
    // (the broker re-arms its timer when an earlier deadline turns out to have moved).
    c.expect_closed(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn session_present_reflects_a_stored_session() {
    // [MQTT-3.2.2-1] clean start: session present 0; [MQTT-3.2.2-2] resumed: 1.
    let b = TestBroker::start().await;
    let (c, ack) = b.connect(V3_1_1, "keeper", false).await;
    assert!(!ack.session_present);
    c.drop_connection().await;
    // The broker may still be processing the close; a takeover gives the same answer.
    let (c, ack) = b.connect(V3_1_1, "keeper", false).await;
    assert!(ack.session_present);
    drop(c);
    let (_c, ack) = b.connect(V3_1_1, "keeper", true).await;
    assert!(
        !ack.session_present,
        "clean session discards the stored one [MQTT-3.1.2-6]"
    );
}

#[tokio::test]
async fn v5_session_expiry_zero_ends_the_session_at_disconnect() {
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect(V5, "short", false).await;
    c.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
    c.expect_closed(WAIT).await.unwrap();
    let (_c, ack) = b.connect(V5, "short", false).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn malformed_packet_gets_disconnect_0x81_in_v5() {
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect(V5, "bad", true).await;
    // PUBLISH with QoS 3 [MQTT-3.3.1-4]
    c.send_raw(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01])
        .await
        .unwrap();
    match next(&mut c).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::MALFORMED_PACKET),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn oversize_packet_gets_disconnect_0x95() {
    let mut config = Config::default();
    config.limits.max_packet_size = 1024;
    let b = TestBroker::with_config(config).await;
    let (mut c, ack) = b.connect(V5, "big", true).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    // Only the fixed header of a 1 MB PUBLISH: refused before the body arrives.
    c.send_raw(&[0x30, 0x80, 0x80, 0x40]).await.unwrap();
    match next(&mut c).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::PACKET_TOO_LARGE),
        other => panic!("{other:?}"),
    }
    c.expect_closed(WAIT).await.unwrap();
}

#[tokio::test]
async fn max_connections_is_enforced() {
    // Over the limit, the CONNECT is answered "server busy": 0x89 (v5) / 0x03 (3.x), then close.
    let mut config = Config::default();
    config.limits.max_connections = 2;
    let b = TestBroker::with_config(config).await;
    let (_a, _) = b.connect(V3_1_1, "a", true).await;
    let (_b, _) = b.connect(V3_1_1, "b", true).await;
    for (version, code) in [
        (V3_1_1, reason::v3::SERVER_UNAVAILABLE),
        (V5, reason::SERVER_BUSY),
    ] {
        let mut c = b.raw(version).await;
        c.send(&Packet::Connect(Box::new(builder::connect(
            version, "c", true, 60,
        ))))
        .await
        .ok();
        match next(&mut c).await {
            Packet::ConnAck(a) => assert_eq!(a.code, code),
            other => panic!("{other:?}"),
        }
        c.expect_closed(WAIT).await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_tells_v5_clients_0x8b_and_closes_everyone() {
    let b = TestBroker::start().await;
    let (mut c5, _) = b.connect(V5, "stay5", true).await;
    let (mut c3, _) = b.connect(V3_1_1, "stay3", true).await;
    b.stop().await;
    match next(&mut c5).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason::SERVER_SHUTTING_DOWN),
        other => panic!("{other:?}"),
    }
    c5.expect_closed(WAIT).await.unwrap();
    c3.expect_closed(WAIT).await.unwrap();
}
