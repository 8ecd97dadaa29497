//! Limits and defaults of the broker core. Every field has a default and a config key in the
//! binary (`crates/tern/src/config.rs` maps them one to one).

/// Core settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest packet accepted from a client, in bytes (advertised as Maximum Packet Size in v5).
    pub max_packet_size: u32,
    /// Most unacknowledged QoS 1/2 messages towards one client; a v5 client's smaller Receive
    /// Maximum wins.
    pub max_inflight: u16,
    /// Most unreleased inbound QoS 2 messages one MQTT 5 client may have (advertised as Receive
    /// Maximum). MQTT 3.x has none: a 3.x client may have as many as it has packet ids.
    pub receive_maximum: u16,
    /// Most messages queued for one session beyond its in-flight window (offline, or online and
    /// waiting for the window). When full, the newest message is dropped and counted.
    pub max_queued_messages: usize,
    /// Back-pressure: while a connected subscriber's queue holds half of `max_queued_messages`
    /// (at most 512 messages) or more, the acknowledgements of QoS 1/2 publishers that add to it
    /// wait (in order) until it is down to half of that, for at most this many seconds. 0: never
    /// (the queue limit drops).
    pub backpressure_secs: u32,
    /// Session expiry, in seconds, given to MQTT 3.x clients that connect with clean session 0.
    /// MQTT 3.x has no expiry of its own; without one abandoned sessions would pile up forever.
    pub v3_session_expiry: u32,
    /// Upper bound for a v5 client's Session Expiry Interval, in seconds.
    pub max_session_expiry: u32,
    /// Largest keep alive accepted; a v5 client asking for more (or for 0) gets Server Keep Alive.
    /// 0 means no limit.
    pub max_keep_alive: u16,
    /// Whether retained messages are kept.
    pub retain_available: bool,
    /// Most topic aliases a v5 client may use towards the broker (0 disables them), and most
    /// the broker uses towards a client (which may allow more: each is a topic kept for the
    /// connection's life).
    pub topic_alias_maximum: u16,
    /// Prefix of client identifiers the broker assigns.
    pub assigned_id_prefix: String,
    /// How a shared subscription group picks the member for each message.
    pub shared_strategy: SharedStrategy,
    /// Re-send unacknowledged QoS 1/2 deliveries to a connected client after this many seconds
    /// (0: only on reconnect, as MQTT 5 requires). Some 3.1.1 clients (Dapr's MQTT component)
    /// rely on it to retry messages their handler failed on.
    pub retry_interval: u32,
    /// Emit [`crate::Action::Persist`] records for persistent sessions, retained messages and
    /// delayed wills (the durable store is on).
    pub persistence: bool,
    /// Most subscriptions one client may hold; more get SUBACK 0x97 (v5) / 0x80 (3.x).
    pub max_subscriptions_per_client: usize,
    /// Most levels in a topic name or filter; deeper PUBLISHes get DISCONNECT 0x90 (v5) or a
    /// close, deeper filters SUBACK 0x8F / 0x80.
    pub max_topic_levels: usize,
    /// Most message bytes (topic, payload and properties) queued for one session; beyond, new
    /// messages for it are dropped and counted, as for `max_queued_messages`.
    pub max_queued_bytes: usize,
    /// Most PUBLISH packets per second one client may send (0: no limit); beyond, DISCONNECT
    /// 0x96 (v5) or a close. A burst of one second's worth is allowed.
    pub max_message_rate: u32,
    /// Most memory (estimated bytes) the queues of all sessions hold together; beyond, queues
    /// are paged out to the spool, offline sessions first. Only with a spool
    /// ([`crate::Broker::set_spool`]); without one, queues stay in memory.
    pub queue_memory: usize,
    /// Most retained messages stored (0: no limit); a retained PUBLISH to a new topic beyond it
    /// is routed but not stored (counted, logged).
    pub max_retained_messages: usize,
    /// Most bytes (topics, payloads, properties) of retained messages stored (0: no limit);
    /// a retained PUBLISH that would pass it is routed but not stored, and the message it
    /// would have replaced is deleted.
    pub max_retained_bytes: usize,
    /// Longest client id accepted, in bytes (0: no limit beyond the protocol's 65,535); longer
    /// ones get CONNACK 0x85 (v5) / 0x02 (3.x).
    pub max_client_id_len: usize,
    /// Most sessions (0: no limit); a CONNECT that would create one more that outlives its
    /// connection gets CONNACK 0x97 (v5) / 0x03 (3.x).
    pub max_sessions: usize,
    /// Seconds an MQTT 5 enhanced authentication exchange may take from its CONNECT; a client
    /// that has not finished it by then gets CONNACK 0x87 (checked once a second; 0: no
    /// limit).
    pub auth_timeout_secs: u32,
}

/// Member choice in a shared subscription group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedStrategy {
    /// Each online member in turn.
    #[default]
    RoundRobin,
    /// An online member at random.
    Random,
    /// The same online member as long as it stays online.
    Sticky,
    /// The online member with the fewest unacknowledged and queued messages.
    LeastInflight,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            max_inflight: 64,
            receive_maximum: 128,
            max_queued_messages: 10_000,
            backpressure_secs: 10,
            v3_session_expiry: 7 * 24 * 3600,
            max_session_expiry: u32::MAX,
            max_keep_alive: 0,
            retain_available: true,
            topic_alias_maximum: 64,
            assigned_id_prefix: "tern-".to_string(),
            shared_strategy: SharedStrategy::RoundRobin,
            retry_interval: 0,
            persistence: false,
            max_subscriptions_per_client: 10_000,
            max_topic_levels: 128,
            max_queued_bytes: 256 * 1024 * 1024,
            max_message_rate: 0,
            queue_memory: 64 * 1024 * 1024,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1024 * 1024 * 1024,
            max_client_id_len: 1024,
            max_sessions: 1_000_000,
            auth_timeout_secs: 10,
        }
    }
}
