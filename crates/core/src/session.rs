//! Per-client session state (MQTT 5.0 section 4.1): it outlives the network connection when the
//! session expiry interval says so.

use crate::broker::ConnId;
use crate::message::Message;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tern_codec::{ByteStr, ProtocolVersion, QoS, SubscriptionOptions, Will};

/// A subscription as stored in the trie and in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier given with the SUBSCRIBE.
    pub id: Option<u32>,
}

/// One message on its way to one session: the shared message plus what is particular to this
/// subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(publish QoS, subscription QoS).
    pub qos: QoS,
    /// Retain flag as sent to this subscriber.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub sub_ids: Vec<u32>,
    /// The shared group it was chosen for, if any (it moves to another member if this one
    /// leaves before acknowledging it).
    pub shared: Option<crate::shared::GroupId>,
    /// Position in the session's durable delivery list (0: not persisted).
    pub seq: u64,
    /// Bytes of the read its message is a slice of that this delivery charges to the queue it
    /// is in (see [`crate::queue::Queue::may_pin`]): the read's length for the first delivery
    /// of a run from one read, else 0.
    pub pin: u32,
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An unacknowledged outbound delivery.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: u16,
    pub delivery: Delivery,
    pub state: OutState,
    /// When it was last sent (for the optional in-session retry of 3.1.1 clients).
    pub sent_at: std::time::Instant,
}

/// Session state.
#[derive(Debug)]
pub struct Session {
    pub client_id: ByteStr,
    /// The connection currently attached, if any.
    pub conn: Option<ConnId>,
    pub version: ProtocolVersion,
    /// Filter -> subscription. Mirrors this session's entries in the broker's trie.
    pub subscriptions: HashMap<ByteStr, SubEntry>,
    /// Outbound QoS 1/2 messages awaiting acknowledgement, in the order they were sent.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting for the in-flight window or for the client to come back (paged out to
    /// the spool when the broker's queues pass their memory budget).
    pub queue: crate::queue::Queue,
    /// Inbound QoS 2 packet ids received (PUBREC sent) but not yet released by PUBREL.
    pub inbound_qos2: HashSet<u16>,
    next_packet_id: u16,
    /// Session Expiry Interval in seconds (u32::MAX: never).
    pub expiry_interval: u32,
    /// When an offline session expires.
    pub expires_at: Option<Instant>,
    /// The will of the current connection.
    /// Boxed: most sessions have none, and inline it would double the session's size.
    pub will: Option<Box<Will>>,
    /// Most in-flight messages towards the client.
    pub window: u16,
    /// Client's Maximum Packet Size (MQTT 5).
    pub max_packet_size: Option<u32>,
    /// Topic aliases of the current connection, both ways. Boxed and created on first use:
    /// most clients never use them, and two maps inline cost ~100 bytes per session.
    pub aliases: Option<Box<Aliases>>,
    /// The client's Topic Alias Maximum (0: no aliases towards it).
    pub alias_out_max: u16,
    /// True when the session's state is written to the durable store.
    pub persisted: bool,
    /// Next delivery sequence number for the durable store.
    pub next_seq: u64,
    /// Who the client is, for ACL checks on what it receives.
    pub info: crate::access::ClientInfo,
    /// Message-rate token bucket: tokens left and when it was last filled.
    pub rate_tokens: f64,
    pub rate_at: Option<Instant>,
    /// Keep alive of the current (or last) connection, in seconds.
    pub keep_alive: u16,
    /// When the current connection completed CONNECT (`None` while offline).
    pub connected_at: Option<Instant>,
}

/// Topic aliases of one network connection ([MQTT-3.3.2-7]: they live and die with it).
#[derive(Debug, Default)]
pub struct Aliases {
    /// Set up by the client towards us.
    pub incoming: HashMap<u16, ByteStr>,
    /// Set up by us towards the client.
    pub outgoing: HashMap<ByteStr, u16>,
}

impl Session {
    /// A fresh session.
    pub fn new(client_id: ByteStr, version: ProtocolVersion) -> Self {
        Self {
            client_id,
            conn: None,
            version,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            queue: crate::queue::Queue::default(),
            inbound_qos2: HashSet::new(),
            next_packet_id: 1,
            expiry_interval: 0,
            expires_at: None,
            will: None,
            window: 1,
            max_packet_size: None,
            aliases: None,
            alias_out_max: 0,
            persisted: false,
            next_seq: 1,
            info: crate::access::ClientInfo::default(),
            rate_tokens: 0.0,
            rate_at: None,
            keep_alive: 0,
            connected_at: None,
        }
    }

    /// A packet identifier not used by any in-flight message ([MQTT-2.2.1-3]). Ids cycle through
    /// 1..=65535; the window is far smaller than that, so a free one is always found.
    pub fn next_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Position of the in-flight entry with `packet_id`. Acknowledgements mostly arrive in order,
    /// so the scan usually stops at the front.
    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }

    /// True when a client is attached.
    pub fn online(&self) -> bool {
        self.conn.is_some()
    }
}
