//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 sections 3.4-3.7): a packet id, then in 5.0 an
//! optional reason code and optional properties.
//!
//! 5.0 short forms (section 3.4.2.1): remaining length 2 means reason 0 and no properties, 3 means a
//! reason code and no properties. The encoder picks the shortest form that says the same.

use super::primitives::{Reader, Sink};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::Ack;
use crate::properties::Properties;
use crate::types::ProtocolVersion;

/// Reads a packet identifier that must not be 0 [MQTT-2.2.1-3].
pub(super) fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r)?;
    // In 3.x anything after the packet id is left for `finish` to refuse as trailing bytes.
    if !version.is_v5() || r.is_empty() {
        return Ok(Ack::new(packet_id));
    }
    let reason = r.u8()?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, PropCtx::Ack)?
    };
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

pub(super) fn encode(
    a: &Ack,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    s.put_u16(a.packet_id);
    if version.is_v5() {
        let no_properties = a.properties.is_empty();
        if a.reason != 0 || !no_properties {
            s.put_u8(a.reason);
        }
        if !no_properties {
            put_properties(&a.properties, PropCtx::Ack, s)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{Ack, Packet};
    use crate::properties::{Properties, PropertyValues};
    use crate::types::ProtocolVersion::*;

    type Ctor = fn(Ack) -> Packet;
    const KINDS: [(u8, Ctor); 4] = [
        (0x40, Packet::PubAck),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ];

    #[test]
    fn v3_packet_id_only() {
        for v in V3 {
            for (b0, ctor) in KINDS {
                both_ways(&[b0, 2, 0x12, 0x34], &ctor(Ack::new(0x1234)), v);
                // 3.x has no reason code: exactly two bytes.
                malformed(&[b0, 3, 0x12, 0x34, 0], v);
                malformed(&[b0, 1, 0x12], v);
            }
        }
    }

    #[test]
    fn v3_encoding_ignores_reason_and_properties() {
        let a = Ack {
            packet_id: 1,
            reason: 0x80,
            properties: PropertyValues {
                reason_string: Some("x".into()),
                ..Default::default()
            }
            .into(),
        };
        assert_eq!(
            enc(&Packet::PubAck(a), V3_1_1).unwrap(),
            b"\x40\x02\x00\x01"
        );
    }

    #[test]
    fn v5_short_forms() {
        for (b0, ctor) in KINDS {
            // Remaining length 2: success, no properties.
            both_ways(&[b0, 2, 0, 7], &ctor(Ack::new(7)), V5);
            // Remaining length 3: reason only.
            let a = Ack {
                packet_id: 7,
                reason: 0x10,
                properties: Properties::default(),
            };
            both_ways(&[b0, 3, 0, 7, 0x10], &ctor(a), V5);
            // Reason 0 with an empty property list decodes to the same as the short form.
            assert_eq!(dec(&[b0, 4, 0, 7, 0, 0], V5).unwrap(), ctor(Ack::new(7)));
            assert_eq!(dec(&[b0, 3, 0, 7, 0], V5).unwrap(), ctor(Ack::new(7)));
        }
    }

    #[test]
    fn v5_with_properties() {
        let a = Ack {
            packet_id: 1,
            reason: 0,
            properties: PropertyValues {
                reason_string: Some("ok".into()),
                ..Default::default()
            }
            .into(),
        };
        both_ways(
            b"\x50\x09\x00\x01\x00\x05\x1F\x00\x02ok",
            &Packet::PubRec(a),
            V5,
        );
    }

    #[test]
    fn packet_id_0_is_protocol_error() {
        // [MQTT-2.2.1-3]
        for v in ALL {
            for (b0, _) in KINDS {
                protocol(&[b0, 2, 0, 0], v);
            }
        }
    }

    #[test]
    fn v5_property_not_allowed() {
        // Topic Alias cannot be in PUBACK.
        malformed(b"\x40\x07\x00\x01\x00\x03\x23\x00\x01", V5);
        // Property length beyond the packet.
        malformed(b"\x40\x05\x00\x01\x00\x05\x1F", V5);
    }
}
