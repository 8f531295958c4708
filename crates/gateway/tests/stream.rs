//! The WebSocket stream against a real broker: live events, resume without loss or repeats,
//! and slow clients told so and disconnected.

mod common;

use common::{event, TestGateway};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &TestGateway, topic: &str, query: &str) -> Ws {
    let url = format!("ws://{}/api/v1/stream/{topic}?{query}", gw.addr);
    let (ws, resp) = tokio_tungstenite::connect_async(url).await.expect("websocket upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The next JSON text frame, or `None` if none arrives within `wait`.
async fn next_frame(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(&t).expect("JSON frame"))
            }
            Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("websocket error: {e}"),
        }
    }
}

async fn expect_frame(ws: &mut Ws) -> Value {
    next_frame(ws, Duration::from_secs(15)).await.expect("a frame within 15 s")
}

fn id_of(frame: &Value) -> String {
    assert_eq!(frame["type"], "event", "{frame}");
    frame["event"]["event_id"].as_str().expect("event_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_a_token_loses_and_repeats_nothing() {
    let gw = TestGateway::start(|_| {}).await;
    let topic = gw.topics.click.clone();
    // Written before the stream opens: `from=latest` must not show it.
    assert_eq!(gw.post(&topic, &event("before", "user-0")).await.0, 201);

    let mut ws = connect(&gw, &topic, "from=latest").await;
    let hello = expect_frame(&mut ws).await;
    assert_eq!(hello["type"], "subscribed");
    assert_eq!(hello["topic"], topic.as_str());
    let start_token = hello["resume_token"].as_str().expect("token").to_owned();

    let users = ["user-1", "user-77", "user-123456", "abcd", "21"];
    for (i, u) in users.iter().enumerate().take(3) {
        assert_eq!(gw.post(&topic, &event(&format!("s{i}"), u)).await.0, 201);
    }
    let mut seen = Vec::new();
    let mut token_after_two = String::new();
    for n in 0..3 {
        let f = expect_frame(&mut ws).await;
        assert!(f["partition"].is_i64() && f["offset"].is_i64(), "{f}");
        seen.push(id_of(&f));
        if n == 1 {
            token_after_two = f["resume_token"].as_str().expect("token").to_owned();
        }
    }
    // Order holds within a partition; these keys are on different partitions.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, ["s0", "s1", "s2"], "every live event, once");
    assert!(next_frame(&mut ws, Duration::from_millis(700)).await.is_none(), "nothing else");
    ws.close(None).await.expect("close");

    // While disconnected, more events arrive.
    for (i, u) in users.iter().enumerate().skip(3) {
        assert_eq!(gw.post(&topic, &event(&format!("s{i}"), u)).await.0, 201);
    }
    // Resume after the second frame: the third and the two new ones, each once.
    let mut ws = connect(&gw, &topic, &format!("resume_token={token_after_two}")).await;
    assert_eq!(expect_frame(&mut ws).await["type"], "subscribed");
    let mut resumed = HashSet::new();
    for _ in 0..3 {
        assert!(resumed.insert(id_of(&expect_frame(&mut ws).await)), "no repeats");
    }
    let expected: HashSet<String> =
        [seen[2].clone(), "s3".to_owned(), "s4".to_owned()].into_iter().collect();
    assert_eq!(resumed, expected);
    assert!(next_frame(&mut ws, Duration::from_millis(700)).await.is_none(), "nothing repeated");
    drop(ws);

    // The token from the subscribed frame replays everything written after it.
    let mut ws = connect(&gw, &topic, &format!("resume_token={start_token}")).await;
    expect_frame(&mut ws).await;
    let mut all = HashSet::new();
    for _ in 0..5 {
        all.insert(id_of(&expect_frame(&mut ws).await));
    }
    assert_eq!(all.len(), 5);
    assert!(!all.contains("before"));

    // from=earliest shows everything, including the event written before the first stream.
    let mut ws = connect(&gw, &topic, "from=earliest").await;
    expect_frame(&mut ws).await;
    let mut everything = HashSet::new();
    for _ in 0..6 {
        everything.insert(id_of(&expect_frame(&mut ws).await));
    }
    assert!(everything.contains("before"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_requests_are_refused_before_the_upgrade() {
    let gw = TestGateway::start(|_| {}).await;
    let cases = [
        (
            format!("/api/v1/stream/{}?resume_token=garbage!", gw.topics.click),
            400,
            "invalid_resume_token",
        ),
        (format!("/api/v1/stream/{}?from=yesterday", gw.topics.click), 400, "invalid_parameter"),
        ("/api/v1/stream/no.such.topic".to_owned(), 404, "unknown_topic"),
    ];
    for (path, status, code) in cases {
        let url = format!("ws://{}{path}", gw.addr);
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => panic!("{path} must be refused"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{path}");
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                        .expect("JSON error");
                assert_eq!(body["error"], code, "{path}");
            }
            Err(e) => panic!("{path}: unexpected error {e}"),
        }
    }
    // A plain HTTP request gets the JSON error format too.
    let r = reqwest::get(format!("http://{}/api/v1/stream/{}", gw.addr, gw.topics.click))
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.expect("JSON")["error"], "websocket_upgrade_required");
    // A token for another topic is refused too.
    let mut ws = connect(&gw, &gw.topics.tx, "from=latest").await;
    let token = expect_frame(&mut ws).await["resume_token"].as_str().expect("token").to_owned();
    let url = format!("ws://{}/api/v1/stream/{}?resume_token={token}", gw.addr, gw.topics.click);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_is_told_and_disconnected_then_resumes_exactly() {
    let gw = TestGateway::start(|c| {
        c.ws_send_timeout_ms = 1_000;
        c.ws_prefetch_kbytes = 256;
    })
    .await;
    let topic = gw.topics.click.clone();
    // ~24 MiB backlog, read through a socket with a small receive buffer (no autotuning, which
    // on loopback can grow to tens of MiB): the server must block on this client.
    let blob = "x".repeat(8 * 1024);
    let total = 3_000;
    for chunk in 0..(total / 500) {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                json!({"event_id": format!("big-{n}"), "timestamp": 1_764_504_000_000i64, "event_type": "blob",
                       "user_id": format!("user-{}", n % 50), "payload": {"blob": blob}})
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
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["accepted"], 500, "{}", body["results"][0]);
    }

    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(gw.addr).await.expect("connect");
    let url = format!("ws://{}/api/v1/stream/{topic}?from=earliest", gw.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("upgrade");
    let hello = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .expect("frame")
        .expect("open")
        .expect("ok");
    assert!(hello.to_text().expect("text").contains("subscribed"));
    // Stop reading long enough for the server's send deadline to pass.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let mut first: Vec<String> = Vec::new();
    let mut error = None;
    let mut close_code = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .unwrap_or_else(|_| panic!("server ends the stream (after {} frames)", first.len()))
    {
        match msg {
            Ok(Message::Text(t)) => {
                let f: Value = serde_json::from_str(&t).expect("JSON");
                if f["type"] == "error" {
                    error = Some(f);
                } else {
                    first.push(id_of(&f));
                }
            }
            Ok(Message::Close(frame)) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let error = error.expect("the client is told why it is disconnected");
    assert_eq!(error["error"], "slow_consumer", "{error}");
    assert_eq!(close_code, Some(1013), "closed with 'try again later'");
    assert!(
        first.len() < total,
        "disconnected before the backlog was sent ({} frames)",
        first.len()
    );

    // Resuming with the token from the error frame continues exactly where the client was.
    let token = error["resume_token"].as_str().expect("token");
    let mut ws = connect(&gw, &topic, &format!("resume_token={token}")).await;
    assert_eq!(expect_frame(&mut ws).await["type"], "subscribed");
    let mut rest = Vec::new();
    while first.len() + rest.len() < total {
        rest.push(id_of(&expect_frame(&mut ws).await));
    }
    assert!(next_frame(&mut ws, Duration::from_millis(700)).await.is_none(), "nothing extra");
    let all: HashSet<&String> = first.iter().chain(&rest).collect();
    assert_eq!(all.len(), total, "every event exactly once across the two connections");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_streams_with_a_resume_token() {
    let gw = TestGateway::start(|_| {}).await;
    let mut ws = connect(&gw, &gw.topics.iot, "from=latest").await;
    assert_eq!(expect_frame(&mut ws).await["type"], "subscribed");
    let reader = tokio::spawn(async move {
        let mut last = None;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) => last = Some(serde_json::from_str::<Value>(&t).expect("JSON")),
                Message::Close(frame) => return (last, frame.map(|f| u16::from(f.code))),
                _ => {}
            }
        }
        (last, None)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .expect("shutdown does not wait for streams");
    let (last, code) = reader.await.expect("reader");
    let last = last.expect("a frame before close");
    assert_eq!(last["error"], "shutting_down");
    assert!(last["resume_token"].is_string());
    assert_eq!(code, Some(1001));
}
