//! Careless and hostile clients at the socket: a header that never ends, a body that trickles,
//! a body declared far over the limit. Each is cut off within a bounded time, and the gateway
//! keeps serving others meanwhile.

mod common;

use common::TestGateway;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Everything the server sends until it closes the connection, or until `limit` passes.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {limit:?}; got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversize_requests_are_cut_off_in_bounded_time() {
    let gw = TestGateway::start(|c| {
        c.header_timeout_ms = 1_000;
        c.body_timeout_ms = 1_000;
    })
    .await;
    let topic = gw.topics.click.clone();

    // A header that never finishes: the connection is closed after header_timeout_ms.
    let mut slow = TcpStream::connect(gw.addr).await.expect("connect");
    slow.write_all(format!("POST /api/v1/events/{topic} HTTP/1.1\r\nhost: x\r\n").as_bytes())
        .await
        .expect("write");
    let (_, took) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "an unfinished header was cut off after {took:?}");

    // Meanwhile, and after, others are served.
    let (status, body) = gw.post(&topic, &common::event("slow-1", "u-1")).await;
    assert_eq!(status, 201, "{body}");

    // A body that trickles: 408 with the API's error body after body_timeout_ms.
    let mut trickle = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/events/{topic} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"event_id\":"
    );
    trickle.write_all(head.as_bytes()).await.expect("write");
    let (answer, took) = read_until_closed(&mut trickle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "trickling body answered: {answer}");
    assert!(answer.contains("\"error\":\"body_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // A body declared far over the limit: 413 at once, before a byte of it is sent.
    let mut huge = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/events/{topic} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        60 * 1024 * 1024
    );
    huge.write_all(head.as_bytes()).await.expect("write");
    let (answer, took) = read_until_closed(&mut huge, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "declared 60 MiB answered: {answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");

    // A body without a length that passes the limit: 413 as soon as it does.
    let mut chunked = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/events/{topic} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    chunked.write_all(head.as_bytes()).await.expect("write");
    let chunk = vec![b' '; 256 * 1024];
    for _ in 0..5 {
        // Over the 1 MiB default after four chunks; the fifth may find the connection closed.
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if chunked.write_all(&frame).await.is_err() {
            break;
        }
    }
    let (answer, took) = read_until_closed(&mut chunked, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "a chunked body over the limit: {answer}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_in_flight_are_shed_at_once_and_probes_still_answer() {
    let gw = TestGateway::start(|c| {
        c.max_in_flight_requests = 2;
        c.body_timeout_ms = 10_000;
    })
    .await;
    let topic = gw.topics.click.clone();
    let body = serde_json::to_vec(&common::event("held-1", "u-1")).expect("json");
    let (start, rest) = body.split_at(10);

    // Two requests held in flight: their headers sent, their bodies not yet.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        let head = format!(
            "POST /api/v1/events/{topic} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(start).await.expect("start of body");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third is refused at once, with Retry-After; probes are never refused.
    let started = Instant::now();
    let r = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{topic}")))
        .json(&common::event("shed-1", "u-2"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(1), "shed after {:?}", started.elapsed());
    assert!(r.headers().get("retry-after").is_some(), "Retry-After on overloaded");
    let answer: serde_json::Value = r.json().await.expect("json");
    assert_eq!(answer["error"], "overloaded", "{answer}");
    let live = gw.http.get(gw.url("/api/v1/health/live")).send().await.expect("live");
    assert_eq!(live.status().as_u16(), 200);

    // The held requests finish normally, and their slots are free again.
    for (i, mut s) in held.into_iter().enumerate() {
        s.write_all(rest).await.expect("rest of body");
        let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 20"), "held request {i}: {answer}");
    }
    let (status, body) = gw.post(&topic, &common::event("after-1", "u-3")).await;
    assert_eq!(status, 201, "{body}");
    gw.shutdown().await;
}
