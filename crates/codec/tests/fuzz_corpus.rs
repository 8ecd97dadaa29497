//! The seed corpus of the `decode` fuzz target (`fuzz/corpus/decode/`): real packets, encoded by
//! this codec. `seeds_are_up_to_date` checks the files; run the ignored `write_seeds` to rewrite
//! them after a change here:
//! `cargo test -p tern-codec --test fuzz_corpus -- --ignored`.

use bytes::{Bytes, BytesMut};
use std::path::PathBuf;
use tern_codec::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode")
}

fn seeds() -> Vec<(&'static str, Packet, ProtocolVersion)> {
    use ProtocolVersion::*;
    let user = |k: &str, v: &str| (ByteStr::from(k), ByteStr::from(v));
    vec![
        (
            "connect_v311",
            Packet::Connect(Box::new(Connect {
                protocol: V3_1_1,
                clean_start: true,
                keep_alive: 60,
                client_id: "sensor-17".into(),
                will: None,
                username: Some("alice".into()),
                password: Some(Bytes::from_static(b"secret")),
                properties: Properties::default(),
            })),
            V3_1_1,
        ),
        (
            "connect_v5_will",
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: false,
                keep_alive: 30,
                client_id: "client-5".into(),
                will: Some(Will {
                    topic: "status/client-5".into(),
                    payload: Bytes::from_static(b"offline"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: PropertyValues {
                        will_delay_interval: Some(10),
                        content_type: Some("text/plain".into()),
                        ..Default::default()
                    }
                    .into(),
                }),
                username: Some("bob".into()),
                password: None,
                properties: PropertyValues {
                    session_expiry_interval: Some(3600),
                    receive_maximum: Some(32),
                    user_properties: vec![user("region", "eu")],
                    ..Default::default()
                }
                .into(),
            })),
            V5,
        ),
        (
            "publish_qos0",
            Packet::Publish(Publish {
                topic: "sensors/temp".into(),
                payload: Bytes::from_static(b"21.5"),
                ..Publish::default()
            }),
            V3_1_1,
        ),
        (
            "publish_qos1",
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "sensors/humidity".into(),
                packet_id: Some(1),
                payload: Bytes::from_static(b"40%"),
                ..Publish::default()
            }),
            V3_1_1,
        ),
        (
            "publish_qos2_v5",
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                topic: "cmd/door".into(),
                packet_id: Some(0x1234),
                properties: PropertyValues {
                    message_expiry_interval: Some(120),
                    topic_alias: Some(2),
                    ..Default::default()
                }
                .into(),
                payload: Bytes::from_static(b"open"),
                ..Publish::default()
            }),
            V5,
        ),
        (
            "subscribe_v311",
            Packet::Subscribe(Subscribe {
                packet_id: 2,
                filters: vec![
                    (
                        "sensors/+".into(),
                        SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..Default::default()
                        },
                    ),
                    (
                        "cmd/#".into(),
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            ..Default::default()
                        },
                    ),
                ],
                properties: Properties::default(),
            }),
            V3_1_1,
        ),
        (
            "subscribe_v5",
            Packet::Subscribe(Subscribe {
                packet_id: 3,
                filters: vec![(
                    "$share/g/sensors/#".into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: RetainHandling::OnNewSubscribe,
                    },
                )],
                properties: PropertyValues {
                    subscription_identifiers: vec![7],
                    ..Default::default()
                }
                .into(),
            }),
            V5,
        ),
        ("pingreq", Packet::PingReq, V3_1_1),
        (
            "disconnect_v5_reason",
            Packet::Disconnect(Disconnect {
                reason: reason::DISCONNECT_WITH_WILL,
                properties: PropertyValues {
                    reason_string: Some("bye".into()),
                    ..Default::default()
                }
                .into(),
            }),
            V5,
        ),
    ]
}

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(p, v, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn seeds_are_up_to_date() {
    for (name, packet, version) in seeds() {
        let path = dir().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            bytes,
            encode(&packet, version),
            "{name} is stale: run write_seeds"
        );
        let decoded = decode_packet(&mut BytesMut::from(&bytes[..]), version, u32::MAX);
        assert_eq!(decoded, Ok(Some(packet)), "{name}");
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus/decode"]
fn write_seeds() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, packet, version) in seeds() {
        std::fs::write(dir().join(name), encode(&packet, version)).unwrap();
    }
}
