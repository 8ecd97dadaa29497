//! Counters kept by the core, read by `$SYS` and the metrics endpoint.

/// Monotonic counters (and a few gauges) of the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connects: u64,
    pub connects_refused: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub bytes_payload_received: u64,
    /// QoS 1/2 messages dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// QoS 0 messages not delivered because the session was offline.
    pub dropped_qos0_offline: u64,
    /// Messages dropped because they had expired before delivery.
    pub dropped_expired: u64,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    pub sessions_expired: u64,
    pub wills_published: u64,
    pub takeovers: u64,
    pub protocol_errors: u64,
    /// Messages for a shared group with no member able to take them.
    pub dropped_no_shared_member: u64,
}
