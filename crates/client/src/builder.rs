//! Shorthands for building packets.

use bytes::Bytes;
use tern_codec::{
    ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, Unsubscribe,
};

/// A CONNECT with the given client id, clean start flag and keep alive.
pub fn connect(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    keep_alive: u16,
) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive,
        client_id: ByteStr::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A PUBLISH; `packet_id` must be `Some` for QoS 1/2.
pub fn publish(
    topic: &str,
    payload: impl Into<Bytes>,
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: ByteStr::from(topic),
        packet_id,
        properties: Properties::default(),
        payload: payload.into(),
    })
}

/// A SUBSCRIBE to one or more filters at the given QoS each.
pub fn subscribe(packet_id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|(f, qos)| {
                (
                    ByteStr::from(*f),
                    SubscriptionOptions {
                        qos: *qos,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        properties: Properties::default(),
    })
}

/// An UNSUBSCRIBE.
pub fn unsubscribe(packet_id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id,
        filters: filters.iter().map(|f| ByteStr::from(*f)).collect(),
        properties: Properties::default(),
    })
}
