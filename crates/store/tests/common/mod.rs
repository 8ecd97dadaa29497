//! Shared by the integration tests: record samples, a proptest strategy, file helpers.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use tern_store::{Durability, LogOptions, Record, StoredMessage};

pub fn message(id: u64, payload_len: usize) -> StoredMessage {
    StoredMessage {
        id,
        topic: format!("sensors/{id}/temp"),
        payload: Bytes::from(vec![(id % 251) as u8; payload_len]),
        qos: 1,
        retain: false,
        properties: Bytes::new(),
        expires_at_ms: None,
    }
}

/// At least one of every variant, with edge values.
pub fn every_variant() -> Vec<Record> {
    let full = StoredMessage {
        id: u64::MAX,
        topic: "a/ü/€/😀".into(),
        payload: Bytes::from_static(b"\x00\xffpayload"),
        qos: 2,
        retain: true,
        properties: Bytes::from_static(&[3, 0x01, 0x01]),
        expires_at_ms: Some(1_767_225_600_000),
    };
    vec![
        Record::Session {
            client_id: "c1".into(),
            version: 5,
            expiry_interval: u32::MAX,
            disconnected_at_ms: None,
        },
        Record::Session {
            client_id: String::new(),
            version: 4,
            expiry_interval: 0,
            disconnected_at_ms: Some(u64::MAX),
        },
        Record::SessionDeleted {
            client_id: "c1".into(),
        },
        Record::Subscribed {
            client_id: "c1".into(),
            filter: "a/+/#".into(),
            options: 0b0010_1110,
            subscription_id: Some(268_435_455),
        },
        Record::Subscribed {
            client_id: "c2".into(),
            filter: "$share/g/x".into(),
            options: 1,
            subscription_id: None,
        },
        Record::Unsubscribed {
            client_id: "c1".into(),
            filter: "a/+/#".into(),
        },
        Record::Message(message(1, 256)),
        Record::Message(full.clone()),
        Record::MessageDeleted { id: 1 },
        Record::Enqueued {
            client_id: "c1".into(),
            seq: 0,
            message_id: 1,
            qos: 1,
            retain: false,
            subscription_ids: vec![],
        },
        Record::Enqueued {
            client_id: "c1".into(),
            seq: u64::MAX,
            message_id: u64::MAX,
            qos: 2,
            retain: true,
            subscription_ids: vec![1, u32::MAX, 7],
        },
        Record::Sent {
            client_id: "c1".into(),
            seq: 3,
            packet_id: u16::MAX,
        },
        Record::Released {
            client_id: "c1".into(),
            seq: 3,
        },
        Record::Completed {
            client_id: "c1".into(),
            seq: 3,
        },
        Record::InboundQos2 {
            client_id: "c1".into(),
            packet_id: 1,
        },
        Record::InboundQos2Released {
            client_id: "c1".into(),
            packet_id: 1,
        },
        Record::Retained(full.clone()),
        Record::RetainedDeleted {
            topic: "a/b".into(),
        },
        Record::PendingWill {
            client_id: "c1".into(),
            due_at_ms: 42,
            message: full,
        },
        Record::PendingWillDone {
            client_id: "c1".into(),
        },
        Record::SessionOwner {
            client_id: "c1".into(),
            username: "ü-user".into(),
        },
    ]
}

/// A record of about 40 bytes, distinct per `i`.
pub fn small(i: u64) -> Record {
    Record::Completed {
        client_id: format!("client-{}", i % 1000),
        seq: i,
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-z/+#]{0,8}"]
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn stored_message() -> impl Strategy<Value = StoredMessage> {
    (
        any::<u64>(),
        text(),
        blob(),
        any::<u8>(),
        any::<bool>(),
        blob(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(id, topic, payload, qos, retain, properties, expires_at_ms)| StoredMessage {
                id,
                topic,
                payload,
                qos,
                retain,
                properties,
                expires_at_ms,
            },
        )
}

pub fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (text(), any::<u8>(), any::<u32>(), any::<Option<u64>>()).prop_map(
            |(client_id, version, expiry_interval, disconnected_at_ms)| Record::Session {
                client_id,
                version,
                expiry_interval,
                disconnected_at_ms
            }
        ),
        text().prop_map(|client_id| Record::SessionDeleted { client_id }),
        (text(), text(), any::<u8>(), any::<Option<u32>>()).prop_map(
            |(client_id, filter, options, subscription_id)| Record::Subscribed {
                client_id,
                filter,
                options,
                subscription_id
            }
        ),
        (text(), text()).prop_map(|(client_id, filter)| Record::Unsubscribed { client_id, filter }),
        stored_message().prop_map(Record::Message),
        any::<u64>().prop_map(|id| Record::MessageDeleted { id }),
        (
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..4)
        )
            .prop_map(
                |(client_id, seq, message_id, qos, retain, subscription_ids)| Record::Enqueued {
                    client_id,
                    seq,
                    message_id,
                    qos,
                    retain,
                    subscription_ids
                }
            ),
        (text(), any::<u64>(), any::<u16>()).prop_map(|(client_id, seq, packet_id)| Record::Sent {
            client_id,
            seq,
            packet_id
        }),
        (text(), any::<u64>()).prop_map(|(client_id, seq)| Record::Released { client_id, seq }),
        (text(), any::<u64>()).prop_map(|(client_id, seq)| Record::Completed { client_id, seq }),
        (text(), any::<u16>()).prop_map(|(client_id, packet_id)| Record::InboundQos2 {
            client_id,
            packet_id
        }),
        (text(), any::<u16>()).prop_map(|(client_id, packet_id)| Record::InboundQos2Released {
            client_id,
            packet_id
        }),
        stored_message().prop_map(Record::Retained),
        text().prop_map(|topic| Record::RetainedDeleted { topic }),
        (text(), any::<u64>(), stored_message()).prop_map(|(client_id, due_at_ms, message)| {
            Record::PendingWill {
                client_id,
                due_at_ms,
                message,
            }
        }),
        text().prop_map(|client_id| Record::PendingWillDone { client_id }),
        (text(), text()).prop_map(|(client_id, username)| Record::SessionOwner {
            client_id,
            username
        }),
    ]
}

/// Options for tests that are not about fsync: fast.
pub fn fast() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    }
}

/// Segment files in `dir`, ascending.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:020}.log"))
}

/// Frame boundaries of a segment file: (offset, end) of each frame after the 20-byte header.
pub fn frames(path: &Path) -> Vec<(usize, usize)> {
    let data = fs::read(path).unwrap();
    let mut pos = 20;
    let mut v = Vec::new();
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 8 + len;
        assert!(end <= data.len());
        v.push((pos, end));
        pos = end;
    }
    v
}
