//! A deterministic driver for the sans-IO core: connections are numbers, time is a value.
#![allow(dead_code)]

use bytes::Bytes;
use std::time::{Duration, Instant};
use tern_codec::{
    Ack, ByteStr, ConnAck, Connect, Packet, Properties, PropertyValues, ProtocolVersion, Publish,
    QoS, Subscribe, SubscriptionOptions, Will,
};
use tern_core::{Action, Broker, Config, ConnId, Droppable};

pub struct Harness {
    pub broker: Broker,
    pub now: Instant,
    pub out: Vec<Action>,
    next_conn: ConnId,
    /// The protocol version each connection sent CONNECT with, to build the PUBLISH of a
    /// forwarded message as the I/O layer would.
    versions: std::collections::HashMap<ConnId, ProtocolVersion>,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        Self {
            broker: Broker::new(config),
            now: Instant::now(),
            out: Vec::new(),
            next_conn: 1,
            versions: Default::default(),
        }
    }

    /// A broker with persistence on and a wall clock starting at `unix_ms`.
    pub fn persistent(config: Config, unix_ms: u64) -> Self {
        let mut h = Self::new(Config {
            persistence: true,
            ..config
        });
        h.broker.set_wall_clock(h.now, unix_ms);
        h
    }

    /// Removes and returns the durable records emitted so far.
    pub fn records(&mut self) -> Vec<tern_store::Record> {
        let mut records = Vec::new();
        self.out.retain(|a| match a {
            Action::Persist(r) => {
                records.push((**r).clone());
                false
            }
            _ => true,
        });
        records
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.broker.tick(self.now, &mut self.out);
    }

    pub fn packet(&mut self, conn: ConnId, p: Packet) {
        if let Packet::Connect(c) = &p {
            self.versions.insert(conn, c.protocol);
        }
        self.broker.handle_packet(conn, p, self.now, &mut self.out);
    }

    /// A packet decoded from (as slices of) the socket read `read`, as tern's driver feeds it.
    pub fn packet_from_read(&mut self, conn: ConnId, p: Packet, read: tern_core::ReadRef) {
        self.broker
            .handle_packet_from_read(conn, p, read, self.now, &mut self.out);
    }

    /// Connects a client, returning its connection id and CONNACK.
    pub fn connect_with(&mut self, c: Connect) -> (ConnId, ConnAck) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.packet(conn, Packet::Connect(Box::new(c)));
        let ack = self
            .take_first(conn, |p| matches!(p, Packet::ConnAck(_)))
            .and_then(|p| match p {
                Packet::ConnAck(a) => Some(a),
                _ => None,
            })
            .expect("CONNACK");
        (conn, ack)
    }

    pub fn connect(
        &mut self,
        version: ProtocolVersion,
        id: &str,
        clean: bool,
        expiry: Option<u32>,
    ) -> ConnId {
        let mut c = connect(version, id, clean);
        c.properties.session_expiry_interval = expiry;
        let (conn, ack) = self.connect_with(c);
        assert_eq!(ack.code, 0);
        conn
    }

    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) {
        self.subscribe_opts(
            conn,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        );
    }

    pub fn subscribe_opts(
        &mut self,
        conn: ConnId,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> Vec<u8> {
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(id);
        self.packet(
            conn,
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(ByteStr::from(filter), options)],
                properties,
            }),
        );
        self.take_first(conn, |p| matches!(p, Packet::SubAck(_)))
            .and_then(|p| match p {
                Packet::SubAck(s) => Some(s.reasons),
                _ => None,
            })
            .expect("SUBACK")
    }

    pub fn publish(
        &mut self,
        conn: ConnId,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
        pid: Option<u16>,
    ) {
        self.publish_props(
            conn,
            topic,
            payload,
            qos,
            retain,
            pid,
            Properties::default(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publish_props(
        &mut self,
        conn: ConnId,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
        pid: Option<u16>,
        properties: Properties,
    ) {
        self.packet(
            conn,
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain,
                topic: ByteStr::from(topic),
                packet_id: pid,
                properties,
                payload: Bytes::copy_from_slice(payload.as_bytes()),
            }),
        );
    }

    pub fn ack(&mut self, conn: ConnId, p: &Publish) {
        self.packet(conn, Packet::PubAck(Ack::new(p.packet_id.unwrap())));
    }

    /// Removes and returns the first packet sent to `conn` that satisfies `pred`.
    pub fn take_first(&mut self, conn: ConnId, pred: impl Fn(&Packet) -> bool) -> Option<Packet> {
        let i = self
            .out
            .iter()
            .position(|a| matches!(a, Action::Send(c, p) if *c == conn && pred(p)))?;
        match self.out.remove(i) {
            Action::Send(_, p) => Some(*p),
            _ => None,
        }
    }

    /// Removes and returns the packets sent to `conn` so far (droppable ones included).
    pub fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        let version = *self
            .versions
            .get(&conn)
            .expect("take: a connection that sent CONNECT through Harness::packet");
        let mut mine = Vec::new();
        self.out.retain_mut(|a| match a {
            Action::Send(c, p) if *c == conn => {
                mine.push((**p).clone());
                false
            }
            Action::SendDroppable(c, d) if *c == conn => {
                mine.push(Packet::Publish(match d {
                    Droppable::Forward(f) => f.publish(version),
                    Droppable::Own(p) => (**p).clone(),
                }));
                false
            }
            Action::Fanout(f) => {
                // One message for several connections: this one's copy is taken out.
                if let Some(i) = f.conns.iter().position(|c| *c == conn) {
                    f.conns.remove(i);
                    mine.push(Packet::Publish(f.forward.publish(version)));
                }
                !f.conns.is_empty()
            }
            _ => true,
        });
        mine
    }

    pub fn publishes(&mut self, conn: ConnId) -> Vec<Publish> {
        self.take(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Removes the PauseReading (false) and ResumeReading (true) actions for `conn` and returns
    /// them in order.
    pub fn reading(&mut self, conn: ConnId) -> Vec<bool> {
        let mut got = Vec::new();
        self.out.retain(|a| match a {
            Action::PauseReading(c) if *c == conn => {
                got.push(false);
                false
            }
            Action::ResumeReading(c) if *c == conn => {
                got.push(true);
                false
            }
            _ => true,
        });
        got
    }

    /// True when a Close for `conn` was emitted (and removes it).
    pub fn closed(&mut self, conn: ConnId) -> bool {
        let before = self.out.len();
        self.out
            .retain(|a| !matches!(a, Action::Close(c, _) if *c == conn));
        before != self.out.len()
    }

    pub fn lose(&mut self, conn: ConnId) {
        self.broker.connection_lost(conn, self.now, &mut self.out);
    }
}

pub fn connect(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        client_id: ByteStr::from(id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn will(topic: &str, payload: &str, delay: Option<u32>) -> Will {
    let properties: Properties = PropertyValues {
        will_delay_interval: delay,
        ..Default::default()
    }
    .into();
    Will {
        topic: ByteStr::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    }
}

/// Access control for tests about reading: everyone may connect, publish and subscribe, and may
/// receive a message on a topic when `F` says so.
pub struct ReadIf<F>(pub F);

impl<F: Fn(&tern_core::ClientInfo, &str) -> bool + Send> tern_core::AccessControl for ReadIf<F> {
    fn authenticate(&self, _: &tern_core::ClientInfo, _: Option<&[u8]>) -> tern_core::AuthDecision {
        tern_core::AuthDecision::Allow
    }
    fn can_publish(&self, _: &tern_core::ClientInfo, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &tern_core::ClientInfo, _: &str) -> bool {
        true
    }
    fn can_receive(&self, info: &tern_core::ClientInfo, topic: &str) -> bool {
        (self.0)(info, topic)
    }
}
