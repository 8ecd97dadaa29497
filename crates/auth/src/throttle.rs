//! Slowing down repeated failed logins from one address.
//!
//! The core's authentication hook is synchronous (it runs on the broker's driver task), so a
//! failed login cannot simply be answered late. Instead each address has a failure counter:
//! the first [`FREE_FAILURES`] failures cost nothing; after that every failure closes the
//! address for a back-off window that doubles each time (1 s, 2 s, 4 s, ... capped at
//! [`MAX_BACKOFF`]). A login from a closed address fails at once with "bad user name or
//! password", *without* checking the password (so it costs no hashing, and guessing during the
//! window is useless). Attempts refused this way do not lengthen the window. A successful login
//! clears the address; an address forgotten for [`FORGET_AFTER`] starts afresh.
//!
//! IPv6 addresses are grouped by their /64 (one host usually owns a whole /64). The table is
//! bounded ([`MAX_ENTRIES`]): when full, the entries least recently failed are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed before the back-off starts.
pub const FREE_FAILURES: u32 = 3;
/// The first back-off window.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off window.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An address with no failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most addresses tracked at once.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// Failure counters per address.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<IpAddr, Entry>,
}

/// The key for an address: itself, or its /64 for IPv6 (IPv4-mapped IPv6 as IPv4).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Throttle {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// If `ip` is in a back-off window at `now`, how long is left.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.entries.get(&key(ip))?.blocked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Records a failed login; returns the back-off window it opens, if any.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let k = key(ip);
        if !self.entries.contains_key(&k) && self.entries.len() >= MAX_ENTRIES {
            self.evict(now);
        }
        let e = self.entries.entry(k).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(e.last_failure) >= FORGET_AFTER {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures <= FREE_FAILURES {
            return None;
        }
        let doublings = (e.failures - FREE_FAILURES - 1).min(16);
        let window = FIRST_BACKOFF
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF);
        e.blocked_until = Some(now + window);
        Some(window)
    }

    /// Records a successful login: the address starts afresh.
    pub fn success(&mut self, ip: IpAddr) {
        self.entries.remove(&key(ip));
    }

    /// Number of addresses tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room: drops forgotten entries, then (if still full) the tenth least recently
    /// failed, so that a flood of new addresses costs one pass per thousand insertions.
    fn evict(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_failure) < FORGET_AFTER);
        if self.entries.len() < MAX_ENTRIES {
            return;
        }
        let mut times: Vec<Instant> = self.entries.values().map(|e| e.last_failure).collect();
        let cut = MAX_ENTRIES / 10;
        let (_, &mut threshold, _) = times.select_nth_unstable(cut);
        self.entries.retain(|_, e| e.last_failure > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut t = Throttle::new();
        let a = ip(1);
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failure(a, now), None);
            assert_eq!(t.blocked(a, now), None);
        }
        assert_eq!(t.failure(a, now), Some(Duration::from_secs(1)));
        assert_eq!(t.blocked(a, now), Some(Duration::from_secs(1)));
        assert_eq!(
            t.blocked(ip(2), now),
            None,
            "other addresses are not affected"
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(t.blocked(a, later), None, "the window ends");
        assert_eq!(t.failure(a, later), Some(Duration::from_secs(2)));
        assert_eq!(t.failure(a, later), Some(Duration::from_secs(4)));
        for _ in 0..40 {
            t.failure(a, later);
        }
        assert_eq!(t.blocked(a, later), Some(MAX_BACKOFF));
        t.success(a);
        assert_eq!(t.blocked(a, later), None);
        assert!(t.is_empty());
    }

    #[test]
    fn forgotten_after_a_quiet_period() {
        let mut t = Throttle::new();
        let now = Instant::now();
        for _ in 0..=FREE_FAILURES {
            t.failure(ip(1), now);
        }
        let much_later = now + FORGET_AFTER;
        assert_eq!(t.failure(ip(1), much_later), None, "counter restarted");
    }

    #[test]
    fn ipv6_grouped_by_64() {
        let mut t = Throttle::new();
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        for _ in 0..=FREE_FAILURES {
            t.failure(a, now);
        }
        assert!(t.blocked(b, now).is_some());
        assert!(t.blocked(c, now).is_none());
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        for _ in 0..=FREE_FAILURES {
            t.failure(mapped, now);
        }
        assert!(
            t.blocked(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), now)
                .is_some()
        );
    }

    #[test]
    fn bounded() {
        let mut t = Throttle::new();
        let start = Instant::now();
        for n in 0..(MAX_ENTRIES as u32 + 500) {
            t.failure(ip(n), start + Duration::from_millis(n.into()));
            assert!(t.len() <= MAX_ENTRIES);
        }
        // The most recent addresses are still tracked, the oldest are gone.
        let last = MAX_ENTRIES as u32 + 499;
        assert!(t.entries.contains_key(&ip(last)));
        assert!(!t.entries.contains_key(&ip(0)));
    }
}
