//! The sans-IO MQTT broker core.
//!
//! [`Broker`] is a plain state machine: the I/O layer feeds it decoded packets and connection
//! events together with an explicit `now`, and it appends [`Action`]s (packets to send, connections
//! to close) to a caller-owned vector. It never touches sockets, clocks or threads, which keeps the
//! protocol deterministic to test and cheap to drive.
//!
//! Module map:
//! - [`config`]: limits and defaults ([`Config`]).
//! - [`access`]: the authentication / ACL hooks ([`AccessControl`]) the security layer plugs in.
//! - [`action`]: what the core asks the I/O layer to do ([`Action`]).
//! - [`message`]: an application message shared by every delivery of it ([`Message`]);
//!   `message_pool`: spare allocations of them, given back by the I/O layer ([`Broker::recycle`]).
//! - [`session`]: per-client session state: subscriptions, in-flight window, offline queue.
//! - [`queue`]: a session's queue, in memory or paged out; `pager`: the memory budget of all
//!   queues and the page format ([`PagerStats`]).
//! - `broker`: the [`Broker`] struct, its connection table and the packet dispatch.
//! - `handle_connect`, `handle_publish`, `handle_acks`, `handle_subscribe`, `handle_unsubscribe`,
//!   `handle_disconnect`: one file per packet (or packet family) received from a client.
//! - `delivery`: routing a message to matching sessions, the in-flight window and the queue;
//!   `route_cache`: the matches of the last topic routed, reused while the trie is unchanged.
//! - `shared`: shared subscriptions (`$share/{group}/{filter}`): groups, member choice, hand-over.
//! - `subscriptions`: adding/removing one subscription across trie, groups and session.
//! - `will`: will messages, including MQTT 5 will delay.
//! - `retained`: the retained store, its size and its limits.
//! - `retained_burst`: how many retained messages a SUBSCRIBE may be sent (a client repeating
//!   its SUBSCRIBEs must not make the broker queue the retained store once per packet).
//! - `throttle`: back-pressure on QoS 1/2 publishers (their acknowledgements wait while a
//!   connected subscriber's queue is long).
//! - `expiry`: the periodic [`Broker::tick`]: session expiry, delayed wills, expired retained messages.
//! - [`auth`]: the pluggable MQTT 5 enhanced authentication exchange (AUTH packets).
//! - `persist` / `restore`: the records written to the durable store, and rebuilding the state
//!   from them after a restart ([`Broker::restore`], [`Broker::snapshot`]).
//! - [`stats`]: counters for `$SYS` and metrics.
//! - [`idmap`]: hash maps keyed by the broker's own ids (a cheap hash; ids are not chosen by
//!   clients).
//! - [`inspect`]: read-only views and the admin operations (clients, sessions, subscriptions,
//!   retained messages, disconnect, publish as the broker); [`page`]: their listings a page at a
//!   time ([`PageRequest`], [`Page`]).
//! - [`sys`]: the `$SYS` tree with Mosquitto's names ([`SysTree`]).

pub mod access;
pub mod action;
pub mod auth;
mod broker;
pub mod config;
mod delivery;
mod expiry;
mod handle_acks;
mod handle_connect;
mod handle_disconnect;
mod handle_publish;
mod handle_subscribe;
mod handle_unsubscribe;
pub mod idmap;
pub mod inspect;
pub mod message;
mod message_pool;
pub mod page;
mod pager;
mod persist;
pub mod queue;
mod restore;
mod retained;
mod retained_burst;
mod route_cache;
pub mod session;
mod shared;
pub mod stats;
mod subscriptions;
pub mod sys;
mod throttle;
mod will;

pub use access::{AccessControl, AuthDecision, ClientInfo};
pub use action::{Action, CloseReason, Droppable, FANOUT_MIN, Fanout, Forward};
pub use auth::{AuthExchange, AuthStep, EnhancedAuth};
pub use broker::{Broker, ConnId, SessionId};
pub use config::{Config, SharedStrategy};
pub use message::{Message, ReadRef};
pub use page::{Page, PageRequest};
pub use pager::PagerStats;
pub use restore::{RestoreReport, Snapshot};
pub use shared::{GroupId, SubKey};
pub use stats::Stats;
pub use sys::{IoCounters, SysTree};
