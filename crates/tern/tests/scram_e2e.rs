//! Logins against a password file end to end: MQTT 5 enhanced authentication with
//! SCRAM-SHA-256 and SCRAM-SHA-512 (a client doing the AUTH exchange over TCP, MQTT 5.0 section
//! 4.12, RFC 5802 / RFC 7677), and plain passwords, checked by the connection's task before
//! the core sees the CONNECT. The password file is written by the auth library (`tern passwd`
//! writes the same lines).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use common::*;
use tern::config::Config;
use tern_auth::{PasswordFile, ScramHash};
use tern_client::builder;
use tern_codec::{Auth, Packet, Properties, PropertyValues, reason};

async fn broker(dir: &tempfile::TempDir) -> TestBroker {
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set_password("alice", b"wonderland", true).unwrap();
    file.save(&path).unwrap();
    let mut config = Config {
        password_file: Some(path),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    TestBroker::with_config(config).await
}

/// CONNECT as `user` with `password`, and the packets after it in the same write; returns
/// the connection and the CONNACK's code.
async fn plain_login(
    b: &TestBroker,
    version: tern_codec::ProtocolVersion,
    user: &str,
    password: &str,
    after: &[Packet],
) -> (tern_client::Connection, u8) {
    let mut c = b.raw(version).await;
    let mut connect = builder::connect(version, "plain-client", true, 60);
    connect.username = Some(user.into());
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    let mut bytes = bytes::BytesMut::new();
    for p in std::iter::once(&Packet::Connect(Box::new(connect))).chain(after) {
        tern_codec::encode_packet(p, version, &mut bytes).unwrap();
    }
    c.send_raw(&bytes).await.unwrap();
    match next(&mut c).await {
        Packet::ConnAck(a) => (c, a.code),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn plain_passwords_are_checked_ahead_of_the_core() {
    // A password check costs 15–30 ms; the core, which every client's messages go through,
    // must not spend them. The connection's task checks, the core takes its verdict.
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir).await;
    let ahead = "tern_password_checks_total{where=\"ahead\"}";
    let core = "tern_password_checks_total{where=\"core\"}";
    // Packets sent behind the CONNECT wait for its check, and come after it in order.
    let (mut c, code) = plain_login(
        &b,
        V5,
        "alice",
        "wonderland",
        &[builder::subscribe(1, &[("t", tern_codec::QoS::AtMostOnce)])],
    )
    .await;
    assert_eq!(code, 0);
    assert!(matches!(next(&mut c).await, Packet::SubAck(_)));
    assert_eq!(
        plain_login(&b, V5, "alice", "guess", &[]).await.1,
        reason::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        plain_login(&b, V3_1_1, "nobody", "guess", &[]).await.1,
        0x04
    );
    assert_eq!((b.metric(ahead).await, b.metric(core).await), (3.0, 0.0));
    // The same password again is remembered: nothing to check, ahead or on the core.
    assert_eq!(
        plain_login(&b, V3_1_1, "alice", "wonderland", &[]).await.1,
        0
    );
    assert_eq!((b.metric(ahead).await, b.metric(core).await), (3.0, 0.0));
    assert_eq!(b.metric("tern_logins_remembered_total").await, 1.0);
}

/// Runs one exchange; returns the CONNACK reason code, checking the server's final signature on
/// success.
async fn login(b: &TestBroker, method: &str, hash: ScramHash, password: &str) -> u8 {
    let nonce = "rOprNGfwEbeRWgbNEkqO";
    let first_bare = format!("n=alice,r={nonce}");
    let mut c = b.raw(V5).await;
    let mut connect = builder::connect(V5, "scram-client", true, 60);
    connect.username = Some("alice".into());
    connect.properties.authentication_method = Some(method.into());
    connect.properties.authentication_data = Some(Bytes::from(format!("n,,{first_bare}")));
    c.send(&Packet::Connect(Box::new(connect))).await.unwrap();
    let server_first = match next(&mut c).await {
        Packet::Auth(a) => {
            assert_eq!(a.reason, reason::CONTINUE_AUTHENTICATION);
            assert_eq!(a.properties.authentication_method.as_deref(), Some(method));
            String::from_utf8(a.properties.authentication_data.clone().unwrap().to_vec()).unwrap()
        }
        Packet::ConnAck(a) => return a.code,
        other => panic!("{other:?}"),
    };
    let attr = |k: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let (r, s, i) = (attr("r="), attr("s="), attr("i=").parse::<u32>().unwrap());
    assert!(
        r.starts_with(nonce) && r.len() > nonce.len(),
        "server nonce extends the client's"
    );
    let salted = hash.salted_password(password.as_bytes(), &B64.decode(s).unwrap(), i);
    let client_key = hash.hmac(&salted, b"Client Key");
    let stored_key = hash.digest(&client_key);
    let without_proof = format!("c=biws,r={r}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hash.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let final_msg = format!("{without_proof},p={}", B64.encode(proof));
    let properties: Properties = PropertyValues {
        authentication_method: Some(method.into()),
        authentication_data: Some(Bytes::from(final_msg)),
        ..Default::default()
    }
    .into();
    c.send(&Packet::Auth(Auth {
        reason: reason::CONTINUE_AUTHENTICATION,
        properties,
    }))
    .await
    .unwrap();
    match next(&mut c).await {
        Packet::ConnAck(a) => {
            if a.code == 0 {
                let server_key = hash.hmac(&salted, b"Server Key");
                let expected = format!(
                    "v={}",
                    B64.encode(hash.hmac(&server_key, auth_message.as_bytes()))
                );
                let got =
                    String::from_utf8(a.properties.authentication_data.clone().unwrap().to_vec())
                        .unwrap();
                assert_eq!(got, expected, "the server proves it knows the password too");
                c.send(&Packet::PingReq).await.unwrap();
                assert_eq!(next(&mut c).await, Packet::PingResp);
            }
            a.code
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn scram_sha_256_and_512_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir).await;
    assert_eq!(
        login(&b, "SCRAM-SHA-256", ScramHash::Sha256, "wonderland").await,
        0
    );
    assert_eq!(
        login(&b, "SCRAM-SHA-512", ScramHash::Sha512, "wonderland").await,
        0
    );
}

#[tokio::test]
async fn scram_with_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir).await;
    let code = login(&b, "SCRAM-SHA-256", ScramHash::Sha256, "looking-glass").await;
    assert!(
        code == reason::BAD_USER_NAME_OR_PASSWORD || code == reason::NOT_AUTHORIZED,
        "{code:#x}"
    );
}

#[tokio::test]
async fn unknown_method_is_0x8c() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir).await;
    let mut c = b.raw(V5).await;
    let mut connect = builder::connect(V5, "x", true, 60);
    connect.username = Some("alice".into());
    connect.properties.authentication_method = Some("KERBEROS".into());
    c.send(&Packet::Connect(Box::new(connect))).await.unwrap();
    match next(&mut c).await {
        Packet::ConnAck(a) => assert_eq!(a.code, reason::BAD_AUTHENTICATION_METHOD),
        other => panic!("{other:?}"),
    }
}
