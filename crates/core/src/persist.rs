//! What the core tells the durable store: every state change of a persistent session, of the
//! retained store and of delayed wills becomes an [`Action::Persist`] record, emitted in the same
//! action stream as the packets. The I/O layer writes the records of a batch, syncs once (group
//! commit), and only then sends the batch's packets: a PUBACK or PUBREC therefore never leaves
//! before the message is durable for every persistent session it must reach.
//!
//! Only sessions that outlive their connection are persisted (`Session::persisted`); a clean
//! session's state dies with its connection anyway.

use crate::action::Action;
use crate::message::Message;
use crate::session::{Delivery, Session, SubEntry};
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};
use tern_codec::{
    ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
};
use tern_store::{Record, StoredMessage};

/// Persistence bookkeeping of the broker.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    /// Message id -> number of durable deliveries (and pending wills) referring to it.
    pub(crate) refs: crate::idmap::IdMap<u64, usize>,
    /// A wall-clock reading and the `Instant` it was taken at, to turn one into the other.
    anchor: Option<(Instant, u64)>,
}

impl Persistence {
    /// A copy of the wall-clock anchor alone (for work done away from the broker).
    pub(crate) fn clock(&self) -> Self {
        Self {
            refs: Default::default(),
            anchor: self.anchor,
        }
    }

    pub(crate) fn set_anchor(&mut self, now: Instant, unix_ms: u64) {
        self.anchor = Some((now, unix_ms));
    }

    /// Wall-clock milliseconds for `t`.
    pub(crate) fn ms(&self, t: Instant) -> u64 {
        let (at, ms) = self.anchor.unwrap_or((t, 0));
        if t >= at {
            ms.saturating_add(t.duration_since(at).as_millis() as u64)
        } else {
            ms.saturating_sub(at.duration_since(t).as_millis() as u64)
        }
    }

    /// The `Instant` for wall-clock milliseconds `ms` (times long past come out as `now`).
    pub(crate) fn instant(&self, ms: u64, now: Instant) -> Instant {
        let Some((at, base)) = self.anchor else {
            return now;
        };
        if ms >= base {
            at + Duration::from_millis(ms - base)
        } else {
            at.checked_sub(Duration::from_millis(base - ms))
                .unwrap_or(now.min(at))
        }
    }

    pub(crate) fn stored(&self, m: &Message) -> StoredMessage {
        StoredMessage {
            id: m.id,
            topic: m.topic.to_string(),
            payload: m.payload.clone(),
            qos: m.qos as u8,
            retain: m.retain,
            properties: encode_properties(&m.properties),
            expires_at_ms: m.expires_at.map(|t| self.ms(t)),
        }
    }

    pub(crate) fn message(&self, s: StoredMessage, now: Instant) -> Message {
        Message {
            id: s.id,
            topic: ByteStr::from(s.topic),
            payload: s.payload,
            qos: QoS::from_u8(s.qos).unwrap_or(QoS::AtLeastOnce),
            retain: s.retain,
            properties: decode_properties(&s.properties),
            expires_at: s.expires_at_ms.map(|ms| self.instant(ms, now)),
            origin: None,
            read: Default::default(),
            own_bytes: false,
        }
    }

    /// The session's settings (created, resumed, disconnected or changed).
    pub(crate) fn session(&self, s: &Session, now: Instant, out: &mut Vec<Action>) {
        if s.persisted {
            out.extend(self.session_records(s, now).map(Action::persist));
        }
    }

    /// The records of a session's settings, for the log and for a snapshot: `Session`, then
    /// `SessionOwner` when the session has one.
    pub(crate) fn session_records(
        &self,
        s: &Session,
        now: Instant,
    ) -> impl Iterator<Item = Record> + use<> {
        let settings = Record::Session {
            client_id: s.client_id.to_string(),
            version: s.version.level(),
            expiry_interval: s.expiry_interval,
            disconnected_at_ms: (!s.online()).then(|| self.ms(now)),
        };
        let owner = s
            .info
            .username
            .as_ref()
            .map(|username| Record::SessionOwner {
                client_id: s.client_id.to_string(),
                username: username.clone(),
            });
        std::iter::once(settings).chain(owner)
    }

    /// The session is gone, with all its deliveries.
    pub(crate) fn session_deleted(
        &mut self,
        s: &Session,
        queued: impl Iterator<Item = u64>,
        out: &mut Vec<Action>,
    ) {
        if !s.persisted {
            return;
        }
        out.push(Action::persist(Record::SessionDeleted {
            client_id: s.client_id.to_string(),
        }));
        for id in queued.chain(s.inflight.iter().map(|f| f.delivery.msg.id)) {
            self.release_message(id, out);
        }
    }

    pub(crate) fn subscribed(
        &self,
        s: &Session,
        filter: &str,
        e: &SubEntry,
        out: &mut Vec<Action>,
    ) {
        if s.persisted {
            out.push(Action::persist(Record::Subscribed {
                client_id: s.client_id.to_string(),
                filter: filter.to_string(),
                options: options_byte(&e.options),
                subscription_id: e.id,
            }));
        }
    }

    pub(crate) fn unsubscribed(&self, s: &Session, filter: &str, out: &mut Vec<Action>) {
        if s.persisted {
            out.push(Action::persist(Record::Unsubscribed {
                client_id: s.client_id.to_string(),
                filter: filter.to_string(),
            }));
        }
    }

    /// A QoS 1/2 delivery joins the session: store the body once, then the delivery.
    pub(crate) fn enqueued(&mut self, s: &mut Session, d: &mut Delivery, out: &mut Vec<Action>) {
        if !s.persisted || d.qos == QoS::AtMostOnce {
            return;
        }
        d.seq = s.next_seq;
        s.next_seq += 1;
        self.hold_message(&d.msg, out);
        out.push(Action::persist(Record::Enqueued {
            client_id: s.client_id.to_string(),
            seq: d.seq,
            message_id: d.msg.id,
            qos: d.qos as u8,
            retain: d.retain,
            subscription_ids: d.sub_ids.clone(),
        }));
    }

    pub(crate) fn sent(&self, s: &Session, d: &Delivery, packet_id: u16, out: &mut Vec<Action>) {
        if s.persisted && d.seq != 0 {
            out.push(Action::persist(Record::Sent {
                client_id: s.client_id.to_string(),
                seq: d.seq,
                packet_id,
            }));
        }
    }

    pub(crate) fn released(&self, s: &Session, d: &Delivery, out: &mut Vec<Action>) {
        if s.persisted && d.seq != 0 {
            out.push(Action::persist(Record::Released {
                client_id: s.client_id.to_string(),
                seq: d.seq,
            }));
        }
    }

    pub(crate) fn completed(&mut self, s: &Session, d: &Delivery, out: &mut Vec<Action>) {
        if s.persisted && d.seq != 0 {
            out.push(Action::persist(Record::Completed {
                client_id: s.client_id.to_string(),
                seq: d.seq,
            }));
            self.release_message(d.msg.id, out);
        }
    }

    pub(crate) fn inbound(&self, s: &Session, packet_id: u16, out: &mut Vec<Action>) {
        if s.persisted {
            out.push(Action::persist(Record::InboundQos2 {
                client_id: s.client_id.to_string(),
                packet_id,
            }));
        }
    }

    pub(crate) fn inbound_released(&self, s: &Session, packet_id: u16, out: &mut Vec<Action>) {
        if s.persisted {
            out.push(Action::persist(Record::InboundQos2Released {
                client_id: s.client_id.to_string(),
                packet_id,
            }));
        }
    }

    fn hold_message(&mut self, m: &Message, out: &mut Vec<Action>) {
        // The first durable reference writes the message's body; later ones only count.
        let refs = self.refs.entry(m.id).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            out.push(Action::persist(Record::Message(self.stored(m))));
        }
    }

    fn release_message(&mut self, id: u64, out: &mut Vec<Action>) {
        if let Some(n) = self.refs.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&id);
                out.push(Action::persist(Record::MessageDeleted { id }));
            }
        }
    }
}

/// The subscription options byte as MQTT 5 encodes it.
pub(crate) fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

pub(crate) fn options_from_byte(b: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(b & 3).unwrap_or(QoS::AtMostOnce),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: match (b >> 4) & 3 {
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => RetainHandling::OnSubscribe,
        },
    }
}

/// Properties are stored as the codec writes them in a v5 PUBLISH: one format, already tested.
pub(crate) fn encode_properties(p: &Properties) -> Bytes {
    if p.is_empty() {
        return Bytes::new();
    }
    let publish = Packet::Publish(Publish {
        topic: ByteStr::from_static("p"),
        properties: p.clone(),
        ..Publish::default()
    });
    let mut buf = BytesMut::new();
    match tern_codec::encode_packet(&publish, ProtocolVersion::V5, &mut buf) {
        Ok(()) => buf.freeze(),
        Err(_) => Bytes::new(),
    }
}

/// A delayed will's properties, for its PendingWill record: without the Will Delay Interval
/// (a will-only property that a PUBLISH cannot carry, so [`encode_properties`] would fail and
/// store none of them; the record's due time stands for the delay).
pub(crate) fn encode_will_properties(p: &Properties) -> Bytes {
    if p.will_delay_interval.is_none() {
        return encode_properties(p);
    }
    let mut p = p.clone();
    p.strip(|v| v.will_delay_interval = None);
    encode_properties(&p)
}

pub(crate) fn decode_properties(b: &Bytes) -> Properties {
    if b.is_empty() {
        return Properties::default();
    }
    let mut buf = BytesMut::from(&b[..]);
    match tern_codec::decode_packet(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Some(Packet::Publish(p))) => p.properties,
        _ => Properties::default(),
    }
}
