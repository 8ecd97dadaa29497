//! UNSUBSCRIBE and UNSUBACK (MQTT 5.0 sections 3.10 and 3.11, MQTT 3.1.1 sections 3.10, 3.11).
//!
//! UNSUBSCRIBE: packet id, (5.0) properties, topic filters to the end.
//! UNSUBACK: packet id; in 5.0 also properties and one reason code per filter. The 3.x UNSUBACK
//! has no payload, so its `reasons` stay empty.

use super::ack::packet_id;
use super::primitives::{Reader, Sink, put_string};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::{UnsubAck, Unsubscribe};
use crate::properties::Properties;
use crate::types::ProtocolVersion;

pub(super) fn decode_unsubscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if version.is_v5() {
        read_properties(r, PropCtx::Unsubscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    // [MQTT-3.10.3-2]
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(super) fn encode_unsubscribe(
    p: &Unsubscribe,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    if version.is_v5() {
        put_properties(&p.properties, PropCtx::Unsubscribe, s)?;
    }
    for filter in &p.filters {
        put_string(s, filter)?;
    }
    Ok(())
}

pub(super) fn decode_unsuback(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !version.is_v5() {
        // Anything more is refused as trailing bytes.
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = read_properties(r, PropCtx::UnsubAck)?;
    let reasons = r.rest().to_vec();
    // One code per filter of the UNSUBSCRIBE, which had at least one.
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without a reason code"));
    }
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

pub(super) fn encode_unsuback(
    p: &UnsubAck,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    if version.is_v5() {
        put_properties(&p.properties, PropCtx::UnsubAck, s)?;
        s.put_slice(&p.reasons);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{Packet, UnsubAck, Unsubscribe};
    use crate::properties::{Properties, PropertyValues};
    use crate::types::ProtocolVersion::*;

    #[test]
    fn unsubscribe() {
        for v in V3 {
            let p = Unsubscribe {
                packet_id: 4,
                filters: vec!["a".into(), "b/#".into()],
                properties: Properties::default(),
            };
            both_ways(
                b"\xA2\x0A\x00\x04\x00\x01a\x00\x03b/#",
                &Packet::Unsubscribe(p),
                v,
            );
        }
        let p = Unsubscribe {
            packet_id: 4,
            filters: vec!["a".into()],
            properties: PropertyValues {
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            }
            .into(),
        };
        both_ways(
            b"\xA2\x0D\x00\x04\x07\x26\x00\x01k\x00\x01v\x00\x01a",
            &Packet::Unsubscribe(p),
            V5,
        );
    }

    #[test]
    fn unsubscribe_rules() {
        // [MQTT-3.10.3-2]
        protocol(b"\xA2\x02\x00\x01", V3_1_1);
        protocol(b"\xA2\x03\x00\x01\x00", V5);
        // [MQTT-2.2.1-3]
        protocol(b"\xA2\x05\x00\x00\x00\x01a", V3_1_1);
        // Truncated filter.
        malformed(b"\xA2\x05\x00\x01\x00\x02a", V3_1_1);
        // Reason String is not an UNSUBSCRIBE property.
        malformed(b"\xA2\x0A\x00\x01\x04\x1F\x00\x01x\x00\x01a", V5);
    }

    #[test]
    fn unsuback() {
        for v in V3 {
            both_ways(
                b"\xB0\x02\x00\x05",
                &Packet::UnsubAck(UnsubAck {
                    packet_id: 5,
                    ..UnsubAck::default()
                }),
                v,
            );
            // 3.x UNSUBACK is exactly two bytes.
            malformed(b"\xB0\x03\x00\x05\x00", v);
            protocol(b"\xB0\x02\x00\x00", v);
        }
        // 3.x encoding writes the packet id only.
        let p = UnsubAck {
            packet_id: 5,
            reasons: vec![0x11],
            properties: Properties::default(),
        };
        assert_eq!(
            enc(&Packet::UnsubAck(p.clone()), V3_1_1).unwrap(),
            b"\xB0\x02\x00\x05"
        );
        both_ways(b"\xB0\x04\x00\x05\x00\x11", &Packet::UnsubAck(p), V5);
        protocol(b"\xB0\x03\x00\x05\x00", V5);
        malformed(b"\xB0\x02\x00\x05", V5);
    }
}
