//! HTTPS at the gateway's edges, with certificates made by `openssl` for the test: the gateway
//! serves HTTPS and WSS (and no clear text) with its deadlines, and writes Avro through a
//! registry it reaches over HTTPS with basic auth, trusting the registry's CA from `ca_file`;
//! a registry signed by another CA is refused with an error that names TLS. And a connection
//! that sends nothing, over TLS or not, is closed after the header deadline.

mod common;

use common::{event, start_registry_with, TestGateway};
use futures::StreamExt as _;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;
use tributary_gateway::{AppState, GatewayConfig};
use tributary_kafka::KafkaConfig;
use tributary_schema::client::{ClientError, RegistryClient, RegistryClientConfig};
use tributary_test_support::TestCa;

/// An HTTPS client that trusts `ca` alone.
fn client_trusting(ca: &TestCa) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&ca.ca_pem()).expect("CA certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A TLS connection to `addr` that trusts `ca` alone, by name `localhost`.
async fn tls_connect(
    ca: &TestCa,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let ca_cert = rustls::pki_types::CertificateDer::from_pem_file(&ca.ca_file).expect("CA");
    roots.add(ca_cert).expect("trusted CA");
    #[allow(deprecated)] // ring has no post-quantum key exchange; that is fine for a test
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake")
}

/// Whether the server closes `conn` within `within`, reading (and dropping) what it sends.
async fn closed_within(conn: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The next JSON text frame of `ws`, within 15 s.
async fn next_text(ws: &mut (impl futures::Stream<Item = WsResult> + Unpin)) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no text frame within 15 s: {other:?}"),
        }
    }
}

type WsResult = Result<Message, tokio_tungstenite::tungstenite::Error>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https_and_wss_within_its_deadlines() {
    let ca = TestCa::new();
    let gw = TestGateway::start(|c| {
        c.tls_cert_file = Some(ca.cert_file.clone());
        c.tls_key_file = Some(ca.key_file.clone());
        c.header_timeout_ms = 1_000;
    })
    .await;
    let https = client_trusting(&ca);
    let base = format!("https://localhost:{}", gw.addr.port());
    let topic = gw.topics.click.clone();

    let r = https.get(format!("{base}/api/v1/health/live")).send().await.expect("https GET");
    assert_eq!(r.status().as_u16(), 200);
    let r = https
        .post(format!("{base}/api/v1/events/{topic}"))
        .json(&event("tls-1", "user-1"))
        .send()
        .await
        .expect("https POST");
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    // By IP address too: the certificate names 127.0.0.1.
    let r = https.get(format!("https://{}/api/v1/health/live", gw.addr)).send().await;
    assert_eq!(r.expect("https GET by IP").status().as_u16(), 200);

    // No clear text on the HTTPS port.
    let plain = gw.http.get(format!("http://{}/api/v1/health/live", gw.addr)).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // A WebSocket stream over TLS (wss): upgraded, subscribed, then an event arrives.
    let tls = tls_connect(&ca, gw.addr).await;
    let url = format!("wss://localhost:{}/api/v1/stream/{topic}?from=latest", gw.addr.port());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tls).await.expect("wss upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    let hello = next_text(&mut ws).await;
    assert_eq!(hello["type"], "subscribed", "{hello}");
    let r = https
        .post(format!("{base}/api/v1/events/{topic}"))
        .json(&event("tls-2", "user-2"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let frame = next_text(&mut ws).await;
    assert_eq!(frame["event"]["event_id"], "tls-2", "{frame}");
    drop(ws);

    // The header deadline holds over TLS: a connection that sends no request is closed.
    let mut idle = tls_connect(&ca, gw.addr).await;
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await, "idle TLS connection kept");
    // And the handshake has the same deadline: a client that never says hello is closed.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "silent TCP kept");
    // A broken handshake does not stop the gateway.
    let mut garbage = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    assert!(closed_within(&mut garbage, Duration::from_secs(5)).await, "garbage kept");
    let r = https.get(format!("{base}/api/v1/health/live")).send().await.expect("still up");
    assert_eq!(r.status().as_u16(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_certificate_without_its_key_or_a_wrong_key_is_refused_at_start() {
    let ca = TestCa::new();
    let state = |tweak: &dyn Fn(&mut GatewayConfig)| {
        let mut config = GatewayConfig::default();
        tweak(&mut config);
        AppState::new(config, KafkaConfig::default(), tributary_core::Catalog::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = state(&|c| c.tls_cert_file = Some(ca.cert_file.clone())).expect_err("half");
    assert!(e.contains("[gateway] tls_cert_file and tls_key_file go together"), "{e}");
    let e = state(&|c| {
        c.tls_cert_file = Some(ca.cert_file.clone());
        c.tls_key_file = Some(ca.ca_key_file.clone());
    })
    .expect_err("a key of another certificate");
    assert!(e.contains("cannot serve HTTPS"), "{e}");
    let e = state(&|c| c.registry.ca_file = Some("/nonexistent/ca.pem".into())).expect_err("ca");
    assert!(e.contains("[gateway.registry]") && e.contains("/nonexistent/ca.pem"), "{e}");
    state(&|c| {
        c.tls_cert_file = Some(ca.cert_file.clone());
        c.tls_key_file = Some(ca.key_file.clone());
    })
    .expect("a certificate and its key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_through_an_https_registry_with_basic_auth_trusting_its_ca_only() {
    let (ca, other_ca) = (TestCa::new(), TestCa::new());
    let kafka = KafkaConfig {
        bootstrap_servers: tributary_test_support::bootstrap(),
        ..KafkaConfig::default()
    };
    let registry_url = start_registry_with(&kafka, |c| {
        c.tls_cert_file = Some(ca.cert_file.clone());
        c.tls_key_file = Some(ca.key_file.clone());
        c.auth_user = Some("gateway".into());
        c.auth_password = Some("s3cret-pass".into());
    })
    .await;
    assert!(registry_url.starts_with("https://"), "{registry_url}");
    let use_registry = |ca_file: &std::path::Path| {
        let ca_file = ca_file.to_owned();
        let url = registry_url.clone();
        move |c: &mut GatewayConfig| {
            c.registry.url = url;
            c.registry.ca_file = Some(ca_file);
            c.registry.user = Some("gateway".into());
            c.registry.password = Some("s3cret-pass".into());
        }
    };

    // Trusting the registry's CA: the gateway registers the topic's schema and writes with it.
    let gw = TestGateway::start_avro(use_registry(&ca.ca_file)).await;
    let topic = gw.topics.click.clone();
    let (status, body) = gw.post(&topic, &event("tls-avro-1", "user-1")).await;
    assert_eq!(status, 201, "{body}");
    let (status, latest) = gw.get(&format!("/api/v1/events/{topic}/latest?limit=1")).await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["events"][0]["event"]["event_id"], "tls-avro-1", "{latest}");
    assert!(latest["events"][0]["schema_id"].is_u64(), "decoded through the registry");
    gw.shutdown().await;

    // Trusting another CA: refused, and the answer says it is TLS.
    let gw = TestGateway::start_avro(use_registry(&other_ca.ca_file)).await;
    let (status, body) = gw.post(&gw.topics.click.clone(), &event("tls-avro-2", "u")).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("schema registry TLS failed"), "{body}");
    assert!(message.contains("UnknownIssuer"), "{body}");
    gw.shutdown().await;

    // Without a CA file the built-in roots alone are trusted: refused the same way.
    let config = RegistryClientConfig {
        url: registry_url.clone(),
        user: Some("gateway".into()),
        password: Some("s3cret-pass".into()),
        ..RegistryClientConfig::default()
    };
    let client = RegistryClient::from_config(&config).expect("client");
    match client.latest("any-value").await {
        Err(ClientError::Tls(m)) => assert!(m.contains("invalid peer certificate"), "{m}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

/// Not TLS, but the same gap: hyper-util's `auto` connection waited, without a deadline, for
/// a first byte before the header deadline began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let gw = TestGateway::start(|c| c.header_timeout_ms = 1_000).await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "silent connection kept");
    gw.shutdown().await;
}
