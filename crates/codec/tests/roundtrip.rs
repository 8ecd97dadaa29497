//! Property tests of the wire format: every valid packet of every version survives
//! encode → decode, `encoded_len` matches the bytes written, a packet fed one byte at a time is
//! complete only at its last byte, and no input makes the decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of as opt;
use proptest::prelude::*;
use tern_codec::*;

const V3_1: ProtocolVersion = ProtocolVersion::V3_1;
const V3_1_1: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MAX_VAR_INT: u32 = 268_435_455;

fn string() -> impl Strategy<Value = ByteStr> {
    // Any characters but U+0000, which MQTT strings may not hold [MQTT-1.5.4-2].
    "[^\u{0}]{0,12}".prop_map(ByteStr::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Where a property set sits; mirrors the table of MQTT 5.0 section 2.2.2.2, written out again
/// here on purpose rather than borrowed from the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Keeps only the properties `ctx` may carry.
fn restrict(mut p: Properties, ctx: Ctx) -> Properties {
    use Ctx::*;
    let p = p.take();
    let is = |set: &[Ctx]| set.contains(&ctx);
    let mut q = Properties::from(PropertyValues {
        user_properties: p.user_properties,
        ..Default::default()
    });
    if is(&[Publish, Will]) {
        q.payload_format_indicator = p.payload_format_indicator;
        q.message_expiry_interval = p.message_expiry_interval;
        q.content_type = p.content_type;
        q.response_topic = p.response_topic;
        q.correlation_data = p.correlation_data;
    }
    if ctx == Publish {
        q.subscription_identifiers = p.subscription_identifiers;
        q.topic_alias = p.topic_alias;
    } else if ctx == Subscribe {
        q.subscription_identifiers = p.subscription_identifiers.into_iter().take(1).collect();
    }
    if is(&[Connect, ConnAck, Disconnect]) {
        q.session_expiry_interval = p.session_expiry_interval;
    }
    if ctx == ConnAck {
        q.assigned_client_identifier = p.assigned_client_identifier;
        q.server_keep_alive = p.server_keep_alive;
        q.response_information = p.response_information;
        q.maximum_qos = p.maximum_qos;
        q.retain_available = p.retain_available;
        q.wildcard_subscription_available = p.wildcard_subscription_available;
        q.subscription_identifier_available = p.subscription_identifier_available;
        q.shared_subscription_available = p.shared_subscription_available;
    }
    if is(&[Connect, ConnAck, Auth]) {
        q.authentication_method = p.authentication_method;
        q.authentication_data = p.authentication_data;
    }
    if ctx == Connect {
        q.request_problem_information = p.request_problem_information;
        q.request_response_information = p.request_response_information;
    }
    if ctx == Will {
        q.will_delay_interval = p.will_delay_interval;
    }
    if is(&[ConnAck, Disconnect]) {
        q.server_reference = p.server_reference;
    }
    if is(&[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth]) {
        q.reason_string = p.reason_string;
    }
    if is(&[Connect, ConnAck]) {
        q.receive_maximum = p.receive_maximum;
        q.topic_alias_maximum = p.topic_alias_maximum;
        q.maximum_packet_size = p.maximum_packet_size;
    }
    q
}

/// Properties with valid values, restricted to those `ctx` may carry; empty for 3.x.
fn properties(version: ProtocolVersion, ctx: Ctx) -> BoxedStrategy<Properties> {
    if !version.is_v5() {
        return Just(Properties::default()).boxed();
    }
    let flag = || opt(0..=1u8);
    let a = (
        flag(),
        opt(any::<u32>()),
        opt(string()),
        opt(string()),
        opt(binary()),
        vec(1..=MAX_VAR_INT, 0..3),
        opt(any::<u32>()),
        opt(string()),
        opt(any::<u16>()),
        opt(string()),
    );
    let b = (
        opt(binary()),
        flag(),
        opt(any::<u32>()),
        flag(),
        opt(string()),
        opt(string()),
        opt(string()),
        opt(1..=u16::MAX),
        opt(any::<u16>()),
        opt(1..=u16::MAX),
    );
    let c = (
        flag(),
        flag(),
        vec((string(), string()), 0..3),
        opt(1..=u32::MAX),
        flag(),
        flag(),
        flag(),
    );
    (a, b, c)
        .prop_map(move |(a, b, c)| {
            let p: Properties = PropertyValues {
                payload_format_indicator: a.0,
                message_expiry_interval: a.1,
                content_type: a.2,
                response_topic: a.3,
                correlation_data: a.4,
                subscription_identifiers: a.5,
                session_expiry_interval: a.6,
                assigned_client_identifier: a.7,
                server_keep_alive: a.8,
                authentication_method: a.9,
                authentication_data: b.0,
                request_problem_information: b.1,
                will_delay_interval: b.2,
                request_response_information: b.3,
                response_information: b.4,
                server_reference: b.5,
                reason_string: b.6,
                receive_maximum: b.7,
                topic_alias_maximum: b.8,
                topic_alias: b.9,
                maximum_qos: c.0,
                retain_available: c.1,
                user_properties: c.2,
                maximum_packet_size: c.3,
                wildcard_subscription_available: c.4,
                subscription_identifier_available: c.5,
                shared_subscription_available: c.6,
            }
            .into();
            restrict(p, ctx)
        })
        .boxed()
}

/// A reason code: any byte in 5.0 (unknown codes are carried), always 0 in 3.x.
fn reason(version: ProtocolVersion) -> BoxedStrategy<u8> {
    if version.is_v5() {
        any::<u8>().boxed()
    } else {
        Just(0).boxed()
    }
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = opt((
        string(),
        binary(),
        qos(),
        any::<bool>(),
        properties(version, Ctx::Will),
    ))
    .prop_map(|w| {
        w.map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    });
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        will,
        opt(string()),
        opt(binary()),
        properties(version, Ctx::Connect),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                mut username,
                password,
                properties,
            )| {
                // [MQTT-3.1.2-22]: 3.x needs a user name to send a password.
                if !version.is_v5() && password.is_some() && username.is_none() {
                    username = Some(ByteStr::from("user"));
                }
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        string(),
        packet_id(),
        properties(version, Ctx::Publish),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: (!qos0).then_some(id),
                properties,
                payload: Bytes::from(payload),
            })
        })
}

fn ack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        0..4u8,
        packet_id(),
        reason(version),
        properties(version, Ctx::Ack),
    )
        .prop_map(|(kind, packet_id, reason, properties)| {
            let a = Ack {
                packet_id,
                reason,
                properties,
            };
            match kind {
                0 => Packet::PubAck(a),
                1 => Packet::PubRec(a),
                2 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            }
        })
}

fn subscription_options(version: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if !version.is_v5() {
        return qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..Default::default()
            })
            .boxed();
    }
    let rh = prop_oneof![
        Just(RetainHandling::OnSubscribe),
        Just(RetainHandling::OnNewSubscribe),
        Just(RetainHandling::Never),
    ];
    (qos(), any::<bool>(), any::<bool>(), rh)
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            },
        )
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec((string(), subscription_options(version)), 1..4),
        properties(version, Ctx::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        any::<u8>().boxed()
    } else {
        prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)].boxed()
    };
    (
        packet_id(),
        vec(code, 1..5),
        properties(version, Ctx::SubAck),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(string(), 1..4),
        properties(version, Ctx::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // 3.x UNSUBACK carries no reason codes.
    let reasons = if version.is_v5() {
        vec(any::<u8>(), 1..5).boxed()
    } else {
        Just(vec![]).boxed()
    };
    (packet_id(), reasons, properties(version, Ctx::UnsubAck)).prop_map(
        |(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        },
    )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u8>(),
        properties(version, Ctx::ConnAck),
    )
        .prop_map(|(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties,
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (reason(version), properties(version, Ctx::Disconnect))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (any::<u8>(), properties(V5, Ctx::Auth))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any valid packet of `version`.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        ack(version),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![10 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}

fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode_packet(p, v, &mut out).expect("valid packet encodes");
    out
}

/// Decodes everything in `buf` until it is used up, an error, or an incomplete packet.
fn decode_all(buf: &mut BytesMut, v: ProtocolVersion) {
    while let Ok(Some(_)) = decode_packet(buf, v, u32::MAX) {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn encode_decode_round_trip((v, p) in versioned_packet()) {
        let mut buf = encode(&p, v);
        prop_assert_eq!(encoded_len(&p, v).unwrap(), buf.len());
        if let Packet::Publish(publish) = &p {
            prop_assert_eq!(tern_codec::publish_encoded_len(publish, v).unwrap(), buf.len());
            let mut direct = bytes::BytesMut::new();
            tern_codec::encode_publish(publish, v, &mut direct).unwrap();
            prop_assert_eq!(&direct[..], &buf[..]);
        }
        let decoded = decode_packet(&mut buf, v, u32::MAX).unwrap();
        prop_assert_eq!(decoded, Some(p));
        prop_assert!(buf.is_empty());
    }

    /// `encode_plain_publish` writes what `encode_publish` writes for the same QoS 0 PUBLISH
    /// without properties (payloads past 127 and 16,383 bytes need longer remaining lengths).
    #[test]
    fn plain_publish_encodes_as_encode_publish(
        v in version(),
        topic in "[a-z/$ \u{80}-\u{10FFFF}]{1,40}",
        payload in prop_oneof![vec(any::<u8>(), 0..300), vec(any::<u8>(), 16_370..16_400)],
        retain in any::<bool>(),
    ) {
        let p = Publish {
            retain,
            topic: topic.as_str().into(),
            payload: payload.into(),
            ..Publish::default()
        };
        let mut full = bytes::BytesMut::new();
        tern_codec::encode_publish(&p, v, &mut full).unwrap();
        let mut plain = bytes::BytesMut::from(&b"before"[..]);
        tern_codec::encode_plain_publish(&p.topic, &p.payload, retain, v, &mut plain).unwrap();
        prop_assert_eq!(&plain[..6], b"before");
        prop_assert_eq!(&plain[6..], &full[..]);
    }

    /// `peek_publish` reads every PUBLISH as `decode_packet` does (and nothing else as one).
    #[test]
    fn peek_publish_agrees_with_decode((v, p) in versioned_packet()) {
        let bytes = encode(&p, v);
        let peeked = tern_codec::peek_publish(&bytes, v).unwrap();
        match (&p, peeked) {
            (Packet::Publish(full), tern_codec::Peeked::Publish { view, len }) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert_eq!(view.dup, full.dup);
                prop_assert_eq!(view.qos, full.qos);
                prop_assert_eq!(view.retain, full.retain);
                prop_assert_eq!(view.topic, full.topic.as_bytes());
                prop_assert_eq!(view.packet_id, full.packet_id);
                prop_assert_eq!(view.payload, &full.payload[..]);
            }
            (Packet::Publish(_), other) => prop_assert!(false, "a PUBLISH peeked as {:?}", other),
            (_, tern_codec::Peeked::Other) => {}
            (_, other) => prop_assert!(false, "{:?} peeked as {:?}", p, other),
        }
        // Cut short: a PUBLISH is incomplete; anything else is incomplete until its fixed
        // header is whole, then `Other`.
        for cut in 0..bytes.len() {
            let r = tern_codec::peek_publish(&bytes[..cut], v).unwrap();
            if matches!(p, Packet::Publish(_)) {
                prop_assert!(matches!(r, tern_codec::Peeked::Incomplete), "{:?} at {}", r, cut);
            } else {
                prop_assert!(matches!(r, tern_codec::Peeked::Incomplete | tern_codec::Peeked::Other), "{:?} at {}", r, cut);
            }
        }
    }

    /// On garbage `peek_publish` errs or answers, never panics.
    #[test]
    fn peek_publish_never_panics(v in version(), first in 0x30u8..0x40, body in vec(any::<u8>(), 0..200)) {
        let mut bytes = vec![first];
        let mut len = body.len();
        loop {
            let b = (len & 0x7F) as u8;
            len >>= 7;
            if len == 0 { bytes.push(b); break; }
            bytes.push(b | 0x80);
        }
        bytes.extend_from_slice(&body);
        let _ = tern_codec::peek_publish(&bytes, v);
    }

    #[test]
    fn incomplete_until_the_last_byte((v, p) in versioned_packet()) {
        let bytes = encode(&p, v);
        let mut buf = BytesMut::new();
        for (i, &b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let r = decode_packet(&mut buf, v, u32::MAX).unwrap();
            if i + 1 < bytes.len() {
                prop_assert_eq!(r, None);
                prop_assert_eq!(buf.len(), i + 1, "nothing consumed while incomplete");
            } else {
                prop_assert_eq!(r, Some(p.clone()));
                prop_assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn packets_back_to_back((v, ps) in version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..5)))) {
        let mut buf = BytesMut::new();
        for p in &ps {
            encode_packet(p, v, &mut buf).unwrap();
        }
        for p in ps {
            prop_assert_eq!(decode_packet(&mut buf, v, u32::MAX).unwrap(), Some(p));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn max_packet_size_is_enforced((v, p) in versioned_packet()) {
        let len = encoded_len(&p, v).unwrap();
        let mut buf = encode(&p, v);
        let max = u32::try_from(len - 1).unwrap();
        let r = decode_packet(&mut buf, v, max);
        prop_assert_eq!(r, Err(DecodeError::PacketTooLarge { size: len as u64, max }));
    }

    #[test]
    fn arbitrary_bytes_never_panic(v in version(), bytes in vec(any::<u8>(), 0..256)) {
        decode_all(&mut BytesMut::from(&bytes[..]), v);
    }

    /// Random bodies behind a well-formed fixed header, to get past the first byte.
    #[test]
    fn arbitrary_bodies_never_panic(v in version(), first in any::<u8>(), body in vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[first]);
        let mut len = body.len();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            buf.extend_from_slice(&[if len > 0 { byte | 0x80 } else { byte }]);
            if len == 0 {
                break;
            }
        }
        buf.extend_from_slice(&body);
        decode_all(&mut buf, v);
    }

    /// Valid packets with a few bytes changed: close to real input, so deep into the parsers.
    #[test]
    fn mutated_packets_never_panic(
        (v, p) in versioned_packet(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        decode_as in version(),
    ) {
        let mut bytes = encode(&p, v).to_vec();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        decode_all(&mut BytesMut::from(&bytes[..]), decode_as);
    }
}
