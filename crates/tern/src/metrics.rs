//! Counters and gauges shared by the I/O layer (accept loops, connection tasks), the driver and
//! the durable store, read by `/metrics`, `$SYS` and the dashboard.
//!
//! Everything is a relaxed atomic: bumping a counter costs one uncontended `fetch_add` on the
//! connection's own listener entry, and readers only need eventually consistent values.
//! The core's own counters ([`tern_core::Stats`]) are not duplicated here: the admin listener
//! asks the driver for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tern_core::IoCounters;

/// Counters of one MQTT listener.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// The bound address (the `listener` label).
    pub addr: SocketAddr,
    /// Network connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed at accept because `limits.max_connections` was reached.
    pub refused_max_connections: AtomicU64,
    /// Open network connections (gauge).
    pub open: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// MQTT packets of any type.
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    /// Packets that could not be decoded (malformed, too large, unsupported protocol).
    pub decode_errors: AtomicU64,
    /// Packets refused for exceeding `limits.max_packet_size`.
    pub packets_too_large: AtomicU64,
    /// Connections closed for silence beyond 1.5 x keep alive.
    pub keep_alive_timeouts: AtomicU64,
    /// Connections closed because no CONNECT came within `limits.connect_timeout_secs`.
    pub connect_timeouts: AtomicU64,
    /// QoS 0 messages dropped because the client's outbox was full (`limits.max_outbox_packets`
    /// or `limits.max_outbox_bytes`).
    pub dropped_outbox_full: AtomicU64,
    /// Connections closed at accept by the listener's own `max_connections`.
    pub refused_listener_max_connections: AtomicU64,
    /// Connections closed at accept by `limits.max_connection_rate_per_ip`.
    pub refused_connection_rate: AtomicU64,
    /// Connections closed for not finishing a started packet (`limits.packet_timeout_secs`).
    pub packet_timeouts: AtomicU64,
    /// Connections closed for not taking what they were sent in time (`limits.write_timeout_secs`).
    pub write_timeouts: AtomicU64,
    /// Connections closed at accept because `limits.max_handshakes` were in progress.
    pub handshakes_rejected: AtomicU64,
    /// TLS / WebSocket / PROXY handshakes that failed or timed out.
    pub handshakes_failed: AtomicU64,
}

impl ListenerMetrics {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            accepted: AtomicU64::new(0),
            refused_max_connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            packets_too_large: AtomicU64::new(0),
            keep_alive_timeouts: AtomicU64::new(0),
            connect_timeouts: AtomicU64::new(0),
            dropped_outbox_full: AtomicU64::new(0),
            refused_listener_max_connections: AtomicU64::new(0),
            refused_connection_rate: AtomicU64::new(0),
            packet_timeouts: AtomicU64::new(0),
            write_timeouts: AtomicU64::new(0),
            handshakes_rejected: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
        }
    }

    /// Adds `n` to a counter of this listener.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A connection was accepted: counts it and its opening (pair with [`Self::conn_closed`]).
    pub fn conn_opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's tasks ended.
    pub fn conn_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A histogram with fixed buckets (Prometheus semantics: cumulative on output).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending.
    bounds: &'static [f64],
    /// One count per bound, plus one for +Inf.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in millionths of the unit (to stay in an integer atomic).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// (upper bound, cumulative count) per bucket, the +Inf bucket last; then sum and count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, acc));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum, acc)
    }
}

/// Seconds: 50 us .. 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Records per group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Every metric of the I/O side of the broker.
#[derive(Debug)]
pub struct Metrics {
    pub started: Instant,
    listeners: std::sync::RwLock<Vec<Arc<ListenerMetrics>>>,
    /// Durable store: time from the first record of a group commit to its fsync completing.
    pub store_commit_seconds: Histogram,
    /// Durable store: records written per group commit (fsync).
    pub store_batch_records: Histogram,
    /// Durable store: bytes written.
    pub store_bytes_written: AtomicU64,
    /// Admin API requests refused for a missing or wrong token.
    pub admin_auth_failures: AtomicU64,
    /// Admin API requests served.
    pub admin_requests: AtomicU64,
    /// Log lines held back by the repetition limiter.
    pub log_suppressed: AtomicU64,
    /// The password file's access control, for its counters (set at start when configured).
    pub auth: std::sync::OnceLock<tern_auth::FileAccess>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            listeners: std::sync::RwLock::new(Vec::new()),
            store_commit_seconds: Histogram::new(LATENCY_BUCKETS),
            store_batch_records: Histogram::new(BATCH_BUCKETS),
            store_bytes_written: AtomicU64::new(0),
            admin_auth_failures: AtomicU64::new(0),
            admin_requests: AtomicU64::new(0),
            log_suppressed: AtomicU64::new(0),
            auth: std::sync::OnceLock::new(),
        }
    }

    /// Registers a listener bound at `addr` and returns its counters.
    pub fn listener(&self, addr: SocketAddr) -> Arc<ListenerMetrics> {
        let m = Arc::new(ListenerMetrics::new(addr));
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(m.clone());
        m
    }

    /// The registered listeners.
    pub fn listeners(&self) -> Vec<Arc<ListenerMetrics>> {
        self.listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Totals over every listener, as `$SYS` wants them.
    pub fn io_counters(&self) -> IoCounters {
        let mut io = IoCounters::default();
        for l in self.listeners() {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            io.bytes_received += get(&l.bytes_received);
            io.bytes_sent += get(&l.bytes_sent);
            io.packets_received += get(&l.packets_received);
            io.packets_sent += get(&l.packets_sent);
            io.sockets_opened += get(&l.accepted);
            io.dropped_outbox += get(&l.dropped_outbox_full);
        }
        io
    }

    /// Sum of one counter over the listeners.
    pub fn total(&self, f: impl Fn(&ListenerMetrics) -> &AtomicU64) -> u64 {
        self.listeners()
            .iter()
            .map(|l| f(l).load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(1.5);
        h.observe(9.0);
        let (b, sum, count) = h.snapshot();
        assert_eq!(b, vec![(1.0, 1), (2.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(count, 4);
        assert!((sum - 12.5).abs() < 1e-9);
    }

    #[test]
    fn io_counters_sum_listeners() {
        let m = Metrics::new();
        let a = m.listener("127.0.0.1:1".parse().unwrap());
        let b = m.listener("127.0.0.1:2".parse().unwrap());
        ListenerMetrics::add(&a.bytes_received, 10);
        ListenerMetrics::add(&b.bytes_received, 5);
        a.conn_opened();
        b.conn_opened();
        b.conn_closed();
        let io = m.io_counters();
        assert_eq!(io.bytes_received, 15);
        assert_eq!(io.sockets_opened, 2);
        assert_eq!(m.total(|l| &l.open), 1);
    }
}
