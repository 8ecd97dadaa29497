//! Watching and managing a running broker: the admin HTTP listener (`/healthz`, `/readyz`,
//! `/metrics`, the JSON API under `/api/v1/`, the dashboard), the `$SYS` tree and the
//! connection event log.
//!
//! - [`http`]: the listener ([`AdminServer`]) and the request routing.
//! - [`api`]: the commands the listener sends to the task that owns the broker.
//! - [`handler`]: [`DriverOps`], what that task runs: the commands, `$SYS`, the rate history,
//!   the connection event log.
//! - [`events`]: connect/disconnect log lines with reason codes, rate-limited.
//! - `prom`: the Prometheus text format; `json`: the API's JSON shapes.

pub mod api;
pub mod events;
pub mod handler;
pub mod http;
pub mod json;
mod prom;

pub use api::{AdminCall, ApiError, Command, CoreStats, Reply, Response};
pub use handler::DriverOps;
pub use http::{AdminServer, AdminSettings};
pub use prom::render as render_metrics;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_core::{Action, Broker};
use tokio::sync::mpsc;

/// Starts the admin listener as `config.admin` says: `Ok(None)` when it is off, or when the
/// *default* address is taken (another broker on this host: a warning, not a failure). Any
/// other problem (an address set by hand that cannot be bound, no token beyond loopback) is an
/// error.
pub async fn start_from_config(
    config: &crate::config::Config,
    calls: mpsc::Sender<AdminCall>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<AdminServer>> {
    if !config.admin.enabled {
        return Ok(None);
    }
    let settings = AdminSettings::new(config.admin.listen, config.admin.effective_token());
    match AdminServer::start(settings, calls, metrics, shutdown).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if config.admin.listen == crate::config::DEFAULT_ADMIN_LISTEN => {
            tracing::warn!(error = %e, "running without the admin listener (metrics, health, API, dashboard): set admin.listen or --admin-listen to another address");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Capacity of the admin call channel.
pub const CALL_QUEUE: usize = 64;

/// A broker core driven by hand (tests, embedding): the broker, its [`DriverOps`] and the
/// actions admin commands produced (for the caller to look at; nothing carries them out).
pub struct LocalCore {
    pub broker: Broker,
    pub ops: DriverOps,
    pub actions: Vec<Action>,
}

impl LocalCore {
    pub fn new(broker: Broker, ops: DriverOps) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            broker,
            ops,
            actions: Vec::new(),
        }))
    }

    /// One driver tick: `$SYS` and the dashboard history.
    pub fn tick(&mut self, now: Instant) {
        let Self {
            broker,
            ops,
            actions,
        } = self;
        ops.on_tick(broker, now, actions);
    }
}

/// Serves admin calls against a [`LocalCore`] on a task of its own, ticking it every `tick`
/// when given. Returns the sender to hand to [`AdminServer::start`].
pub fn spawn_local(core: Arc<Mutex<LocalCore>>, tick: Option<Duration>) -> mpsc::Sender<AdminCall> {
    let (tx, mut rx) = mpsc::channel::<AdminCall>(CALL_QUEUE);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                call = rx.recv() => {
                    let Some(call) = call else { return };
                    let mut guard = core.lock().unwrap_or_else(|e| e.into_inner());
                    let LocalCore { broker, ops, actions } = &mut *guard;
                    ops.handle(call, broker, Instant::now(), actions, &|_| None);
                }
                _ = ticker.tick(), if tick.is_some() => {
                    core.lock().unwrap_or_else(|e| e.into_inner()).tick(Instant::now());
                }
            }
        }
    });
    tx
}
