//! Fuzzing of every decoder that reads what clients send, on stable Rust: a deterministic
//! mutation driver over the checked-in corpus in `fuzz/corpus/<target>/`, run by `proptest`.
//!
//! Each target first runs every seed of its corpus as it is, then `TRIBUTARY_FUZZ_CASES`
//! mutants of them (default [`DEFAULT_CASES`]: a few seconds in `make test`). A mutant flips
//! bits, sets bytes to values decoders trip on (varint continuation bytes, invalid UTF-8,
//! brackets), inserts huge varints, repeats a slice (deep nesting), truncates, or splices in
//! part of another seed. Every input must be decoded or refused without a panic, within
//! [`max_input_time`] (2 s and 20 µs a byte), on a thread with a 2 MiB stack (a tokio
//! worker's), and what decodes must round-trip where an encoder exists. `TRIBUTARY_FUZZ_SEED` (a number) picks other mutants
//! for a long run (docs/security.md, "Fuzzing").
//!
//! A failure prints the input in the corpus's `.hex` format: add it to the target's corpus
//! with a comment saying what it found, then fix the decoder.

mod targets;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mutants per target when `TRIBUTARY_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 2_000;
/// Longest time one input may take: 2 s, plus 20 µs a byte (50 KB/s), so time must grow
/// linearly with the input. A release build takes microseconds to milliseconds; the margin is
/// for machines whose cores are busy with other builds (a load of 5 per core here).
fn max_input_time(len: usize) -> Duration {
    Duration::from_secs(2) + Duration::from_micros(20).saturating_mul(len as u32)
}
/// A tokio worker thread's stack: decoders run on one in the services.
const STACK_BYTES: usize = 2 * 1024 * 1024;

/// A file of the checkout the test runs from. The package folder is read when the test runs
/// (cargo names it in `CARGO_MANIFEST_DIR`), not compiled in: the shared target directory
/// reuses a test binary built in another clone, whose path may be gone.
fn repo_file(path: &str) -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    package.join("../..").join(path)
}

/// The checked-in corpus of `target`.
fn corpus_dir(target: &str) -> PathBuf {
    repo_file("fuzz/corpus").join(target)
}

/// Decodes a `.hex` seed: hex byte pairs, whitespace ignored, `#` starts a comment, `XX*N`
/// repeats bytes N times and `"text"` stands for its UTF-8 bytes (`\"` and `\\` inside).
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut rest = line.trim();
        while !rest.is_empty() {
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next().ok_or("unterminated string")? {
                        (i, '"') => break i,
                        (_, '\\') => {
                            let (_, c) = chars.next().ok_or("unterminated string")?;
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        (_, c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                };
                rest = quoted[end + 1..].trim_start();
                continue;
            }
            let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (word, tail) = rest.split_at(word_end);
            rest = tail.trim_start();
            let (byte, times) = match word.split_once('*') {
                Some((b, n)) => (b, n.parse::<usize>().map_err(|e| format!("{word}: {e}"))?),
                None => (word, 1),
            };
            let group = byte
                .as_bytes()
                .chunks(2)
                .map(|pair| {
                    let hex = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
                    u8::from_str_radix(hex, 16).map_err(|e| format!("{word}: {e}"))
                })
                .collect::<Result<Vec<u8>, String>>()?;
            for _ in 0..times {
                out.extend_from_slice(&group);
            }
        }
    }
    Ok(out)
}

/// The seeds of `target`, by file name: `.hex` files decoded, any other file as its bytes.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    let seeds: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let bytes = std::fs::read(path).expect("corpus file");
            let bytes = if name.ends_with(".hex") {
                let text = String::from_utf8(bytes).expect("a .hex seed is text");
                parse_hex(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
            } else {
                bytes
            };
            (name, bytes)
        })
        .collect();
    assert!(!seeds.is_empty(), "the corpus {} is empty", dir.display());
    seeds
}

/// One change to an input; positions and lengths are taken modulo the input's length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    /// A zig-zag varint of this value (Avro's and Protobuf's lengths and counts).
    InsertVarint(usize, i64),
    Delete(usize, usize),
    /// Repeats the slice at (start, len) this many times: nesting, long runs.
    Repeat(usize, usize, usize),
    Truncate(usize),
    /// Inserts part of another seed: (seed, start, len, at).
    Splice(usize, usize, usize, usize),
}

/// Bytes decoders trip on: varint continuation, sign and UTF-8 edges, JSON and .proto syntax.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0xc0, 0xed, 0xf4, 0xfe, b'{', b'}', b'[', b']', b'"',
    b'\\', b',', b':', b';', b'0', b'-', b'e',
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        (pos, 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (pos, prop::sample::select(INTERESTING)).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        (pos, any::<u8>()).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        (pos, prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (
            pos,
            prop_oneof![
                Just(i64::MAX),
                Just(i64::MIN),
                Just(-1i64),
                Just(1i64 << 60),
                Just(1i64 << 31),
                Just(i64::from(i32::MAX)),
                Just(100_000_000i64),
                any::<i64>()
            ]
        )
            .prop_map(|(p, v)| Mutation::InsertVarint(p, v)),
        (pos, 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (pos, 1usize..16, 2usize..3_000).prop_map(|(p, n, t)| Mutation::Repeat(p, n, t)),
        pos.prop_map(Mutation::Truncate),
        (any::<usize>(), pos, 1usize..256, pos)
            .prop_map(|(s, p, n, at)| Mutation::Splice(s, p, n, at)),
    ]
}

fn zigzag_varint(v: i64) -> Vec<u8> {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// `input` with `m` applied; `seeds` for splices.
fn apply(mut input: Vec<u8>, m: &Mutation, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
    let len = input.len();
    match m {
        Mutation::FlipBit(p, b) if len > 0 => input[at(*p, len)] ^= 1 << b,
        Mutation::SetByte(p, b) if len > 0 => input[at(*p, len)] = *b,
        Mutation::Insert(p, bytes) => {
            let p = at(*p, len + 1);
            input.splice(p..p, bytes.iter().copied());
        }
        Mutation::InsertVarint(p, v) => {
            let p = at(*p, len + 1);
            input.splice(p..p, zigzag_varint(*v));
        }
        Mutation::Delete(p, n) if len > 0 => {
            let p = at(*p, len);
            input.drain(p..(p + n).min(len));
        }
        Mutation::Repeat(p, n, times) if len > 0 => {
            let p = at(*p, len);
            let slice = input[p..(p + n).min(len)].to_vec();
            let repeated: Vec<u8> =
                slice.iter().copied().cycle().take(slice.len() * times).collect();
            input.splice(p..p, repeated);
        }
        Mutation::Truncate(p) => input.truncate(at(*p, len + 1)),
        Mutation::Splice(s, p, n, dest) => {
            let other = &seeds[s % seeds.len()].1;
            if !other.is_empty() {
                let p = at(*p, other.len());
                let chunk = other[p..(p + n).min(other.len())].to_vec();
                let dest = at(*dest, len + 1);
                input.splice(dest..dest, chunk);
            }
        }
        _ => {}
    }
    input
}

/// The case count and RNG seed of this run.
fn settings() -> (u32, u64) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let cases = var("TRIBUTARY_FUZZ_CASES")
        .map(|v| v.parse().expect("TRIBUTARY_FUZZ_CASES is a number"))
        .unwrap_or(DEFAULT_CASES);
    let seed =
        var("TRIBUTARY_FUZZ_SEED").map(|v| v.parse().expect("TRIBUTARY_FUZZ_SEED is a number"));
    (cases, seed.unwrap_or(0))
}

/// Runs `check` on `input` with the time bound; `Err` is a finding.
fn run_one(check: fn(&[u8]) -> Result<(), String>, input: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    check(input)?;
    let (took, limit) = (started.elapsed(), max_input_time(input.len()));
    if took > limit {
        return Err(format!("took {took:?} for {} bytes, more than {limit:?}", input.len()));
    }
    Ok(())
}

/// `.hex` text of `bytes`, 32 bytes a line, for adding a finding to the corpus.
fn to_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the corpus of `target` and its mutants through `check` (on a 2 MiB stack).
fn fuzz(target: &'static str, check: fn(&[u8]) -> Result<(), String>) {
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{target}"))
        .stack_size(STACK_BYTES)
        .spawn(move || fuzz_on_this_thread(target, check))
        .expect("spawn the fuzz thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

thread_local! {
    /// Whether this thread's panics are caught and reported by the driver, so not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent on a thread that is [`QUIET`].
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
}

fn fuzz_on_this_thread(target: &'static str, check: fn(&[u8]) -> Result<(), String>) {
    quiet_panics();
    let seeds = seeds(target);
    for (name, bytes) in &seeds {
        if let Err(e) = run_one(check, bytes) {
            panic!("{target}: the corpus seed {name} fails: {e}");
        }
    }
    let (cases, seed) = settings();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    for (i, b) in target.bytes().enumerate().take(24) {
        key[8 + i] = b;
    }
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let strategy = (any::<usize>(), prop::collection::vec(mutation(), 1..6));
    let mutant = |(s, ms): &(usize, Vec<Mutation>)| {
        ms.iter().fold(seeds[s % seeds.len()].1.clone(), |input, m| apply(input, m, &seeds))
    };
    // Each panic of a mutant (and of every shrunk one) would print; the report below says it.
    QUIET.with(|q| q.set(true));
    let result =
        runner.run(&strategy, |case| run_one(check, &mutant(&case)).map_err(TestCaseError::fail));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => panic!(
            "{target}: a mutant of {} fails: {why}\nadd it to fuzz/corpus/{target}/ as a .hex \
             seed:\n{}",
            seeds[case.0 % seeds.len()].0,
            to_hex(&mutant(&case))
        ),
        Err(e) => panic!("{target}: {e}"),
    }
}

#[test]
fn hex_seeds_parse() {
    assert_eq!(parse_hex("00 0a # comment\n\"ab\" ff*3").expect("hex"), b"\x00\x0aab\xff\xff\xff");
    assert_eq!(parse_hex(r#""a\"b\\" 0102*2"#).expect("hex"), b"a\"b\\\x01\x02\x01\x02");
    assert!(parse_hex("0g").is_err());
    assert_eq!(zigzag_varint(-1), vec![1]);
    assert_eq!(zigzag_varint(64), vec![0x80, 0x01]);
}

#[test]
fn event_json() {
    fuzz("event", targets::event_json);
}

#[test]
fn confluent_framing() {
    fuzz("framing", targets::framing);
}

#[test]
fn avro_values() {
    fuzz("avro", targets::avro_value);
}

#[test]
fn protobuf_values() {
    fuzz("protobuf", targets::protobuf_value);
}

#[test]
fn avro_schemas() {
    fuzz("schema-avro", targets::avro_schema);
}

#[test]
fn protobuf_schemas() {
    fuzz("schema-protobuf", targets::protobuf_schema);
}

#[test]
fn json_schemas() {
    fuzz("schema-json", targets::json_schema);
}
