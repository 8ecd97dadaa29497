//! The async `Client` against a scripted fake broker: keep alive, QoS flows both ways, Receive
//! Maximum, refusals.

use bytes::Bytes;
use std::time::Duration;
use tern_client::{
    Client, ClientError, CloseReason, ConnectOptions, Connection, Message, MqttStream,
};
use tern_codec::{Ack, ConnAck, Packet, Properties, ProtocolVersion, Publish, QoS};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(5);

/// Accepts one connection, reads CONNECT and answers with `ack`.
async fn fake_broker(
    version: ProtocolVersion,
    ack: ConnAck,
    opts: impl FnOnce(ConnectOptions) -> ConnectOptions,
) -> (Client, Connection, tern_codec::Connect) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut conn = Connection::from_stream(MqttStream::Tcp(s), version);
        let connect = match conn.recv_timeout(WAIT).await.unwrap() {
            Packet::Connect(c) => *c,
            other => panic!("expected CONNECT, got {other:?}"),
        };
        conn.send(&Packet::ConnAck(ack)).await.unwrap();
        (conn, connect)
    });
    let o = opts(ConnectOptions::new("127.0.0.1", port).version(version));
    let (client, _) = Client::connect(&o).await.unwrap();
    let (conn, connect) = server.await.unwrap();
    (client, conn, connect)
}

async fn next(conn: &mut Connection) -> Packet {
    conn.recv_timeout(WAIT).await.expect("a packet")
}

#[tokio::test]
async fn connect_carries_the_options() {
    let (client, mut conn, connect) = fake_broker(ProtocolVersion::V5, ConnAck::default(), |o| {
        let mut o = o.client_id("me").clean_start(false);
        o.session_expiry = Some(u32::MAX);
        o.keep_alive = 30;
        o.username = Some("u".into());
        o.password = Some(Bytes::from_static(b"p"));
        o.properties.user_properties.push(("k".into(), "v".into()));
        o.will = Some(tern_codec::Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        });
        o
    })
    .await;
    assert_eq!(connect.client_id.as_str(), "me");
    assert!(!connect.clean_start);
    assert_eq!(connect.keep_alive, 30);
    assert_eq!(connect.properties.session_expiry_interval, Some(u32::MAX));
    assert_eq!(connect.properties.user_properties.len(), 1);
    assert_eq!(connect.username.as_deref(), Some("u"));
    assert_eq!(
        connect.will.as_ref().unwrap().payload,
        Bytes::from_static(b"bye")
    );
    client.disconnect().await.unwrap();
    assert!(matches!(next(&mut conn).await, Packet::Disconnect(_)));
}

#[tokio::test]
async fn keep_alive_pings_and_detects_a_dead_broker() {
    let (mut client, mut conn, _) =
        fake_broker(ProtocolVersion::V3_1_1, ConnAck::default(), |mut o| {
            o.keep_alive = 1;
            o
        })
        .await;
    // The first PINGREQ is answered.
    assert_eq!(next(&mut conn).await, Packet::PingReq);
    conn.send(&Packet::PingResp).await.unwrap();
    // The second is not: the client gives up one interval later.
    assert_eq!(next(&mut conn).await, Packet::PingReq);
    match client.recv_timeout(WAIT).await {
        Err(ClientError::ConnectionLost(CloseReason::KeepAliveTimeout)) => {}
        other => panic!("expected a keep alive timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn server_keep_alive_overrides() {
    let mut ack = ConnAck::default();
    ack.properties.server_keep_alive = Some(7);
    let (client, _conn, _) = fake_broker(ProtocolVersion::V5, ack, |o| o).await;
    assert_eq!(client.keep_alive(), 7);
}

#[tokio::test]
async fn outbound_qos_flows() {
    let (client, mut conn, _) = fake_broker(ProtocolVersion::V5, ConnAck::default(), |o| o).await;
    let client = std::sync::Arc::new(client);
    // QoS 2: PUBLISH, PUBREC, PUBREL, PUBCOMP.
    let c = client.clone();
    let pending = tokio::spawn(async move {
        c.publish(Message::new("t", "x").qos(QoS::ExactlyOnce))
            .await
    });
    let Packet::Publish(p) = next(&mut conn).await else {
        panic!("expected PUBLISH")
    };
    let pid = p.packet_id.unwrap();
    conn.send(&Packet::PubRec(Ack::new(pid))).await.unwrap();
    assert_eq!(next(&mut conn).await, Packet::PubRel(Ack::new(pid)));
    assert!(!pending.is_finished());
    conn.send(&Packet::PubComp(Ack::new(pid))).await.unwrap();
    assert_eq!(pending.await.unwrap().unwrap(), 0);

    // QoS 1 refused with a reason code.
    let c = client.clone();
    let pending = tokio::spawn(async move {
        c.publish(Message::new("t", "x").qos(QoS::AtLeastOnce))
            .await
    });
    let Packet::Publish(p) = next(&mut conn).await else {
        panic!("expected PUBLISH")
    };
    let mut ack = Ack::new(p.packet_id.unwrap());
    ack.reason = 0x87;
    conn.send(&Packet::PubAck(ack)).await.unwrap();
    match pending.await.unwrap() {
        Err(e @ ClientError::Rejected { reason: 0x87, .. }) => {
            assert_eq!(e.to_string(), "PUBLISH refused: not authorized (0x87)")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A lost connection fails what is pending.
    let c = client.clone();
    let pending = tokio::spawn(async move {
        c.publish(Message::new("t", "x").qos(QoS::AtLeastOnce))
            .await
    });
    assert!(matches!(next(&mut conn).await, Packet::Publish(_)));
    conn.drop_connection().await;
    assert!(matches!(
        pending.await.unwrap(),
        Err(ClientError::ConnectionLost(CloseReason::ServerClosed))
    ));
}

#[tokio::test]
async fn inbound_qos2_is_delivered_once() {
    let (mut client, mut conn, _) =
        fake_broker(ProtocolVersion::V3_1_1, ConnAck::default(), |o| o).await;
    let publish = Packet::Publish(Publish {
        qos: QoS::ExactlyOnce,
        topic: "in".into(),
        packet_id: Some(9),
        payload: Bytes::from_static(b"once"),
        ..Publish::default()
    });
    conn.send(&publish).await.unwrap();
    assert_eq!(next(&mut conn).await, Packet::PubRec(Ack::new(9)));
    // Re-sent before PUBREL: acknowledged again, not delivered again.
    let Packet::Publish(mut again) = publish else {
        unreachable!()
    };
    again.dup = true;
    conn.send(&Packet::Publish(again)).await.unwrap();
    assert_eq!(next(&mut conn).await, Packet::PubRec(Ack::new(9)));
    conn.send(&Packet::PubRel(Ack::new(9))).await.unwrap();
    assert_eq!(next(&mut conn).await, Packet::PubComp(Ack::new(9)));
    let m = client.recv_timeout(WAIT).await.unwrap();
    assert_eq!(&m.payload[..], b"once");
    assert!(matches!(
        client.recv_timeout(Duration::from_millis(200)).await,
        Err(ClientError::Timeout)
    ));
    // QoS 1 is acknowledged after delivery.
    conn.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "in".into(),
        packet_id: Some(3),
        payload: Bytes::from_static(b"one"),
        ..Publish::default()
    }))
    .await
    .unwrap();
    assert_eq!(next(&mut conn).await, Packet::PubAck(Ack::new(3)));
    assert_eq!(
        &client.recv_timeout(WAIT).await.unwrap().payload[..],
        b"one"
    );
}

#[tokio::test]
async fn receive_maximum_limits_in_flight() {
    let mut ack = ConnAck::default();
    ack.properties.receive_maximum = Some(1);
    let (client, mut conn, _) = fake_broker(ProtocolVersion::V5, ack, |o| o).await;
    let first = client
        .start_publish(Message::new("t", "1").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let Packet::Publish(p1) = next(&mut conn).await else {
        panic!()
    };
    let client = std::sync::Arc::new(client);
    let c = client.clone();
    let second = tokio::spawn(async move {
        c.start_publish(Message::new("t", "2").qos(QoS::AtLeastOnce))
            .await
            .unwrap()
            .wait()
            .await
    });
    // Nothing more until the first is acknowledged.
    assert!(matches!(
        conn.recv_timeout(Duration::from_millis(200)).await,
        Err(ClientError::Timeout)
    ));
    conn.send(&Packet::PubAck(Ack::new(p1.packet_id.unwrap())))
        .await
        .unwrap();
    first.wait().await.unwrap();
    let Packet::Publish(p2) = next(&mut conn).await else {
        panic!()
    };
    assert_eq!(&p2.payload[..], b"2");
    conn.send(&Packet::PubAck(Ack::new(p2.packet_id.unwrap())))
        .await
        .unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn refusals_and_broker_limits() {
    // CONNACK refusal.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut conn = Connection::from_stream(MqttStream::Tcp(s), ProtocolVersion::V3_1_1);
        let _ = conn.recv_timeout(WAIT).await;
        let ack = ConnAck {
            code: 5,
            ..ConnAck::default()
        };
        conn.send(&Packet::ConnAck(ack)).await.unwrap();
    });
    let opts = ConnectOptions::new("127.0.0.1", port).version(ProtocolVersion::V3_1_1);
    match Client::connect(&opts).await {
        Err(e @ ClientError::Refused { code: 5, .. }) => {
            assert_eq!(
                e.to_string(),
                "connection refused: not authorized (CONNACK 0x05)"
            )
        }
        Err(e) => panic!("expected a refusal, got {e:?}"),
        Ok(_) => panic!("expected a refusal"),
    }

    // Maximum QoS, retain available and maximum packet size are enforced locally.
    let mut ack = ConnAck::default();
    ack.properties.maximum_qos = Some(1);
    ack.properties.retain_available = Some(0);
    ack.properties.maximum_packet_size = Some(64);
    let (client, _conn, _) = fake_broker(ProtocolVersion::V5, ack, |o| o).await;
    for m in [
        Message::new("t", "x").qos(QoS::ExactlyOnce),
        Message::new("t", "x").retain(true),
        Message::new("t", vec![0u8; 100]),
        Message::new("t/#", "x"),
    ] {
        assert!(matches!(
            client.publish(m).await,
            Err(ClientError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Client::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .err()
        .expect("no broker");
    assert!(err.is_connection_failure());
    assert_eq!(
        err.to_string(),
        format!("cannot connect to 127.0.0.1:{port}: connection refused")
    );
}
