//! What the core asks of the I/O layer.

use crate::broker::ConnId;
use crate::message::Message;
use bytes::BytesMut;
use std::sync::Arc;
use tern_codec::{EncodeError, Packet, ProtocolVersion, Publish};

/// One instruction for the I/O layer, in the order it must be carried out per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a packet; it must not be dropped. (Boxed, like the record below, so an action is
    /// a few words: the core's action vectors move millions of them per second.)
    Send(ConnId, Box<Packet>),
    /// Send a QoS 0 PUBLISH that the I/O layer may drop (and count) when the connection's output
    /// is backed up: the slow reader loses messages, the publisher does not stall.
    SendDroppable(ConnId, Droppable),
    /// [`Action::SendDroppable`] of one forwarded message to each of several connections (more
    /// than [`FANOUT_MIN`] - 1): a message fanned out to many subscribers is one action holding
    /// the message once, instead of one action and one reference count per subscriber. Each
    /// connection appears once; the order among them does not matter.
    Fanout(Box<Fanout>),
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

/// The fewest deliveries of one message the core hands over as an [`Action::Fanout`]; fewer go
/// as one [`Action::SendDroppable`] each. (The I/O layer sends a turn of up to four deliveries
/// early, one action at a time; a fan-out is more than that.)
pub const FANOUT_MIN: usize = 5;

/// One forwarded QoS 0 message for several connections ([`Action::Fanout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    pub forward: Forward,
    pub conns: Vec<ConnId>,
}

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

    /// Appends the PUBLISH for a connection of `version` to `out`: the bytes of
    /// [`Forward::publish`] encoded, without building that PUBLISH when it carries no
    /// properties (any MQTT 3.x delivery; an MQTT 5 one of a message without properties or
    /// expiry), which is what most deliveries are.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if version.is_v5() && (self.expiry.is_some() || !self.msg.properties.is_empty()) {
            return tern_codec::encode_publish(&self.publish(version), version, out);
        }
        tern_codec::encode_plain_publish(
            &self.msg.topic,
            &self.msg.payload,
            self.retain,
            version,
            out,
        )
    }

    /// Whether `other` encodes to the same bytes (for the same protocol version).
    pub fn same(&self, other: &Forward) -> bool {
        self.is(&other.msg, other.retain, other.expiry)
    }

    /// [`Forward::same`] against the parts of a forward not built.
    pub fn is(&self, msg: &Arc<Message>, retain: bool, expiry: Option<u32>) -> bool {
        Arc::ptr_eq(&self.msg, msg) && self.retain == retain && self.expiry == expiry
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_codec::{ByteStr, Properties, QoS};

    fn message(properties: Properties, retain: bool) -> Arc<Message> {
        Arc::new(Message {
            id: 1,
            topic: ByteStr::from("a/b"),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::AtLeastOnce,
            retain,
            properties,
            expires_at: None,
            origin: None,
            read: Default::default(),
            own_bytes: true,
        })
    }

    /// `Forward::encode` writes exactly the PUBLISH `Forward::publish` makes, encoded: with and
    /// without properties, expiry and retain, for each protocol version.
    #[test]
    fn encode_writes_the_forwarded_publish() {
        let mut with_props = Properties::default();
        with_props.content_type = Some("text/plain".into());
        with_props.subscription_identifiers = vec![7];
        let mut ids_only = Properties::default();
        ids_only.subscription_identifiers = vec![7];
        for properties in [Properties::default(), with_props, ids_only] {
            for retain in [false, true] {
                for expiry in [None, Some(30)] {
                    let f = Forward {
                        msg: message(properties.clone(), true),
                        retain,
                        expiry,
                    };
                    for v in [
                        ProtocolVersion::V3_1,
                        ProtocolVersion::V3_1_1,
                        ProtocolVersion::V5,
                    ] {
                        let mut want = BytesMut::new();
                        tern_codec::encode_publish(&f.publish(v), v, &mut want).unwrap();
                        let mut got = BytesMut::from(&b"xy"[..]);
                        f.encode(v, &mut got).unwrap();
                        assert_eq!(&got[..2], b"xy");
                        assert_eq!(&got[2..], &want[..], "{v:?} {retain} {expiry:?}");
                    }
                }
            }
        }
    }
}
