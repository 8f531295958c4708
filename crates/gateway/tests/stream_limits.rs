//! Streams at scale and at their limits, against a real broker: a burst of streams all open
//! and all get every event (shared readers), a client catching up joins the live fan-out with
//! nothing lost or repeated, a live client a whole queue behind is dropped without slowing the
//! others, caps refuse with their codes before the upgrade, and an expired token, an oversize
//! client message and a silent client end the stream with their close codes.

mod common;

use common::{event, TestGateway};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn token(sub: &str, exp_in_secs: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let claims = json!({"sub": sub, "exp": now + exp_in_secs, "scope": "events:read events:write"});
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HMAC key");
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
}

/// Opens a stream; the socket, or the refusal's status and error code.
async fn open(gw: &TestGateway, topic: &str, query: &str) -> Result<Ws, (u16, String)> {
    let url = format!("ws://{}/api/v1/stream/{topic}?{query}", gw.addr);
    match tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer to the upgrade within 30 s")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body["error"].as_str().unwrap_or_default().to_owned()))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

/// Text frames until the close (or `wait` without anything): the frames and the close code.
async fn until_close<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    wait: Duration,
) -> (Vec<Value>, Option<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return (frames, None),
            Ok(Some(Ok(Message::Text(t)))) => frames.push(serde_json::from_str(&t).expect("JSON")),
            Ok(Some(Ok(Message::Close(f)))) => return (frames, f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn first_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_streams_all_open_and_each_gets_every_event() {
    // All 300 come from 127.0.0.1, one principal now that the listener records the peer's
    // address: the per-principal cap is not what this test is about.
    let gw = TestGateway::start(|c| c.ws_max_streams_per_principal = 1_000).await;
    let topic = gw.topics.click.clone();
    let opens: Vec<_> = (0..300)
        .map(|_| {
            let url = format!("ws://{}/api/v1/stream/{topic}?from=latest", gw.addr);
            tokio::spawn(async move {
                let connect = tokio_tungstenite::connect_async(url);
                match tokio::time::timeout(Duration::from_secs(40), connect).await {
                    Ok(Ok((ws, _))) => Ok(ws),
                    Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
                        Err(r.status().as_u16().to_string())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 40 s".to_owned()),
                }
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut refused = Vec::new();
    for o in opens {
        match o.await.expect("open task") {
            Ok(ws) => streams.push(ws),
            Err(why) => refused.push(why),
        }
    }
    assert!(refused.is_empty(), "{} of 300 refused, for example {:?}", refused.len(), refused[0]);
    for ws in &mut streams {
        assert_eq!(first_frame(ws).await["type"], "subscribed");
    }
    for i in 0..3 {
        assert_eq!(gw.post(&topic, &event(&format!("burst-{i}"), &format!("u{i}"))).await.0, 201);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut ids = HashSet::new();
                while ids.len() < 3 {
                    let f = first_frame(&mut ws).await;
                    assert_eq!(f["type"], "event", "{f}");
                    assert!(ids.insert(f["event"]["event_id"].as_str().expect("id").to_owned()));
                }
                ids
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.expect("every stream gets the three events").len(), 3);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_the_stream_with_4401_and_a_resume_token() {
    let gw = TestGateway::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_leeway_secs = 0;
    })
    .await;
    let topic = gw.topics.iot.clone();
    let mut ws = open(&gw, &topic, &format!("access_token={}", token("svc", 3)))
        .await
        .expect("a valid token opens the stream");
    assert_eq!(first_frame(&mut ws).await["type"], "subscribed");
    let (frames, code) = until_close(&mut ws, Duration::from_secs(10)).await;
    let last = frames.last().expect("an error frame before the close");
    assert_eq!(last["error"], "token_expired", "{last}");
    assert!(last["resume_token"].is_string());
    assert_eq!(code, Some(4401));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_client_message_closes_the_stream_with_1009() {
    let gw = TestGateway::start(|_| {}).await;
    let mut ws = open(&gw, &gw.topics.iot, "from=latest").await.expect("stream opens");
    assert_eq!(first_frame(&mut ws).await["type"], "subscribed");
    // Small messages are ignored; a large one ends the stream.
    ws.send(Message::text("hello")).await.expect("send");
    ws.send(Message::text("x".repeat(1024 * 1024))).await.expect("send");
    let (_, code) = until_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1009), "closed with 'message too big'");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_refuse_streams_before_the_upgrade_with_their_codes() {
    let gw = TestGateway::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.ws_max_streams = 3;
        c.ws_max_streams_per_principal = 2;
    })
    .await;
    let topic = gw.topics.iot.clone();
    let q = |sub: &str| format!("from=latest&access_token={}", token(sub, 300));
    let mut alice1 = open(&gw, &topic, &q("alice")).await.expect("alice's first stream");
    let _alice2 = open(&gw, &topic, &q("alice")).await.expect("alice's second stream");
    assert_eq!(
        open(&gw, &topic, &q("alice")).await.err(),
        Some((429, "too_many_streams_for_principal".to_owned()))
    );
    let _bob = open(&gw, &topic, &q("bob")).await.expect("bob's stream");
    assert_eq!(
        open(&gw, &topic, &q("carol")).await.err(),
        Some((503, "too_many_streams".to_owned()))
    );
    // A closed stream frees its place.
    alice1.close(None).await.expect("close");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open(&gw, &topic, &q("carol")).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.1, "too_many_streams");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the freed place was not given back: {e:?}"),
        }
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let gw = TestGateway::start(|c| {
        c.ws_idle_timeout_secs = 2;
        c.ws_ping_interval_secs = 60;
    })
    .await;
    let mut ws = open(&gw, &gw.topics.iot, "from=latest").await.expect("stream opens");
    assert_eq!(first_frame(&mut ws).await["type"], "subscribed");
    let started = tokio::time::Instant::now();
    let (frames, code) = until_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, Some(4408));
    assert_eq!(frames.last().expect("error frame")["error"], "idle_timeout");
    assert!(started.elapsed() >= Duration::from_millis(1500), "not before the timeout");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_catching_up_while_events_arrive_gets_each_once() {
    let gw = TestGateway::start(|c| c.ws_subscriber_buffer = 8).await;
    let topic = gw.topics.click.clone();
    for i in 0..50 {
        assert_eq!(gw.post(&topic, &event(&format!("old-{i}"), &format!("u{i}"))).await.0, 201);
    }
    // A live stream keeps the tail reader busy while the second one catches up.
    let _live = open(&gw, &topic, "from=latest").await.expect("live stream");
    let mut ws = open(&gw, &topic, "from=earliest").await.expect("catch-up stream");
    let writer = {
        let (http, url) = (gw.http.clone(), gw.url(&format!("/api/v1/events/{topic}")));
        tokio::spawn(async move {
            for i in 0..150 {
                let r = http.post(&url).json(&event(&format!("new-{i}"), &format!("u{i}")));
                assert_eq!(r.send().await.expect("POST").status().as_u16(), 201);
            }
        })
    };
    assert_eq!(first_frame(&mut ws).await["type"], "subscribed");
    let mut ids = HashSet::new();
    while ids.len() < 200 {
        let f = first_frame(&mut ws).await;
        assert_eq!(f["type"], "event", "{f}");
        let id = f["event"]["event_id"].as_str().expect("id").to_owned();
        assert!(ids.insert(id.clone()), "{id} sent twice");
    }
    writer.await.expect("writer");
    let (extra, _) = until_close(&mut ws, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "nothing beyond the 200 events: {extra:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_client_that_falls_behind_is_dropped_without_slowing_the_others() {
    // A long send timeout: the stalled client is caught by its full queue, not by the timeout.
    // The queue absorbs one batch (50 records arrive at once), not the whole backlog.
    let gw = TestGateway::start(|c| {
        c.ws_subscriber_buffer = 256;
        c.ws_send_timeout_ms = 60_000;
    })
    .await;
    let topic = gw.topics.click.clone();
    let mut reader = open(&gw, &topic, "from=latest").await.expect("reading stream");
    assert_eq!(first_frame(&mut reader).await["type"], "subscribed");
    // The stalled client reads through a small receive buffer, so the gateway's sends block.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let tcp = socket.connect(gw.addr).await.expect("connect");
    let url = format!("ws://{}/api/v1/stream/{topic}?from=latest", gw.addr);
    let (mut stalled, _) = tokio_tungstenite::client_async(url, tcp).await.expect("upgrade");
    assert_eq!(first_frame(&mut stalled).await["type"], "subscribed");

    // ~10 MiB: more than the socket buffers on both sides and the queue can hold.
    let total = 1_200;
    // The reading client reads all along and gets everything, while the other reads nothing.
    let reading = tokio::spawn(async move {
        let mut got = HashSet::new();
        while got.len() < total {
            let f = first_frame(&mut reader).await;
            assert_eq!(f["type"], "event", "{f}");
            assert!(got.insert(f["event"]["event_id"].as_str().expect("id").to_owned()));
        }
    });
    let blob = "x".repeat(8 * 1024);
    // Batches of 50, paced: a client that reads keeps up between them; the stalled one not.
    for chunk in 0..(total / 50) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let batch: Vec<Value> = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                json!({"event_id": format!("lag-{n}"), "timestamp": "2026-11-30T12:00:00Z",
                       "event_type": "blob", "user_id": format!("u{}", n % 40),
                       "payload": {"blob": blob}})
            })
            .collect();
        let r = gw
            .http
            .post(gw.url(&format!("/api/v1/events/{topic}/batch")))
            .json(&batch)
            .send()
            .await
            .expect("batch");
        assert_eq!(r.status().as_u16(), 200);
    }
    tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reading client gets every event within 30 s")
        .expect("reading client");
    // The stalled client now reads: some events, then slow_consumer with its token.
    let (frames, code) = until_close(&mut stalled, Duration::from_secs(15)).await;
    let error = frames.last().expect("frames");
    assert_eq!(error["error"], "slow_consumer", "{error}");
    assert_eq!(code, Some(1013));
    let first: Vec<String> = frames[..frames.len() - 1]
        .iter()
        .map(|f| f["event"]["event_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(first.len() < total, "dropped before the end ({} events)", first.len());
    // Its token resumes exactly after what it got.
    let token = error["resume_token"].as_str().expect("token");
    let mut ws = open(&gw, &topic, &format!("resume_token={token}")).await.expect("resume");
    assert_eq!(first_frame(&mut ws).await["type"], "subscribed");
    let mut all: HashSet<String> = first.into_iter().collect();
    while all.len() < total {
        let f = first_frame(&mut ws).await;
        assert!(all.insert(f["event"]["event_id"].as_str().expect("id").to_owned()), "{f}");
    }
    let (extra, _) = until_close(&mut ws, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "nothing repeated or extra: {extra:?}");
    gw.shutdown().await;
}
