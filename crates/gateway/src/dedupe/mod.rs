//! The dedupe window: a retried `event_id` on the same topic gets the original partition and
//! offset back and writes nothing new.
//!
//! Entries are sharded so concurrent requests rarely share a lock, bounded in time (the
//! window, counted from the write's acknowledgement) and in count (oldest forgotten first). A
//! duplicate that arrives while the original is still being written waits for the original's
//! outcome instead of writing again.
//!
//! An entry is keyed by a 128-bit hash of topic and event id rather than the strings. Written
//! ids are kept as 32-byte records (96 bits of the key) in a ring per shard with an
//! open-addressing index (see [`done`]), about 43 bytes an id in a full window; ids still
//! being written (a few thousand at most: one per record in librdkafka's hands) sit in a small
//! map beside it with the channel their duplicates wait on.

mod done;

use done::{Done, Record};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tributary_kafka::Delivered;

const SHARDS: usize = 64;
/// Times are kept as wrapping `u32` milliseconds, exact for ages below 2^32 ms (49.7 days). A
/// shard untouched for 2^31 ms (24.8 days) forgets everything, which is past any window (at
/// most 24 days, [`crate::config::MAX_DEDUPE_WINDOW_SECS`]); one touched more often expires
/// its records before their age can wrap.
const AGE_LIMIT_MS: u64 = 1 << 31;

/// Outcome of a write as waiters see it: where it landed, or that it failed.
pub type Outcome = Option<Result<Delivered, ()>>;

/// An id being written: its content fingerprint, the channel its outcome is sent on (made
/// when a duplicate first waits: most writes have none), and when the write began (so a late
/// guard never touches a newer write of the same id).
struct Pending {
    fingerprint: u64,
    waiters: Option<watch::Sender<Outcome>>,
    at: Instant,
}

/// 128-bit hash of topic and event id ([`Dedupe::key`]).
pub type Key = u128;

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
    pending: HashMap<Key, Pending, BuildHasherDefault<KeyHasher>>,
    done: Done,
    /// When the shard was last expired, in milliseconds since the window's base.
    seen_ms: u64,
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
    window: Arc<Window>,
    key: Key,
    shard: usize,
    at: Instant,
    fingerprint: u64,
    done: bool,
}

/// The shards and the clock they share with their guards.
struct Window {
    shards: Box<[Mutex<Shard>]>,
    base: Instant,
    window_ms: u64,
    max_per_shard: usize,
}

/// The window itself; cheap to share behind an `Arc`.
pub struct Dedupe {
    inner: Arc<Window>,
}

/// A hash of the canonical event bytes: equal content, equal fingerprint. A fast 64-bit hash:
/// 8-byte words folded in by multiply and rotate, then the length and a final avalanche. It
/// tells one event's content from another's under the same id; it is not a defence against
/// someone crafting collisions, who could only make their own retry look like a duplicate.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let fold = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let mut words = bytes.chunks_exact(8);
    let mut h = 0;
    for w in &mut words {
        h = fold(h, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = fold(h, u64::from_le_bytes(last));
    }
    // splitmix64's finalizer over the length folded in: every input bit reaches every output bit.
    let mut z = fold(h, bytes.len() as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// [`fingerprint`] of an event's canonical JSON, serialized into a buffer each thread reuses:
/// for topics whose values are not that JSON (no allocation per event).
pub fn fingerprint_event(event: &tributary_core::Event) -> u64 {
    tributary_core::json::with_json(event, fingerprint)
}

impl Dedupe {
    /// A window of `window` (at most 24 days; the configuration refuses more, and longer is
    /// cut to that here) remembering at most
    /// `max_entries` written ids.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Self {
            inner: Arc::new(Window {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                base: Instant::now(),
                window_ms: window_ms.min(crate::config::MAX_DEDUPE_WINDOW_SECS * 1000),
                max_per_shard: max_entries.div_ceil(SHARDS).max(1),
            }),
        }
    }

    /// The key of `event_id` on `topic`: computed once per event, then given to
    /// [`Self::written`] and [`Self::begin`].
    pub fn key(topic: &str, event_id: &str) -> Key {
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

    /// Where `event_id` was written on `topic`, if it was, with the same content; reserves
    /// nothing (a cheap check before work that [`Self::begin`] would make unnecessary).
    pub fn written(&self, key: Key, fingerprint: u64) -> Option<Delivered> {
        let w = &self.inner;
        let s = lock(&w.shards[Self::shard_of(key)]);
        // Read under the lock: the ring's times never run ahead of a clock read after them.
        let now = w.now_ms();
        let r = s.done.get(key)?;
        let fresh = u64::from((now as u32).wrapping_sub(r.at_ms)) <= w.window_ms
            && now.saturating_sub(s.seen_ms) < AGE_LIMIT_MS;
        (r.same_content(fingerprint) && fresh).then(|| r.delivered())
    }

    /// Looks the event of `key` up and, when it is new, reserves it.
    pub fn begin(&self, key: Key, fingerprint: u64) -> Begin {
        let w = &self.inner;
        let shard = Self::shard_of(key);
        let mut s = lock(&w.shards[shard]);
        let now = w.now_ms();
        w.expire(&mut s, now);
        if let Some(r) = s.done.get(key) {
            return if r.same_content(fingerprint) {
                Begin::Duplicate(r.delivered())
            } else {
                Begin::Conflict
            };
        }
        if let Some(p) = s.pending.get_mut(&key) {
            return if p.fingerprint == fingerprint {
                Begin::InFlight(p.waiters.get_or_insert_with(|| watch::channel(None).0).subscribe())
            } else {
                Begin::Conflict
            };
        }
        let at = Instant::now();
        s.pending.insert(key, Pending { fingerprint, waiters: None, at });
        Begin::New(Guard {
            window: Arc::clone(&self.inner),
            key,
            shard,
            at,
            fingerprint,
            done: false,
        })
    }

    /// Number of remembered event ids (written, and being written).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|m| {
                let s = lock(m);
                s.done.len() + s.pending.len()
            })
            .sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the window holds for written ids (its rings and indexes, allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.inner.shards.iter().map(|m| lock(m).done.heap_bytes()).sum()
    }
}

impl Window {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Forgets written ids older than the window, and the oldest while the shard is full,
    /// leaving room for one more. Ids being written are not counted: they are bounded by what
    /// the producer holds, and kept until their outcome is known.
    fn expire(&self, s: &mut Shard, now: u64) {
        if now.saturating_sub(s.seen_ms) >= AGE_LIMIT_MS {
            s.done.clear();
        }
        s.seen_ms = now;
        while let Some(r) = s.done.oldest() {
            let age = u64::from((now as u32).wrapping_sub(r.at_ms));
            if age <= self.window_ms && s.done.len() < self.max_per_shard {
                break;
            }
            s.done.pop_oldest();
        }
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
        let w = &self.window;
        let mut s = lock(&w.shards[self.shard]);
        let now = w.now_ms();
        let ours = s.pending.get(&self.key).is_some_and(|p| p.at == self.at);
        let mut waiters = None;
        if ours {
            waiters = s.pending.remove(&self.key).and_then(|p| p.waiters);
            if let Ok(delivered) = outcome {
                w.expire(&mut s, now);
                let record = Record::new(self.key, self.fingerprint, delivered, now as u32);
                s.done.push(record, w.max_per_shard);
            }
        }
        drop(s);
        if let Some(tx) = waiters {
            tx.send_replace(Some(outcome));
        }
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

    /// A JSON topic hashes the bytes it writes, the others serialize the event to hash it: the
    /// same event has the same fingerprint either way, so a retry is a duplicate on both.
    #[test]
    fn an_event_fingerprinted_from_the_thread_buffer_matches_its_bytes() {
        let long = "x".repeat(5_000);
        for v in [
            serde_json::json!({"event_id": "e", "timestamp": 1, "event_type": "t", "payload": {}}),
            serde_json::json!({"event_id": "e", "timestamp": 1, "event_type": "t", "user_id": "u",
                               "payload": {"long": long, "n": [1, 2.5, null]}, "metadata": {"k": "v"}}),
        ] {
            let event = tributary_core::Event::from_json(v).expect("valid");
            assert_eq!(fingerprint_event(&event), fingerprint(&event.to_json_bytes()));
        }
        assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
    }

    #[test]
    fn second_time_is_a_duplicate_with_the_original_position() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin(Dedupe::key("t", "e1"), 7) else {
            panic!("first sight must be new")
        };
        assert!(matches!(d.begin(Dedupe::key("t", "e1"), 7), Begin::InFlight(_)));
        g.complete(Ok(D));
        assert!(matches!(d.begin(Dedupe::key("t", "e1"), 7), Begin::Duplicate(x) if x == D));
        assert!(matches!(d.begin(Dedupe::key("t", "e1"), 8), Begin::Conflict));
        assert!(
            matches!(d.begin(Dedupe::key("other", "e1"), 7), Begin::New(_)),
            "topics are separate"
        );
    }

    #[test]
    fn failures_are_forgotten_so_retries_write() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin(Dedupe::key("t", "e1"), 7) else { panic!("new") };
        g.complete(Err(()));
        assert!(matches!(d.begin(Dedupe::key("t", "e1"), 7), Begin::New(_)));
    }

    #[tokio::test]
    async fn waiters_see_the_outcome() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin(Dedupe::key("t", "e1"), 7) else { panic!("new") };
        let Begin::InFlight(mut rx) = d.begin(Dedupe::key("t", "e1"), 7) else {
            panic!("in flight")
        };
        let Begin::InFlight(mut second) = d.begin(Dedupe::key("t", "e1"), 7) else {
            panic!("in flight")
        };
        g.complete(Ok(D));
        let seen = *rx.wait_for(Option::is_some).await.expect("sender kept");
        assert_eq!(seen, Some(Ok(D)));
        let seen = *second.wait_for(Option::is_some).await.expect("sender kept");
        assert_eq!(seen, Some(Ok(D)), "every waiter hears the outcome");
    }

    #[test]
    fn a_fingerprint_changes_with_any_byte_and_the_length() {
        let bytes: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = fingerprint(&bytes);
        assert_eq!(fingerprint(&bytes.clone()), whole, "equal content, equal fingerprint");
        for i in 0..bytes.len() {
            let mut other = bytes.clone();
            other[i] ^= 1;
            assert_ne!(fingerprint(&other), whole, "byte {i}");
            assert_ne!(fingerprint(&bytes[..i]), whole, "length {i}");
        }
        assert_ne!(fingerprint(b""), fingerprint(&[0]));
    }

    #[test]
    fn a_dropped_guard_forgets_the_id_and_releases_waiters() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Begin::New(g) = d.begin(Dedupe::key("t", "e1"), 7) else { panic!("new") };
        let Begin::InFlight(rx) = d.begin(Dedupe::key("t", "e1"), 7) else { panic!("in flight") };
        drop(g);
        assert_eq!(*rx.borrow(), Some(Err(())));
        assert!(matches!(d.begin(Dedupe::key("t", "e1"), 7), Begin::New(_)), "a retry writes");
    }

    #[test]
    fn window_expires_and_count_is_bounded() {
        let d = Dedupe::new(Duration::from_millis(0), 100);
        let Begin::New(g) = d.begin(Dedupe::key("t", "e1"), 7) else { panic!("new") };
        g.complete(Ok(D));
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(d.begin(Dedupe::key("t", "e1"), 7), Begin::New(_)), "expired");

        let d = Dedupe::new(Duration::from_secs(600), SHARDS); // one per shard
        for i in 0..10_000 {
            if let Begin::New(g) = d.begin(Dedupe::key("t", &format!("e{i}")), 1) {
                g.complete(Ok(D));
            }
        }
        assert!(d.len() <= SHARDS, "bounded, got {}", d.len());
    }
}
