//! A bound on the handshakes (PROXY header, TLS, WebSocket upgrade) in progress on a listener.
//!
//! A TLS handshake costs the server a private-key operation and buffers; a flood of clients
//! that start handshakes (or never finish them) must not take every core. The accept loop takes
//! a permit before handing a connection to its task and closes the connection at once when none
//! is left ([`HandshakeLimiter::try_acquire`] never waits); the permit is released when the
//! handshake ends, whatever its outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts handshakes in progress against a maximum. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct HandshakeLimiter {
    permits: Arc<Semaphore>,
    max: usize,
    rejected: Arc<AtomicU64>,
}

/// One handshake in progress; dropping it frees the slot.
#[derive(Debug)]
pub struct HandshakePermit {
    _permit: OwnedSemaphorePermit,
}

impl HandshakeLimiter {
    /// At most `max` handshakes at once; 0 means no limit.
    pub fn new(max: usize) -> Self {
        let max = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max.min(Semaphore::MAX_PERMITS)
        };
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            rejected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A permit if a slot is free; `None` (counted in [`rejected`](Self::rejected)) otherwise.
    /// Never waits.
    pub fn try_acquire(&self) -> Option<HandshakePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(HandshakePermit { _permit: permit }),
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Handshakes in progress now.
    pub fn in_progress(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections refused because the limit was reached, since the start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_fast_when_full_and_frees_on_drop() {
        let l = HandshakeLimiter::new(2);
        let a = l.try_acquire().unwrap();
        let _b = l.try_acquire().unwrap();
        assert_eq!(l.in_progress(), 2);
        assert!(l.try_acquire().is_none());
        assert_eq!(l.rejected(), 1);
        drop(a);
        assert_eq!(l.in_progress(), 1);
        assert!(l.try_acquire().is_some());
    }

    #[test]
    fn zero_is_unlimited() {
        let l = HandshakeLimiter::new(0);
        let permits: Vec<_> = (0..1000).map(|_| l.try_acquire().unwrap()).collect();
        assert_eq!(l.in_progress(), permits.len());
    }
}
