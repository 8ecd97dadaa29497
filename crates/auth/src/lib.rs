//! Authentication and authorisation for tern: Mosquitto-compatible password and ACL files,
//! anonymous-access rules, throttling of failed logins, and SCRAM for MQTT 5 enhanced
//! authentication. The broker uses it through the core's hooks (`tern_core::AccessControl`,
//! `tern_core::EnhancedAuth`); `tern passwd` edits the password file with it.
//!
//! Module map:
//!
//! - [`hash`]: the password hash formats ([`PasswordHash`]): Argon2id PHC strings (written),
//!   Mosquitto's `$7$` (PBKDF2-SHA512) and `$6$` (SHA-512) (read), constant-time checks.
//! - [`scram_credential`]: stored SCRAM keys ([`ScramCredential`]) and the SCRAM primitives.
//! - [`password_file`]: the `user:hash` file ([`PasswordFile`]): parse, verify, edit, save
//!   atomically.
//! - [`acl`]: the Mosquitto-format ACL file ([`AclFile`]) and filter covering.
//! - [`throttle`]: back-off per address after repeated failed logins ([`Throttle`]).
//! - [`access`]: [`FileAccess`], the `AccessControl` implementation over both files, with
//!   the anonymous rule per listener, counters and reload.
//! - [`scram`]: [`ScramAuth`], SCRAM-SHA-256/512 as `EnhancedAuth` methods.
//!
//! Formats and semantics for operators: `docs/security.md`.
//!
//! ```no_run
//! use tern_auth::{AuthConfig, FileAccess};
//! # fn wire(broker: &mut tern_core::Broker) -> Result<(), tern_auth::AuthError> {
//! let access = FileAccess::new(AuthConfig {
//!     password_file: Some("/etc/tern/passwd".into()),
//!     acl_file: Some("/etc/tern/acl".into()),
//!     allow_anonymous: vec![None],
//! })?;
//! for method in access.scram_methods() {
//!     broker.add_auth_method(method);
//! }
//! broker.set_access_control(Box::new(access.clone()));
//! // On SIGHUP:
//! if let Err(e) = access.reload() {
//!     eprintln!("reload failed, keeping the old files: {e}");
//! }
//! # Ok(()) }
//! ```

pub mod access;
pub mod acl;
pub mod hash;
pub mod password_file;
pub mod scram;
pub mod scram_credential;
pub mod throttle;
mod verified;

pub use access::{AuthConfig, AuthError, AuthStats, FileAccess};
pub use acl::{AclError, AclFile};
pub use hash::{HashError, PasswordHash};
pub use password_file::{PasswordFile, PasswordFileError, Verification};
pub use scram::ScramAuth;
pub use scram_credential::{ScramCredential, ScramHash};
pub use throttle::Throttle;
