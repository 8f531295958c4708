//! Key partitioning that agrees with the Java client's default partitioner.
//!
//! Java, Flink and Kafka Streams producers place a keyed record on
//! `toPositive(murmur2(key)) % partitions`. Tributary's producers are configured with
//! librdkafka's `murmur2_random` partitioner, which computes the same function; this module
//! is the reference used by tests, tools and the processor to predict where a key lives.

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// Kafka's 32-bit murmur2 hash of `data`, as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    // Kafka hashes the length as a Java int; keys over 2 GiB cannot occur in Kafka.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key` among `partitions`.
///
/// Returns `None` when `partitions` is not positive.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> Option<i32> {
    if partitions <= 0 {
        return None;
    }
    // Java's Utils.toPositive: clear the sign bit (not abs, which differs for i32::MIN).
    Some((murmur2(key) & 0x7fff_ffff) % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed with `org.apache.kafka.common.utils.Utils` from kafka-clients 4.3.1:
    /// key, murmur2, and the partition for 6, 12 and 24 partitions.
    const JAVA_VECTORS: &[(&str, i32, i32, i32, i32)] = &[
        ("", 275646681, 3, 9, 9),
        ("a", -1563381124, 4, 4, 4),
        ("ab", 316155434, 2, 2, 2),
        ("abc", 479470107, 3, 3, 3),
        ("abcd", -1323649548, 2, 8, 20),
        ("21", -973932308, 0, 0, 12),
        ("foobar", -790332482, 0, 6, 6),
        ("device-0001", -580787201, 3, 3, 15),
        ("device-0042", -1957486054, 4, 10, 10),
        ("user-1", 1404122828, 2, 8, 20),
        ("user-77", -632950913, 3, 3, 15),
        ("user-123456", 642493629, 3, 9, 21),
        ("a-little-bit-long-string", -985981536, 2, 8, 8),
        ("a-little-bit-longer-string", -1486304829, 5, 11, 11),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 5, 5, 5),
        ("ünïcødé-κλειδί", 1675575438, 0, 6, 6),
    ];

    #[test]
    fn matches_the_java_client() {
        for &(key, hash, p6, p12, p24) in JAVA_VECTORS {
            assert_eq!(murmur2(key.as_bytes()), hash, "murmur2({key:?})");
            assert_eq!(murmur2_partition(key.as_bytes(), 6), Some(p6), "{key:?} of 6");
            assert_eq!(murmur2_partition(key.as_bytes(), 12), Some(p12), "{key:?} of 12");
            assert_eq!(murmur2_partition(key.as_bytes(), 24), Some(p24), "{key:?} of 24");
        }
    }

    #[test]
    fn no_partitions_means_no_answer() {
        assert_eq!(murmur2_partition(b"k", 0), None);
        assert_eq!(murmur2_partition(b"k", -3), None);
    }

    proptest::proptest! {
        #[test]
        fn partition_is_in_range(key in proptest::collection::vec(proptest::num::u8::ANY, 0..64), n in 1i32..1000) {
            let p = murmur2_partition(&key, n).expect("positive partition count");
            proptest::prop_assert!((0..n).contains(&p));
        }
    }
}
