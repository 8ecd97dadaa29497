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
    /// Publishers whose acknowledgements were held back for a subscriber's long queue.
    pub publishers_held: u64,
    /// Times publishers were let go because a subscriber held them back for `backpressure_secs`.
    pub backpressure_timeouts: u64,
    /// Held publishers that sent on without waiting for their acknowledgements, and were no
    /// longer read from until let go.
    pub publishers_paused: u64,
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
    /// SUBSCRIBE filters refused by `max_subscriptions_per_client`.
    pub limit_subscriptions: u64,
    /// PUBLISH or filters refused by `max_topic_levels`.
    pub limit_topic_levels: u64,
    /// Messages dropped by `max_queued_bytes`.
    pub dropped_queue_bytes: u64,
    /// CONNECTs refused for `max_client_id_len`.
    pub limit_client_id_len: u64,
    /// CONNECTs refused for `max_sessions`.
    pub limit_sessions: u64,
    /// CONNECTs refused because their client id's session belongs to another user.
    pub limit_session_owner: u64,
    /// Retained messages not stored for `max_retained_messages` / `max_retained_bytes`.
    pub limit_retained_messages: u64,
    pub limit_retained_bytes: u64,
    /// SUBSCRIBE filters whose retained messages were not sent: the client asked for them again
    /// faster than it took them (see `retained_burst`).
    pub dropped_retained: u64,
    /// Clients disconnected by `max_message_rate`.
    pub limit_message_rate: u64,
    /// PUBLISH / SUBSCRIBE refused by the ACL.
    pub acl_denied: u64,
    /// Messages for a shared group with no member able to take them.
    pub dropped_no_shared_member: u64,
    /// PUBLISH packets accepted from clients, by QoS (0, 1, 2).
    pub publish_received_by_qos: [u64; 3],
    /// PUBLISH packets sent to clients (first sends, not re-sends), by QoS.
    pub publish_sent_by_qos: [u64; 3],
    /// Payload bytes of the PUBLISH packets counted in `publish_sent`.
    pub bytes_payload_sent: u64,
    /// CONNECTs refused for bad credentials or as not authorized.
    pub auth_failures: u64,
    /// Most connections that had completed CONNECT at the same time.
    pub max_connected: u64,
    /// Connections closed by an administrator (admin API).
    pub admin_disconnects: u64,
    /// Messages published by the broker itself (admin API; `$SYS` is not counted).
    pub broker_published: u64,
}

impl Stats {
    /// Counts one PUBLISH sent to a client.
    pub(crate) fn count_sent(&mut self, qos: tern_codec::QoS, payload_len: usize) {
        self.publish_sent += 1;
        self.publish_sent_by_qos[qos as usize] += 1;
        self.bytes_payload_sent += payload_len as u64;
    }
}
