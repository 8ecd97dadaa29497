//! PUBLISH (MQTT 5.0 section 3.3, MQTT 3.1.1 section 3.3): flags DUP/QoS/RETAIN in the fixed
//! header, topic name, packet id (QoS > 0 only), (5.0) properties, and the payload: every byte left.
//!
//! Topic *content* (wildcards, empty topic without an alias) is checked by the broker's topic
//! crate; here only the UTF-8 string rules apply.

use super::primitives::{Reader, Sink, put_string};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::Publish;
use crate::properties::Properties;
use crate::types::{ProtocolVersion, QoS};

pub(super) const RETAIN: u8 = 0x01;
const QOS_SHIFT: u8 = 1;
const DUP: u8 = 0x08;

/// The fixed header flags of `p`.
pub(super) fn flags(p: &Publish) -> u8 {
    let mut f = (p.qos as u8) << QOS_SHIFT;
    if p.dup {
        f |= DUP;
    }
    if p.retain {
        f |= RETAIN;
    }
    f
}

/// QoS and DUP from the fixed header's flags, checked (shared by [`decode`] and [`peek`]).
fn qos_and_dup(flags: u8) -> Result<(QoS, bool), DecodeError> {
    // [MQTT-3.3.1-4]
    let qos = QoS::from_u8((flags >> QOS_SHIFT) & 0x03)
        .ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let dup = flags & DUP != 0;
    // [MQTT-3.3.1-2]
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    Ok((qos, dup))
}

/// A PUBLISH's packet identifier, checked (shared by [`decode`] and [`peek`]).
fn packet_id(id: u16) -> Result<u16, DecodeError> {
    match id {
        // [MQTT-2.2.1-3]
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

pub(super) fn decode(
    r: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let (qos, dup) = qos_and_dup(flags)?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r.u16()?)?)
    };
    let properties = if version.is_v5() {
        read_properties(r, PropCtx::Publish)?
    } else {
        Properties::default()
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

pub(super) fn encode(
    p: &Publish,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    put_string(s, &p.topic)?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::Unsupported(
                "QoS 0 PUBLISH with a packet identifier",
            ));
        }
        (_, Some(id)) => s.put_u16(id),
        (_, None) => {
            return Err(EncodeError::Unsupported(
                "QoS 1 or 2 PUBLISH without a packet identifier",
            ));
        }
    }
    if version.is_v5() {
        put_properties(&p.properties, PropCtx::Publish, s)?;
    }
    s.put_slice(&p.payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{Packet, Publish};
    use crate::properties::PropertyValues;
    use crate::types::{ProtocolVersion::*, QoS};
    use crate::{DecodeError, EncodeError};
    use bytes::Bytes;

    #[test]
    fn qos0() {
        for v in V3 {
            let p = Publish {
                retain: true,
                topic: "a/b".into(),
                payload: Bytes::from_static(b"hi"),
                ..Publish::default()
            };
            both_ways(b"\x31\x07\x00\x03a/bhi", &Packet::Publish(p), v);
        }
    }

    #[test]
    fn qos1_and_2() {
        for v in V3 {
            let p = Publish {
                qos: QoS::AtLeastOnce,
                topic: "t".into(),
                packet_id: Some(10),
                ..Publish::default()
            };
            both_ways(b"\x32\x05\x00\x01t\x00\x0A", &Packet::Publish(p), v);
            let p = Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                topic: "t".into(),
                packet_id: Some(0x0102),
                payload: Bytes::from_static(b"x"),
                ..Publish::default()
            };
            both_ways(b"\x3C\x06\x00\x01t\x01\x02x", &Packet::Publish(p), v);
        }
    }

    #[test]
    fn v5_with_properties() {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: "".into(),
            packet_id: Some(1),
            properties: PropertyValues {
                topic_alias: Some(3),
                subscription_identifiers: vec![1, 200],
                ..Default::default()
            }
            .into(),
            payload: Bytes::from_static(b"p"),
            ..Publish::default()
        };
        both_ways(
            b"\x32\x0E\x00\x00\x00\x01\x08\x0B\x01\x0B\xC8\x01\x23\x00\x03p",
            &Packet::Publish(p),
            V5,
        );
        // No properties: the property length is still there.
        let p = Publish {
            topic: "t".into(),
            ..Publish::default()
        };
        both_ways(b"\x30\x04\x00\x01t\x00", &Packet::Publish(p), V5);
    }

    #[test]
    fn qos_3_is_malformed() {
        // [MQTT-3.3.1-4]
        for v in ALL {
            malformed(b"\x36\x05\x00\x01t\x00\x01", v);
        }
    }

    #[test]
    fn dup_with_qos_0_is_malformed() {
        // [MQTT-3.3.1-2]
        for v in ALL {
            malformed(b"\x38\x03\x00\x01t", v);
        }
    }

    #[test]
    fn packet_id_0_is_protocol_error() {
        // [MQTT-2.2.1-3]
        for v in V3 {
            protocol(b"\x32\x05\x00\x01t\x00\x00", v);
        }
        protocol(b"\x34\x06\x00\x01t\x00\x00\x00", V5);
    }

    #[test]
    fn missing_packet_id_is_malformed() {
        malformed(b"\x32\x04\x00\x01t\x00", V3_1_1);
    }

    #[test]
    fn topic_strings_are_validated() {
        // [MQTT-1.5.4-2] U+0000, [MQTT-1.5.4-1] invalid UTF-8.
        for bytes in [&b"\x30\x04\x00\x02a\x00"[..], b"\x30\x04\x00\x02\xC0\xAF"] {
            assert!(matches!(
                dec(bytes, V3_1_1),
                Err(DecodeError::InvalidString(_))
            ));
        }
    }

    #[test]
    fn wildcards_in_topic_are_left_to_the_broker() {
        assert!(dec(b"\x30\x03\x00\x01#", V3_1_1).is_ok());
    }

    #[test]
    fn v5_missing_property_length_is_malformed() {
        malformed(b"\x30\x03\x00\x01t", V5);
    }

    #[test]
    fn v5_property_not_allowed() {
        // Session Expiry Interval cannot be in PUBLISH.
        malformed(b"\x30\x09\x00\x01t\x05\x11\x00\x00\x00\x01", V5);
    }

    #[test]
    fn packet_id_must_match_qos_to_encode() {
        let p = Publish {
            topic: "t".into(),
            packet_id: Some(1),
            ..Publish::default()
        };
        assert!(matches!(
            enc(&Packet::Publish(p), V5),
            Err(EncodeError::Unsupported(_))
        ));
        let p = Publish {
            topic: "t".into(),
            qos: QoS::AtLeastOnce,
            ..Publish::default()
        };
        assert!(matches!(
            enc(&Packet::Publish(p), V5),
            Err(EncodeError::Unsupported(_))
        ));
    }

    #[test]
    fn topic_too_long_to_encode() {
        let p = Publish {
            topic: "a".repeat(65_536).into(),
            ..Publish::default()
        };
        assert_eq!(
            enc(&Packet::Publish(p), V3_1_1),
            Err(EncodeError::FieldTooLong)
        );
    }

    #[test]
    fn v3_ignores_properties_when_encoding() {
        let p = Publish {
            topic: "t".into(),
            properties: PropertyValues {
                topic_alias: Some(1),
                ..Default::default()
            }
            .into(),
            ..Publish::default()
        };
        assert_eq!(
            enc(&Packet::Publish(p), V3_1_1).unwrap(),
            b"\x30\x03\x00\x01t"
        );
    }
}

/// A PUBLISH read in place by [`peek_publish`](crate::peek_publish): borrowed slices of the
/// input, nothing allocated, the topic's UTF-8 and the properties not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// The topic name's bytes (not checked for UTF-8).
    pub topic: &'a [u8],
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// What [`peek_publish`](crate::peek_publish) found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peeked<'a> {
    /// The packet's bytes have not all arrived.
    Incomplete,
    /// A PUBLISH of `len` bytes (fixed header included).
    Publish { view: PublishView<'a>, len: usize },
    /// Another packet: decode it with [`decode_packet`](crate::decode_packet).
    Other,
}

/// Reads the PUBLISH at the front of `buf` in place, for a receiver that handles many messages
/// and trusts their sender (the load generator): the fixed header and the lengths are checked
/// as [`decode_packet`](crate::decode_packet) checks them, the topic's UTF-8 and the
/// properties' content are not. A malformed PUBLISH is an error; anything else is `Other`.
pub fn peek(buf: &[u8], version: ProtocolVersion) -> Result<Peeked<'_>, DecodeError> {
    let Some(header) = super::parse_fixed_header(buf, version)? else {
        return Ok(Peeked::Incomplete);
    };
    if header.packet_type != super::PUBLISH {
        return Ok(Peeked::Other);
    }
    let len = header.header_len + header.remaining_length;
    let Some(packet) = buf.get(..len) else {
        return Ok(Peeked::Incomplete);
    };
    let body = &packet[header.header_len..];
    let flags = header.flags;
    let (qos, dup) = qos_and_dup(flags)?;
    const SHORT: DecodeError = DecodeError::Malformed("PUBLISH shorter than its fields");
    let u16_at = |at: usize| {
        body.get(at..)
            .and_then(|b| b.first_chunk::<2>())
            .map(|b| u16::from_be_bytes(*b))
            .ok_or(SHORT)
    };
    let topic_len = usize::from(u16_at(0)?);
    let topic = body.get(2..2 + topic_len).ok_or(SHORT)?;
    let mut at = 2 + topic_len;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        let id = packet_id(u16_at(at)?)?;
        at += 2;
        Some(id)
    };
    if version.is_v5() {
        let (props_len, n) =
            super::primitives::read_var_int(body.get(at..).ok_or(SHORT)?)?.ok_or(SHORT)?;
        at += n;
        at = at.checked_add(props_len as usize).ok_or(SHORT)?;
    }
    let payload = body.get(at..).ok_or(SHORT)?;
    Ok(Peeked::Publish {
        view: PublishView {
            dup,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            payload,
        },
        len,
    })
}
