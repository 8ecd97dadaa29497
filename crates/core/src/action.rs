//! What the core asks of the I/O layer.

use crate::broker::ConnId;
use tern_codec::{Packet, Publish};

/// One instruction for the I/O layer, in the order it must be carried out per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a packet; it must not be dropped.
    Send(ConnId, Packet),
    /// Send a QoS 0 PUBLISH that the I/O layer may drop (and count) when the connection's output
    /// is backed up: the slow reader loses messages, the publisher does not stall.
    SendDroppable(ConnId, Publish),
    /// Write a record to the durable store. Packets that follow it in the same batch must not
    /// be sent before the record is durable (group commit; see `persist.rs`).
    Persist(tern_store::Record),
    /// Flush what was sent before, then close the connection.
    Close(ConnId, CloseReason),
}

/// Why the core closes a connection (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// CONNECT refused (bad protocol, client id, ...).
    ConnectRefused,
    /// Protocol violation or malformed packet.
    ProtocolError,
    /// Another connection took the session over.
    TakenOver,
    /// Keep alive expired.
    KeepAliveTimeout,
    /// The broker is shutting down.
    Shutdown,
    /// The I/O layer reported the connection gone.
    ConnectionLost,
    /// An administrator disconnected the client (admin API; v5 clients get DISCONNECT 0x98).
    AdminAction,
}
