//! `FileAccess` through the core's `AccessControl` hook: every ACL path (publish, the will,
//! subscribe, delivery and retained messages, `$SYS`, patterns, deny, the anonymous section),
//! the anonymous rules per listener, throttling and reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use tern_auth::{AuthConfig, AuthError, FileAccess, PasswordFile};
use tern_core::{AccessControl, AuthDecision, ClientInfo};

const ACL: &str = "\
# Anonymous clients
topic read public/#
topic write public/anon-inbox

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read shared/+/status
topic write shared/commands
topic read $SYS/broker/clients/#

user admin
topic #
topic $SYS/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox/#
pattern write wills/%c
";

struct Fixture {
    _dir: tempfile::TempDir,
    passwd: PathBuf,
    acl: PathBuf,
    access: FileAccess,
}

fn fixture(allow_anonymous: Vec<Option<bool>>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    let mut file = PasswordFile::new();
    file.set_password("alice", b"alice-pw", false).unwrap();
    file.set_password("admin", b"admin-pw", false).unwrap();
    file.set_password("bob", b"bob-pw", false).unwrap();
    file.save(&passwd).unwrap();
    std::fs::write(&acl, ACL).unwrap();
    let access = FileAccess::new(AuthConfig {
        password_file: Some(passwd.clone()),
        acl_file: Some(acl.clone()),
        allow_anonymous,
    })
    .unwrap();
    Fixture {
        _dir: dir,
        passwd,
        acl,
        access,
    }
}

fn who(user: Option<&str>, client_id: &str) -> ClientInfo {
    ClientInfo {
        client_id: client_id.to_owned(),
        username: user.map(str::to_owned),
        peer: Some("198.51.100.7:4000".parse().unwrap()),
        listener: 0,
        cert_cn: None,
    }
}

#[test]
fn publish_allowed_and_denied() {
    let f = fixture(vec![]);
    let a = &f.access;
    let alice = who(Some("alice"), "a1");
    assert!(a.can_publish(&alice, "alice/x/y"));
    assert!(
        a.can_publish(&alice, "alice"),
        "`alice/#` covers the parent level"
    );
    assert!(a.can_publish(&alice, "shared/commands"));
    assert!(!a.can_publish(&alice, "shared/x/status"), "read-only rule");
    assert!(!a.can_publish(&alice, "bob/x"), "default deny");
    assert!(
        !a.can_publish(&alice, "public/anon-inbox"),
        "anonymous section is not alice's"
    );
    let bob = who(Some("bob"), "b1");
    assert!(
        !a.can_publish(&bob, "anything"),
        "a user without a section gets only patterns"
    );
}

#[test]
fn deny_wins() {
    let f = fixture(vec![]);
    let alice = who(Some("alice"), "a1");
    assert!(!f.access.can_publish(&alice, "alice/secret"));
    assert!(!f.access.can_publish(&alice, "alice/secret/deeper"));
    assert!(!f.access.can_receive(&alice, "alice/secret/x"));
    assert!(!f.access.can_subscribe(&alice, "alice/secret/#"));
    // A subscription that only overlaps the denied area is granted; deliveries are filtered.
    assert!(f.access.can_subscribe(&alice, "alice/#"));
    assert!(f.access.can_receive(&alice, "alice/public"));
}

#[test]
fn will_topic_is_a_publish() {
    // The core checks the will topic at CONNECT with can_publish.
    let f = fixture(vec![]);
    let c = who(Some("bob"), "sensor-9");
    assert!(f.access.can_publish(&c, "wills/sensor-9"));
    assert!(!f.access.can_publish(&c, "wills/sensor-10"));
}

#[test]
fn subscribe_needs_a_covering_read_rule() {
    let f = fixture(vec![]);
    let a = &f.access;
    let alice = who(Some("alice"), "a1");
    assert!(a.can_subscribe(&alice, "alice/#"));
    assert!(
        a.can_subscribe(&alice, "alice/+/bar"),
        "`alice/#` covers `alice/+/bar`"
    );
    assert!(a.can_subscribe(&alice, "shared/+/status"));
    assert!(a.can_subscribe(&alice, "shared/kitchen/status"));
    assert!(
        !a.can_subscribe(&alice, "shared/#"),
        "`shared/+/status` does not cover `shared/#`"
    );
    assert!(
        !a.can_subscribe(&alice, "shared/commands"),
        "write-only rule"
    );
    assert!(!a.can_subscribe(&alice, "#"));
    // Shared subscriptions are checked on their filter.
    assert!(a.can_subscribe(&alice, "$share/g/alice/+/x"));
    assert!(!a.can_subscribe(&alice, "$share/g/bob/#"));
}

#[test]
fn delivery_and_retained_messages_need_read_on_the_topic() {
    // The core calls can_receive per delivery and per retained message sent on subscribe.
    let f = fixture(vec![]);
    let a = &f.access;
    assert!(a.restricts_reading());
    let alice = who(Some("alice"), "a1");
    assert!(a.can_receive(&alice, "shared/kitchen/status"));
    assert!(!a.can_receive(&alice, "shared/kitchen/other"));
    assert!(!a.can_receive(&alice, "shared/commands"), "write-only rule");
    let admin = who(Some("admin"), "adm");
    assert!(a.can_receive(&admin, "anything/at/all"));
}

#[test]
fn sys_topics_need_an_explicit_rule() {
    let f = fixture(vec![]);
    let a = &f.access;
    let admin = who(Some("admin"), "adm");
    // `topic #` does not match `$SYS/...`; the explicit `$SYS/#` rule does.
    assert!(a.can_receive(&admin, "$SYS/broker/uptime"));
    assert!(a.can_subscribe(&admin, "$SYS/#"));
    let alice = who(Some("alice"), "a1");
    assert!(a.can_receive(&alice, "$SYS/broker/clients/connected"));
    assert!(a.can_subscribe(&alice, "$SYS/broker/clients/+"));
    assert!(!a.can_receive(&alice, "$SYS/broker/uptime"));
    assert!(!a.can_subscribe(&alice, "$SYS/#"));
    assert!(!a.can_publish(&alice, "$SYS/broker/clients/x"), "read only");

    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic #\n").unwrap();
    let a = FileAccess::new(AuthConfig {
        acl_file: Some(acl),
        ..AuthConfig::default()
    })
    .unwrap();
    let anon = who(None, "x");
    assert!(a.can_receive(&anon, "a/b"));
    assert!(!a.can_receive(&anon, "$SYS/broker/uptime"));
    assert!(!a.can_subscribe(&anon, "$SYS/#"));
}

#[test]
fn patterns_substitute_user_and_client_id() {
    let f = fixture(vec![]);
    let a = &f.access;
    let bob = who(Some("bob"), "dev-1");
    assert!(a.can_publish(&bob, "devices/dev-1/temp"));
    assert!(a.can_subscribe(&bob, "devices/dev-1/#"));
    assert!(!a.can_publish(&bob, "devices/dev-2/temp"));
    assert!(a.can_receive(&bob, "users/bob/inbox/1"));
    assert!(a.can_subscribe(&bob, "users/bob/inbox/#"));
    assert!(
        !a.can_publish(&bob, "users/bob/inbox/1"),
        "read-only pattern"
    );
    assert!(!a.can_receive(&bob, "users/alice/inbox/1"));
    // Patterns apply to anonymous clients too, except those with %u.
    let anon = who(None, "dev-3");
    assert!(a.can_publish(&anon, "devices/dev-3/x"));
    assert!(!a.can_receive(&anon, "users//inbox/1"));
    // A client id with wildcards or a `/` cannot widen a pattern.
    for sneaky in ["+", "#", "dev-1/x"] {
        let c = who(Some("bob"), sneaky);
        assert!(!a.can_publish(&c, "devices/dev-1/x/y"), "{sneaky}");
        assert!(!a.can_subscribe(&c, "devices/+/#"), "{sneaky}");
    }
    let c = who(Some("bob/inbox"), "c");
    assert!(!a.can_receive(&c, "users/bob/inbox/inbox/1"));
}

#[test]
fn anonymous_section() {
    let f = fixture(vec![Some(true)]);
    let a = &f.access;
    let anon = who(None, "anon-1");
    assert_eq!(a.authenticate(&anon, None), AuthDecision::Allow);
    assert!(a.can_subscribe(&anon, "public/#"));
    assert!(a.can_receive(&anon, "public/news"));
    assert!(!a.can_publish(&anon, "public/news"));
    assert!(a.can_publish(&anon, "public/anon-inbox"));
    assert!(!a.can_receive(&anon, "alice/x"));
}

#[test]
fn without_an_acl_everything_is_allowed() {
    let a = FileAccess::new(AuthConfig::default()).unwrap();
    let c = who(Some("anyone"), "c");
    assert!(!a.restricts_reading());
    assert!(a.can_publish(&c, "x/y"));
    assert!(a.can_subscribe(&c, "#"));
    assert!(a.can_receive(&c, "$SYS/broker/uptime"));
}

#[test]
fn anonymous_rules_per_listener() {
    // No authentication configured: anonymous allowed (user names are not checked).
    let open = FileAccess::new(AuthConfig::default()).unwrap();
    assert_eq!(
        open.authenticate(&who(None, "c"), None),
        AuthDecision::Allow
    );
    assert_eq!(
        open.authenticate(&who(Some("u"), "c"), Some(b"whatever")),
        AuthDecision::Allow
    );
    // ...unless turned off.
    let closed = FileAccess::new(AuthConfig {
        allow_anonymous: vec![Some(false)],
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(
        closed.authenticate(&who(None, "c"), None),
        AuthDecision::NotAuthorized
    );

    // A password file turns anonymous access off by default; per listener it can be back on.
    let f = fixture(vec![None, Some(true), Some(false)]);
    let on = |listener| ClientInfo {
        listener,
        ..who(None, "anon")
    };
    assert_eq!(
        f.access.authenticate(&on(0), None),
        AuthDecision::NotAuthorized
    );
    assert_eq!(f.access.authenticate(&on(1), None), AuthDecision::Allow);
    assert_eq!(
        f.access.authenticate(&on(2), None),
        AuthDecision::NotAuthorized
    );
    assert_eq!(
        f.access.authenticate(&on(7), None),
        AuthDecision::NotAuthorized
    );
    // Users still need their password on a listener that allows anonymous clients.
    let alice = ClientInfo {
        listener: 1,
        ..who(Some("alice"), "a")
    };
    assert_eq!(
        f.access.authenticate(&alice, Some(b"nope")),
        AuthDecision::BadCredentials
    );
    assert_eq!(
        f.access.authenticate(&alice, Some(b"alice-pw")),
        AuthDecision::Allow
    );
}

#[test]
fn certificate_cn_authenticates_its_user() {
    let f = fixture(vec![]);
    let mut c = who(Some("carol"), "c");
    c.cert_cn = Some("carol".into());
    assert_eq!(f.access.authenticate(&c, None), AuthDecision::Allow);
    c.cert_cn = Some("someone-else".into());
    assert_eq!(
        f.access.authenticate(&c, None),
        AuthDecision::BadCredentials
    );
}

#[test]
fn repeated_failures_are_throttled_per_address() {
    let f = fixture(vec![]);
    let a = &f.access;
    let from = |addr: &str| ClientInfo {
        peer: Some(addr.parse::<SocketAddr>().unwrap()),
        ..who(Some("alice"), "a")
    };
    let attacker = from("203.0.113.5:1111");
    for _ in 0..tern_auth::throttle::FREE_FAILURES + 1 {
        assert_eq!(
            a.authenticate(&attacker, Some(b"guess")),
            AuthDecision::BadCredentials
        );
    }
    // In the back-off window even the right password is refused, without being checked.
    let same_host = from("203.0.113.5:2222");
    assert_eq!(
        a.authenticate(&same_host, Some(b"alice-pw")),
        AuthDecision::BadCredentials
    );
    assert_eq!(a.stats().logins_throttled, 1);
    // Other addresses are not affected.
    assert_eq!(
        a.authenticate(&from("203.0.113.6:1"), Some(b"alice-pw")),
        AuthDecision::Allow
    );
    // After the window (1 s for the first one), the right password works and clears it.
    std::thread::sleep(tern_auth::throttle::FIRST_BACKOFF);
    assert_eq!(
        a.authenticate(&same_host, Some(b"alice-pw")),
        AuthDecision::Allow
    );
    assert_eq!(
        a.authenticate(&attacker, Some(b"guess")),
        AuthDecision::BadCredentials
    );
    assert_eq!(
        a.authenticate(&same_host, Some(b"alice-pw")),
        AuthDecision::Allow
    );
}

#[test]
fn reload_swaps_both_files_or_keeps_the_old_ones() {
    let f = fixture(vec![]);
    let a = &f.access;
    let alice = who(Some("alice"), "a1");
    let bob = who(Some("bob"), "b1");
    assert!(!a.can_publish(&bob, "bob/x"));

    // A good reload: new rule and new password take effect.
    std::fs::write(&f.acl, format!("{ACL}\nuser bob\ntopic bob/#\n")).unwrap();
    let mut pw = PasswordFile::load(&f.passwd).unwrap();
    pw.set_password("bob", b"new-bob-pw", false).unwrap();
    pw.save(&f.passwd).unwrap();
    a.reload().unwrap();
    assert!(a.can_publish(&bob, "bob/x"));
    assert_eq!(
        a.authenticate(&bob, Some(b"new-bob-pw")),
        AuthDecision::Allow
    );

    // A bad ACL file: the error is returned and both old files stay in force, even though
    // the password file itself was fine.
    std::fs::write(&f.acl, "topic ok\nbogus line\n").unwrap();
    pw.set_password("bob", b"third", false).unwrap();
    pw.save(&f.passwd).unwrap();
    let err = a.reload().unwrap_err();
    assert!(matches!(err, AuthError::Acl(_)));
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(a.can_publish(&bob, "bob/x"));
    assert!(a.can_publish(&alice, "alice/x"));
    assert_eq!(
        a.authenticate(&bob, Some(b"new-bob-pw")),
        AuthDecision::Allow
    );

    // A bad password file, likewise.
    std::fs::write(&f.acl, ACL).unwrap();
    std::fs::write(&f.passwd, "bob:plaintext\n").unwrap();
    let err = a.reload().unwrap_err();
    assert!(matches!(err, AuthError::Password(_)));
    assert!(a.can_publish(&bob, "bob/x"));
    // A missing file too.
    std::fs::remove_file(&f.passwd).unwrap();
    assert!(a.reload().is_err());
    assert_eq!(
        a.authenticate(&alice, Some(b"alice-pw")),
        AuthDecision::Allow
    );
    let stats = a.stats();
    assert_eq!((stats.reloads_ok, stats.reloads_failed), (1, 3));
}

#[test]
fn bad_files_at_start_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read a/#/b\n").unwrap();
    let err = FileAccess::new(AuthConfig {
        acl_file: Some(acl.clone()),
        ..AuthConfig::default()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("ACL file: "), "{msg}");
    assert!(msg.contains(&format!("{}: line 1", acl.display())), "{msg}");
}

#[test]
fn a_password_accepted_before_costs_no_second_hash_check_until_a_reload() {
    // A client with good credentials reconnecting in a loop must not cost an Argon2 check (on
    // the broker's core) each time: the same password again is checked with one HMAC.
    let f = fixture(vec![]);
    let a = &f.access;
    let alice = who(Some("alice"), "a1");
    assert_eq!(
        a.authenticate(&alice, Some(b"alice-pw")),
        AuthDecision::Allow
    );
    assert_eq!(
        a.stats().logins_remembered,
        0,
        "the first is checked in full"
    );
    assert_eq!(
        a.authenticate(&alice, Some(b"alice-pw")),
        AuthDecision::Allow
    );
    assert_eq!(a.stats().logins_remembered, 1);
    // A wrong password is not taken for the remembered one. (Failures from other addresses,
    // so that the back-off does not refuse the logins after them.)
    let from = |mut info: ClientInfo, last: u8| {
        info.peer = Some(SocketAddr::from(([198, 51, 100, last], 4000)));
        info
    };
    assert_eq!(
        a.authenticate(&from(alice.clone(), 8), Some(b"alice-pw2")),
        AuthDecision::BadCredentials
    );
    // Another user with the same password is checked in full (and refused).
    let bob = from(who(Some("bob"), "b1"), 9);
    assert_eq!(
        a.authenticate(&bob, Some(b"alice-pw")),
        AuthDecision::BadCredentials
    );
    // A reload forgets: a password changed in the file is not accepted from memory.
    let mut pw = PasswordFile::load(&f.passwd).unwrap();
    pw.set_password("alice", b"changed", false).unwrap();
    pw.save(&f.passwd).unwrap();
    a.reload().unwrap();
    assert_eq!(
        a.authenticate(&from(alice.clone(), 10), Some(b"alice-pw")),
        AuthDecision::BadCredentials
    );
    assert_eq!(
        a.authenticate(&alice, Some(b"changed")),
        AuthDecision::Allow
    );
    assert_eq!(a.stats().logins_remembered, 1);
}

#[test]
fn a_password_checked_ahead_is_not_checked_again_on_the_core() {
    // The connection's task checks the password in full (`check_ahead`, off the broker's
    // core); `authenticate` then takes that verdict, once, and checks nothing itself.
    let f = fixture(vec![]);
    let a = &f.access;
    let ip = |last: u8| Some(std::net::IpAddr::from([198, 51, 100, last]));
    let from = |mut info: ClientInfo, last: u8| {
        info.peer = Some(SocketAddr::from(([198, 51, 100, last], 4000)));
        info
    };
    let alice = from(who(Some("alice"), "a1"), 1);
    let stats = |a: &FileAccess| {
        let s = a.stats();
        (s.checked_ahead, s.checked_on_core)
    };
    a.check_ahead("alice", b"alice-pw", ip(1));
    assert_eq!(stats(a), (1, 0));
    assert_eq!(
        a.authenticate(&alice, Some(b"alice-pw")),
        AuthDecision::Allow
    );
    assert_eq!(stats(a), (1, 0), "the core took the verdict");
    // Accepted before: nothing to check ahead, and the core remembers it.
    a.check_ahead("alice", b"alice-pw", ip(1));
    assert_eq!(
        a.authenticate(&alice, Some(b"alice-pw")),
        AuthDecision::Allow
    );
    assert_eq!(stats(a), (1, 0));
    assert_eq!(a.stats().logins_remembered, 1);
    // A wrong password and an unknown user: refused on the verdict, counted as failures.
    a.check_ahead("alice", b"guess", ip(2));
    a.check_ahead("mallory", b"guess", ip(3));
    assert_eq!(stats(a), (3, 0));
    assert_eq!(
        a.authenticate(&from(alice.clone(), 2), Some(b"guess")),
        AuthDecision::BadCredentials
    );
    assert_eq!(
        a.authenticate(&from(who(Some("mallory"), "m"), 3), Some(b"guess")),
        AuthDecision::BadCredentials
    );
    assert_eq!(stats(a), (3, 0));
    assert_eq!(a.stats().logins_failed, 2);
    // A verdict is taken once: the same guess again, not checked ahead, is checked on the core.
    assert_eq!(
        a.authenticate(&from(alice.clone(), 4), Some(b"guess")),
        AuthDecision::BadCredentials
    );
    assert_eq!(stats(a), (3, 1));
    // A verdict is for that user and password only.
    a.check_ahead("bob", b"bob-pw", ip(5));
    assert_eq!(
        a.authenticate(&from(who(Some("bob"), "b"), 5), Some(b"alice-pw")),
        AuthDecision::BadCredentials
    );
    assert_eq!(stats(a), (4, 2));
    // The verdict is on the user name and the password, not on the two run together.
    // ("admi", "nadmin-pw") is not ("admin", "admin-pw"): that login is checked on the core.
    a.check_ahead("admi", b"nadmin-pw", ip(5));
    assert_eq!(
        a.authenticate(&from(who(Some("admin"), "ad"), 5), Some(b"admin-pw")),
        AuthDecision::Allow
    );
    assert_eq!(stats(a), (5, 3));
    // Failures checked ahead count against the address even when the core never authenticates
    // their CONNECTs (it refuses some first, for a bad client id or will topic): guessing that
    // way meets the back-off after FREE_FAILURES, and nothing more is checked for the address.
    let before = stats(a);
    for i in 0..10 {
        a.check_ahead("alice", format!("guess-{i}").as_bytes(), ip(9));
    }
    assert_eq!(
        stats(a).0,
        before.0 + u64::from(tern_auth::throttle::FREE_FAILURES) + 1
    );
    // The core counts a failure checked ahead once: not one more failure to the address.
    let y = from(who(Some("bob"), "y"), 11);
    a.check_ahead("bob", b"nope", ip(11));
    assert_eq!(
        a.authenticate(&y, Some(b"nope")),
        AuthDecision::BadCredentials
    );
    for i in 0..u64::from(tern_auth::throttle::FREE_FAILURES) - 1 {
        assert_eq!(
            a.authenticate(&y, Some(format!("nope-{i}").as_bytes())),
            AuthDecision::BadCredentials
        );
    }
    let throttled = a.stats().logins_throttled;
    assert_eq!(
        a.authenticate(&y, Some(b"bob-pw")),
        AuthDecision::Allow,
        "{} failures: still below the back-off",
        tern_auth::throttle::FREE_FAILURES
    );
    assert_eq!(a.stats().logins_throttled, throttled);
    // An address in its back-off window is refused unchecked: nothing is checked ahead.
    let x = from(who(Some("bob"), "b"), 6);
    for _ in 0..5 {
        a.authenticate(&x, Some(b"wrong"));
    }
    let checked = stats(a);
    a.check_ahead("bob", b"other", ip(6));
    assert_eq!(stats(a), checked, "back-off: not checked ahead");
    // A reload forgets the verdicts with the rest.
    a.check_ahead("bob", b"bob-pw2", ip(7));
    a.reload().unwrap();
    let before = stats(a);
    assert_eq!(
        a.authenticate(&from(who(Some("bob"), "b"), 7), Some(b"bob-pw2")),
        AuthDecision::BadCredentials
    );
    assert_eq!(stats(a), (before.0, before.1 + 1));
}
