//! A registry connection closed under a request. A server that closes kept-alive
//! connections when they have been idle (Jetty in Confluent's registry after 30 s, a load
//! balancer after 60 s) can close one just as the client sends its next request on it: the
//! request is sent, and the connection ends without an answer. The client must send that
//! request again on a new connection, not report the registry unavailable (the gateway
//! answered `503 schema_registry_unavailable` "error sending request" for it).
//!
//! The server here answers the first request of each connection and closes the connection
//! when the second arrives: that race, every time.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tributary_schema::client::{RegistryClient, RegistryClientConfig};

const LATEST: &str = r#"{"subject":"s-value","version":1,"id":7,"schema":"\"string\""}"#;

/// Reads one request's header (these requests have no body); false when the peer closed.
async fn read_request(conn: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    true
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            if !read_request(&mut conn).await {
                return;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{LATEST}",
                LATEST.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            // The next request on this connection finds it closed under it.
            let _ = read_request(&mut conn).await;
        });
    }
}

#[tokio::test]
async fn a_request_on_a_connection_closed_under_it_is_sent_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener));
    let client = RegistryClient::from_config(&RegistryClientConfig {
        url,
        ..RegistryClientConfig::with_timeout_ms(2_000)
    })
    .expect("client");
    for call in 1..=3 {
        let latest = tokio::time::timeout(Duration::from_secs(5), client.latest("s-value"))
            .await
            .expect("bounded");
        let (id, _) = latest
            .unwrap_or_else(|e| panic!("call {call}: {e}"))
            .unwrap_or_else(|| panic!("call {call}: no schema"));
        assert_eq!(id, 7, "call {call}");
    }
}
