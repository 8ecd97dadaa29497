//! What the core asks of the I/O layer.

use crate::broker::ConnId;
use crate::message::Message;
use std::sync::Arc;
use tern_codec::{Packet, ProtocolVersion, Publish};

/// One instruction for the I/O layer, in the order it must be carried out per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a packet; it must not be dropped. (Boxed, like the record below, so an action is
    /// a few words: the core's action vectors move millions of them per second.)
    Send(ConnId, Box<Packet>),
    /// Send a QoS 0 PUBLISH that the I/O layer may drop (and count) when the connection's output
    /// is backed up: the slow reader loses messages, the publisher does not stall.
    SendDroppable(ConnId, Droppable),
    /// Write a record to the durable store. Packets that follow it in the same batch must not
    /// be sent before the record is durable (group commit; see `persist.rs`).
    Persist(Box<tern_store::Record>),
    /// Flush what was sent before, then close the connection.
    Close(ConnId, CloseReason),
    /// Stop reading from the connection (its packets wait in the kernel, and the client's own
    /// sends block: TCP back-pressure) until [`Action::ResumeReading`]. The core asks for it
    /// when a QoS 1/2 publisher sends on without waiting for the acknowledgements it holds
    /// back (see `throttle.rs`). It need not wait for earlier packets to be sent: the I/O layer
    /// may carry it out at once, and should (every packet read meanwhile is one more held).
    /// Deadlines that depend on reading (keep alive) are paused meanwhile.
    PauseReading(ConnId),
    /// Read from the connection again.
    ResumeReading(ConnId),
}

impl Action {
    /// `Send(conn, packet)`.
    pub fn send(conn: ConnId, packet: Packet) -> Self {
        Action::Send(conn, Box::new(packet))
    }

    /// `Persist(record)`.
    pub fn persist(record: tern_store::Record) -> Self {
        Action::Persist(Box::new(record))
    }
}

// An action stays a few words (see `Action::Send`); `Forward` made it 32 bytes, from 24.
const _: () = assert!(std::mem::size_of::<Action>() <= 32);

/// A QoS 0 PUBLISH the I/O layer may drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Droppable {
    /// A message as it was published, to a subscriber that gets it unchanged (no topic alias,
    /// no subscription identifier). Every such subscriber gets the same message and flags, so
    /// the I/O layer can encode it once per protocol version ([`Forward::same`]).
    Forward(Forward),
    /// A PUBLISH made for one subscriber.
    Own(Box<Publish>),
}

/// A message forwarded unchanged, at QoS 0. It carries the message itself rather than a PUBLISH
/// made from it: building and sharing one (an `Arc<Publish>`) cost an allocation per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub msg: Arc<Message>,
    /// The RETAIN flag sent (Retain As Published keeps the message's; otherwise 0).
    pub retain: bool,
    /// Message Expiry Interval left when it was routed, in seconds (sent to MQTT 5 clients).
    pub expiry: Option<u32>,
}

impl Forward {
    /// The PUBLISH for a connection of `version`.
    pub fn publish(&self, version: ProtocolVersion) -> Publish {
        crate::delivery::forwarded(&self.msg, self.retain, self.expiry, version)
    }

    /// Whether `other` encodes to the same bytes (for the same protocol version).
    pub fn same(&self, other: &Forward) -> bool {
        Arc::ptr_eq(&self.msg, &other.msg)
            && self.retain == other.retain
            && self.expiry == other.expiry
    }
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
