//! The `$SYS` tree, with Mosquitto's topic names and meanings, so tools written for Mosquitto
//! (MQTT Explorer's `$SYS/#` view, dashboards, scripts) work unchanged.
//!
//! [`SysTree`] computes the values from the core's [`crate::Stats`], the broker state and the
//! counters only the I/O layer knows ([`IoCounters`]: bytes and packets on the wire, sockets),
//! and publishes them retained at QoS 0 every `interval`. Like Mosquitto, only values that changed
//! since the last publication are published again (all of them the first time).
//!
//! The load figures (`$SYS/broker/load/.../1min|5min|15min`) are Mosquitto's: a rate per minute,
//! smoothed exponentially over 1, 5 and 15 minutes, updated at each publication.

use crate::action::Action;
use crate::broker::Broker;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Counters kept by the I/O layer (monotonic, since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// MQTT packets of any type received.
    pub packets_received: u64,
    /// MQTT packets of any type sent.
    pub packets_sent: u64,
    /// Network connections accepted.
    pub sockets_opened: u64,
    /// QoS 0 messages dropped because a client's outbox was full (slow reader).
    pub dropped_outbox: u64,
}

/// The load families: the `$SYS/broker/load/...` prefix and how to read the counter.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// State of the `$SYS` publisher.
#[derive(Debug, Clone)]
pub struct SysTree {
    version: String,
    started: Instant,
    interval: Duration,
    last_publish: Option<Instant>,
    published: HashMap<String, String>,
    /// Counters of the previous sample, for the load figures.
    prev: Option<(Instant, [u64; LOADS.len()])>,
    loads: [[f64; 3]; LOADS.len()],
    current: Vec<(String, String)>,
}

impl SysTree {
    /// A publisher for broker `version` started at `started`, publishing every `interval`
    /// (zero: never).
    pub fn new(version: &str, started: Instant, interval: Duration) -> Self {
        Self {
            version: version.to_string(),
            started,
            interval,
            last_publish: None,
            published: HashMap::new(),
            prev: None,
            loads: [[0.0; 3]; LOADS.len()],
            current: Vec::new(),
        }
    }

    /// The publication interval (zero: `$SYS` is off).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// True when a publication is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        !self.interval.is_zero()
            && self
                .last_publish
                .is_none_or(|t| now.saturating_duration_since(t) >= self.interval)
    }

    /// Publishes the values that changed, if a publication is due; call it on every tick.
    /// Returns how many messages were published.
    pub fn tick(
        &mut self,
        broker: &mut Broker,
        io: &IoCounters,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> usize {
        if !self.due(now) {
            return 0;
        }
        self.last_publish = Some(now);
        let values = self.sample(broker, io, now);
        let changed: Vec<(String, String)> = values
            .into_iter()
            .filter(|(t, v)| self.published.get(t) != Some(v))
            .collect();
        for (t, v) in &changed {
            self.published.insert(t.clone(), v.clone());
        }
        let n = changed.len();
        broker.publish_sys(changed, now, out);
        n
    }

    /// The values of the last sample (empty before the first).
    pub fn current(&self) -> &[(String, String)] {
        &self.current
    }

    /// Computes every `$SYS` value at `now` and advances the load averages. [`SysTree::tick`]
    /// calls it; call it directly to read the values without publishing.
    pub fn sample(
        &mut self,
        broker: &Broker,
        io: &IoCounters,
        now: Instant,
    ) -> Vec<(String, String)> {
        let st = broker.stats();
        let store = broker.store_usage();
        let connected = broker.connected_count() as u64;
        let total = broker.session_count() as u64;
        let dropped = st.dropped_queue_full
            + st.dropped_qos0_offline
            + st.dropped_expired
            + st.dropped_too_large
            + st.dropped_no_shared_member
            + io.dropped_outbox;
        let counters: [u64; LOADS.len()] = [
            io.packets_received,
            io.packets_sent,
            st.publish_received,
            st.publish_sent,
            dropped,
            io.bytes_received,
            io.bytes_sent,
            io.sockets_opened,
            st.connects,
        ];
        self.update_loads(counters, now);

        let mut v: Vec<(String, String)> = Vec::with_capacity(64);
        let mut put = |topic: &str, value: String| {
            v.push((format!("$SYS/broker/{topic}"), value));
        };
        put("version", format!("tern version {}", self.version));
        put(
            "uptime",
            format!(
                "{} seconds",
                now.saturating_duration_since(self.started).as_secs()
            ),
        );
        put("clients/connected", connected.to_string());
        put("clients/active", connected.to_string());
        put("clients/disconnected", (total - connected).to_string());
        put("clients/inactive", (total - connected).to_string());
        put("clients/total", total.to_string());
        put(
            "clients/maximum",
            st.max_connected.max(connected).to_string(),
        );
        put("clients/expired", st.sessions_expired.to_string());
        put("messages/received", io.packets_received.to_string());
        put("messages/sent", io.packets_sent.to_string());
        put("messages/stored", store.messages.to_string());
        put("messages/inflight", store.inflight.to_string());
        put("store/messages/count", store.messages.to_string());
        put("store/messages/bytes", store.bytes.to_string());
        put("publish/messages/received", st.publish_received.to_string());
        put("publish/messages/sent", st.publish_sent.to_string());
        put("publish/messages/dropped", dropped.to_string());
        put(
            "publish/bytes/received",
            st.bytes_payload_received.to_string(),
        );
        put("publish/bytes/sent", st.bytes_payload_sent.to_string());
        put("bytes/received", io.bytes_received.to_string());
        put("bytes/sent", io.bytes_sent.to_string());
        put(
            "retained messages/count",
            broker.retained_count().to_string(),
        );
        put(
            "subscriptions/count",
            broker.subscription_count().to_string(),
        );
        put(
            "shared_subscriptions/count",
            broker.shared_subscription_count().to_string(),
        );
        for (i, family) in LOADS.iter().enumerate() {
            for (w, (name, _)) in WINDOWS.iter().enumerate() {
                put(
                    &format!("load/{family}/{name}"),
                    format!("{:.2}", self.loads[i][w]),
                );
            }
        }
        self.current.clone_from(&v);
        v
    }

    /// Mosquitto's load average: the rate per minute over the last interval, blended into each
    /// window with weight `1 - exp(-dt / window)`.
    fn update_loads(&mut self, counters: [u64; LOADS.len()], now: Instant) {
        if let Some((then, prev)) = self.prev {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if dt <= 0.0 {
                return;
            }
            for i in 0..LOADS.len() {
                let per_minute = counters[i].saturating_sub(prev[i]) as f64 * 60.0 / dt;
                for (w, (_, window)) in WINDOWS.iter().enumerate() {
                    let exponent = (-dt / window).exp();
                    let load = &mut self.loads[i][w];
                    *load = per_minute + exponent * (*load - per_minute);
                }
            }
        }
        self.prev = Some((now, counters));
    }
}
