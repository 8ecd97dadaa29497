//! Starting and stopping the broker: listeners, accept loops, the driver, graceful shutdown.

use crate::config::Config;
use crate::connection::{self, ConnSettings};
use crate::driver::Driver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tern_core::Broker;
use tern_net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the channel from connections to the driver, in batches.
const EVENT_QUEUE: usize = 4096;
/// Bytes read from clients and not yet handled by the driver, over all connections. Bounds the
/// memory an overload can take before publishers feel TCP back-pressure.
const READ_BUDGET: usize = 1024 * 1024;
/// How long shutdown waits for connections to flush their last packets.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A running broker.
pub struct Server {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    driver: JoinHandle<()>,
    live: Arc<AtomicUsize>,
}

impl Server {
    /// Binds every listener and starts serving. Fails if a listener cannot be bound.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = TcpListener::bind(*addr)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            listeners.push(l);
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut broker = Broker::new(config.core());
        let store = if config.core().persistence {
            let started = std::time::Instant::now();
            let (recovered, handle) =
                crate::persistence::open(&config.data_dir, config.durability())?;
            let now = std::time::Instant::now();
            broker.set_wall_clock(now, crate::driver::unix_ms());
            let report = broker.restore(recovered.records, now);
            tracing::info!(
                data_dir = %config.data_dir.display(),
                durability = %config.durability(),
                sessions = report.sessions,
                queued = report.queued,
                inflight = report.inflight,
                retained = report.retained,
                pending_wills = report.pending_wills,
                log = %recovered.report,
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
        let driver = tokio::spawn(Driver::new(broker, store).run(events_rx, shutdown_rx.clone()));
        let settings = ConnSettings {
            budget: Arc::new(tokio::sync::Semaphore::new(READ_BUDGET)),
            budget_bytes: READ_BUDGET,
            connect_timeout: Duration::from_secs(config.limits.connect_timeout_secs),
            max_packet_size: config.limits.max_packet_size,
            max_outbox_packets: config.limits.max_outbox_packets,
        };
        let live = Arc::new(AtomicUsize::new(0));
        let next_conn = Arc::new(AtomicU64::new(1));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for listener in listeners {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            tracing::info!(%addr, "listening for MQTT over TCP");
            let accept = AcceptLoop {
                listener,
                events: events_tx.clone(),
                settings: settings.clone(),
                live: live.clone(),
                next_conn: next_conn.clone(),
                max_connections: config.limits.max_connections,
                shutdown: shutdown_rx.clone(),
            };
            tasks.push(tokio::spawn(accept.run()));
        }
        Ok(Self {
            addrs,
            shutdown,
            tasks,
            driver,
            live,
        })
    }

    /// The bound addresses, in the order of `config.listen` (port 0 resolved).
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
        let _ = self.driver.await;
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self.live.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct AcceptLoop {
    listener: TcpListener,
    events: mpsc::Sender<crate::driver::Event>,
    settings: ConnSettings,
    live: Arc<AtomicUsize>,
    next_conn: Arc<AtomicU64>,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.changed() => return,
                r = self.listener.accept() => r,
            };
            let accepted = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.live.load(Ordering::Acquire) >= self.max_connections {
                tracing::warn!(peer = %accepted.peer, max = self.max_connections, "connection refused: limits.max_connections reached");
                continue; // dropping the stream closes it
            }
            let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let live = self.live.clone();
            live.fetch_add(1, Ordering::AcqRel);
            let events = self.events.clone();
            let settings = self.settings.clone();
            tokio::spawn(async move {
                connection::run(conn, accepted.stream, accepted.peer, events, settings).await;
                live.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}
