//! Rebuilding the broker from its durable records after a restart, and writing the live state
//! as records (the snapshot that lets the store drop its older log segments).

use crate::action::Action;
use crate::broker::{Broker, SessionId};
use crate::message::Message;
use crate::persist::{decode_properties, options_byte, options_from_byte};
use crate::session::{Delivery, Inflight, OutState, Session, SubEntry};
use crate::will::PendingWill;
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Queued deliveries paged out to the spool during the restore (memory budget).
    pub paged: usize,
}

/// One session as the records describe it, before it becomes a [`Session`].
#[derive(Default)]
struct SessionImage {
    version: u8,
    expiry_interval: u32,
    disconnected_at_ms: Option<u64>,
    /// Its owner (see `Record::SessionOwner`).
    username: Option<String>,
    subscriptions: Vec<(String, u8, Option<u32>)>,
    /// Which life of this client id the image is (the number of `SessionDeleted` before it):
    /// sequence numbers start again with each.
    life: u32,
    /// The deliveries still live at the end of the log, by sequence number, with where they
    /// stand. Their bodies are read in the second pass.
    deliveries: HashMap<u64, DeliveryState>,
    inbound: Vec<u16>,
}

/// Where a live delivery stands at the end of the log.
#[derive(Clone, Copy)]
struct DeliveryState {
    message_id: u64,
    packet_id: Option<u16>,
    released: bool,
}

/// A session being filled in by the second pass.
struct Filling {
    sid: SessionId,
    life: u32,
    deliveries: HashMap<u64, DeliveryState>,
}

impl Broker {
    /// Replays durable records into an empty broker. Every session comes back offline, its
    /// expiry clock running from when its client left (or from now, if the broker stopped while
    /// it was connected). Call [`Broker::set_wall_clock`] first (and [`Broker::set_spool`], so
    /// large queues are paged out as they are rebuilt).
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = Record>,
        now: Instant,
    ) -> RestoreReport {
        let records: Vec<Record> = records.into_iter().collect();
        let replay = |sink: &mut dyn FnMut(Record)| {
            records.iter().cloned().for_each(&mut *sink);
            Ok::<(), std::convert::Infallible>(())
        };
        match self.restore_from(replay, now) {
            Ok(report) => report,
            Err(never) => match never {},
        }
    }

    /// [`Broker::restore`] from a log read twice by `replay` (which calls its sink with every
    /// record, in order): the first pass learns which deliveries are still live and where they
    /// stand, the second attaches their messages and queues them, paging out as the memory
    /// budget requires. So a log of a million queued messages never has them all in memory.
    pub fn restore_from<E>(
        &mut self,
        mut replay: impl FnMut(&mut dyn FnMut(Record)) -> Result<(), E>,
        now: Instant,
    ) -> Result<RestoreReport, E> {
        let mut sessions: HashMap<String, SessionImage> = HashMap::new();
        let mut lives: HashMap<String, u32> = HashMap::new();
        let mut retained: HashMap<String, StoredMessage> = HashMap::new();
        let mut wills: HashMap<String, (u64, StoredMessage)> = HashMap::new();
        let mut max_id = 0;
        replay(&mut |r| match r {
            Record::Session {
                client_id,
                version,
                expiry_interval,
                disconnected_at_ms,
            } => {
                let life = lives.get(&client_id).copied().unwrap_or(0);
                let s = sessions.entry(client_id).or_default();
                s.life = life;
                s.version = version;
                s.expiry_interval = expiry_interval;
                s.disconnected_at_ms = disconnected_at_ms;
                // Its `SessionOwner` follows in the same commit when it has one (a binary from
                // before that record writes none: then the session has no owner).
                s.username = None;
            }
            // Written after its session's record, in the same commit.
            Record::SessionOwner {
                client_id,
                username,
            } => {
                if let Some(s) = sessions.get_mut(&client_id) {
                    s.username = Some(username);
                }
            }
            Record::SessionDeleted { client_id } => {
                sessions.remove(&client_id);
                *lives.entry(client_id).or_insert(0) += 1;
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                subscription_id,
            } => {
                let life = lives.get(&client_id).copied().unwrap_or(0);
                let s = sessions.entry(client_id).or_default();
                s.life = life;
                s.subscriptions.retain(|(f, _, _)| *f != filter);
                s.subscriptions.push((filter, options, subscription_id));
            }
            Record::Unsubscribed { client_id, filter } => {
                if let Some(s) = sessions.get_mut(&client_id) {
                    s.subscriptions.retain(|(f, _, _)| *f != filter);
                }
            }
            Record::Message(m) => max_id = max_id.max(m.id),
            Record::MessageDeleted { .. } => {}
            Record::Enqueued {
                client_id,
                seq,
                message_id,
                ..
            } => {
                let life = lives.get(&client_id).copied().unwrap_or(0);
                let s = sessions.entry(client_id).or_default();
                s.life = life;
                s.deliveries.insert(
                    seq,
                    DeliveryState {
                        message_id,
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
        })?;

        let mut report = RestoreReport::default();
        self.next_message_id = self.next_message_id.max(max_id);
        for (_, m) in retained {
            self.next_message_id = self.next_message_id.max(m.id);
            let msg = self.persist.message(m, now);
            if !msg.expired(now) {
                self.retained.insert(&msg.topic.clone(), Arc::new(msg));
                report.retained += 1;
            }
        }
        // All of it is kept (nothing acknowledged is lost), but the operator should know.
        let (max_n, max_b) = (
            self.config.max_retained_messages,
            self.config.max_retained_bytes,
        );
        if (max_n > 0 && self.retained.len() > max_n)
            || (max_b > 0 && self.retained.bytes() > max_b)
        {
            tracing::warn!(
                stored = self.retained.len(),
                bytes = self.retained.bytes(),
                max_retained_messages = max_n,
                max_retained_bytes = max_b,
                "the restored retained store is over its limits: kept whole; new topics are not stored until it is under them"
            );
        }
        // Messages the live deliveries need, and how many deliveries each.
        let mut wanted: HashMap<u64, usize> = HashMap::new();
        let mut filling: HashMap<String, Filling> = HashMap::new();
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
            // The owner, so that another user is refused its client id after a restart too.
            session.info.client_id.clone_from(&client_id);
            session.info.username = image.username;
            let left = image
                .disconnected_at_ms
                .map_or(now, |ms| self.persist.instant(ms, now));
            session.expires_at = match image.expiry_interval {
                u32::MAX => None,
                secs => Some(left + Duration::from_secs(u64::from(secs))),
            };
            session.inbound_qos2 = image.inbound.into_iter().collect();
            session.next_seq = image.deliveries.keys().max().map_or(1, |&s| s + 1);
            for d in image.deliveries.values() {
                *wanted.entry(d.message_id).or_insert(0) += 1;
            }
            self.insert_session(sid, session);
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
                self.restore_will(sid, client_id.clone(), due_ms, m, now);
                report.pending_wills += 1;
            }
            report.sessions += 1;
            if !image.deliveries.is_empty() {
                filling.insert(
                    client_id,
                    Filling {
                        sid,
                        life: image.life,
                        deliveries: image.deliveries,
                    },
                );
            }
        }
        // Wills of sessions that no longer exist are due now (their session ended).
        for (client_id, (_, m)) in wills {
            let sid = self.next_session;
            self.next_session += 1;
            self.restore_will(sid, client_id, 0, m, now);
            report.pending_wills += 1;
        }

        // Second pass: the bodies, and the deliveries in log order (which is the order they
        // were queued in).
        if !filling.is_empty() {
            let mut bodies: HashMap<u64, Arc<Message>> = HashMap::new();
            let mut lives: HashMap<String, u32> = HashMap::new();
            replay(&mut |r| match r {
                Record::Message(m) if wanted.contains_key(&m.id) && !bodies.contains_key(&m.id) => {
                    bodies.insert(m.id, Arc::new(self.persist.message(m, now)));
                }
                Record::SessionDeleted { client_id } => {
                    *lives.entry(client_id).or_insert(0) += 1;
                }
                Record::Enqueued {
                    client_id,
                    seq,
                    message_id,
                    qos,
                    retain,
                    subscription_ids,
                } => {
                    let life = lives.get(&client_id).copied().unwrap_or(0);
                    let Some(f) = filling.get_mut(&client_id).filter(|f| f.life == life) else {
                        return;
                    };
                    let Some(state) = f.deliveries.remove(&seq) else {
                        return;
                    };
                    let sid = f.sid;
                    let Some(msg) = bodies.get(&message_id).cloned() else {
                        return;
                    };
                    if let Some(n) = wanted.get_mut(&message_id) {
                        *n -= 1;
                        if *n == 0 {
                            wanted.remove(&message_id);
                            bodies.remove(&message_id);
                        }
                    }
                    *self.persist.refs.entry(message_id).or_insert(0) += 1;
                    let delivery = Delivery {
                        msg,
                        qos: QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce),
                        retain,
                        sub_ids: subscription_ids,
                        shared: None,
                        seq,
                        pin: 0,
                    };
                    let Some(session) = self.sessions.get_mut(&sid) else {
                        return;
                    };
                    match state.packet_id {
                        Some(packet_id) => {
                            session.inflight.push_back(Inflight {
                                packet_id,
                                delivery,
                                state: if state.released {
                                    OutState::Released
                                } else {
                                    OutState::Published
                                },
                                sent_at: now,
                            });
                            report.inflight += 1;
                        }
                        None => {
                            session.queue.push_back(delivery);
                            report.queued += 1;
                            self.queued(sid);
                        }
                    }
                }
                _ => {}
            })?;
        }
        report.paged = self.sessions.values().map(|s| s.queue.paged()).sum();
        Ok(report)
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

    /// The live durable state: what a fresh log needs to rebuild this broker. It iterates as
    /// records; queue pages in the spool are read (and turned into records) only as the
    /// iteration gets to them, so it can run on another thread without holding them all.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut items = Vec::new();
        // Expired messages are left out: a snapshot is how they leave the disk.
        self.retained.for_each(|_, m| {
            if !m.expired(now) {
                items.push(Item::Record(Record::Retained(self.persist.stored(m))));
            }
        });
        for s in self.sessions.values().filter(|s| s.persisted) {
            let client_id = s.client_id.to_string();
            items.extend(self.persist.session_records(s, now).map(Item::Record));
            for (filter, e) in &s.subscriptions {
                items.push(Item::Record(Record::Subscribed {
                    client_id: client_id.clone(),
                    filter: filter.to_string(),
                    options: options_byte(&e.options),
                    subscription_id: e.id,
                }));
            }
            for f in &s.inflight {
                let released = f.state == OutState::Released;
                push_delivery(
                    &mut items,
                    &self.persist,
                    &client_id,
                    &f.delivery,
                    now,
                    Some(f.packet_id),
                    released,
                );
            }
            // Queue order: the memory front, the pages, the memory back.
            let front = s.queue.iter_memory().take(s.queue.front_len());
            let back = s.queue.iter_memory().skip(s.queue.front_len());
            for d in front {
                push_delivery(&mut items, &self.persist, &client_id, d, now, None, false);
            }
            for p in s.queue.pages() {
                items.push(Item::Page(client_id.clone(), p.clone()));
            }
            for d in back {
                push_delivery(&mut items, &self.persist, &client_id, d, now, None, false);
            }
            for &packet_id in &s.inbound_qos2 {
                items.push(Item::Record(Record::InboundQos2 {
                    client_id: client_id.clone(),
                    packet_id,
                }));
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
                    properties: crate::persist::encode_will_properties(&w.will.properties),
                    expires_at_ms: None,
                };
                items.push(Item::Record(Record::PendingWill {
                    client_id: client_id.clone(),
                    due_at_ms: self.persist.ms(w.due),
                    message,
                }));
            }
        }
        Snapshot {
            items: items.into_iter(),
            persist: self.persist.clock(),
            decoder: self.pager.decoder(),
            now,
            written: HashSet::new(),
            pending: VecDeque::new(),
        }
    }
}

/// One queued or in-flight delivery as records: its message (the snapshot writes each message
/// once), the delivery, and where it stands.
fn push_delivery(
    items: &mut Vec<Item>,
    persist: &crate::persist::Persistence,
    client_id: &str,
    d: &Delivery,
    now: Instant,
    packet_id: Option<u16>,
    released: bool,
) {
    // A queued message that expired will never be sent; one in flight must complete.
    if d.seq == 0 || (packet_id.is_none() && d.msg.expired(now)) {
        return;
    }
    let mut records = Vec::with_capacity(2);
    delivery_records(
        &mut records,
        persist.stored(&d.msg),
        client_id,
        d,
        packet_id,
        released,
    );
    items.extend(records.into_iter().map(Item::Record));
}

fn delivery_records(
    out: &mut impl Extend<Record>,
    message: StoredMessage,
    client_id: &str,
    d: &Delivery,
    packet_id: Option<u16>,
    released: bool,
) {
    out.extend([
        Record::Message(message),
        Record::Enqueued {
            client_id: client_id.to_owned(),
            seq: d.seq,
            message_id: d.msg.id,
            qos: d.qos as u8,
            retain: d.retain,
            subscription_ids: d.sub_ids.clone(),
        },
    ]);
    if let Some(packet_id) = packet_id {
        out.extend([Record::Sent {
            client_id: client_id.to_owned(),
            seq: d.seq,
            packet_id,
        }]);
    }
    if released {
        out.extend([Record::Released {
            client_id: client_id.to_owned(),
            seq: d.seq,
        }]);
    }
}

enum Item {
    Record(Record),
    /// A page of a session's queue, turned into records when the iteration reaches it.
    Page(String, crate::queue::Page),
}

/// See [`Broker::snapshot`]. Iterates as records; each message body is written once.
pub struct Snapshot {
    items: std::vec::IntoIter<Item>,
    persist: crate::persist::Persistence,
    decoder: crate::pager::PageDecoder,
    now: Instant,
    written: HashSet<u64>,
    pending: VecDeque<Record>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("items_left", &self.items.len())
            .finish()
    }
}

impl Snapshot {
    /// All its records (reading every page back), or the first error.
    pub fn records(self) -> Result<Vec<Record>, tern_store::StoreError> {
        self.collect()
    }
}

impl Iterator for Snapshot {
    /// A record, or the error of a queue page that could not be read back: the compaction
    /// must then not replace the log (`tern_store::Log::try_compact`), which still holds those
    /// deliveries.
    type Item = Result<Record, tern_store::StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let r = match self.pending.pop_front() {
                Some(r) => r,
                None => match self.items.next()? {
                    Item::Record(r) => r,
                    Item::Page(client_id, page) => {
                        match self.decoder.decode(&page) {
                            Ok(ds) => {
                                for d in
                                    ds.iter().filter(|d| d.seq != 0 && !d.msg.expired(self.now))
                                {
                                    let m = self.persist.stored(&d.msg);
                                    delivery_records(
                                        &mut self.pending,
                                        m,
                                        &client_id,
                                        d,
                                        None,
                                        false,
                                    );
                                }
                            }
                            Err(e) => {
                                return Some(Err(tern_store::StoreError::Snapshot(format!(
                                    "a queue page of {client_id} cannot be read back: {e}"
                                ))));
                            }
                        }
                        continue;
                    }
                },
            };
            if let Record::Message(m) = &r
                && !self.written.insert(m.id)
            {
                continue;
            }
            return Some(Ok(r));
        }
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
