//! Reading a JSON request body with the API's own errors: 415 for a wrong content type, 413
//! over the limit (decided from `Content-Length` before reading when it is given), 400 for
//! malformed JSON.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};

/// Whether `content-type` is JSON (`application/json`, with or without parameters, or a
/// `+json` suffix type).
fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("none".to_owned()));
    };
    let ct = ct.to_str().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(ct.to_owned()))
    }
}

/// Checks the content type and reads at most `limit` bytes of body.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    is_json(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes fails on the limit or on a broken connection; tell them apart by source.
        let text = e.to_string();
        if std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || text.contains("length limit")
        {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest {
                code: "body_read_failed",
                message: format!("reading the request body failed: {text}"),
            }
        }
    })
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
        assert!(is_json(&headers(Some("text/plain"))).is_err());
        assert!(is_json(&headers(None)).is_err());
    }

    #[tokio::test]
    async fn limits_apply_with_and_without_content_length() {
        let h = headers(Some("application/json"));
        let err = read_json_body(&h, Body::from(vec![b' '; 11]), 10).await.expect_err("too large");
        assert!(matches!(err, ApiError::PayloadTooLarge { limit: 10 }));
        let ok = read_json_body(&h, Body::from("{}"), 10).await.expect("small body");
        assert_eq!(&ok[..], b"{}");
    }
}
