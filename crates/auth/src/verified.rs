//! Logins verified before. A password hash worth its name costs the broker 15–30 ms
//! (Argon2id), on the task that runs the broker's core: a client with good credentials that
//! connects in a loop (nothing throttles success) would stall every other client's messages.
//! So each user's last accepted password is remembered, as an HMAC-SHA-256 under a key made
//! for this load of the password file, and a login with the same password again costs one
//! HMAC. A reload of the file starts over with a new key and nothing remembered; a wrong
//! password is always checked against the file's hash.
//!
//! The first login of each user (every user after a restart) would still cost a full check on
//! the core. So the connection's own task checks the password in full before it hands the
//! CONNECT over ([`crate::FileAccess::check_ahead`], on a blocking thread), and leaves its
//! verdict here, under an HMAC of the user name and password; the core takes it instead of
//! checking again.

use crate::hash::random_bytes;
use crate::password_file::Verification;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Users remembered at most; past it the memory starts over (the next login of each user
/// costs a full check again).
const MAX_USERS: usize = 100_000;

/// Verdicts made ahead and not yet taken, at most (a connection may close before its CONNECT
/// reaches the core); past it they start over, and the core checks those logins itself.
const MAX_AHEAD: usize = 10_000;

#[derive(Debug)]
pub(crate) struct Verified {
    key: [u8; 32],
    users: Mutex<HashMap<String, [u8; 32]>>,
    /// Verdicts by [`Verified::login`]: a fixed-size key, whatever the length of the user name
    /// (up to 64 KiB in a CONNECT), so the map's memory is bounded by its count.
    ahead: Mutex<HashMap<[u8; 32], Verification>>,
}

impl Default for Verified {
    fn default() -> Self {
        Self {
            key: random_bytes(),
            users: Mutex::default(),
            ahead: Mutex::default(),
        }
    }
}

impl Verified {
    /// HMAC-SHA-256 of `parts` run together, under this load's key.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        for part in parts {
            m.update(part);
        }
        m.finalize().into_bytes().into()
    }

    /// What is remembered of `password`.
    pub(crate) fn tag(&self, password: &[u8]) -> [u8; 32] {
        self.mac(&[password])
    }

    /// Whether `user` was accepted with the password of `tag` since the file was loaded.
    pub(crate) fn knows(&self, user: &str, tag: &[u8; 32]) -> bool {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)
            .is_some_and(|known| bool::from(known.ct_eq(tag)))
    }

    /// `user` was accepted with the password of `tag`.
    pub(crate) fn remember(&self, user: &str, tag: [u8; 32]) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= MAX_USERS && !users.contains_key(user) {
            users.clear();
        }
        users.insert(user.to_string(), tag);
    }

    /// The key of a verdict on `user` logging in with `password`.
    pub(crate) fn login(&self, user: &str, password: &[u8]) -> [u8; 32] {
        // The length first: ("ab", "c") and ("a", "bc") are different logins.
        let len = (user.len() as u64).to_le_bytes();
        self.mac(&[&len, user.as_bytes(), password])
    }

    /// Whether a verdict on `login` waits to be taken.
    pub(crate) fn has_verdict(&self, login: &[u8; 32]) -> bool {
        let ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.contains_key(login)
    }

    /// The full check of `login` found `verdict`.
    pub(crate) fn leave_verdict(&self, login: [u8; 32], verdict: Verification) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        if ahead.len() >= MAX_AHEAD {
            ahead.clear();
        }
        ahead.insert(login, verdict);
    }

    /// Takes the verdict left on `login`, if any.
    pub(crate) fn take_verdict(&self, login: &[u8; 32]) -> Option<Verification> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.remove(login)
    }
}
