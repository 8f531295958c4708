//! The written ids of one shard, compact: a ring of fixed-size records in the order they were
//! written, found through an open-addressing index of 8-byte slots.
//!
//! A record is 32 bytes: 96 bits of the 128-bit key, 32 of the content fingerprint, offset,
//! partition and time. The index is kept at most three quarters full and never larger than the
//! shard's bound needs, so an id costs about 43 bytes when the window is full, against about
//! 100 in a hash map of enums plus an order queue. Both grow with use and stop at the bound.
//!
//! Two ids remembered at once are told apart by those 96 bits; 6 of them also choose the
//! shard, so within one the ids differ in 90: for a million ids in 64 shards the chance that
//! any two share them is below 10^-17. A retry with other
//! content under the same id is told from a true retry by the fingerprint's 32 bits: it is
//! taken for a duplicate (answered with the original's position, nothing written) instead of a
//! `409` once in four billion such misuses.
//!
//! A slot carries the key's 32 bits the record calls its tag beside the record's sequence
//! number: a probe passes over other keys, and a removal finds where the keys after it belong,
//! without reading their records (the ring is far larger than the caches, so each record read
//! is a cache miss).

use std::collections::VecDeque;
use tributary_kafka::Delivered;

/// An index slot: 0 is empty, anything else is the low 32 bits of the key's second word
/// (its [`tag`], which also gives its home) above `OCCUPIED | sequence number` of a record.
type Slot = u64;
const EMPTY: Slot = 0;
const OCCUPIED: u32 = 1 << 31;
/// Sequence numbers count modulo 2^31; a ring never holds that many records.
const SEQ_MASK: u32 = OCCUPIED - 1;
const MIN_INDEX: usize = 16;

/// Index slots for `n` records with the index at most three quarters full (a probe for a key
/// that is not there then passes about 8 slots: one or two cache lines).
fn index_size(n: usize) -> usize {
    (n * 4).div_ceil(3) + 1
}

/// A key as a record keeps it: its first 64 bits and its last 32 (the tag, which index slots
/// carry too).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Short {
    high: u64,
    tag: u32,
}

impl Short {
    fn of(key: u128) -> Self {
        Self { high: (key >> 64) as u64, tag: key as u32 }
    }
}

fn slot(tag: u32, seq: u32) -> Slot {
    (u64::from(tag) << 32) | u64::from(OCCUPIED | seq)
}

fn tag_of(slot: Slot) -> u32 {
    (slot >> 32) as u32
}

/// One written id: where it landed, its content fingerprint, and when (milliseconds since the
/// window's base, wrapping).
#[derive(Clone, Copy)]
pub(super) struct Record {
    key_high: u64,
    tag: u32,
    fingerprint: u32,
    offset: i64,
    partition: i32,
    pub(super) at_ms: u32,
}

impl Record {
    pub(super) fn new(key: u128, fingerprint: u64, d: Delivered, at_ms: u32) -> Self {
        let Short { high, tag } = Short::of(key);
        Self {
            key_high: high,
            tag,
            fingerprint: fingerprint as u32,
            offset: d.offset,
            partition: d.partition,
            at_ms,
        }
    }

    fn key(&self) -> Short {
        Short { high: self.key_high, tag: self.tag }
    }

    /// Whether content of this `fingerprint` is what was written (its low 32 bits agree).
    pub(super) fn same_content(&self, fingerprint: u64) -> bool {
        self.fingerprint == fingerprint as u32
    }

    pub(super) fn delivered(&self) -> Delivered {
        Delivered { partition: self.partition, offset: self.offset }
    }
}

/// Written ids of one shard, oldest first.
#[derive(Default)]
pub(super) struct Done {
    records: VecDeque<Record>,
    /// Sequence number of `records[0]`.
    head: u32,
    /// Slots (or none yet), linear probing from a home the tag chooses.
    index: Vec<Slot>,
}

impl Done {
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn oldest(&self) -> Option<&Record> {
        self.records.front()
    }

    /// Where a tag's probe run starts: the tag scaled to the index's length, which need not
    /// be a power of two.
    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.index.len() as u64) >> 32) as usize
    }

    /// The slot after `i`, round the end.
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.index.len() {
            0
        } else {
            i + 1
        }
    }

    fn record(&self, slot: Slot) -> &Record {
        let pos = (slot as u32 & SEQ_MASK).wrapping_sub(self.head) & SEQ_MASK;
        &self.records[pos as usize]
    }

    /// The index slot holding `key`, if it is remembered.
    fn find(&self, key: Short) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let mut i = self.home(key.tag);
        loop {
            let slot = self.index[i];
            if slot == EMPTY {
                return None;
            }
            if tag_of(slot) == key.tag && self.record(slot).key() == key {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    pub(super) fn get(&self, key: u128) -> Option<&Record> {
        self.find(Short::of(key)).map(|i| self.record(self.index[i]))
    }

    /// Remembers a record as the newest; `cap` is the most this shard ever holds, which bounds
    /// how far the ring and the index grow. The caller makes room first and never pushes a key
    /// that is remembered already.
    pub(super) fn push(&mut self, r: Record, cap: usize) {
        if (self.records.len() + 1) * 4 > self.index.len() * 3 {
            self.grow_index(cap);
        }
        if self.records.len() == self.records.capacity() {
            let more = self.records.capacity().clamp(8, cap.max(8));
            self.records.reserve_exact(more.min(cap.saturating_sub(self.records.len()).max(1)));
        }
        let seq = self.head.wrapping_add(self.records.len() as u32) & SEQ_MASK;
        let new = slot(r.tag, seq);
        self.records.push_back(r);
        self.place(new);
    }

    /// Puts a slot into the first free place of its probe run.
    fn place(&mut self, slot: Slot) {
        let mut i = self.home(tag_of(slot));
        while self.index[i] != EMPTY {
            i = self.next(i);
        }
        self.index[i] = slot;
    }

    /// About twice the slots, but no more than `cap` records need (nor fewer than one more
    /// record than now needs); the slots move over without their records being read.
    fn grow_index(&mut self, cap: usize) {
        let size = (self.index.len() * 2)
            .max(MIN_INDEX)
            .min(index_size(cap))
            .max(index_size(self.records.len() + 1));
        let old = std::mem::replace(&mut self.index, vec![EMPTY; size]);
        for slot in old.into_iter().filter(|s| *s != EMPTY) {
            self.place(slot);
        }
    }

    /// Forgets the oldest record.
    pub(super) fn pop_oldest(&mut self) {
        let Some(oldest) = self.records.front() else { return };
        if let Some(i) = self.find(oldest.key()) {
            self.unplace(i);
        }
        self.records.pop_front();
        self.head = self.head.wrapping_add(1) & SEQ_MASK;
        if self.records.is_empty() {
            // An idle shard gives its memory back.
            self.records = VecDeque::new();
            self.index = Vec::new();
        }
    }

    /// Empties index slot `i`, moving later slots of the same probe runs back so that every
    /// key stays reachable from its home without tombstones.
    fn unplace(&mut self, mut i: usize) {
        self.index[i] = EMPTY;
        let mut j = i;
        loop {
            j = self.next(j);
            let slot = self.index[j];
            if slot == EMPTY {
                return;
            }
            let home = self.home(tag_of(slot));
            // The slot may move to `i` unless its home lies cyclically in (i, j].
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.index[i] = slot;
                self.index[j] = EMPTY;
                i = j;
            }
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        *self = Self { head: self.head, ..Self::default() };
    }

    /// Bytes held by the ring and the index (their capacity, not only what is used).
    pub(super) fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self.index.capacity() * std::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(offset: i64) -> Delivered {
        Delivered { partition: 1, offset }
    }

    #[test]
    fn a_record_is_thirty_two_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 32);
    }

    #[test]
    fn lookups_survive_pops_and_colliding_homes() {
        let mut t = Done::default();
        // Keys whose low bits collide share a probe run; popping one must keep the rest found.
        let keys: Vec<u128> = (0..200u128).map(|i| (i << 64) | ((i % 3) << 20)).collect();
        for (n, k) in keys.iter().enumerate() {
            t.push(Record::new(*k, 7, d(n as i64), 0), 1000);
        }
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(t.get(*k).map(Record::delivered), Some(d(n as i64)));
        }
        for _ in 0..150 {
            t.pop_oldest();
        }
        for (n, k) in keys.iter().enumerate() {
            let want = (n >= 150).then(|| d(n as i64));
            assert_eq!(t.get(*k).map(Record::delivered), want, "key {n}");
        }
        assert_eq!(t.len(), 50);
    }

    #[test]
    fn a_full_index_finds_what_it_holds_and_only_that() {
        // Pseudo-random keys through a shard at its bound: the index ends three quarters full
        // (not a power of two), and probe runs wrap round its end.
        let cap = 1000;
        let key = |i: u128| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ (i << 7);
        let mut t = Done::default();
        for i in 0..5000u128 {
            if t.len() == cap {
                t.pop_oldest();
            }
            t.push(Record::new(key(i), i as u64, d(i as i64), 0), cap);
        }
        assert_eq!(t.index.len(), index_size(cap));
        for i in 0..5000u128 {
            let found = t.get(key(i));
            if i >= 4000 {
                let r = found.unwrap_or_else(|| panic!("key {i} is remembered"));
                assert_eq!(r.delivered(), d(i as i64));
                assert!(r.same_content(i as u64) && !r.same_content(i as u64 + 1));
            } else {
                assert!(found.is_none(), "key {i} was forgotten");
            }
        }
    }

    #[test]
    fn growth_stops_at_the_bound() {
        let mut t = Done::default();
        for i in 0..100_000u128 {
            if t.len() == 1000 {
                t.pop_oldest();
            }
            t.push(Record::new(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1, d(0), 0), 1000);
        }
        assert!(t.heap_bytes() <= 1000 * 32 + index_size(1000) * 8, "{} bytes", t.heap_bytes());
    }
}
