//! [`FileAccess`]: the password file and the ACL file behind the core's [`AccessControl`] hook,
//! reloadable without dropping connections.
//!
//! Anonymous clients (no user name) are let in while no password file is configured, and
//! refused (CONNACK 0x87 / 0x05) once one is, unless `allow_anonymous` says otherwise for the
//! listener. A user name with a wrong or missing password, or one not in the file, gets
//! 0x86 / 0x04 and counts as a failure for the throttle (see [`crate::throttle`]). A verified
//! client certificate whose CN is the user name authenticates that user without a password.

use crate::acl::{AclError, AclFile};
use crate::password_file::{PasswordFile, PasswordFileError, Verification};
use crate::scram_credential::{ScramCredential, ScramHash};
use crate::throttle::Throttle;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tern_core::{AccessControl, AuthDecision, ClientInfo};

/// Where the security settings come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `user:hash` lines (see [`PasswordFile`]).
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL (see [`AclFile`]). None: every topic is allowed.
    pub acl_file: Option<PathBuf>,
    /// `allow_anonymous` per listener index. `None` (or a listener beyond the end of the
    /// vector) takes the default: anonymous clients are allowed iff no password file is
    /// configured.
    pub allow_anonymous: Vec<Option<bool>>,
}

impl AuthConfig {
    /// Whether clients without a user name may connect on `listener`.
    pub fn anonymous_allowed(&self, listener: usize) -> bool {
        self.allow_anonymous
            .get(listener)
            .copied()
            .flatten()
            .unwrap_or(self.password_file.is_none())
    }
}

/// A password or ACL file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password file: {0}")]
    Password(#[from] PasswordFileError),
    #[error("ACL file: {0}")]
    Acl(#[from] AclError),
}

/// Counters for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Logins checked against the password file (or SCRAM) and accepted.
    pub logins_ok: u64,
    /// Logins refused: bad or missing password, unknown user, anonymous not allowed, failed
    /// SCRAM exchange.
    pub logins_failed: u64,
    /// Of those, refused without checking because the address was in a back-off window.
    pub logins_throttled: u64,
    /// Of the accepted ones, those whose password had been accepted for that user before (since
    /// the file was loaded): checked with one HMAC instead of the password hash.
    pub logins_remembered: u64,
    /// Passwords checked in full ahead of the core, by [`FileAccess::check_ahead`].
    pub checked_ahead: u64,
    /// Passwords checked in full by [`AccessControl::authenticate`] itself (on the broker's
    /// core): those no check ahead had a verdict for.
    pub checked_on_core: u64,
    /// Successful and failed reloads.
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    logins_throttled: AtomicU64,
    logins_remembered: AtomicU64,
    checked_ahead: AtomicU64,
    checked_on_core: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

#[derive(Debug, Default)]
struct Loaded {
    passwords: Option<PasswordFile>,
    acl: Option<AclFile>,
    /// Logins accepted since this load of the password file (see `verified`).
    verified: crate::verified::Verified,
}

impl Loaded {
    fn load(config: &AuthConfig) -> Result<Self, AuthError> {
        let passwords = match &config.password_file {
            Some(p) => {
                warn_if_readable_by_others(p);
                Some(PasswordFile::load(p)?)
            }
            None => None,
        };
        let acl = match &config.acl_file {
            Some(p) => Some(AclFile::load(p)?),
            None => None,
        };
        Ok(Loaded {
            passwords,
            acl,
            verified: Default::default(),
        })
    }
}

#[derive(Debug)]
struct Inner {
    config: AuthConfig,
    loaded: RwLock<Arc<Loaded>>,
    throttle: Mutex<Throttle>,
    counters: Counters,
}

/// Password file + ACL file access control. Cheap to clone: clones share the loaded files,
/// the throttle and the counters, so one can go to the broker, one to the SIGHUP handler and
/// one to each SCRAM method.
#[derive(Debug, Clone)]
pub struct FileAccess {
    inner: Arc<Inner>,
}

impl FileAccess {
    /// Loads the configured files.
    pub fn new(config: AuthConfig) -> Result<Self, AuthError> {
        let loaded = Loaded::load(&config)?;
        log_loaded(&config, &loaded);
        Ok(FileAccess {
            inner: Arc::new(Inner {
                config,
                loaded: RwLock::new(Arc::new(loaded)),
                throttle: Mutex::new(Throttle::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// Re-reads both files and swaps them in at once. On an error the files loaded before stay
    /// in force (both of them) and the error is returned. Connected clients are not affected,
    /// except that ACL checks from now on use the new rules.
    pub fn reload(&self) -> Result<(), AuthError> {
        match Loaded::load(&self.inner.config) {
            Ok(loaded) => {
                log_loaded(&self.inner.config, &loaded);
                *self.inner.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                self.inner
                    .counters
                    .reloads_ok
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.inner
                    .counters
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The configuration this was built from.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> AuthStats {
        let c = &self.inner.counters;
        AuthStats {
            logins_ok: c.logins_ok.load(Ordering::Relaxed),
            logins_failed: c.logins_failed.load(Ordering::Relaxed),
            logins_throttled: c.logins_throttled.load(Ordering::Relaxed),
            logins_remembered: c.logins_remembered.load(Ordering::Relaxed),
            checked_ahead: c.checked_ahead.load(Ordering::Relaxed),
            checked_on_core: c.checked_on_core.load(Ordering::Relaxed),
            reloads_ok: c.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: c.reloads_failed.load(Ordering::Relaxed),
        }
    }

    /// Checks `user`'s `password` in full (15–30 ms: call it on a blocking thread) and leaves
    /// the verdict for the [`AccessControl::authenticate`] of the same login, which then costs
    /// the broker's core one HMAC instead. Does nothing when there is nothing to check, or the
    /// outcome is known already: no password file, the address `peer` in its back-off window
    /// (the login is refused unchecked), or this password accepted for `user` before. Each
    /// verdict is taken once. A failure counts against `peer`'s back-off here (the core does
    /// not count it again); the other counters are the core's.
    pub fn check_ahead(&self, user: &str, password: &[u8], peer: Option<std::net::IpAddr>) {
        let loaded = self.loaded();
        let Some(passwords) = &loaded.passwords else {
            return;
        };
        if peer.is_some_and(|ip| self.throttle().blocked(ip, Instant::now()).is_some()) {
            return;
        }
        let (tag, login) = (
            loaded.verified.tag(password),
            loaded.verified.login(user, password),
        );
        if loaded.verified.knows(user, &tag) || loaded.verified.has_verdict(&login) {
            return;
        }
        let verdict = passwords.verify(user, password);
        self.inner
            .counters
            .checked_ahead
            .fetch_add(1, Ordering::Relaxed);
        // A failure counts against the address now, whatever the core makes of the CONNECT
        // afterwards: one it refuses before it authenticates (a bad client id or will topic)
        // must not make guessing free of the back-off.
        if verdict != Verification::Ok
            && let Some(ip) = peer
        {
            self.count_failure(ip);
        }
        loaded.verified.leave_verdict(login, verdict);
    }

    /// The SCRAM-SHA-256 and SCRAM-SHA-512 methods over this password file, for
    /// `Broker::add_auth_method`.
    pub fn scram_methods(&self) -> Vec<Box<dyn tern_core::EnhancedAuth>> {
        ScramHash::ALL
            .iter()
            .map(|h| {
                Box::new(crate::scram::ScramAuth::new(self.clone(), *h))
                    as Box<dyn tern_core::EnhancedAuth>
            })
            .collect()
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.inner
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `user`'s SCRAM credential, from the password file in force.
    pub(crate) fn scram_credential(&self, user: &str, hash: ScramHash) -> Option<ScramCredential> {
        self.loaded().passwords.as_ref()?.scram(user, hash).cloned()
    }

    pub(crate) fn record_success(&self) {
        self.inner
            .counters
            .logins_ok
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_failure(&self) {
        self.inner
            .counters
            .logins_failed
            .fetch_add(1, Ordering::Relaxed);
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.inner
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(&self, info: &ClientInfo, decision: AuthDecision, why: &str) -> AuthDecision {
        self.record_failure();
        tracing::info!(
            peer = ?info.peer,
            client_id = %info.client_id,
            username = ?info.username,
            listener = info.listener,
            "login failed: {why}"
        );
        decision
    }

    /// Counts a password failure against the client's address.
    fn password_failure(&self, info: &ClientInfo, why: &str) -> AuthDecision {
        if let Some(peer) = info.peer {
            self.count_failure(peer.ip());
        }
        self.refuse(info, AuthDecision::BadCredentials, why)
    }

    /// A password failure from `ip`, for the back-off.
    fn count_failure(&self, ip: std::net::IpAddr) {
        if let Some(window) = self.throttle().failure(ip, Instant::now()) {
            tracing::warn!(
                peer = %ip,
                backoff_ms = window.as_millis() as u64,
                "repeated failed logins from {ip}: refusing its logins for {window:?}"
            );
        }
    }
}

impl AccessControl for FileAccess {
    fn authenticate(&self, info: &ClientInfo, password: Option<&[u8]>) -> AuthDecision {
        let anonymous_ok = self.inner.config.anonymous_allowed(info.listener);
        let Some(user) = info.username.as_deref() else {
            return if anonymous_ok {
                AuthDecision::Allow
            } else {
                self.refuse(
                    info,
                    AuthDecision::NotAuthorized,
                    "anonymous clients are not allowed",
                )
            };
        };
        // The TLS layer verified the certificate: its CN is proof enough for that user name.
        if info.cert_cn.as_deref() == Some(user) {
            self.record_success();
            return AuthDecision::Allow;
        }
        let loaded = self.loaded();
        let Some(passwords) = &loaded.passwords else {
            // Nothing to check a user name against: it is an anonymous client by another name.
            return if anonymous_ok {
                AuthDecision::Allow
            } else {
                self.refuse(
                    info,
                    AuthDecision::NotAuthorized,
                    "no password file and anonymous clients are not allowed",
                )
            };
        };
        if let Some(peer) = info.peer
            && let Some(left) = self.throttle().blocked(peer.ip(), Instant::now())
        {
            self.inner
                .counters
                .logins_throttled
                .fetch_add(1, Ordering::Relaxed);
            // A verdict made ahead for this login is of no use now.
            if let Some(p) = password {
                loaded
                    .verified
                    .take_verdict(&loaded.verified.login(user, p));
            }
            return self.refuse(
                info,
                AuthDecision::BadCredentials,
                &format!("address in back-off after repeated failures ({left:?} left); password not checked"),
            );
        }
        let Some(password) = password else {
            return self.password_failure(info, "no password");
        };
        let tag = loaded.verified.tag(password);
        let remembered = loaded.verified.knows(user, &tag);
        // A verdict made ahead has counted its failure against the address already.
        let mut counted = false;
        let verification = if remembered {
            self.inner
                .counters
                .logins_remembered
                .fetch_add(1, Ordering::Relaxed);
            Verification::Ok
        } else if let Some(verdict) = loaded
            .verified
            .take_verdict(&loaded.verified.login(user, password))
        {
            counted = true;
            verdict
        } else {
            self.inner
                .counters
                .checked_on_core
                .fetch_add(1, Ordering::Relaxed);
            passwords.verify(user, password)
        };
        let failure = |why| match counted {
            true => self.refuse(info, AuthDecision::BadCredentials, why),
            false => self.password_failure(info, why),
        };
        match verification {
            Verification::Ok => {
                if !remembered {
                    loaded.verified.remember(user, tag);
                }
                if let Some(peer) = info.peer {
                    self.throttle().success(peer.ip());
                }
                self.record_success();
                AuthDecision::Allow
            }
            Verification::WrongPassword => failure("wrong password"),
            Verification::UnknownUser => failure("unknown user"),
        }
    }

    fn can_publish(&self, info: &ClientInfo, topic: &str) -> bool {
        self.loaded()
            .acl
            .as_ref()
            .is_none_or(|acl| acl.can_publish(info.username.as_deref(), &info.client_id, topic))
    }

    fn can_subscribe(&self, info: &ClientInfo, filter: &str) -> bool {
        self.loaded()
            .acl
            .as_ref()
            .is_none_or(|acl| acl.can_subscribe(info.username.as_deref(), &info.client_id, filter))
    }

    fn can_receive(&self, info: &ClientInfo, topic: &str) -> bool {
        self.loaded()
            .acl
            .as_ref()
            .is_none_or(|acl| acl.can_receive(info.username.as_deref(), &info.client_id, topic))
    }

    fn restricts_reading(&self) -> bool {
        // From the configuration, not the loaded file: the answer must not change on reload.
        self.inner.config.acl_file.is_some()
    }
}

fn log_loaded(config: &AuthConfig, loaded: &Loaded) {
    if let (Some(path), Some(p)) = (&config.password_file, &loaded.passwords) {
        tracing::info!(path = %path.display(), users = p.len(), "password file loaded");
    }
    if let (Some(path), Some(_)) = (&config.acl_file, &loaded.acl) {
        tracing::info!(path = %path.display(), "ACL file loaded");
    }
}

/// Mosquitto warns about this too: a password file others can read exposes the hashes.
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the password file is accessible to other users (chmod 600 it)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
