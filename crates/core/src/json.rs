//! Serializing JSON on a hot path without an allocation per value.

use serde::Serialize;
use std::cell::RefCell;

/// A buffer grown past this is dropped after use rather than kept for the thread.
const KEEP_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the compact JSON text of `value`, serialized into a buffer this thread
/// reuses. `f` must not call `with_json` itself (the buffer is in use).
pub fn with_json<T: Serialize + ?Sized, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        // Serializing a value of plain data into memory cannot fail; a type whose Serialize
        // does fail leaves what was written before the failure.
        let _ = serde_json::to_writer(&mut *buf, value);
        let r = f(&buf);
        if buf.capacity() > KEEP_BYTES {
            *buf = Vec::new();
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_serde_json_compact_text_every_time() {
        let big = serde_json::json!({"a": "x".repeat(100_000), "b": [1, 2]});
        let small = serde_json::json!({"k": "v"});
        for v in [&small, &big, &small] {
            let text = with_json(v, <[u8]>::to_vec);
            assert_eq!(text, serde_json::to_vec(v).expect("serializes"));
        }
    }
}
