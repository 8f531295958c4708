//! Reading a JSON request body with the API's own errors: 415 for a wrong content type, 413
//! over the limit (decided from `Content-Length` before reading when it is given, else as soon
//! as the limit is passed), 408 when it does not arrive in time, 400 for malformed JSON.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use std::time::Duration;

/// Whether `content-type` is JSON (`application/json`, with or without parameters, or a
/// `+json` suffix type).
fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("none".to_owned()));
    };
    let ct = ct.to_str().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().as_bytes();
    let starts = |p: &[u8]| essence.len() >= p.len() && essence[..p.len()].eq_ignore_ascii_case(p);
    let ends = |p: &[u8]| {
        essence.len() >= p.len() && essence[essence.len() - p.len()..].eq_ignore_ascii_case(p)
    };
    if essence.eq_ignore_ascii_case(b"application/json")
        || (starts(b"application/") && ends(b"+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(ct.to_owned()))
    }
}

/// Checks the content type and reads at most `limit` bytes of body within `timeout`.
///
/// A body declared over the limit is refused before any of it is read, and one without a
/// length as soon as it passes the limit: the answer says `Connection: close` and the rest is
/// never read, so an oversize or endless upload costs the gateway at most `limit` bytes.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    is_json(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let limit_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let read = read_at_most(body, limit, declared);
    tokio::pin!(read);
    // A small body has usually arrived with its header: then no timer is set for it.
    if let std::task::Poll::Ready(bytes) = futures::poll!(read.as_mut()) {
        return bytes;
    }
    tokio::time::timeout(timeout, read).await.map_err(|_| ApiError::BodyTimeout { limit_ms })?
}

/// The body, or 413 as soon as it passes `limit` bytes.
async fn read_at_most(body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest {
            code: "body_read_failed",
            message: format!("reading the request body failed: {e}"),
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Parses JSON, answering 400 with the parser's position on failure.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ct: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).expect("header"));
        }
        h
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(Some("application/json"))).is_ok());
        assert!(is_json(&headers(Some("Application/JSON; charset=utf-8"))).is_ok());
        assert!(is_json(&headers(Some("application/vnd.api+json"))).is_ok());
        assert!(is_json(&headers(Some("APPLICATION/Problem+JSON"))).is_ok());
        assert!(is_json(&headers(Some("text/plain"))).is_err());
        assert!(is_json(&headers(Some("text/json"))).is_err());
        assert!(is_json(&headers(Some("application/jsonx"))).is_err());
        assert!(is_json(&headers(None)).is_err());
    }

    #[tokio::test]
    async fn limits_apply_with_and_without_content_length() {
        let h = headers(Some("application/json"));
        let t = Duration::from_secs(5);
        let err =
            read_json_body(&h, Body::from(vec![b' '; 11]), 10, t).await.expect_err("too large");
        assert!(matches!(err, ApiError::PayloadTooLarge { limit: 10 }));
        let ok = read_json_body(&h, Body::from("{}"), 10, t).await.expect("small body");
        assert_eq!(&ok[..], b"{}");
    }
}
