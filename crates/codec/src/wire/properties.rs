//! MQTT 5 properties (MQTT 5.0 section 2.2.2): the property length, then (identifier, value) pairs.
//!
//! Which packet may carry which property follows the table of section 2.2.2.2. A property that its
//! packet may not carry is malformed ("A Control Packet which contains an Identifier which is not
//! valid for its packet type ... is a Malformed Packet"); the encoder refuses to write one rather
//! than send the peer a packet it must reject.

use super::primitives::{Reader, Sink, measure, put_binary, put_string, put_var_int};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, id};

/// The packet (or the will of a CONNECT) a property set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropCtx {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropCtx {
    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

const CONNECT: u16 = PropCtx::Connect.bit();
const WILL: u16 = PropCtx::Will.bit();
const CONNACK: u16 = PropCtx::ConnAck.bit();
const PUBLISH: u16 = PropCtx::Publish.bit();
const ACK: u16 = PropCtx::Ack.bit();
const SUBSCRIBE: u16 = PropCtx::Subscribe.bit();
const SUBACK: u16 = PropCtx::SubAck.bit();
const UNSUBACK: u16 = PropCtx::UnsubAck.bit();
const DISCONNECT: u16 = PropCtx::Disconnect.bit();
const AUTH: u16 = PropCtx::Auth.bit();
const ALL: u16 = u16::MAX;

/// The packets that may carry property `pid` (MQTT 5.0 section 2.2.2.2); 0 for unknown ids.
const fn allowed_in(pid: u8) -> u16 {
    match pid {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => PUBLISH | WILL,
        id::SUBSCRIPTION_IDENTIFIER => PUBLISH | SUBSCRIBE,
        id::SESSION_EXPIRY_INTERVAL => CONNECT | CONNACK | DISCONNECT,
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => CONNACK,
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => CONNECT | CONNACK | AUTH,
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => CONNECT,
        id::WILL_DELAY_INTERVAL => WILL,
        id::SERVER_REFERENCE => CONNACK | DISCONNECT,
        id::REASON_STRING => CONNACK | ACK | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            CONNECT | CONNACK
        }
        id::TOPIC_ALIAS => PUBLISH,
        id::USER_PROPERTY => ALL,
        _ => 0,
    }
}

fn is_allowed(pid: u8, ctx: PropCtx) -> bool {
    allowed_in(pid) & ctx.bit() != 0
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads a property length and the properties it covers.
pub(crate) fn read_properties(r: &mut Reader, ctx: PropCtx) -> Result<Properties, DecodeError> {
    let len = r.var_int()? as usize;
    if len > r.remaining() {
        return Err(DecodeError::Malformed("property length exceeds the packet"));
    }
    let mut r = Reader::new(r.take(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        // The identifier is a variable byte integer; every defined one fits in a single byte.
        let pid = u8::try_from(r.var_int()?)
            .map_err(|_| DecodeError::Malformed("unknown property identifier"))?;
        if !is_allowed(pid, ctx) {
            return Err(DecodeError::Malformed(
                "property not allowed in this packet type",
            ));
        }
        read_one(&mut r, pid, ctx, &mut p)?;
    }
    Ok(p)
}

/// Stores a property that may appear at most once; a second one is a protocol error.
fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(v);
    Ok(())
}

/// A byte property whose only values are 0 and 1; anything else is a protocol error.
fn flag(r: &mut Reader, what: &'static str) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol(what)),
    }
}

fn read_one(r: &mut Reader, pid: u8, ctx: PropCtx, p: &mut Properties) -> Result<(), DecodeError> {
    use DecodeError::Protocol;
    match pid {
        id::PAYLOAD_FORMAT_INDICATOR => once(
            &mut p.payload_format_indicator,
            flag(r, "payload format indicator is not 0 or 1")?,
        ),
        id::MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, r.u32()?),
        id::CONTENT_TYPE => once(&mut p.content_type, r.string()?),
        id::RESPONSE_TOPIC => once(&mut p.response_topic, r.string()?),
        id::CORRELATION_DATA => once(&mut p.correlation_data, r.binary()?),
        id::SUBSCRIPTION_IDENTIFIER => {
            let v = r.var_int()?;
            if v == 0 {
                return Err(Protocol("subscription identifier 0"));
            }
            // Repeats only in PUBLISH, one per matching subscription (MQTT 5.0 section 3.3.2.3.8);
            // in SUBSCRIBE twice is a protocol error (section 3.8.2.1.2).
            if ctx != PropCtx::Publish && !p.subscription_identifiers.is_empty() {
                return Err(Protocol("subscription identifier included more than once"));
            }
            p.subscription_identifiers.push(v);
            Ok(())
        }
        id::SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, r.u32()?),
        id::ASSIGNED_CLIENT_IDENTIFIER => once(&mut p.assigned_client_identifier, r.string()?),
        id::SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, r.u16()?),
        id::AUTHENTICATION_METHOD => once(&mut p.authentication_method, r.string()?),
        id::AUTHENTICATION_DATA => once(&mut p.authentication_data, r.binary()?),
        id::REQUEST_PROBLEM_INFORMATION => once(
            &mut p.request_problem_information,
            flag(r, "request problem information is not 0 or 1")?,
        ),
        id::WILL_DELAY_INTERVAL => once(&mut p.will_delay_interval, r.u32()?),
        id::REQUEST_RESPONSE_INFORMATION => once(
            &mut p.request_response_information,
            flag(r, "request response information is not 0 or 1")?,
        ),
        id::RESPONSE_INFORMATION => once(&mut p.response_information, r.string()?),
        id::SERVER_REFERENCE => once(&mut p.server_reference, r.string()?),
        id::REASON_STRING => once(&mut p.reason_string, r.string()?),
        id::RECEIVE_MAXIMUM => match r.u16()? {
            0 => Err(Protocol("receive maximum 0")),
            v => once(&mut p.receive_maximum, v),
        },
        id::TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?),
        id::TOPIC_ALIAS => match r.u16()? {
            0 => Err(Protocol("topic alias 0")),
            v => once(&mut p.topic_alias, v),
        },
        id::MAXIMUM_QOS => once(&mut p.maximum_qos, flag(r, "maximum QoS is not 0 or 1")?),
        id::RETAIN_AVAILABLE => once(
            &mut p.retain_available,
            flag(r, "retain available is not 0 or 1")?,
        ),
        id::USER_PROPERTY => {
            let k = r.string()?;
            let v = r.string()?;
            p.user_properties.push((k, v));
            Ok(())
        }
        id::MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => Err(Protocol("maximum packet size 0")),
            v => once(&mut p.maximum_packet_size, v),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => once(
            &mut p.wildcard_subscription_available,
            flag(r, "wildcard subscription available is not 0 or 1")?,
        ),
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => once(
            &mut p.subscription_identifier_available,
            flag(r, "subscription identifier available is not 0 or 1")?,
        ),
        id::SHARED_SUBSCRIPTION_AVAILABLE => once(
            &mut p.shared_subscription_available,
            flag(r, "shared subscription available is not 0 or 1")?,
        ),
        // `is_allowed` has already refused every other identifier.
        _ => Err(DecodeError::Malformed("unknown property identifier")),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A property value, by data type.
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// Calls `f` with every property that is set, in identifier order (user properties in their own
/// order). The one list of fields that encoding and measuring share.
fn each<'a>(
    p: &'a Properties,
    mut f: impl FnMut(u8, Value<'a>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    use Value::*;
    if let Some(v) = p.payload_format_indicator {
        f(id::PAYLOAD_FORMAT_INDICATOR, Byte(v))?;
    }
    if let Some(v) = p.message_expiry_interval {
        f(id::MESSAGE_EXPIRY_INTERVAL, U32(v))?;
    }
    if let Some(v) = &p.content_type {
        f(id::CONTENT_TYPE, Str(v))?;
    }
    if let Some(v) = &p.response_topic {
        f(id::RESPONSE_TOPIC, Str(v))?;
    }
    if let Some(v) = &p.correlation_data {
        f(id::CORRELATION_DATA, Bin(v))?;
    }
    for &v in &p.subscription_identifiers {
        f(id::SUBSCRIPTION_IDENTIFIER, VarInt(v))?;
    }
    if let Some(v) = p.session_expiry_interval {
        f(id::SESSION_EXPIRY_INTERVAL, U32(v))?;
    }
    if let Some(v) = &p.assigned_client_identifier {
        f(id::ASSIGNED_CLIENT_IDENTIFIER, Str(v))?;
    }
    if let Some(v) = p.server_keep_alive {
        f(id::SERVER_KEEP_ALIVE, U16(v))?;
    }
    if let Some(v) = &p.authentication_method {
        f(id::AUTHENTICATION_METHOD, Str(v))?;
    }
    if let Some(v) = &p.authentication_data {
        f(id::AUTHENTICATION_DATA, Bin(v))?;
    }
    if let Some(v) = p.request_problem_information {
        f(id::REQUEST_PROBLEM_INFORMATION, Byte(v))?;
    }
    if let Some(v) = p.will_delay_interval {
        f(id::WILL_DELAY_INTERVAL, U32(v))?;
    }
    if let Some(v) = p.request_response_information {
        f(id::REQUEST_RESPONSE_INFORMATION, Byte(v))?;
    }
    if let Some(v) = &p.response_information {
        f(id::RESPONSE_INFORMATION, Str(v))?;
    }
    if let Some(v) = &p.server_reference {
        f(id::SERVER_REFERENCE, Str(v))?;
    }
    if let Some(v) = &p.reason_string {
        f(id::REASON_STRING, Str(v))?;
    }
    if let Some(v) = p.receive_maximum {
        f(id::RECEIVE_MAXIMUM, U16(v))?;
    }
    if let Some(v) = p.topic_alias_maximum {
        f(id::TOPIC_ALIAS_MAXIMUM, U16(v))?;
    }
    if let Some(v) = p.topic_alias {
        f(id::TOPIC_ALIAS, U16(v))?;
    }
    if let Some(v) = p.maximum_qos {
        f(id::MAXIMUM_QOS, Byte(v))?;
    }
    if let Some(v) = p.retain_available {
        f(id::RETAIN_AVAILABLE, Byte(v))?;
    }
    for (k, v) in &p.user_properties {
        f(id::USER_PROPERTY, Pair(k, v))?;
    }
    if let Some(v) = p.maximum_packet_size {
        f(id::MAXIMUM_PACKET_SIZE, U32(v))?;
    }
    if let Some(v) = p.wildcard_subscription_available {
        f(id::WILDCARD_SUBSCRIPTION_AVAILABLE, Byte(v))?;
    }
    if let Some(v) = p.subscription_identifier_available {
        f(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, Byte(v))?;
    }
    if let Some(v) = p.shared_subscription_available {
        f(id::SHARED_SUBSCRIPTION_AVAILABLE, Byte(v))?;
    }
    Ok(())
}

/// Writes the properties without their length prefix.
fn put_items(p: &Properties, ctx: PropCtx, s: &mut impl Sink) -> Result<(), EncodeError> {
    if ctx != PropCtx::Publish && p.subscription_identifiers.len() > 1 {
        return Err(EncodeError::Unsupported(
            "several subscription identifiers outside PUBLISH",
        ));
    }
    each(p, |pid, v| {
        if !is_allowed(pid, ctx) {
            return Err(EncodeError::Unsupported(
                "property not allowed in this packet type",
            ));
        }
        s.put_u8(pid);
        match v {
            Value::Byte(v) => s.put_u8(v),
            Value::U16(v) => s.put_u16(v),
            Value::U32(v) => s.put_u32(v),
            Value::VarInt(v) => put_var_int(s, v as usize)?,
            Value::Str(v) => put_string(s, v)?,
            Value::Bin(v) => put_binary(s, v)?,
            Value::Pair(k, v) => {
                put_string(s, k)?;
                put_string(s, v)?;
            }
        }
        Ok(())
    })
}

/// Writes the property length and the properties set in `p`. A property `ctx` may not carry is
/// refused ([`EncodeError::Unsupported`]).
pub(crate) fn put_properties(
    p: &Properties,
    ctx: PropCtx,
    s: &mut impl Sink,
) -> Result<(), EncodeError> {
    let len = measure(|c| put_items(p, ctx, c))?;
    put_var_int(s, len)?;
    put_items(p, ctx, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::PropertyValues;
    use bytes::{Bytes, BytesMut};

    fn read(bytes: &'static [u8], ctx: PropCtx) -> Result<Properties, DecodeError> {
        let mut r = Reader::new(Bytes::from_static(bytes));
        let p = read_properties(&mut r, ctx)?;
        r.finish()?;
        Ok(p)
    }

    fn write(p: &Properties, ctx: PropCtx) -> Result<Vec<u8>, EncodeError> {
        let mut b = BytesMut::new();
        put_properties(p, ctx, &mut b)?;
        Ok(b.to_vec())
    }

    #[test]
    fn empty() {
        assert_eq!(
            read(b"\x00", PropCtx::Publish).unwrap(),
            Properties::default()
        );
        assert_eq!(
            write(&Properties::default(), PropCtx::Ack).unwrap(),
            b"\x00"
        );
    }

    #[test]
    fn publish_properties_round_trip() {
        let bytes: &[u8] = b"\x1D\x01\x01\x02\x00\x00\x00\x3C\x0B\x05\x0B\x81\x01\x23\x00\x07\
                             \x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01w";
        let p = read(bytes, PropCtx::Publish).unwrap();
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.message_expiry_interval, Some(60));
        assert_eq!(p.subscription_identifiers, vec![5, 129]);
        assert_eq!(p.topic_alias, Some(7));
        // User properties keep their order and may repeat.
        assert_eq!(
            p.user_properties,
            vec![("k".into(), "v".into()), ("k".into(), "w".into())]
        );
        assert_eq!(write(&p, PropCtx::Publish).unwrap(), bytes);
    }

    #[test]
    fn every_connack_property_round_trips() {
        let p: Properties = PropertyValues {
            session_expiry_interval: Some(1),
            assigned_client_identifier: Some("id".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"\x00\x01")),
            response_information: Some("r".into()),
            server_reference: Some("s".into()),
            reason_string: Some("why".into()),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(0),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![("a".into(), "".into())],
            maximum_packet_size: Some(1000),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..Default::default()
        }
        .into();
        let bytes = write(&p, PropCtx::ConnAck).unwrap();
        let mut r = Reader::new(Bytes::from(bytes));
        assert_eq!(read_properties(&mut r, PropCtx::ConnAck).unwrap(), p);
    }

    #[test]
    fn property_not_allowed_in_packet_is_malformed() {
        // MQTT 5.0 section 2.2.2.2: topic alias (0x23) in a PUBACK, session expiry in PUBLISH,
        // will delay in CONNECT (only in will properties), a reason string in UNSUBSCRIBE.
        for (bytes, ctx) in [
            (&b"\x03\x23\x00\x01"[..], PropCtx::Ack),
            (b"\x05\x11\x00\x00\x00\x01", PropCtx::Publish),
            (b"\x05\x18\x00\x00\x00\x01", PropCtx::Connect),
            (b"\x04\x1F\x00\x01x", PropCtx::Unsubscribe),
        ] {
            let mut r = Reader::new(Bytes::from_static(bytes));
            assert!(
                matches!(read_properties(&mut r, ctx), Err(DecodeError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn unknown_property_is_malformed() {
        assert!(matches!(
            read(b"\x02\x7F\x00", PropCtx::Publish),
            Err(DecodeError::Malformed(_))
        ));
        // A two-byte identifier (0x80 0x01 = 128) is no property.
        assert!(matches!(
            read(b"\x03\x80\x01\x00", PropCtx::Publish),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_property_is_protocol_error() {
        assert!(matches!(
            read(b"\x06\x23\x00\x01\x23\x00\x02", PropCtx::Publish),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn subscription_identifier_repeats_only_in_publish() {
        assert_eq!(
            read(b"\x04\x0B\x01\x0B\x02", PropCtx::Publish)
                .unwrap()
                .subscription_identifiers,
            vec![1, 2]
        );
        assert!(matches!(
            read(b"\x04\x0B\x01\x0B\x02", PropCtx::Subscribe),
            Err(DecodeError::Protocol(_))
        ));
        let p: Properties = PropertyValues {
            subscription_identifiers: vec![1, 2],
            ..Default::default()
        }
        .into();
        assert!(matches!(
            write(&p, PropCtx::Subscribe),
            Err(EncodeError::Unsupported(_))
        ));
    }

    #[test]
    fn zero_values_are_protocol_errors() {
        for (bytes, ctx) in [
            (&b"\x02\x0B\x00"[..], PropCtx::Publish), // subscription identifier 0
            (b"\x02\x0B\x00", PropCtx::Subscribe),    // subscription identifier 0
            (b"\x03\x21\x00\x00", PropCtx::Connect),  // receive maximum 0
            (b"\x05\x27\x00\x00\x00\x00", PropCtx::ConnAck), // maximum packet size 0
            (b"\x03\x23\x00\x00", PropCtx::Publish),  // topic alias 0
        ] {
            assert!(
                matches!(read(bytes, ctx), Err(DecodeError::Protocol(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn flag_properties_must_be_0_or_1() {
        for (bytes, ctx) in [
            (&b"\x02\x01\x02"[..], PropCtx::Publish),
            (b"\x02\x17\x02", PropCtx::Connect),
            (b"\x02\x19\x02", PropCtx::Connect),
            (b"\x02\x24\x02", PropCtx::ConnAck),
            (b"\x02\x25\x02", PropCtx::ConnAck),
            (b"\x02\x28\x02", PropCtx::ConnAck),
            (b"\x02\x29\x02", PropCtx::ConnAck),
            (b"\x02\x2A\x02", PropCtx::ConnAck),
        ] {
            assert!(
                matches!(read(bytes, ctx), Err(DecodeError::Protocol(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn subscription_identifier_must_be_minimal_var_int() {
        assert!(matches!(
            read(b"\x03\x0B\x81\x00", PropCtx::Publish),
            Err(DecodeError::Malformed(_))
        ));
        let max = read(b"\x05\x0B\xFF\xFF\xFF\x7F", PropCtx::Publish).unwrap();
        assert_eq!(max.subscription_identifiers, vec![268_435_455]);
    }

    #[test]
    fn property_length_beyond_packet_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(b"\x05\x23\x00\x01"));
        assert!(matches!(
            read_properties(&mut r, PropCtx::Publish),
            Err(DecodeError::Malformed(_))
        ));
        // A value running past the property length is malformed too.
        assert!(matches!(
            read(b"\x02\x23\x00\x01", PropCtx::Publish),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn property_strings_are_validated() {
        assert!(matches!(
            read(b"\x04\x03\x00\x01\x00", PropCtx::Publish),
            Err(DecodeError::InvalidString(_))
        ));
    }

    #[test]
    fn encoder_refuses_property_not_allowed() {
        let p: Properties = PropertyValues {
            topic_alias: Some(1),
            ..Default::default()
        }
        .into();
        assert!(matches!(
            write(&p, PropCtx::ConnAck),
            Err(EncodeError::Unsupported(_))
        ));
    }
}
