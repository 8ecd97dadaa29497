//! Paging queues out of memory: the broker keeps the deliveries of all queues within a memory
//! budget (`Config::queue_memory`); beyond it, queues are written to the spool
//! ([`tern_store::Spool`]) a page at a time, offline sessions first, and read back when their
//! session gets to them. Persistent sessions' deliveries are in the durable log as well: the
//! spool is only a place to keep them out of memory, rebuilt at every start.
//!
//! A page is a run of deliveries in this encoding (varints are LEB128):
//! ```text
//! entry = flags: u8 | seq | qos: u8 | [group] | sub id count | sub ids | message
//! message = body (flag INLINE) | index of a body earlier in the page
//! body = id | [origin] | [expiry: zigzag micros from the pager's base instant] | len | v5 PUBLISH
//! ```
//! The body is the message as a v5 PUBLISH (topic, payload, properties, QoS, retain), so its
//! encoding is the codec's, already fuzzed and property-tested.

use crate::broker::SessionId;
use crate::message::Message;
use crate::queue::Page;
use crate::session::Delivery;
use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tern_codec::{Packet, ProtocolVersion, Publish, QoS};
use tern_store::Spool;

/// Most deliveries in one page.
const PAGE_DELIVERIES: usize = 512;
/// A page is closed when its encoding passes this size.
const PAGE_BYTES: usize = 256 * 1024;

const INLINE: u8 = 1;
const RETAIN: u8 = 2;
const SHARED: u8 = 4;
const ORIGIN: u8 = 8;
const EXPIRES: u8 = 16;

/// The memory held by all queues: each queue adds and removes its own share, including when
/// it is dropped with its session.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemCounter(Arc<AtomicUsize>);

impl MemCounter {
    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What paging did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagerStats {
    /// Estimated bytes of queued deliveries in memory (all sessions).
    pub memory: usize,
    /// The budget.
    pub budget: usize,
    pub pages_written: u64,
    pub pages_read: u64,
    pub deliveries_paged_out: u64,
    pub deliveries_paged_in: u64,
    /// Pages the spool could not write (their deliveries stayed in memory).
    pub write_errors: u64,
    /// Pages that could not be read back, and the deliveries in them.
    pub pages_lost: u64,
    pub deliveries_lost: u64,
    /// Spool bytes on disk, and the part of them that is live.
    pub spool_bytes: u64,
    pub spool_live_bytes: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Pager {
    spool: Option<Spool>,
    /// Expiry instants are written relative to this one (an `Instant` has no other encoding).
    base: Option<Instant>,
    pub(crate) counter: MemCounter,
    pub(crate) budget: usize,
    /// Sessions whose queue holds deliveries in memory, to page out from when over budget.
    pub(crate) candidates: VecDeque<SessionId>,
    stats: PagerStats,
}

impl Pager {
    pub(crate) fn set_spool(&mut self, spool: Spool) {
        self.spool = Some(spool);
    }

    /// True when there is a spool to page out to.
    pub(crate) fn enabled(&self) -> bool {
        self.spool.is_some()
    }

    pub(crate) fn over_budget(&self) -> bool {
        self.spool.is_some() && self.counter.get() > self.budget
    }

    /// What paging should bring memory down to: half the budget, so it runs in batches and
    /// a queue that grows slowly gets a few deliveries in memory before its last page is
    /// rewritten with them (less rewriting for many small queues).
    pub(crate) fn target(&self) -> usize {
        self.budget / 2
    }

    pub(crate) fn stats(&self) -> PagerStats {
        let spool = self.spool.as_ref().map(Spool::stats).unwrap_or_default();
        PagerStats {
            memory: self.counter.get(),
            budget: self.budget,
            spool_bytes: spool.file_bytes,
            spool_live_bytes: spool.live_bytes,
            ..self.stats
        }
    }

    /// Splits deliveries into runs that make one page each.
    fn split<'a>(&self, ds: &'a [Delivery]) -> Vec<&'a [Delivery]> {
        let mut runs = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, d) in ds.iter().enumerate() {
            let size = d.msg.size() + 32;
            if i > start && (i - start >= PAGE_DELIVERIES || bytes + size > PAGE_BYTES) {
                runs.push(&ds[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < ds.len() {
            runs.push(&ds[start..]);
        }
        runs
    }

    /// Writes `ds` as pages; `None` (nothing kept) when the spool is missing or fails.
    pub(crate) fn write_all(&mut self, ds: &[Delivery]) -> Option<Vec<Page>> {
        self.spool.as_ref()?;
        let mut pages = Vec::new();
        for run in self.split(ds) {
            pages.push(self.write(run)?);
        }
        Some(pages)
    }

    fn write(&mut self, ds: &[Delivery]) -> Option<Page> {
        let data = match encode_page(ds, &mut self.base) {
            Ok(data) => data,
            Err(e) => {
                self.stats.write_errors += 1;
                tracing::warn!(error = e, "cannot encode a queue page; it stays in memory");
                return None;
            }
        };
        let spool = self.spool.as_mut()?;
        match spool.write(&data) {
            Ok(page) => {
                self.stats.pages_written += 1;
                self.stats.deliveries_paged_out += ds.len() as u64;
                Some(Page {
                    page,
                    count: ds.len(),
                    bytes: ds.iter().map(|d| d.msg.size()).sum(),
                    payload: ds.iter().map(|d| d.msg.payload.len()).sum(),
                    shared: ds.iter().any(|d| d.shared.is_some()),
                })
            }
            Err(e) => {
                self.stats.write_errors += 1;
                if self.stats.write_errors.is_power_of_two() {
                    tracing::warn!(error = %e, errors = self.stats.write_errors,
                        "cannot write to the queue spool; queues stay in memory");
                }
                None
            }
        }
    }

    /// Reads a page back; `None` (counted and logged) when it cannot be read.
    pub(crate) fn read(&mut self, page: &Page) -> Option<Vec<Delivery>> {
        let result = match self.spool.as_mut() {
            Some(spool) => spool.read(&page.page).map_err(|e| e.to_string()),
            None => page.page.read().map_err(|e| e.to_string()),
        };
        match result.and_then(|data| decode_page(&data, self.base).map_err(str::to_owned)) {
            Ok(ds) => {
                self.stats.pages_read += 1;
                self.stats.deliveries_paged_in += ds.len() as u64;
                Some(ds)
            }
            Err(e) => {
                self.stats.pages_lost += 1;
                self.stats.deliveries_lost += page.count as u64;
                tracing::error!(
                    error = e,
                    deliveries = page.count,
                    "a queue page cannot be read back from the spool; its messages are lost"
                );
                None
            }
        }
    }

    /// True when a page is small enough that the next page-out should rewrite it together
    /// with the new deliveries rather than add another page.
    pub(crate) fn worth_merging(&self, page: &Page) -> bool {
        page.count < PAGE_DELIVERIES / 4 && page.page.len() < PAGE_BYTES / 4
    }

    /// True when the spool holds more dead bytes than it is worth keeping.
    pub(crate) fn wasteful(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| {
            let st = s.stats();
            s.wasted_bytes() > (64 << 20).max(st.live_bytes)
        })
    }

    /// Moves a page out of a mostly-dead spool segment, so the segment can be removed.
    pub(crate) fn relocate(&mut self, page: &mut Page) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if page.page.segment_live_ratio() >= 0.5 || page.page.in_segment_of(spool) {
            return;
        }
        if let Ok(moved) = spool.rewrite(&page.page) {
            page.page = moved;
        }
    }

    /// What the store thread needs to expand pages into records for a snapshot.
    pub(crate) fn decoder(&self) -> PageDecoder {
        PageDecoder { base: self.base }
    }
}

/// Decodes pages away from the broker (for a snapshot written by the store thread).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageDecoder {
    base: Option<Instant>,
}

impl PageDecoder {
    pub(crate) fn decode(&self, page: &Page) -> Result<Vec<Delivery>, String> {
        let data = page.page.read().map_err(|e| e.to_string())?;
        decode_page(&data, self.base).map_err(str::to_owned)
    }
}

use tern_store::codec::put_varint;

/// [`tern_store::codec::get_varint`], advancing `input`.
fn get_varint(input: &mut &[u8]) -> Result<u64, &'static str> {
    let (v, rest) = tern_store::codec::get_varint(input).map_err(|_| "bad varint")?;
    *input = rest;
    Ok(v)
}

fn get_u8(input: &mut &[u8]) -> Result<u8, &'static str> {
    let (&b, rest) = input.split_first().ok_or("truncated page")?;
    *input = rest;
    Ok(b)
}

fn encode_page(ds: &[Delivery], base: &mut Option<Instant>) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(ds.iter().map(|d| d.msg.payload.len() + 64).sum());
    // Message id -> index of its body in this page.
    let mut bodies: HashMap<u64, u64> = HashMap::new();
    let mut buf = BytesMut::new();
    for d in ds {
        let m = &d.msg;
        let known = bodies.get(&m.id).copied();
        let mut flags = 0;
        if known.is_none() {
            flags |= INLINE;
        }
        if d.retain {
            flags |= RETAIN;
        }
        if d.shared.is_some() {
            flags |= SHARED;
        }
        if m.origin.is_some() {
            flags |= ORIGIN;
        }
        if m.expires_at.is_some() {
            flags |= EXPIRES;
        }
        out.push(flags);
        put_varint(&mut out, d.seq);
        out.push(d.qos as u8);
        if let Some(g) = d.shared {
            put_varint(&mut out, g);
        }
        put_varint(&mut out, d.sub_ids.len() as u64);
        for &id in &d.sub_ids {
            put_varint(&mut out, u64::from(id));
        }
        if let Some(index) = known {
            put_varint(&mut out, index);
            continue;
        }
        bodies.insert(m.id, bodies.len() as u64);
        put_varint(&mut out, m.id);
        if let Some(o) = m.origin {
            put_varint(&mut out, o);
        }
        if let Some(t) = m.expires_at {
            let b = *base.get_or_insert(t);
            let micros = if t >= b {
                (t - b).as_micros() as i64
            } else {
                -((b - t).as_micros() as i64)
            };
            put_varint(&mut out, ((micros << 1) ^ (micros >> 63)) as u64);
        }
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: m.qos,
            retain: m.retain,
            topic: m.topic.clone(),
            packet_id: (m.qos != QoS::AtMostOnce).then_some(1),
            properties: m.properties.clone(),
            payload: m.payload.clone(),
        });
        buf.clear();
        tern_codec::encode_packet(&publish, ProtocolVersion::V5, &mut buf)
            .map_err(|_| "message cannot be encoded as a PUBLISH")?;
        put_varint(&mut out, buf.len() as u64);
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

fn decode_page(mut input: &[u8], base: Option<Instant>) -> Result<Vec<Delivery>, &'static str> {
    let input = &mut input;
    let mut bodies: Vec<Arc<Message>> = Vec::new();
    let mut out = Vec::new();
    while !input.is_empty() {
        let flags = get_u8(input)?;
        let seq = get_varint(input)?;
        let qos = QoS::from_u8(get_u8(input)?).ok_or("bad QoS")?;
        let shared = if flags & SHARED != 0 {
            Some(get_varint(input)?)
        } else {
            None
        };
        let n = get_varint(input)?;
        if n > input.len() as u64 {
            return Err("bad subscription id count");
        }
        let mut sub_ids = Vec::with_capacity(n as usize);
        for _ in 0..n {
            sub_ids.push(u32::try_from(get_varint(input)?).map_err(|_| "bad subscription id")?);
        }
        let msg = if flags & INLINE == 0 {
            let index = get_varint(input)?;
            bodies
                .get(usize::try_from(index).map_err(|_| "bad body index")?)
                .ok_or("bad body index")?
                .clone()
        } else {
            let id = get_varint(input)?;
            let origin = if flags & ORIGIN != 0 {
                Some(get_varint(input)?)
            } else {
                None
            };
            let expires_at = if flags & EXPIRES != 0 {
                let z = get_varint(input)?;
                let micros = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let b = base.ok_or("expiry without a base instant")?;
                let offset = Duration::from_micros(micros.unsigned_abs());
                Some(if micros >= 0 {
                    b.checked_add(offset).ok_or("expiry out of range")?
                } else {
                    b.checked_sub(offset).unwrap_or(b)
                })
            } else {
                None
            };
            let len = usize::try_from(get_varint(input)?).map_err(|_| "bad length")?;
            if len > input.len() {
                return Err("truncated message");
            }
            let (body, rest) = input.split_at(len);
            *input = rest;
            // A buffer of its own, so the message does not pin the whole page in memory.
            let mut buf = BytesMut::from(body);
            let p = match tern_codec::decode_packet(&mut buf, ProtocolVersion::V5, u32::MAX) {
                Ok(Some(Packet::Publish(p))) => p,
                _ => return Err("message is not a PUBLISH"),
            };
            let m = Arc::new(Message {
                id,
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
                expires_at,
                origin,
                read: Default::default(),
                own_bytes: false,
            });
            bodies.push(m.clone());
            m
        };
        out.push(Delivery {
            msg,
            qos,
            retain: flags & RETAIN != 0,
            sub_ids,
            shared,
            seq,
            pin: 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_codec::{ByteStr, PropertyValues};

    fn delivery(id: u64, payload: &str, expires_at: Option<Instant>) -> Delivery {
        let msg = Arc::new(Message {
            id,
            topic: ByteStr::from(format!("t/{id}")),
            payload: Bytes::from(payload.to_owned()),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PropertyValues {
                content_type: Some(ByteStr::from("text/plain")),
                user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
                ..Default::default()
            }
            .into(),
            expires_at,
            origin: Some(9),
            read: Default::default(),
            own_bytes: false,
        });
        Delivery {
            msg,
            qos: QoS::AtLeastOnce,
            retain: id.is_multiple_of(2),
            sub_ids: vec![1, 300],
            shared: id.is_multiple_of(3).then_some(7),
            seq: id * 10,
            pin: 0,
        }
    }

    fn same(a: &Delivery, b: &Delivery) {
        assert_eq!(a.msg, b.msg);
        assert_eq!(
            (a.qos, a.retain, &a.sub_ids, a.shared, a.seq),
            (b.qos, b.retain, &b.sub_ids, b.shared, b.seq)
        );
    }

    #[test]
    fn pages_round_trip_with_shared_bodies_and_expiry() {
        let now = Instant::now();
        let a = delivery(1, "one", Some(now + Duration::from_secs(30)));
        let b = delivery(2, "", None);
        let early = delivery(3, "three", Some(now - Duration::from_millis(1500)));
        // The same message twice (two subscriptions' worth) is stored once.
        let mut a2 = a.clone();
        a2.seq = 99;
        let ds = vec![a.clone(), b.clone(), early.clone(), a2.clone()];
        let mut base = None;
        let data = encode_page(&ds, &mut base).unwrap();
        let back = decode_page(&data, base).unwrap();
        assert_eq!(back.len(), 4);
        for (x, y) in ds.iter().zip(&back) {
            same(x, y);
        }
        assert!(Arc::ptr_eq(&back[0].msg, &back[3].msg));
        let once = encode_page(&ds[..1], &mut base).unwrap();
        let twice = encode_page(&[a.clone(), a2.clone()], &mut base).unwrap();
        assert!(twice.len() < once.len() + 16, "body stored once");
    }

    #[test]
    fn damaged_pages_are_errors_never_panics() {
        let now = Instant::now();
        let ds: Vec<_> = (0..5)
            .map(|i| delivery(i, "payload", Some(now + Duration::from_secs(i))))
            .collect();
        let mut base = None;
        let data = encode_page(&ds, &mut base).unwrap();
        for cut in 0..data.len() {
            let _ = decode_page(&data[..cut], base);
        }
        for i in 0..data.len() {
            for bit in [1u8, 0x80] {
                let mut bad = data.clone();
                bad[i] ^= bit;
                let _ = decode_page(&bad, base);
            }
        }
    }

    #[test]
    fn split_respects_page_limits() {
        let ds: Vec<_> = (0..1200).map(|i| delivery(i, "x", None)).collect();
        let pager = Pager::default();
        let runs = pager.split(&ds);
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 1200);
        assert!(runs.iter().all(|r| r.len() <= PAGE_DELIVERIES));
        let big: Vec<_> = (0..4)
            .map(|i| delivery(i, &"y".repeat(200_000), None))
            .collect();
        assert_eq!(pager.split(&big).len(), 4);
    }
}
