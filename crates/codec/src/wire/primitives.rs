//! The data representations of MQTT 5.0 section 1.5 (shared by 3.1 and 3.1.1): two- and four-byte
//! integers, variable byte integers, UTF-8 strings and binary data.
//!
//! Reading goes through [`Reader`], which slices a shared [`Bytes`] so strings and payloads are
//! zero-copy and every read is bounds-checked (truncation is a malformed packet, never a panic).
//! Writing goes through [`Sink`], implemented both by `BytesMut` and by a byte [`Counter`], so each
//! packet's encoder is written once and serves `encoded_len` and `encode_packet` alike: the two
//! cannot disagree.

use crate::error::{DecodeError, EncodeError};
use crate::types::ByteStr;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest value of a variable byte integer (MQTT 5.0 section 1.5.5).
pub(crate) const MAX_VAR_INT: usize = 268_435_455;

/// The longest string or binary field: its length prefix is a two-byte integer.
const MAX_FIELD: usize = u16::MAX as usize;

/// Reads a variable byte integer from the front of a possibly incomplete slice.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((value, len)))` gives the value and the number
/// of bytes it took.
pub(crate) fn read_var_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().take(4).enumerate() {
        // At most 7 * 3 + 7 = 28 bits: cannot overflow a u32.
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // [MQTT-1.5.5-1] the minimal number of bytes: a last byte of 0 after the first means a
            // shorter encoding of the same value existed (e.g. 0x80 0x00 for 0).
            if i > 0 && b == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not minimally encoded",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

/// Bytes a variable byte integer of value `v` takes (`v` <= [`MAX_VAR_INT`]).
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Validates an MQTT UTF-8 string: well-formed UTF-8 [MQTT-1.5.4-1] without U+0000
/// [MQTT-1.5.4-2]. Other control and non-characters are allowed by the spec (the receiver may
/// choose to refuse them, which the broker can do on top of this).
pub(crate) fn to_byte_str(bytes: Bytes) -> Result<ByteStr, DecodeError> {
    let bytes = match ByteStr::try_ascii_without_nul(bytes) {
        Ok(s) => return Ok(s),
        Err(bytes) => bytes,
    };
    // In UTF-8 the byte 0x00 only ever encodes U+0000.
    if bytes.contains(&0) {
        return Err(DecodeError::InvalidString("string contains U+0000"));
    }
    ByteStr::from_utf8(bytes).ok_or(DecodeError::InvalidString("string is not valid UTF-8"))
}

const TRUNCATED: DecodeError = DecodeError::Malformed("packet shorter than its fields");

/// A bounds-checked reader over the body of one packet.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u32())
    }

    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        let (value, len) = read_var_int(&self.buf)?.ok_or(TRUNCATED)?;
        self.buf.advance(len);
        Ok(value)
    }

    /// The next `n` bytes, shared with the packet buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length and that many bytes (MQTT 5.0 section 1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string (MQTT 5.0 section 1.5.4).
    pub(crate) fn string(&mut self) -> Result<ByteStr, DecodeError> {
        let bytes = self.binary()?;
        to_byte_str(bytes)
    }

    /// Everything not read yet (a PUBLISH payload, SUBACK reason codes).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Ends the packet: bytes left over after a complete body make it malformed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes after the packet body",
            ))
        }
    }
}

/// Where an encoder writes: a buffer, or a [`Counter`] that only measures.
pub(crate) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, v: &[u8]);
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, v: &[u8]) {
        BufMut::put_slice(self, v);
    }
}

/// A [`Sink`] that counts the bytes it is given.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_slice(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
}

/// The number of bytes `f` writes.
pub(crate) fn measure(
    f: impl FnOnce(&mut Counter) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let mut c = Counter::default();
    f(&mut c)?;
    Ok(c.0)
}

/// Writes a variable byte integer; values above [`MAX_VAR_INT`] cannot be expressed.
pub(crate) fn put_var_int(s: &mut impl Sink, v: usize) -> Result<(), EncodeError> {
    if v > MAX_VAR_INT {
        return Err(EncodeError::TooLarge);
    }
    let mut v = v;
    loop {
        // The mask keeps the value below 128, so the cast cannot truncate.
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        s.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Writes binary data (two-byte length prefix).
pub(crate) fn put_binary(s: &mut impl Sink, v: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::FieldTooLong)?;
    debug_assert!(v.len() <= MAX_FIELD);
    s.put_u16(len);
    s.put_slice(v);
    Ok(())
}

/// Writes a UTF-8 string. Rust strings are valid UTF-8 already; U+0000 is not checked here (the
/// decoder refuses it), since that would scan every topic of every outgoing message.
pub(crate) fn put_string(s: &mut impl Sink, v: &str) -> Result<(), EncodeError> {
    put_binary(s, v.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_var(v: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_var_int(&mut b, v).unwrap();
        b.to_vec()
    }

    #[test]
    fn var_int_boundaries_round_trip() {
        // The boundary values of MQTT 5.0 section 1.5.5's table.
        for (v, bytes) in [
            (0, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xFF, 0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (268_435_455, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            assert_eq!(enc_var(v), bytes, "{v}");
            assert_eq!(var_int_len(v), bytes.len());
            assert_eq!(read_var_int(&bytes).unwrap(), Some((v as u32, bytes.len())));
        }
    }

    #[test]
    fn var_int_too_large_to_encode() {
        assert_eq!(
            put_var_int(&mut Counter::default(), MAX_VAR_INT + 1),
            Err(EncodeError::TooLarge)
        );
    }

    #[test]
    fn var_int_incomplete() {
        assert_eq!(read_var_int(&[]).unwrap(), None);
        assert_eq!(read_var_int(&[0x80]).unwrap(), None);
        assert_eq!(read_var_int(&[0xFF, 0xFF, 0xFF]).unwrap(), None);
    }

    #[test]
    fn var_int_five_bytes_is_malformed() {
        assert!(matches!(
            read_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read_var_int(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn var_int_non_minimal_is_malformed() {
        // [MQTT-1.5.5-1]
        for bytes in [
            &[0x80, 0x00][..],
            &[0xFF, 0x80, 0x00],
            &[0x80, 0x80, 0x80, 0x00],
        ] {
            assert!(
                matches!(read_var_int(bytes), Err(DecodeError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn strings() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03abc\x00\x00"));
        assert_eq!(r.string().unwrap(), "abc");
        assert_eq!(r.string().unwrap(), "");
        assert!(r.is_empty());
    }

    #[test]
    fn strings_are_checked_whole_at_every_byte_and_position() {
        // [MQTT-1.5.4-1], [MQTT-1.5.4-2]: the ASCII fast path and the full check agree for
        // every byte value at every position in and after the eight-byte words.
        for len in 1..20usize {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut body = vec![0, len as u8];
                    body.extend(std::iter::repeat_n(b'a', len));
                    body[2 + at] = byte;
                    let got = Reader::new(Bytes::from(body.clone())).string();
                    let text = std::str::from_utf8(&body[2..]);
                    match text {
                        Ok(t) if byte != 0 => assert_eq!(got.unwrap(), t),
                        _ => assert!(
                            matches!(got, Err(DecodeError::InvalidString(_))),
                            "{len} {at} {byte:#x}"
                        ),
                    }
                }
            }
        }
        let mut r = Reader::new(Bytes::from_static(b"\x00\x04a/\xC3\xA9"));
        assert_eq!(r.string().unwrap(), "a/é");
    }

    #[test]
    fn string_with_nul_is_invalid() {
        // [MQTT-1.5.4-2]
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03a\x00c"));
        assert!(matches!(r.string(), Err(DecodeError::InvalidString(_))));
    }

    #[test]
    fn string_with_bad_utf8_is_invalid() {
        // [MQTT-1.5.4-1]: ill-formed UTF-8, including an encoded surrogate (U+D800).
        for bytes in [
            &b"\x00\x01\xFF"[..],
            b"\x00\x03\xED\xA0\x80",
            b"\x00\x01\xC3",
        ] {
            let mut r = Reader::new(Bytes::from_static(bytes));
            assert!(
                matches!(r.string(), Err(DecodeError::InvalidString(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn truncated_fields_are_malformed() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x05ab"));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(b"\x01"));
        assert!(matches!(r.u16(), Err(DecodeError::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(b"\x01\x02\x03"));
        assert!(matches!(r.u32(), Err(DecodeError::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(b"\x80"));
        assert!(matches!(r.var_int(), Err(DecodeError::Malformed(_))));
        let mut r = Reader::new(Bytes::new());
        assert!(matches!(r.u8(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn field_too_long() {
        let long = vec![b'a'; 65_536];
        assert_eq!(
            put_binary(&mut Counter::default(), &long),
            Err(EncodeError::FieldTooLong)
        );
        assert_eq!(measure(|c| put_binary(c, &long[..65_535])), Ok(65_537));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut r = Reader::new(Bytes::from_static(b"\x01\x02"));
        r.u8().unwrap();
        assert!(matches!(r.finish(), Err(DecodeError::Malformed(_))));
    }
}
