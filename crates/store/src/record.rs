//! What the broker writes to its durable log: one record per state change of a persistent
//! session, a message, the retained store or a delayed will. Replaying the records in order
//! rebuilds the state; a snapshot is the same records, written for the live state only.
//!
//! Times are wall-clock milliseconds since the Unix epoch (an `Instant` means nothing after a
//! restart).

use bytes::Bytes;

/// A message body, stored once and referenced by id from every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub topic: String,
    pub payload: Bytes,
    /// QoS it was published with (0..=2).
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties as the codec encodes them for a PUBLISH (property length included);
    /// empty for none.
    pub properties: Bytes,
    /// Absolute expiry, if any.
    pub expires_at_ms: Option<u64>,
}

/// One change of durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session was created or its settings changed.
    Session {
        client_id: String,
        /// Protocol level (3, 4, 5).
        version: u8,
        /// Session Expiry Interval in seconds (u32::MAX: never).
        expiry_interval: u32,
        /// When its client disconnected; `None` while connected.
        disconnected_at_ms: Option<u64>,
    },
    /// A session ended (expired, clean start, expiry 0): everything of it goes.
    SessionDeleted {
        client_id: String,
    },
    /// A subscription was added or replaced.
    Subscribed {
        client_id: String,
        filter: String,
        /// The subscription options byte as MQTT 5 encodes it (QoS, No Local, RAP, Retain Handling).
        options: u8,
        subscription_id: Option<u32>,
    },
    Unsubscribed {
        client_id: String,
        filter: String,
    },
    /// A message body that at least one delivery or pending will refers to.
    Message(StoredMessage),
    /// No delivery refers to this message any more.
    MessageDeleted {
        id: u64,
    },
    /// A QoS 1/2 delivery entered a session's queue. `seq` orders a session's deliveries.
    Enqueued {
        client_id: String,
        seq: u64,
        message_id: u64,
        /// Delivered QoS (1 or 2).
        qos: u8,
        retain: bool,
        subscription_ids: Vec<u32>,
    },
    /// The delivery was sent with this packet id (it is now in flight).
    Sent {
        client_id: String,
        seq: u64,
        packet_id: u16,
    },
    /// PUBREC received for a QoS 2 delivery: PUBREL is due, the message itself is done.
    Released {
        client_id: String,
        seq: u64,
    },
    /// The delivery is complete (PUBACK, PUBCOMP) or dropped (expired, too large).
    Completed {
        client_id: String,
        seq: u64,
    },
    /// An inbound QoS 2 packet id was received and PUBREC sent.
    InboundQos2 {
        client_id: String,
        packet_id: u16,
    },
    /// PUBREL received for it.
    InboundQos2Released {
        client_id: String,
        packet_id: u16,
    },
    /// A retained message was set (the message is embedded: retained bodies live as long as
    /// the retained entry).
    Retained(StoredMessage),
    /// The retained message of a topic was deleted.
    RetainedDeleted {
        topic: String,
    },
    /// A will waits for its delay to pass (its body is embedded).
    PendingWill {
        client_id: String,
        due_at_ms: u64,
        message: StoredMessage,
    },
    /// The pending will was published or cancelled.
    PendingWillDone {
        client_id: String,
    },
    /// The user a session belongs to (its client logged in with this user name), written
    /// after the `Session` record of a session that has one. Another user who comes with its
    /// client id is refused, after a restart too. A record of its own, not a field of
    /// `Session`: a binary from before it skips it (with a warning) and keeps the session.
    SessionOwner {
        client_id: String,
        username: String,
    },
}
