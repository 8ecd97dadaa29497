//! The admin views and operations of the core (`inspect.rs`) and the `$SYS` tree (`sys.rs`),
//! checked against known traffic on the sans-IO broker.

mod harness;

use bytes::Bytes;
use harness::*;
use std::collections::HashMap;
use std::time::Duration;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Packet, Properties, PropertyValues, QoS, reason};
use tern_core::inspect::{AdminError, AdminPublish};
use tern_core::{Action, CloseReason, Config, IoCounters, Page, PageRequest, SysTree};

fn all() -> PageRequest {
    PageRequest::all()
}

fn sys_map(values: &[(String, String)]) -> HashMap<String, String> {
    values.iter().cloned().collect()
}

#[test]
fn clients_and_sessions_are_listed() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V5, "alpha", true, Some(600));
    let mut c = connect(V3_1_1, "beta", false);
    c.keep_alive = 30;
    c.username = Some("bob".into());
    let (b, _) = h.connect_with(c);
    h.subscribe(a, "x/#", QoS::AtLeastOnce);
    h.subscribe(b, "$share/g/y/+", QoS::AtMostOnce);

    let clients = h.broker.clients(&all()).items;
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[0].client_id, "alpha");
    assert_eq!(clients[0].conn, a);
    assert_eq!(clients[0].protocol, V5);
    assert_eq!(clients[0].keep_alive, 60);
    assert_eq!(clients[0].connected_at, Some(h.now));
    assert_eq!(clients[0].session_expiry, 600);
    assert_eq!(clients[1].client_id, "beta");
    assert_eq!(clients[1].keep_alive, 30);
    assert_eq!(clients[1].username.as_deref(), Some("bob"));
    assert_eq!(h.broker.conn_client_id(b), Some("beta"));

    // beta goes offline; its session stays (clean session 0).
    h.lose(b);
    h.advance(10);
    assert_eq!(h.broker.clients(&all()).items.len(), 1);
    let sessions = h.broker.sessions(&all(), h.now).items;
    assert_eq!(sessions.len(), 2);
    let beta = &sessions[1];
    assert_eq!(beta.client_id, "beta");
    assert_eq!(beta.conn, None);
    let left = beta.expires_in.expect("3.x persistent session expires");
    assert_eq!(
        left,
        Duration::from_secs(u64::from(Config::default().v3_session_expiry) - 10)
    );
    assert_eq!(beta.subscriptions.len(), 1);
    assert_eq!(beta.subscriptions[0].share_group.as_deref(), Some("g"));
    assert!(!beta.subscriptions[0].online);
    assert_eq!(
        sessions[0].expires_in, None,
        "online sessions do not expire"
    );

    let subs = h.broker.subscriptions(None, &all()).items;
    assert_eq!(
        subs.iter()
            .map(|s| (s.client_id.as_str(), s.filter.as_str()))
            .collect::<Vec<_>>(),
        [("alpha", "x/#"), ("beta", "$share/g/y/+")]
    );
    assert_eq!(subs[0].qos, QoS::AtLeastOnce);
    assert_eq!(h.broker.subscriptions(Some("beta"), &all()).items.len(), 1);
}

#[test]
fn listings_come_a_page_at_a_time() {
    // A listing runs on the core: it walks the entries once and builds only the page asked
    // for. Each page starts after the last key of the one before (its `next`).
    let mut h = Harness::new(Config::default());
    let mut conns = Vec::new();
    for i in [5, 1, 4, 2, 3] {
        let c = h.connect(V5, &format!("c{i}"), false, Some(600));
        h.subscribe(c, &format!("t/{i}/b"), QoS::AtMostOnce);
        h.subscribe(c, &format!("t/{i}/a"), QoS::AtMostOnce);
        h.publish(c, &format!("r/{i}"), "x", QoS::AtMostOnce, true, None);
        conns.push(c);
    }
    h.lose(conns[0]); // c5: offline, its session stays
    // Every page of a listing, two entries at a time: (entries, total) of each.
    let walk = |list: &dyn Fn(&PageRequest) -> Page<String>| {
        let mut request = PageRequest::first(2);
        let mut pages = Vec::new();
        loop {
            let page = list(&request);
            pages.push((page.items, page.total));
            assert!(pages.len() <= 10, "the pages do not end");
            match page.next {
                Some(n) => request.after = Some(n),
                None => return pages,
            }
        }
    };
    let b = &h.broker;
    let clients = walk(&|p| b.clients(p).map(|c| c.client_id));
    assert_eq!(
        clients,
        [
            (vec!["c1".into(), "c2".into()], 4),
            (vec!["c3".into(), "c4".into()], 4)
        ]
    );
    let sessions = walk(&|p| b.sessions(p, h.now).map(|s| s.client_id));
    let ids: Vec<_> = sessions.iter().flat_map(|(ids, _)| ids.clone()).collect();
    assert_eq!(ids, ["c1", "c2", "c3", "c4", "c5"]);
    assert_eq!(sessions.len(), 3);
    let subscriptions = walk(&|p| {
        b.subscriptions(None, p)
            .map(|s| format!("{} {}", s.client_id, s.filter))
    });
    let subs: Vec<_> = subscriptions.iter().flat_map(|(s, _)| s.clone()).collect();
    assert_eq!(subs.len(), 10);
    assert_eq!(&subs[..3], ["c1 t/1/a", "c1 t/1/b", "c2 t/2/a"]);
    assert!(subscriptions.iter().all(|(_, total)| *total == 10));
    // One client's, after a cursor within them.
    let page = b.subscriptions(
        Some("c3"),
        &PageRequest {
            after: Some("c3\0t/3/a".into()),
            limit: 5,
        },
    );
    assert_eq!(page.items.len(), 1);
    assert_eq!((page.items[0].filter.as_str(), page.total), ("t/3/b", 2));
    let retained = walk(&|p| {
        b.retained_messages(Some("r/+"), p, h.now)
            .unwrap()
            .map(|m| m.topic.to_string())
    });
    let topics: Vec<_> = retained.iter().flat_map(|(t, _)| t.clone()).collect();
    assert_eq!(topics, ["r/1", "r/2", "r/3", "r/4", "r/5"]);
}

#[test]
fn queued_and_inflight_are_counted() {
    let mut h = Harness::new(Config {
        max_inflight: 2,
        ..Config::default()
    });
    let sub = h.connect(V5, "sub", true, Some(600));
    h.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = h.connect(V5, "pub", true, None);
    for i in 0..5 {
        h.publish(publisher, "t", "m", QoS::AtLeastOnce, false, Some(i + 1));
    }
    let info = h.broker.client("sub").unwrap();
    assert_eq!((info.inflight, info.queued), (2, 3));
    let usage = h.broker.store_usage();
    assert_eq!((usage.inflight, usage.queued), (2, 3));
    assert_eq!(usage.messages, 5);
    assert_eq!(usage.bytes, 5);
}

#[test]
fn disconnect_client_sends_0x98_and_publishes_the_will() {
    let mut h = Harness::new(Config::default());
    let watcher = h.connect(V5, "watcher", true, None);
    h.subscribe(watcher, "wills/#", QoS::AtMostOnce);
    let mut c = connect(V5, "victim", true);
    c.will = Some(will("wills/victim", "gone", None));
    let (victim, _) = h.connect_with(c);
    h.out.clear();

    h.broker
        .disconnect_client("victim", h.now, &mut h.out)
        .unwrap();
    let sent = h.take(victim);
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)] if d.reason == reason::ADMINISTRATIVE_ACTION),
        "{sent:?}"
    );
    assert!(
        h.out
            .iter()
            .any(|a| matches!(a, Action::Close(c, CloseReason::AdminAction) if *c == victim))
    );
    let wills = h.publishes(watcher);
    assert_eq!(wills.len(), 1);
    assert_eq!(&wills[0].payload[..], b"gone");
    assert!(h.broker.client("victim").is_none());
    assert_eq!(h.broker.stats().admin_disconnects, 1);

    assert_eq!(
        h.broker.disconnect_client("nobody", h.now, &mut h.out),
        Err(AdminError::NotFound("connected client \"nobody\"".into()))
    );
}

#[test]
fn delete_session_online_and_offline() {
    let mut h = Harness::new(Config::default());
    let on = h.connect(V3_1_1, "online", false, None);
    h.subscribe(on, "a", QoS::AtLeastOnce);
    let off = h.connect(V3_1_1, "offline", false, None);
    h.subscribe(off, "b", QoS::AtLeastOnce);
    h.lose(off);
    h.out.clear();
    assert_eq!(h.broker.session_count(), 2);

    h.broker
        .delete_session("offline", h.now, &mut h.out)
        .unwrap();
    assert_eq!(h.broker.session_count(), 1);
    h.broker
        .delete_session("online", h.now, &mut h.out)
        .unwrap();
    assert!(h.closed(on));
    // 3.x has no server DISCONNECT.
    assert!(h.take(on).is_empty());
    assert_eq!(h.broker.session_count(), 0);
    assert_eq!(h.broker.subscription_count(), 0);
    assert!(
        h.broker
            .delete_session("online", h.now, &mut h.out)
            .is_err()
    );
}

#[test]
fn retained_by_filter_read_and_delete() {
    let mut h = Harness::new(Config::default());
    let p = h.connect(V5, "p", true, None);
    for t in ["home/kitchen/temp", "home/hall/temp", "office/temp"] {
        h.publish(p, t, t, QoS::AtMostOnce, true, None);
    }
    let props: Properties = PropertyValues {
        content_type: Some("text/plain".into()),
        ..Default::default()
    }
    .into();
    h.publish_props(p, "home/attic", "x", QoS::AtLeastOnce, true, Some(1), props);

    let everything = h.broker.retained_messages(None, &all(), h.now).unwrap();
    assert_eq!(everything.total, 4);
    assert_eq!(
        everything
            .items
            .iter()
            .map(|m| m.topic.as_str())
            .collect::<Vec<_>>(),
        [
            "home/attic",
            "home/hall/temp",
            "home/kitchen/temp",
            "office/temp"
        ]
    );
    let temps = h
        .broker
        .retained_messages(Some("+/+/temp"), &all(), h.now)
        .unwrap();
    assert_eq!(temps.items.len(), 2);
    let attic = h.broker.retained_message("home/attic", h.now).unwrap();
    assert_eq!(attic.qos, QoS::AtLeastOnce);
    assert_eq!(attic.properties.content_type.as_deref(), Some("text/plain"));
    assert!(matches!(
        h.broker.retained_messages(Some("a/#/b"), &all(), h.now),
        Err(AdminError::InvalidTopic(_))
    ));

    assert_eq!(h.broker.delete_retained("home/#", &mut h.out).unwrap(), 3);
    assert_eq!(h.broker.retained_count(), 1);
    assert_eq!(
        h.broker
            .delete_retained("nothing/here", &mut h.out)
            .unwrap(),
        0
    );
}

#[test]
fn delete_retained_is_persisted() {
    let mut h = Harness::persistent(Config::default(), 1_000_000);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "a/b", "x", QoS::AtMostOnce, true, None);
    h.records();
    h.broker.delete_retained("a/b", &mut h.out).unwrap();
    let records = h.records();
    assert!(
        matches!(&records[..], [tern_store::Record::RetainedDeleted { topic }] if topic == "a/b"),
        "{records:?}"
    );
}

#[test]
fn admin_publish_reaches_subscribers_and_the_retained_store() {
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "cmd/#", QoS::AtLeastOnce);
    h.out.clear();
    let mut properties = Properties::default();
    properties
        .user_properties
        .push(("origin".into(), "admin".into()));
    let routed = h
        .broker
        .admin_publish(
            AdminPublish {
                topic: "cmd/reboot".into(),
                payload: Bytes::from_static(b"now"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties,
            },
            h.now,
            &mut h.out,
        )
        .unwrap();
    assert_eq!(routed, 1);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(got[0].properties.user_properties.len(), 1);
    assert!(h.broker.retained_message("cmd/reboot", h.now).is_some());
    assert!(matches!(
        h.broker.admin_publish(
            AdminPublish {
                topic: "bad/#".into(),
                ..AdminPublish::default()
            },
            h.now,
            &mut h.out
        ),
        Err(AdminError::InvalidTopic(_))
    ));
}

#[test]
fn sys_values_match_known_traffic() {
    let mut h = Harness::new(Config::default());
    let mut sys = SysTree::new("1.2.3", h.now, Duration::from_secs(10));
    let sub = h.connect(V5, "sub", true, None);
    h.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let p = h.connect(V3_1_1, "pub", false, None);
    let _ = h.connect(V3_1_1, "gone", false, None);
    h.lose(3);
    h.publish(p, "t/1", "hello", QoS::AtMostOnce, false, None);
    h.publish(p, "t/2", "world!", QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "r", "kept", QoS::AtMostOnce, true, None);
    h.advance(61);
    let io = IoCounters {
        bytes_received: 1000,
        bytes_sent: 2000,
        packets_received: 12,
        packets_sent: 9,
        sockets_opened: 3,
        dropped_outbox: 1,
    };
    let v = sys_map(&sys.sample(&h.broker, &io, h.now));
    let get = |k: &str| {
        v.get(&format!("$SYS/broker/{k}"))
            .unwrap_or_else(|| panic!("no {k}"))
            .as_str()
    };
    assert_eq!(get("version"), "tern version 1.2.3");
    assert_eq!(get("uptime"), "61 seconds");
    assert_eq!(get("clients/connected"), "2");
    assert_eq!(get("clients/disconnected"), "1");
    assert_eq!(get("clients/total"), "3");
    assert_eq!(get("clients/maximum"), "3");
    assert_eq!(get("messages/received"), "12");
    assert_eq!(get("messages/sent"), "9");
    assert_eq!(get("publish/messages/received"), "3");
    assert_eq!(get("publish/messages/sent"), "2");
    assert_eq!(get("publish/bytes/received"), "15");
    assert_eq!(get("publish/bytes/sent"), "11");
    assert_eq!(get("publish/messages/dropped"), "1");
    assert_eq!(get("bytes/received"), "1000");
    assert_eq!(get("bytes/sent"), "2000");
    assert_eq!(get("retained messages/count"), "1");
    assert_eq!(get("subscriptions/count"), "1");
    // The QoS 1 message to "sub" awaits its PUBACK; the retained one is held too.
    assert_eq!(get("store/messages/count"), "2");
    assert_eq!(get("store/messages/bytes"), "10");
    assert_eq!(get("load/messages/received/1min"), "0.00");

    // A minute later, 60 more packets: the 1 min load moves towards 60/min.
    h.advance(60);
    let io2 = IoCounters {
        packets_received: 72,
        ..io
    };
    let v = sys_map(&sys.sample(&h.broker, &io2, h.now));
    let load = |w: &str| -> f64 {
        v[&format!("$SYS/broker/load/messages/received/{w}")]
            .parse()
            .unwrap()
    };
    let expect = |window: f64| 60.0 * (1.0 - (-60.0f64 / window).exp());
    assert!(
        (load("1min") - expect(60.0)).abs() < 0.01,
        "{}",
        load("1min")
    );
    assert!((load("5min") - expect(300.0)).abs() < 0.01);
    assert!((load("15min") - expect(900.0)).abs() < 0.01);
    assert!(load("1min") > load("5min") && load("5min") > load("15min"));
}

#[test]
fn sys_is_published_retained_and_only_when_changed() {
    let mut h = Harness::new(Config::default());
    let mut sys = SysTree::new("0.1.0", h.now, Duration::from_secs(10));
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "$SYS/broker/clients/#", QoS::AtMostOnce);
    h.out.clear();
    let io = IoCounters::default();
    assert!(sys.tick(&mut h.broker, &io, h.now, &mut h.out) > 10);
    let first = h.publishes(s);
    let connected = first
        .iter()
        .find(|p| p.topic == "$SYS/broker/clients/connected")
        .unwrap();
    assert_eq!(&connected.payload[..], b"1");
    assert!(
        h.broker
            .retained_message("$SYS/broker/version", h.now)
            .is_some()
    );
    // Not due yet.
    h.now += Duration::from_secs(5);
    assert_eq!(sys.tick(&mut h.broker, &io, h.now, &mut h.out), 0);
    // Due: the uptime changed, and the store now holds the $SYS messages themselves.
    h.now += Duration::from_secs(5);
    assert!(sys.tick(&mut h.broker, &io, h.now, &mut h.out) > 1);
    // Then only the uptime, the store figures (which count the $SYS messages themselves) and
    // the publish/sent load (the $SYS messages sent to "s") change; nothing under clients/.
    h.now += Duration::from_secs(10);
    h.out.clear();
    let before = sys.current().to_vec();
    let n = sys.tick(&mut h.broker, &io, h.now, &mut h.out);
    let changed: Vec<&str> = sys
        .current()
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.as_str())
        .collect();
    assert_eq!(n, changed.len());
    assert!(
        changed.iter().all(|t| t.ends_with("/uptime")
            || t.contains("/store/")
            || t.contains("/messages/stored")
            || t.contains("/load/publish/sent/")
            || t.contains("retained messages")),
        "{changed:?}"
    );
    assert!(h.publishes(s).is_empty());
    // A new client changes clients/connected, active, total and maximum.
    let _ = h.connect(V5, "t", true, None);
    h.now += Duration::from_secs(10);
    h.out.clear();
    sys.tick(&mut h.broker, &io, h.now, &mut h.out);
    let topics: Vec<String> = h.publishes(s).iter().map(|p| p.topic.to_string()).collect();
    assert!(
        topics.contains(&"$SYS/broker/clients/connected".to_string()),
        "{topics:?}"
    );
    // A late subscriber gets the tree from the retained store, and no store records are
    // written for it even with persistence on.
    let late = h.connect(V5, "late", true, None);
    h.subscribe(late, "$SYS/broker/version", QoS::AtMostOnce);
    let got = h.publishes(late);
    assert_eq!(&got[0].payload[..], b"tern version 0.1.0");
    assert!(got[0].retain);
}

#[test]
fn sys_is_never_persisted() {
    let mut h = Harness::persistent(Config::default(), 1_000_000);
    let mut sys = SysTree::new("0.1.0", h.now, Duration::from_secs(1));
    h.records();
    sys.tick(&mut h.broker, &IoCounters::default(), h.now, &mut h.out);
    assert!(h.records().is_empty());
    assert!(h.broker.retained_count() > 10);
}

#[test]
fn sys_interval_zero_is_off() {
    let mut h = Harness::new(Config::default());
    let mut sys = SysTree::new("0.1.0", h.now, Duration::ZERO);
    assert_eq!(
        sys.tick(&mut h.broker, &IoCounters::default(), h.now, &mut h.out),
        0
    );
    assert_eq!(h.broker.retained_count(), 0);
}

#[test]
fn auth_failures_and_qos_counters() {
    let mut h = Harness::new(Config::default());
    let s = h.connect(V5, "s", true, None);
    h.subscribe(s, "#", QoS::ExactlyOnce);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "a", "1", QoS::AtMostOnce, false, None);
    h.publish(p, "a", "22", QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "a", "333", QoS::ExactlyOnce, false, Some(2));
    let st = h.broker.stats();
    assert_eq!(st.publish_received_by_qos, [1, 1, 1]);
    assert_eq!(st.publish_sent_by_qos, [1, 1, 1]);
    assert_eq!(st.bytes_payload_sent, 6);
    assert_eq!(st.max_connected, 2);
}
