//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as MQTT 5 enhanced authentication.
//!
//! ```text
//! CONNECT  Authentication Method = SCRAM-SHA-256, Data = client-first  "n,,n=alice,r=<cnonce>"
//! AUTH 0x18                                       Data = server-first  "r=<cnonce><snonce>,s=<salt>,i=4096"
//! AUTH 0x18                                       Data = client-final  "c=biws,r=<nonce>,p=<proof>"
//! CONNACK 0x00                                    Data = server-final  "v=<server signature>"
//! ```
//!
//! The credentials are the `$scram-sha-256$` / `$scram-sha-512$` lines of the password file
//! (see [`crate::scram_credential`]). Channel binding is not supported (`n,,` or `y,,`; a
//! `p=` flag is refused), nor is an authorisation identity different from the user.
//!
//! When the CONNECT carries a User Name it must be the SCRAM user (the ACL is applied to the
//! CONNECT's User Name). An unknown user, or one without a credential for the mechanism, gets
//! a server-first message with a made-up salt and fails at the proof, like a wrong password,
//! so the exchange does not tell which users exist. Failures answer 0x86 (bad user name or
//! password); malformed messages 0x87 (not authorized).

use crate::access::FileAccess;
use crate::hash::random_bytes;
use crate::scram_credential::{SCRAM_ITERATIONS, ScramCredential, ScramHash};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::sync::OnceLock;
use subtle::ConstantTimeEq;
use tern_codec::reason;
use tern_core::{AuthExchange, AuthStep, EnhancedAuth};

/// One SCRAM mechanism over a [`FileAccess`]'s password file.
pub struct ScramAuth {
    access: FileAccess,
    hash: ScramHash,
}

impl ScramAuth {
    /// The mechanism `hash` over `access`'s password file (follows its reloads).
    pub fn new(access: FileAccess, hash: ScramHash) -> Self {
        ScramAuth { access, hash }
    }
}

impl EnhancedAuth for ScramAuth {
    fn method(&self) -> &str {
        self.hash.mechanism()
    }

    fn start(
        &self,
        client_id: &str,
        username: Option<&str>,
        data: Option<&[u8]>,
    ) -> (Box<dyn AuthExchange>, AuthStep) {
        let first = match data
            .ok_or("no client-first message")
            .and_then(ClientFirst::parse)
        {
            Ok(first) => first,
            Err(why) => return self.fail(client_id, username, reason::NOT_AUTHORIZED, why),
        };
        if username.is_some_and(|u| u != first.user) {
            return self.fail(
                client_id,
                username,
                reason::NOT_AUTHORIZED,
                "the SCRAM user is not the CONNECT's User Name",
            );
        }
        let credential = self.access.scram_credential(&first.user, self.hash);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt(&first.user), SCRAM_ITERATIONS),
        };
        let nonce = format!("{}{}", first.nonce, B64.encode(random_bytes::<18>()));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let exchange = Exchange {
            access: self.access.clone(),
            hash: self.hash,
            client_id: client_id.to_owned(),
            first,
            credential,
            nonce,
            server_first: server_first.clone(),
            done: false,
        };
        (
            Box::new(exchange),
            AuthStep::Continue(Bytes::from(server_first)),
        )
    }
}

impl ScramAuth {
    fn fail(
        &self,
        client_id: &str,
        username: Option<&str>,
        code: u8,
        why: &str,
    ) -> (Box<dyn AuthExchange>, AuthStep) {
        self.access.record_failure();
        tracing::info!(
            client_id,
            username = ?username,
            method = self.hash.mechanism(),
            "login failed: {why}"
        );
        (Box::new(Finished), AuthStep::Fail(code))
    }
}

/// A salt for users without a credential: the same for the same user name within one run, so
/// that two attempts do not tell a made-up user from a real one.
fn fake_salt(user: &str) -> Vec<u8> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(random_bytes::<32>);
    ScramHash::Sha256.hmac(key, user.as_bytes())[..16].to_vec()
}

/// An exchange waiting for the client-final message.
struct Exchange {
    access: FileAccess,
    hash: ScramHash,
    client_id: String,
    first: ClientFirst,
    /// `None` for an unknown user: the exchange runs to the proof and fails there.
    credential: Option<ScramCredential>,
    nonce: String,
    server_first: String,
    done: bool,
}

impl AuthExchange for Exchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        if std::mem::replace(&mut self.done, true) {
            return AuthStep::Fail(reason::PROTOCOL_ERROR);
        }
        match self.verify(data.unwrap_or_default()) {
            Ok(server_final) => {
                self.access.record_success();
                AuthStep::Success(Some(Bytes::from(server_final)))
            }
            Err((code, why)) => {
                self.access.record_failure();
                tracing::info!(
                    client_id = %self.client_id,
                    username = %self.first.user,
                    method = self.hash.mechanism(),
                    "login failed: {why}"
                );
                AuthStep::Fail(code)
            }
        }
    }
}

impl Exchange {
    /// Checks the client-final message; the server-final message on success.
    fn verify(&self, data: &[u8]) -> Result<String, (u8, &'static str)> {
        let malformed = |why| (reason::NOT_AUTHORIZED, why);
        let text = std::str::from_utf8(data).map_err(|_| malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(malformed("client-final has no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(malformed("client-final must start with c="))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed("client-final has no nonce"))?;
        if binding != B64.encode(&self.first.gs2_header) {
            return Err(malformed(
                "channel binding data does not match the GS2 header",
            ));
        }
        if nonce != self.nonce {
            return Err(malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        if proof.len() != self.hash.output_len() {
            return Err(malformed("proof has the wrong length"));
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let Some(c) = &self.credential else {
            return Err((
                reason::BAD_USER_NAME_OR_PASSWORD,
                "unknown user or no SCRAM credential",
            ));
        };
        let signature = self.hash.hmac(&c.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored_key = self.hash.digest(&client_key);
        if !bool::from(stored_key.ct_eq(&c.stored_key)) {
            return Err((
                reason::BAD_USER_NAME_OR_PASSWORD,
                "wrong password (SCRAM proof)",
            ));
        }
        let server_signature = self.hash.hmac(&c.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// An exchange that is over: any further step is a protocol error.
struct Finished;

impl AuthExchange for Finished {
    fn step(&mut self, _data: Option<&[u8]>) -> AuthStep {
        AuthStep::Fail(reason::PROTOCOL_ERROR)
    }
}

/// The parsed client-first message.
#[derive(Debug, PartialEq, Eq)]
struct ClientFirst {
    gs2_header: String,
    bare: String,
    user: String,
    nonce: String,
}

impl ClientFirst {
    fn parse(data: &[u8]) -> Result<Self, &'static str> {
        let text = std::str::from_utf8(data).map_err(|_| "client-first is not UTF-8")?;
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or("client-first has no GS2 header")?;
        let bare = parts.next().ok_or("client-first has no GS2 header")?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err("channel binding is not supported"),
            _ => return Err("bad GS2 channel binding flag"),
        }
        let mut user = None;
        let mut nonce = None;
        for (i, attr) in bare.split(',').enumerate() {
            match (i, attr.split_once('=')) {
                (0, Some(("n", v))) => user = Some(decode_saslname(v)?),
                (1, Some(("r", v))) if !v.is_empty() => nonce = Some(v.to_owned()),
                (0, Some(("m", _))) => return Err("mandatory extensions are not supported"),
                (0 | 1, _) => return Err("client-first must start with n=user,r=nonce"),
                _ => {} // optional extensions
            }
        }
        let user = user.ok_or("client-first has no user name")?;
        if !authzid.is_empty()
            && authzid.strip_prefix("a=").map(decode_saslname) != Some(Ok(user.clone()))
        {
            return Err("an authorisation identity other than the user is not supported");
        }
        Ok(ClientFirst {
            gs2_header: format!("{flag},{authzid},"),
            bare: bare.to_owned(),
            user,
            nonce: nonce.ok_or("client-first has no nonce")?,
        })
    }
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("empty user name");
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).ok_or("bad escape in user name")?;
        out.push(match esc {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err("bad escape in user name"),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}
