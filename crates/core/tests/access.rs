//! The authentication / ACL hooks, with a toy policy: user "alice" password "secret" may
//! publish and read `alice/#` and read `public/#`; anybody else is refused.

mod harness;

use bytes::Bytes;
use harness::*;
use tern_codec::ProtocolVersion::{V3_1_1, V5};
use tern_codec::{Packet, QoS, reason};
use tern_core::{AccessControl, AuthDecision, ClientInfo, Config};

struct Toy;

impl AccessControl for Toy {
    fn authenticate(&self, info: &ClientInfo, password: Option<&[u8]>) -> AuthDecision {
        match (info.username.as_deref(), password) {
            (Some("alice"), Some(b"secret")) => AuthDecision::Allow,
            (Some("bob"), _) => AuthDecision::NotAuthorized,
            _ => AuthDecision::BadCredentials,
        }
    }
    fn can_publish(&self, info: &ClientInfo, topic: &str) -> bool {
        info.username.as_deref() == Some("alice") && topic.starts_with("alice/")
    }
    fn can_subscribe(&self, _: &ClientInfo, filter: &str) -> bool {
        filter.starts_with("alice/") || filter.starts_with("public/") || filter == "#"
    }
    fn can_receive(&self, _: &ClientInfo, topic: &str) -> bool {
        topic.starts_with("alice/") || topic.starts_with("public/")
    }
}

fn login(
    h: &mut Harness,
    version: tern_codec::ProtocolVersion,
    id: &str,
    user: &str,
    pass: &str,
) -> (u64, u8) {
    let mut c = connect(version, id, true);
    c.username = Some(user.into());
    c.password = Some(Bytes::copy_from_slice(pass.as_bytes()));
    let (conn, ack) = h.connect_with(c);
    (conn, ack.code)
}

fn harness() -> Harness {
    let mut h = Harness::new(Config::default());
    h.broker.set_access_control(Box::new(Toy));
    h
}

#[test]
fn bad_credentials_and_not_authorized_get_their_codes() {
    let mut h = harness();
    assert_eq!(login(&mut h, V5, "a", "alice", "secret").1, 0);
    let (c, code) = login(&mut h, V5, "b", "alice", "wrong");
    assert_eq!(code, reason::BAD_USER_NAME_OR_PASSWORD);
    assert!(h.closed(c));
    assert_eq!(login(&mut h, V5, "c", "bob", "x").1, reason::NOT_AUTHORIZED);
    assert_eq!(
        login(&mut h, V3_1_1, "d", "alice", "wrong").1,
        reason::v3::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        login(&mut h, V3_1_1, "e", "bob", "x").1,
        reason::v3::NOT_AUTHORIZED
    );
    assert_eq!(h.broker.stats().auth_failures, 4);
}

#[test]
fn will_topic_must_be_allowed() {
    let mut h = harness();
    let mut c = connect(V5, "w", true);
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"secret"));
    c.will = Some(will("elsewhere/status", "x", None));
    let (_, ack) = h.connect_with(c);
    assert_eq!(ack.code, reason::NOT_AUTHORIZED);
}

#[test]
fn publish_denied_is_0x87_in_v5_and_silently_dropped_in_311() {
    let mut h = harness();
    let (reader, _) = login(&mut h, V5, "r", "alice", "secret");
    h.subscribe(reader, "#", QoS::AtLeastOnce);
    let (p5, _) = login(&mut h, V5, "p5", "alice", "secret");
    h.publish(p5, "other/x", "no", QoS::AtLeastOnce, false, Some(1));
    assert!(matches!(&h.take(p5)[..], [Packet::PubAck(a)] if a.reason == reason::NOT_AUTHORIZED));
    let (p3, _) = login(&mut h, V3_1_1, "p3", "alice", "secret");
    h.publish(p3, "other/x", "no", QoS::AtLeastOnce, false, Some(1));
    assert!(matches!(&h.take(p3)[..], [Packet::PubAck(a)] if a.reason == 0));
    assert!(h.publishes(reader).is_empty());
    h.publish(p3, "alice/x", "yes", QoS::AtLeastOnce, false, Some(2));
    assert_eq!(h.publishes(reader).len(), 1);
}

#[test]
fn subscribe_denied_gets_0x87_or_0x80() {
    let mut h = harness();
    let (c5, _) = login(&mut h, V5, "c5", "alice", "secret");
    assert_eq!(
        h.subscribe_opts(c5, "secret/#", Default::default(), None),
        vec![reason::NOT_AUTHORIZED]
    );
    let (c3, _) = login(&mut h, V3_1_1, "c3", "alice", "secret");
    assert_eq!(
        h.subscribe_opts(c3, "secret/#", Default::default(), None),
        vec![0x80]
    );
}

#[test]
fn wildcard_subscription_does_not_leak_denied_topics_live_or_retained() {
    let mut h = harness();
    // Retained messages published without the ACL in the way (a broker-side publisher).
    let mut open = Harness::new(Config::default());
    let _ = &mut open;
    let (p, _) = login(&mut h, V5, "p", "alice", "secret");
    h.publish(p, "alice/kept", "k", QoS::AtMostOnce, true, None);
    let (s, _) = login(&mut h, V5, "s", "alice", "secret");
    h.subscribe(s, "#", QoS::AtMostOnce);
    let got = h.publishes(s);
    assert_eq!(
        got.iter().map(|m| m.topic.to_string()).collect::<Vec<_>>(),
        vec!["alice/kept"]
    );
    // A will (published by the broker) on a topic the reader may not see.
    let mut c = connect(V5, "dev", true);
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"secret"));
    c.will = Some(will("alice/dev/status", "gone", None));
    let (dev, _) = h.connect_with(c);
    h.lose(dev);
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn a_session_belongs_to_its_user() {
    // Another user who comes with a session's client id is refused (CONNACK 0x85 / 0x02),
    // whatever its clean start: it neither takes the connection over nor gets the session's
    // queued messages (which its own read ACL might not allow) or subscriptions.
    let mut h = Harness::new(Config::default());
    let as_user = |user: &str, version, clean| {
        let mut c = connect(version, "sensor-1", clean);
        c.username = Some(user.into());
        c
    };
    let (s, ack) = h.connect_with(as_user("alice", V3_1_1, false));
    assert!(!ack.session_present);
    h.subscribe(s, "alice/inbox", QoS::AtLeastOnce);
    // Alice online: mallory is refused either way, and alice stays connected.
    for (version, clean, code) in [
        (V3_1_1, false, reason::v3::IDENTIFIER_REJECTED),
        (V3_1_1, true, reason::v3::IDENTIFIER_REJECTED),
        (V5, false, reason::CLIENT_IDENTIFIER_NOT_VALID),
    ] {
        let (m, ack) = h.connect_with(as_user("mallory", version, clean));
        assert_eq!(ack.code, code);
        assert!(h.closed(m));
        assert!(!h.closed(s), "alice was taken over");
    }
    let p = h.connect(V3_1_1, "p", true, None);
    h.publish(p, "alice/inbox", "live", QoS::AtLeastOnce, false, Some(1));
    let got = h.publishes(s);
    assert_eq!(got.len(), 1, "alice's subscription is intact");
    h.ack(s, &got[0]);
    // Alice offline with a queued message: mallory is refused, alice resumes it.
    h.lose(s);
    h.publish(p, "alice/inbox", "queued", QoS::AtLeastOnce, false, Some(2));
    let (_, ack) = h.connect_with(as_user("mallory", V3_1_1, false));
    assert_eq!(ack.code, reason::v3::IDENTIFIER_REJECTED);
    assert_eq!(h.broker.stats().limit_session_owner, 4);
    let (s, ack) = h.connect_with(as_user("alice", V3_1_1, false));
    assert!(ack.session_present);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"queued");
}
