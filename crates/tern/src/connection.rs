//! One client connection, one task: it reads and decodes packets and hands them to the driver,
//! and writes what the driver queued in the connection's [`Outbox`], one write per batch.
//!
//! One task rather than a reader and a writer: an idle connection then costs one task (its
//! future, tokio's task header) instead of two, and opening one spawns one. The task waits on
//! whichever of these comes first: bytes from the client (not while the outbox is full: a
//! client that does not read our answers is not read from either), the socket taking more of
//! the batch being written, the outbox being handed bytes or closed, and a deadline (keep
//! alive, connect timeout, a packet started but not finished, a write that makes no progress).

use crate::driver::Event;
use crate::outbox::{Outbox, Pending};
use bytes::BytesMut;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tern_codec::{DecodeError, Packet, ProtocolVersion, decode_packet};
use tern_core::ConnId;
use tern_net::{Accepted, ReadHalf, WriteHalf};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::time::Instant;

// Reads go through `tern_net::ReadHalf::poll_read_with`: a per-thread 64 KiB buffer, copied into an
// exactly sized per-connection buffer, so decoded packets (slices of it) never pin a big chunk
// and idle connections hold no read buffer at all.

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
    /// A connection whose socket does not take a batch of our bytes within this long (from the
    /// first time it refuses some) has a dead or hostile peer (`limits.write_timeout_secs`).
    pub(crate) write_timeout: Duration,
    /// Counters of the listener this connection came in on.
    pub(crate) metrics: Arc<crate::metrics::ListenerMetrics>,
    /// With a password file: checks a CONNECT's password before the core sees it.
    pub(crate) check_ahead: Option<Arc<crate::check_ahead::CheckAhead>>,
}

/// Runs one connection to its end. Registers with the driver first, so every later event of this
/// connection finds its outbox.
pub(crate) async fn run(
    conn: ConnId,
    accepted: Box<Accepted>,
    listener: usize,
    events: mpsc::Sender<Event>,
    settings: Arc<ConnSettings>,
) {
    let peer = accepted.peer;
    let outbox = Arc::new(Outbox::new(
        settings.max_outbox_packets,
        settings.max_outbox_bytes,
        settings.metrics.clone(),
    ));
    // With `use_identity_as_username`, the certificate's CN replaces the CONNECT's user name
    // (none at all when the certificate has no CN: the client is then anonymous).
    let pre = Box::new(PreConnect {
        cn_as_username: accepted.cn_as_username,
        cert_cn: accepted.cert_cn.clone(),
        peer: peer.ip(),
    });
    let open = Event::Open {
        conn,
        outbox: outbox.clone(),
        peer,
        listener,
        cert_cn: accepted.cert_cn.clone(),
    };
    if !send(&events, open).await {
        return; // shutting down
    }
    let ws_hold = accepted.stream.ws_hold_clock();
    let (rd, wr) = unbox(accepted).stream.into_split();
    let mut wr = match wr {
        WriteHalf::Tcp(w) => {
            let w = Arc::new(w);
            outbox.set_direct(Some(w.clone()));
            Writer::Tcp(w)
        }
        other => Writer::Other(other),
    };
    let mut reader = Reader {
        conn,
        rd,
        buf: BytesMut::new(),
        version: ProtocolVersion::V3_1_1,
        deadline: Some(Instant::now() + settings.connect_timeout),
        keep_alive: None,
        seen_connect: false,
        partial_deadline: None,
        pre: Some(pre),
        done: false,
        batch_hint: 0,
        alloc: 0,
        ws_hold,
    };
    serve(&mut reader, &mut wr, &outbox, &events, &settings).await;
    // The driver may have written to the socket itself: take it back before closing.
    outbox.set_direct(None);
    match wr {
        // Dropping the last handle shuts the write side down.
        Writer::Tcp(w) => drop(w),
        Writer::Other(mut w) => {
            let shutdown = tokio::io::AsyncWriteExt::shutdown(&mut w);
            let _ = tokio::time::timeout(Duration::from_secs(1), Box::pin(shutdown)).await;
        }
    }
    // However the connection ended, the driver forgets it (a second Lost is harmless).
    send(&events, Event::Lost { conn }).await;
    tracing::debug!(conn, %peer, "connection closed");
}

/// Moves a value out of its box and frees the box now (`*b` frees it only when `b` goes out of
/// scope: for `run`'s argument, the connection's end).
#[allow(clippy::boxed_local)] // taking the box is the point
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// What woke the connection's task (several at once when they were ready together).
#[derive(Default)]
struct Woken {
    /// The outbox has bytes for us, or closes.
    outbox: bool,
    /// The socket took this much of the batch (0: a TLS / WebSocket flush completed).
    wrote: Option<std::io::Result<usize>>,
    /// This much was read into the reader's buffer (0: end of stream).
    read: Option<std::io::Result<usize>>,
    deadline: bool,
    /// A write was attempted and the socket did not take it.
    write_blocked: bool,
    /// The hand-off to the driver that was waiting completed (false: nothing more is read).
    handed: Option<bool>,
}

/// Packets read and decoded that wait for the driver (its channel full, or the read budget
/// spent): polled by the loop beside the socket, so the connection goes on writing meanwhile.
type Handoff = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The connection's loop; returns when the connection is over.
async fn serve(
    reader: &mut Reader,
    wr: &mut Writer,
    outbox: &Outbox,
    events: &mpsc::Sender<Event>,
    settings: &ConnSettings,
) {
    let conn = reader.conn;
    // The batch being written (taken from the outbox), how much of it is written, and whether
    // a TLS or WebSocket transport still has to flush it.
    let mut batch = Pending::default();
    let mut written = 0;
    let mut flushing = false;
    // Set when the socket first refuses bytes of the current batch; cleared when the batch is
    // written. A batch must be taken within `write_timeout` of that: a peer that reads a few
    // bytes now and then cannot hold its connection (and its full outbox) forever.
    let mut stalled_since: Option<Instant> = None;
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
    let mut armed: Option<Instant> = None;
    // Set while reading is held back: the client's answers pile up, or its packets wait for the
    // driver or for their password check.
    let mut held_since: Option<Instant> = None;
    // Whether the outbox may hold something for us: at the start, when it signals, and when a
    // batch is done (the driver leaves what it queues during a batch for us to find then).
    // Otherwise it is not looked at: a publisher's reads do not take its lock.
    let mut look = true;
    // Set while decoded packets wait for the driver; nothing more is read until they are taken.
    let mut handoff: Option<Handoff> = None;
    loop {
        if look && batch.bytes.is_empty() && !flushing {
            look = false;
            outbox.take(&mut batch);
            written = 0;
            if batch.bytes.is_empty() && outbox.closing() {
                break; // everything queued is written
            }
        }
        let writing = !batch.bytes.is_empty() || flushing;
        // Stop reading once closing, after a bad packet or the end of the stream, while the
        // client's answers pile up (back-pressure; they pile up only while we write: when we
        // do not, the driver's flush either writes them itself or hands them to us), and while
        // the core has paused reading (a QoS 1/2 publisher that does not wait for its held
        // acknowledgements).
        let open = !reader.done && !outbox.closing();
        let held = open && ((writing && outbox.full()) || outbox.read_paused());
        let reading = open && !held && handoff.is_none() && !outbox.read_ahead_full();
        // While reading is held back the client's packets wait unread in the kernel: its
        // deadlines (keep alive, a packet started) are paused, and moved on by the pause when
        // reading resumes. A client that reads nothing meets the write-stall deadline instead.
        // So are they while packets already read wait for the broker (a long queue of password
        // checks must not time out the clients it holds).
        match (held || handoff.is_some(), held_since) {
            (true, None) => held_since = Some(Instant::now()),
            (false, Some(since)) => {
                reader.postpone(since.elapsed());
                held_since = None;
            }
            _ => {}
        }
        let write_deadline = stalled_since
            .filter(|_| writing)
            .map(|t| t + settings.write_timeout);
        let wake = [
            reader.deadline.filter(|_| reading),
            reader.partial_deadline.filter(|_| reading),
            write_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        // The timer is moved only to an earlier time: deadlines that move later (the keep
        // alive clock, at every packet) are found when it fires and re-armed then, so a busy
        // connection does not touch the timer wheel per packet.
        if let Some(at) = wake
            && armed.is_none_or(|a| at < a)
        {
            sleep.as_mut().reset(at);
            armed = Some(at);
        }
        // Every source is polled each time, and all that are ready are handled together: a
        // connection that is always writable is still read from.
        let woken = poll_fn(|cx| {
            let mut w = Woken {
                outbox: outbox.poll_woken(cx),
                ..Woken::default()
            };
            if writing {
                match wr.poll_write(cx, &batch.bytes[written..], flushing) {
                    Poll::Ready(r) => w.wrote = Some(r),
                    Poll::Pending => {
                        w.write_blocked = true;
                        if stalled_since.is_none() {
                            // Back to the loop to start the write-stall clock (and its timer):
                            // nothing else may wake this task while the peer does not read.
                            return Poll::Ready(w);
                        }
                    }
                }
            }
            if let Some(h) = handoff.as_mut()
                && let Poll::Ready(ok) = h.as_mut().poll(cx)
            {
                w.handed = Some(ok);
            }
            if reading
                && let Poll::Ready(r) = reader
                    .rd
                    .poll_read_with(cx, |b| append(&mut reader.buf, &mut reader.alloc, b))
            {
                w.read = Some(r);
            }
            w.deadline = armed.is_some() && sleep.as_mut().poll(cx).is_ready();
            if w.outbox || w.wrote.is_some() || w.read.is_some() || w.deadline || w.handed.is_some()
            {
                Poll::Ready(w)
            } else {
                Poll::Pending
            }
        })
        .await;
        match woken.wrote {
            None => {}
            Some(Err(_)) => break,
            Some(Ok(_)) if flushing => {
                flushing = false;
                stalled_since = None;
                look = true;
            }
            Some(Ok(n)) => {
                settings
                    .metrics
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                written += n;
                if written == batch.bytes.len() {
                    outbox.sent(&batch);
                    batch.bytes.clear();
                    batch.packets = 0;
                    written = 0;
                    // TLS and WebSocket hold written bytes until flushed.
                    flushing = wr.needs_flush();
                    if !flushing {
                        stalled_since = None;
                        look = true;
                    }
                }
            }
        }
        look |= woken.outbox;
        if woken.write_blocked && stalled_since.is_none() {
            stalled_since = Some(Instant::now());
        }
        if let Some(ok) = woken.handed {
            handoff = None;
            reader.done |= !ok;
        }
        match woken.read {
            None => {}
            Some(Err(e))
                if e.get_ref()
                    .is_some_and(|i| i.is::<tern_net::WsMessageTimeout>()) =>
            {
                // A WebSocket message started and not finished in time: the transport's own
                // packet timeout (it hands on only whole messages).
                settings
                    .metrics
                    .packet_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(conn, "closing connection: {e} (limits.packet_timeout_secs)");
                reader.done = true;
                send(events, Event::Lost { conn }).await;
            }
            Some(Ok(0) | Err(_)) => {
                reader.done = true;
                send(events, Event::Lost { conn }).await;
            }
            Some(Ok(n)) => {
                settings
                    .metrics
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                match reader.handle(n, outbox, events, settings) {
                    Handled::Done(more) => reader.done |= !more,
                    Handled::Waiting(h) => handoff = Some(h),
                }
            }
        }
        if woken.deadline {
            armed = None; // a fired Sleep must be reset before it is polled again
            let now = Instant::now();
            // `stalled_since` as it is now: a batch finished in this very wake-up cleared it.
            if stalled_since.is_some_and(|t| t + settings.write_timeout <= now) {
                settings
                    .metrics
                    .write_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    conn,
                    "closing connection: the client has not taken what it was sent within {} s (limits.write_timeout_secs)",
                    settings.write_timeout.as_secs()
                );
                break;
            }
            // (`reading` is from before this wake-up's read.) Packets that read left waiting
            // for the driver go before any timeout the reader reports; the deadline is looked
            // at again when they have been handed over (reading resumes and re-arms it).
            if reading
                && handoff.is_none()
                && !reader.done
                && reader.timed_out(now, events, settings).await
            {
                reader.done = true;
            }
        }
    }
    // Packets already read and decoded still reach the driver (a DISCONNECT among them is not
    // turned into a lost connection by our failed write), before the Lost that `run` sends.
    if let Some(h) = handoff {
        h.await;
    }
}

/// Hands an event to the driver: at once when its channel has room (the usual case), else by
/// waiting in a boxed future, so the connection's future does not carry a channel wait's state
/// (a few hundred bytes) for its whole life. Resolves to false when the driver is gone.
fn send(events: &mpsc::Sender<Event>, ev: Event) -> Sending<'_> {
    match events.try_send(ev) {
        Ok(()) => Sending::Done(true),
        Err(mpsc::error::TrySendError::Full(ev)) => Sending::Wait(Box::pin(events.send(ev))),
        Err(mpsc::error::TrySendError::Closed(_)) => Sending::Done(false),
    }
}

type SendWait<'a> =
    Pin<Box<dyn Future<Output = Result<(), mpsc::error::SendError<Event>>> + Send + 'a>>;

/// See [`send`].
enum Sending<'a> {
    Done(bool),
    Wait(SendWait<'a>),
}

impl Future for Sending<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match self.get_mut() {
            Sending::Done(ok) => Poll::Ready(*ok),
            Sending::Wait(f) => f.as_mut().poll(cx).map(|r| r.is_ok()),
        }
    }
}

/// What became of packets read: handed to the driver (false: nothing more is to be read from
/// this client), or waiting for it.
enum Handled {
    Done(bool),
    Waiting(Handoff),
}

/// Hands a batch of packets (with its share of the read budget, in bytes) and then a bad
/// packet's report to the driver, in that order: at once when the budget and the channel have
/// room, else in a [`Handoff`] that owns what is left. After a bad packet nothing more is read.
fn hand_off(
    conn: ConnId,
    events: &mpsc::Sender<Event>,
    budget: &Arc<tokio::sync::Semaphore>,
    batch: Option<(Vec<Packet>, u32, u32)>,
    bad: Option<Event>,
) -> Handled {
    use mpsc::error::TrySendError;
    use tokio::sync::TryAcquireError;
    let more = bad.is_none();
    if let Some((packets, bytes, read)) = batch {
        let permit = match budget.clone().try_acquire_many_owned(bytes) {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Handled::Done(false),
            Err(TryAcquireError::NoPermits) => {
                let wait = Wait::Budget(budget.clone(), packets, bytes, read);
                return Handled::Waiting(Box::pin(finish(conn, events.clone(), wait, bad, more)));
            }
        };
        let ev = Event::Packets {
            conn,
            packets,
            read,
            _budget: permit,
        };
        match events.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Handled::Done(false),
            Err(TrySendError::Full(ev)) => {
                let wait = Wait::Channel(ev);
                return Handled::Waiting(Box::pin(finish(conn, events.clone(), wait, bad, more)));
            }
        }
    }
    if let Some(ev) = bad {
        match events.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Handled::Done(false),
            Err(TrySendError::Full(ev)) => {
                let wait = Wait::Channel(ev);
                return Handled::Waiting(Box::pin(finish(conn, events.clone(), wait, None, false)));
            }
        }
    }
    Handled::Done(more)
}

/// Where a hand-off waits first.
enum Wait {
    /// For this much of the read budget, then for room in the channel for the batch (and the
    /// length of the read it was decoded from).
    Budget(Arc<tokio::sync::Semaphore>, Vec<Packet>, u32, u32),
    /// For room in the channel for this event.
    Channel(Event),
}

/// The waiting part of [`hand_off`]: waits, sends `bad` last, and resolves to `more` when
/// everything was handed over.
async fn finish(
    conn: ConnId,
    events: mpsc::Sender<Event>,
    wait: Wait,
    bad: Option<Event>,
    more: bool,
) -> bool {
    let first = match wait {
        Wait::Budget(budget, packets, bytes, read) => {
            let Ok(permit) = budget.acquire_many_owned(bytes).await else {
                return false;
            };
            Event::Packets {
                conn,
                packets,
                read,
                _budget: permit,
            }
        }
        Wait::Channel(ev) => ev,
    };
    for ev in std::iter::once(first).chain(bad) {
        if events.send(ev).await.is_err() {
            return false;
        }
    }
    more
}

/// The reading side of a connection: the bytes read and not yet decoded, and the clocks that
/// read bytes reset.
struct Reader {
    conn: ConnId,
    rd: ReadHalf,
    buf: BytesMut,
    version: ProtocolVersion,
    /// Before CONNECT the connect timeout; afterwards 1.5 x keep alive from the last packet.
    deadline: Option<Instant>,
    keep_alive: Option<Duration>,
    seen_connect: bool,
    /// Set while a packet has started arriving but is not complete.
    partial_deadline: Option<Instant>,
    /// What only the CONNECT needs (freed with it: idle connections do not carry it).
    pre: Option<Box<PreConnect>>,
    /// Nothing more is read (end of stream, a bad packet, a timeout).
    done: bool,
    /// Packets in the last batch (at most [`MAX_BATCH_HINT`]): the next batch's vector starts
    /// with room for as many. Grown from empty, a batch of 64 PUBLISHes was reallocated seven
    /// times.
    batch_hint: u16,
    /// Bytes of the allocation `buf` is a view of. `BytesMut::capacity` counts only from the
    /// view's start, and after `reserve` reuses an allocation it reports what was asked for,
    /// not what is there; the core must know what a decoded packet keeps (see
    /// `tern_core::ReadRef`), so [`append`] makes every allocation itself and notes its size.
    alloc: usize,
    /// For WebSocket: where to tell the transport how long reading was held back (its timeout
    /// for a message under way is paused meanwhile, as `partial_deadline` is).
    ws_hold: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// What a connection knows before its CONNECT and needs only for it.
struct PreConnect {
    /// `use_identity_as_username`: the certificate's CN (or none, without a certificate or a
    /// CN) replaces the CONNECT's user name.
    cn_as_username: bool,
    /// The CN of the client's verified certificate, which vouches for a user name equal to it
    /// without a password check.
    cert_cn: Option<String>,
    /// For the address back-off of a password check made ahead.
    peer: std::net::IpAddr,
}

/// Appends the bytes of a read to a reader's buffer: into the room left in it, or else into a
/// new allocation that holds what is left of the last read and this one (twice what is left if
/// that is more, so that a large packet arriving in many reads is copied a logarithmic number
/// of times, not once per read). `alloc` is the size of the buffer's allocation.
fn append(buf: &mut BytesMut, alloc: &mut usize, bytes: &[u8]) {
    if buf.capacity() - buf.len() >= bytes.len() {
        buf.extend_from_slice(bytes);
        return;
    }
    let need = buf.len() + bytes.len();
    let mut fresh = BytesMut::with_capacity(need.max(2 * buf.len()));
    fresh.extend_from_slice(buf);
    fresh.extend_from_slice(bytes);
    *alloc = fresh.capacity();
    *buf = fresh;
}

/// Bound of [`Reader::batch_hint`], so one large batch does not make every later one
/// allocate for it.
const MAX_BATCH_HINT: u16 = 64;

impl Reader {
    /// Moves the reader's deadlines on by `by` (the time reading was held back).
    fn postpone(&mut self, by: Duration) {
        self.deadline = self.deadline.map(|d| d + by);
        self.partial_deadline = self.partial_deadline.map(|d| d + by);
        if let Some(clock) = &self.ws_hold {
            clock.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Decodes what `buf` holds and hands the packets to the driver: at once when it has room
    /// (the usual case), else in a [`Handoff`] the loop polls.
    fn handle(
        &mut self,
        read: usize,
        outbox: &Outbox,
        events: &mpsc::Sender<Event>,
        settings: &ConnSettings,
    ) -> Handled {
        let conn = self.conn;
        let mut packets = Vec::new();
        let mut error = None;
        // A CONNECT's password to check before the packets go to the core.
        let mut ahead = None;
        let before = self.buf.len();
        // The decoded packets are slices of this buffer's allocation (with the bytes left over
        // from earlier reads): what the core keeps of them keeps all of it.
        let read_len = u32::try_from(self.alloc).unwrap_or(u32::MAX);
        loop {
            match decode_packet(&mut self.buf, self.version, settings.max_packet_size) {
                Ok(Some(mut packet)) => {
                    if let Packet::Connect(c) = &mut packet
                        && !self.seen_connect
                    {
                        self.seen_connect = true;
                        self.version = c.protocol;
                        outbox.set_version(self.version);
                        let pre = self.pre.take();
                        if let Some(pre) = pre.as_ref().filter(|p| p.cn_as_username) {
                            c.username = pre.cert_cn.as_deref().map(tern_codec::ByteStr::from);
                        }
                        // A password to check, and no certificate that vouches for the user
                        // (which a CN taken as the user name always does).
                        if let (Some(pre), Some(user), Some(password)) =
                            (&pre, &c.username, &c.password)
                            && settings.check_ahead.is_some()
                            && pre.cert_cn.as_deref() != Some(&**user)
                            && c.properties.authentication_method.is_none()
                        {
                            ahead = Some((user.to_string(), password.clone(), pre.peer));
                        }
                        // The keep alive granted: the client's, capped by the server's maximum
                        // (which the core announces as Server Keep Alive to v5 clients).
                        let max = settings.max_keep_alive;
                        let granted = if max > 0 && (c.keep_alive == 0 || c.keep_alive > max) {
                            max
                        } else {
                            c.keep_alive
                        };
                        self.keep_alive =
                            (granted > 0).then(|| Duration::from_millis(u64::from(granted) * 1500));
                    }
                    if packets.is_empty() {
                        // Not before: a read that completes no packet allocates nothing. Room
                        // for the last batch's count, or for as many more packets of this one's
                        // size as the buffer holds if that is more (a batch bigger than the last
                        // grew the vector in 43 % of reads in fan-in at 30 k msg/s).
                        let size = before - self.buf.len();
                        let more = self.buf.len() / size.max(1);
                        let room = usize::from(self.batch_hint).max(1 + more);
                        packets.reserve(room.min(usize::from(MAX_BATCH_HINT)));
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
        if !packets.is_empty() {
            self.batch_hint = u16::try_from(packets.len())
                .unwrap_or(MAX_BATCH_HINT)
                .min(MAX_BATCH_HINT);
        }
        let m = &settings.metrics;
        m.packets_received
            .fetch_add(packets.len() as u64, Ordering::Relaxed);
        if let Some(e) = &error {
            m.decode_errors.fetch_add(1, Ordering::Relaxed);
            if matches!(e, DecodeError::PacketTooLarge { .. }) {
                m.packets_too_large.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.buf.is_empty() {
            // Idle connections hold no read buffer.
            self.buf = BytesMut::new();
            self.partial_deadline = None;
        } else if self.partial_deadline.is_none() || !packets.is_empty() {
            // What is left is the start of a new packet: its clock starts now.
            self.partial_deadline = Some(Instant::now() + settings.packet_timeout);
        }
        // Nothing after a bad packet can be trusted; the driver closes the connection.
        let bad = error.map(|err| {
            tracing::debug!(conn, error = %err, "bad packet");
            Event::DecodeError { conn, err }
        });
        let mut batch = None;
        if !packets.is_empty() {
            // [MQTT-3.1.2-24] Any packet resets the keep alive clock.
            if self.seen_connect {
                self.deadline = self.keep_alive.map(|k| Instant::now() + k);
            }
            // Bound what the driver has yet to handle, in bytes read: a publisher faster than
            // the broker waits for it, is not read from, and TCP slows it down.
            let bytes = read.min(settings.budget_bytes) as u32;
            outbox.read_ahead(bytes);
            batch = Some((packets, bytes, read_len));
        }
        if let (Some((user, password, peer)), Some(check)) = (ahead, &settings.check_ahead) {
            // The packets wait for the check like a hand-off waiting for the driver: the
            // connection is not read meanwhile, and its timeouts wait too.
            let check = check.clone().check(user, password, peer);
            let (events, budget) = (events.clone(), settings.budget.clone());
            return Handled::Waiting(Box::pin(async move {
                check.await;
                match hand_off(conn, &events, &budget, batch, bad) {
                    Handled::Done(more) => more,
                    Handled::Waiting(rest) => rest.await,
                }
            }));
        }
        hand_off(conn, events, &settings.budget, batch, bad)
    }

    /// A deadline passed at `now`: tells the driver if it is one of the reader's. True when the
    /// connection is over for reading.
    async fn timed_out(
        &mut self,
        now: Instant,
        events: &mpsc::Sender<Event>,
        settings: &ConnSettings,
    ) -> bool {
        let conn = self.conn;
        let m = &settings.metrics;
        if self.partial_deadline.is_some_and(|p| p <= now) {
            m.packet_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                conn,
                "closing connection: a packet was started and not finished in time (limits.packet_timeout_secs)"
            );
            send(events, Event::Lost { conn }).await;
            return true;
        }
        if self.deadline.is_none_or(|d| d > now) {
            return false;
        }
        let counter = if self.seen_connect {
            &m.keep_alive_timeouts
        } else {
            &m.connect_timeouts
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let event = if self.seen_connect {
            tracing::debug!(conn, "keep alive timeout");
            Event::KeepAliveTimeout { conn }
        } else {
            tracing::debug!(conn, "no CONNECT in time");
            Event::Lost { conn }
        };
        send(events, event).await;
        true
    }
}

/// The writing side of the socket: plain TCP is shared with the driver (for its direct
/// writes), the other transports are the connection's alone.
enum Writer {
    Tcp(Arc<tokio::net::tcp::OwnedWriteHalf>),
    Other(WriteHalf),
}

impl Writer {
    /// Writes some of `buf` (or, with `flush`, flushes the transport; then `Ok(0)`). Nothing is
    /// written unless it returns how much.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        flush: bool,
    ) -> Poll<std::io::Result<usize>> {
        match self {
            Writer::Tcp(w) => loop {
                ready!(w.as_ref().as_ref().poll_write_ready(cx))?;
                match w.try_write(buf) {
                    Ok(0) if !buf.is_empty() => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Ok(n) => return Poll::Ready(Ok(n)),
                    // The readiness was stale; polling again registers for the next one.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Writer::Other(w) if flush => {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                Poll::Ready(Ok(0))
            }
            Writer::Other(w) => match ready!(Pin::new(&mut *w).poll_write(cx, buf)) {
                Ok(0) if !buf.is_empty() => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                r => Poll::Ready(r),
            },
        }
    }

    fn needs_flush(&self) -> bool {
        matches!(self, Writer::Other(_))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::task::Waker;
    use tern_codec::DecodeError;

    #[test]
    fn the_read_buffer_knows_its_allocation() {
        // What decoded packets keep is the whole allocation their bytes are in, however far
        // the buffer's view has moved on: `alloc` must be that allocation's size.
        let (mut buf, mut alloc) = (BytesMut::new(), 0);
        append(&mut buf, &mut alloc, &[1; 100]);
        assert_eq!((alloc, buf.capacity()), (100, 100));
        // 95 bytes decoded (frozen slices keep the allocation), 5 left over.
        let _decoded = buf.split_to(95).freeze();
        append(&mut buf, &mut alloc, &[2; 30]);
        assert_eq!(
            alloc, 35,
            "a new allocation for what is left and the new read"
        );
        assert_eq!(&buf[..], [&[1u8; 5][..], &[2; 30]].concat());
        // 100 left over of 1,000: the new allocation is twice that. A read that fits in the
        // room left goes into the same allocation, and `alloc` stays, though the view's
        // capacity counts only from where it now starts.
        let (mut big, mut big_alloc) = (BytesMut::new(), 0);
        append(&mut big, &mut big_alloc, &[3; 1000]);
        let _ = big.split_to(900);
        append(&mut big, &mut big_alloc, &[4; 50]);
        assert_eq!(big_alloc, 200);
        let _kept = big.split_to(120).freeze();
        append(&mut big, &mut big_alloc, &[5; 40]);
        assert_eq!(big_alloc, 200);
        assert!(
            big.capacity() < big_alloc,
            "the view counts less than the allocation"
        );
        // A packet of 4 MiB in 64 KiB reads: the allocation doubles, so it is copied about
        // log2(64) times, not once per read.
        let (mut buf, mut alloc) = (BytesMut::new(), 0);
        let mut allocations = 0;
        for _ in 0..64 {
            let before = alloc;
            append(&mut buf, &mut alloc, &[6; 64 * 1024]);
            allocations += usize::from(alloc != before);
        }
        assert_eq!(buf.len(), 4 << 20);
        assert!(allocations <= 8, "{allocations} allocations");
    }

    fn kinds(rx: &mut mpsc::Receiver<Event>) -> Vec<&'static str> {
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(match ev {
                Event::Packets { packets, .. } if packets.len() == 2 => "packets",
                Event::DecodeError { .. } => "bad",
                Event::Lost { .. } => "lost",
                _ => "other",
            });
        }
        got
    }

    /// A connected pair on 127.0.0.1: (client side, server side, the listener's address).
    pub(crate) async fn loopback_pair() -> (
        tokio::net::TcpStream,
        tokio::net::TcpStream,
        std::net::SocketAddr,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server, addr)
    }

    fn poll(h: &mut Handoff) -> Poll<bool> {
        h.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    fn batch() -> Option<(Vec<Packet>, u32, u32)> {
        Some((vec![Packet::PingReq, Packet::PingReq], 100, 100))
    }

    fn bad() -> Option<Event> {
        Some(Event::DecodeError {
            conn: 1,
            err: DecodeError::Malformed("test"),
        })
    }

    #[test]
    fn a_hand_off_with_room_is_done_at_once() {
        let (tx, mut rx) = mpsc::channel(8);
        let budget = Arc::new(tokio::sync::Semaphore::new(1000));
        assert!(matches!(
            hand_off(1, &tx, &budget, batch(), None),
            Handled::Done(true)
        ));
        // A bad packet is reported after the packets before it; nothing more is read.
        assert!(matches!(
            hand_off(1, &tx, &budget, batch(), bad()),
            Handled::Done(false)
        ));
        // Each batch holds its share of the budget until the driver drops it.
        assert_eq!(budget.available_permits(), 1000 - 200);
        assert_eq!(kinds(&mut rx), ["packets", "packets", "bad"]);
        assert_eq!(budget.available_permits(), 1000);
    }

    #[test]
    fn a_full_channel_makes_a_hand_off_that_keeps_the_order() {
        // The channel is full: the connection gets a hand-off to poll (and goes on writing)
        // instead of waiting inside the read.
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(Event::Lost { conn: 9 }).unwrap();
        let budget = Arc::new(tokio::sync::Semaphore::new(1000));
        let Handled::Waiting(mut h) = hand_off(1, &tx, &budget, batch(), bad()) else {
            panic!("handed over although the channel is full");
        };
        assert!(poll(&mut h).is_pending());
        assert_eq!(kinds(&mut rx), ["lost"]);
        assert!(
            poll(&mut h).is_pending(),
            "room for the batch, not yet the report"
        );
        assert_eq!(kinds(&mut rx), ["packets"]);
        assert_eq!(
            poll(&mut h),
            Poll::Ready(false),
            "after a bad packet, no more reading"
        );
        assert_eq!(kinds(&mut rx), ["bad"]);
    }

    /// A connection whose packets wait for the driver (its channel full) and whose next write
    /// fails (the client reset the connection) still hands those packets over before it ends:
    /// a DISCONNECT among them must not become a lost connection (which would publish the will).
    /// A connection's reader, writer and settings on the server side of a loopback pair.
    fn parts(
        server: tokio::net::TcpStream,
        addr: std::net::SocketAddr,
        budget: &Arc<tokio::sync::Semaphore>,
        keep_alive: Option<Duration>,
    ) -> (Reader, Writer, ConnSettings) {
        let (rd, wr) = tern_net::Stream::Tcp(server).into_split();
        let WriteHalf::Tcp(wr) = wr else {
            unreachable!("a TCP stream splits into TCP halves")
        };
        let settings = ConnSettings {
            connect_timeout: Duration::from_secs(60),
            budget: budget.clone(),
            budget_bytes: 1 << 20,
            max_packet_size: 1 << 20,
            max_outbox_packets: 1000,
            max_outbox_bytes: 1 << 20,
            max_keep_alive: 0,
            packet_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            metrics: Arc::new(crate::metrics::ListenerMetrics::new(addr)),
            check_ahead: None,
        };
        let reader = Reader {
            conn: 1,
            rd,
            buf: BytesMut::new(),
            version: ProtocolVersion::V3_1_1,
            deadline: Some(Instant::now() + keep_alive.unwrap_or(Duration::from_secs(60))),
            keep_alive,
            seen_connect: keep_alive.is_some(),
            partial_deadline: None,
            pre: None,
            done: false,
            batch_hint: 0,
            alloc: 0,
            ws_hold: None,
        };
        (reader, Writer::Tcp(Arc::new(wr)), settings)
    }

    /// A connection whose packets wait for the driver (its channel full) and whose next write
    /// fails (the client reset the connection) still hands those packets over before it ends:
    /// a DISCONNECT among them must not become a lost connection (which would publish the will).
    #[tokio::test]
    async fn packets_waiting_for_the_driver_reach_it_when_a_write_fails() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server, addr) = loopback_pair().await;
        let budget = Arc::new(tokio::sync::Semaphore::new(1 << 20));
        let (mut reader, mut wr, settings) = parts(server, addr, &budget, None);
        let outbox = Arc::new(Outbox::new(1, 1 << 20, settings.metrics.clone()));
        // The driver's channel is full.
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(Event::Lost { conn: 9 }).unwrap();
        let task = tokio::spawn({
            let outbox = outbox.clone();
            async move { serve(&mut reader, &mut wr, &outbox, &tx, &settings).await }
        });
        let within = Duration::from_secs(10);
        // Two PINGREQs: read, decoded, and holding their share of the read budget while they
        // wait for room in the channel.
        client.write_all(&[0xC0, 0, 0xC0, 0]).await.unwrap();
        tokio::time::timeout(within, async {
            while budget.available_permits() == 1 << 20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the connection read the packets");
        // The client resets the connection; the next write to it fails.
        client.set_zero_linger().unwrap();
        drop(client);
        outbox.push(&Packet::PingResp);
        outbox.flush(false);
        // Its task takes the batch (the outbox, limited to one packet, is no longer full) and
        // writes it in the same poll: by then the write has failed, with the channel still full.
        tokio::time::timeout(within, async {
            while outbox.full() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the connection took its batch");
        let mut got = Vec::new();
        while let Some(ev) = tokio::time::timeout(within, rx.recv())
            .await
            .expect("events")
        {
            got.push(match ev {
                Event::Packets { packets, .. } => format!("{} packets", packets.len()),
                Event::Lost { conn } => format!("lost {conn}"),
                _ => "other".to_string(),
            });
        }
        tokio::time::timeout(within, task).await.unwrap().unwrap();
        assert_eq!(got, ["lost 9", "2 packets"]);
        assert_eq!(budget.available_permits(), 1 << 20);
    }

    #[test]
    fn a_spent_read_budget_makes_a_hand_off_until_the_driver_gives_it_back() {
        let (tx, mut rx) = mpsc::channel(8);
        let budget = Arc::new(tokio::sync::Semaphore::new(150));
        let held = budget.clone().try_acquire_many_owned(100).unwrap();
        let Handled::Waiting(mut h) = hand_off(1, &tx, &budget, batch(), None) else {
            panic!("handed over without its budget");
        };
        assert!(poll(&mut h).is_pending());
        assert!(kinds(&mut rx).is_empty());
        drop(held); // the driver handled an earlier batch
        assert_eq!(poll(&mut h), Poll::Ready(true));
        assert_eq!(budget.available_permits(), 50);
        assert_eq!(kinds(&mut rx), ["packets"]);
    }

    /// [MQTT-3.1.2-24] The keep alive measures the client: time its packets spend waiting for
    /// the broker (the driver, or a queue of password checks ahead of a CONNECT) does not count
    /// against it. A client whose packet waited longer than its keep alive is not timed out as
    /// soon as the packet is taken, but a keep alive after.
    #[tokio::test]
    async fn a_wait_for_the_broker_does_not_count_against_the_keep_alive() {
        use tokio::io::AsyncWriteExt;
        let keep_alive = Duration::from_millis(300);
        let (mut client, server, addr) = loopback_pair().await;
        let budget = Arc::new(tokio::sync::Semaphore::new(1 << 20));
        let (mut reader, mut wr, settings) = parts(server, addr, &budget, Some(keep_alive));
        let outbox = Arc::new(Outbox::new(1000, 1 << 20, settings.metrics.clone()));
        // The driver's channel is full.
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(Event::Lost { conn: 9 }).unwrap();
        let _task = tokio::spawn({
            let outbox = outbox.clone();
            async move { serve(&mut reader, &mut wr, &outbox, &tx, &settings).await }
        });
        client.write_all(&[0xC0, 0]).await.unwrap();
        let within = Duration::from_secs(10);
        tokio::time::timeout(within, async {
            while budget.available_permits() == 1 << 20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the connection read the PINGREQ");
        // The PINGREQ waits twice the keep alive for the driver.
        tokio::time::sleep(2 * keep_alive).await;
        let next =
            async |rx: &mut mpsc::Receiver<Event>| match tokio::time::timeout(within, rx.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Packets { packets, .. } => format!("{} packets", packets.len()),
                Event::Lost { conn } => format!("lost {conn}"),
                Event::KeepAliveTimeout { .. } => "keep alive timeout".to_string(),
                _ => "other".to_string(),
            };
        assert_eq!(next(&mut rx).await, "lost 9");
        let taken = Instant::now();
        assert_eq!(next(&mut rx).await, "1 packets");
        // Nothing more from the client: it times out, a keep alive after its packet was taken.
        assert_eq!(next(&mut rx).await, "keep alive timeout");
        let after = taken.elapsed();
        assert!(
            after >= keep_alive * 2 / 3,
            "timed out {after:?} after its packet was taken"
        );
    }
}
