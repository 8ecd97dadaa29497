//! SUBSCRIBE and SUBACK (MQTT 5.0 sections 3.8 and 3.9, MQTT 3.1.1 sections 3.8 and 3.9).
//!
//! SUBSCRIBE: packet id, (5.0) properties, then (topic filter, options byte) pairs to the end.
//! SUBACK: packet id, (5.0) properties, then one reason / return code per filter to the end.
//! Filter syntax (wildcard placement, `$share`) is the broker's topic crate's job.

use super::ack::packet_id;
use super::primitives::{Reader, Sink, put_string};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::{RetainHandling, SubAck, Subscribe, SubscriptionOptions};
use crate::properties::Properties;
use crate::reason;
use crate::types::{ProtocolVersion, QoS};

const QOS_MASK: u8 = 0x03;
const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;
const RETAIN_HANDLING_SHIFT: u8 = 4;

fn decode_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    if version.is_v5() {
        // [MQTT-3.8.3-5]
        if byte & 0xC0 != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits are set",
            ));
        }
    } else if byte & !QOS_MASK != 0 {
        // [MQTT-3-8.3-4] (3.1.1)
        return Err(DecodeError::Malformed(
            "reserved subscription option bits are set",
        ));
    }
    let qos =
        QoS::from_u8(byte & QOS_MASK).ok_or(DecodeError::Malformed("subscription with QoS 3"))?;
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0x03 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::Protocol("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & NO_LOCAL != 0,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

fn encode_options(o: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut b = o.qos as u8;
    if version.is_v5() {
        if o.no_local {
            b |= NO_LOCAL;
        }
        if o.retain_as_published {
            b |= RETAIN_AS_PUBLISHED;
        }
        b |= (o.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
    }
    b
}

pub(super) fn decode_subscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if version.is_v5() {
        read_properties(r, PropCtx::Subscribe)?
    } else {
        Properties::default()
    };
    // Grows with the filters actually present: never sized from a length field.
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = decode_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    // [MQTT-3.8.3-3]
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(super) fn encode_subscribe(
    p: &Subscribe,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    if version.is_v5() {
        put_properties(&p.properties, PropCtx::Subscribe, s)?;
    }
    for (filter, options) in &p.filters {
        put_string(s, filter)?;
        s.put_u8(encode_options(options, version));
    }
    Ok(())
}

pub(super) fn decode_suback(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if version.is_v5() {
        read_properties(r, PropCtx::SubAck)?
    } else {
        Properties::default()
    };
    let reasons = r.rest().to_vec();
    // One code per filter of the SUBSCRIBE, which had at least one.
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without a return code"));
    }
    // [MQTT-3.9.3-2] (3.1.1): only 0x00, 0x01, 0x02 and 0x80. 5.0 codes are carried as they are.
    if !version.is_v5()
        && reasons
            .iter()
            .any(|&c| !matches!(c, 0..=2 | reason::V3_SUBACK_FAILURE))
    {
        return Err(DecodeError::Protocol("reserved SUBACK return code"));
    }
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

pub(super) fn encode_suback(
    p: &SubAck,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    if version.is_v5() {
        put_properties(&p.properties, PropCtx::SubAck, s)?;
    }
    s.put_slice(&p.reasons);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{Packet, RetainHandling, SubAck, Subscribe, SubscriptionOptions};
    use crate::properties::{Properties, PropertyValues};
    use crate::types::{ProtocolVersion::*, QoS};

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    #[test]
    fn v3_subscribe() {
        for v in V3 {
            let p = Subscribe {
                packet_id: 1,
                filters: vec![
                    ("a/+".into(), opts(QoS::AtLeastOnce)),
                    ("#".into(), opts(QoS::ExactlyOnce)),
                ],
                properties: Properties::default(),
            };
            both_ways(
                b"\x82\x0C\x00\x01\x00\x03a/+\x01\x00\x01#\x02",
                &Packet::Subscribe(p),
                v,
            );
        }
    }

    #[test]
    fn v5_subscribe() {
        let p = Subscribe {
            packet_id: 2,
            filters: vec![(
                "t".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            )],
            properties: PropertyValues {
                subscription_identifiers: vec![9],
                ..Default::default()
            }
            .into(),
        };
        both_ways(
            b"\x82\x09\x00\x02\x02\x0B\x09\x00\x01t\x2D",
            &Packet::Subscribe(p),
            V5,
        );
    }

    #[test]
    fn packet_id_0_is_protocol_error() {
        // [MQTT-2.2.1-3]
        protocol(b"\x82\x06\x00\x00\x00\x01t\x00", V3_1_1);
    }

    #[test]
    fn no_filter_is_protocol_error() {
        // [MQTT-3.8.3-3]
        protocol(b"\x82\x02\x00\x01", V3_1_1);
        protocol(b"\x82\x03\x00\x01\x00", V5);
    }

    #[test]
    fn v3_reserved_option_bits_are_malformed() {
        // [MQTT-3-8.3-4]: no local (bit 2) does not exist in 3.x.
        for v in V3 {
            malformed(b"\x82\x06\x00\x01\x00\x01t\x04", v);
            malformed(b"\x82\x06\x00\x01\x00\x01t\x80", v);
        }
    }

    #[test]
    fn v5_reserved_option_bits_are_malformed() {
        // [MQTT-3.8.3-5]
        malformed(b"\x82\x07\x00\x01\x00\x00\x01t\x40", V5);
        malformed(b"\x82\x07\x00\x01\x00\x00\x01t\x80", V5);
    }

    #[test]
    fn qos_3_is_malformed() {
        malformed(b"\x82\x06\x00\x01\x00\x01t\x03", V3_1_1);
        malformed(b"\x82\x07\x00\x01\x00\x00\x01t\x03", V5);
    }

    #[test]
    fn retain_handling_3_is_protocol_error() {
        protocol(b"\x82\x07\x00\x01\x00\x00\x01t\x30", V5);
    }

    #[test]
    fn truncated_filter_is_malformed() {
        // A filter without its options byte.
        malformed(b"\x82\x05\x00\x01\x00\x01t", V3_1_1);
    }

    #[test]
    fn v3_encoding_writes_qos_only() {
        let p = Subscribe {
            packet_id: 1,
            filters: vec![(
                "t".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    ..SubscriptionOptions::default()
                },
            )],
            properties: Properties::default(),
        };
        assert_eq!(
            enc(&Packet::Subscribe(p), V3_1_1).unwrap(),
            b"\x82\x06\x00\x01\x00\x01t\x01"
        );
    }

    #[test]
    fn suback() {
        for v in V3 {
            let p = SubAck {
                packet_id: 3,
                reasons: vec![0, 1, 2, 0x80],
                properties: Properties::default(),
            };
            both_ways(b"\x90\x06\x00\x03\x00\x01\x02\x80", &Packet::SubAck(p), v);
        }
        let p = SubAck {
            packet_id: 3,
            reasons: vec![0x8F],
            properties: PropertyValues {
                reason_string: Some("r".into()),
                ..Default::default()
            }
            .into(),
        };
        both_ways(
            b"\x90\x08\x00\x03\x04\x1F\x00\x01r\x8F",
            &Packet::SubAck(p),
            V5,
        );
    }

    #[test]
    fn suback_rules() {
        // [MQTT-3.9.3-2]: reserved 3.1.1 return code.
        protocol(b"\x90\x03\x00\x01\x03", V3_1_1);
        // No code at all.
        protocol(b"\x90\x02\x00\x01", V3_1_1);
        protocol(b"\x90\x03\x00\x01\x00", V5);
        // [MQTT-2.2.1-3]
        protocol(b"\x90\x03\x00\x00\x00", V3_1_1);
    }
}
