//! JWT bearer authentication against a real broker: no token, a bad one or one without the
//! scope is refused with 401/403 in the error format and writes nothing; the right scopes
//! (global or per topic) get through; health, OpenAPI and metrics stay open; WebSocket streams
//! take the token as a query parameter or in `Sec-WebSocket-Protocol`; public keys verify
//! asymmetric tokens.

mod common;

use common::{event, TestGateway};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "tributary";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn claims(scope: &str) -> Value {
    json!({"sub": "svc-1", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "scope": scope})
}

fn hs256(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    encode(&Header::new(Algorithm::HS256), claims, &key).expect("token")
}

async fn start() -> TestGateway {
    TestGateway::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
    })
    .await
}

/// POSTs an event with `token` (if any); status, body and the WWW-Authenticate header.
async fn post(
    gw: &TestGateway,
    topic: &str,
    id: &str,
    token: Option<&str>,
) -> (u16, Value, String) {
    let mut req =
        gw.http.post(gw.url(&format!("/api/v1/events/{topic}"))).json(&event(id, "user-1"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("POST reaches the gateway");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null), challenge)
}

async fn get(gw: &TestGateway, path: &str, token: Option<&str>) -> u16 {
    let mut req = gw.http.get(gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("GET reaches the gateway").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_checked_and_scoped() {
    let gw = start().await;
    let click = gw.topics.click.clone();
    let before = gw.end_offsets(&click);

    // No token: 401, how to authenticate, the error format.
    let (status, body, challenge) = post(&gw, &click, "no-token", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(challenge, "Bearer realm=\"tributary\"");

    // Tokens that must not pass: expired, wrong key, wrong or missing audience, wrong or
    // missing issuer (both are configured, so a token without them is refused too), no exp.
    let mut expired = claims("events:write");
    expired["exp"] = json!(now() - 3600);
    let mut other_aud = claims("events:write");
    other_aud["aud"] = json!("someone-else");
    let mut other_iss = claims("events:write");
    other_iss["iss"] = json!("https://evil.test/");
    let without = |claim: &str| {
        let mut c = claims("events:write");
        c.as_object_mut().expect("object").remove(claim);
        c
    };
    let bad = [
        ("expired", hs256(&expired, SECRET)),
        ("wrong key", hs256(&claims("events:write"), "another-secret-that-is-also-long-enough")),
        ("wrong audience", hs256(&other_aud, SECRET)),
        ("wrong issuer", hs256(&other_iss, SECRET)),
        ("no exp", hs256(&without("exp"), SECRET)),
        ("no iss", hs256(&without("iss"), SECRET)),
        ("no aud", hs256(&without("aud"), SECRET)),
        ("not a JWT", "abc.def.ghi".to_owned()),
    ];
    for (what, token) in &bad {
        let (status, body, challenge) = post(&gw, &click, what, Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], "unauthorized", "{what}");
        assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
    }

    // A reader may read, not write.
    let reader = hs256(&claims("openid events:read"), SECRET);
    let (status, body, challenge) = post(&gw, &click, "reader", Some(&reader)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    assert!(challenge.contains("scope=\"events:write\""), "{challenge}");
    assert_eq!(gw.end_offsets(&click), before, "nothing refused was written");
    assert_eq!(get(&gw, &format!("/api/v1/events/{click}/latest"), Some(&reader)).await, 200);
    assert_eq!(get(&gw, &format!("/api/v1/events/{click}/latest"), None).await, 401);
    assert_eq!(get(&gw, "/api/v1/topics", Some(&reader)).await, 200);
    assert_eq!(get(&gw, "/api/v1/topics", None).await, 401);

    // A writer for one topic writes that topic only; a writer for all writes everywhere.
    let one = hs256(&claims(&format!("events:write:{click}")), SECRET);
    assert_eq!(post(&gw, &click, "one-topic", Some(&one)).await.0, 201);
    let (status, body, _) = post(&gw, &gw.topics.iot, "one-topic-elsewhere", Some(&one)).await;
    assert_eq!(status, 403, "{body}");
    let mut scp = claims("");
    scp["scp"] = json!(["events:write"]);
    let writer = hs256(&scp, SECRET);
    assert_eq!(post(&gw, &click, "writer", Some(&writer)).await.0, 201);
    let batch = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{click}/batch")))
        .bearer_auth(&writer)
        .json(&json!([event("b-1", "user-2")]))
        .send()
        .await
        .expect("batch");
    assert_eq!(batch.status().as_u16(), 200);
    assert_eq!(gw.end_offsets(&click), before + 3, "exactly the three accepted writes");

    // Load balancers and Prometheus need no token.
    for open in [
        "/api/v1/health",
        "/api/v1/health/live",
        "/api/v1/health/ready",
        "/api/v1/openapi.json",
        "/metrics",
    ] {
        assert_eq!(get(&gw, open, None).await, 200, "{open}");
    }
    // The OpenAPI document says so.
    let (_, doc) = gw.get("/api/v1/openapi.json").await;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer", "{doc}");
    let write = &doc["paths"]["/api/v1/events/{topic}"]["post"]["security"][0]["bearer"];
    assert_eq!(write, &json!(["events:write"]));
    let read = &doc["paths"]["/api/v1/stream/{topic}"]["get"]["security"][0]["bearer"];
    assert_eq!(read, &json!(["events:read"]));
    assert!(doc["paths"]["/api/v1/health"]["get"].get("security").is_none());
    let text = gw.http.get(gw.url("/metrics")).send().await.expect("metrics").text().await;
    assert!(text.expect("text").contains("status=\"401\""), "refusals are counted");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_take_the_token_as_a_query_parameter() {
    let gw = start().await;
    let click = gw.topics.click.clone();
    let base = format!("ws://{}/api/v1/stream/{click}?from=latest", gw.addr);
    match tokio_tungstenite::connect_async(base.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("a stream without a token must be refused: {other:?}"),
    }
    let reader = hs256(&claims("events:read"), SECRET);
    let (_ws, resp) = tokio_tungstenite::connect_async(format!("{base}&access_token={reader}"))
        .await
        .expect("upgrade with a token");
    assert_eq!(resp.status().as_u16(), 101);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_take_the_token_in_the_websocket_protocol_header() {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let gw = start().await;
    let click = gw.topics.click.clone();
    let url = format!("ws://{}/api/v1/stream/{click}?from=latest", gw.addr);
    let offering = |protocols: &str| {
        let mut req = url.clone().into_client_request().expect("request");
        req.headers_mut().insert("sec-websocket-protocol", protocols.parse().expect("header"));
        req
    };
    // What a browser sends: `new WebSocket(url, ["tributary.bearer", "tributary.bearer." + jwt])`.
    let reader = hs256(&claims("events:read"), SECRET);
    let (mut ws, resp) = tokio_tungstenite::connect_async(offering(&format!(
        "tributary.bearer, tributary.bearer.{reader}"
    )))
    .await
    .expect("upgrade with the token in Sec-WebSocket-Protocol");
    assert_eq!(resp.status().as_u16(), 101);
    // The server picks the plain protocol, never the one carrying the token.
    let chosen = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
    assert_eq!(chosen, Some("tributary.bearer"));
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("a first frame in time")
        .expect("open")
        .expect("frame");
    assert!(first.to_text().expect("text").contains("subscribed"), "{first:?}");
    // A bad token there is refused like a bad header.
    let forged = hs256(&claims("events:read"), "another-secret-that-is-also-long-enough");
    match tokio_tungstenite::connect_async(offering(&format!(
        "tributary.bearer, tributary.bearer.{forged}"
    )))
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("a forged token must be refused: {other:?}"),
    }
    // A token without the read scope is refused too.
    let writer = hs256(&claims("events:write"), SECRET);
    match tokio_tungstenite::connect_async(offering(&format!(
        "tributary.bearer, tributary.bearer.{writer}"
    )))
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("a token without events:read must be refused: {other:?}"),
    }
    gw.shutdown().await;
}

/// An EC P-256 key pair made by openssl: (private PKCS#8 PEM, public PEM file path).
fn ec_key_pair(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    let private = dir.join("key.pem");
    let public = dir.join("key.pub.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let p = private.to_str().expect("path");
    run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p]);
    run(&["pkey", "-in", p, "-pubout", "-out", public.to_str().expect("path")]);
    (std::fs::read_to_string(&private).expect("private key"), public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_verifies_asymmetric_tokens() {
    let dir = std::env::temp_dir()
        .join(format!("tributary-jwt-{}", tributary_test_support::random_suffix()));
    let (private, public) = ec_key_pair(&dir);
    let gw = TestGateway::start(|c| {
        c.jwt_public_key = Some(public.display().to_string());
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
    })
    .await;
    let click = gw.topics.click.clone();
    let c = claims("events:write");
    let es256 = encode(
        &Header::new(Algorithm::ES256),
        &c,
        &EncodingKey::from_ec_pem(private.as_bytes()).expect("EC key"),
    )
    .expect("token");
    assert_eq!(post(&gw, &click, "es256", Some(&es256)).await.0, 201);
    // A token signed with a shared secret is not accepted by a public-key gateway.
    let (status, body, _) = post(&gw, &click, "hs256", Some(&hs256(&c, SECRET))).await;
    assert_eq!(status, 401, "{body}");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
