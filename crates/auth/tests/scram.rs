//! SCRAM-SHA-256 and SCRAM-SHA-512 exchanges against a client written here from RFC 5802.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tern_auth::{AuthConfig, FileAccess, PasswordFile, ScramAuth, ScramHash};
use tern_core::{AuthStep, EnhancedAuth};

/// The client side of one exchange.
struct Client {
    hash: ScramHash,
    user: String,
    password: Vec<u8>,
    nonce: String,
    first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl Client {
    fn new(hash: ScramHash, user: &str, password: &str) -> Self {
        let nonce = "fyko+d2lbbFgONRv9qkxdawL".to_owned();
        let first_bare = format!(
            "n={},r={nonce}",
            user.replace('=', "=3D").replace(',', "=2C")
        );
        Client {
            hash,
            user: user.to_owned(),
            password: password.as_bytes().to_vec(),
            nonce,
            first_bare,
            server_signature: None,
        }
    }

    fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// client-final for `server_first`.
    fn finish(&mut self, server_first: &[u8]) -> Vec<u8> {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut r = "";
        let mut s = "";
        let mut i = 0;
        for attr in sf.split(',') {
            let (k, v) = attr.split_once('=').unwrap();
            match k {
                "r" => r = v,
                "s" => s = v,
                "i" => i = v.parse().unwrap(),
                _ => {}
            }
        }
        assert!(
            r.starts_with(&self.nonce),
            "server nonce extends the client's"
        );
        assert!(r.len() > self.nonce.len());
        let h = self.hash;
        let salted = h.salted_password(&self.password, &B64.decode(s).unwrap(), i);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{sf},{without_proof}", self.first_bare);
        let signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
    }
}

fn access_with(users: &[(&str, &str)]) -> (tempfile::TempDir, FileAccess) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    for (u, p) in users {
        file.set_password(u, p.as_bytes(), true).unwrap();
    }
    file.save(&path).unwrap();
    let access = FileAccess::new(AuthConfig {
        password_file: Some(path),
        ..AuthConfig::default()
    })
    .unwrap();
    (dir, access)
}

/// Runs a whole exchange; the final step.
fn run(method: &dyn EnhancedAuth, connect_user: Option<&str>, client: &mut Client) -> AuthStep {
    let (mut exchange, step) = method.start("client-1", connect_user, Some(&client.first()));
    let AuthStep::Continue(server_first) = step else {
        return step;
    };
    let client_final = client.finish(&server_first);
    exchange.step(Some(&client_final))
}

#[test]
fn round_trip_both_hashes() {
    let (_dir, access) = access_with(&[("alice", "pencil"), ("we,ird=name", "pw")]);
    let methods = access.scram_methods();
    assert_eq!(
        methods.iter().map(|m| m.method()).collect::<Vec<_>>(),
        ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    );
    for (method, hash) in methods.iter().zip(ScramHash::ALL) {
        for (user, pw) in [("alice", "pencil"), ("we,ird=name", "pw")] {
            let mut client = Client::new(hash, user, pw);
            let step = run(method.as_ref(), Some(user), &mut client);
            let AuthStep::Success(Some(server_final)) = step else {
                panic!("{}: {user}: {step:?}", method.method());
            };
            // The client checks the server's signature: the server knows the password too.
            let expected = format!("v={}", B64.encode(client.server_signature.unwrap()));
            assert_eq!(server_final, expected.as_bytes());
            assert_eq!(client.user, user);
        }
    }
    assert_eq!(access.stats().logins_ok, 4);
}

#[test]
fn wrong_password_fails_with_bad_credentials() {
    let (_dir, access) = access_with(&[("alice", "pencil")]);
    for hash in ScramHash::ALL {
        let method = ScramAuth::new(access.clone(), hash);
        let mut client = Client::new(hash, "alice", "pencils");
        assert_eq!(
            run(&method, Some("alice"), &mut client),
            AuthStep::Fail(0x86)
        );
    }
    assert_eq!(access.stats().logins_failed, 2);
}

#[test]
fn unknown_user_looks_like_a_wrong_password() {
    let (_dir, access) = access_with(&[("alice", "pencil")]);
    let method = ScramAuth::new(access.clone(), ScramHash::Sha256);
    let mut client = Client::new(ScramHash::Sha256, "mallory", "x");
    let (_, step1) = method.start("c", Some("mallory"), Some(&client.first()));
    let (_, step2) = method.start("c", Some("mallory"), Some(&client.first()));
    // A server-first with a salt, the same each time, as for a real user.
    let (AuthStep::Continue(a), AuthStep::Continue(b)) = (step1, step2) else {
        panic!("no challenge for an unknown user");
    };
    let salt = |m: &[u8]| {
        String::from_utf8(m.to_vec())
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(salt(&a), salt(&b));
    assert_eq!(
        run(&method, Some("mallory"), &mut client),
        AuthStep::Fail(0x86)
    );
}

#[test]
fn user_without_scram_credentials_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set_password("argon-only", b"pw", false).unwrap();
    file.save(&path).unwrap();
    let access = FileAccess::new(AuthConfig {
        password_file: Some(path),
        ..AuthConfig::default()
    })
    .unwrap();
    let method = ScramAuth::new(access, ScramHash::Sha512);
    let mut client = Client::new(ScramHash::Sha512, "argon-only", "pw");
    assert_eq!(
        run(&method, Some("argon-only"), &mut client),
        AuthStep::Fail(0x86)
    );
}

#[test]
fn scram_user_must_be_the_connect_user_name() {
    let (_dir, access) = access_with(&[("alice", "pencil")]);
    let method = ScramAuth::new(access, ScramHash::Sha256);
    let mut client = Client::new(ScramHash::Sha256, "alice", "pencil");
    assert_eq!(run(&method, Some("bob"), &mut client), AuthStep::Fail(0x87));
    // No User Name (e.g. re-authentication, where the core passes none): the SCRAM user is
    // authenticated; the connection keeps the identity it has.
    let mut client = Client::new(ScramHash::Sha256, "alice", "pencil");
    assert!(matches!(
        run(&method, None, &mut client),
        AuthStep::Success(Some(_))
    ));
}

#[test]
fn malformed_and_tampered_messages_fail() {
    let (_dir, access) = access_with(&[("alice", "pencil")]);
    let method = ScramAuth::new(access, ScramHash::Sha256);
    for first in [
        &b""[..],
        b"n,,",
        b"p=tls-unique,,n=alice,r=abc",
        b"n,,m=ext,n=alice,r=abc",
        b"n,,r=abc,n=alice",
        b"n,a=bob,n=alice,r=abc",
        b"n,,n=al=ZZice,r=abc",
        b"\xff\xfe",
    ] {
        let (_, step) = method.start("c", None, Some(first));
        assert_eq!(
            step,
            AuthStep::Fail(0x87),
            "{:?}",
            String::from_utf8_lossy(first)
        );
    }
    let (_, step) = method.start("c", None, None);
    assert_eq!(step, AuthStep::Fail(0x87));

    // A client-final with a changed nonce, or a changed channel binding, fails.
    let mut client = Client::new(ScramHash::Sha256, "alice", "pencil");
    let (mut ex, AuthStep::Continue(sf)) = method.start("c", Some("alice"), Some(&client.first()))
    else {
        panic!()
    };
    let good = String::from_utf8(client.finish(&sf)).unwrap();
    let tampered = good.replacen("r=fyko", "r=fykx", 1);
    assert_eq!(ex.step(Some(tampered.as_bytes())), AuthStep::Fail(0x87));
    // The exchange is over after one final message.
    assert_eq!(ex.step(Some(good.as_bytes())), AuthStep::Fail(0x82));

    let (mut ex, AuthStep::Continue(sf)) = method.start("c", Some("alice"), Some(&client.first()))
    else {
        panic!()
    };
    let good = String::from_utf8(client.finish(&sf)).unwrap();
    let tampered = good.replacen("c=biws", "c=eSws", 1);
    assert_eq!(ex.step(Some(tampered.as_bytes())), AuthStep::Fail(0x87));
}

#[test]
fn follows_reloads() {
    let (dir, access) = access_with(&[("alice", "pencil")]);
    let method = ScramAuth::new(access.clone(), ScramHash::Sha256);
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::load(&path).unwrap();
    file.set_password("alice", b"new", true).unwrap();
    file.save(&path).unwrap();
    access.reload().unwrap();
    let mut old = Client::new(ScramHash::Sha256, "alice", "pencil");
    assert_eq!(run(&method, Some("alice"), &mut old), AuthStep::Fail(0x86));
    let mut new = Client::new(ScramHash::Sha256, "alice", "new");
    assert!(matches!(
        run(&method, Some("alice"), &mut new),
        AuthStep::Success(_)
    ));
}
