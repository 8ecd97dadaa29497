//! One segment file: its name, its header, the frame format and the control frames.
//!
//! ```text
//! header  = "TERNLOG\0" | version: u32 LE | segment number: u64 LE          (20 bytes)
//! frame   = len: u32 LE | crc32c(payload): u32 LE | payload (len bytes)
//! payload = record (codec.rs, first byte = tag 1..) | control (first byte = 0)
//! control = 0 | 1                                      snapshot begins
//!         | 0 | 2 | record count: varint               snapshot complete
//! ```
//!
//! The magic and the version field keep their place in every future format, so that any
//! build can tell a newer log from a damaged one.

use crate::codec::{self, CONTROL_TAG, FORMAT_VERSION};
use crate::crc::crc32c;
use crate::error::StoreError;
use crate::record::Record;

pub(crate) const MAGIC: [u8; 8] = *b"TERNLOG\0";
pub(crate) const HEADER_LEN: usize = 20;
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// The largest payload a frame may carry (1 GiB; an MQTT packet is at most 256 MiB). A length
/// field above it is garbage, not a record.
pub const MAX_FRAME_LEN: usize = 1 << 30;

const SNAPSHOT_BEGIN: u8 = 1;
const SNAPSHOT_END: u8 = 2;

pub(crate) fn file_name(number: u64) -> String {
    format!("seg-{number:020}.log")
}

/// The segment number of a file name `seg-{:020}.log`; `None` for any other name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn header(number: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..].copy_from_slice(&number.to_le_bytes());
    h
}

pub(crate) enum HeaderCheck {
    Ok,
    /// Written by a newer build: refuse.
    Newer(u32),
    /// Not a header we wrote (torn creation, overwritten, bit rot).
    Garbled(&'static str),
}

pub(crate) fn check_header(data: &[u8], number: u64) -> HeaderCheck {
    if data.len() < HEADER_LEN {
        return HeaderCheck::Garbled("incomplete header");
    }
    if data[..8] != MAGIC {
        return HeaderCheck::Garbled("bad magic");
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version > FORMAT_VERSION {
        return HeaderCheck::Newer(version);
    }
    if version == 0 {
        return HeaderCheck::Garbled("format version 0");
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[12..20]);
    if u64::from_le_bytes(n) != number {
        return HeaderCheck::Garbled("segment number differs from the file name");
    }
    HeaderCheck::Ok
}

/// Appends a frame whose payload `write` appends. Returns the payload length, or the length
/// that was too large (and then leaves `buf` as it was).
pub(crate) fn push_frame(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    write(buf);
    let len = buf.len() - start - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        buf.truncate(start);
        return Err(len);
    }
    let crc = crc32c(&buf[start + FRAME_HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

pub(crate) fn push_record(buf: &mut Vec<u8>, record: &Record) -> Result<usize, usize> {
    push_frame(buf, |b| codec::encode(record, b))
}

pub(crate) fn push_snapshot_begin(buf: &mut Vec<u8>) {
    // Two bytes: cannot exceed the limit.
    let _ = push_frame(buf, |b| b.extend_from_slice(&[CONTROL_TAG, SNAPSHOT_BEGIN]));
}

pub(crate) fn push_snapshot_end(buf: &mut Vec<u8>, records: u64) {
    let _ = push_frame(buf, |b| {
        b.extend_from_slice(&[CONTROL_TAG, SNAPSHOT_END]);
        codec::put_varint(b, records);
    });
}

/// What a frame's payload holds.
#[derive(Debug)]
pub(crate) enum Frame {
    Record(Record),
    SnapshotBegin,
    SnapshotEnd { records: u64 },
}

pub(crate) fn decode_frame(payload: &[u8]) -> Result<Frame, StoreError> {
    match payload {
        [CONTROL_TAG, SNAPSHOT_BEGIN] => Ok(Frame::SnapshotBegin),
        [CONTROL_TAG, SNAPSHOT_END, rest @ ..] => match codec::get_varint(rest)? {
            (records, []) => Ok(Frame::SnapshotEnd { records }),
            _ => Err(StoreError::Malformed(
                "trailing bytes after a snapshot marker",
            )),
        },
        [CONTROL_TAG, ..] => Err(StoreError::Malformed("unknown control frame")),
        _ => codec::decode(payload).map(Frame::Record),
    }
}

#[cfg(test)]
/// One step of a scan over a segment's frames.
#[derive(Debug)]
pub(crate) enum Scanned<'a> {
    /// A frame whose checksum matches; `end` is the offset just after it.
    Frame {
        offset: usize,
        end: usize,
        payload: &'a [u8],
    },
    /// A frame whose length fits in the file but whose checksum does not match.
    BadChecksum { offset: usize, end: usize },
    /// The rest of the segment from `offset` cannot be framed: an incomplete frame header, or a
    /// length of zero or beyond the end of the file. The scan ends here.
    Unframed { offset: usize, reason: &'static str },
}

#[cfg(test)]
/// Iterates the frames of a whole segment file (`data` includes the header).
pub(crate) struct Frames<'a> {
    data: &'a [u8],
    pos: usize,
}

#[cfg(test)]
impl<'a> Frames<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Frames {
            data,
            pos: HEADER_LEN.min(data.len()),
        }
    }
}

#[cfg(test)]
impl<'a> Iterator for Frames<'a> {
    type Item = Scanned<'a>;

    fn next(&mut self) -> Option<Scanned<'a>> {
        let offset = self.pos;
        let rest = &self.data[offset..];
        if rest.is_empty() {
            return None;
        }
        // Whatever happens below, a scan that stops does not come back.
        self.pos = self.data.len();
        if rest.len() < FRAME_HEADER_LEN {
            return Some(Scanned::Unframed {
                offset,
                reason: "incomplete frame header",
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 {
            return Some(Scanned::Unframed {
                offset,
                reason: "frame length is zero",
            });
        }
        if len > MAX_FRAME_LEN || len > rest.len() - FRAME_HEADER_LEN {
            return Some(Scanned::Unframed {
                offset,
                reason: "frame length goes beyond the end of the segment",
            });
        }
        let end = offset + FRAME_HEADER_LEN + len;
        self.pos = end;
        let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        if crc32c(payload) != crc {
            return Some(Scanned::BadChecksum { offset, end });
        }
        Some(Scanned::Frame {
            offset,
            end,
            payload,
        })
    }
}

/// The streaming twin of [`Frames`]: the same steps, read from a file `file_len` bytes long
/// (positioned just after the header) through a buffer, so a segment of any size is scanned
/// with bounded memory. The payload of a frame is in `payload()` until the next call.
pub(crate) struct FrameReader<R> {
    reader: R,
    pos: usize,
    file_len: usize,
    done: bool,
    payload: Vec<u8>,
}

/// One step of a [`FrameReader`]: like [`Scanned`], the payload kept by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Frame { offset: usize, end: usize },
    BadChecksum { offset: usize, end: usize },
    Unframed { offset: usize, reason: &'static str },
}

impl<R: std::io::Read> FrameReader<R> {
    /// `reader` yields the bytes from offset `start` on.
    pub(crate) fn new(reader: R, start: usize, file_len: usize) -> Self {
        Self {
            reader,
            pos: start,
            file_len,
            done: false,
            payload: Vec::new(),
        }
    }

    /// The payload of the last [`Step::Frame`] (or bad-checksum frame).
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub(crate) fn next_step(&mut self) -> std::io::Result<Option<Step>> {
        let offset = self.pos;
        if self.done || offset >= self.file_len {
            return Ok(None);
        }
        let rest = self.file_len - offset;
        // Whatever happens below, a scan that stops does not come back.
        self.done = true;
        if rest < FRAME_HEADER_LEN {
            return Ok(Some(Step::Unframed {
                offset,
                reason: "incomplete frame header",
            }));
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        self.reader.read_exact(&mut h)?;
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len == 0 {
            return Ok(Some(Step::Unframed {
                offset,
                reason: "frame length is zero",
            }));
        }
        if len > MAX_FRAME_LEN || len > rest - FRAME_HEADER_LEN {
            return Ok(Some(Step::Unframed {
                offset,
                reason: "frame length goes beyond the end of the segment",
            }));
        }
        self.payload.clear();
        self.payload.resize(len, 0);
        self.reader.read_exact(&mut self.payload)?;
        let end = offset + FRAME_HEADER_LEN + len;
        self.pos = end;
        self.done = false;
        if crc32c(&self.payload) != crc {
            return Ok(Some(Step::BadChecksum { offset, end }));
        }
        Ok(Some(Step::Frame { offset, end }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(7), "seg-00000000000000000007.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("seg-7.log"), None);
        assert_eq!(parse_file_name("seg-0000000000000000000x.log"), None);
        assert_eq!(parse_file_name("seg-00000000000000000007.log.tmp"), None);
        assert_eq!(parse_file_name("seg-99999999999999999999.log"), None);
    }

    #[test]
    fn header_checks() {
        let h = header(3);
        assert!(matches!(check_header(&h, 3), HeaderCheck::Ok));
        assert!(matches!(check_header(&h, 4), HeaderCheck::Garbled(_)));
        assert!(matches!(check_header(&h[..19], 3), HeaderCheck::Garbled(_)));
        let mut newer = h;
        newer[8] = 2;
        assert!(matches!(check_header(&newer, 3), HeaderCheck::Newer(2)));
        let mut bad = h;
        bad[0] = b'X';
        assert!(matches!(check_header(&bad, 3), HeaderCheck::Garbled(_)));
    }

    #[test]
    fn control_frames_round_trip() {
        let mut buf = header(1).to_vec();
        push_snapshot_begin(&mut buf);
        push_snapshot_end(&mut buf, 300);
        let frames: Vec<_> = Frames::new(&buf)
            .map(|s| match s {
                Scanned::Frame { payload, .. } => decode_frame(payload).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(
            frames[..],
            [Frame::SnapshotBegin, Frame::SnapshotEnd { records: 300 }]
        ));
    }

    /// The streaming reader takes exactly the steps of the slice scanner, on every prefix of a
    /// segment with good, corrupt and garbage frames.
    #[test]
    fn frame_reader_matches_frames() {
        let mut buf = header(1).to_vec();
        push_snapshot_begin(&mut buf);
        push_snapshot_end(&mut buf, 7);
        let bad = buf.len();
        push_snapshot_end(&mut buf, 8);
        buf[bad + FRAME_HEADER_LEN] ^= 1;
        push_snapshot_begin(&mut buf);
        buf.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3]);
        for cut in HEADER_LEN..=buf.len() {
            let data = &buf[..cut];
            let want: Vec<_> = Frames::new(data)
                .map(|s| match s {
                    Scanned::Frame {
                        offset,
                        end,
                        payload,
                    } => (Step::Frame { offset, end }, payload.to_vec()),
                    Scanned::BadChecksum { offset, end } => {
                        (Step::BadChecksum { offset, end }, Vec::new())
                    }
                    Scanned::Unframed { offset, reason } => {
                        (Step::Unframed { offset, reason }, Vec::new())
                    }
                })
                .collect();
            let mut r = FrameReader::new(&data[HEADER_LEN..], HEADER_LEN, data.len());
            let mut got = Vec::new();
            while let Some(step) = r.next_step().unwrap() {
                let payload = match step {
                    Step::Frame { .. } => r.payload().to_vec(),
                    _ => Vec::new(),
                };
                got.push((step, payload));
            }
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn scan_stops_at_garbage() {
        let mut buf = header(1).to_vec();
        push_snapshot_begin(&mut buf);
        buf.extend_from_slice(&[0u8; 12]);
        let scanned: Vec<_> = Frames::new(&buf).collect();
        assert!(matches!(
            scanned[..],
            [Scanned::Frame { .. }, Scanned::Unframed { offset: 30, .. }]
        ));
    }
}
