//! Shared counters, `/proc` readings, the progress line and the report.

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Ends the error message of a connection the broker closed before its CONNACK.
pub(crate) const BEFORE_CONNACK: &str = "before CONNACK";

/// Error messages kept for the report (the count goes on beyond).
const MAX_ERROR_MESSAGES: usize = 10;
/// The drain after the window ends after this long with no delivery ...
const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// ... or after this long in all ...
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// ... looking this often.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Counters shared by every connection task and the orchestrator. Tasks add per batch, not per
/// message.
pub(crate) struct Shared {
    start: Instant,
    w0: AtomicU64,
    w1: AtomicU64,
    pub_stop: AtomicBool,
    sub_stop: AtomicBool,
    sent_total: AtomicU64,
    recv_total: AtomicU64,
    acked_total: AtomicU64,
    sent_window: AtomicU64,
    recv_window: AtomicU64,
    out_of_order: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            w0: AtomicU64::new(u64::MAX),
            w1: AtomicU64::new(u64::MAX),
            pub_stop: AtomicBool::new(false),
            sub_stop: AtomicBool::new(false),
            sent_total: AtomicU64::new(0),
            recv_total: AtomicU64::new(0),
            acked_total: AtomicU64::new(0),
            sent_window: AtomicU64::new(0),
            recv_window: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            messages: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the bench started (monotonic).
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub(crate) fn set_window(&self, w0: u64, w1: u64) {
        self.w0.store(w0, Relaxed);
        self.w1.store(w1, Relaxed);
    }

    /// The measurement window `[w0, w1)` in bench nanoseconds.
    pub(crate) fn window(&self) -> (u64, u64) {
        (self.w0.load(Relaxed), self.w1.load(Relaxed))
    }

    pub(crate) fn stop_publishers(&self) {
        self.pub_stop.store(true, Relaxed);
    }
    pub(crate) fn stop_subscribers(&self) {
        self.sub_stop.store(true, Relaxed);
    }
    pub(crate) fn publishers_stopped(&self) -> bool {
        self.pub_stop.load(Relaxed)
    }
    pub(crate) fn subscribers_stopped(&self) -> bool {
        self.sub_stop.load(Relaxed)
    }

    /// Waits for the window's deliveries once publishing has stopped: done when every one of the
    /// `fan` deliveries per message sent in the window has come, else when nothing has come for
    /// `DRAIN_QUIET` (a QoS 0 overload drops some), at most `DRAIN_MAX`.
    ///
    /// (A quiet spell of 300 ms was once the rule and was too short: a durable broker on a busy CI
    /// machine paused deliveries for 380 ms behind a slow fsync, and the run counted 97 of 225.)
    pub(crate) async fn drain(&self, fan: u64) {
        let until = tokio::time::Instant::now() + DRAIN_MAX;
        let mut last = (self.recv_total(), tokio::time::Instant::now());
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
            if self.recv_window() >= self.sent_window() * fan {
                return;
            }
            let now = self.recv_total();
            if now != last.0 {
                last = (now, tokio::time::Instant::now());
            } else if last.1.elapsed() >= DRAIN_QUIET {
                return;
            }
        }
    }

    pub(crate) fn add_sent(&self, n: u64, in_window: u64) {
        self.sent_total.fetch_add(n, Relaxed);
        if in_window > 0 {
            self.sent_window.fetch_add(in_window, Relaxed);
        }
    }
    pub(crate) fn add_recv(&self, n: u64, in_window: u64, out_of_order: u64) {
        self.recv_total.fetch_add(n, Relaxed);
        if in_window > 0 {
            self.recv_window.fetch_add(in_window, Relaxed);
        }
        if out_of_order > 0 {
            self.out_of_order.fetch_add(out_of_order, Relaxed);
        }
    }
    pub(crate) fn add_acked(&self, n: u64) {
        self.acked_total.fetch_add(n, Relaxed);
    }

    pub(crate) fn sent_total(&self) -> u64 {
        self.sent_total.load(Relaxed)
    }
    pub(crate) fn recv_total(&self) -> u64 {
        self.recv_total.load(Relaxed)
    }
    pub(crate) fn acked_total(&self) -> u64 {
        self.acked_total.load(Relaxed)
    }
    pub(crate) fn sent_window(&self) -> u64 {
        self.sent_window.load(Relaxed)
    }
    pub(crate) fn recv_window(&self) -> u64 {
        self.recv_window.load(Relaxed)
    }
    pub(crate) fn out_of_order(&self) -> u64 {
        self.out_of_order.load(Relaxed)
    }
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Counts an error and keeps its message (the first few).
    pub(crate) fn error(&self, msg: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut m = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() < MAX_ERROR_MESSAGES && !m.contains(&msg) {
            m.push(msg);
        }
    }

    pub(crate) fn error_messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A latency histogram in nanoseconds (1 ns .. 100 s, 3 significant digits, u32 counts).
pub(crate) fn new_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// The kernel's clock ticks per second for /proc/PID/stat (USER_HZ, 100 on Linux).
pub(crate) fn clk_tck() -> f64 {
    100.0
}

fn stat_ticks(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// User + system CPU time of a process, in clock ticks.
pub(crate) fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// CPU time of this process, in clock ticks.
pub(crate) fn self_cpu_ticks() -> Option<u64> {
    stat_ticks("/proc/self/stat")
}

/// Resident set size of a process, in KiB.
pub(crate) fn proc_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `some avg10` of /proc/pressure/cpu: how much of the last 10 s runnable tasks waited for a CPU.
pub(crate) fn cpu_pressure() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    s.lines()
        .next()?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// The live progress line: rewritten in place on a terminal, one line per call otherwise.
pub(crate) struct Progress {
    enabled: bool,
    tty: bool,
    name: &'static str,
    dirty: bool,
}

impl Progress {
    pub(crate) fn new(enabled: bool, name: &'static str) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            name,
            dirty: false,
        }
    }

    pub(crate) fn line(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K[bench {}] {text}", self.name);
            self.dirty = true;
        } else {
            let _ = writeln!(err, "[bench {}] {text}", self.name);
        }
        let _ = err.flush();
    }

    pub(crate) fn finish(&mut self) {
        if self.dirty {
            let _ = writeln!(std::io::stderr());
            self.dirty = false;
        }
    }
}

/// Publish → deliver latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u32>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            samples: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// CPU and memory of a process over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStats {
    /// CPU time over wall time, in percent of one core.
    pub cpu_pct: f64,
    /// CPU microseconds per delivered message.
    pub cpu_us_per_delivered: Option<f64>,
    /// RSS at the end of the window, KiB.
    pub rss_kb: u64,
    /// RSS growth over the window, KiB.
    pub rss_growth_kb: i64,
}

impl ProcStats {
    pub(crate) fn between(
        a: &Option<(u64, u64)>,
        b: &Option<(u64, u64)>,
        window_s: f64,
        delivered: u64,
    ) -> Option<Self> {
        let ((t0, r0), (t1, r1)) = ((*a)?, (*b)?);
        let cpu_s = t1.saturating_sub(t0) as f64 / clk_tck();
        Some(Self {
            cpu_pct: cpu_s / window_s * 100.0,
            cpu_us_per_delivered: (delivered > 0).then(|| cpu_s * 1e6 / delivered as f64),
            rss_kb: r1,
            rss_growth_kb: r1 as i64 - r0 as i64,
        })
    }
}

/// Results of the connection scenarios.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectStats {
    pub requested: usize,
    pub ok: usize,
    pub failed: usize,
    pub elapsed_s: f64,
    /// Successful handshakes (CONNECT → CONNACK, plus SUBSCRIBE → SUBACK for idle) per second.
    pub per_s: f64,
    /// Handshake latency.
    pub latency: Option<Latency>,
    pub subscribed: bool,
    pub broker_rss_kb_before: Option<u64>,
    pub broker_rss_kb_after: Option<u64>,
    pub rss_kb_per_conn: Option<f64>,
    pub broker_cpu_s: Option<f64>,
    pub src_ips: usize,
}

/// The result of one bench run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub label: String,
    pub scenario: String,
    pub protocol: String,
    pub qos: u8,
    pub size: usize,
    pub rate_target: f64,
    /// Paced publishers wrote on the clock (`--pacing spin`), not on the 1 ms timer.
    pub spin_pacing: bool,
    pub inflight: usize,
    /// Subscribers kept persistent sessions (`--persistent`).
    pub persistent: bool,
    /// Publishers set the retain flag (`--retain`).
    pub retain: bool,
    pub pubs: usize,
    pub subs: usize,
    pub pubs_ok: usize,
    pub subs_ok: usize,
    /// Deliveries expected per publish.
    pub fan: usize,
    pub setup_s: f64,
    pub window_s: f64,
    /// Messages published with a timestamp inside the window.
    pub sent: u64,
    /// Deliveries of those messages (counted until the drain ends).
    pub delivered: u64,
    /// `sent × fan`.
    pub expected: u64,
    /// Publishes written per second during the window.
    pub sent_per_s: f64,
    /// Deliveries received per second during the window.
    pub delivered_per_s: f64,
    /// QoS 1/2 flows completed (PUBACK / PUBCOMP) per second during the window.
    pub acked_per_s: f64,
    pub delivery_ratio: f64,
    pub latency: Option<Latency>,
    /// Deliveries whose sequence number was not above the last one seen from that publisher.
    pub out_of_order: u64,
    pub errors: u64,
    pub error_messages: Vec<String>,
    pub broker: Option<ProcStats>,
    pub bench_cpu_pct: Option<f64>,
    pub connect: Option<ConnectStats>,
    pub cpu_pressure_avg10: Option<f64>,
}

fn num(v: f64) -> String {
    if v.is_finite() {
        let r = (v * 1000.0).round() / 1000.0;
        format!("{r}")
    } else {
        "null".into()
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "null".to_string(), f)
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn latency_json(l: &Latency) -> String {
    format!(
        "{{\"samples\":{},\"mean_us\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        l.samples,
        num(l.mean_us),
        num(l.p50_us),
        num(l.p90_us),
        num(l.p99_us),
        num(l.p999_us),
        num(l.max_us)
    )
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

impl Report {
    /// One JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut f = vec![
            format!("\"label\":{}", json_str(&self.label)),
            format!("\"scenario\":{}", json_str(&self.scenario)),
            format!("\"protocol\":{}", json_str(&self.protocol)),
            format!("\"qos\":{}", self.qos),
        ];
        if let Some(c) = &self.connect {
            f.push(format!(
                "\"connect\":{{\"requested\":{},\"ok\":{},\"failed\":{},\"elapsed_s\":{},\"per_s\":{},\"latency\":{},\"subscribed\":{},\"broker_rss_kb_before\":{},\"broker_rss_kb_after\":{},\"rss_kb_per_conn\":{},\"broker_cpu_s\":{},\"src_ips\":{}}}",
                c.requested,
                c.ok,
                c.failed,
                num(c.elapsed_s),
                num(c.per_s),
                opt(c.latency.as_ref(), latency_json),
                c.subscribed,
                opt(c.broker_rss_kb_before, |v| v.to_string()),
                opt(c.broker_rss_kb_after, |v| v.to_string()),
                opt(c.rss_kb_per_conn, num),
                opt(c.broker_cpu_s, num),
                c.src_ips
            ));
        } else {
            f.extend([
                format!("\"size\":{}", self.size),
                format!("\"rate_target\":{}", num(self.rate_target)),
                format!(
                    "\"pacing\":\"{}\"",
                    if self.spin_pacing { "spin" } else { "timer" }
                ),
                format!("\"inflight\":{}", self.inflight),
                format!("\"persistent\":{}", self.persistent),
                format!("\"retain\":{}", self.retain),
                format!("\"pubs\":{}", self.pubs),
                format!("\"subs\":{}", self.subs),
                format!("\"pubs_ok\":{}", self.pubs_ok),
                format!("\"subs_ok\":{}", self.subs_ok),
                format!("\"fan\":{}", self.fan),
                format!("\"setup_s\":{}", num(self.setup_s)),
                format!("\"window_s\":{}", num(self.window_s)),
                format!("\"sent\":{}", self.sent),
                format!("\"delivered\":{}", self.delivered),
                format!("\"expected\":{}", self.expected),
                format!("\"sent_per_s\":{}", num(self.sent_per_s)),
                format!("\"delivered_per_s\":{}", num(self.delivered_per_s)),
                format!("\"acked_per_s\":{}", num(self.acked_per_s)),
                format!("\"delivery_ratio\":{}", num(self.delivery_ratio)),
                format!(
                    "\"latency\":{}",
                    opt(self.latency.as_ref(), latency_json)
                ),
                format!("\"out_of_order\":{}", self.out_of_order),
                format!(
                    "\"broker_stats\":{}",
                    opt(self.broker.as_ref(), |b| format!(
                        "{{\"cpu_pct\":{},\"cpu_us_per_delivered\":{},\"rss_kb\":{},\"rss_growth_kb\":{}}}",
                        num(b.cpu_pct),
                        opt(b.cpu_us_per_delivered, num),
                        b.rss_kb,
                        b.rss_growth_kb
                    ))
                ),
                format!("\"bench_cpu_pct\":{}", opt(self.bench_cpu_pct, num)),
            ]);
        }
        f.push(format!("\"errors\":{}", self.errors));
        f.push(format!(
            "\"error_messages\":[{}]",
            self.error_messages
                .iter()
                .map(|m| json_str(m))
                .collect::<Vec<_>>()
                .join(",")
        ));
        f.push(format!(
            "\"cpu_pressure_avg10\":{}",
            opt(self.cpu_pressure_avg10, num)
        ));
        format!("{{{}}}", f.join(","))
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.label)
        };
        if let Some(c) = &self.connect {
            let _ = writeln!(
                s,
                "{label}{}: {} of {} connections in {:.2} s = {:.0} conn/s ({} failed, {} source address(es), MQTT {} {})",
                self.scenario,
                c.ok,
                c.requested,
                c.elapsed_s,
                c.per_s,
                c.failed,
                c.src_ips,
                self.protocol,
                if c.subscribed {
                    "with one subscription each"
                } else {
                    "connect only"
                }
            );
            if let Some(l) = &c.latency {
                let _ = writeln!(
                    s,
                    "  handshake latency: p50 {}  p90 {}  p99 {}  max {}",
                    us(l.p50_us),
                    us(l.p90_us),
                    us(l.p99_us),
                    us(l.max_us)
                );
            }
            if let (Some(a), Some(b)) = (c.broker_rss_kb_before, c.broker_rss_kb_after) {
                let _ = writeln!(
                    s,
                    "  broker RSS: {a} KiB before, {b} KiB with the connections open = {:.2} KiB per connection",
                    c.rss_kb_per_conn.unwrap_or(0.0)
                );
            }
            if let Some(cpu) = c.broker_cpu_s {
                let _ = writeln!(s, "  broker CPU during the connects: {cpu:.2} s");
            }
        } else {
            let rate = if self.rate_target > 0.0 {
                let pacing = if self.spin_pacing {
                    " (spin pacing)"
                } else {
                    ""
                };
                format!("{:.0} msg/s offered{pacing}", self.rate_target)
            } else {
                "unlimited rate".into()
            };
            let _ = writeln!(
                s,
                "{label}{}: {} publisher(s) → {} subscriber(s){}, QoS {}, {} B, {rate}, MQTT {}, {:.1} s window",
                self.scenario,
                self.pubs_ok,
                self.subs_ok,
                match (self.persistent, self.retain) {
                    (true, true) => " (persistent sessions, retained)",
                    (true, false) => " (persistent sessions)",
                    (false, true) => " (retained)",
                    (false, false) => "",
                },
                self.qos,
                self.size,
                self.protocol,
                self.window_s
            );
            let _ = writeln!(
                s,
                "  sent {:.0} msg/s, delivered {:.0} msg/s{}; delivery ratio {:.4} ({} of {} expected)",
                self.sent_per_s,
                self.delivered_per_s,
                if self.qos > 0 {
                    format!(", acknowledged {:.0}/s", self.acked_per_s)
                } else {
                    String::new()
                },
                self.delivery_ratio,
                self.delivered,
                self.expected
            );
            match &self.latency {
                Some(l) => {
                    let _ = writeln!(
                        s,
                        "  latency: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                        us(l.p50_us),
                        us(l.p90_us),
                        us(l.p99_us),
                        us(l.p999_us),
                        us(l.max_us),
                        l.samples
                    );
                }
                None => {
                    let _ = writeln!(s, "  latency: no message delivered in the window");
                }
            }
            if let Some(b) = &self.broker {
                let _ = writeln!(
                    s,
                    "  broker: CPU {:.0} %, {} per delivered message, RSS {} KiB ({:+} KiB over the window)",
                    b.cpu_pct,
                    b.cpu_us_per_delivered
                        .map_or("-".into(), |v| format!("{v:.2} µs")),
                    b.rss_kb,
                    b.rss_growth_kb
                );
            }
            if let Some(c) = self.bench_cpu_pct {
                let _ = writeln!(s, "  bench CPU {c:.0} %");
            }
            if self.out_of_order > 0 {
                let _ = writeln!(
                    s,
                    "  out of order or duplicate deliveries: {}",
                    self.out_of_order
                );
            }
        }
        let _ = writeln!(
            s,
            "  errors: {}{}",
            self.errors,
            if self.error_messages.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.error_messages.join("; "))
            }
        );
        if self
            .error_messages
            .iter()
            .any(|m| m.ends_with(BEFORE_CONNACK))
        {
            // A broker that closes connections before CONNACK is usually refusing them at
            // accept, and the bench's many connections from one address meet a per-address
            // limit first (tern's default is 50 a second).
            let _ = writeln!(
                s,
                "  (connections closed before CONNACK: does the broker limit new connections per \
                 address? tern's `limits.max_connection_rate_per_ip = 0` turns that off; \
                 --src-ips spreads the connections over more addresses)"
            );
        }
        if let Some(p) = self.cpu_pressure_avg10 {
            let _ = writeln!(s, "  CPU pressure (avg10): {p:.1} %");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long `shared.drain(fan)` took (on tokio's paused clock).
    async fn timed_drain(shared: &Shared, fan: u64) -> Duration {
        let t0 = tokio::time::Instant::now();
        shared.drain(fan).await;
        t0.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_out_a_pause_in_deliveries_longer_than_300_ms() {
        let shared = std::sync::Arc::new(Shared::new());
        shared.add_sent(10, 10);
        shared.add_recv(5, 5, 0);
        let late = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            late.add_recv(5, 5, 0);
        });
        let took = timed_drain(&shared, 1).await;
        assert_eq!(shared.recv_window(), 10);
        // It ends when the last one comes, not a quiet second later.
        assert!(took < Duration::from_millis(800), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_gives_up_after_a_quiet_second_when_some_never_come() {
        let shared = Shared::new();
        shared.add_sent(10, 10);
        // A fan-out of 3: 30 deliveries are due, 29 come.
        shared.add_recv(29, 29, 0);
        let took = timed_drain(&shared, 3).await;
        assert_eq!(shared.recv_window(), 29);
        assert!(took >= DRAIN_QUIET && took < DRAIN_MAX, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_at_once_when_everything_has_come() {
        let shared = Shared::new();
        shared.add_sent(10, 10);
        shared.add_recv(30, 30, 0);
        let took = timed_drain(&shared, 3).await;
        assert!(took <= DRAIN_POLL, "{took:?}");
    }
}
