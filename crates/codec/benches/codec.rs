//! Decoding and encoding the packets a broker handles most: a small QoS 0 PUBLISH, and a QoS 1
//! MQTT 5 PUBLISH with a few properties.

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tern_codec::{
    Packet, PropertyValues, ProtocolVersion, Publish, QoS, decode_packet, encode_packet,
};

fn qos0() -> Packet {
    Packet::Publish(Publish {
        topic: "sensors/kitchen/temperature".into(),
        payload: Bytes::from_static(b"0123456789abcdef"),
        ..Publish::default()
    })
}

fn qos1_v5() -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "sensors/kitchen/temperature".into(),
        packet_id: Some(42),
        properties: PropertyValues {
            message_expiry_interval: Some(3600),
            content_type: Some("application/json".into()),
            user_properties: vec![("source".into(), "bench".into())],
            ..Default::default()
        }
        .into(),
        payload: Bytes::from_static(b"{\"celsius\":21.5}"),
        ..Publish::default()
    })
}

fn bench(c: &mut Criterion) {
    for (name, packet, version) in [
        ("publish_qos0_v311", qos0(), ProtocolVersion::V3_1_1),
        ("publish_qos1_v5_props", qos1_v5(), ProtocolVersion::V5),
    ] {
        let mut encoded = BytesMut::new();
        encode_packet(&packet, version, &mut encoded).expect("encodes");
        let encoded = encoded.freeze();

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        // The copy into a fresh buffer (what a socket read provides) is setup, not measured.
        group.bench_function("decode", |b| {
            b.iter_batched(
                || BytesMut::from(&encoded[..]),
                |mut buf| decode_packet(black_box(&mut buf), version, u32::MAX).expect("decodes"),
                BatchSize::SmallInput,
            )
        });
        let mut out = BytesMut::with_capacity(1024);
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_packet(black_box(&packet), version, &mut out).expect("encodes");
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
