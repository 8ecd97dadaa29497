//! Starting and stopping the broker: listeners, accept loops, the driver, graceful shutdown.

use crate::config::Config;
use crate::connection::{self, ConnSettings};
use crate::driver::Driver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tern_core::Broker;
use tern_net::{Listener, Transport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the channel from connections to the driver, in batches.
const EVENT_QUEUE: usize = 4096;
/// Bytes read from clients and not yet handled by the driver, over all connections. Bounds the
/// memory an overload can take before publishers feel TCP back-pressure.
const READ_BUDGET: usize = 1024 * 1024;
/// Most connections being refused at once with CONNACK "server busy"; beyond, they are just
/// closed.
const BUSY_REFUSALS: usize = 64;
/// How long a refused connection has to send its CONNECT.
const BUSY_WAIT: Duration = Duration::from_secs(2);
/// How long shutdown waits for connections to flush their last packets.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A running broker.
pub struct Server {
    addrs: Vec<SocketAddr>,
    admin: Option<crate::admin::AdminServer>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Certificate watchers and the SIGHUP task: stopped at shutdown.
    tasks_aux: Vec<JoinHandle<()>>,
    driver: JoinHandle<()>,
    live: Arc<AtomicUsize>,
}

impl Server {
    /// Binds every listener and starts serving. Fails if a listener cannot be bound.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let mut listeners = Vec::new();
        for (settings, allow_anonymous, max_connections) in config.listener_settings() {
            let (bind, transport) = (settings.bind, settings.transport);
            let l = Listener::bind(settings)
                .map_err(|e| anyhow::anyhow!("cannot listen on {bind} ({transport}): {e}"))?;
            listeners.push((l, allow_anonymous, max_connections));
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut broker = Broker::new(config.core());
        let access = install_access(config, &listeners, &mut broker)?;
        let store = if config.core().persistence {
            let started = std::time::Instant::now();
            let (log, log_report) =
                crate::persistence::open(&config.data_dir, config.durability())?;
            // Queues beyond the memory budget are paged out here; it is rebuilt from the log
            // at every start, so restore fills it as it goes.
            let spool_dir = config.data_dir.join("spool");
            match tern_store::Spool::open(&spool_dir) {
                Ok(spool) => broker.set_spool(spool),
                Err(e) => tracing::warn!(error = %e,
                    "cannot open the queue spool; queues stay in memory (bounded per session only)"),
            }
            let now = std::time::Instant::now();
            broker.set_wall_clock(now, crate::driver::unix_ms());
            let report = broker
                .restore_from(|sink| log.replay(sink).map(drop), now)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the log in {}: {e}", config.data_dir.display())
                })?;
            crate::release_free_memory();
            let handle = crate::persistence::start(log)?;
            tracing::info!(
                data_dir = %config.data_dir.display(),
                durability = %config.durability(),
                sessions = report.sessions,
                queued = report.queued,
                inflight = report.inflight,
                retained = report.retained,
                pending_wills = report.pending_wills,
                paged_out = report.paged,
                log = %log_report,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "state recovered"
            );
            Some(handle)
        } else {
            tracing::warn!(
                "durability = none: sessions, queued messages and retained messages live in memory only"
            );
            None
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        if let Some(a) = &access {
            let _ = metrics.auth.set(a.clone());
        }
        let ops = crate::admin::DriverOps::new(
            metrics.clone(),
            Duration::from_secs(config.sys_interval_secs),
        );
        let (admin_tx, admin_rx) = mpsc::channel(crate::admin::CALL_QUEUE);
        let driver = tokio::spawn(Driver::new(broker, store, ops).run(
            events_rx,
            admin_rx,
            shutdown_rx.clone(),
        ));
        let settings = ConnSettings {
            budget: Arc::new(tokio::sync::Semaphore::new(READ_BUDGET)),
            budget_bytes: READ_BUDGET,
            connect_timeout: Duration::from_secs(config.limits.connect_timeout_secs),
            max_packet_size: config.limits.max_packet_size,
            max_outbox_packets: config.limits.max_outbox_packets,
            max_outbox_bytes: config.limits.max_outbox_bytes,
            max_keep_alive: config.limits.max_keep_alive_secs,
            packet_timeout: Duration::from_secs(config.limits.packet_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(config.limits.write_timeout_secs),
            metrics: Arc::new(crate::metrics::ListenerMetrics::new(SocketAddr::from((
                [0, 0, 0, 0],
                0,
            )))),
            check_ahead: access
                .as_ref()
                .and_then(crate::check_ahead::CheckAhead::new),
        };
        let rate = Arc::new(ConnectRate::new(config.limits.max_connection_rate_per_ip));
        let live = Arc::new(AtomicUsize::new(0));
        let next_conn = Arc::new(AtomicU64::new(1));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        let mut tasks_aux: Vec<JoinHandle<()>> = Vec::new();
        let mut tls = Vec::new();
        let busy = Arc::new(tokio::sync::Semaphore::new(BUSY_REFUSALS));
        for (index, (listener, _, max_listener)) in listeners.into_iter().enumerate() {
            let addr = listener.local_addr();
            addrs.push(addr);
            let transport = listener.settings().transport;
            tracing::info!(%addr, %transport, "listening for MQTT over {}", describe(transport));
            if let Some(t) = listener.tls() {
                tls.push(t.clone());
                // Certificates swapped on disk are picked up without a restart.
                if let Some(w) = listener.spawn_tls_watcher(Duration::from_secs(5)) {
                    tasks_aux.push(w);
                }
            }
            let accept = AcceptLoop {
                listener,
                index,
                events: events_tx.clone(),
                settings: Arc::new(ConnSettings {
                    metrics: metrics.listener(addr),
                    ..settings.clone()
                }),
                live: live.clone(),
                listener_live: Arc::new(AtomicUsize::new(0)),
                max_listener: max_listener.unwrap_or(usize::MAX),
                rate: rate.clone(),
                next_conn: next_conn.clone(),
                max_connections: config.limits.max_connections,
                shutdown: shutdown_rx.clone(),
                busy: busy.clone(),
                log_gate: LogGate::default(),
            };
            tasks.push(tokio::spawn(accept.run()));
        }
        tasks_aux.push(tokio::spawn(reload_on_sighup(
            access,
            tls,
            shutdown_rx.clone(),
        )));
        let admin =
            crate::admin::start_from_config(config, admin_tx, metrics, shutdown_rx.clone()).await?;
        Ok(Self {
            addrs,
            admin,
            shutdown,
            tasks,
            tasks_aux,
            driver,
            live,
        })
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    /// The bound addresses, in the order of `config.listen` then `[[listener]]` (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, sends DISCONNECT 0x8B to v5 clients, closes every connection and waits
    /// (a bounded time) for them to flush.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for t in self.tasks_aux {
            t.abort();
        }
        if let Some(a) = self.admin {
            a.join().await;
        }
        let _ = self.driver.await;
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self.live.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct AcceptLoop {
    listener: Listener,
    index: usize,
    events: mpsc::Sender<crate::driver::Event>,
    settings: Arc<ConnSettings>,
    live: Arc<AtomicUsize>,
    listener_live: Arc<AtomicUsize>,
    max_listener: usize,
    rate: Arc<ConnectRate>,
    next_conn: Arc<AtomicU64>,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
    /// Refusals in progress (answering CONNECT with "server busy"); bounded so a flood cannot
    /// turn refusals into unbounded work.
    busy: Arc<tokio::sync::Semaphore>,
    /// Refusal log lines: at most one a second per listener, so a flood cannot flood the log
    /// (the metrics count every refusal).
    log_gate: LogGate,
}

#[derive(Default)]
struct LogGate {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogGate {
    fn allow(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return false;
        }
        self.last = Some(now);
        true
    }

    fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            let incoming = tokio::select! {
                _ = self.shutdown.changed() => return,
                r = self.listener.accept() => r,
            };
            let incoming = match incoming {
                Ok(i) => i,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let peer = incoming.peer();
            // The listener closes connections over `max_handshakes` itself; mirror its count.
            let rejected = self.listener.stats().handshakes_rejected;
            let before = self
                .settings
                .metrics
                .handshakes_rejected
                .swap(rejected, Ordering::Relaxed);
            if rejected > before && self.log_gate.allow() {
                tracing::warn!(listener = %self.listener.local_addr(), rejected = rejected - before, suppressed = self.log_gate.take_suppressed(), "connections refused: limits.max_handshakes in progress");
            }
            if self.live.load(Ordering::Acquire) >= self.max_connections {
                self.settings
                    .metrics
                    .refused_max_connections
                    .fetch_add(1, Ordering::Relaxed);
                if self.log_gate.allow() {
                    tracing::warn!(%peer, max = self.max_connections, suppressed = self.log_gate.take_suppressed(), "connection refused: limits.max_connections reached");
                }
                refuse_busy(incoming, &self.busy);
                continue;
            }
            if self.listener_live.load(Ordering::Acquire) >= self.max_listener {
                self.settings
                    .metrics
                    .refused_listener_max_connections
                    .fetch_add(1, Ordering::Relaxed);
                if self.log_gate.allow() {
                    tracing::warn!(%peer, max = self.max_listener, suppressed = self.log_gate.take_suppressed(), "connection refused: the listener's max_connections reached");
                }
                continue;
            }
            if !self.rate.allow(peer.ip()) {
                self.settings
                    .metrics
                    .refused_connection_rate
                    .fetch_add(1, Ordering::Relaxed);
                if self.log_gate.allow() {
                    tracing::warn!(%peer, suppressed = self.log_gate.take_suppressed(), "connection refused: limits.max_connection_rate_per_ip exceeded");
                }
                continue;
            }
            let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let (live, listener_live) = (self.live.clone(), self.listener_live.clone());
            live.fetch_add(1, Ordering::AcqRel);
            listener_live.fetch_add(1, Ordering::AcqRel);
            let events = self.events.clone();
            let settings = self.settings.clone();
            let index = self.index;
            let metrics = settings.metrics.clone();
            metrics.conn_opened();
            // The handshake (PROXY header, TLS, WebSocket upgrade) runs in the connection's own
            // task, so a slow client never holds up the accept loop. A task keeps its future for
            // its whole life, sized for its largest state: the handshake (several KiB for TLS or
            // WebSocket), what it starts from and what it returns are boxed, so each is freed
            // when the handshake ends and the task holds pointers only.
            let incoming = Box::new(incoming);
            tokio::spawn(async move {
                let handshake = async move { incoming.handshake().await.map(Box::new) };
                match Box::pin(handshake).await {
                    Ok(accepted) => connection::run(conn, accepted, index, events, settings).await,
                    Err(e) => {
                        metrics.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%peer, error = %e, "handshake failed");
                    }
                }
                live.fetch_sub(1, Ordering::AcqRel);
                listener_live.fetch_sub(1, Ordering::AcqRel);
                metrics.conn_closed();
            });
        }
    }
}

fn describe(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Ws => "WebSocket",
        Transport::Wss => "secure WebSocket",
    }
}

/// Builds the password / ACL checks and SCRAM methods from the config, if any is configured.
fn install_access(
    config: &Config,
    listeners: &[(Listener, Option<bool>, Option<usize>)],
    broker: &mut Broker,
) -> anyhow::Result<Option<tern_auth::FileAccess>> {
    let per_listener: Vec<Option<bool>> = listeners
        .iter()
        .map(|(_, own, _)| own.or(config.allow_anonymous))
        .collect();
    let configured = config.password_file.is_some()
        || config.acl_file.is_some()
        || per_listener.iter().any(Option::is_some);
    if !configured {
        for (l, _, _) in listeners {
            if !l.local_addr().ip().is_loopback() {
                tracing::warn!(addr = %l.local_addr(), "listening beyond loopback with NO authentication: anyone who can reach this port can connect (set password_file)");
            }
        }
        return Ok(None);
    }
    let access = tern_auth::FileAccess::new(tern_auth::AuthConfig {
        password_file: config.password_file.clone(),
        acl_file: config.acl_file.clone(),
        allow_anonymous: per_listener,
    })?;
    for m in access.scram_methods() {
        broker.add_auth_method(m);
    }
    broker.set_access_control(Box::new(access.clone()));
    Ok(Some(access))
}

/// SIGHUP reloads the password and ACL files and the TLS certificates; connections stay up.
async fn reload_on_sighup(
    access: Option<tern_auth::FileAccess>,
    tls: Vec<Arc<tern_net::ReloadableTls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading password file, ACL file and certificates");
            if let Some(a) = access.clone() {
                match tokio::task::spawn_blocking(move || a.reload()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reload failed; the previous files stay in force")
                    }
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
            for t in &tls {
                if let Err(e) = t.reload() {
                    tracing::error!(error = %e, "certificate reload failed; the previous certificate stays in force");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (access, tls);
        let _ = shutdown.changed().await;
    }
}

/// New connections per second per source address (a token bucket per address).
struct ConnectRate {
    per_sec: u32,
    buckets:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
}

impl ConnectRate {
    /// Addresses remembered at most; beyond, the table is cleared (a flood from many addresses
    /// must not grow memory without bound).
    const MAX_TRACKED: usize = 100_000;

    fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn allow(&self, ip: std::net::IpAddr) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        let rate = f64::from(self.per_sec);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX_TRACKED {
            map.clear();
        }
        let (tokens, at) = map.entry(ip).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answers a connection over `limits.max_connections` the way the spec allows: read its CONNECT
/// (briefly) and reply CONNACK 0x89 "server busy" (MQTT 5) or 0x03 "server unavailable" (3.x),
/// then close. When too many refusals are already running, the connection is just closed.
fn refuse_busy(incoming: tern_net::Incoming, busy: &Arc<tokio::sync::Semaphore>) {
    let Ok(permit) = busy.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(BUSY_WAIT, async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let accepted = incoming.handshake().await.ok()?;
            let mut stream = accepted.stream;
            let mut buf = bytes::BytesMut::with_capacity(512);
            let connect = loop {
                match tern_codec::decode_packet(
                    &mut buf,
                    tern_codec::ProtocolVersion::V3_1_1,
                    64 * 1024,
                ) {
                    Ok(Some(tern_codec::Packet::Connect(c))) => break c,
                    Ok(None) => {}
                    _ => return None,
                }
                if stream.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            };
            let code = if connect.protocol.is_v5() {
                tern_codec::reason::SERVER_BUSY
            } else {
                tern_codec::reason::v3::SERVER_UNAVAILABLE
            };
            let ack = tern_codec::Packet::ConnAck(tern_codec::ConnAck {
                code,
                ..Default::default()
            });
            let mut out = bytes::BytesMut::new();
            tern_codec::encode_packet(&ack, connect.protocol, &mut out).ok()?;
            stream.write_all(&out).await.ok()?;
            stream.flush().await.ok()?;
            let _ = stream.shutdown().await;
            Some(())
        })
        .await;
    });
}
