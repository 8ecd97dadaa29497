//! Connections of the bench: set-up (CONNECT, SUBSCRIBE) and the publisher and subscriber loops.
//!
//! Each connection is one task that never blocks on a write: pending output stays in a buffer
//! while the task keeps reading, so a broker that stops reading from us cannot dead-lock us.
//! Reads take whatever the kernel has (64 KiB chunks); writes carry up to `--batch` messages.

use super::report::{Shared, new_histogram};
use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_codec::{
    Ack, ByteStr, Disconnect, Packet, Peeked, Properties, ProtocolVersion, Publish, PublishView,
    QoS, decode_packet, encode_packet, peek_publish,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

/// Bytes at the start of every payload: send time (u64), sequence number (u32), publisher (u32),
/// all little-endian.
pub(crate) const HEADER: usize = 16;
/// Time allowed for one connection's handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a task sleeps before it looks at the stop flags again.
const POLL: Duration = Duration::from_millis(100);
/// Read size.
const READ_CHUNK: usize = 64 * 1024;
/// `--pacing spin`: longest a due message is held back for its batch to fill (the timer's tick,
/// so no message waits longer than with `--pacing timer`).
const SPIN_HOLD: Duration = Duration::from_millis(1);
/// `--pacing spin`: a publisher whose next write is further away than this sleeps instead.
const SPIN_WINDOW: Duration = Duration::from_millis(2);

/// Where and how to connect.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) src_ips: Vec<IpAddr>,
    pub(crate) version: ProtocolVersion,
    pub(crate) keep_alive: u16,
    pub(crate) client_prefix: String,
    /// Subscribers keep persistent sessions (`--persistent`).
    pub(crate) persistent: bool,
}

/// Session Expiry Interval (MQTT 5) of a persistent subscriber's session, in seconds.
const SESSION_EXPIRY: u32 = 3600;

/// The load each publisher and subscriber applies.
pub(crate) struct LoadSettings {
    pub(crate) qos: QoS,
    pub(crate) size: usize,
    /// Messages per second per publisher; 0 = unlimited.
    pub(crate) per_pub_rate: f64,
    /// Number of publishers (for the phase spread and sequence tracking).
    pub(crate) pubs: usize,
    pub(crate) inflight: usize,
    pub(crate) batch: usize,
    /// Publish with the retain flag (`--retain`).
    pub(crate) retain: bool,
    /// `--pacing spin`: check the clock instead of sleeping on the 1 ms timer.
    pub(crate) spin: bool,
}

/// What a connection does once set up.
pub(crate) enum Role {
    Publisher { index: usize, topic: String },
    Subscriber { filter: String },
}

/// A set-up connection: the stream and whatever was read past the last handshake packet.
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    version: ProtocolVersion,
    receive_maximum: Option<u16>,
}

fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    // Only packets the bench builds itself are encoded; they are always valid.
    if let Err(e) = encode_packet(packet, version, out) {
        debug_assert!(false, "bench packet does not encode: {e}");
    }
}

async fn tcp_connect(target: &Target, idx: usize) -> anyhow::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !target.src_ips.is_empty() {
        let ip = target.src_ips[idx % target.src_ips.len()];
        bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind source address {ip}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("cannot connect to {}", target.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Leaves the choice of the source port to connect(2) (`IP_BIND_ADDRESS_NO_PORT`). Without it,
/// bind(2) to an address with port 0 looks for a port unused by any socket on that address,
/// walking every socket bound there, TIME_WAIT ones included: after a few 10,000-connection runs
/// (90,000 sockets in TIME_WAIT) the bench spent 80 % of its time in that search and opened
/// under 1,000 connections a second. connect(2) only needs the port free for this destination.
/// Best effort: without the option the bench still works, more slowly.
#[allow(unsafe_code)]
fn bind_address_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: the descriptor is open (owned by `socket`), and the option value is a live
        // c_int whose size is passed with it.
        let _ = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

impl Conn {
    /// Reads until one whole packet is decoded.
    async fn recv(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = decode_packet(&mut self.rbuf, self.version, u32::MAX)
                .map_err(|e| anyhow!("bad packet from the broker: {e}"))?
            {
                return Ok(p);
            }
            self.rbuf.reserve(4096);
            use tokio::io::AsyncReadExt;
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut b = BytesMut::new();
        encode(packet, self.version, &mut b);
        self.stream.write_all(&b).await?;
        Ok(())
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        self.send(&tern_client::builder::subscribe(1, &[(filter, qos)]))
            .await?;
        loop {
            match self.recv().await? {
                Packet::SubAck(s) => {
                    return match s.reasons.first() {
                        Some(&code) if code < 0x80 => Ok(()),
                        Some(&code) => Err(anyhow!(
                            "SUBACK refused {filter:?} with reason code {code:#04x}"
                        )),
                        None => Err(anyhow!("empty SUBACK for {filter:?}")),
                    };
                }
                _ => continue,
            }
        }
    }
}

/// TCP connect, CONNECT, CONNACK. `persistent`: clean session 0 / clean start 0 with a session
/// expiry (5.0), so that the broker keeps the session.
async fn handshake(
    target: &Target,
    idx: usize,
    client_id: &str,
    persistent: bool,
) -> anyhow::Result<Conn> {
    let stream = tcp_connect(target, idx).await?;
    let mut conn = Conn {
        stream,
        rbuf: BytesMut::new(),
        version: target.version,
        receive_maximum: None,
    };
    let mut connect =
        tern_client::builder::connect(target.version, client_id, !persistent, target.keep_alive);
    if persistent && target.version.is_v5() {
        connect.properties.session_expiry_interval = Some(SESSION_EXPIRY);
    }
    let answer = async {
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        conn.recv().await
    };
    // The report explains a close before CONNACK (see `report::BEFORE_CONNACK`).
    let answer = answer
        .await
        .map_err(|e| anyhow!("{e:#} {}", super::report::BEFORE_CONNACK))?;
    match answer {
        Packet::ConnAck(ack) if ack.code == 0 => {
            conn.receive_maximum = ack.properties.receive_maximum;
            Ok(conn)
        }
        Packet::ConnAck(ack) => bail!("CONNACK refused with code {:#04x}", ack.code),
        other => bail!("expected CONNACK, got {}", other.name()),
    }
}

/// One publisher or subscriber: set up (at most `sem` at a time), report readiness, then run
/// until the stop flags. A subscriber returns its latency histogram.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn connection_task(
    idx: usize,
    role: Role,
    target: Arc<Target>,
    settings: Arc<LoadSettings>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    mut go: watch::Receiver<bool>,
    ready: oneshot::Sender<bool>,
) -> Option<Histogram<u32>> {
    let setup = async {
        let _permit = sem.acquire().await?;
        let id = match &role {
            Role::Publisher { index, .. } => format!("{}-p{index}", target.client_prefix),
            Role::Subscriber { .. } => format!("{}-s{idx}", target.client_prefix),
        };
        let persistent = target.persistent && matches!(role, Role::Subscriber { .. });
        let mut conn = handshake(&target, idx, &id, persistent).await?;
        if let Role::Subscriber { filter } = &role {
            conn.subscribe(filter, settings.qos).await?;
        }
        anyhow::Ok(conn)
    };
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, setup).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            shared.error(format!("{e:#}"));
            let _ = ready.send(false);
            return None;
        }
        Err(_) => {
            shared.error("connection set-up timed out".into());
            let _ = ready.send(false);
            return None;
        }
    };
    let _ = ready.send(true);
    match role {
        Role::Subscriber { .. } => {
            let hist = subscriber(conn, &settings, &shared, &target).await;
            if target.persistent {
                forget_session(&target, idx, &shared).await;
            }
            Some(hist)
        }
        Role::Publisher { index, topic } => {
            // Wait for the start signal (or for the end of the run).
            while !*go.borrow() {
                if shared.publishers_stopped() {
                    return None;
                }
                let _ = tokio::time::timeout(POLL, go.changed()).await;
            }
            publisher(conn, index, &topic, &settings, &shared, &target).await;
            None
        }
    }
}

/// Output waiting to be written, written without blocking.
struct Output {
    buf: BytesMut,
    last_write: Instant,
}

impl Output {
    fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            last_write: Instant::now(),
        }
    }

    /// Writes as much as the socket takes now.
    fn flush(&mut self, stream: &TcpStream) -> std::io::Result<()> {
        while !self.buf.is_empty() {
            match stream.try_write(&self.buf) {
                Ok(n) => {
                    self.buf.advance(n);
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues a PINGREQ when nothing was written for half the keep alive.
    fn keep_alive(&mut self, keep_alive: u16, version: ProtocolVersion) {
        if keep_alive > 0
            && self.buf.is_empty()
            && self.last_write.elapsed() >= Duration::from_secs(u64::from(keep_alive)) / 2
        {
            encode(&Packet::PingReq, version, &mut self.buf);
            self.last_write = Instant::now();
        }
    }
}

/// Reads whatever is available without waiting: the number of bytes read, or `None` when the
/// connection is closed.
fn read_available(conn: &mut Conn) -> std::io::Result<Option<usize>> {
    let mut total = 0;
    loop {
        if conn.rbuf.capacity() - conn.rbuf.len() < READ_CHUNK / 4 {
            conn.rbuf.reserve(READ_CHUNK);
        }
        match conn.stream.try_read_buf(&mut conn.rbuf) {
            Ok(0) => return Ok(None),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(total)),
            Err(e) => return Err(e),
        }
    }
}

/// Waits until the socket is readable, writable (when output is pending), `until`, or `POLL`.
async fn wait(conn: &Conn, out: &Output, until: Option<tokio::time::Instant>) {
    let limit = tokio::time::Instant::now() + POLL;
    let until = until.map_or(limit, |u| u.min(limit));
    let pending = !out.buf.is_empty();
    tokio::select! {
        _ = conn.stream.readable() => {}
        _ = conn.stream.writable(), if pending => {}
        () = tokio::time::sleep_until(until) => {}
    }
}

/// Ends the session politely (DISCONNECT) when the stream is in a clean state. `discard`
/// (MQTT 5): with a Session Expiry Interval of 0, so the broker drops a persistent session.
async fn disconnect(conn: &Conn, out: &mut Output, discard: bool) {
    if !out.buf.is_empty() {
        let _ = out.flush(&conn.stream);
    }
    if out.buf.is_empty() {
        let mut d = Disconnect::default();
        if discard && conn.version.is_v5() {
            d.properties.session_expiry_interval = Some(0);
        }
        encode(&Packet::Disconnect(d), conn.version, &mut out.buf);
        let _ = out.flush(&conn.stream);
    }
}

/// After a persistent subscriber's run (3.1.1): connect once more with clean session 1 and
/// leave, which discards the session the broker kept. MQTT 5 sessions were discarded by the
/// DISCONNECT. Failures count as errors; bounded by the handshake timeout.
async fn forget_session(target: &Target, idx: usize, shared: &Shared) {
    if target.version.is_v5() {
        return;
    }
    let id = format!("{}-s{idx}", target.client_prefix);
    let work = async {
        let mut conn = handshake(target, idx, &id, false).await?;
        conn.send(&Packet::Disconnect(Disconnect::default()))
            .await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => shared.error(format!("discarding a persistent session: {e:#}")),
        Err(_) => shared.error("discarding a persistent session timed out".into()),
    }
}

async fn publisher(
    mut conn: Conn,
    index: usize,
    topic: &str,
    s: &LoadSettings,
    shared: &Shared,
    target: &Target,
) {
    let qos = s.qos;
    let version = conn.version;
    // One PUBLISH encoded once by the codec; each message is a copy with the timestamp,
    // sequence number and packet id patched in.
    let mut template = BytesMut::new();
    encode(
        &Packet::Publish(Publish {
            dup: false,
            qos,
            retain: s.retain,
            topic: ByteStr::from(topic),
            packet_id: (qos != QoS::AtMostOnce).then_some(0x0102),
            properties: Properties::default(),
            payload: vec![b'x'; s.size].into(),
        }),
        version,
        &mut template,
    );
    let payload_at = template.len() - s.size;
    let pid_at = (qos != QoS::AtMostOnce).then(|| payload_at - 2 - usize::from(version.is_v5()));
    if let Some(at) = pid_at
        && template[at..at + 2] != [1, 2]
    {
        shared.error("cannot locate the packet id in the encoded PUBLISH".into());
        return;
    }
    let mut window = s.inflight.max(1);
    if let Some(rm) = conn.receive_maximum {
        window = window.min(usize::from(rm).max(1));
    }
    let rate = s.per_pub_rate;
    // Spread the publishers' phases over one period so that slow publishers do not fire together.
    let t0 = Instant::now()
        + if rate > 0.0 {
            Duration::from_secs_f64(index as f64 / s.pubs.max(1) as f64 / rate)
        } else {
            Duration::ZERO
        };
    let mut out = Output::new();
    let mut sent: u64 = 0;
    let mut seq: u32 = 0;
    let mut pid: u16 = 0;
    let mut inflight = 0usize;
    let publisher_id = (index as u32).to_le_bytes();
    // When message number `i` (from 0) is due.
    let due_std = |i: u64| t0 + Duration::from_secs_f64(i as f64 / rate);
    let due_at = |i: u64| tokio::time::Instant::from_std(due_std(i));
    let spin = s.spin && rate > 0.0;
    // Spin pacing holds a partial batch only when messages fall due less than SPIN_HOLD
    // apart: a publisher whose messages are further apart writes each one as it falls due.
    let may_hold = spin && 1.0 / rate < SPIN_HOLD.as_secs_f64();
    loop {
        if shared.publishers_stopped() {
            break;
        }
        let now = Instant::now();
        // Output left from a write the socket did not take is written before anything new.
        let behind = !out.buf.is_empty();
        let mut n = if behind { 0 } else { s.batch };
        if qos != QoS::AtMostOnce {
            n = n.min(window.saturating_sub(inflight));
        }
        let mut next_due = None;
        let mut due = None;
        // Spin pacing: a partial batch (of what the window allows) waits, up to SPIN_HOLD
        // after its first message fell due, for the rest of it.
        let mut hold = false;
        if rate > 0.0 && n > 0 {
            let due_total = if now < t0 {
                0
            } else {
                (now.duration_since(t0).as_secs_f64() * rate) as u64 + 1
            };
            let d = due_total.saturating_sub(sent) as usize;
            if d == 0 {
                next_due = Some(due_at(sent));
            }
            hold = may_hold && d > 0 && d < n && now < due_std(sent) + SPIN_HOLD;
            n = if hold { 0 } else { n.min(d) };
            due = Some(d);
        }
        // This write brings the publisher up to date with its schedule.
        let caught_up = n > 0 && due == Some(n);
        if n > 0 {
            let ts = shared.now_ns();
            let ts_bytes = ts.to_le_bytes();
            out.buf.reserve(n * template.len());
            for _ in 0..n {
                seq = seq.wrapping_add(1);
                let start = out.buf.len();
                out.buf.extend_from_slice(&template);
                let m = &mut out.buf[start..];
                m[payload_at..payload_at + 8].copy_from_slice(&ts_bytes);
                m[payload_at + 8..payload_at + 12].copy_from_slice(&seq.to_le_bytes());
                m[payload_at + 12..payload_at + 16].copy_from_slice(&publisher_id);
                if let Some(at) = pid_at {
                    pid = if pid == u16::MAX { 1 } else { pid + 1 };
                    m[at..at + 2].copy_from_slice(&pid.to_be_bytes());
                }
            }
            if qos != QoS::AtMostOnce {
                inflight += n;
            }
            sent += n as u64;
            let (w0, w1) = shared.window();
            let in_window = if ts >= w0 && ts < w1 { n as u64 } else { 0 };
            shared.add_sent(n as u64, in_window);
        }
        out.keep_alive(target.keep_alive, version);
        if let Err(e) = out.flush(&conn.stream) {
            shared.error(format!("publisher write: {e}"));
            return;
        }
        let got = match read_available(&mut conn) {
            Ok(Some(got)) => got,
            Ok(None) => {
                if !shared.publishers_stopped() {
                    shared.error("the broker closed a publisher's connection".into());
                }
                return;
            }
            Err(e) => {
                shared.error(format!("publisher read: {e}"));
                return;
            }
        };
        // Acknowledgements free the window; PUBREC is answered with PUBREL.
        let mut acked = 0u64;
        loop {
            match decode_packet(&mut conn.rbuf, version, u32::MAX) {
                Ok(Some(Packet::PubAck(_) | Packet::PubComp(_))) => {
                    inflight = inflight.saturating_sub(1);
                    acked += 1;
                }
                Ok(Some(Packet::PubRec(a))) => {
                    if a.reason >= 0x80 {
                        inflight = inflight.saturating_sub(1);
                        shared.error(format!("PUBREC with reason code {:#04x}", a.reason));
                    } else {
                        encode(
                            &Packet::PubRel(Ack::new(a.packet_id)),
                            version,
                            &mut out.buf,
                        );
                    }
                }
                Ok(Some(Packet::Disconnect(d))) => {
                    shared.error(format!(
                        "the broker sent DISCONNECT (reason {:#04x}) to a publisher",
                        d.reason
                    ));
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    shared.error(format!("bad packet from the broker: {e}"));
                    return;
                }
            }
        }
        if acked > 0 {
            shared.add_acked(acked);
        }
        if !out.buf.is_empty() {
            // PUBRELs just queued, or a write the socket did not take.
            if let Err(e) = out.flush(&conn.stream) {
                shared.error(format!("publisher write: {e}"));
                return;
            }
            if !out.buf.is_empty() {
                wait(&conn, &out, None).await;
            }
        } else if behind {
            // The socket took the rest at last: messages may well be due. (This used to wait
            // as if nothing were due, until the 100 ms poll: a publisher that once found the
            // socket full sent nothing for 100 ms at a time, and the broker sat idle meanwhile.)
            tokio::task::yield_now().await;
        } else if spin
            && (hold
                || ((caught_up || (n == 0 && got == 0 && next_due.is_some()))
                    && due_std(sent) <= now + SPIN_WINDOW))
        {
            // Spin pacing, waiting for the schedule only (not for the window or the socket)
            // and the next write is near: look at the clock again after the other tasks ran.
            tokio::task::yield_now().await;
        } else if n == 0 && got == 0 {
            wait(&conn, &out, next_due).await;
        } else if caught_up {
            // Everything due is written: sleep until the next message is due, as above. Going
            // round again at once wrote the messages that fell due meanwhile one or two per
            // write: 100 paced publishers made 2.4 writes per timer tick each, the bench's core
            // was saturated by those writes at 640 k msg/s fan-in (and the broker read them
            // in as many pieces), and the latency it reported was its own.
            wait(&conn, &out, Some(due_at(sent))).await;
        } else {
            // Let the subscribers on this thread run. A paced publisher that is due again by
            // the time it has written (each batch takes longer than the gap between messages)
            // used to loop here without ever yielding: the subscribers starved, and what the
            // bench reported as broker latency at 260-480 k msg/s was that wait.
            tokio::task::yield_now().await;
        }
    }
    // Give outstanding acknowledgements a moment, so QoS 1/2 flows end cleanly.
    let until = Instant::now() + Duration::from_millis(200);
    while inflight > 0 && Instant::now() < until && !shared.subscribers_stopped() {
        wait(&conn, &out, None).await;
        if !matches!(read_available(&mut conn), Ok(Some(_))) {
            return;
        }
        while let Ok(Some(p)) = decode_packet(&mut conn.rbuf, version, u32::MAX) {
            match p {
                Packet::PubAck(_) | Packet::PubComp(_) => inflight -= inflight.min(1),
                Packet::PubRec(a) => encode(
                    &Packet::PubRel(Ack::new(a.packet_id)),
                    version,
                    &mut out.buf,
                ),
                _ => {}
            }
        }
        let _ = out.flush(&conn.stream);
    }
    if s.retain {
        // [MQTT-3.3.1-6] An empty retained message deletes the topic's retained message: the
        // broker is left as the run found it.
        let clear = tern_client::builder::publish(topic, Vec::new(), QoS::AtMostOnce, true, None);
        encode(&clear, version, &mut out.buf);
    }
    disconnect(&conn, &mut out, false).await;
}

async fn subscriber(
    mut conn: Conn,
    s: &LoadSettings,
    shared: &Shared,
    target: &Target,
) -> Histogram<u32> {
    let mut hist = new_histogram();
    let version = conn.version;
    let mut last_seq = vec![0u32; if s.pubs <= 1 << 20 { s.pubs } else { 0 }];
    let mut out = Output::new();
    let mut closed = false;
    loop {
        let now = shared.now_ns();
        let (w0, w1) = shared.window();
        let mut counts = Counts::default();
        // PUBLISHes are read in place (`peek_publish`: no allocation, no copy); anything else
        // goes through the full decoder. At millions of deliveries per second the generator
        // must not be what limits the broker.
        let mut at = 0;
        loop {
            match peek_publish(&conn.rbuf[at..], version) {
                Ok(Peeked::Publish { view, len }) => {
                    at += len;
                    on_publish(&view, now, (w0, w1), &mut hist, &mut last_seq, &mut counts);
                    ack(&view, version, &mut out.buf);
                    continue;
                }
                Ok(Peeked::Incomplete) => break,
                // `peek_publish` rejects exactly the PUBLISHes `decode_packet` rejects.
                Err(e) => {
                    shared.error(format!("bad packet from the broker: {e}"));
                    closed = true;
                    break;
                }
                Ok(Peeked::Other) => {
                    conn.rbuf.advance(at);
                    at = 0;
                }
            }
            // Not a PUBLISH: decoded in full.
            match decode_packet(&mut conn.rbuf, version, u32::MAX) {
                Ok(Some(Packet::PubRel(a))) => encode(
                    &Packet::PubComp(Ack::new(a.packet_id)),
                    version,
                    &mut out.buf,
                ),
                Ok(Some(Packet::Disconnect(d))) => {
                    shared.error(format!(
                        "the broker sent DISCONNECT (reason {:#04x}) to a subscriber",
                        d.reason
                    ));
                    closed = true;
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    shared.error(format!("bad packet from the broker: {e}"));
                    closed = true;
                    break;
                }
            }
        }
        conn.rbuf.advance(at);
        let Counts {
            n,
            in_window,
            out_of_order,
        } = counts;
        if n > 0 {
            shared.add_recv(n, in_window, out_of_order);
        }
        if closed || shared.subscribers_stopped() {
            break;
        }
        out.keep_alive(target.keep_alive, version);
        if let Err(e) = out.flush(&conn.stream) {
            shared.error(format!("subscriber write: {e}"));
            return hist;
        }
        let got = match read_available(&mut conn) {
            Ok(Some(got)) => got,
            Ok(None) => {
                if !shared.subscribers_stopped() {
                    shared.error("the broker closed a subscriber's connection".into());
                }
                return hist;
            }
            Err(e) => {
                shared.error(format!("subscriber read: {e}"));
                return hist;
            }
        };
        if got == 0 {
            wait(&conn, &out, None).await;
        }
    }
    if !closed {
        disconnect(&conn, &mut out, target.persistent).await;
    }
    hist
}

/// One connection of the connection scenarios: handshake (and a subscription), timed. Storm
/// connections disconnect at once; idle ones are returned to be held.
pub(crate) async fn open_connection(
    i: usize,
    target: Arc<Target>,
    _shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    subscribe: bool,
    storm: bool,
    qos: QoS,
) -> anyhow::Result<(Option<TcpStream>, u64)> {
    let _permit = sem.acquire().await?;
    let t = Instant::now();
    let work = async {
        let id = format!("{}-c{i}", target.client_prefix);
        let mut conn = handshake(&target, i, &id, false).await?;
        if subscribe {
            let filter = format!("tern-bench/{}/idle/{i}", std::process::id());
            conn.subscribe(&filter, qos).await?;
        }
        anyhow::Ok(conn)
    };
    let mut conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("handshake timed out"))??;
    let ns = t.elapsed().as_nanos() as u64;
    if storm {
        conn.send(&Packet::Disconnect(Disconnect::default()))
            .await?;
        return Ok((None, ns));
    }
    Ok((Some(conn.stream), ns))
}

/// How many of the held connections are still open (a read finds no end of stream).
pub(crate) fn count_alive(streams: &[TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    streams
        .iter()
        .filter(|s| match s.try_read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        })
        .count()
}

/// What a subscriber counted in one read.
#[derive(Default)]
struct Counts {
    n: u64,
    in_window: u64,
    out_of_order: u64,
}

/// A delivery: its latency (publish timestamp in the payload) when it was published inside the
/// measurement window, and its order per publisher.
fn on_publish(
    p: &PublishView<'_>,
    now: u64,
    (w0, w1): (u64, u64),
    hist: &mut Histogram<u32>,
    last_seq: &mut [u32],
    c: &mut Counts,
) {
    c.n += 1;
    let Some(b) = p.payload.get(..HEADER) else {
        return;
    };
    let ts = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
    let seq = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
    let publisher = u32::from_le_bytes(b[12..16].try_into().unwrap_or_default());
    if ts >= w0 && ts < w1 {
        c.in_window += 1;
        let _ = hist.record(now.saturating_sub(ts).max(1));
    }
    if let Some(last) = last_seq.get_mut(publisher as usize) {
        if seq <= *last {
            c.out_of_order += 1;
        } else {
            *last = seq;
        }
    }
}

/// The subscriber's answer to a QoS 1 or 2 delivery.
fn ack(p: &PublishView<'_>, version: ProtocolVersion, out: &mut BytesMut) {
    match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => encode(&Packet::PubAck(Ack::new(id)), version, out),
        (QoS::ExactlyOnce, Some(id)) => encode(&Packet::PubRec(Ack::new(id)), version, out),
        _ => {}
    }
}
