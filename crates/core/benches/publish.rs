//! The core's cost per PUBLISH, without any I/O: `Broker::handle_packet` for one QoS 0
//! PUBLISH and the actions it returns, in the shapes `tern bench` loads the whole broker with
//! (1→1, 1→100 fan-out, 100→1 fan-in through a `#` subscriber), over MQTT 3.1.1 and 5.0.
//! The broker's profile on the network puts this part at about half of its time; this
//! benchmark measures it on its own, so a change to the routing path can be judged in
//! nanoseconds instead of through the noise of a loopback run.
//!
//! Run: `cargo bench -p tern-core --bench publish -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tern_codec::{
    ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use tern_core::{Action, Broker, Config, ConnId};

/// A broker with connected clients, and the conversation so far.
struct Setup {
    broker: Broker,
    now: Instant,
    out: Vec<Action>,
    next: ConnId,
    version: ProtocolVersion,
}

impl Setup {
    fn new(version: ProtocolVersion) -> Self {
        Self {
            broker: Broker::new(Config::default()),
            now: Instant::now(),
            out: Vec::new(),
            next: 1,
            version,
        }
    }

    fn connect(&mut self, id: &str) -> ConnId {
        let conn = self.next;
        self.next += 1;
        let connect = Connect {
            protocol: self.version,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteStr::from(id),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        };
        self.broker.handle_packet(
            conn,
            Packet::Connect(Box::new(connect)),
            self.now,
            &mut self.out,
        );
        assert!(
            self.out
                .iter()
                .any(|a| matches!(a, Action::Send(c, p) if *c == conn && matches!(**p, Packet::ConnAck(ref a) if a.code == 0))),
            "CONNACK 0 for {id}"
        );
        self.out.clear();
        conn
    }

    fn subscribe(&mut self, conn: ConnId, filter: &str) {
        let subscribe = Subscribe {
            packet_id: 1,
            filters: vec![(ByteStr::from(filter), SubscriptionOptions::default())],
            properties: Properties::default(),
        };
        self.broker
            .handle_packet(conn, Packet::Subscribe(subscribe), self.now, &mut self.out);
        self.out.clear();
    }

    /// Handles `publish` from `conn` and returns how many deliveries it produced.
    fn publish(&mut self, conn: ConnId, publish: &Publish) -> usize {
        self.broker.handle_packet(
            conn,
            Packet::Publish(publish.clone()),
            self.now,
            &mut self.out,
        );
        let n = self
            .out
            .iter()
            .filter(|a| matches!(a, Action::SendDroppable(..)))
            .count();
        self.out.clear();
        n
    }
}

/// A QoS 0 PUBLISH with `tern bench`'s topic shape and a 16-byte payload.
fn publish(topic: &str) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteStr::from(topic),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from_static(&[7; 16]),
    }
}

fn versions() -> [(ProtocolVersion, &'static str); 2] {
    [
        (ProtocolVersion::V3_1_1, "3.1.1"),
        (ProtocolVersion::V5, "5"),
    ]
}

fn one_to_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_1to1");
    for (version, name) in versions() {
        let mut s = Setup::new(version);
        let sub = s.connect("sub");
        s.subscribe(sub, "tern-bench/4242/p/0");
        let publisher = s.connect("pub");
        let p = publish("tern-bench/4242/p/0");
        assert_eq!(s.publish(publisher, &p), 1);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(s.publish(publisher, black_box(&p))))
        });
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_fanout100");
    for (version, name) in versions() {
        let mut s = Setup::new(version);
        for i in 0..100 {
            let sub = s.connect(&format!("sub{i}"));
            s.subscribe(sub, "tern-bench/4242/t");
        }
        let publisher = s.connect("pub");
        let p = publish("tern-bench/4242/t");
        assert_eq!(s.publish(publisher, &p), 100);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(s.publish(publisher, black_box(&p))))
        });
    }
    group.finish();
}

fn fan_in(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_fanin100");
    for (version, name) in versions() {
        let mut s = Setup::new(version);
        let sub = s.connect("sub");
        s.subscribe(sub, "tern-bench/4242/#");
        let publishers: Vec<(ConnId, Publish)> = (0..100)
            .map(|i| {
                let conn = s.connect(&format!("pub{i}"));
                (conn, publish(&format!("tern-bench/4242/p/{i}")))
            })
            .collect();
        for (conn, p) in &publishers {
            assert_eq!(s.publish(*conn, p), 1);
        }
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                // The publishers take turns, as they do on the network.
                let (conn, p) = &publishers[next];
                next = (next + 1) % publishers.len();
                black_box(s.publish(*conn, black_box(p)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, one_to_one, fan_out, fan_in);
criterion_main!(benches);
