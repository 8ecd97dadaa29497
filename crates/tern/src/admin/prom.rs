//! The Prometheus text exposition format (version 0.0.4), written by hand.

use super::api::CoreStats;
use crate::metrics::{Histogram, ListenerMetrics, Metrics};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    fn per_listener(
        &mut self,
        listeners: &[std::sync::Arc<ListenerMetrics>],
        name: &str,
        kind: &str,
        help: &str,
        f: impl Fn(&ListenerMetrics) -> &AtomicU64,
    ) {
        self.header(name, kind, help);
        for l in listeners {
            let addr = l.addr.to_string();
            self.sample(name, &[("listener", &addr)], f(l).load(Ordering::Relaxed));
        }
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let (buckets, sum, count) = h.snapshot();
        let bucket = format!("{name}_bucket");
        for (le, n) in buckets {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                format!("{le}")
            };
            self.sample(&bucket, &[("le", &le)], n);
        }
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric. `core` is `None` when the driver did not answer in time (the I/O
/// metrics are still worth having then).
pub fn render(m: &Metrics, core: Option<&CoreStats>) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.header("tern_build_info", "gauge", "Version of the running broker.");
    o.sample(
        "tern_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.one(
        "tern_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        m.started.elapsed().as_secs(),
    );
    o.one(
        "tern_up",
        "gauge",
        "1 when the broker core answered this scrape in time.",
        u8::from(core.is_some()),
    );

    let ls = m.listeners();
    o.per_listener(
        &ls,
        "tern_connections_open",
        "gauge",
        "Open network connections.",
        |l| &l.open,
    );
    o.per_listener(
        &ls,
        "tern_connections_accepted_total",
        "counter",
        "Network connections accepted.",
        |l| &l.accepted,
    );
    o.header(
        "tern_limit_hits_total",
        "counter",
        "Times a configured limit was reached.",
    );
    for l in &ls {
        let addr = l.addr.to_string();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "max_connections")],
            get(&l.refused_max_connections),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "max_packet_size")],
            get(&l.packets_too_large),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "max_outbox_packets")],
            get(&l.dropped_outbox_full),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "connect_timeout")],
            get(&l.connect_timeouts),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "listener_max_connections")],
            get(&l.refused_listener_max_connections),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "max_connection_rate_per_ip")],
            get(&l.refused_connection_rate),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "packet_timeout")],
            get(&l.packet_timeouts),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "write_timeout")],
            get(&l.write_timeouts),
        );
        o.sample(
            "tern_limit_hits_total",
            &[("listener", &addr), ("limit", "max_handshakes")],
            get(&l.handshakes_rejected),
        );
        o.sample(
            "tern_limit_hits_total",
            &[
                ("listener", &addr),
                ("limit", "handshake_failed_or_timed_out"),
            ],
            get(&l.handshakes_failed),
        );
    }
    if let Some(c) = core {
        o.sample(
            "tern_limit_hits_total",
            &[("limit", "max_queued_messages")],
            c.stats.dropped_queue_full,
        );
        for (limit, value) in [
            ("max_queued_bytes", c.stats.dropped_queue_bytes),
            ("retained_on_subscribe", c.stats.dropped_retained),
            ("max_retained_messages", c.stats.limit_retained_messages),
            ("max_retained_bytes", c.stats.limit_retained_bytes),
            ("max_client_id_len", c.stats.limit_client_id_len),
            ("max_sessions", c.stats.limit_sessions),
            ("session_owner", c.stats.limit_session_owner),
            ("max_subscriptions_per_client", c.stats.limit_subscriptions),
            ("max_topic_levels", c.stats.limit_topic_levels),
            ("max_message_rate", c.stats.limit_message_rate),
            ("acl_denied", c.stats.acl_denied),
            ("backpressure_held", c.stats.publishers_held),
            ("backpressure_secs", c.stats.backpressure_timeouts),
            ("backpressure_paused", c.stats.publishers_paused),
        ] {
            o.sample("tern_limit_hits_total", &[("limit", limit)], value);
        }
    }
    o.per_listener(
        &ls,
        "tern_bytes_received_total",
        "counter",
        "Bytes read from client connections.",
        |l| &l.bytes_received,
    );
    o.per_listener(
        &ls,
        "tern_bytes_sent_total",
        "counter",
        "Bytes written to client connections.",
        |l| &l.bytes_sent,
    );
    o.per_listener(
        &ls,
        "tern_packets_received_total",
        "counter",
        "MQTT packets of any type received.",
        |l| &l.packets_received,
    );
    o.per_listener(
        &ls,
        "tern_packets_sent_total",
        "counter",
        "MQTT packets of any type sent.",
        |l| &l.packets_sent,
    );
    o.per_listener(
        &ls,
        "tern_decode_errors_total",
        "counter",
        "Packets that could not be decoded (malformed, too large, unsupported protocol).",
        |l| &l.decode_errors,
    );
    o.per_listener(
        &ls,
        "tern_keep_alive_timeouts_total",
        "counter",
        "Connections closed after 1.5 x keep alive without a packet.",
        |l| &l.keep_alive_timeouts,
    );

    if let Some(c) = core {
        let s = &c.stats;
        o.one(
            "tern_clients_connected",
            "gauge",
            "Clients that completed CONNECT.",
            c.clients_connected,
        );
        o.one(
            "tern_clients_maximum",
            "gauge",
            "Most clients connected at once since start.",
            s.max_connected,
        );
        o.header(
            "tern_sessions",
            "gauge",
            "Sessions, by state (offline: persistent sessions whose client is away).",
        );
        o.sample("tern_sessions", &[("state", "online")], c.sessions_online);
        o.sample("tern_sessions", &[("state", "offline")], c.sessions_offline);
        o.one(
            "tern_subscriptions",
            "gauge",
            "Subscriptions over all sessions.",
            c.subscriptions,
        );
        o.one(
            "tern_shared_subscriptions",
            "gauge",
            "Shared subscriptions ($share/...), each member counted.",
            c.shared_subscriptions,
        );
        o.one(
            "tern_retained_messages",
            "gauge",
            "Retained messages held.",
            c.retained,
        );
        o.one(
            "tern_inflight_messages",
            "gauge",
            "Outbound QoS 1/2 messages awaiting acknowledgement, over all sessions.",
            c.store.inflight,
        );
        o.one(
            "tern_queued_messages",
            "gauge",
            "Messages queued for sessions (offline, or waiting for the in-flight window).",
            c.store.queued,
        );
        o.one(
            "tern_store_messages",
            "gauge",
            "Distinct messages held by queues, in-flight windows and the retained store.",
            c.store.messages,
        );
        o.one(
            "tern_store_message_bytes",
            "gauge",
            "Payload bytes of tern_store_messages.",
            c.store.bytes,
        );
        let pg = &c.pager;
        o.one(
            "tern_queue_memory_bytes",
            "gauge",
            "Estimated memory held by queued deliveries of all sessions (paged-out ones excluded).",
            pg.memory,
        );
        o.one(
            "tern_queue_memory_budget_bytes",
            "gauge",
            "limits.queue_memory: beyond it, queues are paged out to the spool.",
            pg.budget,
        );
        o.one(
            "tern_queued_paged_messages",
            "gauge",
            "Queued deliveries paged out to the spool.",
            c.store.paged,
        );
        o.one(
            "tern_spool_bytes",
            "gauge",
            "Bytes of spool files on disk (live pages and dead ones awaiting their segment's removal).",
            pg.spool_bytes,
        );
        o.one(
            "tern_spool_live_bytes",
            "gauge",
            "Bytes of live pages in the spool.",
            pg.spool_live_bytes,
        );
        o.one(
            "tern_spool_pages_written_total",
            "counter",
            "Queue pages written to the spool.",
            pg.pages_written,
        );
        o.one(
            "tern_spool_pages_read_total",
            "counter",
            "Queue pages read back from the spool.",
            pg.pages_read,
        );
        o.one(
            "tern_spool_write_errors_total",
            "counter",
            "Pages the spool could not write (their deliveries stayed in memory).",
            pg.write_errors,
        );
        o.one(
            "tern_spool_lost_messages_total",
            "counter",
            "Queued deliveries lost because their page could not be read back.",
            pg.deliveries_lost,
        );
        o.one(
            "tern_connects_total",
            "counter",
            "CONNECTs accepted.",
            s.connects,
        );
        o.one(
            "tern_connects_refused_total",
            "counter",
            "CONNECTs refused (any reason).",
            s.connects_refused,
        );
        o.one(
            "tern_auth_failures_total",
            "counter",
            "CONNECTs refused for bad credentials or as not authorized.",
            s.auth_failures,
        );
        o.header(
            "tern_disconnects_total",
            "counter",
            "Connections that had completed CONNECT and ended, by reason.",
        );
        for (reason, n) in &c.disconnects {
            o.sample("tern_disconnects_total", &[("reason", reason)], n);
        }
        o.one(
            "tern_takeovers_total",
            "counter",
            "Sessions taken over by a new connection with the same client id.",
            s.takeovers,
        );
        o.one(
            "tern_protocol_errors_total",
            "counter",
            "Connections closed for a protocol violation.",
            s.protocol_errors,
        );
        o.one(
            "tern_sessions_expired_total",
            "counter",
            "Offline sessions ended by their expiry interval.",
            s.sessions_expired,
        );
        o.one(
            "tern_wills_published_total",
            "counter",
            "Will messages published.",
            s.wills_published,
        );
        o.header(
            "tern_messages_received_total",
            "counter",
            "PUBLISH packets accepted from clients, by QoS.",
        );
        for (q, n) in s.publish_received_by_qos.iter().enumerate() {
            o.sample(
                "tern_messages_received_total",
                &[("qos", &q.to_string())],
                n,
            );
        }
        o.header(
            "tern_messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients (re-sends not counted), by QoS.",
        );
        for (q, n) in s.publish_sent_by_qos.iter().enumerate() {
            o.sample("tern_messages_sent_total", &[("qos", &q.to_string())], n);
        }
        o.one(
            "tern_publish_bytes_received_total",
            "counter",
            "Payload bytes of PUBLISH packets received.",
            s.bytes_payload_received,
        );
        o.one(
            "tern_publish_bytes_sent_total",
            "counter",
            "Payload bytes of PUBLISH packets sent.",
            s.bytes_payload_sent,
        );
        o.header(
            "tern_messages_dropped_total",
            "counter",
            "Messages not delivered to a subscriber, by reason.",
        );
        let outbox: u64 = ls
            .iter()
            .map(|l| l.dropped_outbox_full.load(Ordering::Relaxed))
            .sum();
        for (reason, n) in [
            ("queue_full", s.dropped_queue_full),
            ("qos0_offline", s.dropped_qos0_offline),
            ("expired", s.dropped_expired),
            ("too_large", s.dropped_too_large),
            ("no_shared_member", s.dropped_no_shared_member),
            ("slow_consumer", outbox),
        ] {
            o.sample("tern_messages_dropped_total", &[("reason", reason)], n);
        }
        o.one(
            "tern_admin_disconnects_total",
            "counter",
            "Clients disconnected through the admin API.",
            s.admin_disconnects,
        );
        o.one(
            "tern_admin_published_total",
            "counter",
            "Messages published through the admin API.",
            s.broker_published,
        );
    }

    o.histogram(
        "tern_store_commit_seconds",
        "Durable store: time from a group commit's first record to its fsync completing.",
        &m.store_commit_seconds,
    );
    o.histogram(
        "tern_store_batch_records",
        "Durable store: records per group commit (fsync).",
        &m.store_batch_records,
    );
    o.one(
        "tern_store_bytes_written_total",
        "counter",
        "Durable store: bytes written.",
        m.store_bytes_written.load(Ordering::Relaxed),
    );
    o.one(
        "tern_admin_requests_total",
        "counter",
        "Admin listener requests served.",
        m.admin_requests.load(Ordering::Relaxed),
    );
    o.one(
        "tern_admin_auth_failures_total",
        "counter",
        "Admin listener requests refused for a missing or wrong token.",
        m.admin_auth_failures.load(Ordering::Relaxed),
    );
    o.one(
        "tern_log_lines_suppressed_total",
        "counter",
        "Connection event log lines held back by the repetition limiter.",
        m.log_suppressed.load(Ordering::Relaxed),
    );
    if let Some(auth) = m.auth.get() {
        let st = auth.stats();
        o.header(
            "tern_password_checks_total",
            "counter",
            "Passwords checked in full against the password file (Argon2id or PBKDF2): by the connection's task before its CONNECT reaches the core (ahead), or by the core itself.",
        );
        o.sample(
            "tern_password_checks_total",
            &[("where", "ahead")],
            st.checked_ahead,
        );
        o.sample(
            "tern_password_checks_total",
            &[("where", "core")],
            st.checked_on_core,
        );
        o.one(
            "tern_logins_remembered_total",
            "counter",
            "Logins accepted with a password accepted for that user before (one HMAC, no hash check).",
            st.logins_remembered,
        );
    }
    o.0
}
