//! Which events a partition's panes have counted: a client retry that another gateway wrote
//! again is dropped here, so the windows count it once.
//!
//! A retry carries the same event as the first attempt — the same `event_id`, key and
//! `timestamp` — so it lands on the same partition (keyed by the key) and in the same pane,
//! whichever gateway wrote it. Each pane kept by the window engine therefore keeps the
//! fingerprints of the (key, `event_id`) pairs it counted, and a record whose pair its pane
//! already holds is a duplicate. The sets go when their panes go, so memory is bounded by the
//! events of the panes kept: 16 bytes of fingerprint per counted event, about 20 to 40 bytes
//! with the hash set's spare room.
//!
//! A fingerprint is 128 bits from two SipHash-1-3 functions with random keys of this process
//! (std's [`RandomState`]): two different events collide with odds around 2^-128 per pair,
//! and nobody outside the process knows the keys, so no client can craft an `event_id` that
//! collides with someone else's. The sets are never stored: after a restart they are rebuilt
//! by the replay that rebuilds the panes (see [`crate::task`]), with new keys.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// A set hashed by the fingerprint's own (already random) low bits.
type Fingerprints = HashSet<u128, BuildHasherDefault<LowBits>>;

/// Hasher of fingerprints: they are uniformly random already, so their low 64 bits serve.
#[derive(Debug, Default, Clone, Copy)]
struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 fingerprints are hashed with it; this keeps it total for any other use.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// The fingerprints of the events each kept pane counted.
#[derive(Debug, Clone)]
pub struct Seen {
    keys: (RandomState, RandomState),
    panes: BTreeMap<i64, Fingerprints>,
}

impl Default for Seen {
    fn default() -> Self {
        Self::new()
    }
}

impl Seen {
    pub fn new() -> Self {
        Self { keys: (RandomState::new(), RandomState::new()), panes: BTreeMap::new() }
    }

    /// The fingerprint of the event `event_id` of `key`.
    pub fn fingerprint<K: Hash>(&self, key: &K, event_id: &str) -> u128 {
        let half = |s: &RandomState| {
            let mut h = s.build_hasher();
            key.hash(&mut h);
            event_id.hash(&mut h);
            h.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    /// Notes that `pane` counted the event `fingerprint`; `false` when it had already.
    pub fn insert(&mut self, pane: i64, fingerprint: u128) -> bool {
        self.panes.entry(pane).or_default().insert(fingerprint)
    }

    /// Forgets the panes before `from` (no open window needs them any more).
    pub fn forget_before(&mut self, from: i64) {
        self.panes = self.panes.split_off(&from);
    }

    /// Events noted, over all panes kept.
    pub fn len(&self) -> usize {
        self.panes.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.panes.values().all(HashSet::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_noted_once_per_pane_and_forgotten_with_it() {
        let mut s = Seen::new();
        let a = s.fingerprint(&"user-1", "e-1");
        assert_eq!(a, s.fingerprint(&"user-1", "e-1"), "the same event, the same fingerprint");
        assert_ne!(a, s.fingerprint(&"user-2", "e-1"), "another key is another event");
        assert_ne!(a, s.fingerprint(&"user-1", "e-2"));
        assert!(s.insert(0, a));
        assert!(!s.insert(0, a), "a retry in the same pane");
        assert!(s.insert(60_000, a), "another pane keeps its own set");
        assert_eq!(s.len(), 2);
        s.forget_before(60_000);
        assert_eq!(s.len(), 1);
        assert!(s.insert(0, a), "pane 0 was forgotten");
        s.forget_before(i64::MAX);
        assert!(s.is_empty());
    }

    #[test]
    fn fingerprints_do_not_collide_over_many_events() {
        let s = Seen::new();
        let n = 200_000;
        let all: HashSet<u128> =
            (0..n).map(|i| s.fingerprint(&format!("user-{}", i % 97), &format!("e-{i}"))).collect();
        assert_eq!(all.len(), n);
    }
}
