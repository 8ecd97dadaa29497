//! One client connection: a reader task that decodes packets and hands them to the driver, and a
//! writer task that drains the connection's outbox with one write per turn.
//!
//! The outbox sits between the driver (which appends) and the writer (which swaps the whole
//! vector out and encodes it into one buffer), so a burst of deliveries costs one system call,
//! not one per packet. It is bounded: droppable QoS 0 messages are dropped past the limit, and the
//! reader stops reading from a client whose own answers pile up.

use crate::driver::Event;
use bytes::BytesMut;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_codec::{DecodeError, Packet, ProtocolVersion, decode_packet, encode_packet};
use tern_core::ConnId;
use tern_net::{Accepted, ReadHalf, WriteHalf};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

// Reads go through `tern_net::ReadHalf::read_with`: a per-thread 64 KiB buffer, copied into an
// exactly sized per-connection buffer, so decoded packets (slices of it) never pin a big chunk
// and idle connections hold no read buffer at all.

/// A writer that cannot hand its data to the kernel for this long has a dead peer.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// What waits to be written to one connection: packets already encoded, back to back. The
/// driver encodes as it queues (a QoS 0 message fanned out to many subscribers is encoded once
/// and copied), so a queued packet costs its wire size, not the size of a `Packet`.
#[derive(Default)]
struct Pending {
    bytes: BytesMut,
    packets: usize,
}

/// The outbox's locked state.
#[derive(Default)]
struct Queue {
    pending: Pending,
    /// The writer task holds bytes it took from `pending` and is writing them.
    busy: bool,
    /// For plain TCP: the socket, so the driver can write to it directly when the writer is
    /// idle (one task wake-up less per message at low rates).
    direct: Option<Arc<tokio::net::tcp::OwnedWriteHalf>>,
}

/// State shared by the driver, the reader and the writer of one connection.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    wake_writer: Notify,
    drained: Notify,
    closing: AtomicBool,
    closed: Notify,
    version: AtomicU8,
    limit: usize,
    limit_bytes: usize,
    pub(crate) dropped: AtomicU64,
    metrics: Arc<crate::metrics::ListenerMetrics>,
}

impl Outbox {
    fn new(
        limit: usize,
        limit_bytes: usize,
        metrics: Arc<crate::metrics::ListenerMetrics>,
    ) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            version: AtomicU8::new(ProtocolVersion::V3_1_1.level()),
            limit,
            limit_bytes,
            dropped: AtomicU64::new(0),
            metrics,
        }
    }

    /// Queues a packet that must be sent (encoded for the connection's protocol version).
    /// Returns true when the outbox was empty before: the caller must [`flush`](Self::flush)
    /// it once it has queued what this turn has for the connection.
    pub(crate) fn push(&self, packet: &Packet) -> bool {
        let version = self.version();
        let mut q = lock(&self.queue);
        let p = &mut q.pending;
        if let Err(e) = encode_packet(packet, version, &mut p.bytes) {
            tracing::warn!(error = %e, packet = packet.name(), "cannot encode packet; not sent");
            return false;
        }
        p.packets += 1;
        p.packets == 1
    }

    /// Queues an encoded QoS 0 PUBLISH unless the outbox is full (`max_outbox_packets` or
    /// `max_outbox_bytes`): `None` when it was dropped, else whether the outbox was empty
    /// before (see [`push`](Self::push)).
    pub(crate) fn push_droppable(&self, encoded: &[u8]) -> Option<bool> {
        let mut q = lock(&self.queue);
        let p = &mut q.pending;
        if p.packets >= self.limit
            || (p.packets > 0 && p.bytes.len() + encoded.len() > self.limit_bytes)
        {
            drop(q);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .dropped_outbox_full
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        p.bytes.extend_from_slice(encoded);
        p.packets += 1;
        Some(p.packets == 1)
    }

    /// Sends what is queued: written to the socket right here when `direct` is allowed, the
    /// transport is plain TCP and the writer task is idle (and the kernel takes it all), else
    /// handed to the writer task.
    pub(crate) fn flush(&self, direct: bool) {
        {
            let mut q = lock(&self.queue);
            if q.pending.packets == 0 || q.busy {
                return; // nothing to do, or the writer will find it when it loops
            }
            if direct && let Some(w) = q.direct.clone() {
                let total = q.pending.bytes.len();
                let mut written = 0;
                while written < total {
                    match w.try_write(&q.pending.bytes[written..]) {
                        Ok(0) => break,
                        Ok(n) => written += n,
                        Err(_) => break, // would block, or an error the writer will meet too
                    }
                }
                let m = &self.metrics;
                m.bytes_sent.fetch_add(written as u64, Ordering::Relaxed);
                if written == total {
                    m.packets_sent
                        .fetch_add(q.pending.packets as u64, Ordering::Relaxed);
                    q.pending.bytes.clear();
                    q.pending.packets = 0;
                    drop(q);
                    self.drained.notify_one();
                    return;
                }
                // The rest (from the middle of a packet) is the writer's to finish.
                let _ = q.pending.bytes.split_to(written);
            }
        }
        self.wake_writer.notify_one();
    }

    /// Asks the writer to flush what is queued and close, and the reader to stop.
    pub(crate) fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.wake_writer.notify_one();
            self.closed.notify_one();
        }
    }

    /// True when the client's answers pile up (the reader then stops reading from it).
    fn full(&self) -> bool {
        let q = lock(&self.queue);
        q.pending.packets >= self.limit || q.pending.bytes.len() >= self.limit_bytes
    }

    pub(crate) fn version(&self) -> ProtocolVersion {
        match self.version.load(Ordering::Relaxed) {
            3 => ProtocolVersion::V3_1,
            5 => ProtocolVersion::V5,
            _ => ProtocolVersion::V3_1_1,
        }
    }

    fn set_version(&self, v: ProtocolVersion) {
        self.version.store(v.level(), Ordering::Relaxed);
    }
}

/// A poisoned lock only means another thread panicked while pushing a packet; the vector itself
/// is still a valid vector, so keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings a connection needs.
#[derive(Clone)]
pub(crate) struct ConnSettings {
    pub(crate) connect_timeout: Duration,
    /// Bytes read but not yet handled by the driver, shared by all connections; the driver
    /// gives them back after handling each batch.
    pub(crate) budget: Arc<tokio::sync::Semaphore>,
    pub(crate) budget_bytes: usize,
    pub(crate) max_packet_size: u32,
    pub(crate) max_outbox_packets: usize,
    pub(crate) max_outbox_bytes: usize,
    /// Largest keep alive granted (0: the client's); the broker answers with Server Keep Alive
    /// in CONNACK, and times the client out by what it granted.
    pub(crate) max_keep_alive: u16,
    /// Time a client has to finish a packet it has started sending (slow-loris defence).
    pub(crate) packet_timeout: Duration,
    /// Counters of the listener this connection came in on.
    pub(crate) metrics: Arc<crate::metrics::ListenerMetrics>,
}

/// Runs one connection to its end. Registers with the driver first, so every later event of this
/// connection finds its outbox.
pub(crate) async fn run(
    conn: ConnId,
    accepted: Box<Accepted>,
    listener: usize,
    events: mpsc::Sender<Event>,
    settings: ConnSettings,
) {
    let peer = accepted.peer;
    let outbox = Arc::new(Outbox::new(
        settings.max_outbox_packets,
        settings.max_outbox_bytes,
        settings.metrics.clone(),
    ));
    // With `use_identity_as_username`, the certificate's CN replaces the CONNECT's user name
    // (none at all when the certificate has no CN: the client is then anonymous).
    let cert_username = accepted
        .cn_as_username
        .then(|| accepted.cert_username().map(str::to_string));
    let open = Event::Open {
        conn,
        outbox: outbox.clone(),
        peer,
        listener,
        cert_cn: accepted.cert_cn.clone(),
    };
    if events.send(open).await.is_err() {
        return; // shutting down
    }
    let (rd, wr) = {
        let accepted = *accepted;
        accepted.stream.into_split()
    };
    let wr = match wr {
        WriteHalf::Tcp(w) => {
            let w = Arc::new(w);
            lock(&outbox.queue).direct = Some(w.clone());
            Writer::Tcp(w)
        }
        other => Writer::Other(other),
    };
    let reader = tokio::spawn(read_loop(
        conn,
        rd,
        outbox.clone(),
        events.clone(),
        settings,
        cert_username,
    ));
    write_loop(wr, &outbox).await;
    // The writer ends only once the connection is closing; make sure the reader stops too and
    // the driver forgets the connection.
    outbox.close();
    reader.abort();
    let _ = events.send(Event::Lost { conn }).await;
    tracing::debug!(conn, %peer, "connection closed");
}

async fn read_loop(
    conn: ConnId,
    mut rd: ReadHalf,
    outbox: Arc<Outbox>,
    events: mpsc::Sender<Event>,
    settings: ConnSettings,
    cert_username: Option<Option<String>>,
) {
    let mut buf = BytesMut::new();
    let mut version = ProtocolVersion::V3_1_1;
    // Before CONNECT the deadline is the connect timeout; afterwards 1.5 x keep alive.
    let mut deadline = Some(Instant::now() + settings.connect_timeout);
    let mut keep_alive: Option<Duration> = None;
    let mut seen_connect = false;
    // Set while a packet has started arriving but is not complete.
    let mut partial_deadline: Option<Instant> = None;
    loop {
        // Back-pressure: a client that does not read our answers is not read from either.
        while outbox.full() && !outbox.closing.load(Ordering::Acquire) {
            outbox.drained.notified().await;
        }
        let wake = match (deadline, partial_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            r = rd.read_with(|b| buf.extend_from_slice(b)) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    settings.metrics.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                    n
                }
            },
            () = sleep => {
                if partial_deadline.is_some_and(|p| p <= Instant::now()) {
                    settings.metrics.packet_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(conn, "closing connection: a packet was started and not finished in time (limits.packet_timeout_secs)");
                    let _ = events.send(Event::Lost { conn }).await;
                    return;
                }
                let counter = if seen_connect { &settings.metrics.keep_alive_timeouts } else { &settings.metrics.connect_timeouts };
                counter.fetch_add(1, Ordering::Relaxed);
                let event = if seen_connect { Event::KeepAliveTimeout { conn } } else { Event::Lost { conn } };
                tracing::debug!(conn, "{}", if seen_connect { "keep alive timeout" } else { "no CONNECT in time" });
                let _ = events.send(event).await;
                return;
            }
            () = outbox.closed.notified() => return,
        };
        let mut packets = Vec::new();
        let mut error = None;
        loop {
            match decode_packet(&mut buf, version, settings.max_packet_size) {
                Ok(Some(mut packet)) => {
                    if let Packet::Connect(c) = &mut packet
                        && !seen_connect
                    {
                        seen_connect = true;
                        version = c.protocol;
                        outbox.set_version(version);
                        if let Some(name) = &cert_username {
                            c.username = name.as_deref().map(tern_codec::ByteStr::from);
                        }
                        // The keep alive granted: the client's, capped by the server's maximum
                        // (which the core announces as Server Keep Alive to v5 clients).
                        let max = settings.max_keep_alive;
                        let granted = if max > 0 && (c.keep_alive == 0 || c.keep_alive > max) {
                            max
                        } else {
                            c.keep_alive
                        };
                        keep_alive =
                            (granted > 0).then(|| Duration::from_millis(u64::from(granted) * 1500));
                    }
                    packets.push(packet);
                }
                Ok(None) => break,
                Err(e) => {
                    if let DecodeError::UnsupportedProtocol { level } = e
                        && level > 5
                    {
                        outbox.set_version(ProtocolVersion::V5);
                    }
                    error = Some(e);
                    break;
                }
            }
        }
        settings
            .metrics
            .packets_received
            .fetch_add(packets.len() as u64, Ordering::Relaxed);
        if let Some(e) = &error {
            settings
                .metrics
                .decode_errors
                .fetch_add(1, Ordering::Relaxed);
            if matches!(e, DecodeError::PacketTooLarge { .. }) {
                settings
                    .metrics
                    .packets_too_large
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if buf.is_empty() {
            // Idle connections hold no read buffer.
            buf = BytesMut::new();
            partial_deadline = None;
        } else if partial_deadline.is_none() || !packets.is_empty() {
            // What is left is the start of a new packet: its clock starts now.
            partial_deadline = Some(Instant::now() + settings.packet_timeout);
        }
        if !packets.is_empty() {
            // [MQTT-3.1.2-24] Any packet resets the keep alive clock.
            deadline = if seen_connect {
                keep_alive.map(|k| Instant::now() + k)
            } else {
                deadline
            };
            // Bound what the driver has yet to handle, in bytes read: a publisher faster than
            // the broker waits here, is not read from, and TCP slows it down.
            let bytes = read.min(settings.budget_bytes) as u32;
            let Ok(budget) = settings.budget.clone().acquire_many_owned(bytes).await else {
                return;
            };
            let event = Event::Packets {
                conn,
                packets,
                _budget: budget,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
        if let Some(err) = error {
            tracing::debug!(conn, error = %err, "bad packet");
            let _ = events.send(Event::DecodeError { conn, err }).await;
            // Nothing after a bad packet can be trusted; wait for the driver to close us.
            return;
        }
    }
    let _ = events.send(Event::Lost { conn }).await;
}

/// The writer's side of the socket: plain TCP is shared with the driver (for its direct
/// writes), the other transports are the writer's alone.
enum Writer {
    Tcp(Arc<tokio::net::tcp::OwnedWriteHalf>),
    Other(WriteHalf),
}

impl Writer {
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Tcp(w) => {
                let mut written = 0;
                while written < buf.len() {
                    w.writable().await?;
                    match w.try_write(&buf[written..]) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            // TLS and WebSocket hold written bytes until flushed.
            Writer::Other(w) => {
                w.write_all(buf).await?;
                w.flush().await
            }
        }
    }
}

async fn write_loop(mut wr: Writer, outbox: &Outbox) {
    // Swapped with the outbox's buffer each turn, so the two buffers' capacity is reused while
    // the connection is busy.
    let mut batch = Pending::default();
    loop {
        {
            let mut q = lock(&outbox.queue);
            std::mem::swap(&mut q.pending, &mut batch);
            q.busy = batch.packets > 0 || !batch.bytes.is_empty();
        }
        if batch.bytes.is_empty() {
            if outbox.closing.load(Ordering::Acquire) {
                break;
            }
            // An idle connection holds no buffers: drop both buffers' capacity (the outbox's
            // own is the one this writer swapped in last time).
            batch = Pending::default();
            {
                let mut q = lock(&outbox.queue);
                if q.pending.bytes.is_empty() {
                    q.pending = Pending::default();
                }
            }
            outbox.wake_writer.notified().await;
            continue;
        }
        outbox.drained.notify_one();
        match tokio::time::timeout(WRITE_STALL, wr.write_all(&batch.bytes)).await {
            Ok(Ok(())) => {
                let m = &outbox.metrics;
                m.bytes_sent
                    .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
                m.packets_sent
                    .fetch_add(batch.packets as u64, Ordering::Relaxed);
            }
            _ => break,
        }
        batch.bytes.clear();
        batch.packets = 0;
        outbox.drained.notify_one();
    }
    lock(&outbox.queue).busy = false;
    match wr {
        // Dropping the last handle shuts the write side down (the driver's goes here too).
        Writer::Tcp(w) => {
            lock(&outbox.queue).direct = None;
            drop(w);
        }
        Writer::Other(mut w) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
        }
    }
}
