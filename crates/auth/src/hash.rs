//! Password hashes: the formats a password file line may carry, how each is verified, and how
//! new ones are made.
//!
//! - `$argon2id$v=19$m=..,t=..,p=..$salt$hash`: a PHC string, what `tern passwd` writes.
//!   (`$argon2i$` and `$argon2d$` PHC strings are verified too.)
//! - `$7$<iterations>$<salt b64>$<hash b64>`: Mosquitto 2's default, PBKDF2-HMAC-SHA512 with a
//!   64-byte output over the raw (base64-decoded) salt.
//! - `$6$<salt b64>$<hash b64>`: Mosquitto 1.x's, one SHA-512 over `password || salt`.
//!
//! Every comparison of a computed hash with a stored one is constant-time (`subtle`; the
//! `password-hash` crate compares argon2 outputs in constant time itself).

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Argon2id cost for new hashes: 19 MiB, 2 passes, 1 lane (OWASP's recommended minimum, and
/// the `argon2` crate's default). One verification takes ~15-30 ms of CPU in a release build:
/// deliberate (it is what makes a stolen file slow to crack), and the reason failed logins are
/// throttled per address (see `throttle`).
pub const ARGON2_M_COST_KIB: u32 = 19_456;
/// Argon2id passes for new hashes.
pub const ARGON2_T_COST: u32 = 2;
/// Argon2id lanes for new hashes.
pub const ARGON2_P_COST: u32 = 1;

/// Why a stored hash could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unknown password hash format (expected $argon2id$..., $7$... or $6$...)")]
    UnknownFormat,
    #[error("malformed {kind} hash: {detail}")]
    Malformed { kind: &'static str, detail: String },
}

fn malformed(kind: &'static str, detail: impl Into<String>) -> HashError {
    HashError::Malformed {
        kind,
        detail: detail.into(),
    }
}

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// An Argon2 PHC string (validated when parsed).
    Argon2(String),
    /// Mosquitto `$7$`: PBKDF2-HMAC-SHA512.
    MosquittoPbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// Mosquitto `$6$`: SHA-512(password || salt).
    MosquittoSha512 { salt: Vec<u8>, hash: Vec<u8> },
}

// Hashes are secrets of a kind: keep them out of logs and panic messages.
impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            PasswordHash::Argon2(_) => "Argon2",
            PasswordHash::MosquittoPbkdf2 { .. } => "MosquittoPbkdf2",
            PasswordHash::MosquittoSha512 { .. } => "MosquittoSha512",
        };
        write!(f, "PasswordHash::{kind}(..)")
    }
}

impl PasswordHash {
    /// Parses the part of a password file line after `user:`.
    pub fn parse(s: &str) -> Result<Self, HashError> {
        if s.starts_with("$argon2") {
            let parsed =
                argon2::PasswordHash::new(s).map_err(|e| malformed("argon2", e.to_string()))?;
            Algorithm::try_from(parsed.algorithm)
                .map_err(|e| malformed("argon2", e.to_string()))?;
            Params::try_from(&parsed).map_err(|e| malformed("argon2", e.to_string()))?;
            if parsed.salt.is_none() || parsed.hash.is_none() {
                return Err(malformed("argon2", "missing salt or hash"));
            }
            return Ok(PasswordHash::Argon2(s.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("$7$") {
            let parts: Vec<&str> = rest.split('$').collect();
            let [iterations, salt, hash] = parts[..] else {
                return Err(malformed("$7$", "want $7$<iterations>$<salt>$<hash>"));
            };
            let iterations: u32 = iterations
                .parse()
                .ok()
                .filter(|&i| i > 0)
                .ok_or_else(|| malformed("$7$", "bad iteration count"))?;
            let salt = decode(salt, "$7$", "salt")?;
            let hash = decode(hash, "$7$", "hash")?;
            if hash.len() != 64 {
                return Err(malformed("$7$", "hash is not 64 bytes"));
            }
            return Ok(PasswordHash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            });
        }
        if let Some(rest) = s.strip_prefix("$6$") {
            let Some((salt, hash)) = rest.split_once('$') else {
                return Err(malformed("$6$", "want $6$<salt>$<hash>"));
            };
            let salt = decode(salt, "$6$", "salt")?;
            let hash = decode(hash, "$6$", "hash")?;
            if hash.len() != 64 {
                return Err(malformed("$6$", "hash is not 64 bytes"));
            }
            return Ok(PasswordHash::MosquittoSha512 { salt, hash });
        }
        Err(HashError::UnknownFormat)
    }

    /// Whether `password` matches.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Argon2(phc) => match argon2::PasswordHash::new(phc) {
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
            PasswordHash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                bool::from(out[..].ct_eq(hash))
            }
            PasswordHash::MosquittoSha512 { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                bool::from(h.finalize()[..].ct_eq(hash))
            }
        }
    }

    /// A new Argon2id hash of `password` with a random salt.
    pub fn new_argon2id(password: &[u8]) -> Result<Self, HashError> {
        let salt = SaltString::encode_b64(&random_bytes::<16>())
            .map_err(|e| malformed("argon2", e.to_string()))?;
        let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
            .map_err(|e| malformed("argon2", e.to_string()))?;
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password, &salt)
            .map_err(|e| malformed("argon2", e.to_string()))?
            .to_string();
        Ok(PasswordHash::Argon2(phc))
    }

    /// The text stored after `user:`.
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Argon2(phc) => phc.clone(),
            PasswordHash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            } => format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(hash)),
            PasswordHash::MosquittoSha512 { salt, hash } => {
                format!("$6${}${}", B64.encode(salt), B64.encode(hash))
            }
        }
    }
}

fn decode(s: &str, kind: &'static str, what: &str) -> Result<Vec<u8>, HashError> {
    B64.decode(s)
        .map_err(|e| malformed(kind, format!("{what} is not base64: {e}")))
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator failing is not something a broker can carry on from.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's mosquitto_passwd 2.0.11 (`-c -b /tmp/p user pass`).
    const MOSQ_7: &str = "$7$101$STempyK0POg9y0tt$/IqJw3VtZ16Q/MhpE8ghkQonDNM51di5IOfwEK+iwI2oDel19kZx17ZGe4ddcBsJycnZ6ipR2Qn052UsiIm4UQ==";
    // Written by the same tool with `-H sha512`.
    const MOSQ_6: &str = "$6$FsAuMFLx63BAYYVa$+fGy67Thrm+2OhSKdlddR+P0nMT4A6YXweb07E2ekmMe2pLl2ImUYc+NKooJgwzzjsagjOVhgAVVFWX3j9w6Kw==";

    #[test]
    fn mosquitto_pbkdf2() {
        let h = PasswordHash::parse(MOSQ_7).unwrap();
        assert!(matches!(
            h,
            PasswordHash::MosquittoPbkdf2 {
                iterations: 101,
                ..
            }
        ));
        assert!(h.verify(b"pass"));
        assert!(!h.verify(b"Pass"));
        assert!(!h.verify(b""));
        assert_eq!(h.encode(), MOSQ_7);
    }

    #[test]
    fn mosquitto_sha512() {
        let h = PasswordHash::parse(MOSQ_6).unwrap();
        assert!(h.verify(b"pass"));
        assert!(!h.verify(b"pass "));
        assert_eq!(h.encode(), MOSQ_6);
    }

    #[test]
    fn argon2id_round_trip() {
        let h = PasswordHash::new_argon2id(b"s3cret").unwrap();
        let text = h.encode();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        let parsed = PasswordHash::parse(&text).unwrap();
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cre"));
        // Two hashes of one password differ (random salt).
        assert_ne!(
            PasswordHash::new_argon2id(b"s3cret").unwrap().encode(),
            text
        );
    }

    #[test]
    fn malformed_hashes() {
        assert_eq!(
            PasswordHash::parse("plaintext"),
            Err(HashError::UnknownFormat)
        );
        for bad in [
            "$7$101$abc",
            "$7$x$STempyK0POg9y0tt$AAAA",
            "$7$0$STempyK0POg9y0tt$AAAA",
            "$7$101$!!!$AAAA",
            "$7$101$STempyK0POg9y0tt$AAAA", // short hash
            "$6$nodollar",
            "$argon2id$garbage",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$argon2x$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(
                matches!(PasswordHash::parse(bad), Err(HashError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_hides_the_hash() {
        let h = PasswordHash::parse(MOSQ_6).unwrap();
        assert_eq!(format!("{h:?}"), "PasswordHash::MosquittoSha512(..)");
    }
}
