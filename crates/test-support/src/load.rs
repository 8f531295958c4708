//! A load on the gateway while brokers fail, written as the API asks clients to: every event
//! has its own `event_id`, and a write that got no 201/200 (a 503, a refused or cut
//! connection) is sent again with the same `event_id` until it is answered. Every answer is
//! kept, for [`crate::platform::Platform::check_exact`].

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long one event is retried before the writer gives up on it (it then counts as never
/// acknowledged: it may be stored at most once).
const GIVE_UP: Duration = Duration::from_secs(150);

/// The final answer for one event.
#[derive(Debug, Clone)]
pub struct Answer {
    pub event_id: String,
    pub user: String,
    pub kind: String,
    /// 201 or 200 once written; 0 when the writer gave up.
    pub status: u16,
    /// Where the answer says the event is.
    pub position: Option<(i32, i64)>,
    /// 503 answers before the final one, and whether each had `Retry-After`.
    pub unavailable: u32,
    pub unavailable_without_retry_after: u32,
    /// Other answers before the final one that were neither 2xx nor 503 (status, body).
    pub unexpected: Vec<(u16, String)>,
}

/// Writers running against one or more gateways until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Vec<Answer>>>,
    /// The event time of every event: one pane, so the expected windows are exact whatever
    /// the order of arrival.
    pub t0: i64,
}

/// The user (window key) of event `n`.
pub fn user(n: usize) -> String {
    format!("user-{}", n % crate::platform::USERS)
}

impl Load {
    /// `writers` concurrent writers, writer `w` posting to `bases[w % bases.len()]`, each
    /// waiting `pace` between events.
    pub fn start(bases: &[String], topic: &str, writers: usize, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = chrono_now_ms();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let handles = (0..writers)
            .map(|w| {
                let url = format!("{}/api/v1/events/{topic}", bases[w % bases.len()]);
                let (stop, client) = (stop.clone(), client.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let mut n = w;
                    while !stop.load(Ordering::Relaxed) {
                        answers.push(write_one(&client, &url, n, t0).await);
                        n += writers;
                        tokio::time::sleep(pace).await;
                    }
                    answers
                })
            })
            .collect();
        Self { stop, writers: handles, t0 }
    }

    /// Stops the writers after their current event; every answer.
    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.writers {
            all.extend(w.await.expect("a writer panicked"));
        }
        all
    }
}

fn chrono_now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(now.expect("clock after 1970").as_millis()).expect("millis fit")
}

/// Writes event `n` until it is answered 201/200 or [`GIVE_UP`] passes.
async fn write_one(client: &reqwest::Client, url: &str, n: usize, t0: i64) -> Answer {
    let kind = if n % 3 == 0 { "click" } else { "view" };
    let mut answer = Answer {
        event_id: format!("load-{n}"),
        user: user(n),
        kind: kind.to_owned(),
        status: 0,
        position: None,
        unavailable: 0,
        unavailable_without_retry_after: 0,
        unexpected: Vec::new(),
    };
    let event = json!({"event_id": answer.event_id, "timestamp": t0, "event_type": kind,
        "user_id": answer.user, "payload": {"n": n}});
    let started = Instant::now();
    while started.elapsed() < GIVE_UP {
        let resp = match client.post(url).json(&event).send().await {
            Ok(r) => r,
            Err(_) => {
                // The gateway is restarting or cut the connection: the outcome is unknown.
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key("retry-after");
        let body = resp.text().await.unwrap_or_default();
        match status {
            200 | 201 => {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                answer.status = status;
                answer.position = v["partition"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .zip(v["offset"].as_i64());
                return answer;
            }
            503 => {
                answer.unavailable += 1;
                if !retry_after {
                    answer.unavailable_without_retry_after += 1;
                }
            }
            _ => answer.unexpected.push((status, body)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    answer
}
