//! CONNECT (MQTT 5.0 section 3.1, MQTT 3.1.1 section 3.1, MQTT 3.1 `MQIsdp`).
//!
//! Variable header: protocol name, level, connect flags, keep alive, (5.0) properties.
//! Payload: client id, then if the will flag is set (5.0) will properties, will topic and will
//! payload, then user name and password when their flags are set.

use super::primitives::{Reader, Sink, put_binary, put_string};
use super::properties::{PropCtx, put_properties, read_properties};
use crate::error::{DecodeError, EncodeError};
use crate::packet::{Connect, Will};
use crate::properties::Properties;
use crate::types::{ProtocolVersion, QoS};

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// Decodes a CONNECT body. The protocol level comes from the packet itself.
pub(super) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        _ => return Err(DecodeError::UnsupportedProtocol { level }),
    };
    let flags = r.u8()?;
    // [MQTT-3.1.2-3]
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed("reserved connect flag is set"));
    }
    let will_flag = flags & WILL != 0;
    let will_qos = QoS::from_u8((flags >> WILL_QOS_SHIFT) & 0x03)
        // [MQTT-3.1.2-14]
        .ok_or(DecodeError::Malformed("will QoS 3"))?;
    let will_retain = flags & WILL_RETAIN != 0;
    // [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without a will",
        ));
    }
    // [MQTT-3.1.2-22]: 3.x forbids a password without a user name; 5.0 allows it.
    if !protocol.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if protocol.is_v5() {
        read_properties(r, PropCtx::Connect)?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if protocol.is_v5() {
            read_properties(r, PropCtx::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

pub(super) fn encode(
    c: &Connect,
    version: ProtocolVersion,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    if c.protocol != version {
        return Err(EncodeError::Unsupported(
            "CONNECT protocol differs from the encoding version",
        ));
    }
    if !version.is_v5() && c.password.is_some() && c.username.is_none() {
        // [MQTT-3.1.2-22]
        return Err(EncodeError::Unsupported(
            "MQTT 3.x password without a user name",
        ));
    }
    put_string(
        s,
        if version == ProtocolVersion::V3_1 {
            "MQIsdp"
        } else {
            "MQTT"
        },
    )?;
    s.put_u8(version.level());
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(w) = &c.will {
        flags |= WILL | (w.qos as u8) << WILL_QOS_SHIFT;
        if w.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if version.is_v5() {
        put_properties(&c.properties, PropCtx::Connect, s)?;
    }
    put_string(s, &c.client_id)?;
    if let Some(w) = &c.will {
        if version.is_v5() {
            put_properties(&w.properties, PropCtx::Will, s)?;
        }
        put_string(s, &w.topic)?;
        put_binary(s, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_string(s, u)?;
    }
    if let Some(p) = &c.password {
        put_binary(s, p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::packet::{Connect, Packet, Will};
    use crate::properties::{Properties, PropertyValues};
    use crate::types::{ProtocolVersion::*, QoS};
    use crate::{DecodeError, EncodeError};
    use bytes::Bytes;

    fn minimal(protocol: crate::ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn v3_1_1_minimal() {
        let bytes = b"\x10\x0D\x00\x04MQTT\x04\x02\x00\x3C\x00\x01c";
        both_ways(bytes, &Packet::Connect(Box::new(minimal(V3_1_1))), V3_1_1);
    }

    #[test]
    fn v3_1_uses_mqisdp() {
        let bytes = b"\x10\x0F\x00\x06MQIsdp\x03\x02\x00\x3C\x00\x01c";
        both_ways(bytes, &Packet::Connect(Box::new(minimal(V3_1))), V3_1);
    }

    #[test]
    fn decode_ignores_the_version_argument() {
        let bytes = b"\x10\x0D\x00\x04MQTT\x04\x02\x00\x3C\x00\x01c";
        assert_eq!(
            dec(bytes, V5).unwrap(),
            Packet::Connect(Box::new(minimal(V3_1_1)))
        );
    }

    #[test]
    fn v3_1_1_full() {
        let c = Connect {
            protocol: V3_1_1,
            clean_start: false,
            keep_alive: 0,
            client_id: "".into(),
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
            properties: Properties::default(),
        };
        let bytes =
            b"\x10\x1A\x00\x04MQTT\x04\xF4\x00\x00\x00\x00\x00\x01w\x00\x03bye\x00\x01u\x00\x01p";
        both_ways(bytes, &Packet::Connect(Box::new(c.clone())), V3_1_1);
        // Properties are not written for 3.x.
        let mut with_props = c;
        with_props.properties.session_expiry_interval = Some(5);
        assert_eq!(
            enc(&Packet::Connect(Box::new(with_props)), V3_1_1).unwrap(),
            bytes
        );
    }

    #[test]
    fn v5_with_will_and_properties() {
        let c = Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 10,
            client_id: "id".into(),
            will: Some(Will {
                topic: "t".into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: PropertyValues {
                    will_delay_interval: Some(5),
                    ..Default::default()
                }
                .into(),
            }),
            username: None,
            // 5.0 allows a password without a user name.
            password: Some(Bytes::from_static(b"pw")),
            properties: PropertyValues {
                session_expiry_interval: Some(300),
                receive_maximum: Some(20),
                ..Default::default()
            }
            .into(),
        };
        let bytes = b"\x10\x27\x00\x04MQTT\x05\x4E\x00\x0A\
            \x08\x11\x00\x00\x01\x2C\x21\x00\x14\
            \x00\x02id\
            \x05\x18\x00\x00\x00\x05\x00\x01t\x00\x01x\
            \x00\x02pw";
        both_ways(bytes, &Packet::Connect(Box::new(c)), V5);
    }

    #[test]
    fn unsupported_protocols() {
        for (bytes, level) in [
            (&b"\x10\x0D\x00\x04MQTT\x03\x02\x00\x3C\x00\x01c"[..], 3),
            (b"\x10\x0D\x00\x04MQTT\x06\x02\x00\x3C\x00\x01c", 6),
            (b"\x10\x0F\x00\x06MQIsdp\x04\x02\x00\x3C\x00\x01c", 4),
            (b"\x10\x0D\x00\x04MQTX\x04\x02\x00\x3C\x00\x01c", 4),
        ] {
            assert_eq!(
                dec(bytes, V5),
                Err(DecodeError::UnsupportedProtocol { level })
            );
        }
    }

    #[test]
    fn reserved_flag_is_malformed() {
        // [MQTT-3.1.2-3]
        malformed(b"\x10\x0D\x00\x04MQTT\x04\x03\x00\x3C\x00\x01c", V3_1_1);
    }

    #[test]
    fn will_qos_or_retain_without_will_is_malformed() {
        // [MQTT-3.1.2-11] [MQTT-3.1.2-13]: QoS 1 without the will flag.
        malformed(b"\x10\x0D\x00\x04MQTT\x04\x0A\x00\x3C\x00\x01c", V3_1_1);
        // [MQTT-3.1.2-15]: retain without the will flag.
        malformed(b"\x10\x0D\x00\x04MQTT\x04\x22\x00\x3C\x00\x01c", V3_1_1);
    }

    #[test]
    fn will_qos_3_is_malformed() {
        // [MQTT-3.1.2-14]
        malformed(
            b"\x10\x12\x00\x04MQTT\x04\x1E\x00\x3C\x00\x01c\x00\x01w\x00\x00",
            V3_1_1,
        );
    }

    #[test]
    fn password_without_username() {
        // [MQTT-3.1.2-22]: malformed in 3.x, allowed in 5.0.
        malformed(
            b"\x10\x10\x00\x04MQTT\x04\x42\x00\x3C\x00\x01c\x00\x01p",
            V3_1_1,
        );
        let p = dec(
            b"\x10\x11\x00\x04MQTT\x05\x42\x00\x3C\x00\x00\x01c\x00\x01p",
            V5,
        )
        .unwrap();
        let Packet::Connect(c) = p else { panic!() };
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
        assert_eq!(c.username, None);
        let mut c3 = *c;
        c3.protocol = V3_1_1;
        assert!(matches!(
            enc(&Packet::Connect(Box::new(c3)), V3_1_1),
            Err(EncodeError::Unsupported(_))
        ));
    }

    #[test]
    fn truncated_and_trailing() {
        // Missing the client id.
        malformed(b"\x10\x0A\x00\x04MQTT\x04\x02\x00\x3C", V3_1_1);
        // Will flag set but no will topic.
        malformed(b"\x10\x0D\x00\x04MQTT\x04\x06\x00\x3C\x00\x01c", V3_1_1);
        // A byte after the client id.
        malformed(b"\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x01c\x00", V3_1_1);
    }

    #[test]
    fn client_id_nul_is_invalid_string() {
        // [MQTT-1.5.4-2]
        let r = dec(b"\x10\x0D\x00\x04MQTT\x04\x02\x00\x3C\x00\x01\x00", V3_1_1);
        assert!(matches!(r, Err(DecodeError::InvalidString(_))));
    }

    #[test]
    fn will_property_not_allowed_in_connect_properties() {
        // Will Delay Interval (0x18) in the CONNECT properties rather than the will's.
        malformed(
            b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3C\x05\x18\x00\x00\x00\x01\x00\x01c",
            V5,
        );
    }

    #[test]
    fn protocol_must_match_version_when_encoding() {
        let c = Packet::Connect(Box::new(minimal(V3_1_1)));
        assert!(matches!(enc(&c, V5), Err(EncodeError::Unsupported(_))));
    }
}
