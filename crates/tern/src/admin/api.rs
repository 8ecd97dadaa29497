//! What the admin listener asks of the driver, and what it gets back.
//!
//! The HTTP side never touches the [`tern_core::Broker`]: it sends an [`AdminCall`] (a command
//! and a one-shot reply channel) to the task that owns the broker, which runs it with
//! [`super::DriverOps::handle`] between two batches of client events.

use std::collections::BTreeMap;
use tern_core::inspect::{AdminPublish, StoreUsage};
use tern_core::{PageRequest, Stats};
use tokio::sync::oneshot;

/// Default and largest number of entries one page of a listing (clients, sessions,
/// subscriptions, retained messages) holds.
pub const LIST_LIMIT_DEFAULT: usize = 1000;
pub const LIST_LIMIT_MAX: usize = 100_000;

/// One admin operation.
#[derive(Debug, Clone)]
pub enum Command {
    /// Answers at once: the driver is alive (readiness).
    Ping,
    /// Counts, rates history and `$SYS` values, for the dashboard.
    Overview,
    /// Connected clients, a page at a time.
    Clients(PageRequest),
    /// One connected client.
    Client(String),
    /// Disconnect a client (MQTT 5: DISCONNECT 0x98).
    DisconnectClient(String),
    /// Sessions, online and offline, a page at a time.
    Sessions(PageRequest),
    Session(String),
    DeleteSession(String),
    /// Subscriptions, of one client or all, a page at a time.
    Subscriptions(Option<String>, PageRequest),
    /// Retained messages matching a filter (all when `None`), a page at a time.
    Retained {
        filter: Option<String>,
        page: PageRequest,
        /// Include payloads (a topic tree needs only the topics).
        payload: bool,
    },
    /// One retained message by topic.
    RetainedGet(String),
    /// Delete the retained messages matching a filter.
    RetainedDelete(String),
    /// Publish as the broker.
    Publish(Box<AdminPublish>),
    /// The core's counters and gauges, for `/metrics`.
    Stats,
}

/// A successful answer.
#[derive(Debug)]
pub enum Reply {
    Json(serde_json::Value),
    Stats(Box<CoreStats>),
}

/// A refused or failed operation, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: 503,
            message: message.into(),
        }
    }
}

impl From<tern_core::inspect::AdminError> for ApiError {
    fn from(e: tern_core::inspect::AdminError) -> Self {
        use tern_core::inspect::AdminError;
        let status = match e {
            AdminError::NotFound(_) => 404,
            AdminError::InvalidTopic(_) => 400,
            AdminError::RetainUnavailable => 409,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

/// The answer to one call.
pub type Response = Result<Reply, ApiError>;

/// A command and where to send its answer.
#[derive(Debug)]
pub struct AdminCall {
    pub cmd: Command,
    pub reply: oneshot::Sender<Response>,
}

impl AdminCall {
    /// A call and the receiver of its answer.
    pub fn new(cmd: Command) -> (Self, oneshot::Receiver<Response>) {
        let (tx, rx) = oneshot::channel();
        (Self { cmd, reply: tx }, rx)
    }
}

/// The core's figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CoreStats {
    pub stats: Stats,
    pub clients_connected: usize,
    pub sessions_online: usize,
    pub sessions_offline: usize,
    pub subscriptions: usize,
    pub shared_subscriptions: usize,
    pub retained: usize,
    pub store: StoreUsage,
    /// Queue memory and paging to the spool.
    pub pager: tern_core::PagerStats,
    /// Connections closed, by reason (`client_disconnect`, `taken_over`, ...).
    pub disconnects: BTreeMap<&'static str, u64>,
    /// Connection events the log limiter held back.
    pub log_suppressed: u64,
}
