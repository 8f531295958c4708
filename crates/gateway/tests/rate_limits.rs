//! Per-client rate limits: a token bucket per JWT subject (per client address when
//! authentication is off) and route class, answering `429 rate_limited` with `Retry-After` and
//! the `RateLimit-Policy` / `RateLimit` headers, writing nothing; a spoofed `X-Forwarded-For`
//! changes nothing unless the gateway is told to trust it.

mod common;

use common::{event, TestGateway};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary_gateway::config::RateQuota;
use tributary_gateway::GatewayConfig;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn token(sub: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 300;
    let claims = json!({"sub": sub, "exp": exp, "scope": "events:write events:read"});
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HMAC key");
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
}

/// Writes 3, reads 2 and stream opens 1 per minute and client.
fn limits(c: &mut GatewayConfig) {
    c.rate_limit.writes = Some(RateQuota { requests: 3, window_secs: 60 });
    c.rate_limit.reads = Some(RateQuota { requests: 2, window_secs: 60 });
    c.rate_limit.streams = Some(RateQuota { requests: 1, window_secs: 60 });
}

/// An answer's status, JSON body and the named headers (empty when absent).
struct Answer {
    status: u16,
    body: Value,
    retry_after: String,
    policy: String,
    state: String,
}

async fn answer(r: reqwest::Response) -> Answer {
    let h = |name: &str| {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let (retry_after, policy, state) = (h("retry-after"), h("ratelimit-policy"), h("ratelimit"));
    let status = r.status().as_u16();
    Answer { status, body: r.json().await.unwrap_or(Value::Null), retry_after, policy, state }
}

async fn write(
    gw: &TestGateway,
    http: &reqwest::Client,
    id: &str,
    auth: Option<&str>,
    forwarded: Option<&str>,
) -> Answer {
    let mut req = http
        .post(gw.url(&format!("/api/v1/events/{}", gw.topics.click)))
        .json(&event(id, "user-1"));
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    answer(req.send().await.expect("POST reaches the gateway")).await
}

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subject_has_its_own_quota_per_route_class() {
    let gw = TestGateway::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        limits(c);
    })
    .await;
    let click = gw.topics.click.clone();
    let (a, b) = (token("svc-a"), token("svc-b"));
    let before = gw.end_offsets(&click);

    // Within the quota: accepted, and told how much is left.
    for (i, left) in [2, 1, 0].into_iter().enumerate() {
        let r = write(&gw, &gw.http, &format!("a-{i}"), Some(&a), None).await;
        assert_eq!(r.status, 201, "write {i}: {}", r.body);
        assert_eq!(r.policy, "\"writes\";q=3;w=60", "write {i}");
        assert!(r.state.starts_with(&format!("\"writes\";r={left};t=")), "{}", r.state);
    }
    // Over it: 429 in the error format, when to come back, and nothing written.
    let r = write(&gw, &gw.http, "a-3", Some(&a), None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["error"], "rate_limited", "{}", r.body);
    let retry: u64 = r.retry_after.parse().expect("Retry-After in seconds");
    assert!((1..=20).contains(&retry), "one write comes back every 20 s: {retry}");
    assert_eq!(r.policy, "\"writes\";q=3;w=60");
    assert_eq!(r.state, format!("\"writes\";r=0;t={retry}"), "RateLimit agrees with Retry-After");
    let batch = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{click}/batch")))
        .bearer_auth(&a)
        .json(&json!([event("a-batch", "user-1")]))
        .send()
        .await
        .expect("batch");
    assert_eq!(batch.status().as_u16(), 429, "a batch is a write too");
    assert_eq!(gw.end_offsets(&click), before + 3, "refused writes wrote nothing");

    // Another subject is not affected; nor are the first one's reads (another class).
    assert_eq!(write(&gw, &gw.http, "b-0", Some(&b), None).await.status, 201);
    let latest = gw.url(&format!("/api/v1/events/{click}/latest"));
    for i in 0..2 {
        let r = answer(gw.http.get(&latest).bearer_auth(&a).send().await.expect("GET")).await;
        assert_eq!(r.status, 200, "read {i}: {}", r.body);
        assert_eq!(r.policy, "\"reads\";q=2;w=60");
    }
    let r =
        answer(gw.http.get(gw.url("/api/v1/topics")).bearer_auth(&a).send().await.expect("GET"))
            .await;
    assert_eq!(r.status, 429, "the topic list is a read: {}", r.body);

    // One stream open per minute: the second is refused before the upgrade.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let ws_url = format!("ws://{}/api/v1/stream/{click}?from=latest", gw.addr);
    let open = || {
        let mut req = ws_url.clone().into_client_request().expect("request");
        req.headers_mut().insert("authorization", format!("Bearer {a}").parse().expect("header"));
        tokio_tungstenite::connect_async(req)
    };
    let (_ws, resp) = open().await.expect("first stream opens");
    assert_eq!(resp.status().as_u16(), 101);
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            assert!(resp.headers().get("retry-after").is_some());
        }
        other => panic!("a second stream within the minute must be refused: {other:?}"),
    }

    // Probes and scrapes are never limited; refusals are counted by class.
    for _ in 0..5 {
        let r = gw.http.get(gw.url("/api/v1/health/live")).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), 200);
    }
    let text = gw.http.get(gw.url("/metrics")).send().await.expect("GET").text().await;
    let text = text.expect("text");
    for class in ["writes", "reads", "streams"] {
        let line = format!("gateway_rate_limited_total{{class=\"{class}\"}}");
        assert!(text.contains(&line), "{line} in /metrics");
    }
    // The OpenAPI document lists the 429 on limited operations only.
    let (_, doc) = gw.get("/api/v1/openapi.json").await;
    let write = &doc["paths"]["/api/v1/events/{topic}"]["post"]["responses"]["429"];
    assert!(write["headers"]["Retry-After"].is_object(), "{write}");
    assert!(doc["paths"]["/api/v1/health"]["get"]["responses"].get("429").is_none());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_each_address_has_its_own_quota_and_forwarded_for_is_not_trusted() {
    let gw = TestGateway::start(limits).await;
    let (one, two) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    for i in 0..3 {
        let r = write(&gw, &one, &format!("one-{i}"), None, None).await;
        assert_eq!(r.status, 201, "write {i}: {}", r.body);
    }
    assert_eq!(write(&gw, &one, "one-3", None, None).await.status, 429);
    // A header the client writes itself does not make it someone else.
    let r = write(&gw, &one, "one-4", None, Some("203.0.113.9")).await;
    assert_eq!(r.status, 429, "X-Forwarded-For is not trusted by default");
    // Another address has its own quota.
    assert_eq!(write(&gw, &two, "two-0", None, None).await.status, 201);
    gw.shutdown().await;

    // Behind a trusted proxy, the address it appends (the last one) is the client.
    let gw = TestGateway::start(|c| {
        limits(c);
        c.rate_limit.trust_forwarded_for = true;
    })
    .await;
    for i in 0..3 {
        let r = write(&gw, &one, &format!("p-{i}"), None, Some("203.0.113.7")).await;
        assert_eq!(r.status, 201, "write {i}: {}", r.body);
    }
    let spoofed = Some("198.51.100.1, 203.0.113.7");
    assert_eq!(write(&gw, &one, "p-3", None, spoofed).await.status, 429, "left part ignored");
    let other = Some("203.0.113.7, 203.0.113.8");
    assert_eq!(write(&gw, &one, "p-4", None, other).await.status, 201, "another client");
    gw.shutdown().await;
}
