//! Decoding record values for readers: registry-framed Avro or Protobuf through the registry
//! (each schema fetched once), or plain JSON, into JSON.

use crate::client::{ClientError, RegistryClient};
use serde_json::Value;
use std::sync::Arc;

/// Why a value could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// The record is bad: dead-letter it.
    Bad(String),
    /// The registry could not be asked: try again later, do not dead-letter.
    Unavailable(String),
}

/// Decodes values: registry-framed Avro or Protobuf through the registry (each schema is
/// fetched once), or plain JSON.
#[derive(Debug)]
pub struct Decoder {
    client: Arc<RegistryClient>,
    runtime: tokio::runtime::Handle,
}

impl Decoder {
    pub fn new(client: Arc<RegistryClient>, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }

    /// Decodes `bytes` (called from a thread outside the async runtime).
    pub fn decode(&self, bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
        self.decode_with_id(bytes).map(|(_, v)| v)
    }

    /// Like [`Decoder::decode`], also giving the schema id of a registry-framed value.
    pub fn decode_with_id(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<u32>, Value), DecodeError> {
        let bytes = bytes.ok_or_else(|| DecodeError::Bad("the record has no value".into()))?;
        let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes).trim_ascii_start();
        match bytes.first() {
            Some(0) => self.decode_framed(bytes).map(|(id, v)| (Some(id), v)),
            _ if text.first() == Some(&b'{') => serde_json::from_slice(text)
                .map(|v| (None, v))
                .map_err(|e| DecodeError::Bad(format!("not valid JSON: {e}"))),
            _ => Err(DecodeError::Bad(
                "neither a registry-framed value (magic byte 0) nor a JSON object".into(),
            )),
        }
    }

    /// Like [`Decoder::decode_with_id`], appending the value's JSON text to `out` instead of
    /// returning it (see [`crate::json_text`]; on an error `out` may hold part of it).
    pub fn decode_to_text(
        &self,
        bytes: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<Option<u32>, DecodeError> {
        let Some(framed @ [0, ..]) = bytes else {
            let (id, value) = self.decode_with_id(bytes)?;
            serde_json::to_writer(out, &value).map_err(|e| DecodeError::Bad(e.to_string()))?;
            return Ok(id);
        };
        let (id, body) = crate::unframe(framed).map_err(|e| DecodeError::Bad(e.to_string()))?;
        let schema = self.schema(id)?;
        let written = match (schema.proto(), schema.avro()) {
            (None, Some(avro)) => crate::json_text::decode_to_json_text(avro, body, out),
            _ => decode_body(id, &schema, body)
                .and_then(|v| serde_json::to_writer(out, &v).map_err(|e| e.to_string())),
        };
        written.map(|()| Some(id)).map_err(|e| DecodeError::Bad(format!("schema id {id}: {e}")))
    }

    /// The schema `id` from the registry (once: the client keeps it).
    fn schema(&self, id: u32) -> Result<Arc<crate::ParsedSchema>, DecodeError> {
        if let Some(s) = self.client.cached(id) {
            return Ok(s);
        }
        match self.runtime.block_on(self.client.schema(id)) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                Err(DecodeError::Bad(format!("schema id {id} is not in the schema registry")))
            }
            // The schema itself cannot be used: no reader of this record can do better.
            Err(e @ ClientError::Invalid(_)) => {
                Err(DecodeError::Bad(format!("schema id {id}: {e}")))
            }
            // Unreachable, or refusing us (authentication, for example): not the record's
            // fault, so it must not become a dead letter.
            Err(e) => Err(DecodeError::Unavailable(e.to_string())),
        }
    }

    fn decode_framed(&self, bytes: &[u8]) -> Result<(u32, Value), DecodeError> {
        let (id, body) = crate::unframe(bytes).map_err(|e| DecodeError::Bad(e.to_string()))?;
        let schema = self.schema(id)?;
        decode_body(id, &schema, body)
            .map(|v| (id, v))
            .map_err(|e| DecodeError::Bad(format!("schema id {id}: {e}")))
    }
}

/// The JSON of `body`, a value written with schema `id`.
fn decode_body(id: u32, schema: &crate::ParsedSchema, body: &[u8]) -> Result<Value, String> {
    match (schema.proto(), schema.avro()) {
        (Some(proto), _) => proto.decode_to_json(body).map_err(|e| e.to_string()),
        (None, Some(avro)) => crate::codec::decode_to_json(avro, body),
        (None, None) => Err(format!("schema {id} is neither Avro nor Protobuf")),
    }
}
