//! DISCONNECT (MQTT 5.0 section 3.14, MQTT 3.1.1 section 3.14).
//!
//! 3.x: no variable header. 5.0: remaining length 0 means reason 0 (normal disconnection) and no
//! properties, 1 means a reason code only, more means reason code and properties (3.14.2.1).

use super::primitives::{Reader, Sink};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::Disconnect;
use crate::properties::Properties;
use crate::types::ProtocolVersion;

/// Reads the optional reason code and properties shared by DISCONNECT and AUTH.
pub(super) fn decode_reason_and_properties(
    r: &mut Reader,
    ctx: PropCtx,
) -> Result<(u8, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((0, Properties::default()));
    }
    let reason = r.u8()?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, ctx)?
    };
    Ok((reason, properties))
}

/// Writes the shortest form of a reason code and properties (DISCONNECT and AUTH).
pub(super) fn encode_reason_and_properties(
    reason: u8,
    properties: &Properties,
    ctx: PropCtx,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    let no_properties = properties.is_empty();
    if reason != 0 || !no_properties {
        s.put_u8(reason);
    }
    if !no_properties {
        put_properties(properties, ctx, s)?;
    }
    Ok(())
}

pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() {
        // Any byte is refused by `finish` as trailing.
        return Ok(Disconnect::default());
    }
    let (reason, properties) = decode_reason_and_properties(r, PropCtx::Disconnect)?;
    Ok(Disconnect { reason, properties })
}

pub(super) fn encode(
    d: &Disconnect,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        encode_reason_and_properties(d.reason, &d.properties, PropCtx::Disconnect, s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{Disconnect, Packet};
    use crate::properties::{Properties, PropertyValues};
    use crate::reason;
    use crate::types::ProtocolVersion::*;

    #[test]
    fn v3() {
        for v in V3 {
            both_ways(b"\xE0\x00", &Packet::Disconnect(Disconnect::default()), v);
            malformed(b"\xE0\x01\x00", v);
            // Reason and properties are not written.
            let d = Disconnect {
                reason: 0x8E,
                properties: Properties::default(),
            };
            assert_eq!(enc(&Packet::Disconnect(d), v).unwrap(), b"\xE0\x00");
        }
    }

    #[test]
    fn v5_forms() {
        both_ways(b"\xE0\x00", &Packet::Disconnect(Disconnect::default()), V5);
        let d = Disconnect {
            reason: reason::DISCONNECT_WITH_WILL,
            properties: Properties::default(),
        };
        both_ways(b"\xE0\x01\x04", &Packet::Disconnect(d), V5);
        let d = Disconnect {
            reason: reason::SERVER_MOVED,
            properties: PropertyValues {
                server_reference: Some("s".into()),
                session_expiry_interval: Some(0),
                ..Default::default()
            }
            .into(),
        };
        both_ways(
            b"\xE0\x0B\x9D\x09\x11\x00\x00\x00\x00\x1C\x00\x01s",
            &Packet::Disconnect(d),
            V5,
        );
        // Reason 0 with an empty property list is the same as the empty form.
        assert_eq!(
            dec(b"\xE0\x02\x00\x00", V5).unwrap(),
            Packet::Disconnect(Disconnect::default())
        );
    }

    #[test]
    fn v5_rules() {
        // Topic Alias is not a DISCONNECT property.
        malformed(b"\xE0\x05\x00\x03\x23\x00\x01", V5);
        // Session expiry twice.
        protocol(
            b"\xE0\x0C\x00\x0A\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02",
            V5,
        );
        // Trailing byte after the properties.
        malformed(b"\xE0\x03\x00\x00\x00", V5);
    }
}
