//! The binary encoding of a [`Record`]: the payload of one log frame.
//!
//! Layout: one tag byte naming the variant, then its fields in declaration order:
//! - `u8` and `bool`: one byte (a `bool` must be 0 or 1);
//! - `u16` (packet ids): two bytes little-endian;
//! - `u32`, `u64` (ids, sequence numbers, times, intervals): unsigned LEB128 varints, since most
//!   are small (a sequence number is one to three bytes, a time in milliseconds six);
//! - `String` and `Bytes`: a varint length, then the bytes (strings must be UTF-8);
//! - `Option<T>`: a presence byte (0 or 1), then `T` if present;
//! - `Vec<u32>`: a varint count, then the varints.
//!
//! Tags are stable: a variant keeps its tag forever, a new variant gets a new tag, and a change
//! of an existing layout bumps [`FORMAT_VERSION`] (written in every segment header). Tag 0 is
//! reserved for the log's own control frames (snapshot markers).
//!
//! Decoding is strict (no trailing bytes, no out-of-range values) and never panics or allocates
//! more than the input's length, whatever the input.

use bytes::Bytes;

use crate::error::StoreError;
use crate::record::{Record, StoredMessage};

/// Version of the on-disk format (segment header, framing and record layouts).
pub const FORMAT_VERSION: u32 = 1;

/// The tag byte reserved for control frames of the log (never a record).
pub(crate) const CONTROL_TAG: u8 = 0;

mod tag {
    pub const SESSION: u8 = 1;
    pub const SESSION_DELETED: u8 = 2;
    pub const SUBSCRIBED: u8 = 3;
    pub const UNSUBSCRIBED: u8 = 4;
    pub const MESSAGE: u8 = 5;
    pub const MESSAGE_DELETED: u8 = 6;
    pub const ENQUEUED: u8 = 7;
    pub const SENT: u8 = 8;
    pub const RELEASED: u8 = 9;
    pub const COMPLETED: u8 = 10;
    pub const INBOUND_QOS2: u8 = 11;
    pub const INBOUND_QOS2_RELEASED: u8 = 12;
    pub const RETAINED: u8 = 13;
    pub const RETAINED_DELETED: u8 = 14;
    pub const PENDING_WILL: u8 = 15;
    pub const PENDING_WILL_DONE: u8 = 16;
    pub const SESSION_OWNER: u8 = 17;
}

/// Appends the encoding of `record` to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match record {
        Record::Session {
            client_id,
            version,
            expiry_interval,
            disconnected_at_ms,
        } => {
            w.u8(tag::SESSION);
            w.str(client_id);
            w.u8(*version);
            w.varint(u64::from(*expiry_interval));
            w.opt_varint(*disconnected_at_ms);
        }
        Record::SessionDeleted { client_id } => {
            w.u8(tag::SESSION_DELETED);
            w.str(client_id);
        }
        Record::Subscribed {
            client_id,
            filter,
            options,
            subscription_id,
        } => {
            w.u8(tag::SUBSCRIBED);
            w.str(client_id);
            w.str(filter);
            w.u8(*options);
            w.opt_varint(subscription_id.map(u64::from));
        }
        Record::Unsubscribed { client_id, filter } => {
            w.u8(tag::UNSUBSCRIBED);
            w.str(client_id);
            w.str(filter);
        }
        Record::Message(m) => {
            w.u8(tag::MESSAGE);
            w.message(m);
        }
        Record::MessageDeleted { id } => {
            w.u8(tag::MESSAGE_DELETED);
            w.varint(*id);
        }
        Record::Enqueued {
            client_id,
            seq,
            message_id,
            qos,
            retain,
            subscription_ids,
        } => {
            w.u8(tag::ENQUEUED);
            w.str(client_id);
            w.varint(*seq);
            w.varint(*message_id);
            w.u8(*qos);
            w.bool(*retain);
            w.varint(subscription_ids.len() as u64);
            for id in subscription_ids {
                w.varint(u64::from(*id));
            }
        }
        Record::Sent {
            client_id,
            seq,
            packet_id,
        } => {
            w.u8(tag::SENT);
            w.str(client_id);
            w.varint(*seq);
            w.u16(*packet_id);
        }
        Record::Released { client_id, seq } => {
            w.u8(tag::RELEASED);
            w.str(client_id);
            w.varint(*seq);
        }
        Record::Completed { client_id, seq } => {
            w.u8(tag::COMPLETED);
            w.str(client_id);
            w.varint(*seq);
        }
        Record::InboundQos2 {
            client_id,
            packet_id,
        } => {
            w.u8(tag::INBOUND_QOS2);
            w.str(client_id);
            w.u16(*packet_id);
        }
        Record::InboundQos2Released {
            client_id,
            packet_id,
        } => {
            w.u8(tag::INBOUND_QOS2_RELEASED);
            w.str(client_id);
            w.u16(*packet_id);
        }
        Record::Retained(m) => {
            w.u8(tag::RETAINED);
            w.message(m);
        }
        Record::RetainedDeleted { topic } => {
            w.u8(tag::RETAINED_DELETED);
            w.str(topic);
        }
        Record::PendingWill {
            client_id,
            due_at_ms,
            message,
        } => {
            w.u8(tag::PENDING_WILL);
            w.str(client_id);
            w.varint(*due_at_ms);
            w.message(message);
        }
        Record::PendingWillDone { client_id } => {
            w.u8(tag::PENDING_WILL_DONE);
            w.str(client_id);
        }
        Record::SessionOwner {
            client_id,
            username,
        } => {
            w.u8(tag::SESSION_OWNER);
            w.str(client_id);
            w.str(username);
        }
    }
}

/// Decodes one record that fills all of `input`.
pub fn decode(input: &[u8]) -> Result<Record, StoreError> {
    let mut r = Reader(input);
    let record = match r.u8()? {
        tag::SESSION => Record::Session {
            client_id: r.string()?,
            version: r.u8()?,
            expiry_interval: r.varint_u32()?,
            disconnected_at_ms: r.opt(Reader::varint)?,
        },
        tag::SESSION_DELETED => Record::SessionDeleted {
            client_id: r.string()?,
        },
        tag::SUBSCRIBED => Record::Subscribed {
            client_id: r.string()?,
            filter: r.string()?,
            options: r.u8()?,
            subscription_id: r.opt(Reader::varint_u32)?,
        },
        tag::UNSUBSCRIBED => Record::Unsubscribed {
            client_id: r.string()?,
            filter: r.string()?,
        },
        tag::MESSAGE => Record::Message(r.message()?),
        tag::MESSAGE_DELETED => Record::MessageDeleted { id: r.varint()? },
        tag::ENQUEUED => Record::Enqueued {
            client_id: r.string()?,
            seq: r.varint()?,
            message_id: r.varint()?,
            qos: r.u8()?,
            retain: r.bool()?,
            subscription_ids: r.u32_list()?,
        },
        tag::SENT => Record::Sent {
            client_id: r.string()?,
            seq: r.varint()?,
            packet_id: r.u16()?,
        },
        tag::RELEASED => Record::Released {
            client_id: r.string()?,
            seq: r.varint()?,
        },
        tag::COMPLETED => Record::Completed {
            client_id: r.string()?,
            seq: r.varint()?,
        },
        tag::INBOUND_QOS2 => Record::InboundQos2 {
            client_id: r.string()?,
            packet_id: r.u16()?,
        },
        tag::INBOUND_QOS2_RELEASED => Record::InboundQos2Released {
            client_id: r.string()?,
            packet_id: r.u16()?,
        },
        tag::RETAINED => Record::Retained(r.message()?),
        tag::RETAINED_DELETED => Record::RetainedDeleted { topic: r.string()? },
        tag::PENDING_WILL => Record::PendingWill {
            client_id: r.string()?,
            due_at_ms: r.varint()?,
            message: r.message()?,
        },
        tag::PENDING_WILL_DONE => Record::PendingWillDone {
            client_id: r.string()?,
        },
        tag::SESSION_OWNER => Record::SessionOwner {
            client_id: r.string()?,
            username: r.string()?,
        },
        CONTROL_TAG => {
            return Err(StoreError::Malformed(
                "control frame where a record was expected",
            ));
        }
        _ => return Err(StoreError::Malformed("unknown record tag")),
    };
    if !r.0.is_empty() {
        return Err(StoreError::Malformed("trailing bytes after the record"));
    }
    Ok(record)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn opt_varint(&mut self, v: Option<u64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.varint(v);
            }
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn message(&mut self, m: &StoredMessage) {
        self.varint(m.id);
        self.str(&m.topic);
        self.bytes(&m.payload);
        self.u8(m.qos);
        self.bool(m.retain);
        self.bytes(&m.properties);
        self.opt_varint(m.expires_at_ms);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if n > self.0.len() {
            return Err(StoreError::Malformed("record ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StoreError::Malformed("boolean byte is neither 0 nor 1")),
        }
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7F);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && bits > 1 {
                return Err(StoreError::Malformed("varint overflows u64"));
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                // One encoding per value: no superfluous zero groups at the end.
                if b == 0 && i > 0 {
                    return Err(StoreError::Malformed("varint is not in its shortest form"));
                }
                return Ok(value);
            }
        }
        Err(StoreError::Malformed("varint longer than 10 bytes"))
    }

    fn varint_u32(&mut self) -> Result<u32, StoreError> {
        u32::try_from(self.varint()?).map_err(|_| StoreError::Malformed("varint overflows u32"))
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let n = self.varint()?;
        // Checked against what is left before anything is allocated.
        match usize::try_from(n) {
            Ok(n) if n <= self.0.len() => Ok(n),
            _ => Err(StoreError::Malformed("length beyond the end of the record")),
        }
    }

    fn byte_slice(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let b = self.byte_slice()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| StoreError::Malformed("string is not UTF-8"))
    }

    fn bytes(&mut self) -> Result<Bytes, StoreError> {
        // A copy: a slice of the segment buffer would keep the whole segment alive.
        Ok(Bytes::copy_from_slice(self.byte_slice()?))
    }

    fn opt<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(StoreError::Malformed("presence byte is neither 0 nor 1")),
        }
    }

    fn u32_list(&mut self) -> Result<Vec<u32>, StoreError> {
        // Each element takes at least one byte, which bounds the allocation by the input.
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.varint_u32()?);
        }
        Ok(v)
    }

    fn message(&mut self) -> Result<StoredMessage, StoreError> {
        Ok(StoredMessage {
            id: self.varint()?,
            topic: self.string()?,
            payload: self.bytes()?,
            qos: self.u8()?,
            retain: self.bool()?,
            properties: self.bytes()?,
            expires_at_ms: self.opt(Reader::varint)?,
        })
    }
}

/// The record encoding's varint (LEB128, shortest form), for the log's control frames and the
/// broker's queue pages, which share the primitive encodings.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    Writer(out).varint(v);
}

/// Reads a varint written by [`put_varint`]; returns it and the rest of the input.
pub fn get_varint(input: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let mut r = Reader(input);
    let v = r.varint()?;
    Ok((v, r.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= 10);
            assert_eq!(get_varint(&out).unwrap(), (v, &[][..]));
        }
        // 11 continuation bytes, and a tenth byte with more than one bit.
        assert!(get_varint(&[0x80; 11]).is_err());
        let mut over = vec![0xFF; 9];
        over.push(0x02);
        assert!(get_varint(&over).is_err());
        assert!(get_varint(&[0x80, 0x00]).is_err());
    }

    #[test]
    fn small_records_are_small() {
        let mut out = Vec::new();
        encode(
            &Record::Completed {
                client_id: "c1".into(),
                seq: 5,
            },
            &mut out,
        );
        assert_eq!(out, [tag::COMPLETED, 2, b'c', b'1', 5]);
    }

    #[test]
    fn rejects_tag_zero_unknown_tags_and_trailing_bytes() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[CONTROL_TAG, 1]).is_err());
        assert!(decode(&[200]).is_err());
        assert!(decode(&[tag::MESSAGE_DELETED, 1, 0]).is_err());
        assert!(matches!(
            decode(&[tag::MESSAGE_DELETED, 1]),
            Ok(Record::MessageDeleted { id: 1 })
        ));
    }
}
