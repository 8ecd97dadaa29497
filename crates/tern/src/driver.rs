//! The driver: the one task that owns the sans-IO [`Broker`] and carries out its actions.
//!
//! Connections send it batches of decoded packets over a bounded channel (a publisher that
//! outpaces the broker waits on that channel, which stops it being read: back-pressure). The
//! driver drains many events per wake-up, feeds them to the core, and appends the resulting
//! packets to the connections' outboxes.

use crate::connection::Outbox;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_codec::{DecodeError, Packet};
use tern_core::{Action, Broker, ConnId};
use tokio::sync::{mpsc, watch};

/// Most events handled before the driver carries out their actions, so outboxes fill in bursts.
const EVENT_BATCH: usize = 512;

/// What connections tell the driver.
pub(crate) enum Event {
    Open {
        conn: ConnId,
        outbox: Arc<Outbox>,
        peer: SocketAddr,
    },
    Packets {
        conn: ConnId,
        packets: Vec<Packet>,
    },
    DecodeError {
        conn: ConnId,
        err: DecodeError,
    },
    KeepAliveTimeout {
        conn: ConnId,
    },
    Lost {
        conn: ConnId,
    },
}

struct ConnEntry {
    outbox: Arc<Outbox>,
    peer: SocketAddr,
}

pub(crate) struct Driver {
    broker: Broker,
    conns: HashMap<ConnId, ConnEntry>,
    actions: Vec<Action>,
    dropped_slow: u64,
}

impl Driver {
    pub(crate) fn new(broker: Broker) -> Self {
        Self {
            broker,
            conns: HashMap::new(),
            actions: Vec::new(),
            dropped_slow: 0,
        }
    }

    /// Runs until `shutdown` turns true, then tells every client and returns.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    let now = Instant::now();
                    self.handle(ev, now);
                    for _ in 1..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(ev) => self.handle(ev, now),
                            Err(_) => break,
                        }
                    }
                    self.execute();
                }
                _ = tick.tick() => {
                    self.broker.tick(Instant::now(), &mut self.actions);
                    self.execute();
                }
            }
        }
        self.broker.shutdown(Instant::now(), &mut self.actions);
        self.execute();
        // Connections that never completed CONNECT are unknown to the core.
        for entry in self.conns.values() {
            entry.outbox.close();
        }
        tracing::info!(
            dropped_slow = self.dropped_slow,
            publish_received = self.broker.stats().publish_received,
            "broker core stopped"
        );
    }

    fn handle(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Open { conn, outbox, peer } => {
                tracing::debug!(conn, %peer, "new connection");
                self.conns.insert(conn, ConnEntry { outbox, peer });
            }
            Event::Packets { conn, packets } => {
                for packet in packets {
                    // A connection closed by an earlier action may still have packets in flight.
                    if !self.conns.contains_key(&conn) {
                        return;
                    }
                    if let Packet::Connect(c) = &packet
                        && let Some(e) = self.conns.get(&conn)
                    {
                        tracing::debug!(conn, peer = %e.peer, client_id = %c.client_id, protocol = c.protocol.level(), "CONNECT");
                    }
                    let start = self.actions.len();
                    self.broker
                        .handle_packet(conn, packet, now, &mut self.actions);
                    // Close actions must take effect before the next packet of the same batch.
                    self.apply_closes(start);
                }
            }
            Event::DecodeError { conn, err } => {
                if let Some(e) = self.conns.get(&conn) {
                    tracing::info!(conn, peer = %e.peer, error = %err, "closing connection after a bad packet");
                    self.broker.decode_error(conn, &err, now, &mut self.actions);
                    self.execute();
                }
            }
            Event::KeepAliveTimeout { conn } => {
                if let Some(e) = self.conns.get(&conn) {
                    tracing::info!(conn, peer = %e.peer, "keep alive timeout");
                    self.broker.keep_alive_timeout(conn, now, &mut self.actions);
                    self.close_now(conn);
                }
            }
            Event::Lost { conn } => {
                if self.conns.contains_key(&conn) {
                    self.broker.connection_lost(conn, now, &mut self.actions);
                    self.close_now(conn);
                }
            }
        }
    }

    /// Carries out the pending actions in order.
    fn execute(&mut self) {
        for action in self.actions.drain(..) {
            match action {
                Action::Send(conn, packet) => {
                    if let Some(e) = self.conns.get(&conn) {
                        e.outbox.push(packet);
                    }
                }
                Action::SendDroppable(conn, publish) => {
                    if let Some(e) = self.conns.get(&conn)
                        && !e.outbox.push_droppable(publish)
                    {
                        self.dropped_slow += 1;
                    }
                }
                // Records are only emitted when `Config::persistence` is on; the durable store is
                // wired in by the durability work.
                Action::Persist(_) => {}
                Action::Close(conn, reason) => {
                    if let Some(e) = self.conns.remove(&conn) {
                        tracing::debug!(conn, ?reason, "closing");
                        e.outbox.close();
                    }
                }
            }
        }
    }

    /// Executes pending actions if one of them closes a connection, so that later packets of a
    /// closed connection are ignored.
    fn apply_closes(&mut self, start: usize) {
        if self.actions[start..]
            .iter()
            .any(|a| matches!(a, Action::Close(..)))
        {
            self.execute();
        }
    }

    fn close_now(&mut self, conn: ConnId) {
        self.execute();
        if let Some(e) = self.conns.remove(&conn) {
            e.outbox.close();
        }
    }
}
