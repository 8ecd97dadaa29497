//! `tern bench-floor`: a relay with no broker logic, for benchmarks only.
//!
//! It answers CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ, and copies every QoS 0 PUBLISH, byte
//! for byte, to the connections whose filters match its topic: no sessions, no queues, no
//! limits, no checks beyond the framing. Run in the place of a broker (`scripts/bench-compare`
//! with `floor` in `BROKERS`), it shows what the machine, its kernel and its host give a broker
//! that does next to nothing: latency above the floor's is the broker's, latency at it is the
//! machine's (a host that takes the CPU away for milliseconds shows in both).
//!
//! One thread. What a publisher's read carries is written to each matching subscriber at once,
//! one write per subscriber per read; it is kept in memory only while that subscriber's socket
//! is full (up to [`MAX_PENDING`], then the subscriber is dropped). It is not a broker: QoS 1
//! and 2 publishes close the connection, there is no authentication, and it listens on
//! loopback only.

use anyhow::{Context, bail};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A subscriber whose socket does not take this much is dropped.
const MAX_PENDING: usize = 64 << 20;

/// `tern bench-floor` options.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Listen on HOST:PORT (loopback only).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
    pub listen: SocketAddr,
}

/// Runs the relay until the process is killed.
pub fn run(args: &FloorArgs) -> anyhow::Result<u8> {
    if !args.listen.ip().is_loopback() {
        bail!("bench-floor listens on loopback only");
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    relay(listener)
}

/// Relays on `listener` (on this thread) until the process ends.
pub fn relay(listener: std::net::TcpListener) -> anyhow::Result<u8> {
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
    /// Bytes its socket did not take yet; written by the connection's own task, in order.
    pending: RefCell<Vec<u8>>,
    /// It took too long to read what it was sent.
    dropped: Cell<bool>,
    wake: Notify,
}

impl Conn {
    /// Writes `bytes` now if nothing is waiting, else (and whatever the socket does not take)
    /// behind what waits, for the connection's task to write.
    fn send(&self, bytes: &[u8]) {
        let mut pending = self.pending.borrow_mut();
        let mut rest = bytes;
        if pending.is_empty() {
            match self.stream.try_write(bytes) {
                Ok(n) => rest = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return, // its task finds the error
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
/// does not handle.
async fn serve(conn: &Rc<Conn>, routes: &RefCell<Routes>) -> std::io::Result<()> {
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut v5 = false;
    // What one read carries for each subscriber, written once when the read is handled.
    let mut out: Vec<(Rc<Conn>, Vec<u8>)> = Vec::new();
    let mut slot: HashMap<u64, usize> = HashMap::new();
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
                let mut at = 0;
                let mut disconnect = false;
                while let Some((first, body, end)) = frame(&rbuf[at..])? {
                    let packet = &rbuf[at..at + end];
                    let body = &packet[body..];
                    match first >> 4 {
                        1 => {
                            // CONNECT: protocol name, then the level (5 for MQTT 5).
                            let name = usize::from(u16::from_be_bytes(two(body)?));
                            v5 = body.get(2 + name) == Some(&5);
                            let ack: &[u8] = if v5 { &[0x20, 3, 0, 0, 0] } else { &[0x20, 2, 0, 0] };
                            conn.send(ack);
                        }
                        3 => {
                            if first & 0x06 != 0 {
                                return Err(ErrorKind::Unsupported.into()); // QoS 1/2
                            }
                            let len = usize::from(u16::from_be_bytes(two(body)?));
                            let topic = body.get(2..2 + len).ok_or(ErrorKind::InvalidData)?;
                            let topic = std::str::from_utf8(topic).map_err(|_| ErrorKind::InvalidData)?;
                            routes.borrow().each_match(topic, |sub| {
                                let i = *slot.entry(sub.id).or_insert_with(|| {
                                    out.push((sub.clone(), Vec::new()));
                                    out.len() - 1
                                });
                                out[i].1.extend_from_slice(packet);
                            });
                        }
                        8 | 10 => subscription(conn, routes, first >> 4 == 8, body, v5)?,
                        12 => conn.send(&[0xD0, 0]),
                        14 => disconnect = true,
                        _ => {}
                    }
                    at += end;
                    if disconnect {
                        break;
                    }
                }
                rbuf.drain(..at);
                // What came before a DISCONNECT is relayed too.
                for (sub, bytes) in out.drain(..) {
                    sub.send(&bytes);
                }
                slot.clear();
                if disconnect {
                    return Ok(());
                }
            }
            r = conn.stream.writable(), if want_write => {
                r?;
                let mut pending = conn.pending.borrow_mut();
                match conn.stream.try_write(&pending) {
                    Ok(n) => drop(pending.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            () = conn.wake.notified() => {}
        }
    }
}

/// SUBSCRIBE (`sub`) or UNSUBSCRIBE: every filter granted at QoS 0 (removed), then the answer.
fn subscription(
    conn: &Rc<Conn>,
    routes: &RefCell<Routes>,
    sub: bool,
    body: &[u8],
    v5: bool,
) -> std::io::Result<()> {
    let bad = || std::io::Error::from(ErrorKind::InvalidData);
    let pid = two(body)?;
    let mut i = 2;
    if v5 {
        let (props, n) = varint(&body[2..])?.ok_or_else(bad)?;
        i += n + props;
    }
    let mut codes = Vec::new();
    while i < body.len() {
        let len = usize::from(u16::from_be_bytes(two(&body[i..])?));
        let filter = body.get(i + 2..i + 2 + len).ok_or_else(bad)?;
        let filter = String::from_utf8(filter.to_vec()).map_err(|_| bad())?;
        i += 2 + len;
        if sub {
            i += 1; // subscription options
            routes.borrow_mut().add(filter, conn);
        } else {
            routes.borrow_mut().unsubscribe(&filter, conn.id);
        }
        codes.push(0u8);
    }
    let kind = if sub { 0x90 } else { 0xB0 };
    let mut ack = vec![kind, 0, pid[0], pid[1]];
    if v5 {
        ack.push(0); // no properties
    }
    if sub || v5 {
        ack.extend_from_slice(&codes);
    }
    // One byte of remaining length (up to 127) is enough for what the benches subscribe to.
    ack[1] = u8::try_from(ack.len() - 2)
        .ok()
        .filter(|&n| n < 0x80)
        .ok_or_else(bad)?;
    conn.send(&ack);
    Ok(())
}

fn two(b: &[u8]) -> std::io::Result<[u8; 2]> {
    b.get(..2)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| ErrorKind::InvalidData.into())
}

/// Largest packet the floor takes (the benches send small ones).
const MAX_PACKET: usize = 1 << 20;

/// An MQTT variable byte integer: (value, bytes it took); `Ok(None)` while incomplete, an
/// error when its fourth byte still says "more".
fn varint(b: &[u8]) -> std::io::Result<Option<(usize, usize)>> {
    let mut v = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        v |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= 4 {
        return Err(ErrorKind::InvalidData.into());
    }
    Ok(None)
}

/// The whole packet at the start of `buf`: (first byte, where its body starts, its length);
/// `Ok(None)` while incomplete, an error for a bad or oversized length.
fn frame(buf: &[u8]) -> std::io::Result<Option<(u8, usize, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, n)) = varint(&buf[1..])? else {
        return Ok(None);
    };
    if len > MAX_PACKET {
        return Err(ErrorKind::InvalidData.into());
    }
    let end = 1 + n + len;
    Ok((buf.len() >= end).then_some((first, 1 + n, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_varints() {
        assert_eq!(varint(&[0x7F]).unwrap(), Some((127, 1)));
        assert_eq!(varint(&[0x80, 0x01]).unwrap(), Some((128, 2)));
        assert_eq!(varint(&[0x80]).unwrap(), None); // incomplete
        assert!(varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err()); // five bytes
        assert_eq!(frame(&[0xC0, 0x00]).unwrap(), Some((0xC0, 2, 2)));
        assert_eq!(frame(&[0x30, 0x03, 0, 1]).unwrap(), None); // incomplete
        assert_eq!(
            frame(&[0x30, 0x03, 0, 1, b'a', 0xC0]).unwrap(),
            Some((0x30, 2, 5))
        );
        assert!(frame(&[0x30, 0xFF, 0xFF, 0x7F]).is_err()); // 2 MiB: over MAX_PACKET
    }
}
