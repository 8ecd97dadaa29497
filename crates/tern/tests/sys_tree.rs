//! `$SYS` end to end: `tern serve --sys-interval 1`, a subscriber on `$SYS/#`, known traffic,
//! and the values checked against it (including the I/O counters: bytes and packets).
//!
//! Needs the admin/`$SYS` wiring in the driver, server and connections (the call points are
//! listed in `crates/tern/src/admin/handler.rs`).

mod admin_support;

use admin_support::*;
use std::collections::HashMap;
use tern_client::{Connection, builder};
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Packet, QoS};

async fn connect(
    addr: std::net::SocketAddr,
    v: tern_codec::ProtocolVersion,
    id: &str,
) -> Connection {
    let mut c = Connection::connect(addr, v).await.unwrap();
    c.send(&Packet::Connect(Box::new(builder::connect(
        v, id, true, 60,
    ))))
    .await
    .unwrap();
    match c.recv_timeout(WAIT).await.unwrap() {
        Packet::ConnAck(a) => assert_eq!(a.code, 0),
        other => panic!("{other:?}"),
    }
    c
}

/// Reads `$SYS` publications until `done` holds for the values seen so far.
async fn sys_until(
    c: &mut Connection,
    seen: &mut HashMap<String, String>,
    done: impl Fn(&HashMap<String, String>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left).await {
            Ok(Packet::Publish(p)) => {
                seen.insert(
                    p.topic.to_string(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                );
            }
            Ok(_) => {}
            Err(e) => panic!("$SYS values not reached ({e}); seen: {seen:#?}"),
        }
    }
}

#[tokio::test]
async fn sys_values_follow_known_traffic() {
    let tern = TernProcess::start(&["--sys-interval", "1"]).await;
    let mut watcher = connect(tern.mqtt, V5, "watcher").await;
    watcher
        .send(&builder::subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]))
        .await
        .unwrap();
    let mut seen = HashMap::new();
    // The whole tree arrives (retained, or at the first publication), with Mosquitto's topics.
    const TOPICS: &[&str] = &[
        "version",
        "uptime",
        "clients/connected",
        "clients/total",
        "clients/maximum",
        "clients/disconnected",
        "clients/expired",
        "messages/received",
        "messages/sent",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "publish/bytes/received",
        "publish/bytes/sent",
        "bytes/received",
        "bytes/sent",
        "retained messages/count",
        "subscriptions/count",
        "store/messages/count",
        "store/messages/bytes",
        "load/messages/received/1min",
        "load/messages/sent/5min",
        "load/publish/received/15min",
        "load/bytes/received/1min",
        "load/sockets/1min",
        "load/connections/15min",
    ];
    sys_until(&mut watcher, &mut seen, |s| {
        TOPICS
            .iter()
            .all(|t| s.contains_key(&format!("$SYS/broker/{t}")))
    })
    .await;
    assert!(seen["$SYS/broker/version"].starts_with("tern version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));

    // Known traffic: 4 PUBLISH from a 3.1.1 client, 10 payload bytes, one retained.
    let mut p = connect(tern.mqtt, V3_1_1, "publisher").await;
    p.send(&builder::publish(
        "a/1",
        &b"12"[..],
        QoS::AtMostOnce,
        false,
        None,
    ))
    .await
    .unwrap();
    p.send(&builder::publish(
        "a/2",
        &b"345"[..],
        QoS::AtLeastOnce,
        false,
        Some(1),
    ))
    .await
    .unwrap();
    p.send(&builder::publish(
        "a/3",
        &b"6"[..],
        QoS::AtMostOnce,
        false,
        None,
    ))
    .await
    .unwrap();
    p.send(&builder::publish(
        "keep/me",
        &b"7890"[..],
        QoS::AtLeastOnce,
        true,
        Some(2),
    ))
    .await
    .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            p.recv_timeout(WAIT).await.unwrap(),
            Packet::PubAck(_)
        ));
    }
    let get = |s: &HashMap<String, String>, k: &str| -> u64 {
        s.get(&format!("$SYS/broker/{k}"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Values of one publication arrive one by one: wait until all of them say so.
    let expected = |s: &HashMap<String, String>| {
        get(s, "publish/messages/received") == 4
            && get(s, "publish/bytes/received") == 10
            && get(s, "clients/connected") == 2
            && get(s, "clients/total") == 2
            && get(s, "clients/maximum") >= 2
            && get(s, "subscriptions/count") == 1
            // CONNECT x2, SUBSCRIBE, 4 PUBLISH at least (PINGREQs may add more).
            && get(s, "messages/received") >= 7
            // Bytes on the wire: at least the payloads and the headers.
            && get(s, "bytes/received") > 40
            && get(s, "bytes/sent") > 0
            && get(s, "messages/sent") >= 4
            // keep/me plus the $SYS tree itself (waited for like the others: it may come
            // last in its publication).
            && get(s, "retained messages/count") > 1
    };
    sys_until(&mut watcher, &mut seen, expected).await;
    tern.stop().await;
}
