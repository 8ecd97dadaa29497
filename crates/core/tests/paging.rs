//! Queues beyond the memory budget are paged out to the spool and come back in order: for
//! offline and slow online sessions, across a snapshot and a restore, with expiry, shared
//! subscriptions and sessions that end.

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Packet, Properties, PropertyValues, Publish, QoS};
use tern_core::{Config, ConnId};
use tern_store::{Record, Spool};

const T0: u64 = 1_800_000_000_000;
const BUDGET: usize = 64 * 1024;

fn config() -> Config {
    Config {
        queue_memory: BUDGET,
        max_queued_messages: 100_000,
        ..Config::default()
    }
}

fn paged(persistent: bool) -> Harness {
    let mut h = if persistent {
        Harness::persistent(config(), T0)
    } else {
        Harness::new(config())
    };
    h.broker.set_spool(Spool::memory());
    h
}

fn payload(i: usize) -> String {
    format!("{i:06}-{}", "x".repeat(200))
}

/// Receives everything queued for `conn`, acknowledging as it goes, and returns the payloads.
fn drain(h: &mut Harness, conn: ConnId) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let ps: Vec<Publish> = h.publishes(conn);
        if ps.is_empty() {
            return got;
        }
        for p in ps {
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            if p.qos == QoS::AtLeastOnce {
                h.ack(conn, &p);
            }
        }
    }
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(payload).collect()
}

/// Compares message sequences, naming the first difference rather than printing them whole.
#[track_caller]
fn assert_same(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: first difference at {i}: got {:.6}, want {:.6}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

#[test]
fn offline_queues_stay_within_the_memory_budget_and_come_back_in_order() {
    for persistent in [false, true] {
        let mut h = paged(persistent);
        let subs: Vec<String> = (0..3).map(|i| format!("sub{i}")).collect();
        for id in &subs {
            let c = h.connect(V5, id, false, Some(3600));
            h.subscribe(c, "q/#", QoS::AtLeastOnce);
            h.lose(c);
        }
        let p = h.connect(V5, "pub", true, None);
        for i in 0..3000 {
            h.publish(
                p,
                &format!("q/{}", i % 7),
                &payload(i),
                QoS::AtLeastOnce,
                false,
                Some((i % 60_000 + 1) as u16),
            );
            let st = h.broker.pager_stats();
            assert!(st.memory <= BUDGET, "{i}: {st:?}");
            if i % 100 == 0 {
                h.records();
                h.take(p);
            }
        }
        let st = h.broker.pager_stats();
        assert!(st.deliveries_paged_out >= 8000, "{st:?}");
        assert!(st.spool_live_bytes > 1_000_000, "{st:?}");
        assert_eq!(h.broker.store_usage().queued, 9000);
        for id in &subs {
            let c = h.connect(V5, id, false, Some(3600));
            assert_same(&drain(&mut h, c), &expected(0..3000), id);
        }
        let st = h.broker.pager_stats();
        assert_eq!(st.memory, 0, "{st:?}");
        assert_eq!(
            st.spool_live_bytes, 0,
            "every page was read back and dropped: {st:?}"
        );
        assert_eq!(st.pages_lost, 0);
        assert_eq!(h.broker.stats().dropped_queue_full, 0);
    }
}

#[test]
fn a_slow_online_subscriber_keeps_its_window_and_pages_the_rest() {
    let mut h = paged(false);
    let s = h.connect(V3_1_1, "slow", false, None);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect(V3_1_1, "pub", true, None);
    // Published a few at a time, with acknowledgements in between: the tail is paged out a
    // little at a time, so pages are merged and added in every pattern.
    let mut got = Vec::new();
    let mut unacked = std::collections::VecDeque::new();
    let mut sent = 0;
    for round in 0..60 {
        for _ in 0..(round % 7 + 1) * 20 {
            h.publish(
                p,
                "t",
                &payload(sent),
                QoS::AtLeastOnce,
                false,
                Some((sent % 60_000 + 1) as u16),
            );
            sent += 1;
        }
        assert!(h.broker.pager_stats().memory <= BUDGET);
        unacked.extend(h.publishes(s));
        for _ in 0..(round % 5 + 1) {
            let Some(pk) = unacked.pop_front() else { break };
            got.push(String::from_utf8(pk.payload.to_vec()).unwrap());
            h.ack(s, &pk);
        }
        unacked.extend(h.publishes(s));
        h.take(p);
    }
    assert!(h.broker.pager_stats().deliveries_paged_out > 0);
    // Reconnecting re-sends what is in flight (with DUP), then the rest follows.
    got.extend(
        unacked
            .iter()
            .map(|p| String::from_utf8(p.payload.to_vec()).unwrap()),
    );
    h.lose(s);
    let s = h.connect(V3_1_1, "slow", false, None);
    for m in drain(&mut h, s) {
        if !got.contains(&m) {
            got.push(m);
        }
    }
    assert_same(&got, &expected(0..sent), "slow subscriber");
}

#[test]
fn paged_queues_survive_a_snapshot_and_a_restore() {
    let mut h = paged(true);
    let s = h.connect(V5, "sub", false, Some(3600));
    h.subscribe(s, "q", QoS::ExactlyOnce);
    // Two in flight, one of them released (PUBREC received): they must come back as such.
    let p = h.connect(V5, "pub", true, None);
    h.publish(p, "q", &payload(0), QoS::ExactlyOnce, false, Some(1));
    h.publish(p, "q", &payload(1), QoS::AtLeastOnce, false, Some(2));
    let first = h.publishes(s);
    assert_eq!(first.len(), 2);
    h.packet(
        s,
        Packet::PubRec(tern_codec::Ack::new(first[0].packet_id.unwrap())),
    );
    h.lose(s);
    for i in 2..2000 {
        h.publish(
            p,
            "q",
            &payload(i),
            QoS::AtLeastOnce,
            false,
            Some((i % 60_000 + 1) as u16),
        );
    }
    assert!(h.broker.pager_stats().deliveries_paged_out > 1000);
    let log = h.records();
    let snapshot = h.broker.snapshot(h.now).records().unwrap();
    assert!(snapshot.len() < log.len());
    let enqueued = snapshot
        .iter()
        .filter(|r| matches!(r, Record::Enqueued { .. }))
        .count();
    assert_eq!(enqueued, 2000, "paged deliveries are in the snapshot");
    for records in [log, snapshot] {
        let mut h2 = Harness::persistent(config(), T0 + 1000);
        h2.broker.set_spool(Spool::memory());
        let report = h2.broker.restore(records, h2.now);
        assert_eq!((report.inflight, report.queued), (2, 1998), "{report:?}");
        assert!(
            report.paged > 1000,
            "restored queues are paged out as they are rebuilt: {report:?}"
        );
        assert!(h2.broker.pager_stats().memory <= BUDGET);
        let s = h2.connect(V5, "sub", false, Some(3600));
        let packets = h2.take(s);
        assert!(matches!(&packets[0], Packet::PubRel(_)), "{:?}", packets[0]);
        let Packet::Publish(again) = &packets[1] else {
            panic!("{:?}", packets[1])
        };
        assert!(again.dup);
        assert_eq!(again.payload, payload(1).as_bytes());
        h2.ack(s, again);
        h2.packet(
            s,
            Packet::PubComp(tern_codec::Ack::new(first[0].packet_id.unwrap())),
        );
        let mut got: Vec<String> = packets[2..]
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => {
                    h2.ack(s, p);
                    Some(String::from_utf8(p.payload.to_vec()).unwrap())
                }
                _ => None,
            })
            .collect();
        got.extend(drain(&mut h2, s));
        assert_same(&got, &expected(2..2000), "restored");
    }
}

#[test]
fn expired_messages_in_pages_are_dropped_not_sent() {
    let mut h = paged(false);
    let s = h.connect(V5, "sub", false, Some(3600));
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V5, "pub", true, None);
    for i in 0..1000 {
        let properties: Properties = PropertyValues {
            message_expiry_interval: Some(if i % 2 == 0 { 10 } else { 1000 }),
            ..Default::default()
        }
        .into();
        h.publish_props(
            p,
            "q",
            &payload(i),
            QoS::AtLeastOnce,
            false,
            Some(i as u16 + 1),
            properties,
        );
    }
    assert!(h.broker.pager_stats().deliveries_paged_out > 500);
    h.advance(60);
    let s = h.connect(V5, "sub", false, Some(3600));
    let got = drain(&mut h, s);
    let want: Vec<String> = (0..1000).filter(|i| i % 2 == 1).map(payload).collect();
    assert_same(&got, &want, "unexpired");
    assert_eq!(h.broker.stats().dropped_expired, 500);
}

#[test]
fn a_session_that_ends_releases_its_paged_messages() {
    let mut h = paged(true);
    let s = h.connect(V5, "sub", false, Some(3600));
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V5, "pub", true, None);
    for i in 0..1000 {
        h.publish(
            p,
            "q",
            &payload(i),
            QoS::AtLeastOnce,
            false,
            Some(i as u16 + 1),
        );
    }
    h.records();
    assert!(h.broker.pager_stats().spool_live_bytes > 0);
    // Clean start: the session ends, every message is released on disk.
    let s = h.connect(V5, "sub", true, None);
    let deleted = h
        .records()
        .iter()
        .filter(|r| matches!(r, Record::MessageDeleted { .. }))
        .count();
    assert_eq!(deleted, 1000);
    assert!(h.publishes(s).is_empty());
    assert_eq!(h.broker.pager_stats().spool_live_bytes, 0);
    assert_eq!(h.broker.pager_stats().memory, 0);
}

#[test]
fn paged_shared_messages_move_to_another_member_when_theirs_leaves() {
    let mut h = paged(false);
    let a = h.connect(V5, "a", false, Some(3600));
    h.subscribe(a, "$share/g/q", QoS::AtLeastOnce);
    let b = h.connect(V5, "b", false, Some(3600));
    h.subscribe(b, "$share/g/q", QoS::AtLeastOnce);
    let p = h.connect(V5, "pub", true, None);
    // Neither member acknowledges: the queues grow past the budget and page out.
    for i in 0..2000 {
        h.publish(
            p,
            "q",
            &payload(i),
            QoS::AtLeastOnce,
            false,
            Some(i as u16 + 1),
        );
    }
    assert!(h.broker.pager_stats().deliveries_paged_out > 0);
    let mut got = Vec::new();
    for pk in h.publishes(a) {
        got.push(String::from_utf8(pk.payload.to_vec()).unwrap());
    }
    // a leaves: what it had (in flight and queued, paged or not) goes to b.
    h.lose(a);
    got.extend(drain(&mut h, b));
    got.sort();
    got.dedup();
    assert_same(&got, &expected(0..2000), "shared");
}

#[test]
fn without_a_spool_queues_stay_in_memory() {
    let mut h = Harness::new(config());
    let s = h.connect(V5, "sub", false, Some(3600));
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V5, "pub", true, None);
    for i in 0..1000 {
        h.publish(
            p,
            "q",
            &payload(i),
            QoS::AtLeastOnce,
            false,
            Some(i as u16 + 1),
        );
    }
    let st = h.broker.pager_stats();
    assert!(st.memory > BUDGET);
    assert_eq!(st.deliveries_paged_out, 0);
    let s = h.connect(V5, "sub", false, Some(3600));
    assert_same(&drain(&mut h, s), &expected(0..1000), "in memory");
}
