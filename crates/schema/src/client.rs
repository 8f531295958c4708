//! A client of the Confluent Schema Registry API (Tributary's own registry or any compatible
//! one), with the id → schema cache every serializer needs: ids never change meaning, so a
//! schema fetched once is kept.

use crate::compat::{ParsedSchema, SchemaType};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
}

/// A schema registry client.
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
    by_id: RwLock<HashMap<u32, Arc<ParsedSchema>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry at `url` (for example `http://127.0.0.1:8081`).
    pub fn new(url: &str, auth: Option<(String, String)>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap_or_default();
        Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            auth,
            by_id: RwLock::new(HashMap::new()),
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Option<Value>, ClientError> {
        let req = match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        let resp = req.send().await.map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ClientError::Unavailable(format!("unreadable answer: {e}")))?;
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
