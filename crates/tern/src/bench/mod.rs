//! `tern bench`: a load generator for any MQTT broker on loopback.
//!
//! Scenarios: `p2p` (N publisher/subscriber pairs), `fanout` (1 → M), `fanin` (N → 1 wildcard
//! subscriber), `shared` (publishers → M members of `$share/bench/...`), `conn-storm` (connect,
//! CONNACK, DISCONNECT as fast as possible) and `idle` (N idle connections, one subscription
//! each; connect rate and broker RSS per connection).
//!
//! Every PUBLISH carries, at the start of its payload, the send time (nanoseconds on a monotonic
//! clock since the bench started), a per-publisher sequence number and the publisher's index;
//! subscribers record publish → deliver latency in an HDR histogram. Only messages sent inside
//! the measurement window (after the warm-up) count, so the delivery ratio is exact: messages of
//! the window delivered (until the drain ends) over messages of the window sent × fan-out.
//!
//! Packets are built and parsed with `tern-codec` (the codec `tern-client` speaks); the
//! publisher encodes one PUBLISH once and then only patches the timestamp, sequence number and
//! packet id of copies, and writes up to `--batch` messages per system call.
//!
//! Module map:
//! - this file: options, validation, the orchestration of a run;
//! - `load`: connection set-up and the publisher / subscriber loops;
//! - `report`: shared counters, `/proc` readings, the report and its text and JSON forms;
//! - `floor`: `tern bench-floor`, a relay with no broker logic to measure the machine against.

mod floor;
mod load;
mod report;

pub use floor::{FloorArgs, relay as floor_relay, run as run_floor};
pub use report::{ConnectStats, Latency, ProcStats, Report};

use anyhow::{Context, bail};
use clap::{Args, Parser, ValueEnum};
use load::{Role, Target};
use report::{Progress, Shared, proc_cpu_ticks, proc_rss_kb};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_codec::{ProtocolVersion, QoS};

/// How a paced publisher (`--rate` > 0) waits for its next messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pacing {
    /// Sleep on the runtime's 1 ms timer: each tick's messages leave together, so the broker
    /// receives the load in millisecond bursts. The generator's core idles between ticks.
    Timer,
    /// Keep checking the clock (yielding in between) and write as soon as a batch (`--batch`)
    /// is due, or when the first due message has waited 1 ms, or each message as it falls due
    /// when they are more than 1 ms apart: every publisher writes on its own schedule, not on
    /// the runtime's tick, and a fast one in batches well under a millisecond apart. Keeps the
    /// generator's core busy while any write is due within 2 ms.
    Spin,
}

/// The load pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N publisher → subscriber pairs, one topic each (`--pairs N`).
    P2p,
    /// One publisher (or `--pubs`) → M subscribers of one topic (`--subs M`).
    Fanout,
    /// N publishers on N topics → one subscriber of a wildcard filter (`--pubs N`).
    Fanin,
    /// Publishers (`--pubs`, default 1) → M members of one shared subscription (`--subs M`).
    Shared,
    /// Open and close `--conns N` connections as fast as possible (`--concurrency` at a time).
    ConnStorm,
    /// Open `--conns N` idle connections (one subscription each unless `--no-sub`) and hold them
    /// for `--duration` seconds.
    Idle,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::P2p => "p2p",
            Self::Fanout => "fanout",
            Self::Fanin => "fanin",
            Self::Shared => "shared",
            Self::ConnStorm => "conn-storm",
            Self::Idle => "idle",
        }
    }
}

/// `tern bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Broker host (an address, or a name that resolves to one).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// Allow a target outside 127.0.0.0/8 and ::1 (do not load other people's machines).
    #[arg(long)]
    pub allow_remote: bool,
    /// p2p: number of publisher/subscriber pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// fanout/shared: number of subscribers [fanout: 100, shared: 4].
    #[arg(long)]
    pub subs: Option<usize>,
    /// fanin: number of publishers; fanout/shared: publishers [fanin: 100, others: 1].
    #[arg(long)]
    pub pubs: Option<usize>,
    /// conn-storm/idle: number of connections.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Connection handshakes in progress at once during set-up.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// QoS of the publishes and the subscriptions.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least 16: timestamp, sequence number, publisher).
    #[arg(short, long, default_value_t = 16)]
    pub size: usize,
    /// Total offered publish rate in messages per second over all publishers; 0 = unlimited.
    #[arg(short, long, default_value_t = 0.0)]
    pub rate: f64,
    /// QoS 1/2: unacknowledged messages allowed per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Most messages a publisher writes with one system call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// How paced publishers wait for their schedule: `timer` (1 ms ticks, bursts) or `spin`
    /// (smooth arrivals; the generator's core stays busy).
    #[arg(long, value_enum, default_value_t = Pacing::Timer)]
    pub pacing: Pacing,
    /// Measurement window in seconds (idle: how long the connections are held).
    #[arg(short, long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before the window, in seconds (not measured).
    #[arg(short, long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Speak MQTT 5.0 (default 3.1.1).
    #[arg(long)]
    pub v5: bool,
    /// Subscribers keep persistent sessions: clean session 0 (3.1.1) / clean start 0 with a
    /// Session Expiry Interval of 3600 s (5.0), under client ids unique to the run, so a broker
    /// with durable storage writes their deliveries. The sessions are discarded at the end
    /// (5.0: DISCONNECT with expiry 0; 3.1.1: a clean-session reconnect).
    #[arg(long)]
    pub persistent: bool,
    /// Publish with the retain flag: the broker replaces the retained message of each
    /// publisher's topic with every message (subscribers get them as live messages). At the
    /// end each publisher deletes its retained message (an empty retained PUBLISH).
    #[arg(long)]
    pub retain: bool,
    /// Keep alive sent in CONNECT, in seconds [idle: 600, others: 60].
    #[arg(long)]
    pub keep_alive: Option<u16>,
    /// Local source addresses, to pass the ~28 k ports per address limit: a count K
    /// (127.0.0.1..127.0.0.K), a range `127.0.0.1-127.0.0.8` or a comma-separated list.
    #[arg(long, value_name = "K|A-B|A,B,..")]
    pub src_ips: Option<String>,
    /// idle: connect only, without a subscription.
    #[arg(long)]
    pub no_sub: bool,
    /// Broker process id: report its CPU time (per delivered message) and RSS from /proc.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Threads (each a single-threaded runtime) that run the connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// A label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    args: BenchArgs,
}

impl BenchArgs {
    /// Parses options as on the command line, without the leading `tern bench`
    /// (e.g. `["p2p", "--qos", "1"]`); for tests and scripts that drive the bench as a library.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("tern-bench"))
            .chain(args.into_iter().map(Into::into));
        Ok(Wrapper::try_parse_from(argv)?.args)
    }

    fn version(&self) -> ProtocolVersion {
        if self.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        }
    }

    fn qos(&self) -> QoS {
        QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce)
    }

    /// Publishers and subscribers of a publish scenario, defaults applied ((0, 0) for
    /// `conn-storm` and `idle`).
    fn clients(&self) -> (usize, usize) {
        match self.scenario {
            Scenario::P2p => (self.pairs.max(1), self.pairs.max(1)),
            Scenario::Fanout => (
                self.pubs.unwrap_or(1).max(1),
                self.subs.unwrap_or(100).max(1),
            ),
            Scenario::Fanin => (self.pubs.unwrap_or(100).max(1), 1),
            Scenario::Shared => (self.pubs.unwrap_or(1).max(1), self.subs.unwrap_or(4).max(1)),
            Scenario::ConnStorm | Scenario::Idle => (0, 0),
        }
    }

    /// How many connections the run holds at most, to make room for their descriptors before
    /// the threads start.
    pub fn max_connections(&self) -> usize {
        match self.scenario {
            Scenario::ConnStorm | Scenario::Idle => self.conns,
            _ => {
                let (pubs, subs) = self.clients();
                pubs.saturating_add(subs)
            }
        }
    }
}

/// `tern bench`; returns the process exit code (0: no errors, 1: errors occurred).
pub async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    let json = args.json;
    let report = tokio::task::spawn_blocking(move || run_blocking(&args)).await??;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(u8::from(report.errors > 0))
}

/// Runs one bench to its end on threads of its own and returns the report. Bounded in time:
/// set-up, warm-up, window and drain all have deadlines.
pub fn run_blocking(args: &BenchArgs) -> anyhow::Result<Report> {
    let target = resolve_target(args)?;
    if args.size < load::HEADER {
        bail!("--size must be at least {} bytes", load::HEADER);
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be in (0, 3600] seconds");
    }
    if !(args.warmup >= 0.0 && args.warmup <= 600.0) {
        bail!("--warmup must be in [0, 600] seconds");
    }
    if args.rate < 0.0 || !args.rate.is_finite() {
        bail!("--rate must be >= 0");
    }
    let src_ips = parse_src_ips(args.src_ips.as_deref(), args.allow_remote)?;
    let threads = args.threads.clamp(1, 64);
    let shared = Arc::new(Shared::new());
    let mut runtimes = Vec::new();
    for _ in 0..threads {
        runtimes.push(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
    }
    let handles: Vec<_> = runtimes.iter().map(|rt| rt.handle().clone()).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rts = runtimes.into_iter();
    let main_rt = rts.next().context("no runtime")?;
    let mut workers = Vec::new();
    for (i, rt) in rts.enumerate() {
        let mut stop = stop_rx.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("bench-{}", i + 1))
                .spawn(move || {
                    rt.block_on(async move {
                        while !*stop.borrow() {
                            if stop.changed().await.is_err() {
                                break;
                            }
                        }
                    });
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?,
        );
    }
    let ctx = Ctx {
        args: args.clone(),
        target,
        src_ips,
        handles,
        shared,
    };
    let main = std::thread::Builder::new()
        .name("bench-0".into())
        .spawn(move || {
            let limit = ctx.time_limit();
            let r = main_rt.block_on(async move {
                match tokio::time::timeout(limit, ctx.orchestrate()).await {
                    Ok(r) => r,
                    Err(_) => bail!("the bench did not finish within {limit:?}; stopped"),
                }
            });
            main_rt.shutdown_timeout(Duration::from_secs(1));
            r
        })?;
    let result = main
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("bench thread panicked")));
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.join();
    }
    result
}

fn resolve_target(args: &BenchArgs) -> anyhow::Result<SocketAddr> {
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", args.host))?
        .next()
        .with_context(|| format!("{} has no address", args.host))?;
    if !addr.ip().is_loopback() && !args.allow_remote {
        bail!(
            "refusing to load {addr}: not a loopback address (pass --allow-remote to load a broker on another machine)"
        );
    }
    Ok(addr)
}

/// Parses `--src-ips`: `K` (127.0.0.1..=127.0.0.K), `A-B` or `A,B,...`.
fn parse_src_ips(s: Option<&str>, allow_remote: bool) -> anyhow::Result<Vec<IpAddr>> {
    let Some(s) = s else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    if let Ok(k) = s.trim().parse::<u32>() {
        if !(1..=254).contains(&k) {
            bail!("--src-ips K must be in 1..=254");
        }
        for i in 1..=k {
            out.push(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)));
        }
        return Ok(out);
    }
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().context("--src-ips: bad address")?;
            let b: Ipv4Addr = b.trim().parse().context("--src-ips: bad address")?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                bail!("--src-ips: bad range {part}");
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(part.parse().context("--src-ips: bad address")?);
        }
    }
    if !allow_remote && let Some(ip) = out.iter().find(|ip| !ip.is_loopback()) {
        bail!("--src-ips: {ip} is not a loopback address");
    }
    Ok(out)
}

/// Everything one run needs.
struct Ctx {
    args: BenchArgs,
    target: SocketAddr,
    src_ips: Vec<IpAddr>,
    handles: Vec<tokio::runtime::Handle>,
    shared: Arc<Shared>,
}

/// The client id prefix of a run: `tb<pid>`, and with persistent sessions also the start time,
/// so that no run resumes a session a previous run (with a recycled pid) left on the broker.
fn client_prefix(persistent: bool) -> String {
    let pid = std::process::id();
    if persistent {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("tb{pid}-{:x}{:05x}", t.as_secs(), t.subsec_micros())
    } else {
        format!("tb{pid}")
    }
}

/// Time allowed for connection set-up.
fn setup_limit(conns: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(conns as u64 * 5)
}

impl Ctx {
    fn time_limit(&self) -> Duration {
        let conns = match self.args.scenario {
            Scenario::Idle | Scenario::ConnStorm => self.args.conns,
            _ => 10_000,
        };
        setup_limit(conns) * 2
            + Duration::from_secs_f64(self.args.warmup + self.args.duration)
            + Duration::from_secs(30)
    }

    fn keep_alive(&self) -> u16 {
        self.args.keep_alive.unwrap_or(match self.args.scenario {
            Scenario::Idle => 600,
            _ => 60,
        })
    }

    fn target(&self) -> Arc<Target> {
        Arc::new(Target {
            addr: self.target,
            src_ips: self.src_ips.clone(),
            version: self.args.version(),
            keep_alive: self.keep_alive(),
            client_prefix: client_prefix(self.args.persistent),
            persistent: self.args.persistent,
        })
    }

    async fn orchestrate(self) -> anyhow::Result<Report> {
        match self.args.scenario {
            Scenario::ConnStorm | Scenario::Idle => self.run_connections().await,
            _ => self.run_pubsub().await,
        }
    }

    /// Publisher and subscriber counts and topics for the pub/sub scenarios.
    fn layout(&self) -> Layout {
        let a = &self.args;
        let root = format!("tern-bench/{}", std::process::id());
        let (p, m) = a.clients();
        match a.scenario {
            Scenario::P2p => Layout {
                pubs: (0..p).map(|i| format!("{root}/p/{i}")).collect(),
                subs: (0..m).map(|i| format!("{root}/p/{i}")).collect(),
                fan: 1,
            },
            Scenario::Fanout => Layout {
                pubs: vec![format!("{root}/f"); p],
                subs: vec![format!("{root}/f"); m],
                fan: m,
            },
            Scenario::Fanin => Layout {
                pubs: (0..p).map(|i| format!("{root}/i/{i}")).collect(),
                subs: vec![format!("{root}/i/#"); m],
                fan: 1,
            },
            Scenario::Shared => Layout {
                pubs: vec![format!("{root}/s"); p],
                subs: vec![format!("$share/bench/{root}/s"); m],
                fan: 1,
            },
            Scenario::ConnStorm | Scenario::Idle => Layout {
                pubs: Vec::new(),
                subs: Vec::new(),
                fan: 0,
            },
        }
    }

    async fn run_pubsub(self) -> anyhow::Result<Report> {
        let a = &self.args;
        let layout = self.layout();
        let target = self.target();
        let shared = self.shared.clone();
        let threads = self.handles.len();
        let npubs = layout.pubs.len();
        let nsubs = layout.subs.len();
        let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let settings = Arc::new(load::LoadSettings {
            qos: a.qos(),
            size: a.size,
            per_pub_rate: if a.rate > 0.0 {
                a.rate / npubs as f64
            } else {
                0.0
            },
            pubs: npubs,
            inflight: a.inflight.clamp(1, 65_535),
            batch: a.batch.clamp(1, 4096),
            spin: a.pacing == Pacing::Spin,
            retain: a.retain,
        });
        let t_setup = Instant::now();

        // Subscribers first, so that nothing published is lost for want of a subscription.
        let mut sub_ready = Vec::new();
        let mut sub_tasks = Vec::new();
        for (j, filter) in layout.subs.iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let role = Role::Subscriber {
                filter: filter.clone(),
            };
            let fut = load::connection_task(
                j,
                role,
                target.clone(),
                settings.clone(),
                shared.clone(),
                sem.clone(),
                go_rx.clone(),
                tx,
            );
            sub_tasks.push(self.handles[j % threads].spawn(fut));
            sub_ready.push(rx);
        }
        let limit = setup_limit(nsubs + npubs);
        let subs_ok = wait_ready(sub_ready, &shared, limit).await;
        let mut pub_ready = Vec::new();
        let mut pub_tasks = Vec::new();
        for (i, topic) in layout.pubs.iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let role = Role::Publisher {
                index: i,
                topic: topic.clone(),
            };
            let fut = load::connection_task(
                nsubs + i,
                role,
                target.clone(),
                settings.clone(),
                shared.clone(),
                sem.clone(),
                go_rx.clone(),
                tx,
            );
            pub_tasks.push(self.handles[(nsubs + i) % threads].spawn(fut));
            pub_ready.push(rx);
        }
        let pubs_ok = wait_ready(pub_ready, &shared, limit).await;
        let setup_s = t_setup.elapsed().as_secs_f64();
        let fan = match a.scenario {
            Scenario::Fanout => subs_ok.max(1),
            _ => layout.fan,
        };

        // The window, in bench-clock nanoseconds; set before the publishers start.
        let go_at = shared.now_ns() + 100_000_000;
        let w0 = go_at + (a.warmup * 1e9) as u64;
        let w1 = w0 + (a.duration * 1e9) as u64;
        shared.set_window(w0, w1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = go_tx.send(true);

        let mut progress = Progress::new(!a.quiet, a.scenario.name());
        let bpid = a.broker_pid;
        let mut snap0 = None;
        let mut last_tick = Instant::now();
        let (mut last_sent, mut last_recv) = (shared.sent_total(), shared.recv_total());
        loop {
            let now = shared.now_ns();
            if snap0.is_none() && now >= w0 {
                snap0 = Some(Snapshot::take(&shared, bpid));
            }
            if now >= w1 {
                break;
            }
            let next_edge = if snap0.is_none() { w0 } else { w1 };
            let wait = Duration::from_nanos(next_edge - now).min(Duration::from_millis(1000));
            tokio::time::sleep(wait).await;
            if last_tick.elapsed() >= Duration::from_millis(990) {
                let el = last_tick.elapsed().as_secs_f64();
                let (s, r) = (shared.sent_total(), shared.recv_total());
                let phase = if snap0.is_none() {
                    "warm-up"
                } else {
                    "measure"
                };
                let t = (shared.now_ns() as f64 - go_at as f64) / 1e9;
                progress.line(&format!(
                    "{t:6.1}s {phase} | sent {:>10.0}/s delivered {:>10.0}/s | errors {}",
                    (s - last_sent) as f64 / el,
                    (r - last_recv) as f64 / el,
                    shared.errors()
                ));
                (last_sent, last_recv) = (s, r);
                last_tick = Instant::now();
            }
        }
        let snap1 = Snapshot::take(&shared, bpid);
        let snap0 = snap0.unwrap_or_else(|| snap1.clone());
        progress.finish();

        // Stop publishing, then wait for the window's deliveries.
        shared.stop_publishers();
        shared.drain(fan as u64).await;
        shared.stop_subscribers();
        let mut hist = report::new_histogram();
        for t in pub_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        for t in sub_tasks {
            if let Ok(Ok(Some(h))) = tokio::time::timeout(Duration::from_secs(3), t).await {
                let _ = hist.add(&h);
            }
        }

        let window_s = (snap1.at - snap0.at).as_secs_f64().max(1e-9);
        let sent = shared.sent_window();
        let delivered = shared.recv_window();
        let expected = sent * fan as u64;
        Ok(Report {
            label: a.label.clone(),
            scenario: a.scenario.name().to_string(),
            protocol: if a.v5 { "5.0" } else { "3.1.1" }.to_string(),
            qos: a.qos,
            size: a.size,
            rate_target: a.rate,
            // (Spin pacing only paces: an unlimited run has nothing to wait for.)
            spin_pacing: a.pacing == Pacing::Spin && a.rate > 0.0,
            inflight: a.inflight,
            persistent: a.persistent,
            retain: a.retain,
            pubs: npubs,
            subs: nsubs,
            subs_ok,
            pubs_ok,
            fan,
            setup_s,
            window_s,
            sent,
            delivered,
            expected,
            sent_per_s: (snap1.sent - snap0.sent) as f64 / window_s,
            delivered_per_s: (snap1.recv - snap0.recv) as f64 / window_s,
            acked_per_s: (snap1.acked - snap0.acked) as f64 / window_s,
            delivery_ratio: if expected > 0 {
                delivered as f64 / expected as f64
            } else {
                0.0
            },
            latency: Latency::from_histogram(&hist),
            out_of_order: shared.out_of_order(),
            errors: shared.errors(),
            error_messages: shared.error_messages(),
            broker: ProcStats::between(
                &snap0.broker,
                &snap1.broker,
                window_s,
                snap1.recv - snap0.recv,
            ),
            bench_cpu_pct: ProcStats::between(&snap0.me, &snap1.me, window_s, 0).map(|p| p.cpu_pct),
            connect: None,
            cpu_pressure_avg10: report::cpu_pressure(),
        })
    }

    async fn run_connections(self) -> anyhow::Result<Report> {
        let a = &self.args;
        let target = self.target();
        let shared = self.shared.clone();
        let threads = self.handles.len();
        let n = a.conns.max(1);
        let storm = a.scenario == Scenario::ConnStorm;
        let subscribe = !storm && !a.no_sub;
        let bpid = a.broker_pid;
        let rss0 = bpid.and_then(proc_rss_kb);
        let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
        let mut progress = Progress::new(!a.quiet, a.scenario.name());
        let cpu0 = bpid.and_then(proc_cpu_ticks);
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let fut = load::open_connection(
                i,
                target.clone(),
                shared.clone(),
                sem.clone(),
                subscribe,
                storm,
                a.qos(),
            );
            tasks.push(self.handles[i % threads].spawn(fut));
        }
        let deadline = tokio::time::Instant::now() + setup_limit(n);
        let mut held = Vec::with_capacity(if storm { 0 } else { n });
        let mut hist = report::new_histogram();
        let (mut ok, mut failed) = (0usize, 0usize);
        let mut last_tick = Instant::now();
        for t in tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(Ok((stream, ns)))) => {
                    ok += 1;
                    let _ = hist.record(ns.max(1));
                    if let Some(s) = stream {
                        held.push(s);
                    }
                }
                Ok(Ok(Err(e))) => {
                    failed += 1;
                    shared.error(format!("{e:#}"));
                }
                Ok(Err(e)) => {
                    failed += 1;
                    shared.error(format!("connection task failed: {e}"));
                }
                Err(_) => {
                    failed += 1;
                    shared.error("connection set-up timed out".into());
                }
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                progress.line(&format!(
                    "{:6.1}s | {ok} connected, {failed} failed",
                    t0.elapsed().as_secs_f64()
                ));
                last_tick = Instant::now();
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu1 = bpid.and_then(proc_cpu_ticks);
        progress.finish();
        let mut rss1 = None;
        if !storm {
            // Let the broker settle, then read its RSS; hold the connections for the duration.
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss1 = bpid.and_then(proc_rss_kb);
            let hold = Duration::from_secs_f64(a.duration);
            let until = Instant::now() + hold;
            while Instant::now() < until {
                tokio::time::sleep((until - Instant::now()).min(Duration::from_secs(1))).await;
                if !a.quiet {
                    progress.line(&format!(
                        "holding {} connections, {:.0} s left",
                        held.len(),
                        (until - Instant::now()).as_secs_f64()
                    ));
                }
            }
            progress.finish();
            // Count connections the broker closed while they were idle.
            let alive = load::count_alive(&held);
            if alive < held.len() {
                shared.error(format!(
                    "{} of {} idle connections were closed by the broker",
                    held.len() - alive,
                    held.len()
                ));
            }
        }
        drop(held);
        let broker_cpu_s = match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / report::clk_tck()),
            _ => None,
        };
        Ok(Report {
            label: a.label.clone(),
            scenario: a.scenario.name().to_string(),
            protocol: if a.v5 { "5.0" } else { "3.1.1" }.to_string(),
            qos: a.qos,
            errors: shared.errors(),
            error_messages: shared.error_messages(),
            connect: Some(ConnectStats {
                requested: n,
                ok,
                failed,
                elapsed_s: elapsed,
                per_s: ok as f64 / elapsed.max(1e-9),
                latency: Latency::from_histogram(&hist),
                subscribed: subscribe,
                broker_rss_kb_before: rss0,
                broker_rss_kb_after: rss1,
                rss_kb_per_conn: match (rss0, rss1) {
                    (Some(a), Some(b)) if ok > 0 => Some((b as f64 - a as f64) / ok as f64),
                    _ => None,
                },
                broker_cpu_s,
                src_ips: self.src_ips.len().max(1),
            }),
            cpu_pressure_avg10: report::cpu_pressure(),
            ..Report::default()
        })
    }
}

struct Layout {
    /// Topic of each publisher.
    pubs: Vec<String>,
    /// Filter of each subscriber.
    subs: Vec<String>,
    /// Deliveries expected per publish.
    fan: usize,
}

/// Waits for the set-up of a group of connections; returns how many succeeded.
async fn wait_ready(
    ready: Vec<tokio::sync::oneshot::Receiver<bool>>,
    shared: &Shared,
    limit: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut ok = 0;
    for rx in ready {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(true)) => ok += 1,
            Ok(_) => {}
            Err(_) => {
                shared.error("connection set-up timed out".into());
                break;
            }
        }
    }
    ok
}

/// Counters and process readings at one instant.
#[derive(Clone)]
struct Snapshot {
    at: Instant,
    sent: u64,
    recv: u64,
    acked: u64,
    broker: Option<(u64, u64)>,
    me: Option<(u64, u64)>,
}

impl Snapshot {
    fn take(shared: &Shared, broker: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            sent: shared.sent_total(),
            recv: shared.recv_total(),
            acked: shared.acked_total(),
            broker: broker.and_then(|p| Some((proc_cpu_ticks(p)?, proc_rss_kb(p).unwrap_or(0)))),
            me: Some((report::self_cpu_ticks().unwrap_or(0), 0)),
        }
    }
}
