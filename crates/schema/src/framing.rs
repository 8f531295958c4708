//! Confluent's wire framing: magic byte 0, the schema id as a 4-byte big-endian integer, then
//! (for Protobuf only) the message-index path, then the encoded body.
//!
//! Every Confluent-compatible client (Java, confluent-kafka-python, Flink, the Snowflake
//! connector) writes and expects exactly this, so Tributary's topics stay readable by them.

/// The first byte of every framed value.
pub const MAGIC: u8 = 0;

/// Why bytes are not a framed value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("value is {0} bytes; a framed value has at least 5")]
    TooShort(usize),
    #[error("value starts with byte {0}, not the magic byte 0")]
    BadMagic(u8),
    #[error("protobuf message indexes are truncated or malformed")]
    BadIndexes,
}

/// Prefixes `body` with the magic byte and `schema_id`.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed value into its schema id and the rest (the body, or for Protobuf the
/// message indexes and the body).
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), FramingError> {
    if value.len() < 5 {
        return Err(FramingError::TooShort(value.len()));
    }
    if value[0] != MAGIC {
        return Err(FramingError::BadMagic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes the path of the message in its .proto file (`[0]` is the first top-level message),
/// as Confluent's Protobuf serializer does: `[0]` is the single byte 0, anything else a
/// zig-zag varint count followed by zig-zag varint indexes.
pub fn encode_message_indexes(indexes: &[i32]) -> Vec<u8> {
    let mut out = Vec::new();
    if indexes == [0] {
        out.push(0);
        return out;
    }
    put_varint(&mut out, zigzag(indexes.len() as i64));
    for &i in indexes {
        put_varint(&mut out, zigzag(i64::from(i)));
    }
    out
}

/// Decodes message indexes from the start of `bytes`; returns them and the body after them.
pub fn decode_message_indexes(bytes: &[u8]) -> Result<(Vec<i32>, &[u8]), FramingError> {
    let mut pos = 0;
    let count = unzigzag(get_varint(bytes, &mut pos).ok_or(FramingError::BadIndexes)?);
    if count == 0 {
        return Ok((vec![0], &bytes[pos..]));
    }
    if !(1..=100).contains(&count) {
        return Err(FramingError::BadIndexes);
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = unzigzag(get_varint(bytes, &mut pos).ok_or(FramingError::BadIndexes)?);
        indexes.push(i32::try_from(i).map_err(|_| FramingError::BadIndexes)?);
    }
    Ok((indexes, &bytes[pos..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_as_confluent_does() {
        assert_eq!(frame(1, b"ab"), vec![0, 0, 0, 0, 1, b'a', b'b']);
        assert_eq!(frame(0x0102_0304, b""), vec![0, 1, 2, 3, 4]);
        assert_eq!(unframe(&[0, 0, 0, 1, 0, 9]), Ok((256, &[9u8][..])));
        assert_eq!(unframe(&[0, 0, 0]), Err(FramingError::TooShort(3)));
        assert_eq!(unframe(&[1, 0, 0, 0, 1]), Err(FramingError::BadMagic(1)));
    }

    #[test]
    fn message_indexes_match_confluent() {
        // The first message: a single zero byte.
        assert_eq!(encode_message_indexes(&[0]), vec![0]);
        // [1]: count 1 (zig-zag 2), index 1 (zig-zag 2).
        assert_eq!(encode_message_indexes(&[1]), vec![2, 2]);
        // [0, 2]: a nested message.
        assert_eq!(encode_message_indexes(&[0, 2]), vec![4, 0, 4]);
        assert_eq!(decode_message_indexes(&[0, 7]), Ok((vec![0], &[7u8][..])));
        assert_eq!(decode_message_indexes(&[4, 0, 4, 9]), Ok((vec![0, 2], &[9u8][..])));
        assert_eq!(decode_message_indexes(&[4, 0]), Err(FramingError::BadIndexes));
    }

    proptest::proptest! {
        #[test]
        fn framing_round_trips(id in proptest::num::u32::ANY, body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let framed = frame(id, &body);
            proptest::prop_assert_eq!(unframe(&framed), Ok((id, &body[..])));
        }

        #[test]
        fn indexes_round_trip(indexes in proptest::collection::vec(0i32..10_000, 1..6), body in proptest::collection::vec(proptest::num::u8::ANY, 0..16)) {
            let mut bytes = encode_message_indexes(&indexes);
            bytes.extend_from_slice(&body);
            let (decoded, rest) = decode_message_indexes(&bytes).expect("decodes");
            proptest::prop_assert_eq!(decoded, indexes);
            proptest::prop_assert_eq!(rest, &body[..]);
        }
    }
}
