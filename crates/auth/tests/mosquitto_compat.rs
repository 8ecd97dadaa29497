//! Password files written by Debian's `mosquitto_passwd` (2.0.11) are accepted as they are.
//!
//! `fixtures/mosquitto_passwd` was written by it once (`-c -b`, `-b`, `-H sha512 -b`) and is
//! committed so the test runs anywhere; when `/usr/bin/mosquitto_passwd` is installed (as
//! `scripts/test` does) a fresh file is written and checked too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use tern_auth::{AuthConfig, FileAccess, PasswordFile, PasswordHash, Verification};
use tern_core::{AccessControl, AuthDecision, ClientInfo};

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// (user, password) of the fixture file.
const FIXTURE_USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "b0b with spaces & ünïcode"),
    ("carol", "carol-old-style"), // -H sha512: a `$6$` line
    ("dave@example.com", "x"),
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mosquitto_passwd")
}

fn client(user: &str, peer: &str) -> ClientInfo {
    ClientInfo {
        client_id: format!("{user}-client"),
        username: Some(user.to_owned()),
        peer: Some(peer.parse::<SocketAddr>().unwrap()),
        listener: 0,
        cert_cn: None,
    }
}

#[test]
fn fixture_file_verifies_right_and_wrong_passwords() {
    let file = PasswordFile::load(&fixture()).unwrap();
    assert_eq!(file.len(), FIXTURE_USERS.len());
    for (user, password) in FIXTURE_USERS {
        assert_eq!(
            file.verify(user, password.as_bytes()),
            Verification::Ok,
            "{user}"
        );
        assert_eq!(
            file.verify(user, format!("{password}!").as_bytes()),
            Verification::WrongPassword,
            "{user}"
        );
        assert_eq!(
            file.verify(user, b""),
            Verification::WrongPassword,
            "{user}"
        );
    }
    assert_eq!(
        file.verify("mallory", b"alice-pw"),
        Verification::UnknownUser
    );
    // Both Mosquitto formats are present.
    assert!(matches!(
        file.user("alice").unwrap().password,
        Some(PasswordHash::MosquittoPbkdf2 {
            iterations: 101,
            ..
        })
    ));
    assert!(matches!(
        file.user("carol").unwrap().password,
        Some(PasswordHash::MosquittoSha512 { .. })
    ));
    // Untouched on the way back out.
    assert_eq!(file.render(), std::fs::read_to_string(fixture()).unwrap());
}

#[test]
fn fixture_file_through_the_access_hook() {
    let access = FileAccess::new(AuthConfig {
        password_file: Some(fixture()),
        ..AuthConfig::default()
    })
    .unwrap();
    for (n, (user, password)) in FIXTURE_USERS.iter().enumerate() {
        // A different address per user, so the throttle stays out of the way.
        let peer = format!("192.0.2.{}:1000", n + 1);
        let c = client(user, &peer);
        assert_eq!(
            access.authenticate(&c, Some(password.as_bytes())),
            AuthDecision::Allow
        );
        assert_eq!(
            access.authenticate(&c, Some(b"wrong")),
            AuthDecision::BadCredentials
        );
        assert_eq!(access.authenticate(&c, None), AuthDecision::BadCredentials);
    }
    assert_eq!(
        access.authenticate(&client("mallory", "192.0.2.99:1"), Some(b"alice-pw")),
        AuthDecision::BadCredentials
    );
    let stats = access.stats();
    assert_eq!(stats.logins_ok, 4);
    assert_eq!(stats.logins_failed, 9);
}

fn mosquitto_passwd(args: &[&str]) {
    let status = Command::new(MOSQUITTO_PASSWD).args(args).status().unwrap();
    assert!(status.success(), "mosquitto_passwd {args:?}: {status}");
}

#[test]
fn file_written_now_by_mosquitto_passwd() {
    if !Path::new(MOSQUITTO_PASSWD).exists() {
        eprintln!("skipped: {MOSQUITTO_PASSWD} is not installed (the fixture test still ran)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let p = path.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", p, "u1", "first password"]);
    mosquitto_passwd(&["-b", p, "u2", "second"]);
    mosquitto_passwd(&["-H", "sha512", "-b", p, "u3", "third"]);
    mosquitto_passwd(&["-b", p, "u1", "changed"]); // update
    mosquitto_passwd(&["-b", p, "gone", "x"]);
    mosquitto_passwd(&["-D", p, "gone"]); // delete

    let file = PasswordFile::load(&path).unwrap();
    assert_eq!(file.len(), 3);
    assert_eq!(file.verify("u1", b"changed"), Verification::Ok);
    assert_eq!(
        file.verify("u1", b"first password"),
        Verification::WrongPassword
    );
    assert_eq!(file.verify("u2", b"second"), Verification::Ok);
    assert_eq!(file.verify("u3", b"third"), Verification::Ok);
    assert_eq!(file.verify("u3", b"thirdd"), Verification::WrongPassword);
    assert_eq!(file.verify("gone", b"x"), Verification::UnknownUser);

    // And tern's edits keep mosquitto's lines as they were.
    let before = std::fs::read_to_string(&path).unwrap();
    let mut file = file;
    file.set_password("u4", b"tern", true).unwrap();
    file.save(&path).unwrap();
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(after.starts_with(&before));
    let back = PasswordFile::load(&path).unwrap();
    assert_eq!(back.verify("u2", b"second"), Verification::Ok);
    assert_eq!(back.verify("u4", b"tern"), Verification::Ok);
}
