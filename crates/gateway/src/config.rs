//! Gateway settings. Every field has a default, so an empty `[gateway]` section works.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use tributary_core::Secret;
use tributary_schema::client::RegistryClientConfig;

/// Settings of `tributary gateway` (the `[gateway]` section of `tributary.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Largest accepted body of a single-event POST, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Largest accepted body of a batch POST, in bytes (413 above it).
    pub max_batch_body_bytes: usize,
    /// Most events accepted in one batch (413 above it).
    pub max_batch_events: usize,
    /// Longest wait for Kafka to acknowledge a write before answering 503, in milliseconds.
    /// The record is not given up then: it keeps its place until `delivery_timeout_ms`, and a
    /// retry with the same `event_id` gets its position once Kafka acknowledges it.
    pub produce_timeout_ms: u64,
    /// How long the producer keeps trying to deliver a record before giving it up (librdkafka
    /// `message.timeout.ms`, the Java client's `delivery.timeout.ms`), in milliseconds. Must be
    /// greater than `produce_timeout_ms`: a record given up while its request may have reached
    /// the broker can be written again by the idempotent producer, so it should outlast a
    /// leader failover rather than the HTTP deadline.
    pub delivery_timeout_ms: u64,
    /// `Retry-After` sent with 503 answers, in seconds.
    pub retry_after_secs: u64,
    /// How long an `event_id` is remembered per topic so a retry returns the original
    /// partition and offset instead of writing again, in seconds; at most 24 days.
    pub dedupe_window_secs: u64,
    /// Most `event_id`s remembered at once; the oldest are forgotten first.
    pub dedupe_max_entries: usize,
    /// `limit` used by `GET .../latest` when none is given.
    pub latest_default_limit: usize,
    /// Largest `limit` accepted by `GET .../latest`.
    pub latest_max_limit: usize,
    /// Longest time `GET .../latest` spends reading Kafka, in milliseconds.
    pub latest_timeout_ms: u64,
    /// A WebSocket client that has not taken a frame for this long is told it is too slow and
    /// disconnected, in milliseconds.
    pub ws_send_timeout_ms: u64,
    /// Kafka prefetch per WebSocket client, in KiB (bounds the memory one client can hold).
    pub ws_prefetch_kbytes: u32,
    /// Interval between WebSocket pings that keep idle connections open, in seconds.
    pub ws_ping_interval_secs: u64,
    /// Most WebSocket streams open on this gateway at once; beyond it a new stream is answered
    /// `503 too_many_streams` before the upgrade.
    pub ws_max_streams: usize,
    /// Most WebSocket streams one principal (the token's `sub`; the client's IP address when
    /// authentication is off) has open at once; beyond it
    /// `429 too_many_streams_for_principal` before the upgrade.
    pub ws_max_streams_per_principal: usize,
    /// Largest message (and frame) a stream client may send, in bytes; a larger one ends the
    /// stream with close code 1009.
    pub ws_max_client_message_bytes: usize,
    /// A stream whose client sends nothing, not even a pong, for this long is closed with code
    /// 4408, in seconds.
    pub ws_idle_timeout_secs: u64,
    /// Records queued per live stream between its topic's shared reader and the client; a
    /// client that falls this far behind is disconnected with `slow_consumer`.
    pub ws_subscriber_buffer: usize,
    /// A topic's shared stream reader with no streams for this long is closed, in seconds.
    pub ws_reader_idle_secs: u64,
    /// Most Kafka readers open at once for streams catching up (`from=earliest`, a resume
    /// token) and for `GET .../latest`; the others wait.
    pub reader_pool_size: usize,
    /// Longest time a health check waits for the broker, in milliseconds.
    pub health_timeout_ms: u64,
    /// Longest time to finish in-flight requests after SIGTERM, in seconds.
    pub shutdown_grace_secs: u64,
    /// A client must send a request's whole header within this time, counted from the end of
    /// the previous request on the connection (so an idle keep-alive connection is closed
    /// after it too), or the connection is closed, in milliseconds. Behind a load balancer,
    /// set it above the balancer's idle timeout (the AWS stack: 65,000 for the ALB's 60 s).
    pub header_timeout_ms: u64,
    /// A client must send a request's whole body within this time after its header, or it is
    /// answered 408 `body_timeout`, in milliseconds.
    pub body_timeout_ms: u64,
    /// Most API requests worked on at once (a WebSocket stream counts until it is upgraded);
    /// beyond it a request is answered `503 overloaded` at once. Health, the OpenAPI document
    /// and `/metrics` are never refused.
    pub max_in_flight_requests: usize,
    /// The schema registry (Confluent API) holding the schemas of `avro` and `protobuf`
    /// topics (`[gateway.registry]`).
    pub registry: RegistryClientConfig,
    /// How often the latest schema of a topic's subject is looked up again, in seconds; new
    /// versions registered meanwhile are used from then on.
    pub schema_refresh_secs: u64,
    /// HMAC secret (at least 32 bytes) that verifies the API's JWTs (HS256, HS384, HS512).
    /// Setting it, or `jwt_public_key`, requires a bearer token on the event, stream and topic
    /// endpoints; prefer `TRIBUTARY_GATEWAY__JWT_SECRET`. Shown as `***`.
    pub jwt_secret: Option<Secret>,
    /// Public key in PEM (RSA, EC P-256/P-384 or Ed25519), or the path of a file holding it,
    /// that verifies the API's JWTs; the other way to turn authentication on. Needs
    /// `jwt_issuer` and `jwt_audience`.
    pub jwt_public_key: Option<String>,
    /// The `iss` claim tokens must carry, when set (a token without one is refused).
    pub jwt_issuer: Option<String>,
    /// The `aud` claim tokens must carry, when set (a token without one is refused).
    pub jwt_audience: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// PEM file with the certificate chain (the gateway's certificate first) to serve HTTPS
    /// and WSS with, instead of plain HTTP; needs `tls_key_file`. The TLS handshake must
    /// finish within `header_timeout_ms`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1); needs
    /// `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Most records waiting in the producer's queue for Kafka (librdkafka
    /// `queue.buffering.max.messages`); a write that finds it full is answered `503 queue_full`
    /// at once.
    pub producer_queue_max_messages: u32,
    /// Most bytes of record values and keys waiting in the producer's queue, in KiB (librdkafka
    /// `queue.buffering.max.kbytes`); a write that finds it full is answered `503 queue_full`
    /// at once.
    pub producer_queue_max_kbytes: u32,
    /// Per-client rate limits (`[gateway.rate_limit]`); off until a route class has a quota.
    pub rate_limit: RateLimitConfig,
}

/// Per-client rate limits: a token bucket per client (the JWT `sub` when authentication is on,
/// else the client's address) and route class. A class without a quota is not limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Writes (`POST .../events/{topic}` and `.../batch`) per client.
    pub writes: Option<RateQuota>,
    /// Reads (`GET .../latest`, `GET /api/v1/topics`, `GET /api/v1/metrics`) per client.
    pub reads: Option<RateQuota>,
    /// WebSocket stream opens per client.
    pub streams: Option<RateQuota>,
    /// Most buckets (one per client and class) held at once; clients beyond it share one
    /// bucket per class until idle buckets are dropped, so memory stays bounded whatever
    /// number of clients appears.
    pub max_clients: usize,
    /// Take the client's address from the last `X-Forwarded-For` entry (the one the proxy in
    /// front appended) instead of the connection's peer. Only behind a proxy that appends it
    /// and through which alone the gateway can be reached: otherwise any client names itself.
    pub trust_forwarded_for: bool,
}

/// A quota: `requests` per `window_secs`, refilled continuously (a token bucket holding at
/// most `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    /// Requests allowed per window, and the most allowed in a burst.
    pub requests: u32,
    /// The window, in seconds.
    #[serde(default = "default_window_secs")]
    pub window_secs: u32,
}

fn default_window_secs() -> u32 {
    60
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            writes: None,
            reads: None,
            streams: None,
            max_clients: 100_000,
            trust_forwarded_for: false,
        }
    }
}

/// Longest dedupe window: its times are 32-bit milliseconds (see `dedupe`).
pub const MAX_DEDUPE_WINDOW_SECS: u64 = 24 * 86_400;

impl GatewayConfig {
    /// Settings that cannot work together, named.
    pub fn validate(&self) -> Result<(), String> {
        if self.delivery_timeout_ms <= self.produce_timeout_ms {
            return Err(format!(
                "[gateway] delivery_timeout_ms ({}) must be greater than produce_timeout_ms ({}): \
                 a record must outlive the answer to its request, so a retry finds its outcome",
                self.delivery_timeout_ms, self.produce_timeout_ms
            ));
        }
        if self.dedupe_window_secs > MAX_DEDUPE_WINDOW_SECS {
            return Err(format!(
                "[gateway] dedupe_window_secs ({}) must be at most {MAX_DEDUPE_WINDOW_SECS} (24 days): \
                 the window keeps its times in 32-bit milliseconds",
                self.dedupe_window_secs
            ));
        }
        Ok(())
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_batch_body_bytes: 16 * 1024 * 1024,
            max_batch_events: 10_000,
            produce_timeout_ms: 5_000,
            delivery_timeout_ms: 120_000,
            retry_after_secs: 2,
            dedupe_window_secs: 600,
            dedupe_max_entries: 1_000_000,
            latest_default_limit: 20,
            latest_max_limit: 1_000,
            latest_timeout_ms: 3_000,
            ws_send_timeout_ms: 10_000,
            ws_prefetch_kbytes: 1024,
            ws_ping_interval_secs: 30,
            ws_max_streams: 2_000,
            ws_max_streams_per_principal: 100,
            ws_max_client_message_bytes: 4_096,
            ws_idle_timeout_secs: 90,
            ws_subscriber_buffer: 1_024,
            ws_reader_idle_secs: 30,
            reader_pool_size: 8,
            health_timeout_ms: 2_000,
            header_timeout_ms: 30_000,
            body_timeout_ms: 30_000,
            max_in_flight_requests: 1024,
            shutdown_grace_secs: 30,
            registry: RegistryClientConfig::with_timeout_ms(2_000),
            schema_refresh_secs: 30,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            tls_cert_file: None,
            tls_key_file: None,
            producer_queue_max_messages: 100_000,
            producer_queue_max_kbytes: 64 * 1024,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedupe_window_is_at_most_24_days() {
        let ok = GatewayConfig { dedupe_window_secs: 24 * 86_400, ..GatewayConfig::default() };
        assert!(ok.validate().is_ok());
        let bad = GatewayConfig { dedupe_window_secs: 25 * 86_400, ..GatewayConfig::default() };
        let err = bad.validate().expect_err("over 24 days");
        assert!(err.contains("dedupe_window_secs (2160000)"), "{err}");
    }

    #[test]
    fn the_delivery_timeout_must_outlast_the_write_deadline() {
        let ok = GatewayConfig::default();
        assert!(ok.validate().is_ok());
        assert!(ok.delivery_timeout_ms > ok.produce_timeout_ms);
        let bad = GatewayConfig { delivery_timeout_ms: 5_000, ..GatewayConfig::default() };
        let err = bad.validate().expect_err("equal to produce_timeout_ms");
        assert!(err.contains("delivery_timeout_ms (5000)"), "{err}");
        assert!(err.contains("produce_timeout_ms (5000)"), "{err}");
    }
}
