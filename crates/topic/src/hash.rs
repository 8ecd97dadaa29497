//! A zero-sized, process-wide keyed hasher for the tries' maps.
//!
//! Level strings come from clients, so the maps must keep SipHash with secret
//! keys (HashDoS resistance), but a `RandomState` in every node costs 16 bytes
//! per map. This builder shares one `RandomState` for the whole process.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::BuildHasher;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GlobalState;

impl BuildHasher for GlobalState {
    type Hasher = DefaultHasher;

    #[inline]
    fn build_hasher(&self) -> DefaultHasher {
        static STATE: OnceLock<RandomState> = OnceLock::new();
        STATE.get_or_init(RandomState::new).build_hasher()
    }
}

pub(crate) type Map<K, V> = HashMap<K, V, GlobalState>;

/// Releases memory of a map that has shrunk well below its capacity, so that
/// churn (many subscribe/unsubscribe cycles) does not keep peak memory
/// forever. Amortised O(1): after shrinking to twice the length, the map must
/// lose half of its entries again before the next shrink.
#[inline]
pub(crate) fn maybe_shrink<K: Eq + std::hash::Hash, V>(map: &mut Map<K, V>) {
    let cap = map.capacity();
    if cap > 64 && map.len() * 4 < cap {
        map.shrink_to(map.len() * 2);
    }
}
