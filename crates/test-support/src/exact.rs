//! The exact check that ends every fault scenario: what a `read_committed` reader of the
//! source topic and of the window results, and what the warehouse, finally hold.

use crate::load::Answer;
use crate::platform::{aggregate_topic, Platform, PARTITIONS, SLIDING_PANES, USERS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What [`Platform::check_exact`] found, for the scenario's own assertions and its report.
#[derive(Debug)]
pub struct Exact {
    /// Events answered 201/200.
    pub acknowledged: usize,
    /// Events never acknowledged (the writer gave up) that are stored, once.
    pub stored_unacknowledged: usize,
    /// 503 answers the load got on the way.
    pub unavailable: u32,
}

impl Platform {
    /// Stops `load`, runs [`Platform::check_exact`] through `base`, and requires the load to
    /// have kept writing through the scenario (more than 100 events acknowledged).
    pub async fn finish(&self, load: crate::load::Load, base: &str) -> Exact {
        let t0 = load.t0;
        let answers = load.stop().await;
        let exact = self.check_exact(&answers, base, t0).await;
        assert!(exact.acknowledged > 100, "the load kept writing: {exact:?}");
        exact
    }

    /// Closes the windows of the load's pane (events later than it on every partition,
    /// written through `base`), then checks, within bounded waits:
    /// - every acknowledged event is in the source topic once, where its answer said; no
    ///   event is there twice; nothing the writers did not send is there;
    /// - every window result of the load's users is there once, with the exact count;
    /// - the warehouse's raw table holds every record of the source topic once.
    pub async fn check_exact(&self, answers: &[Answer], base: &str, t0: i64) -> Exact {
        for a in answers {
            assert!(
                a.unexpected.is_empty(),
                "{}: unexpected answers {:?}",
                a.event_id,
                a.unexpected
            );
            assert_eq!(
                a.unavailable_without_retry_after, 0,
                "{}: a 503 without Retry-After",
                a.event_id
            );
        }
        let closers = self.close_windows(base, t0).await;
        let stored = self.source_records();
        let sent: BTreeMap<&str, &Answer> =
            answers.iter().map(|a| (a.event_id.as_str(), a)).collect();
        let mut per_user: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
        let mut stored_unacknowledged = 0;
        for (id, positions) in &stored {
            assert_eq!(
                positions.len(),
                1,
                "{id} is stored {} times: at {positions:?}",
                positions.len()
            );
            if closers.contains(id) {
                continue;
            }
            let a = sent
                .get(id.as_str())
                .unwrap_or_else(|| panic!("{id} is stored but was never sent"));
            if a.status == 0 {
                stored_unacknowledged += 1;
            } else {
                assert_eq!(a.position, Some(positions[0]), "{id}: the answer names where it is");
            }
            let (n, kinds) = per_user.entry(a.user.clone()).or_default();
            *n += 1;
            *kinds.entry(a.kind.clone()).or_default() += 1;
        }
        let acknowledged: Vec<&Answer> = answers.iter().filter(|a| a.status != 0).collect();
        for a in &acknowledged {
            assert!(
                stored.contains_key(&a.event_id),
                "{} was acknowledged ({}) but is not stored",
                a.event_id,
                a.status
            );
        }
        for (window, per_key) in [("1m", 1), ("5m", SLIDING_PANES as usize)] {
            self.check_windows(&aggregate_topic(&self.topic, window), &per_user, per_key);
        }
        self.check_warehouse(stored.len());
        Exact {
            acknowledged: acknowledged.len(),
            stored_unacknowledged,
            unavailable: answers.iter().map(|a| a.unavailable).sum(),
        }
    }

    /// Writes, through `base`, one event per partition far enough after `t0` to move every
    /// partition's watermark past the last window of the pane; their event ids.
    async fn close_windows(&self, base: &str, t0: i64) -> BTreeSet<String> {
        let pane = t0.div_euclid(crate::platform::PANE_MS) * crate::platform::PANE_MS;
        let later = pane + (SLIDING_PANES + 2) * crate::platform::PANE_MS + 2_000;
        let client = reqwest::Client::new();
        let mut ids = BTreeSet::new();
        for (p, key) in closer_keys().into_iter().enumerate() {
            let id = format!("closer-{p}");
            let e = json!({"event_id": id, "timestamp": later, "event_type": "view", "user_id": key, "payload": {}});
            let url = format!("{base}/api/v1/events/{}", self.topic);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let status = client.post(&url).json(&e).send().await.map(|r| r.status().as_u16());
                if matches!(status, Ok(200 | 201)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "closer {id} not written: {status:?}\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            ids.insert(id);
        }
        ids
    }

    /// The source topic as a `read_committed` reader finds it: event id → positions.
    fn source_records(&self) -> BTreeMap<String, Vec<(i32, i64)>> {
        let mut stored: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, o, v) in self.read_all(&self.topic, PARTITIONS) {
            let id = v["event_id"].as_str().expect("an event_id").to_owned();
            stored.entry(id).or_default().push((p, o));
        }
        stored
    }

    /// Waits (two minutes at most) for `per_key` results of every user on `topic`, then
    /// requires each (window, user) once with the exact counts.
    fn check_windows(
        &self,
        topic: &str,
        expected: &BTreeMap<String, (u64, BTreeMap<String, u64>)>,
        per_key: usize,
    ) {
        let want = expected.len() * per_key;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut got: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
            for (_, _, v) in self.read_all(topic, PARTITIONS) {
                let key = v["key"].as_str().unwrap_or_default().to_owned();
                if key.starts_with("user-") {
                    let start = v["window_start"].as_str().unwrap_or_default().to_owned();
                    got.entry((start, key)).or_default().push(v);
                }
            }
            if got.len() >= want || Instant::now() > deadline {
                assert_eq!(
                    got.len(),
                    want,
                    "{topic}: one result per window and user\n{}",
                    self.logs()
                );
                for ((start, key), results) in &got {
                    assert_eq!(
                        results.len(),
                        1,
                        "{topic}: window {start} of {key} emitted {} times: {results:?}",
                        results.len()
                    );
                    let (n, kinds) = &expected[key];
                    assert_eq!(
                        results[0]["count"].as_u64(),
                        Some(*n),
                        "{topic}: count of {key} at {start}"
                    );
                    assert_eq!(
                        results[0]["counts"],
                        json!(kinds),
                        "{topic}: per type of {key} at {start}"
                    );
                }
                assert!(expected.len() <= USERS, "users beyond the load's");
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits (two minutes at most) until the warehouse's raw table has `records` rows, then
    /// requires one row per event.
    fn check_warehouse(&self, records: usize) {
        let table = &self.table;
        let records = i64::try_from(records).expect("count fits");
        let deadline = Instant::now() + Duration::from_secs(120);
        let count = format!("SELECT count(*) FROM raw.{table}");
        let mut rows = self.sql_count(&count);
        while rows < records && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            rows = self.sql_count(&count);
        }
        assert_eq!(rows, records, "warehouse rows against the topic's records\n{}", self.logs());
        let distinct = self.sql_count(&format!(
            "SELECT count(DISTINCT RECORD_CONTENT->>'event_id') FROM raw.{table}"
        ));
        assert_eq!(distinct, records, "one warehouse row per event");
    }
}

impl Platform {
    /// For a topic whose values the check cannot read (Avro): every answer of `answers` is
    /// 201/200, names its own position, and the topic holds exactly those records, so that
    /// no event written with retries is stored twice.
    pub fn check_stored_once(&self, topic: &str, answers: &[Answer]) {
        let mut positions = BTreeSet::new();
        for a in answers {
            assert!(
                a.unexpected.is_empty(),
                "{}: unexpected answers {:?}",
                a.event_id,
                a.unexpected
            );
            assert_ne!(a.status, 0, "{} was never acknowledged", a.event_id);
            let at = a.position.unwrap_or_else(|| panic!("{}: no position", a.event_id));
            assert!(positions.insert(at), "{}: two events answered with {at:?}", a.event_id);
        }
        let stored: BTreeSet<(i32, i64)> =
            self.read_raw(topic, PARTITIONS).into_iter().map(|(p, o, _)| (p, o)).collect();
        assert_eq!(stored, positions, "{topic}: the records are the acknowledged events, once");
    }
}

/// For each partition of the source topic, a key outside the load's users that lands there.
fn closer_keys() -> Vec<String> {
    let mut keys = BTreeMap::new();
    for i in 0.. {
        let k = format!("closer-{i}");
        let p =
            tributary_core::murmur2_partition(k.as_bytes(), PARTITIONS).expect("partitions > 0");
        keys.entry(p).or_insert(k);
        if keys.len() == PARTITIONS as usize {
            break;
        }
    }
    keys.into_values().collect()
}
