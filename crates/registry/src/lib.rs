//! Tributary's schema registry (`tributary registry`): the Confluent Schema Registry REST API,
//! so Confluent serializers, Kafka Connect and Flink can use it as they use Confluent's, with
//! the compacted single-partition topic `_schemas` as its only storage (no database, no files).
//!
//! Guarantees: any number of instances can run against the same topic, because each applies the
//! log in the same order with the same rules ([`state`]) and claims ids and versions by writing
//! them to the log ([`store`]), so no two instances hand out one id for different schemas; a
//! write returns once this instance has applied it (read-your-writes); a subject's compatibility
//! level is checked before a new version is accepted; every error is Confluent's JSON body and
//! code ([`error`]).
//!
//! Start with [`state`] (the rules), then [`store`] (the topic), then [`api`] (the REST API),
//! [`levels`] (compatibility checks and levels) and
//! [`router`] below. Schema parsing and the compatibility rules themselves are codec matters and
//! live in `tributary_schema::compat`.

pub mod api;
pub mod error;
pub mod levels;
pub mod state;
pub mod store;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tributary_kafka::{KafkaConfig, KafkaError};
use tributary_ops::tls::{TlsAcceptor, TlsListener};

pub use error::RegistryError;

/// Settings of `tributary registry` (the `[registry]` section of `tributary.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Address the registry listens on.
    pub listen: SocketAddr,
    /// The compacted topic that stores every schema, version and setting.
    pub topic: String,
    /// Replication factor of the topic when the registry creates it; unset, the cluster's
    /// `default.replication.factor` (3 on the local cluster and on a three-zone MSK cluster).
    pub replication_factor: Option<i16>,
    /// Longest wait for Kafka on a write or a read-your-writes catch-up, in milliseconds.
    pub kafka_timeout_ms: u64,
    /// User name clients must present with HTTP basic auth; no auth when unset.
    pub auth_user: Option<String>,
    /// Password for `auth_user`, required (not empty) when `auth_user` is set; prefer
    /// `TRIBUTARY_REGISTRY__AUTH_PASSWORD` to the file. Shown as `***`.
    pub auth_password: Option<tributary_core::Secret>,
    /// Longest schema text accepted, in bytes (413 above it).
    pub max_schema_bytes: usize,
    /// Most subjects kept, soft-deleted ones included (422 for a new subject beyond it).
    pub max_subjects: usize,
    /// Most versions kept per subject, soft-deleted ones included (422 beyond it).
    pub max_versions_per_subject: usize,
    /// PEM file with the certificate chain (the registry's certificate first) to serve HTTPS
    /// with, instead of plain HTTP; needs `tls_key_file`. Clients trust it through their
    /// `ca_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1); needs
    /// `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            topic: "_schemas".to_owned(),
            replication_factor: None,
            kafka_timeout_ms: 10_000,
            auth_user: None,
            auth_password: None,
            max_schema_bytes: 256 * 1024,
            max_subjects: 10_000,
            max_versions_per_subject: 1_000,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Why a registry cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting that cannot work.
    #[error("[registry] {0}")]
    Config(String),
    /// The schema topic cannot be opened.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// The limits a registration is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_schema_bytes: usize,
    pub(crate) max_subjects: usize,
    pub(crate) max_versions_per_subject: usize,
}

/// One registry instance.
pub struct Registry {
    store: store::Store,
    /// One registration or delete at a time per instance; instances race through the log.
    write_lock: tokio::sync::Mutex<()>,
    /// The digest of `Basic <base64(user:password)>` when auth is on.
    expected_auth: Option<[u8; 32]>,
    limits: Limits,
    /// The certificate HTTPS is served with; `None` serves plain HTTP.
    tls: Option<TlsAcceptor>,
}

impl Registry {
    /// Opens the schema topic and reads it to the end.
    pub async fn open(
        config: &RegistryConfig,
        kafka: &KafkaConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let expected_auth = match &config.auth_user {
            None => None,
            Some(user) => {
                let password = config.auth_password.as_ref().map_or("", |p| p.expose());
                if password.is_empty() {
                    return Err(OpenError::Config(
                        "auth_user is set but auth_password is empty: set a password \
                         (TRIBUTARY_REGISTRY__AUTH_PASSWORD) or unset auth_user"
                            .into(),
                    ));
                }
                let pair = format!("{user}:{password}");
                let header =
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
                Some(tributary_core::secret::digest(header.as_bytes()))
            }
        };
        let tls = TlsAcceptor::from_files(
            config.tls_cert_file.as_deref(),
            config.tls_key_file.as_deref(),
            TLS_HANDSHAKE_TIMEOUT,
        )
        .map_err(|e| OpenError::Config(e.to_string()))?;
        let limits = Limits {
            max_schema_bytes: config.max_schema_bytes,
            max_subjects: config.max_subjects,
            max_versions_per_subject: config.max_versions_per_subject,
        };
        let timeout = Duration::from_millis(config.kafka_timeout_ms);
        let store =
            store::Store::open(kafka, &config.topic, config.replication_factor, timeout).await?;
        let write_lock = tokio::sync::Mutex::new(());
        Ok(Arc::new(Self { store, write_lock, expected_auth, limits, tls }))
    }

    /// Whether the registry serves HTTPS (`tls_cert_file` and `tls_key_file` are set).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Longest time a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn authenticate(
    axum::extract::State(registry): axum::extract::State<Arc<Registry>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &registry.expected_auth {
        let given = req.headers().get(header::AUTHORIZATION).map_or(&b""[..], |v| v.as_bytes());
        if !tributary_core::secret::same_digest(given, expected) {
            return RegistryError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn fallback(uri: axum::http::Uri) -> RegistryError {
    RegistryError::not_found_route(uri.path())
}

/// The registry's routes.
pub fn router(registry: Arc<Registry>) -> Router {
    use api::*;
    use levels::*;
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(raw_version))
        .route("/compatibility/subjects/{subject}/versions", post(compatibility_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(compatibility_version))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config).delete(delete_subject_config),
        )
        .route("/mode", get(mode))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&registry), authenticate))
        .with_state(registry)
}

/// Serves the registry on `listener` (HTTPS when it has a certificate) until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match registry.tls.clone() {
        Some(tls) => {
            let listener = TlsListener::new(listener, tls);
            axum::serve(listener, router(registry)).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, router(registry)).with_graceful_shutdown(shutdown).await,
    }
}
