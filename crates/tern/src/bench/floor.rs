//! `tern bench-floor`: a relay with no broker logic, for benchmarks only.
//!
//! It answers CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ, and copies every QoS 0 PUBLISH, byte
//! for byte, to the connections whose filters match its topic: no sessions, no queues, no
//! limits. A PUBLISH is only framed and its topic read, in place (`tern_codec::peek_publish`,
//! as the load generator reads); the other packets go through the codec. Run in the place of a
//! broker (`scripts/bench-compare` with `floor` in `BROKERS`), it shows what the machine, its
//! kernel and its host give a broker that does next to nothing: latency above the floor's is
//! the broker's, latency at it is the machine's (a host that takes the CPU away for
//! milliseconds shows in both).
//!
//! One thread. What a publisher's read carries is written to each matching subscriber at once,
//! one write per subscriber per read; it is kept in memory only while that subscriber's socket
//! is full (up to [`MAX_PENDING`], then the subscriber is dropped). With `--coalesce` it is
//! kept (up to [`COALESCE_MAX`]) and written by the subscriber's own task, which runs after
//! the other connections the same wake-up made ready: one write per subscriber for all the
//! reads of a round, as a broker batches across publishers (`floorc` in
//! `scripts/bench-compare`).
//!
//! QoS 1 is relayed the same way, as the floor under a QoS 1 broker: the publisher's PUBLISH goes
//! to the subscribers byte for byte (its packet identifier too, so it suits one publisher per
//! subscriber, as in the latency cases), the publisher gets its PUBACKs once per read, after
//! the subscribers' writes (as tern sends deliveries before acknowledgements), and the
//! subscribers' PUBACKs are read and dropped. Nothing is kept for a retry. It is not a broker:
//! QoS 2 publishes close the connection, there is no authentication, and it listens on
//! loopback only.

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use tern_codec::{
    Ack, ConnAck, Packet, Peeked, ProtocolVersion, QoS, SubAck, SubscriptionOptions, UnsubAck,
    decode_packet, encode_packet, peek_publish,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A subscriber whose socket does not take this much is dropped.
const MAX_PENDING: usize = 64 << 20;

/// Most bytes a coalescing relay leaves for a subscriber's task. A publisher's task reads
/// until tokio makes it yield (about 128 reads of up to 64 KiB), so without a bound a
/// fan-out under overload piled up megabytes per subscriber before any was written, and the
/// relay delivered nothing.
const COALESCE_MAX: usize = 64 << 10;

/// Largest packet the floor takes (the benches send small ones).
const MAX_PACKET: usize = 1 << 20;

/// `tern bench-floor` options.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Listen on HOST:PORT (loopback only).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
    pub listen: SocketAddr,
    /// Leave each subscriber's bytes (up to 64 KiB) for its own task to write, after the other
    /// reads of the same wake-up: one write per subscriber per round instead of per read.
    #[arg(long)]
    pub coalesce: bool,
}

/// Runs the relay until the process is killed.
pub fn run(args: &FloorArgs) -> anyhow::Result<u8> {
    if !args.listen.ip().is_loopback() {
        bail!("bench-floor listens on loopback only");
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    relay(listener, args.coalesce)
}

/// Relays on `listener` (on this thread) until the process ends.
pub fn relay(listener: std::net::TcpListener, coalesce: bool) -> anyhow::Result<u8> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = TcpListener::from_std(listener)?;
        let routes = Rc::new(RefCell::new(Routes::default()));
        for id in 0u64.. {
            // A failed accept (out of descriptors, a peer gone already) is that client's loss.
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Rc::new(Conn {
                id,
                stream,
                pending: RefCell::default(),
                coalesce,
                dropped: Cell::new(false),
                wake: Notify::new(),
            });
            let routes = routes.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(&conn, &routes).await;
                routes.borrow_mut().remove(conn.id);
            });
        }
        Ok(0)
    })
}

struct Conn {
    id: u64,
    stream: TcpStream,
    /// Bytes waiting for its socket, in order: what the socket did not take, and with
    /// `coalesce` what was left for the connection's own task (see [`Conn::send`]).
    pending: RefCell<BytesMut>,
    /// [`Conn::send`] leaves the bytes to the connection's task, up to [`COALESCE_MAX`].
    coalesce: bool,
    /// It took too long to read what it was sent.
    dropped: Cell<bool>,
    wake: Notify,
}

impl Conn {
    /// Writes `bytes` now if nothing is waiting, else (and whatever the socket does not take)
    /// behind what waits, for the connection's task to write. A coalescing relay leaves them
    /// all to the task, up to [`COALESCE_MAX`]; past that it writes what waits and `bytes` now.
    fn send(&self, bytes: &[u8]) {
        let mut pending = self.pending.borrow_mut();
        let mut rest = bytes;
        let write_now = if self.coalesce {
            pending.len() + bytes.len() >= COALESCE_MAX
        } else {
            pending.is_empty()
        };
        if write_now {
            // What waits goes first, and `bytes` only if all of it went.
            if !pending.is_empty() {
                let Some(n) = self.write_some(&pending) else {
                    return;
                };
                pending.advance(n);
            }
            if pending.is_empty() {
                let Some(n) = self.write_some(bytes) else {
                    return;
                };
                rest = &bytes[n..];
            }
        }
        if rest.is_empty() {
            return;
        }
        if pending.len() + rest.len() > MAX_PENDING {
            self.dropped.set(true);
        } else {
            pending.extend_from_slice(rest);
        }
        self.wake.notify_one();
    }

    /// Writes what the socket takes of `bytes` now (0 when it is full); `None` on an error,
    /// which the connection's task finds.
    fn write_some(&self, bytes: &[u8]) -> Option<usize> {
        match self.stream.try_write(bytes) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Some(0),
            Err(_) => None,
        }
    }
}

/// Filters by topic: exact ones in a map, wildcard ones in a list.
#[derive(Default)]
struct Routes {
    exact: HashMap<String, Vec<Rc<Conn>>>,
    wild: Vec<(String, Rc<Conn>)>,
}

impl Routes {
    fn add(&mut self, filter: String, conn: &Rc<Conn>) {
        self.unsubscribe(&filter, conn.id);
        if filter.contains(['+', '#']) {
            self.wild.push((filter, conn.clone()));
        } else {
            self.exact.entry(filter).or_default().push(conn.clone());
        }
    }

    fn unsubscribe(&mut self, filter: &str, id: u64) {
        if let Some(v) = self.exact.get_mut(filter) {
            v.retain(|c| c.id != id);
        }
        self.wild.retain(|(f, c)| !(c.id == id && f == filter));
    }

    fn remove(&mut self, id: u64) {
        self.exact.retain(|_, v| {
            v.retain(|c| c.id != id);
            !v.is_empty()
        });
        self.wild.retain(|(_, c)| c.id != id);
    }

    fn each_match(&self, topic: &str, mut f: impl FnMut(&Rc<Conn>)) {
        self.exact.get(topic).into_iter().flatten().for_each(&mut f);
        self.wild
            .iter()
            .filter(|(filter, _)| tern_topic::matches(filter, topic))
            .for_each(|(_, c)| f(c));
    }
}

/// Reads, answers and relays until the peer closes, sends DISCONNECT or something the floor
/// does not handle. A PUBLISH is read in place ([`peek_publish`]) and relayed as it came; the
/// other packets go through the codec.
async fn serve(conn: &Rc<Conn>, routes: &RefCell<Routes>) -> std::io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(64 << 10);
    let mut version = ProtocolVersion::V3_1_1;
    // What one read carries for each subscriber, written once when the read is handled.
    let mut out: Vec<(Rc<Conn>, Vec<u8>)> = Vec::new();
    let mut slot: HashMap<u64, usize> = HashMap::new();
    // The PUBACKs one read owes the publisher, written after what it relays.
    let mut acks = BytesMut::new();
    loop {
        if conn.dropped.get() {
            return Ok(());
        }
        let want_write = !conn.pending.borrow().is_empty();
        tokio::select! {
            r = conn.stream.readable() => {
                r?;
                match conn.stream.try_read_buf(&mut rbuf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
                let mut disconnect = false;
                while !disconnect {
                    match peek_publish(&rbuf, version).map_err(invalid)? {
                        Peeked::Incomplete if rbuf.len() > MAX_PACKET => return Err(invalid("too large")),
                        Peeked::Incomplete => break,
                        Peeked::Publish { view, len } => {
                            match (view.qos, view.packet_id) {
                                (QoS::AtMostOnce, _) => {}
                                (QoS::AtLeastOnce, Some(id)) => {
                                    let ack = Packet::PubAck(Ack::new(id));
                                    encode_packet(&ack, version, &mut acks).map_err(invalid)?;
                                }
                                _ => return Err(ErrorKind::Unsupported.into()),
                            }
                            let topic = std::str::from_utf8(view.topic).map_err(invalid)?;
                            let packet = &rbuf[..len];
                            routes.borrow().each_match(topic, |sub| {
                                let i = *slot.entry(sub.id).or_insert_with(|| {
                                    out.push((sub.clone(), Vec::new()));
                                    out.len() - 1
                                });
                                out[i].1.extend_from_slice(packet);
                            });
                            rbuf.advance(len);
                        }
                        Peeked::Other => {
                            let max = u32::try_from(MAX_PACKET).unwrap_or(u32::MAX);
                            let Some(packet) = decode_packet(&mut rbuf, version, max).map_err(invalid)? else {
                                break;
                            };
                            match answer(conn, routes, packet, &mut version)? {
                                Reply::Send(reply) => send_packet(conn, &reply, version)?,
                                Reply::Nothing => {}
                                Reply::Disconnect => disconnect = true,
                            }
                        }
                    }
                }
                // What came before a DISCONNECT is relayed too.
                for (sub, bytes) in out.drain(..) {
                    sub.send(&bytes);
                }
                slot.clear();
                if !acks.is_empty() {
                    conn.send(&acks);
                    acks.clear();
                }
                if disconnect {
                    return Ok(());
                }
            }
            r = conn.stream.writable(), if want_write => {
                r?;
                let mut pending = conn.pending.borrow_mut();
                match conn.stream.try_write(&pending) {
                    Ok(n) => pending.advance(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            () = conn.wake.notified() => {}
        }
    }
}

/// What the floor does with a packet other than PUBLISH.
enum Reply {
    Send(Packet),
    /// A subscriber's PUBACK: nothing waits for it.
    Nothing,
    Disconnect,
}

/// The answer to a packet other than PUBLISH; an error for one the floor does not take.
/// SUBSCRIBE grants every filter the QoS asked for, at most 1.
fn answer(
    conn: &Rc<Conn>,
    routes: &RefCell<Routes>,
    packet: Packet,
    version: &mut ProtocolVersion,
) -> std::io::Result<Reply> {
    Ok(Reply::Send(match packet {
        Packet::Connect(c) => {
            *version = c.protocol;
            Packet::ConnAck(ConnAck::default())
        }
        Packet::Subscribe(s) => {
            let mut routes = routes.borrow_mut();
            for (filter, _) in &s.filters {
                routes.add(filter.to_string(), conn);
            }
            let granted = |o: &SubscriptionOptions| u8::from(o.qos != QoS::AtMostOnce);
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reasons: s.filters.iter().map(|(_, o)| granted(o)).collect(),
                properties: Default::default(),
            })
        }
        Packet::Unsubscribe(u) => {
            let mut routes = routes.borrow_mut();
            for filter in &u.filters {
                routes.unsubscribe(filter, conn.id);
            }
            let n = if version.is_v5() { u.filters.len() } else { 0 };
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reasons: vec![0; n],
                properties: Default::default(),
            })
        }
        Packet::PingReq => Packet::PingResp,
        Packet::PubAck(_) => return Ok(Reply::Nothing),
        Packet::Disconnect(_) => return Ok(Reply::Disconnect),
        _ => return Err(ErrorKind::Unsupported.into()),
    }))
}

fn send_packet(conn: &Conn, packet: &Packet, version: ProtocolVersion) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    encode_packet(packet, version, &mut b).map_err(invalid)?;
    conn.send(&b);
    Ok(())
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, e)
}
