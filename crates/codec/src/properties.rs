//! The MQTT 5 property set (MQTT 5.0 section 2.2.2).
//!
//! One struct serves every packet: the decoder rejects a property that the packet type may not
//! carry (a malformed packet, MQTT 5.0 section 2.2.2.2), and the encoder writes only the
//! properties that are set, refusing one the packet type may not carry. MQTT 3.x packets always
//! have the default (empty) set.

use crate::types::ByteStr;
use bytes::Bytes;

/// Property identifiers (MQTT 5.0 section 2.2.2.2).
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Every MQTT 5 property. `None` / empty means absent.
///
/// User properties keep their order and may repeat ([MQTT-3.1.3-10] and friends); the
/// subscription identifier may repeat in a server-to-client PUBLISH only.
///
/// Packets carry these through [`Properties`], which holds them on the heap only when one is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyValues {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteStr>,
    pub response_topic: Option<ByteStr>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteStr>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteStr>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteStr>,
    pub server_reference: Option<ByteStr>,
    pub reason_string: Option<ByteStr>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl PropertyValues {
    /// No property set; what [`Properties`] reads as while it holds nothing.
    const EMPTY: Self = Self {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::EMPTY
    }
}

static EMPTY: PropertyValues = PropertyValues::EMPTY;

/// The property set of one packet: a pointer, null while no property is set.
///
/// Most packets carry no property at all (every MQTT 3.x packet, and most MQTT 5 PUBLISH and
/// acknowledgements), and packets are moved several times between the decoder, the broker and
/// its queues: with ~450 bytes of [`PropertyValues`] inline, those moves were a tenth of the
/// broker's time at full load. Reading goes through `Deref` (an absent set reads as empty);
/// the first write through `DerefMut` allocates.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertyValues>>);

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(PropertyValues::is_empty)
    }

    /// The values, if any was ever set; unlike `DerefMut`, never allocates. For changes that
    /// only remove properties.
    pub fn values_mut(&mut self) -> Option<&mut PropertyValues> {
        self.0.as_deref_mut()
    }

    /// Applies `remove`, a change that only clears properties: an absent set stays absent (no
    /// allocation, unlike a write through `DerefMut`), and a set left empty is freed, so copies
    /// of the packet carry no empty set on the heap.
    pub fn strip(&mut self, remove: impl FnOnce(&mut PropertyValues)) {
        if let Some(v) = self.0.as_deref_mut() {
            remove(v);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }

    /// The values, leaving this set empty.
    pub fn take(&mut self) -> PropertyValues {
        self.0.take().map(|b| *b).unwrap_or_default()
    }

    /// Bytes of the strings and binary data they hold, 0 without properties: what keeping them
    /// costs beyond their fixed fields. (A PUBLISH may carry up to `max_packet_size` of user
    /// properties with a one-byte payload.)
    pub fn data_len(&self) -> usize {
        let Some(v) = self.0.as_deref() else {
            return 0;
        };
        let strings: usize = [
            &v.content_type,
            &v.response_topic,
            &v.assigned_client_identifier,
            &v.authentication_method,
            &v.response_information,
            &v.server_reference,
            &v.reason_string,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.len())
        .sum();
        let binary: usize = [&v.correlation_data, &v.authentication_data]
            .into_iter()
            .flatten()
            .map(|b| b.len())
            .sum();
        let user: usize = v
            .user_properties
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        strings + binary + user + 4 * v.subscription_identifiers.len()
    }

    /// A copy whose strings and binary data are in allocations of their own, not slices of the
    /// buffer the packet was decoded from (see [`ByteStr::detached`]).
    pub fn detached(&self) -> Self {
        let Some(v) = self.0.as_deref() else {
            return Self(None);
        };
        let mut v = v.clone();
        for s in [
            &mut v.content_type,
            &mut v.response_topic,
            &mut v.assigned_client_identifier,
            &mut v.authentication_method,
            &mut v.response_information,
            &mut v.server_reference,
            &mut v.reason_string,
        ]
        .into_iter()
        .flatten()
        {
            *s = s.detached();
        }
        for b in [&mut v.correlation_data, &mut v.authentication_data]
            .into_iter()
            .flatten()
        {
            *b = Bytes::copy_from_slice(b);
        }
        for (name, value) in &mut v.user_properties {
            *name = name.detached();
            *value = value.detached();
        }
        Self(Some(Box::new(v)))
    }
}

impl std::ops::Deref for Properties {
    type Target = PropertyValues;

    fn deref(&self) -> &PropertyValues {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Self {
        if values.is_empty() {
            Self(None)
        } else {
            Self(Some(Box::new(values)))
        }
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion, decode_packet};

    #[test]
    fn strip_never_allocates_and_frees_an_emptied_set() {
        let mut none = Properties::default();
        none.strip(|v| v.topic_alias = None);
        assert!(none.values_mut().is_none());
        let mut alias: Properties = PropertyValues {
            topic_alias: Some(1),
            ..Default::default()
        }
        .into();
        alias.strip(|v| v.topic_alias = None);
        assert!(alias.values_mut().is_none(), "an emptied set is freed");
        let mut both: Properties = PropertyValues {
            topic_alias: Some(1),
            content_type: Some("t".into()),
            ..Default::default()
        }
        .into();
        both.strip(|v| v.topic_alias = None);
        assert_eq!(both.content_type.as_deref(), Some("t"));
        assert_eq!(both.topic_alias, None);
    }
    use bytes::BytesMut;

    #[test]
    fn an_empty_set_holds_nothing_and_compares_by_value() {
        let mut p = Properties::default();
        assert!(p.is_empty());
        assert_eq!(p.topic_alias, None);
        assert!(p.values_mut().is_none(), "reading must not allocate");
        assert!(
            Properties::from(PropertyValues::default())
                .values_mut()
                .is_none()
        );

        p.topic_alias = Some(3);
        assert!(!p.is_empty());
        assert_eq!(p.values_mut().map(|v| v.topic_alias), Some(Some(3)));
        p.topic_alias = None;
        // Allocated but empty again: equal to a set that never held anything.
        assert!(p.is_empty());
        assert_eq!(p, Properties::default());
        assert_eq!(format!("{p:?}"), format!("{:?}", PropertyValues::default()));

        let mut q = Properties::from(PropertyValues {
            reason_string: Some("why".into()),
            ..Default::default()
        });
        assert_eq!(q.take().reason_string.as_deref(), Some("why"));
        assert!(q.is_empty() && q.values_mut().is_none());
    }

    #[test]
    fn publishes_without_properties_decode_without_allocating_a_set() {
        // 3.1.1 PUBLISH QoS 0 "a/b" "hi"; the same in 5.0 with a zero property length; and 5.0
        // with a Topic Alias of 1.
        let cases: [(ProtocolVersion, &[u8], bool); 3] = [
            (ProtocolVersion::V3_1_1, b"\x30\x07\x00\x03a/bhi", false),
            (ProtocolVersion::V5, b"\x30\x08\x00\x03a/b\x00hi", false),
            (
                ProtocolVersion::V5,
                b"\x30\x0b\x00\x03a/b\x03\x23\x00\x01hi",
                true,
            ),
        ];
        for (version, bytes, has_props) in cases {
            let mut buf = BytesMut::from(bytes);
            let Ok(Some(Packet::Publish(mut p))) = decode_packet(&mut buf, version, 1024) else {
                panic!("{version:?}: not decoded as a PUBLISH");
            };
            assert_eq!(&p.payload[..], b"hi");
            assert_eq!(
                p.properties.values_mut().is_some(),
                has_props,
                "{version:?}"
            );
        }
    }
}
