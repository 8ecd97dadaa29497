//! AUTH (MQTT 5.0 section 3.15), which exists in 5.0 only: the same optional reason code and
//! properties as DISCONNECT (remaining length 0 means reason 0, Success).

use super::disconnect::{decode_reason_and_properties, encode_reason_and_properties};
use super::primitives::{Reader, Sink};
use super::properties::PropCtx;
use crate::error::{DecodeError, EncodeError};
use crate::packet::Auth;
use crate::types::ProtocolVersion;

/// Decodes an AUTH body; the fixed header check has already refused AUTH before 5.0.
pub(super) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
    let (reason, properties) = decode_reason_and_properties(r, PropCtx::Auth)?;
    Ok(Auth { reason, properties })
}

pub(super) fn encode(
    a: &Auth,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Err(EncodeError::Unsupported(
            "AUTH does not exist before MQTT 5",
        ));
    }
    encode_reason_and_properties(a.reason, &a.properties, PropCtx::Auth, s)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::EncodeError;
    use crate::packet::{Auth, Packet};
    use crate::properties::{Properties, PropertyValues};
    use crate::reason;
    use crate::types::ProtocolVersion::*;
    use bytes::Bytes;

    #[test]
    fn forms() {
        both_ways(b"\xF0\x00", &Packet::Auth(Auth::default()), V5);
        let a = Auth {
            reason: reason::RE_AUTHENTICATE,
            properties: Properties::default(),
        };
        both_ways(b"\xF0\x01\x19", &Packet::Auth(a), V5);
        let a = Auth {
            reason: reason::CONTINUE_AUTHENTICATION,
            properties: PropertyValues {
                authentication_method: Some("m".into()),
                authentication_data: Some(Bytes::from_static(b"d")),
                ..Default::default()
            }
            .into(),
        };
        both_ways(
            b"\xF0\x0A\x18\x08\x15\x00\x01m\x16\x00\x01d",
            &Packet::Auth(a),
            V5,
        );
    }

    #[test]
    fn not_before_v5() {
        for v in V3 {
            assert!(matches!(
                enc(&Packet::Auth(Auth::default()), v),
                Err(EncodeError::Unsupported(_))
            ));
            malformed(b"\xF0\x00", v);
        }
    }

    #[test]
    fn property_not_allowed() {
        // Session Expiry Interval is not an AUTH property.
        malformed(b"\xF0\x07\x18\x05\x11\x00\x00\x00\x01", V5);
    }
}
