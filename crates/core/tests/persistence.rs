//! The durable records the core emits, and the state rebuilt from them after a "crash" (a
//! fresh broker restored from the records, as `tern serve` does at start-up).

mod harness;

use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Ack, Packet, QoS};
use tern_core::Config;
use tern_store::Record;

const T0: u64 = 1_800_000_000_000;

/// Restores a new broker from `records`, the way a restart does.
fn restart(records: Vec<Record>) -> Harness {
    let mut h = Harness::persistent(Config::default(), T0 + 1000);
    h.broker.restore(records, h.now);
    h
}

#[test]
fn clean_sessions_write_nothing() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V3_1_1, "clean", true, None);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect(V5, "p", true, None);
    h.publish(p, "t", "m", QoS::AtLeastOnce, false, Some(1));
    assert!(h.records().is_empty());
}

#[test]
fn queued_messages_of_an_offline_session_survive_a_restart() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V3_1_1, "sub", false, None);
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V3_1_1, "pub", true, None);
    for i in 1..=3u16 {
        h.publish(p, "q", &format!("{i}"), QoS::AtLeastOnce, false, Some(i));
    }
    let mut h2 = restart(h.records());
    let s = h2.connect(V3_1_1, "sub", false, None);
    let got = h2.publishes(s);
    assert_eq!(
        got.iter().map(|p| &p.payload[..]).collect::<Vec<_>>(),
        vec![b"1", b"2", b"3"]
    );
    // The subscription survived too.
    let p = h2.connect(V3_1_1, "pub", true, None);
    h2.publish(p, "q", "4", QoS::AtLeastOnce, false, Some(9));
    assert_eq!(h2.publishes(s).len(), 1);
}

#[test]
fn acknowledged_deliveries_are_not_redelivered() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V5, "sub", false, Some(600));
    h.subscribe(s, "q", QoS::AtLeastOnce);
    let p = h.connect(V5, "pub", true, None);
    h.publish(p, "q", "acked", QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "q", "unacked", QoS::AtLeastOnce, false, Some(2));
    let got = h.publishes(s);
    h.ack(s, &got[0]);
    let mut h2 = restart(h.records());
    let s = h2.connect(V5, "sub", false, Some(600));
    let again = h2.publishes(s);
    assert_eq!(again.len(), 1, "only what was in flight comes again");
    assert_eq!(&again[0].payload[..], b"unacked");
    assert!(again[0].dup);
    assert_eq!(again[0].packet_id, got[1].packet_id);
}

#[test]
fn qos2_in_flight_and_released_states_survive() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V3_1_1, "sub", false, None);
    h.subscribe(s, "x", QoS::ExactlyOnce);
    let p = h.connect(V3_1_1, "pub", true, None);
    h.publish(p, "x", "a", QoS::ExactlyOnce, false, Some(1));
    h.publish(p, "x", "b", QoS::ExactlyOnce, false, Some(2));
    let got = h.publishes(s);
    // "a" reached PUBREC (PUBREL due), "b" has no answer yet.
    h.packet(s, Packet::PubRec(Ack::new(got[0].packet_id.unwrap())));
    h.take(s);
    let mut h2 = restart(h.records());
    let s = h2.connect(V3_1_1, "sub", false, None);
    let sent = h2.take(s);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], Packet::PubRel(Ack::new(got[0].packet_id.unwrap())));
    match &sent[1] {
        Packet::Publish(m) => {
            assert!(m.dup && m.packet_id == got[1].packet_id && &m.payload[..] == b"b")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inbound_qos2_is_not_forwarded_twice_after_a_restart() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V5, "sub", false, Some(600));
    h.subscribe(s, "x", QoS::AtLeastOnce);
    let p = h.connect(V5, "pub", false, Some(600));
    h.publish(p, "x", "once", QoS::ExactlyOnce, false, Some(7));
    assert_eq!(h.publishes(s).len(), 1);
    let mut h2 = restart(h.records());
    // The publisher did not see PUBREC before the crash (say) and re-sends the same packet id.
    let p = h2.connect(V5, "pub", false, Some(600));
    let s = h2.connect(V5, "sub", false, Some(600));
    h2.take(s);
    h2.publish(p, "x", "once", QoS::ExactlyOnce, false, Some(7));
    assert!(matches!(&h2.take(p)[..], [Packet::PubRec(a)] if a.packet_id == 7));
    assert!(
        h2.publishes(s).is_empty(),
        "[MQTT-4.3.3-9] exactly once across the restart"
    );
}

#[test]
fn retained_store_survives_and_deletes_stick() {
    let mut h = Harness::persistent(Config::default(), T0);
    let p = h.connect(V3_1_1, "pub", true, None);
    h.publish(p, "r/a", "1", QoS::AtLeastOnce, true, Some(1));
    h.publish(p, "r/b", "2", QoS::AtLeastOnce, true, Some(2));
    h.publish(p, "r/a", "3", QoS::AtLeastOnce, true, Some(3));
    h.publish(p, "r/b", "", QoS::AtLeastOnce, true, Some(4));
    h.publish(p, "$SYS/kept", "s", QoS::AtMostOnce, true, None);
    let mut h2 = restart(h.records());
    assert_eq!(h2.broker.retained_count(), 2);
    let s = h2.connect(V3_1_1, "s", true, None);
    h2.subscribe(s, "r/#", QoS::AtMostOnce);
    let got = h2.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"3");
}

#[test]
fn session_expiry_keeps_running_across_a_restart() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V5, "exp", false, Some(100));
    h.lose(s);
    // Restart 60 s after the client left: 40 s remain.
    let mut h2 = Harness::persistent(Config::default(), T0 + 60_000);
    h2.broker.restore(h.records(), h2.now);
    assert!(h2.broker.session("exp").is_some());
    h2.advance(39);
    assert!(h2.broker.session("exp").is_some());
    h2.advance(2);
    assert!(h2.broker.session("exp").is_none());
}

#[test]
fn ended_sessions_stay_ended() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V3_1_1, "gone", false, None);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s);
    h.connect(V3_1_1, "gone", true, None); // clean session ends it
    let h2 = restart(h.records());
    assert!(h2.broker.session("gone").is_none());
    assert_eq!(h2.broker.subscription_count(), 0);
}

#[test]
fn pending_delayed_will_survives_a_restart() {
    let mut h = Harness::persistent(Config::default(), T0);
    let w = h.connect(V5, "w", false, Some(600));
    h.subscribe(w, "will", QoS::AtLeastOnce);
    let mut c = connect(V5, "dev", false);
    c.properties.session_expiry_interval = Some(600);
    let mut will = will("will", "bye", Some(30));
    will.properties.content_type = Some("text/plain".into());
    will.properties.user_properties = vec![("k".into(), "v".into())];
    c.will = Some(will);
    let (dev, _) = h.connect_with(c);
    h.lose(dev);
    // Restored from the log, and from a snapshot taken while the will waits.
    let log = h.records();
    let snapshot = h.broker.snapshot(h.now).records().unwrap();
    for records in [log, snapshot] {
        let mut h2 = restart(records);
        let w = h2.connect(V5, "w", false, Some(600));
        h2.advance(28);
        assert!(h2.publishes(w).is_empty());
        h2.advance(2);
        let got = h2.publishes(w);
        assert_eq!(got.len(), 1);
        // The will's properties go with its message, user properties in order
        // [MQTT-3.1.3-10]; the delay is not a PUBLISH property.
        let p = &got[0].properties;
        assert_eq!(p.content_type.as_deref(), Some("text/plain"), "{p:?}");
        assert_eq!(p.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.will_delay_interval, None);
    }
}

#[test]
fn a_snapshot_rebuilds_the_same_state_as_the_full_log() {
    let mut h = Harness::persistent(Config::default(), T0);
    let s = h.connect(V3_1_1, "sub", false, None);
    h.subscribe(s, "q/#", QoS::ExactlyOnce);
    let p = h.connect(V5, "pub", false, Some(600));
    for i in 1..=5u16 {
        h.publish(
            p,
            &format!("q/{i}"),
            &format!("{i}"),
            QoS::ExactlyOnce,
            i % 2 == 0,
            Some(i),
        );
    }
    let got = h.publishes(s);
    h.packet(s, Packet::PubRec(Ack::new(got[0].packet_id.unwrap())));
    h.lose(s);
    let log = h.records();
    let snapshot = h.broker.snapshot(h.now).records().unwrap();
    assert!(
        snapshot.len() < log.len(),
        "the snapshot holds only live state"
    );
    let mut a = restart(log);
    let mut b = restart(snapshot);
    for h in [&mut a, &mut b] {
        assert_eq!(h.broker.retained_count(), 2);
        let s = h.connect(V3_1_1, "sub", false, None);
        let sent = h.take(s);
        assert_eq!(sent.len(), 5, "{sent:?}");
        assert!(matches!(sent[0], Packet::PubRel(_)));
    }
}

/// A read ACL by user name and client id (like `pattern read inbox/%u/%c`).
fn inbox_only() -> Box<dyn tern_core::AccessControl> {
    Box::new(ReadIf(|info: &tern_core::ClientInfo, topic: &str| {
        let user = info.username.as_deref().unwrap_or("");
        topic == format!("inbox/{user}/{}", info.client_id)
    }))
}

fn as_user(user: &str, clean: bool) -> tern_codec::Connect {
    let mut c = connect(V3_1_1, "sensor-1", clean);
    c.username = Some(user.into());
    c
}

#[test]
fn a_restored_session_still_belongs_to_its_user() {
    // The owner of a session is in its durable record: after a restart, another user who comes
    // with its client id is refused (CONNACK 0x85 / 0x02) as before it, whatever its clean
    // start, and the owner resumes the session with its queued message.
    let mut h = Harness::persistent(Config::default(), T0);
    let (s, _) = h.connect_with(as_user("alice", false));
    h.subscribe(s, "alice/inbox", QoS::AtLeastOnce);
    h.lose(s);
    let p = h.connect(V3_1_1, "p", true, None);
    h.publish(p, "alice/inbox", "queued", QoS::AtLeastOnce, false, Some(1));
    let log = h.records();
    let snapshot = h.broker.snapshot(h.now).records().unwrap();
    assert!(snapshot.iter().any(|r| matches!(
        r,
        Record::SessionOwner { client_id, username } if client_id == "sensor-1" && username == "alice"
    )));
    for records in [log, snapshot] {
        let mut h2 = restart(records);
        assert_eq!(
            h2.broker
                .session("sensor-1")
                .unwrap()
                .info
                .username
                .as_deref(),
            Some("alice")
        );
        for clean in [false, true] {
            let (m, ack) = h2.connect_with(as_user("mallory", clean));
            assert_eq!(ack.code, tern_codec::reason::v3::IDENTIFIER_REJECTED);
            assert!(h2.closed(m));
        }
        assert_eq!(h2.broker.stats().limit_session_owner, 2);
        let (s, ack) = h2.connect_with(as_user("alice", false));
        assert!(ack.session_present);
        let got = h2.publishes(s);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].payload[..], b"queued");
    }
}

#[test]
fn a_restored_offline_session_reads_under_its_own_acl() {
    // Messages routed to a session restored offline are checked against the read ACL of its
    // user and client id, not those of an anonymous client with an empty id.
    let mut h = Harness::persistent(Config::default(), T0);
    h.broker.set_access_control(inbox_only());
    let (s, _) = h.connect_with(as_user("alice", false));
    h.subscribe(s, "inbox/#", QoS::AtLeastOnce);
    h.lose(s);
    let mut h2 = restart(h.records());
    h2.broker.set_access_control(inbox_only());
    let p = h2.connect(V3_1_1, "p", true, None);
    for (id, topic) in (1..).zip(["inbox/alice/sensor-1", "inbox/bob/sensor-1", "inbox//"]) {
        h2.publish(p, topic, topic, QoS::AtLeastOnce, false, Some(id));
    }
    let (s, ack) = h2.connect_with(as_user("alice", false));
    assert!(ack.session_present);
    let got = h2.publishes(s);
    assert_eq!(
        got.iter().map(|m| m.topic.to_string()).collect::<Vec<_>>(),
        vec!["inbox/alice/sensor-1"]
    );
}

#[test]
fn a_session_record_without_its_owner_after_it_has_none() {
    // A binary from before `SessionOwner` writes `Session` records alone: a session record
    // that no owner record follows leaves the session without an owner.
    let session = |disconnected| Record::Session {
        client_id: "sensor-1".into(),
        version: 4,
        expiry_interval: 600,
        disconnected_at_ms: Some(disconnected),
    };
    let owner = Record::SessionOwner {
        client_id: "sensor-1".into(),
        username: "alice".into(),
    };
    let owned = restart(vec![session(T0), owner.clone()]);
    let info = &owned.broker.session("sensor-1").unwrap().info;
    assert_eq!(info.username.as_deref(), Some("alice"));
    let h = restart(vec![session(T0), owner, session(T0 + 1)]);
    assert_eq!(h.broker.session("sensor-1").unwrap().info.username, None);
}
