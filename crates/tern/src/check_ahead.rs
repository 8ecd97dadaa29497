//! Password checks ahead of the core. Checking a password against the file costs 15–30 ms
//! (Argon2id), and the broker's core, which authenticates every CONNECT, runs on one task: a
//! reconnect storm after a restart (every user's first login since the file was loaded) would
//! stall every client's messages that long per login. So a connection's task holds a CONNECT
//! that carries a user name and password while a blocking thread checks it, and the core finds
//! the verdict (`tern_auth::FileAccess::check_ahead`) and spends one HMAC on it.
//!
//! At most half the machine's threads (at least one) check at once; the other CONNECTs wait in
//! arrival order, unread, as they would behind a busy core, but the core keeps moving messages.

use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(crate) struct CheckAhead {
    access: tern_auth::FileAccess,
    permits: Arc<Semaphore>,
}

impl CheckAhead {
    /// For `access`, when it has a password file to check against.
    pub(crate) fn new(access: &tern_auth::FileAccess) -> Option<Arc<Self>> {
        access.config().password_file.as_ref()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some(Arc::new(Self {
            access: access.clone(),
            permits: Arc::new(Semaphore::new((threads / 2).max(1))),
        }))
    }

    /// Checks `user`'s `password` from `peer` in full, off the async threads; resolves when
    /// the verdict waits for the core (or when there was nothing to check).
    pub(crate) async fn check(self: Arc<Self>, user: String, password: Bytes, peer: IpAddr) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let access = self.access.clone();
        // The permit goes with the check: it is held until the hash is done, even if this
        // future is dropped meanwhile.
        let _ = tokio::task::spawn_blocking(move || {
            access.check_ahead(&user, &password, Some(peer));
            drop(permit);
        })
        .await;
    }
}
