//! The dedupe window: a retried `event_id` on the same topic gets the original partition and
//! offset back and writes nothing new.
//!
//! Entries are sharded so concurrent requests rarely share a lock, bounded in time (the
//! window) and in count (oldest forgotten first). A duplicate that arrives while the original
//! is still being written waits for the original's outcome instead of writing again.
//!
//! An entry is keyed by a 128-bit hash of topic and event id rather than the strings, which
//! keeps a remembered id near 100 bytes; two different ids collide with probability 2^-128.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tributary_kafka::Delivered;

const SHARDS: usize = 64;

/// Outcome of a write as waiters see it: where it landed, or that it failed.
pub type Outcome = Option<Result<Delivered, ()>>;

enum Entry {
    Pending { fingerprint: u64, rx: watch::Receiver<Outcome>, at: Instant },
    Done { fingerprint: u64, delivered: Delivered, at: Instant },
}

impl Entry {
    fn at(&self) -> Instant {
        match self {
            Self::Pending { at, .. } | Self::Done { at, .. } => *at,
        }
    }
}

/// 128-bit hash of topic and event id.
type Key = u128;

/// Keys are hashes already: the map uses their low bits as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(Key, Instant)>,
}

/// What to do with an event, given what the window remembers.
pub enum Begin {
    /// First time seen: write it, then report through the guard.
    New(Guard),
    /// Already written with the same content.
    Duplicate(Delivered),
    /// Being written right now by another request: wait for its outcome.
    InFlight(watch::Receiver<Outcome>),
    /// Already accepted with different content under the same id.
    Conflict,
}

/// Reports the outcome of a first write to the window and to any waiting duplicates. Dropped
/// without an outcome (the request was cancelled before its record reached librdkafka), it
/// forgets the id, so nothing waits forever and a retry writes.
pub struct Guard {
    shards: Arc<[Mutex<Shard>]>,
    tx: watch::Sender<Outcome>,
    key: Key,
    shard: usize,
    at: Instant,
    fingerprint: u64,
    done: bool,
}

/// The window itself; cheap to share behind an `Arc`.
pub struct Dedupe {
    shards: Arc<[Mutex<Shard>]>,
    window: Duration,
    max_per_shard: usize,
}

/// A hash of the canonical event bytes: equal content, equal fingerprint.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Dedupe {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect::<Vec<_>>().into(),
            window,
            max_per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn key(topic: &str, event_id: &str) -> Key {
        // Two independent 64-bit SipHashes; `str` hashing ends each string with a marker, so
        // ("ab", "c") and ("a", "bc") differ.
        let mut a = DefaultHasher::new();
        (topic, event_id).hash(&mut a);
        let mut b = DefaultHasher::new();
        (0x5eed_u32, topic, event_id).hash(&mut b);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    fn shard_of(key: Key) -> usize {
        ((key >> 64) as usize) % SHARDS
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[i])
    }

    /// Where `event_id` was written on `topic`, if it was, with the same content; reserves
    /// nothing (a cheap check before work that [`Self::begin`] would make unnecessary).
    pub fn written(&self, topic: &str, event_id: &str, fingerprint: u64) -> Option<Delivered> {
        let key = Self::key(topic, event_id);
        let s = self.lock(Self::shard_of(key));
        match s.map.get(&key) {
            Some(Entry::Done { fingerprint: f, delivered, at })
                if *f == fingerprint && at.elapsed() <= self.window =>
            {
                Some(*delivered)
            }
            _ => None,
        }
    }

    /// Looks `event_id` up on `topic` and, when it is new, reserves it.
    pub fn begin(&self, topic: &str, event_id: &str, fingerprint: u64) -> Begin {
        let key = Self::key(topic, event_id);
        let shard = Self::shard_of(key);
        let now = Instant::now();
        let mut s = self.lock(shard);
        self.expire(&mut s, now);
        match s.map.get(&key) {
            Some(Entry::Done { fingerprint: f, delivered, .. }) => {
                return if *f == fingerprint {
                    Begin::Duplicate(*delivered)
                } else {
                    Begin::Conflict
                };
            }
            Some(Entry::Pending { fingerprint: f, rx, .. }) => {
                return if *f == fingerprint {
                    Begin::InFlight(rx.clone())
                } else {
                    Begin::Conflict
                };
            }
            None => {}
        }
        let (tx, rx) = watch::channel(None);
        s.map.insert(key, Entry::Pending { fingerprint, rx, at: now });
        s.order.push_back((key, now));
        Begin::New(Guard {
            shards: Arc::clone(&self.shards),
            tx,
            key,
            shard,
            at: now,
            fingerprint,
            done: false,
        })
    }

    /// Forgets entries older than the window, and the oldest while the shard is full, leaving
    /// room for one more.
    fn expire(&self, s: &mut Shard, now: Instant) {
        while let Some(&(key, at)) = s.order.front() {
            let expired = now.duration_since(at) > self.window;
            if !expired && s.order.len() < self.max_per_shard {
                break;
            }
            // A write still in flight keeps its slot (and everything behind it) until it is
            // settled: it takes at most the produce timeout, far less than any sane window.
            if s.map.get(&key).is_some_and(|e| e.at() == at && matches!(e, Entry::Pending { .. })) {
                break;
            }
            s.order.pop_front();
            // Only remove the entry this slot belongs to, not a newer one under the same key.
            if s.map.get(&key).is_some_and(|e| e.at() == at) {
                s.map.remove(&key);
            }
        }
    }

    /// Number of remembered event ids.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).map.len()).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A panic while holding a shard leaves consistent data (every mutation is one step).
fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Guard {
    /// Records the outcome of a first write: remembered on success, forgotten on failure so a
    /// retry writes again.
    pub fn complete(mut self, outcome: Result<Delivered, ()>) {
        self.done = true;
        self.settle(outcome);
    }

    fn settle(&self, outcome: Result<Delivered, ()>) {
        let mut s = lock(&self.shards[self.shard]);
        let ours = s.map.get(&self.key).is_some_and(|e| e.at() == self.at);
        if ours {
            match outcome {
                Ok(delivered) => {
                    let entry =
                        Entry::Done { fingerprint: self.fingerprint, delivered, at: self.at };
                    s.map.insert(self.key, entry);
                }
                Err(()) => {
                    s.map.remove(&self.key);
                }
            }
        }
        drop(s);
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.settle(Err(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Delivered = Delivered { partition: 3, offset: 42 };

    #[test]
    fn second_time_is_a_duplicate_with_the_original_position() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin("t", "e1", 7) else { panic!("first sight must be new") };
        assert!(matches!(d.begin("t", "e1", 7), Begin::InFlight(_)));
        g.complete(Ok(D));
        assert!(matches!(d.begin("t", "e1", 7), Begin::Duplicate(x) if x == D));
        assert!(matches!(d.begin("t", "e1", 8), Begin::Conflict));
        assert!(matches!(d.begin("other", "e1", 7), Begin::New(_)), "topics are separate");
    }

    #[test]
    fn failures_are_forgotten_so_retries_write() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin("t", "e1", 7) else { panic!("new") };
        g.complete(Err(()));
        assert!(matches!(d.begin("t", "e1", 7), Begin::New(_)));
    }

    #[tokio::test]
    async fn waiters_see_the_outcome() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin("t", "e1", 7) else { panic!("new") };
        let Begin::InFlight(mut rx) = d.begin("t", "e1", 7) else { panic!("in flight") };
        g.complete(Ok(D));
        let seen = *rx.wait_for(Option::is_some).await.expect("sender kept");
        assert_eq!(seen, Some(Ok(D)));
    }

    #[test]
    fn a_dropped_guard_forgets_the_id_and_releases_waiters() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin("t", "e1", 7) else { panic!("new") };
        let Begin::InFlight(rx) = d.begin("t", "e1", 7) else { panic!("in flight") };
        drop(g);
        assert_eq!(*rx.borrow(), Some(Err(())));
        assert!(matches!(d.begin("t", "e1", 7), Begin::New(_)), "a retry writes");
    }

    #[test]
    fn window_expires_and_count_is_bounded() {
        let d = Dedupe::new(Duration::from_millis(0), 100);
        let Begin::New(g) = d.begin("t", "e1", 7) else { panic!("new") };
        g.complete(Ok(D));
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(d.begin("t", "e1", 7), Begin::New(_)), "expired");

        let d = Dedupe::new(Duration::from_secs(600), SHARDS); // one per shard
        for i in 0..10_000 {
            if let Begin::New(g) = d.begin("t", &format!("e{i}"), 1) {
                g.complete(Ok(D));
            }
        }
        assert!(d.len() <= SHARDS, "bounded, got {}", d.len());
    }
}
