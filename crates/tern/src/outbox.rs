//! A connection's outbox: the bytes the driver has queued for one client, between the driver
//! (which appends) and the connection's task (which takes the whole buffer and writes it with
//! one system call), so a burst of deliveries costs one write, not one per packet.
//!
//! It is bounded: droppable QoS 0 messages are dropped past `max_outbox_packets` /
//! `max_outbox_bytes`, and the connection stops reading from a client whose own answers pile
//! up. For plain TCP the driver may also write to the socket itself when the connection's task
//! is not writing (one task wake-up less per message at low rates, and every write of a fan-out
//! on a runtime with one worker).

use bytes::{Buf, BytesMut};
use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use tern_codec::{Packet, ProtocolVersion, encode_packet};

/// A connection reads from its client only while less than this many bytes it read wait for
/// the driver (so at most this plus one 64 KiB read). Bounds what one fast publisher has in the
/// pipeline: when the core pauses it (back-pressure), what was read before still comes in.
/// (64 KiB cost 9 % of the throughput with both cores: readers on one core, the driver on the
/// other, need more in flight.)
pub(crate) const READ_AHEAD: u32 = 256 * 1024;

/// Capacity of the queue's buffer kept once it is written out, by the driver itself or by the
/// connection's task: enough for the usual turn's packets (no allocation per turn), while a
/// burst's buffer is given back.
const KEEP_CAPACITY: usize = 4096;

/// What waits to be written to one connection: packets already encoded, back to back. The
/// driver encodes as it queues (a QoS 0 message fanned out to many subscribers is encoded once
/// and copied), so a queued packet costs its wire size, not the size of a `Packet`.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) bytes: BytesMut,
    pub(crate) packets: usize,
}

/// Least an outbox may hold before a QoS 0 PUBLISH the core asked to be sent, not dropped (a
/// retained message at subscribe time), is dropped after all; the cap is the largest of this,
/// 16 times `max_outbox_bytes` and what the caller says (twice the retained store: all of it
/// for a subscriber to `#`, encoded). A client that asks for them again and again without
/// reading meets it instead of growing the broker's memory by a copy of the store each time.
const KEPT_QOS0_MIN: usize = 16 << 20;

/// The outbox's locked state.
#[derive(Default)]
struct Queue {
    pending: Pending,
    /// The connection's task holds bytes it took from `pending` and is writing them.
    busy: bool,
    /// For plain TCP: the socket, so the driver can write to it directly when the connection's
    /// task is not writing.
    direct: Option<Arc<tokio::net::tcp::OwnedWriteHalf>>,
}

/// State shared by the driver and one connection's task.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// The connection's task, woken when there are bytes to write or the outbox closes
    /// (`signal`). A waker, not a `Notify`: the task polls it with its other sources by hand,
    /// and an idle connection's future stays small.
    waker: AtomicWaker,
    signal: AtomicBool,
    closing: AtomicBool,
    /// The core asked the connection to stop reading (back-pressure on a QoS 1/2 publisher
    /// that does not wait for its acknowledgements).
    read_paused: AtomicBool,
    /// Bytes read from the client and handed to the driver, not yet handled by it.
    unhandled: AtomicU32,
    version: AtomicU8,
    limit: usize,
    limit_bytes: usize,
    metrics: Arc<crate::metrics::ListenerMetrics>,
}

impl Outbox {
    pub(crate) fn new(
        limit: usize,
        limit_bytes: usize,
        metrics: Arc<crate::metrics::ListenerMetrics>,
    ) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            signal: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            read_paused: AtomicBool::new(false),
            unhandled: AtomicU32::new(0),
            version: AtomicU8::new(ProtocolVersion::V3_1_1.level()),
            limit,
            limit_bytes,
            metrics,
        }
    }

    /// Queues a packet that must be sent (encoded for the connection's protocol version).
    /// Returns true when the outbox was empty before: the caller must [`flush`](Self::flush)
    /// it once it has queued what this turn has for the connection.
    pub(crate) fn push(&self, packet: &Packet) -> bool {
        self.push_within(packet, usize::MAX).unwrap_or(false)
    }

    /// [`push`](Self::push) of a QoS 0 PUBLISH that is to be sent, not dropped like a forwarded
    /// one when the outbox is full, unless the outbox already holds [`KEPT_QOS0_MIN`], 16 times
    /// `max_outbox_bytes` or `at_least`, whichever is largest: then it is dropped and counted,
    /// and `None` returned.
    pub(crate) fn push_kept_qos0(&self, packet: &Packet, at_least: usize) -> Option<bool> {
        let cap = self
            .limit_bytes
            .saturating_mul(16)
            .max(KEPT_QOS0_MIN)
            .max(at_least);
        self.push_within(packet, cap)
    }

    fn push_within(&self, packet: &Packet, cap: usize) -> Option<bool> {
        let version = self.version();
        let mut q = lock(&self.queue);
        let p = &mut q.pending;
        if p.bytes.len() >= cap {
            drop(q);
            self.count_dropped();
            return None;
        }
        if let Err(e) = encode_packet(packet, version, &mut p.bytes) {
            tracing::warn!(error = %e, packet = packet.name(), "cannot encode packet; not sent");
            return Some(false);
        }
        p.packets += 1;
        Some(p.packets == 1)
    }

    /// Queues an encoded QoS 0 PUBLISH unless the outbox is full (`max_outbox_packets` or
    /// `max_outbox_bytes`): `None` when it was dropped, else whether the outbox was empty
    /// before (see [`push`](Self::push)).
    pub(crate) fn push_droppable(&self, encoded: &[u8]) -> Option<bool> {
        // The size is known: the run's check before encoding is the whole check.
        self.droppables().push_with(encoded.len(), |buf| {
            buf.extend_from_slice(encoded);
            true
        })
    }

    /// The outbox locked for a run of droppable messages queued one after another, each
    /// encoded straight into it ([`Droppables::push_with`]).
    pub(crate) fn droppables(&self) -> Droppables<'_> {
        Droppables {
            outbox: self,
            q: lock(&self.queue),
        }
    }

    fn count_dropped(&self) {
        self.metrics
            .dropped_outbox_full
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Sends what is queued: written to the socket right here when `direct` is allowed, the
    /// transport is plain TCP and the connection's task is not writing (and the kernel takes it
    /// all), else handed to the connection's task. Returns how many packets were waiting (a
    /// measure of how far behind the writes are).
    pub(crate) fn flush(&self, direct: bool) -> usize {
        let waiting;
        {
            let mut q = lock(&self.queue);
            waiting = q.pending.packets;
            if waiting == 0 || q.busy {
                return waiting; // nothing to do, or the task will find it when it has written its batch
            }
            if direct && let Some(w) = q.direct.clone() {
                let total = q.pending.bytes.len();
                let mut written = 0;
                while written < total {
                    match w.try_write(&q.pending.bytes[written..]) {
                        Ok(0) => break,
                        Ok(n) => written += n,
                        Err(_) => break, // would block, or an error the task will meet too
                    }
                }
                let m = &self.metrics;
                m.bytes_sent.fetch_add(written as u64, Ordering::Relaxed);
                if written == total {
                    m.packets_sent.fetch_add(waiting as u64, Ordering::Relaxed);
                    let bytes = std::mem::take(&mut q.pending.bytes);
                    q.pending = Pending {
                        bytes: reusable(bytes).unwrap_or_default(),
                        packets: 0,
                    };
                    return waiting;
                }
                // The rest (from the middle of a packet) is the task's to finish.
                q.pending.bytes.advance(written);
            }
        }
        self.wake();
        waiting
    }

    fn wake(&self) {
        self.signal.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Asks the connection to flush what is queued, stop reading and close.
    pub(crate) fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stops (`true`) or resumes reading from the client; the task is woken to notice.
    pub(crate) fn pause_reading(&self, paused: bool) {
        if self.read_paused.swap(paused, Ordering::AcqRel) != paused {
            self.wake();
        }
    }

    pub(crate) fn read_paused(&self) -> bool {
        self.read_paused.load(Ordering::Acquire)
    }

    /// The connection handed `bytes` it read to the driver.
    pub(crate) fn read_ahead(&self, bytes: u32) {
        self.unhandled.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The driver handled `bytes` the connection read; the task is woken if it was waiting
    /// for that to read on.
    pub(crate) fn handled(&self, bytes: u32) {
        let before = self
            .unhandled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(bytes))
            })
            .unwrap_or_default();
        if before >= READ_AHEAD && before.saturating_sub(bytes) < READ_AHEAD {
            self.wake();
        }
    }

    /// True while the connection must not read: [`READ_AHEAD`] bytes wait for the driver.
    pub(crate) fn read_ahead_full(&self) -> bool {
        self.unhandled.load(Ordering::Acquire) >= READ_AHEAD
    }

    /// True when [`flush`](Self::flush) handed over bytes or [`close`](Self::close) was called
    /// since the last call; else the task is woken when that happens.
    pub(crate) fn poll_woken(&self, cx: &Context<'_>) -> bool {
        if self.signal.swap(false, Ordering::AcqRel) {
            return true;
        }
        self.waker.register(cx.waker());
        // Checked again after registering: a wake in between is not lost.
        self.signal.swap(false, Ordering::AcqRel)
    }

    /// True when the client's answers pile up (the connection then stops reading from it).
    pub(crate) fn full(&self) -> bool {
        let q = lock(&self.queue);
        q.pending.packets >= self.limit || q.pending.bytes.len() >= self.limit_bytes
    }

    /// Swaps what is queued with `batch` (which the connection has written, and is empty) and
    /// marks the outbox busy while the batch is being written. With nothing queued, the larger
    /// of the two empty buffers that is [`reusable`] is kept for the driver's next message (as
    /// when the driver writes itself), and the other is dropped: a connection that gets a
    /// message now and then (a subscriber of a slow fan-out) would otherwise pay an
    /// allocation, and its growth, per message.
    pub(crate) fn take(&self, batch: &mut Pending) {
        let mut q = lock(&self.queue);
        std::mem::swap(&mut q.pending, batch);
        q.busy = !batch.bytes.is_empty();
        if !q.busy {
            let queued = std::mem::take(&mut batch.bytes);
            let written = std::mem::take(&mut q.pending.bytes);
            q.pending.bytes = [queued, written]
                .into_iter()
                .filter_map(reusable)
                .max_by_key(BytesMut::capacity)
                .unwrap_or_default();
        }
    }

    /// The connection has written `batch`.
    pub(crate) fn sent(&self, batch: &Pending) {
        let m = &self.metrics;
        m.packets_sent
            .fetch_add(batch.packets as u64, Ordering::Relaxed);
    }

    /// Shares the TCP socket with the driver (`Some`) or takes it back (`None`, at the end).
    pub(crate) fn set_direct(&self, w: Option<Arc<tokio::net::tcp::OwnedWriteHalf>>) {
        let mut q = lock(&self.queue);
        q.direct = w;
        q.busy = false;
    }

    /// Whether the driver can write to the socket itself (plain TCP, while the task runs).
    pub(crate) fn is_direct(&self) -> bool {
        lock(&self.queue).direct.is_some()
    }

    /// Packets waiting to be written. For tests.
    #[cfg(test)]
    pub(crate) fn pending_packets(&self) -> usize {
        lock(&self.queue).pending.packets
    }

    /// Capacity of the buffer the next queued packet goes into. For tests.
    #[cfg(test)]
    fn pending_capacity(&self) -> usize {
        lock(&self.queue).pending.bytes.capacity()
    }

    pub(crate) fn version(&self) -> ProtocolVersion {
        match self.version.load(Ordering::Relaxed) {
            3 => ProtocolVersion::V3_1,
            5 => ProtocolVersion::V5,
            _ => ProtocolVersion::V3_1_1,
        }
    }

    pub(crate) fn set_version(&self, v: ProtocolVersion) {
        self.version.store(v.level(), Ordering::Relaxed);
    }
}

/// An outbox locked while the driver queues a run of QoS 0 messages to its connection (a turn's
/// deliveries 1→1): one lock for the run, not one per message.
pub(crate) struct Droppables<'a> {
    outbox: &'a Outbox,
    q: std::sync::MutexGuard<'a, Queue>,
}

impl Droppables<'_> {
    /// Queues a QoS 0 PUBLISH that `encode` writes straight into the outbox (returning false,
    /// having logged why, when it cannot encode it) unless the outbox is full
    /// (`max_outbox_packets`, or `max_outbox_bytes` once something is queued): `None` when it
    /// was not queued, else whether the outbox was empty before (see [`Outbox::push`]). A
    /// message that goes to one subscriber only is then not encoded apart and copied.
    /// `at_least` is a lower bound of its encoded size (its topic and payload, or all of it),
    /// so that a full outbox refuses a large message without copying it first.
    pub(crate) fn push_with(
        &mut self,
        at_least: usize,
        encode: impl FnOnce(&mut BytesMut) -> bool,
    ) -> Option<bool> {
        let o = self.outbox;
        let p = &mut self.q.pending;
        if p.packets >= o.limit || (p.packets > 0 && p.bytes.len() + at_least > o.limit_bytes) {
            o.count_dropped();
            return None;
        }
        let before = p.bytes.len();
        if !encode(&mut p.bytes) {
            p.bytes.truncate(before);
            return None;
        }
        // The byte limit again, now that the size is known.
        if p.packets > 0 && p.bytes.len() > o.limit_bytes {
            p.bytes.truncate(before);
            o.count_dropped();
            return None;
        }
        p.packets += 1;
        Some(p.packets == 1)
    }
}

/// `bytes`, written out, emptied for the next packets if it is no larger than a usual turn's
/// ([`KEEP_CAPACITY`]); a burst's buffer is given back instead (`None`).
fn reusable(mut bytes: BytesMut) -> Option<BytesMut> {
    (bytes.capacity() <= KEEP_CAPACITY).then(|| {
        bytes.clear();
        bytes
    })
}

/// A poisoned lock only means another thread panicked while pushing a packet; the buffer itself
/// is still a valid buffer, so keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ListenerMetrics;

    fn outbox(limit: usize, limit_bytes: usize) -> Outbox {
        let metrics = Arc::new(ListenerMetrics::new("127.0.0.1:1883".parse().unwrap()));
        Outbox::new(limit, limit_bytes, metrics)
    }

    fn dropped(o: &Outbox) -> u64 {
        o.metrics.dropped_outbox_full.load(Ordering::Relaxed)
    }

    /// A QoS 0 PUBLISH the core asked to send, not drop (a retained message at subscribe
    /// time), goes past `max_outbox_bytes` (the client asked for all of them at once), but not
    /// past the hard cap: a client that asks again and again without reading stops growing the
    /// broker's memory there.
    #[test]
    fn a_kept_qos0_message_is_dropped_only_past_the_hard_cap() {
        let o = outbox(10, 1024);
        let publish = Packet::Publish(tern_codec::Publish {
            topic: "r/1".into(),
            payload: bytes::Bytes::from(vec![1u8; 64 * 1024]),
            retain: true,
            ..Default::default()
        });
        assert_eq!(o.push_kept_qos0(&publish, 0), Some(true));
        let mut kept = 1;
        while o.push_kept_qos0(&publish, 0).is_some() {
            kept += 1;
        }
        // 16 MiB (16 times 1 KiB is less) in PUBLISHes of 65,545 bytes: 255 leave it under,
        // the 256th crosses it, the 257th is dropped.
        assert_eq!(kept, 256);
        assert_eq!(dropped(&o), 1);
        let held = lock(&o.queue).pending.bytes.len();
        assert!(
            (KEPT_QOS0_MIN..KEPT_QOS0_MIN + 66 * 1024).contains(&held),
            "{held}"
        );
        // A packet that must be sent still goes.
        assert!(!o.push(&Packet::PingResp), "not the first");
        assert_eq!(o.pending_packets(), 257);

        // With a retained store of 10 MiB the cap is twice that (the driver says so): a
        // subscriber to `#` gets all of it at once.
        let o = outbox(10, 1024);
        let mut kept = 0;
        while o.push_kept_qos0(&publish, 20 << 20).is_some() {
            kept += 1;
        }
        assert_eq!(kept, 320, "20 MiB in PUBLISHes of 65,545 bytes");
    }

    /// Encoding straight into the outbox keeps `push_droppable`'s limits: past
    /// `max_outbox_packets`, or past `max_outbox_bytes` once something is queued, a QoS 0
    /// message is dropped (and counted) and the queue is left as it was.
    #[test]
    fn a_run_keeps_the_limits_of_a_copied_message() {
        let ten = |buf: &mut BytesMut| {
            buf.extend_from_slice(&[7; 10]);
            true
        };
        // Packets: the third of a limit of 2 is dropped, in a run and copied alike.
        let o = outbox(2, 1 << 20);
        let mut run = o.droppables();
        assert_eq!(
            run.push_with(10, ten),
            Some(true),
            "the first makes the outbox non-empty"
        );
        assert_eq!(run.push_with(10, ten), Some(false));
        assert_eq!(run.push_with(10, ten), None);
        drop(run);
        assert_eq!(o.push_droppable(&[7; 10]), None);
        assert_eq!((o.pending_packets(), dropped(&o)), (2, 2));

        // Bytes: 25 allowed; the first always goes, the third would make 30.
        let o = outbox(100, 25);
        let mut run = o.droppables();
        assert_eq!(run.push_with(10, ten), Some(true));
        assert_eq!(run.push_with(10, ten), Some(false));
        assert_eq!(run.push_with(10, ten), None);
        drop(run);
        assert_eq!(o.push_droppable(&[7; 10]), None);
        let mut batch = Pending::default();
        o.take(&mut batch);
        assert_eq!((batch.packets, batch.bytes.len(), dropped(&o)), (2, 20, 2));
        assert_eq!(
            &batch.bytes[..],
            &[7; 20][..],
            "a dropped message leaves no bytes"
        );

        // A message larger than the limit still goes to an empty outbox (as a copied one does).
        let o = outbox(100, 5);
        assert_eq!(o.droppables().push_with(10, ten), Some(true));
        assert_eq!(o.push_droppable(&[7; 10]), None);

        // A message whose topic and payload alone pass the limit is refused before it is
        // encoded (a slow subscriber of large messages costs no copy per message).
        let o = outbox(100, 25);
        let mut run = o.droppables();
        assert_eq!(run.push_with(10, ten), Some(true));
        assert_eq!(
            run.push_with(20, |_| panic!("a message refused must not be encoded")),
            None
        );
        assert_eq!(dropped(&o), 1);
    }

    /// A message that cannot be encoded leaves nothing behind, not even a part, and is not
    /// counted as dropped for a full outbox.
    #[test]
    fn a_message_that_cannot_be_encoded_leaves_nothing() {
        let o = outbox(100, 1 << 20);
        let mut run = o.droppables();
        assert_eq!(
            run.push_with(0, |buf| {
                buf.extend_from_slice(b"abc");
                true
            }),
            Some(true)
        );
        assert_eq!(
            run.push_with(0, |buf| {
                buf.extend_from_slice(b"half");
                false
            }),
            None
        );
        drop(run);
        let mut batch = Pending::default();
        o.take(&mut batch);
        assert_eq!(
            (&batch.bytes[..], batch.packets, dropped(&o)),
            (&b"abc"[..], 1, 0)
        );
    }

    /// A connection whose task writes for it keeps one buffer of a usual turn's size once it is
    /// idle, and the next message goes into it (no allocation per message for a subscriber that
    /// gets one now and then); a burst's buffer is given back, and the task itself holds none.
    #[test]
    fn an_idle_outbox_keeps_one_small_buffer_and_gives_back_a_bursts() {
        let o = outbox(10_000, 1 << 20);
        let mut batch = Pending::default();
        let written = |batch: &mut Pending| {
            batch.bytes.clear();
            batch.packets = 0;
        };
        assert_eq!(o.push_droppable(&[1; 30]), Some(true));
        o.take(&mut batch);
        assert_eq!(batch.bytes.len(), 30);
        let buffer = batch.bytes.as_ptr();
        written(&mut batch);
        o.take(&mut batch);
        assert_eq!(batch.bytes.capacity(), 0, "the idle task holds no buffer");
        assert!((30..=KEEP_CAPACITY).contains(&o.pending_capacity()));

        assert_eq!(o.push_droppable(&[2; 30]), Some(true));
        o.take(&mut batch);
        assert_eq!(
            batch.bytes.as_ptr(),
            buffer,
            "the next message went into the kept buffer"
        );
        assert_eq!(&batch.bytes[..], &[2; 30][..]);
        written(&mut batch);

        // A burst larger than a usual turn: its buffer is not kept.
        o.take(&mut batch);
        for _ in 0..200 {
            assert!(o.push_droppable(&[3; 30]).is_some());
        }
        o.take(&mut batch);
        assert_eq!((batch.packets, batch.bytes.len()), (200, 6000));
        written(&mut batch);
        o.take(&mut batch);
        assert_eq!((batch.bytes.capacity(), o.pending_capacity()), (0, 0));
    }
}
