//! CONNACK (MQTT 5.0 section 3.2, MQTT 3.1.1 section 3.2): acknowledge flags, reason (3.x: return)
//! code and, in 5.0, properties.

use super::primitives::{Reader, Sink};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::ConnAck;
use crate::properties::Properties;
use crate::types::ProtocolVersion;

const SESSION_PRESENT: u8 = 0x01;

pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    // [MQTT-3.2.2-1]: bits 7-1 are reserved.
    if flags & !SESSION_PRESENT != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags are set"));
    }
    let code = r.u8()?;
    // The property length is mandatory in 5.0 CONNACK; in 3.x anything after the code is trailing.
    let properties = if version.is_v5() {
        read_properties(r, PropCtx::ConnAck)?
    } else {
        Properties::default()
    };
    Ok(ConnAck {
        session_present: flags & SESSION_PRESENT != 0,
        code,
        properties,
    })
}

pub(super) fn encode(
    c: &ConnAck,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    s.put_u8(if c.session_present {
        SESSION_PRESENT
    } else {
        0
    });
    s.put_u8(c.code);
    if version.is_v5() {
        put_properties(&c.properties, PropCtx::ConnAck, s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{ConnAck, Packet};
    use crate::properties::PropertyValues;
    use crate::types::ProtocolVersion::*;

    #[test]
    fn v3() {
        for v in V3 {
            let p = Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                ..ConnAck::default()
            });
            both_ways(b"\x20\x02\x01\x00", &p, v);
            let p = Packet::ConnAck(ConnAck {
                session_present: false,
                code: 5,
                ..ConnAck::default()
            });
            both_ways(b"\x20\x02\x00\x05", &p, v);
        }
    }

    #[test]
    fn v3_must_be_exactly_two_bytes() {
        for v in V3 {
            malformed(b"\x20\x03\x00\x00\x00", v);
            malformed(b"\x20\x01\x00", v);
        }
    }

    #[test]
    fn v5() {
        let p = Packet::ConnAck(ConnAck::default());
        both_ways(b"\x20\x03\x00\x00\x00", &p, V5);
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            code: crate::reason::NOT_AUTHORIZED,
            properties: PropertyValues {
                reason_string: Some("no".into()),
                ..Default::default()
            }
            .into(),
        });
        both_ways(b"\x20\x08\x00\x87\x05\x1F\x00\x02no", &p, V5);
    }

    #[test]
    fn v5_requires_property_length() {
        malformed(b"\x20\x02\x00\x00", V5);
    }

    #[test]
    fn reserved_flags_are_malformed() {
        // [MQTT-3.2.2-1]
        malformed(b"\x20\x02\x02\x00", V3_1_1);
        malformed(b"\x20\x03\x80\x00\x00", V5);
    }

    #[test]
    fn v5_property_not_allowed() {
        // Topic Alias (0x23) cannot be in CONNACK.
        malformed(b"\x20\x06\x00\x00\x03\x23\x00\x01", V5);
    }
}
