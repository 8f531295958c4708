//! The written ids of one shard, compact: a ring of fixed-size records in the order they were
//! written, found through an open-addressing index of 8-byte slots.
//!
//! A record is 40 bytes (128-bit key, content fingerprint, offset, partition, time); the index
//! is kept at most half full, so an id costs about 56 bytes, against about 100 in a hash map of
//! enums plus an order queue. Both grow with use and stop at the shard's bound.
//!
//! A slot carries 32 bits of its key beside the record's sequence number: a probe passes over
//! other keys, and a removal finds where the keys after it belong, without reading their
//! records (the ring is far larger than the caches, so each record read is a cache miss).

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

/// The part of a key an index slot carries.
fn tag(key: &[u64; 2]) -> u32 {
    key[1] as u32
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
    key: [u64; 2],
    pub(super) fingerprint: u64,
    offset: i64,
    partition: i32,
    pub(super) at_ms: u32,
}

impl Record {
    pub(super) fn new(key: u128, fingerprint: u64, d: Delivered, at_ms: u32) -> Self {
        let key = [(key >> 64) as u64, key as u64];
        Self { key, fingerprint, offset: d.offset, partition: d.partition, at_ms }
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
    /// Power-of-two slots (or none yet), linear probing from the key's low bits.
    index: Vec<Slot>,
}

impl Done {
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn oldest(&self) -> Option<&Record> {
        self.records.front()
    }

    fn mask(&self) -> usize {
        self.index.len() - 1
    }

    /// Where a key's probe run starts: the low bits of its tag (the index never has more than
    /// 2^32 slots).
    fn home(&self, tag: u32) -> usize {
        (tag as usize) & self.mask()
    }

    fn record(&self, slot: Slot) -> &Record {
        let pos = (slot as u32 & SEQ_MASK).wrapping_sub(self.head) & SEQ_MASK;
        &self.records[pos as usize]
    }

    /// The index slot holding `key`, if it is remembered.
    fn find(&self, key: &[u64; 2]) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let tag = tag(key);
        let mut i = self.home(tag);
        loop {
            let slot = self.index[i];
            if slot == EMPTY {
                return None;
            }
            if tag_of(slot) == tag && self.record(slot).key == *key {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    pub(super) fn get(&self, key: u128) -> Option<&Record> {
        let key = [(key >> 64) as u64, key as u64];
        self.find(&key).map(|i| self.record(self.index[i]))
    }

    /// Remembers a record as the newest; `cap` is the most this shard ever holds, which bounds
    /// how far the ring and the index grow. The caller makes room first and never pushes a key
    /// that is remembered already.
    pub(super) fn push(&mut self, r: Record, cap: usize) {
        if (self.records.len() + 1) * 2 > self.index.len() {
            self.grow_index();
        }
        if self.records.len() == self.records.capacity() {
            let more = self.records.capacity().clamp(8, cap.max(8));
            self.records.reserve_exact(more.min(cap.saturating_sub(self.records.len()).max(1)));
        }
        let seq = self.head.wrapping_add(self.records.len() as u32) & SEQ_MASK;
        let new = slot(tag(&r.key), seq);
        self.records.push_back(r);
        self.place(new);
    }

    /// Puts a slot into the first free place of its probe run.
    fn place(&mut self, slot: Slot) {
        let mut i = self.home(tag_of(slot));
        while self.index[i] != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.index[i] = slot;
    }

    fn grow_index(&mut self) {
        let size = (self.index.len() * 2).max(MIN_INDEX);
        self.index = vec![EMPTY; size];
        for pos in 0..self.records.len() {
            let seq = self.head.wrapping_add(pos as u32) & SEQ_MASK;
            self.place(slot(tag(&self.records[pos].key), seq));
        }
    }

    /// Forgets the oldest record.
    pub(super) fn pop_oldest(&mut self) {
        let Some(oldest) = self.records.front() else { return };
        if let Some(i) = self.find(&oldest.key) {
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
        let mask = self.mask();
        self.index[i] = EMPTY;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
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
    fn a_record_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 40);
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
    fn growth_stops_at_the_bound() {
        let mut t = Done::default();
        for i in 0..100_000u128 {
            if t.len() == 1000 {
                t.pop_oldest();
            }
            t.push(Record::new(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1, d(0), 0), 1000);
        }
        assert!(t.heap_bytes() <= 1000 * 40 + 2048 * 8, "{} bytes", t.heap_bytes());
    }
}
