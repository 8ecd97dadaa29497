//! The core's cost per PUBLISH, without any I/O: `Broker::handle_packet` for one QoS 0
//! PUBLISH and the actions it returns, in the shapes `tern bench` loads the whole broker with
//! (1→1, 1→100 fan-out, 100→1 fan-in through a `#` subscriber), over MQTT 3.1.1 and 5.0, and
//! a shared group whose members are nearly all offline.
//! The broker's profile on the network puts this part at about half of its time; this
//! benchmark measures it on its own, so a change to the routing path can be judged in
//! nanoseconds instead of through the noise of a loopback run.
//!
//! Run: `cargo bench -p tern-core --bench publish -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tern_codec::{ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS};
use tern_core::{Action, Config, ConnId, Droppable};

// The core tests' deterministic driver: clients connect and subscribe through it.
#[path = "../tests/harness/mod.rs"]
mod harness;
use harness::Harness;

/// A broker with the clients of one case connected.
fn setup() -> Harness {
    Harness::new(Config::default())
}

/// Handles `publish` from `conn` and returns how many deliveries it produced; like the broker's
/// driver, gives the message back for reuse once its deliveries are dropped. (Named for
/// `scripts/bench-instructions`, which counts the instructions under this function.)
#[inline(never)]
fn publish_once(h: &mut Harness, conn: ConnId, publish: &Publish) -> usize {
    h.broker
        .handle_packet(conn, Packet::Publish(publish.clone()), h.now, &mut h.out);
    let mut n = 0;
    let mut forwarded = None;
    for action in h.out.drain(..) {
        match action {
            Action::SendDroppable(_, d) => {
                n += 1;
                if let Droppable::Forward(f) = d {
                    forwarded = Some(f.msg);
                }
            }
            Action::Fanout(f) => {
                n += f.conns.len();
                forwarded = Some(f.forward.msg);
            }
            _ => {}
        }
    }
    if let Some(msg) = forwarded {
        h.broker.recycle(msg);
    }
    n
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
        let mut h = setup();
        let sub = h.connect(version, "sub", true, None);
        h.subscribe(sub, "tern-bench/4242/p/0", QoS::AtMostOnce);
        let publisher = h.connect(version, "pub", true, None);
        let p = publish("tern-bench/4242/p/0");
        assert_eq!(publish_once(&mut h, publisher, &p), 1);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(publish_once(&mut h, publisher, black_box(&p))))
        });
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_fanout100");
    for (version, name) in versions() {
        let mut h = setup();
        for i in 0..100 {
            let sub = h.connect(version, &format!("sub{i}"), true, None);
            h.subscribe(sub, "tern-bench/4242/t", QoS::AtMostOnce);
        }
        let publisher = h.connect(version, "pub", true, None);
        let p = publish("tern-bench/4242/t");
        assert_eq!(publish_once(&mut h, publisher, &p), 100);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(publish_once(&mut h, publisher, black_box(&p))))
        });
    }
    group.finish();
}

fn fan_in(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_fanin100");
    for (version, name) in versions() {
        let mut h = setup();
        let sub = h.connect(version, "sub", true, None);
        h.subscribe(sub, "tern-bench/4242/#", QoS::AtMostOnce);
        let publishers: Vec<(ConnId, Publish)> = (0..100)
            .map(|i| {
                let conn = h.connect(version, &format!("pub{i}"), true, None);
                (conn, publish(&format!("tern-bench/4242/p/{i}")))
            })
            .collect();
        for (conn, p) in &publishers {
            assert_eq!(publish_once(&mut h, *conn, p), 1);
        }
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                // The publishers take turns, as they do on the network.
                let (conn, p) = &publishers[next];
                next = (next + 1) % publishers.len();
                black_box(publish_once(&mut h, *conn, black_box(p)))
            })
        });
    }
    group.finish();
}

/// A shared group of 10,000 members, of which two are online (workers with persistent sessions
/// under changing client ids leave their sessions behind until they expire): each message goes
/// to one online member. MQTT 3.1.1 only.
fn shared_mostly_offline(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_shared_10000_offline");
    let version = ProtocolVersion::V3_1_1;
    let mut h = setup();
    for i in 0..10_000 {
        let member = h.connect(version, &format!("gone{i}"), false, None);
        h.subscribe(member, "$share/workers/jobs", QoS::AtMostOnce);
        if i % 5000 != 0 {
            h.lose(member);
        }
    }
    let publisher = h.connect(version, "pub", true, None);
    let p = publish("jobs");
    assert_eq!(publish_once(&mut h, publisher, &p), 1);
    group.bench_function(BenchmarkId::from_parameter("3.1.1"), |b| {
        b.iter(|| black_box(publish_once(&mut h, publisher, black_box(&p))))
    });
    group.finish();
}

criterion_group!(benches, one_to_one, fan_out, fan_in, shared_mostly_offline);
criterion_main!(benches);
