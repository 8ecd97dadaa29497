//! A message fanned out at QoS 0 to many subscribers that get it as it is: one
//! `Action::Fanout` holding the message once, and every subscriber still gets exactly the
//! PUBLISH it would get alone ([MQTT-3.3.1-12], [MQTT-3.3.1-13], [MQTT-3.3.5-1]).

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{QoS, SubscriptionOptions};
use tern_core::{Action, Config, ConnId, Droppable, FANOUT_MIN};

/// The connections each action of the last turn sends to: `(fanouts, single sends)`.
fn shape(h: &Harness) -> (Vec<Vec<ConnId>>, Vec<ConnId>) {
    let mut fanouts = Vec::new();
    let mut singles = Vec::new();
    for a in &h.out {
        match a {
            Action::Fanout(f) => fanouts.push(f.conns.clone()),
            Action::SendDroppable(c, _) | Action::Send(c, _) => singles.push(*c),
            _ => {}
        }
    }
    (fanouts, singles)
}

fn subscribers(h: &mut Harness, n: usize, topic: &str) -> Vec<ConnId> {
    (0..n)
        .map(|i| {
            let version = if i % 2 == 0 { V3_1_1 } else { V5 };
            let c = h.connect(version, &format!("s{i}"), true, None);
            h.subscribe(c, topic, QoS::AtMostOnce);
            c
        })
        .collect()
}

#[test]
fn many_plain_subscribers_get_one_action_and_each_its_publish() {
    let mut h = Harness::new(Config::default());
    let subs = subscribers(&mut h, 10, "t/#");
    let publisher = h.connect(V3_1_1, "p", true, None);
    h.out.clear();
    h.publish(publisher, "t/x", "hello", QoS::AtMostOnce, false, None);
    let (fanouts, singles) = shape(&h);
    assert_eq!(fanouts.len(), 1, "one action for the whole fan-out");
    let mut got = fanouts[0].clone();
    got.sort();
    assert_eq!(got, subs, "each subscriber once");
    assert!(singles.is_empty());
    for &s in &subs {
        let p = h.publishes(s);
        assert_eq!(p.len(), 1);
        assert_eq!(&p[0].topic[..], "t/x");
        assert_eq!(&p[0].payload[..], b"hello");
        assert_eq!(p[0].qos, QoS::AtMostOnce);
        assert!(!p[0].retain);
    }
    assert!(h.out.is_empty(), "every copy taken");
}

#[test]
fn a_few_subscribers_get_one_send_each() {
    let mut h = Harness::new(Config::default());
    let subs = subscribers(&mut h, FANOUT_MIN - 1, "t");
    let publisher = h.connect(V3_1_1, "p", true, None);
    h.out.clear();
    h.publish(publisher, "t", "x", QoS::AtMostOnce, false, None);
    let (fanouts, mut singles) = shape(&h);
    assert!(fanouts.is_empty());
    singles.sort();
    assert_eq!(singles, subs);
    assert!(
        h.out
            .iter()
            .all(|a| matches!(a, Action::SendDroppable(_, Droppable::Forward(_))))
    );
}

#[test]
fn subscribers_that_need_their_own_publish_are_left_out_of_it() {
    // A v5 subscriber that allows topic aliases, one with a subscription identifier and one
    // with a Maximum Packet Size get their own PUBLISH; the others share the fan-out.
    let mut h = Harness::new(Config::default());
    let plain = subscribers(&mut h, 6, "t/#");
    let mut c = connect(V5, "aliases", true);
    c.properties.topic_alias_maximum = Some(4);
    let (aliased, _) = h.connect_with(c);
    h.subscribe(aliased, "t/#", QoS::AtMostOnce);
    let with_id = h.connect(V5, "with-id", true, None);
    h.subscribe_opts(with_id, "t/#", SubscriptionOptions::default(), Some(7));
    let mut c = connect(V5, "small", true);
    c.properties.maximum_packet_size = Some(1000);
    let (small, _) = h.connect_with(c);
    h.subscribe(small, "t/#", QoS::AtMostOnce);
    let publisher = h.connect(V3_1_1, "p", true, None);
    h.out.clear();
    h.publish(publisher, "t/y", "m", QoS::AtMostOnce, false, None);
    let (fanouts, mut singles) = shape(&h);
    assert_eq!(fanouts.len(), 1);
    let mut got = fanouts[0].clone();
    got.sort();
    assert_eq!(got, plain);
    singles.sort();
    assert_eq!(singles, [aliased, with_id, small]);
    let p = h.publishes(with_id);
    assert_eq!(p[0].properties.subscription_identifiers, [7]);
    let p = h.publishes(aliased);
    assert_eq!(p.len(), 1);
    assert_eq!(h.publishes(small).len(), 1);
    for &s in &plain {
        assert_eq!(h.publishes(s).len(), 1);
    }
}

#[test]
fn retain_as_published_splits_the_fan_out_by_the_flag_sent() {
    // [MQTT-3.3.1-12] / [MQTT-3.3.1-13]: the RETAIN flag sent depends on the subscription.
    let mut h = Harness::new(Config::default());
    let mut keep = Vec::new();
    let mut clear = Vec::new();
    for i in 0..12 {
        let c = h.connect(V5, &format!("s{i}"), true, None);
        let options = SubscriptionOptions {
            retain_as_published: i % 2 == 0,
            ..Default::default()
        };
        h.subscribe_opts(c, "r", options, None);
        if i % 2 == 0 { &mut keep } else { &mut clear }.push(c);
    }
    let publisher = h.connect(V5, "p", true, None);
    h.out.clear();
    h.publish(publisher, "r", "v", QoS::AtMostOnce, true, None);
    let (fanouts, singles) = shape(&h);
    assert!(singles.is_empty());
    assert_eq!(fanouts.len(), 2);
    for c in keep {
        assert!(h.publishes(c)[0].retain);
    }
    for c in clear {
        assert!(!h.publishes(c)[0].retain);
    }
}

#[test]
fn an_offline_subscriber_is_counted_as_before() {
    let mut h = Harness::new(Config::default());
    let subs = subscribers(&mut h, 6, "e");
    // A persistent session that is offline: its QoS 0 message is dropped and counted.
    let away = h.connect(V5, "away", false, Some(600));
    h.subscribe(away, "e", QoS::AtMostOnce);
    h.lose(away);
    let publisher = h.connect(V3_1_1, "p", true, None);
    h.out.clear();
    h.publish(publisher, "e", "1", QoS::AtMostOnce, false, None);
    assert_eq!(h.broker.stats().dropped_qos0_offline, 1);
    let (fanouts, _) = shape(&h);
    assert_eq!(fanouts.len(), 1);
    assert_eq!(fanouts[0].len(), subs.len());
}

#[test]
fn the_read_acl_still_holds_inside_a_fan_out() {
    let mut h = Harness::new(Config::default());
    // Everybody may connect, publish and subscribe; "nosy" may not read `secret/...`.
    h.broker.set_access_control(Box::new(ReadIf(
        |info: &tern_core::ClientInfo, topic: &str| {
            info.username.as_deref() != Some("nosy") || !topic.starts_with("secret/")
        },
    )));
    let subs = subscribers(&mut h, 6, "#");
    let mut c = connect(V3_1_1, "n", true);
    c.username = Some("nosy".into());
    let (nosy, ack) = h.connect_with(c);
    assert_eq!(ack.code, 0);
    h.subscribe(nosy, "#", QoS::AtMostOnce);
    let publisher = h.connect(V3_1_1, "p", true, None);
    h.out.clear();
    h.publish(publisher, "secret/plan", "s", QoS::AtMostOnce, false, None);
    let (fanouts, singles) = shape(&h);
    assert!(singles.is_empty());
    let mut got = fanouts.concat();
    got.sort();
    assert_eq!(got, subs, "everyone but nosy");
    assert!(h.publishes(nosy).is_empty());
    // And an open topic reaches nosy too.
    h.publish(publisher, "open/news", "n", QoS::AtMostOnce, false, None);
    assert_eq!(h.publishes(nosy).len(), 1);
}

#[test]
fn an_expired_message_is_counted_and_not_fanned_out() {
    // MQTT 5.0 section 3.3.2.3.3: a message past its expiry is not forwarded. A Message Expiry
    // Interval of 0 has no time left when it is routed.
    let mut h = Harness::new(Config::default());
    let subs = subscribers(&mut h, 6, "ttl");
    let publisher = h.connect(V5, "p", true, None);
    let mut properties = tern_codec::Properties::default();
    properties.message_expiry_interval = Some(0);
    h.out.clear();
    h.publish_props(
        publisher,
        "ttl",
        "x",
        QoS::AtMostOnce,
        false,
        None,
        properties,
    );
    let (fanouts, singles) = shape(&h);
    assert!(fanouts.is_empty() && singles.is_empty());
    assert_eq!(h.broker.stats().dropped_expired, subs.len() as u64);
    for &s in &subs {
        assert!(h.publishes(s).is_empty());
    }
}
