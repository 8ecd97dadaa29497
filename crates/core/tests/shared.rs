//! Shared subscriptions (`$share/{group}/{filter}`), MQTT 5.0 section 4.8.2, for 3.1.1 and 5.0.

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Packet, QoS, SubscriptionOptions};
use tern_core::{Config, SharedStrategy};

fn count(h: &mut Harness, conn: u64) -> usize {
    h.publishes(conn).len()
}

#[test]
fn each_message_goes_to_one_member_round_robin() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V3_1_1, "a", true, None);
    let b = h.connect(V5, "b", true, None);
    let other = h.connect(V5, "other", true, None);
    assert_eq!(
        h.subscribe_opts(a, "$share/g/jobs/+", SubscriptionOptions::default(), None),
        vec![0]
    );
    assert_eq!(
        h.subscribe_opts(b, "$share/g/jobs/+", SubscriptionOptions::default(), None),
        vec![0]
    );
    h.subscribe(other, "$share/h/jobs/#", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    for i in 0..10 {
        h.publish(p, &format!("jobs/{i}"), "x", QoS::AtMostOnce, false, None);
    }
    assert_eq!(count(&mut h, a), 5);
    assert_eq!(count(&mut h, b), 5);
    assert_eq!(count(&mut h, other), 10, "every group gets every message");
}

#[test]
fn sticky_strategy_keeps_one_member() {
    let mut h = Harness::new(Config {
        shared_strategy: SharedStrategy::Sticky,
        ..Config::default()
    });
    let a = h.connect(V5, "a", true, None);
    let b = h.connect(V5, "b", true, None);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    for _ in 0..6 {
        h.publish(p, "t", "x", QoS::AtMostOnce, false, None);
    }
    let (na, nb) = (count(&mut h, a), count(&mut h, b));
    assert_eq!(na + nb, 6);
    assert!(na == 6 || nb == 6, "sticky: {na}/{nb}");
}

#[test]
fn random_strategy_spreads_and_delivers_each_once() {
    let mut h = Harness::new(Config {
        shared_strategy: SharedStrategy::Random,
        ..Config::default()
    });
    let a = h.connect(V5, "a", true, None);
    let b = h.connect(V5, "b", true, None);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
    let p = h.connect(V5, "p", true, None);
    for _ in 0..100 {
        h.publish(p, "t", "x", QoS::AtMostOnce, false, None);
    }
    let (na, nb) = (count(&mut h, a), count(&mut h, b));
    assert_eq!(na + nb, 100);
    assert!(na > 10 && nb > 10, "random should use both: {na}/{nb}");
}

#[test]
fn least_inflight_prefers_the_idle_member() {
    let mut h = Harness::new(Config {
        shared_strategy: SharedStrategy::LeastInflight,
        ..Config::default()
    });
    let busy = h.connect(V5, "busy", true, None);
    let idle = h.connect(V5, "idle", true, None);
    h.subscribe(busy, "$share/g/t", QoS::AtLeastOnce);
    h.subscribe(idle, "$share/g/t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    // "idle" acknowledges at once, "busy" never does.
    for i in 1..=10u16 {
        h.publish(p, "t", "x", QoS::AtLeastOnce, false, Some(i));
        for m in h.publishes(idle) {
            h.ack(idle, &m);
        }
    }
    let to_busy = count(&mut h, busy);
    assert!(
        to_busy <= 1,
        "the member with a message in flight is avoided: {to_busy}"
    );
}

#[test]
fn unacknowledged_messages_of_a_leaving_member_go_to_another() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V3_1_1, "a", true, None);
    let b = h.connect(V3_1_1, "b", true, None);
    h.subscribe(a, "$share/g/t", QoS::AtLeastOnce);
    h.subscribe(b, "$share/g/t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    for i in 1..=4u16 {
        h.publish(p, "t", &format!("{i}"), QoS::AtLeastOnce, false, Some(i));
    }
    let to_a = h.publishes(a);
    let to_b = h.publishes(b);
    assert_eq!((to_a.len(), to_b.len()), (2, 2));
    // b acknowledges its first, then vanishes with one unacknowledged.
    h.ack(b, &to_b[0]);
    h.lose(b);
    let moved = h.publishes(a);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].payload, to_b[1].payload);
}

#[test]
fn messages_are_queued_while_no_member_is_online_if_sessions_persist() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V5, "a", false, Some(600));
    h.subscribe(a, "$share/g/t", QoS::AtLeastOnce);
    h.lose(a);
    let p = h.connect(V5, "p", true, None);
    for i in 1..=3u16 {
        h.publish(p, "t", &format!("{i}"), QoS::AtLeastOnce, false, Some(i));
    }
    let a = h.connect(V5, "a", false, Some(600));
    let got = h.publishes(a);
    assert_eq!(
        got.iter().map(|p| &p.payload[..]).collect::<Vec<_>>(),
        vec![b"1", b"2", b"3"]
    );
}

#[test]
fn retained_messages_are_not_sent_on_a_shared_subscription() {
    // MQTT 5.0 section 4.8.2: no retained messages for a shared subscription.
    let mut h = Harness::new(Config::default());
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", "kept", QoS::AtMostOnce, true, None);
    let a = h.connect(V5, "a", true, None);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    assert!(h.publishes(a).is_empty());
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let mut h = Harness::new(Config::default());
    let a = h.connect(V5, "a", true, None);
    let opts = SubscriptionOptions {
        no_local: true,
        ..Default::default()
    };
    h.packet(
        a,
        Packet::Subscribe(tern_codec::Subscribe {
            packet_id: 1,
            filters: vec![("$share/g/t".into(), opts)],
            properties: Default::default(),
        }),
    );
    let sent = h.take(a);
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)] if d.reason == 0x82),
        "{sent:?}"
    );
    assert!(h.closed(a));
}

#[test]
fn invalid_shared_filters_are_refused() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V5, "a", true, None);
    assert_eq!(
        h.subscribe_opts(a, "$share/g+/t", SubscriptionOptions::default(), None),
        vec![0x8F]
    );
    assert_eq!(
        h.subscribe_opts(a, "$share/g", SubscriptionOptions::default(), None),
        vec![0x8F]
    );
}

#[test]
fn unsubscribe_and_session_end_leave_the_group() {
    let mut h = Harness::new(Config::default());
    let a = h.connect(V5, "a", true, None);
    let b = h.connect(V5, "b", true, None);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
    assert_eq!(h.broker.subscription_count(), 2);
    h.packet(
        a,
        Packet::Unsubscribe(tern_codec::Unsubscribe {
            packet_id: 2,
            filters: vec!["$share/g/t".into()],
            properties: Default::default(),
        }),
    );
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", "x", QoS::AtMostOnce, false, None);
    h.publish(p, "t", "x", QoS::AtMostOnce, false, None);
    assert_eq!(count(&mut h, b), 2);
    h.lose(b);
    assert_eq!(h.broker.subscription_count(), 0);
}

#[test]
fn offline_members_are_skipped_and_come_back_when_they_reconnect() {
    // A group keeps its persistent members while they are offline, in a list of their own:
    // messages go round the online ones, and a member that reconnects takes its turn again.
    let mut h = Harness::new(Config::default());
    let a = h.connect(V3_1_1, "a", false, None);
    let b = h.connect(V3_1_1, "b", false, None);
    let c = h.connect(V3_1_1, "c", true, None);
    for m in [a, b, c] {
        h.subscribe(m, "$share/g/t", QoS::AtMostOnce);
    }
    h.lose(a);
    let p = h.connect(V5, "p", true, None);
    for _ in 0..4 {
        h.publish(p, "t", "x", QoS::AtMostOnce, false, None);
    }
    assert_eq!((count(&mut h, b), count(&mut h, c)), (2, 2));
    let a = h.connect(V3_1_1, "a", false, None);
    for _ in 0..6 {
        h.publish(p, "t", "x", QoS::AtMostOnce, false, None);
    }
    assert_eq!(
        (count(&mut h, a), count(&mut h, b), count(&mut h, c)),
        (2, 2, 2)
    );
}

#[test]
fn round_robin_goes_on_with_the_next_member_when_one_leaves() {
    let mut h = Harness::new(Config::default());
    let members: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let m = h.connect(V3_1_1, id, true, None);
            h.subscribe(m, "$share/g/t", QoS::AtMostOnce);
            m
        })
        .collect();
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", "1", QoS::AtMostOnce, false, None);
    assert_eq!(count(&mut h, members[0]), 1);
    // a goes: b, whose turn it was, gets the next message, then c.
    h.lose(members[0]);
    h.publish(p, "t", "2", QoS::AtMostOnce, false, None);
    assert_eq!(
        (count(&mut h, members[1]), count(&mut h, members[2])),
        (1, 0)
    );
    h.publish(p, "t", "3", QoS::AtMostOnce, false, None);
    assert_eq!(count(&mut h, members[2]), 1);
}

#[test]
fn messages_for_later_go_round_the_offline_members() {
    let mut h = Harness::new(Config::default());
    for id in ["a", "b"] {
        let m = h.connect(V5, id, false, Some(600));
        h.subscribe(m, "$share/g/t", QoS::AtLeastOnce);
        h.lose(m);
    }
    let p = h.connect(V5, "p", true, None);
    for i in 1..=4u16 {
        h.publish(p, "t", &format!("{i}"), QoS::AtLeastOnce, false, Some(i));
    }
    let a = h.connect(V5, "a", false, Some(600));
    let b = h.connect(V5, "b", false, Some(600));
    assert_eq!((count(&mut h, a), count(&mut h, b)), (2, 2));
}

#[test]
fn a_member_restored_offline_is_online_again_when_it_connects() {
    let t0 = 1_800_000_000_000;
    let mut h = Harness::persistent(Config::default(), t0);
    let a = h.connect(V3_1_1, "a", false, None);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.lose(a);
    let mut h2 = Harness::persistent(Config::default(), t0 + 1000);
    let records = h.records();
    h2.broker.restore(records, h2.now);
    let p = h2.connect(V5, "p", true, None);
    h2.publish(p, "t", "dropped", QoS::AtMostOnce, false, None);
    let a = h2.connect(V3_1_1, "a", false, None);
    h2.publish(p, "t", "kept", QoS::AtMostOnce, false, None);
    let got = h2.publishes(a);
    assert_eq!(
        got.iter().map(|m| &m.payload[..]).collect::<Vec<_>>(),
        [b"kept"]
    );
}

#[test]
fn a_members_own_will_goes_to_another_member() {
    // The will of a member leaving is routed after it left its groups' online members: a will
    // on the group's topic goes to a member still online.
    let mut h = Harness::new(Config::default());
    let mut c = connect(V3_1_1, "a", true);
    c.will = Some(will("t", "a is gone", None));
    let (a, _) = h.connect_with(c);
    let b = h.connect(V3_1_1, "b", true, None);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
    h.lose(a);
    let got = h.publishes(b);
    assert_eq!(
        got.iter().map(|m| &m.payload[..]).collect::<Vec<_>>(),
        [b"a is gone"]
    );
}
