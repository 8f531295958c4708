//! A client of the Confluent Schema Registry API (Tributary's own registry or any compatible
//! one), with the id → schema cache every serializer needs: ids never change meaning, so a
//! schema fetched once is kept.
//!
//! An `https` registry is verified against the webpki roots (Mozilla's list, built in; not
//! the system's store) plus the certificates of `ca_file`; a failed verification is
//! [`ClientError::Tls`], named as such.
//!
//! Connections are kept alive between calls, for at most [`POOL_IDLE`]: below the idle
//! timeout of the servers a registry sits behind (Jetty's 30 s in Confluent's, a load
//! balancer's 60 s), so the client drops an idle connection before the server closes it under
//! a request. A request that still meets a connection closed under it (sent, no answer, the
//! connection gone) is sent once more on a new one: every call of this client is idempotent
//! (a lookup, or registering a schema, which answers the same id again).

use crate::compat::{ParsedSchema, SchemaType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tributary_core::Secret;

/// Longest time an idle connection to the registry is kept for the next call.
pub const POOL_IDLE: Duration = Duration::from_secs(15);

/// How a service reaches the schema registry: the `[gateway.registry]`,
/// `[processor.registry]` and `[sink.registry]` tables of `tributary.toml`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryClientConfig {
    /// Base URL of the registry (Confluent API), for example `http://127.0.0.1:8081`. A
    /// password in it (`https://user:password@host`) is shown as `***`; prefer `password`.
    #[serde(serialize_with = "serialize_url")]
    pub url: String,
    /// Basic-auth user, if the registry requires one.
    pub user: Option<String>,
    /// Basic-auth password for `user`; prefer the environment
    /// (`TRIBUTARY_GATEWAY__REGISTRY__PASSWORD`, ...). Shown as `***`.
    pub password: Option<Secret>,
    /// Longest wait for one registry call, in milliseconds.
    pub timeout_ms: u64,
    /// PEM file of CA certificates trusted, besides the built-in webpki roots, to verify an
    /// `https` registry (a private CA, or the registry's self-signed certificate).
    pub ca_file: Option<PathBuf>,
}

impl Default for RegistryClientConfig {
    fn default() -> Self {
        Self::with_timeout_ms(2_000)
    }
}

impl RegistryClientConfig {
    /// The local registry, without auth, with calls bounded by `timeout_ms`.
    pub fn with_timeout_ms(timeout_ms: u64) -> Self {
        Self {
            url: "http://127.0.0.1:8081".to_owned(),
            user: None,
            password: None,
            timeout_ms,
            ca_file: None,
        }
    }
}

/// Why a registry call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached or failed (retry later).
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry answered with an error (Confluent code and message).
    #[error("schema registry refused: {message} (error {code})")]
    Refused { code: i64, message: String },
    /// The registry sent a schema this process cannot parse.
    #[error("schema registry sent an unusable schema: {0}")]
    Invalid(String),
    /// TLS with the registry failed: most often its certificate is not signed by a trusted
    /// CA (`ca_file`) or does not name the URL's host (retry once fixed).
    #[error("schema registry TLS failed: {0}")]
    Tls(String),
    /// The client's settings cannot be used (an unreadable `ca_file`, for example).
    #[error("schema registry client: {0}")]
    Config(String),
}

/// A schema registry client.
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
    /// Longest wait for one call, to name it when it passes.
    timeout_ms: u64,
    by_id: RwLock<HashMap<u32, Arc<ParsedSchema>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client as `config` says; an error when `ca_file` cannot be read or holds no
    /// certificate.
    pub fn from_config(config: &RegistryClientConfig) -> Result<Self, ClientError> {
        let auth = config.user.clone().map(|user| {
            (user, config.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default())
        });
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .pool_idle_timeout(POOL_IDLE);
        if let Some(path) = &config.ca_file {
            for cert in ca_certificates(path)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| ClientError::Config(error_chain(&e)))?;
        Ok(Self {
            base: config.url.trim_end_matches('/').to_owned(),
            http,
            auth,
            timeout_ms: config.timeout_ms,
            by_id: RwLock::new(HashMap::new()),
        })
    }

    /// Sends `req`, once more on a new connection when the one it went out on was closed
    /// under it (see the module's header).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let again = req.try_clone();
        let first = match req.send().await {
            Err(e) if closed_under(&e) => e,
            sent => return sent.map_err(|e| self.failure(e)),
        };
        tracing::debug!(error = %describe_ref(&first), "schema registry connection closed under a request; sending it again");
        match again {
            Some(req) => req.send().await.map_err(|e| self.failure(e)),
            None => Err(self.failure(first)),
        }
    }

    /// What a failed send means, without the URL: it reaches logs and the gateway's 503
    /// answers, and the URL names an internal host (and may carry a password).
    fn failure(&self, e: reqwest::Error) -> ClientError {
        if let Some(tls) = tls_failure(&e) {
            return ClientError::Tls(format!(
                "{tls} (verifying the schema registry's certificate; trusted: ca_file and the webpki roots)"
            ));
        }
        if e.is_timeout() {
            return ClientError::Unavailable(format!("no answer within {} ms", self.timeout_ms));
        }
        ClientError::Unavailable(describe(e))
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Option<Value>, ClientError> {
        let req = match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        let resp = self.send(req).await?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ClientError::Unavailable(format!("unreadable answer: {}", describe(e))))?;
        if status.is_success() {
            return Ok(Some(body));
        }
        let code = body["error_code"].as_i64().unwrap_or(i64::from(status.as_u16()));
        if status.is_server_error() {
            return Err(ClientError::Unavailable(
                body["message"].as_str().unwrap_or("server error").to_owned(),
            ));
        }
        // 40401 subject, 40402 version, 40403 schema not found: "nothing there".
        if matches!(code, 40401..=40403) {
            return Ok(None);
        }
        Err(ClientError::Refused {
            code,
            message: body["message"].as_str().unwrap_or_default().to_owned(),
        })
    }

    fn parse(schema_type: &Value, schema: &Value) -> Result<ParsedSchema, ClientError> {
        let t = schema_type.as_str().and_then(SchemaType::parse).unwrap_or(SchemaType::Avro);
        let text = schema.as_str().ok_or_else(|| ClientError::Invalid("no schema text".into()))?;
        ParsedSchema::parse(t, text).map_err(|e| ClientError::Invalid(e.0))
    }

    /// The latest version of `subject`: its id and schema, or `None` if the subject has none.
    pub async fn latest(
        &self,
        subject: &str,
    ) -> Result<Option<(u32, Arc<ParsedSchema>)>, ClientError> {
        let url = format!("{}/subjects/{subject}/versions/latest", self.base);
        let Some(v) = self.call(self.http.get(url)).await? else { return Ok(None) };
        let id = v["id"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| ClientError::Invalid("no id".into()))?;
        let parsed = Arc::new(Self::parse(&v["schemaType"], &v["schema"])?);
        self.remember(id, &parsed);
        Ok(Some((id, parsed)))
    }

    /// Registers `schema` under `subject` (idempotent) and returns its id.
    pub async fn register(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Result<u32, ClientError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = json!({"schema": schema, "schemaType": schema_type.as_str()});
        let req = self
            .http
            .post(url)
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
        let v = self.call(req).await?.ok_or_else(|| ClientError::Refused {
            code: 40401,
            message: "subject not found".into(),
        })?;
        v["id"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| ClientError::Invalid("no id".into()))
    }

    /// The schema with `id`, from the cache or the registry.
    pub async fn schema(&self, id: u32) -> Result<Option<Arc<ParsedSchema>>, ClientError> {
        if let Some(s) = self.cached(id) {
            return Ok(Some(s));
        }
        let Some(v) = self.call(self.http.get(format!("{}/schemas/ids/{id}", self.base))).await?
        else {
            return Ok(None);
        };
        let parsed = Arc::new(Self::parse(&v["schemaType"], &v["schema"])?);
        self.remember(id, &parsed);
        Ok(Some(parsed))
    }

    /// The schema with `id` if it is cached.
    pub fn cached(&self, id: u32) -> Option<Arc<ParsedSchema>> {
        self.by_id.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }

    fn remember(&self, id: u32, parsed: &Arc<ParsedSchema>) {
        self.by_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Arc::clone(parsed));
    }
}

/// The certificates of the PEM file at `path`, at least one.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let what =
        |reason: String| ClientError::Config(format!("ca_file {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| what(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| what(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(what("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The rustls error somewhere in `err`'s causes, as text: a TLS failure, not an outage.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An `io::Error`'s source skips the error it wraps (hyper-rustls wraps tokio-rustls'
        // `io::Error`, which wraps rustls' error): step into the wrapped error instead.
        cause = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(wrapped) => Some(wrapped),
            None => e.source(),
        };
    }
    None
}

/// `err` and its causes, joined with `: ` (reqwest's own text is only "error sending request").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// `url` with the password of its userinfo (`https://user:password@host`) shown as `***`.
pub fn redacted_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else { return url.to_owned() };
    match url[start..at].split_once(':') {
        Some((user, _)) => {
            format!("{}{user}:{}{}", &url[..start], tributary_core::secret::REDACTED, &url[at..])
        }
        None => url.to_owned(),
    }
}

/// A request's error and its causes, without the URL.
fn describe(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

fn describe_ref(e: &reqwest::Error) -> String {
    let mut text = error_chain(e);
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    text
}

/// Whether `e` says the connection a request went out on was closed before an answer came
/// (a kept-alive connection the server closed at that moment), as opposed to a registry that
/// cannot be reached (refused, timed out) or a TLS failure.
fn closed_under(e: &reqwest::Error) -> bool {
    if e.is_timeout() || e.is_connect() || !e.is_request() {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(io.kind(), K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redacted_url(url))
}

impl std::fmt::Debug for RegistryClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClientConfig")
            .field("url", &redacted_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_show_neither_the_registry_url_nor_its_password() {
        // Nothing listens on port 9 of loopback: the call fails at once. The error reaches logs
        // and the gateway's 503 answers, which anyone may read.
        let mut config = RegistryClientConfig::with_timeout_ms(2_000);
        config.url = "http://alice:s3cret-pw@127.0.0.1:9".to_owned();
        let client = RegistryClient::from_config(&config).expect("a client");
        let err = client.schema(1).await.expect_err("nothing listens").to_string();
        assert!(err.starts_with("schema registry unavailable"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert!(!err.contains("127.0.0.1:9"), "{err}");
        assert!(err.contains("refused"), "the cause stays: {err}");
    }

    #[test]
    fn a_url_shows_without_its_password() {
        let mut c = RegistryClientConfig::with_timeout_ms(1);
        c.url = "https://alice:s3cret-pw@r.example:8081/base".to_owned();
        let shown = format!("{c:?} {}", serde_json::to_string(&c).expect("json"));
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("https://alice:***@r.example:8081/base"), "{shown}");
        assert_eq!(redacted_url("http://r:8081/a@b"), "http://r:8081/a@b", "an @ in the path");
        assert_eq!(redacted_url("http://u@r:1"), "http://u@r:1", "a user without a password");
    }

    #[test]
    fn the_client_table_reads_and_never_shows_its_password() {
        let c: RegistryClientConfig = serde_json::from_value(json!({
            "url": "https://r:8081", "user": "u", "password": 7
        }))
        .expect("config");
        assert_eq!(c.url, "https://r:8081");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("7"));
        assert_eq!(c.timeout_ms, 2_000, "default");
        assert_eq!(serde_json::to_value(&c).expect("json")["password"], "***");
        assert!(!format!("{c:?}").contains("\"7\""));
        let unknown = serde_json::from_value::<RegistryClientConfig>(json!({"uri": "x"}));
        assert!(unknown.expect_err("unknown key").to_string().contains("uri"));
        assert_eq!(RegistryClientConfig::with_timeout_ms(10_000).timeout_ms, 10_000);
        assert_eq!(c.ca_file, None, "the built-in roots alone by default");
    }

    #[test]
    fn an_unusable_ca_file_is_refused_when_the_client_is_made() {
        let mut c = RegistryClientConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RegistryClientConfig::default()
        };
        let e = RegistryClient::from_config(&c).expect_err("missing file");
        assert!(e.to_string().contains("ca_file /nonexistent/ca.pem"), "{e}");
        let path = std::env::temp_dir().join(format!("tributary-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "no certificate here\n").expect("write");
        c.ca_file = Some(path.clone());
        let e = RegistryClient::from_config(&c).expect_err("no certificate");
        let _ = std::fs::remove_file(&path);
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        c.ca_file = None;
        assert!(RegistryClient::from_config(&c).is_ok());
    }
}
