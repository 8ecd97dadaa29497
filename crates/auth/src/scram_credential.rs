//! Stored SCRAM credentials (RFC 5802 section 3): what the server keeps so a user can log in
//! with SCRAM-SHA-256 / SCRAM-SHA-512 without the server ever seeing the password.
//!
//! In the password file a credential is a line of its own for the user:
//!
//! ```text
//! alice:$scram-sha-256$4096$<salt b64>$<StoredKey b64>$<ServerKey b64>
//! alice:$scram-sha-512$4096$<salt b64>$<StoredKey b64>$<ServerKey b64>
//! ```
//!
//! with `SaltedPassword = PBKDF2-HMAC-H(password, salt, iterations)`,
//! `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. The password is used as given (no
//! SASLprep normalisation, so non-ASCII passwords must be sent in the same Unicode form).

use crate::hash::random_bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Iterations for new SCRAM credentials (RFC 7677's minimum recommendation).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    /// Both mechanisms.
    pub const ALL: [ScramHash; 2] = [ScramHash::Sha256, ScramHash::Sha512];

    /// The MQTT Authentication Method / SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The prefix of its password file lines.
    pub fn tag(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "$scram-sha-256$",
            ScramHash::Sha512 => "$scram-sha-512$",
        }
    }

    /// Output length of the hash in bytes.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    /// `H(data)`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, data)`.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with HMAC-H, one block.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// Why a SCRAM line could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SCRAM credential: {0}")]
pub struct ScramCredentialError(pub String);

/// One user's stored credential for one SCRAM mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub hash: ScramHash,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ScramCredential({}, i={}, ..)",
            self.hash.mechanism(),
            self.iterations
        )
    }
}

impl ScramCredential {
    /// Derives a credential from a password with a fresh random salt.
    pub fn new(hash: ScramHash, password: &[u8]) -> Self {
        Self::derive(hash, password, &random_bytes::<16>(), SCRAM_ITERATIONS)
    }

    /// Derives a credential from a password, salt and iteration count.
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramCredential {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was derived from (used for a plain
    /// CONNECT password when the user has SCRAM credentials only). Constant-time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = Self::derive(self.hash, password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }

    /// Parses `$scram-sha-256$...` / `$scram-sha-512$...`; `None` when `s` is not a SCRAM line.
    pub fn parse(s: &str) -> Option<Result<Self, ScramCredentialError>> {
        let (hash, rest) = ScramHash::ALL
            .iter()
            .find_map(|h| s.strip_prefix(h.tag()).map(|rest| (*h, rest)))?;
        Some(Self::parse_fields(hash, rest))
    }

    fn parse_fields(hash: ScramHash, rest: &str) -> Result<Self, ScramCredentialError> {
        let err = |m: &str| ScramCredentialError(format!("{}: {m}", hash.mechanism()));
        let parts: Vec<&str> = rest.split('$').collect();
        let [iterations, salt, stored, server] = parts[..] else {
            return Err(err("want <iterations>$<salt>$<StoredKey>$<ServerKey>"));
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| err("bad iteration count"))?;
        let b64 = |v: &str, what: &str| {
            B64.decode(v)
                .map_err(|e| err(&format!("{what} is not base64: {e}")))
        };
        let salt = b64(salt, "salt")?;
        let stored_key = b64(stored, "StoredKey")?;
        let server_key = b64(server, "ServerKey")?;
        if salt.is_empty() {
            return Err(err("empty salt"));
        }
        if stored_key.len() != hash.output_len() || server_key.len() != hash.output_len() {
            return Err(err("key length does not match the hash"));
        }
        Ok(ScramCredential {
            hash,
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// The text stored after `user:`.
    pub fn encode(&self) -> String {
        format!(
            "{}{}${}${}${}",
            self.hash.tag(),
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3 test vector: user "user", password "pencil",
    // salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
    #[test]
    fn rfc7677_keys() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c = ScramCredential::derive(ScramHash::Sha256, b"pencil", &salt, 4096);
        // ServerSignature of the RFC's exchange, recomputed from our ServerKey.
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = ScramHash::Sha256.hmac(&c.server_key, auth_message.as_bytes());
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn encode_parse_round_trip() {
        for h in ScramHash::ALL {
            let c = ScramCredential::new(h, b"pw");
            let text = c.encode();
            assert!(text.starts_with(h.tag()));
            let back = ScramCredential::parse(&text).unwrap().unwrap();
            assert_eq!(back, c);
            assert!(back.verify_password(b"pw"));
            assert!(!back.verify_password(b"pw2"));
        }
    }

    #[test]
    fn parse_errors() {
        assert!(ScramCredential::parse("$7$1$a$b").is_none());
        for bad in [
            "$scram-sha-256$4096$c2FsdA==$AAAA",
            "$scram-sha-256$x$c2FsdA==$AAAA$AAAA",
            "$scram-sha-256$4096$c2FsdA==$AAAA$AAAA",
            "$scram-sha-512$4096$$AAAA$AAAA",
        ] {
            assert!(ScramCredential::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
