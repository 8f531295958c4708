//! Per-client rate limits (`[gateway.rate_limit]`): a token bucket per client and route class
//! (writes, reads, stream opens). The client is the JWT `sub` when authentication is on (this
//! layer runs after [`crate::auth`], which leaves the checked [`Principal`] in the request),
//! else the connection's address (an IPv6 client by its /64, since one host usually holds the
//! whole /64), or the last `X-Forwarded-For` entry when `trust_forwarded_for` is set.
//!
//! A refused request gets `429 rate_limited` with `Retry-After`; every limited class answers
//! with `RateLimit-Policy` and `RateLimit` as draft-ietf-httpapi-ratelimit-headers-10 defines
//! them (`"writes";q=600;w=60` and `"writes";r=599;t=1`).
//!
//! Memory is bounded: at most `max_clients` buckets are held. A full bucket is the same as none,
//! so buckets that refilled are dropped (at most once a second when the table is full, and
//! every minute otherwise); clients that find the table full of active ones share one bucket
//! per class until room is made.

use crate::auth::Principal;
use crate::config::{RateLimitConfig, RateQuota};
use crate::error::ApiError;
use crate::metrics as m;
use crate::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The route classes a quota applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Writes,
    Reads,
    Streams,
}

impl Class {
    /// The class name, used as the policy name in the headers and as the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Writes => "writes",
            Self::Reads => "reads",
            Self::Streams => "streams",
        }
    }

    /// The class of a request; `None` for health, OpenAPI, `/metrics` and unknown routes.
    pub fn of(method: &axum::http::Method, path: &str) -> Option<Self> {
        let need = crate::auth::need(method, path)?;
        Some(if path.starts_with("/api/v1/stream/") {
            Self::Streams
        } else if need.action == "write" {
            Self::Writes
        } else {
            Self::Reads
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Who is limited.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Subject(Box<str>),
    Address(IpAddr),
    /// Clients that found the table full, and requests without an address (tests).
    Overflow,
}

/// One class's quota and its `RateLimit-Policy` value.
#[derive(Debug)]
struct Policy {
    quota: f64,
    per_sec: f64,
    header: HeaderValue,
}

impl Policy {
    fn new(class: Class, q: RateQuota) -> Self {
        let text = format!("\"{}\";q={};w={}", class.name(), q.requests, q.window_secs);
        Self {
            quota: f64::from(q.requests),
            per_sec: f64::from(q.requests) / f64::from(q.window_secs),
            // Only digits and a fixed name: always a valid header value.
            header: HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("")),
        }
    }

    /// Seconds until `tokens` grows to `target`, rounded up.
    fn secs_until(&self, tokens: f64, target: f64) -> u64 {
        // At most a window or so, so a u64 holds it; EPSILON keeps 5.000000001 at 5.
        ((target - tokens).max(0.0) / self.per_sec - EPSILON).ceil().max(0.0) as u64
    }
}

/// Tokens left and when they were counted.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, policy: &Policy, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * policy.per_sec).min(policy.quota)
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Served; `remaining` requests left now, the bucket full again in `reset_secs`.
    Allowed { remaining: u64, reset_secs: u64 },
    /// Refused; the next request is allowed in `retry_after_secs`.
    Limited { retry_after_secs: u64 },
}

struct Table {
    buckets: HashMap<(Class, Client), Bucket>,
    swept: Instant,
}

/// The buckets of every client, and the quotas.
pub struct Limiter {
    policies: [Option<Policy>; 3],
    max_clients: usize,
    trust_forwarded_for: bool,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("policies", &self.policies).finish_non_exhaustive()
    }
}

/// Rounding slack of the token arithmetic.
const EPSILON: f64 = 1e-9;
/// Without a full table, idle buckets are still dropped this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// With a full table, at most this often (a sweep walks the whole table).
const SWEEP_FULL_EVERY: Duration = Duration::from_secs(1);

impl Limiter {
    /// The limiter `config` asks for, `None` when no class has a quota, or why it cannot be
    /// used.
    pub fn from_config(config: &RateLimitConfig) -> Result<Option<Self>, String> {
        let quotas = [
            (Class::Writes, config.writes),
            (Class::Reads, config.reads),
            (Class::Streams, config.streams),
        ];
        if quotas.iter().all(|(_, q)| q.is_none()) {
            return Ok(None);
        }
        let mut policies = [None, None, None];
        for (class, quota) in quotas {
            let Some(q) = quota else { continue };
            if q.requests == 0 || q.window_secs == 0 {
                return Err(format!(
                    "[gateway.rate_limit] {}: requests and window_secs must be at least 1",
                    class.name()
                ));
            }
            policies[class.index()] = Some(Policy::new(class, q));
        }
        Ok(Some(Self {
            policies,
            max_clients: config.max_clients.max(1),
            trust_forwarded_for: config.trust_forwarded_for,
            table: Mutex::new(Table { buckets: HashMap::new(), swept: Instant::now() }),
        }))
    }

    /// Takes one request of `class` for `client` at `now`; `None` when the class is not limited.
    fn take(&self, class: Class, client: Client, now: Instant) -> Option<Decision> {
        let policy = self.policies[class.index()].as_ref()?;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let due =
            if table.buckets.len() >= self.max_clients { SWEEP_FULL_EVERY } else { SWEEP_EVERY };
        if now.saturating_duration_since(table.swept) >= due {
            self.sweep(&mut table, now);
        }
        let key = if table.buckets.len() >= self.max_clients
            && !table.buckets.contains_key(&(class, client.clone()))
        {
            (class, Client::Overflow)
        } else {
            (class, client)
        };
        let before = table.buckets.len();
        let bucket = table.buckets.entry(key).or_insert(Bucket { tokens: policy.quota, at: now });
        let tokens = bucket.refilled(policy, now);
        let decision = if tokens >= 1.0 - EPSILON {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            Decision::Allowed {
                remaining: (tokens - 1.0).floor() as u64,
                reset_secs: policy.secs_until(tokens - 1.0, policy.quota),
            }
        } else {
            *bucket = Bucket { tokens, at: now };
            Decision::Limited { retry_after_secs: policy.secs_until(tokens, 1.0).max(1) }
        };
        if table.buckets.len() != before {
            metrics::gauge!(m::RATE_LIMIT_CLIENTS).set(table.buckets.len() as f64);
        }
        Some(decision)
    }

    /// Drops the buckets that refilled: a client coming back starts from a full one anyway.
    fn sweep(&self, table: &mut Table, now: Instant) {
        table.buckets.retain(|(class, _), b| {
            self.policies[class.index()].as_ref().is_some_and(|p| b.refilled(p, now) < p.quota)
        });
        table.swept = now;
        metrics::gauge!(m::RATE_LIMIT_CLIENTS).set(table.buckets.len() as f64);
    }

    /// Who sent `req`.
    fn client(&self, req: &Request) -> Client {
        if let Some(sub) = req.extensions().get::<Principal>().and_then(|p| p.subject.as_deref()) {
            return Client::Subject(sub.into());
        }
        let forwarded = self.trust_forwarded_for.then(|| last_forwarded(req.headers())).flatten();
        let peer = || req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        forwarded.or_else(peer).map_or(Client::Overflow, |ip| Client::Address(group(ip)))
    }

    fn policy(&self, class: Class) -> Option<&Policy> {
        self.policies[class.index()].as_ref()
    }
}

/// The last address of the last `X-Forwarded-For` field: the one the proxy in front appended.
fn last_forwarded(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// The address a client is counted by: IPv4 as is, IPv6 by its /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

fn set_headers(resp: &mut Response, class: Class, policy: &Policy, remaining: u64, reset: u64) {
    let state = format!("\"{}\";r={remaining};t={reset}", class.name());
    let headers = resp.headers_mut();
    headers.insert(HeaderName::from_static("ratelimit-policy"), policy.header.clone());
    if let Ok(v) = HeaderValue::from_str(&state) {
        headers.insert(HeaderName::from_static("ratelimit"), v);
    }
}

/// The middleware: counts the request against its client's bucket, or answers
/// `429 rate_limited`.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limiter) = state.inner.limiter.as_ref() else { return next.run(req).await };
    let Some(class) = Class::of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let client = limiter.client(&req);
    let (Some(decision), Some(policy)) =
        (limiter.take(class, client, Instant::now()), limiter.policy(class))
    else {
        return next.run(req).await;
    };
    match decision {
        Decision::Allowed { remaining, reset_secs } => {
            let mut resp = next.run(req).await;
            set_headers(&mut resp, class, policy, remaining, reset_secs);
            resp
        }
        Decision::Limited { retry_after_secs } => {
            metrics::counter!(m::RATE_LIMITED, "class" => class.name()).increment(1);
            let mut resp =
                ApiError::RateLimited { class: class.name(), retry_after_secs }.into_response();
            set_headers(&mut resp, class, policy, 0, retry_after_secs);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_clients: usize) -> Limiter {
        let config = RateLimitConfig {
            writes: Some(RateQuota { requests: 3, window_secs: 60 }),
            max_clients,
            ..RateLimitConfig::default()
        };
        Limiter::from_config(&config).expect("valid").expect("on")
    }

    fn ip(n: u32) -> Client {
        Client::Address(IpAddr::from(n.to_be_bytes()))
    }

    #[test]
    fn a_bucket_allows_its_quota_then_refills_at_its_rate() {
        let l = limiter(10);
        let t0 = Instant::now();
        let take = |at: Instant| l.take(Class::Writes, ip(1), at).expect("limited class");
        assert_eq!(take(t0), Decision::Allowed { remaining: 2, reset_secs: 20 });
        assert_eq!(take(t0), Decision::Allowed { remaining: 1, reset_secs: 40 });
        assert_eq!(take(t0), Decision::Allowed { remaining: 0, reset_secs: 60 });
        assert_eq!(take(t0), Decision::Limited { retry_after_secs: 20 });
        // One request every 20 s comes back.
        let t = t0 + Duration::from_secs(15);
        assert_eq!(take(t), Decision::Limited { retry_after_secs: 5 });
        let t = t0 + Duration::from_secs(20);
        assert_eq!(take(t), Decision::Allowed { remaining: 0, reset_secs: 60 });
        // Classes without a quota are not limited; other clients have their own bucket.
        assert_eq!(l.take(Class::Reads, ip(1), t), None);
        assert_eq!(
            l.take(Class::Writes, ip(2), t),
            Some(Decision::Allowed { remaining: 2, reset_secs: 20 })
        );
    }

    #[test]
    fn the_table_stays_bounded_and_idle_buckets_go() {
        let l = limiter(100);
        let t0 = Instant::now();
        // A flood of new addresses: the table never passes its cap (plus the shared bucket),
        // and clients beyond it share one bucket, which runs dry.
        let mut limited = 0;
        for n in 0..10_000 {
            if let Some(Decision::Limited { .. }) = l.take(Class::Writes, ip(n), t0) {
                limited += 1;
            }
        }
        let len = l.table.lock().expect("lock").buckets.len();
        assert!(len <= 101, "{len} buckets");
        assert!(limited >= 10_000 - 100 - 3, "{limited} refused");
        // Once they refilled (a window later), the next request sweeps them away.
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(l.take(Class::Writes, ip(20_000), later), Some(Decision::Allowed { .. })));
        assert_eq!(l.table.lock().expect("lock").buckets.len(), 1);
    }

    #[test]
    fn clients_are_subjects_or_addresses() {
        let l = limiter(10);
        let mut req = Request::new(axum::body::Body::empty());
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 5000))));
        req.headers_mut().insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        assert_eq!(l.client(&req), Client::Address(IpAddr::from([10, 0, 0, 1])));
        req.extensions_mut().insert(Principal { subject: Some("svc".into()), expires_at: None });
        assert_eq!(l.client(&req), Client::Subject("svc".into()));
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("9.9.9.9, 5.6.7.8"));
        headers.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4 , 5.5.5.5"));
        assert_eq!(last_forwarded(&headers), Some(IpAddr::from([5, 5, 5, 5])));
        let v6: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().expect("v6");
        assert_eq!(group(v6), "2001:db8:1:2::".parse::<IpAddr>().expect("v6"));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("mapped");
        assert_eq!(group(mapped), IpAddr::from([10, 1, 2, 3]));
        let bad = RateLimitConfig {
            streams: Some(RateQuota { requests: 0, window_secs: 60 }),
            ..RateLimitConfig::default()
        };
        assert!(Limiter::from_config(&bad).expect_err("refused").contains("streams"));
        assert!(Limiter::from_config(&RateLimitConfig::default()).expect("off").is_none());
    }
}
