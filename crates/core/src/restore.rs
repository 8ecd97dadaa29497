//! Rebuilding the broker from its durable records after a restart, and writing the live state
//! as records (the snapshot that lets the store drop its older log segments).

use crate::action::Action;
use crate::broker::{Broker, SessionId};
use crate::message::Message;
use crate::persist::{decode_properties, options_byte, options_from_byte};
use crate::session::{Delivery, Inflight, OutState, Session, SubEntry};
use crate::will::PendingWill;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_codec::{ByteStr, ProtocolVersion, QoS, Will};
use tern_store::{Record, StoredMessage};

/// What a replay found, for the start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub inflight: usize,
    pub retained: usize,
    pub pending_wills: usize,
}

/// One session as the records describe it, before it becomes a [`Session`].
#[derive(Default)]
struct SessionImage {
    version: u8,
    expiry_interval: u32,
    disconnected_at_ms: Option<u64>,
    subscriptions: Vec<(String, u8, Option<u32>)>,
    /// By sequence number, so deliveries come back in their original order.
    deliveries: BTreeMap<u64, DeliveryImage>,
    inbound: Vec<u16>,
}

/// One delivery as the records describe it.
struct DeliveryImage {
    message_id: u64,
    qos: u8,
    retain: bool,
    sub_ids: Vec<u32>,
    packet_id: Option<u16>,
    released: bool,
}

impl Broker {
    /// Replays durable records into an empty broker. Every session comes back offline, its
    /// expiry clock running from when its client left (or from now, if the broker stopped while
    /// it was connected). Call [`Broker::set_wall_clock`] first.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = Record>,
        now: Instant,
    ) -> RestoreReport {
        let mut sessions: HashMap<String, SessionImage> = HashMap::new();
        let mut messages: HashMap<u64, StoredMessage> = HashMap::new();
        let mut retained: HashMap<String, StoredMessage> = HashMap::new();
        let mut wills: HashMap<String, (u64, StoredMessage)> = HashMap::new();
        for r in records {
            match r {
                Record::Session {
                    client_id,
                    version,
                    expiry_interval,
                    disconnected_at_ms,
                } => {
                    let s = sessions.entry(client_id).or_default();
                    s.version = version;
                    s.expiry_interval = expiry_interval;
                    s.disconnected_at_ms = disconnected_at_ms;
                }
                Record::SessionDeleted { client_id } => {
                    sessions.remove(&client_id);
                }
                Record::Subscribed {
                    client_id,
                    filter,
                    options,
                    subscription_id,
                } => {
                    let s = sessions.entry(client_id).or_default();
                    s.subscriptions.retain(|(f, _, _)| *f != filter);
                    s.subscriptions.push((filter, options, subscription_id));
                }
                Record::Unsubscribed { client_id, filter } => {
                    if let Some(s) = sessions.get_mut(&client_id) {
                        s.subscriptions.retain(|(f, _, _)| *f != filter);
                    }
                }
                Record::Message(m) => {
                    messages.insert(m.id, m);
                }
                Record::MessageDeleted { id } => {
                    messages.remove(&id);
                }
                Record::Enqueued {
                    client_id,
                    seq,
                    message_id,
                    qos,
                    retain,
                    subscription_ids,
                } => {
                    let s = sessions.entry(client_id).or_default();
                    s.deliveries.insert(
                        seq,
                        DeliveryImage {
                            message_id,
                            qos,
                            retain,
                            sub_ids: subscription_ids,
                            packet_id: None,
                            released: false,
                        },
                    );
                }
                Record::Sent {
                    client_id,
                    seq,
                    packet_id,
                } => {
                    if let Some(d) = sessions
                        .get_mut(&client_id)
                        .and_then(|s| s.deliveries.get_mut(&seq))
                    {
                        d.packet_id = Some(packet_id);
                    }
                }
                Record::Released { client_id, seq } => {
                    if let Some(d) = sessions
                        .get_mut(&client_id)
                        .and_then(|s| s.deliveries.get_mut(&seq))
                    {
                        d.released = true;
                    }
                }
                Record::Completed { client_id, seq } => {
                    if let Some(s) = sessions.get_mut(&client_id) {
                        s.deliveries.remove(&seq);
                    }
                }
                Record::InboundQos2 {
                    client_id,
                    packet_id,
                } => {
                    let s = sessions.entry(client_id).or_default();
                    if !s.inbound.contains(&packet_id) {
                        s.inbound.push(packet_id);
                    }
                }
                Record::InboundQos2Released {
                    client_id,
                    packet_id,
                } => {
                    if let Some(s) = sessions.get_mut(&client_id) {
                        s.inbound.retain(|p| *p != packet_id);
                    }
                }
                Record::Retained(m) => {
                    retained.insert(m.topic.clone(), m);
                }
                Record::RetainedDeleted { topic } => {
                    retained.remove(&topic);
                }
                Record::PendingWill {
                    client_id,
                    due_at_ms,
                    message,
                } => {
                    wills.insert(client_id, (due_at_ms, message));
                }
                Record::PendingWillDone { client_id } => {
                    wills.remove(&client_id);
                }
            }
        }

        let mut report = RestoreReport::default();
        let mut bodies: HashMap<u64, Arc<Message>> = HashMap::new();
        for (id, m) in messages {
            self.next_message_id = self.next_message_id.max(id);
            bodies.insert(id, Arc::new(self.persist.message(m, now)));
        }
        for (_, m) in retained {
            self.next_message_id = self.next_message_id.max(m.id);
            let msg = self.persist.message(m, now);
            if !msg.expired(now) {
                self.retained.insert(&msg.topic.clone(), Arc::new(msg));
                report.retained += 1;
            }
        }
        let mut out: Vec<Action> = Vec::new();
        for (client_id, image) in sessions {
            let Some(version) = version_from_level(image.version) else {
                continue;
            };
            let sid = self.next_session;
            self.next_session += 1;
            let mut session = Session::new(ByteStr::from(client_id.clone()), version);
            session.expiry_interval = image.expiry_interval;
            session.persisted = true;
            let left = image
                .disconnected_at_ms
                .map_or(now, |ms| self.persist.instant(ms, now));
            session.expires_at = match image.expiry_interval {
                u32::MAX => None,
                secs => Some(left + Duration::from_secs(u64::from(secs))),
            };
            session.inbound_qos2 = image.inbound.into_iter().collect();
            for (
                seq,
                DeliveryImage {
                    message_id,
                    qos,
                    retain,
                    sub_ids,
                    packet_id,
                    released,
                },
            ) in image.deliveries
            {
                session.next_seq = session.next_seq.max(seq + 1);
                let Some(msg) = bodies.get(&message_id) else {
                    continue;
                };
                *self.persist.refs.entry(message_id).or_insert(0) += 1;
                let delivery = Delivery {
                    msg: msg.clone(),
                    qos: QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce),
                    retain,
                    sub_ids,
                    shared: None,
                    seq,
                };
                match packet_id {
                    Some(packet_id) => {
                        let state = if released {
                            OutState::Released
                        } else {
                            OutState::Published
                        };
                        session.inflight.push_back(Inflight {
                            packet_id,
                            delivery,
                            state,
                            sent_at: now,
                        });
                        report.inflight += 1;
                    }
                    None => {
                        session.push_queue(delivery);
                        report.queued += 1;
                    }
                }
            }
            // Packet ids must not collide with the restored in-flight ones.
            self.sessions.insert(sid, session);
            self.client_ids
                .insert(ByteStr::from(client_id.clone()), sid);
            for (filter, options, id) in image.subscriptions {
                let entry = SubEntry {
                    options: options_from_byte(options),
                    id,
                };
                self.add_subscription(sid, &ByteStr::from(filter), entry, &mut out);
                report.subscriptions += 1;
            }
            if let Some((due_ms, m)) = wills.remove(&client_id) {
                self.restore_will(sid, client_id, due_ms, m, now);
                report.pending_wills += 1;
            }
            report.sessions += 1;
        }
        // Wills of sessions that no longer exist are due now (their session ended).
        for (client_id, (_, m)) in wills {
            let sid = self.next_session;
            self.next_session += 1;
            self.restore_will(sid, client_id, 0, m, now);
            report.pending_wills += 1;
        }
        report
    }

    fn restore_will(
        &mut self,
        sid: SessionId,
        client_id: String,
        due_ms: u64,
        m: StoredMessage,
        now: Instant,
    ) {
        let will = Will {
            topic: ByteStr::from(m.topic),
            payload: m.payload,
            qos: QoS::from_u8(m.qos).unwrap_or(QoS::AtMostOnce),
            retain: m.retain,
            properties: decode_properties(&m.properties),
        };
        let due = if due_ms == 0 {
            now
        } else {
            self.persist.instant(due_ms, now)
        };
        self.pending_will_clients.insert(sid, client_id);
        self.pending_wills.push(PendingWill {
            session: sid,
            due,
            will,
        });
    }

    /// The live durable state as records: what a fresh log needs to rebuild this broker.
    pub fn snapshot(&self, now: Instant) -> Vec<Record> {
        let mut records = Vec::new();
        let mut written = std::collections::HashSet::new();
        // Expired messages are left out: a snapshot is how they leave the disk.
        self.retained.for_each(|_, m| {
            if !m.expired(now) {
                records.push(Record::Retained(self.persist.stored(m)));
            }
        });
        for s in self.sessions.values().filter(|s| s.persisted) {
            let client_id = s.client_id.to_string();
            records.push(Record::Session {
                client_id: client_id.clone(),
                version: s.version.level(),
                expiry_interval: s.expiry_interval,
                disconnected_at_ms: (!s.online()).then(|| self.persist.ms(now)),
            });
            for (filter, e) in &s.subscriptions {
                records.push(Record::Subscribed {
                    client_id: client_id.clone(),
                    filter: filter.to_string(),
                    options: options_byte(&e.options),
                    subscription_id: e.id,
                });
            }
            let inflight = s.inflight.iter().map(|f| {
                (
                    &f.delivery,
                    Some(f.packet_id),
                    f.state == OutState::Released,
                )
            });
            let queued = s.queue.iter().map(|d| (d, None, false));
            for (d, packet_id, released) in inflight.chain(queued) {
                // A queued message that expired will never be sent; one in flight must complete.
                if d.seq == 0 || (packet_id.is_none() && d.msg.expired(now)) {
                    continue;
                }
                if written.insert(d.msg.id) {
                    records.push(Record::Message(self.persist.stored(&d.msg)));
                }
                records.push(Record::Enqueued {
                    client_id: client_id.clone(),
                    seq: d.seq,
                    message_id: d.msg.id,
                    qos: d.qos as u8,
                    retain: d.retain,
                    subscription_ids: d.sub_ids.clone(),
                });
                if let Some(packet_id) = packet_id {
                    records.push(Record::Sent {
                        client_id: client_id.clone(),
                        seq: d.seq,
                        packet_id,
                    });
                }
                if released {
                    records.push(Record::Released {
                        client_id: client_id.clone(),
                        seq: d.seq,
                    });
                }
            }
            for &packet_id in &s.inbound_qos2 {
                records.push(Record::InboundQos2 {
                    client_id: client_id.clone(),
                    packet_id,
                });
            }
        }
        for w in &self.pending_wills {
            if let Some(client_id) = self.pending_will_clients.get(&w.session) {
                let message = StoredMessage {
                    id: 0,
                    topic: w.will.topic.to_string(),
                    payload: w.will.payload.clone(),
                    qos: w.will.qos as u8,
                    retain: w.will.retain,
                    properties: crate::persist::encode_properties(&w.will.properties),
                    expires_at_ms: None,
                };
                records.push(Record::PendingWill {
                    client_id: client_id.clone(),
                    due_at_ms: self.persist.ms(w.due),
                    message,
                });
            }
        }
        records
    }
}

fn version_from_level(level: u8) -> Option<ProtocolVersion> {
    match level {
        3 => Some(ProtocolVersion::V3_1),
        4 => Some(ProtocolVersion::V3_1_1),
        5 => Some(ProtocolVersion::V5),
        _ => None,
    }
}
