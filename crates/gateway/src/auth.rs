//! JWT bearer authentication of the event, stream and topic endpoints (the spec's "API: JWT
//! tokens"). Off until `jwt_secret` or `jwt_public_key` is set.
//!
//! A token is checked for its signature, `exp` (required), `nbf`, and `iss`/`aud` when
//! configured (then a token without the claim is refused like one with another value; a
//! public key needs both configured, since anyone the identity provider serves holds tokens
//! it signed); then for a scope: writes need `events:write`, reads (latest, streams, the
//! topic list and the JSON metrics) `events:read`, each also granted per topic as
//! `events:write:<topic>` / `events:read:<topic>`. Scopes come from the OAuth 2.0 `scope` claim
//! (space-separated) or an `scp` claim (a list or a string), as identity providers issue them.
//! Health, the OpenAPI document and `/metrics` stay open for load balancers and Prometheus.
//!
//! The token comes in `Authorization: Bearer`; a WebSocket stream, which a browser cannot give
//! that header, may offer it as the subprotocol `tributary.bearer.<JWT>` beside
//! [`BEARER_PROTOCOL`] (kept out of URLs and so out of access logs), or as `?access_token=`. A
//! checked token leaves its [`Principal`] in the request for the rate limiter.

use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// How tokens are verified.
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("algorithms", &self.validation.algorithms).finish()
    }
}

/// The WebSocket subprotocol a stream client offers beside `tributary.bearer.<JWT>` (the way to
/// send its token from a browser without putting it in the URL); the gateway answers with this
/// one, never with the one carrying the token.
pub const BEARER_PROTOCOL: &str = "tributary.bearer";

/// What a request needs: an action on the topic it names (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need<'a> {
    pub action: &'static str,
    pub topic: Option<&'a str>,
}

impl Need<'_> {
    /// The scope to name in a refusal.
    fn scope(&self) -> String {
        format!("events:{}", self.action)
    }

    fn granted_by(&self, scopes: &[&str]) -> bool {
        scopes.iter().any(|s| {
            let Some(rest) = s.strip_prefix("events:").and_then(|r| r.strip_prefix(self.action))
            else {
                return false;
            };
            rest.is_empty() || self.topic.is_some_and(|t| rest.strip_prefix(':') == Some(t))
        })
    }
}

/// The requests that need a token, and what for; `None` for the open ones.
pub fn need<'a>(method: &Method, path: &'a str) -> Option<Need<'a>> {
    let topic_after = |prefix: &str| path.strip_prefix(prefix).map(|r| r.split('/').next());
    if let Some(topic) = topic_after("/api/v1/events/") {
        let action = if method == Method::POST { "write" } else { "read" };
        return Some(Need { action, topic: topic.filter(|t| !t.is_empty()) });
    }
    if let Some(topic) = topic_after("/api/v1/stream/") {
        return Some(Need { action: "read", topic: topic.filter(|t| !t.is_empty()) });
    }
    if path == "/api/v1/topics" || path == "/api/v1/metrics" {
        return Some(Need { action: "read", topic: None });
    }
    None
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scp {
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Scp>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

/// Who a checked token belongs to, and until when it is valid: put in the request's
/// extensions for the layers and handlers after authentication (the rate limiter counts by
/// `subject`; streams cap per `subject` and end at `expires_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim.
    pub subject: Option<String>,
    /// The token's `exp` claim, in seconds since the epoch.
    pub expires_at: Option<u64>,
}

impl Claims {
    fn scopes(&self) -> Vec<&str> {
        let mut out: Vec<&str> =
            self.scope.as_deref().map(|s| s.split_whitespace().collect()).unwrap_or_default();
        match &self.scp {
            Some(Scp::Text(s)) => out.extend(s.split_whitespace()),
            Some(Scp::List(l)) => out.extend(l.iter().map(String::as_str)),
            None => {}
        }
        out
    }
}

impl Auth {
    /// The verifier `config` asks for, `None` when authentication is off, or why the key
    /// cannot be used.
    pub fn from_config(config: &GatewayConfig) -> Result<Option<Self>, String> {
        let (key, algorithms) = match (&config.jwt_secret, &config.jwt_public_key) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err("[gateway] set jwt_secret or jwt_public_key, not both".into())
            }
            (Some(secret), None) => {
                let secret = secret.expose();
                if secret.len() < 32 {
                    return Err("[gateway] jwt_secret must be at least 32 bytes".into());
                }
                let key = DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| format!("[gateway] jwt_secret: {e}"))?;
                (key, vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512])
            }
            (None, Some(key)) => {
                let verifier = public_key(key)?;
                if config.jwt_issuer.is_none() || config.jwt_audience.is_none() {
                    return Err("[gateway] jwt_public_key needs jwt_issuer and jwt_audience: \
                        the identity provider signs tokens for other services too"
                        .into());
                }
                verifier
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.jwt_leeway_secs;
        validation.validate_nbf = true;
        // A configured claim is required: without this a token that omits it would pass.
        let mut required = vec!["exp"];
        match &config.jwt_issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Self { key, validation }))
    }

    /// Checks `token` for `need`; whose it is.
    pub fn check(&self, token: &str, need: &Need<'_>) -> Result<Principal, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                ApiError::Unauthorized {
                    message: format!("the bearer token was refused: {e}"),
                    invalid_token: true,
                }
            })?;
        if need.granted_by(&data.claims.scopes()) {
            Ok(Principal { subject: data.claims.sub, expires_at: data.claims.exp })
        } else {
            Err(ApiError::InsufficientScope {
                scope: need.scope(),
                topic: need.topic.map(str::to_owned),
            })
        }
    }
}

/// A PEM public key (or a file holding one) and the algorithms its type signs with.
fn public_key(value: &str) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let pem = if value.trim_start().starts_with("-----BEGIN") {
        value.to_owned()
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| format!("[gateway] reading jwt_public_key from {value}: {e}"))?
    };
    let pem = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        use Algorithm::{PS256, PS384, PS512, RS256, RS384, RS512};
        return Ok((key, vec![RS256, RS384, RS512, PS256, PS384, PS512]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    Err("[gateway] jwt_public_key is not an RSA, EC or Ed25519 public key in PEM".into())
}

/// The token of a request: `Authorization: Bearer <token>`, or for WebSocket streams (which
/// browsers cannot give headers) a `tributary.bearer.<token>` subprotocol or an `access_token`
/// query parameter.
fn token(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    if req.uri().path().starts_with("/api/v1/stream/") {
        if let Some(t) = protocol_token(req.headers()) {
            return Some(t);
        }
        return req
            .uri()
            .query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .filter(|t| !t.is_empty());
    }
    None
}

/// The token a WebSocket client offers as the subprotocol `tributary.bearer.<token>` (a JWT is
/// made of characters a subprotocol name may hold).
fn protocol_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(BEARER_PREFIX).filter(|t| !t.is_empty()))
}

/// [`BEARER_PROTOCOL`] and the separator before the token.
const BEARER_PREFIX: &str = "tributary.bearer.";

/// The middleware: lets open requests through, checks the others.
pub async fn require(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = state.auth() else { return next.run(req).await };
    let Some(need) = need(req.method(), req.uri().path()) else { return next.run(req).await };
    let checked = match token(&req) {
        None => Err(ApiError::Unauthorized {
            message: "this endpoint needs a bearer token: Authorization: Bearer <JWT>".into(),
            invalid_token: false,
        }),
        Some(t) => auth.check(t, &need),
    };
    match checked {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway P-256 public key (its private half was discarded).
    const EC_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHUKNT8ZDgd3oYE8qJShoNp2s9hqm
ZDsvybsgw2zSoPduwaqim3Nm/S9vvW+8BexF2bnPAsRHyDas2NRRCnRcDA==
-----END PUBLIC KEY-----";

    #[test]
    fn routes_need_what_they_do() {
        let w = need(&Method::POST, "/api/v1/events/events.clickstream");
        assert_eq!(w, Some(Need { action: "write", topic: Some("events.clickstream") }));
        let b = need(&Method::POST, "/api/v1/events/events.clickstream/batch");
        assert_eq!(b, Some(Need { action: "write", topic: Some("events.clickstream") }));
        let l = need(&Method::GET, "/api/v1/events/events.clickstream/latest");
        assert_eq!(l, Some(Need { action: "read", topic: Some("events.clickstream") }));
        let s = need(&Method::GET, "/api/v1/stream/aggregates.clickstream.1m");
        assert_eq!(s, Some(Need { action: "read", topic: Some("aggregates.clickstream.1m") }));
        assert_eq!(
            need(&Method::GET, "/api/v1/topics"),
            Some(Need { action: "read", topic: None })
        );
        for open in [
            "/api/v1/health",
            "/api/v1/health/live",
            "/api/v1/health/ready",
            "/api/v1/openapi.json",
            "/metrics",
        ] {
            assert_eq!(need(&Method::GET, open), None, "{open}");
        }
    }

    #[test]
    fn a_stream_token_comes_from_the_offered_subprotocols() {
        assert_eq!(BEARER_PREFIX, format!("{BEARER_PROTOCOL}."));
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(protocol_token(&h), None);
        h.append(header::SEC_WEBSOCKET_PROTOCOL, "chat".parse().expect("header"));
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "tributary.bearer, tributary.bearer.".parse().expect("header"),
        );
        assert_eq!(protocol_token(&h), None, "an empty token is no token");
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "tributary.bearer , tributary.bearer.a.b-c_d".parse().expect("header"),
        );
        assert_eq!(protocol_token(&h), Some("a.b-c_d"));
    }

    #[test]
    fn scopes_grant_an_action_on_every_topic_or_on_one() {
        let w = Need { action: "write", topic: Some("events.iot.sensors") };
        assert!(w.granted_by(&["events:write"]));
        assert!(w.granted_by(&["openid", "events:write:events.iot.sensors"]));
        assert!(!w.granted_by(&["events:write:events.clickstream"]));
        assert!(!w.granted_by(&["events:read"]));
        assert!(!w.granted_by(&["events:writer"]));
        assert!(!w.granted_by(&["events:write:events.iot"]));
        assert!(!w.granted_by(&[]));
        let topics = Need { action: "read", topic: None };
        assert!(topics.granted_by(&["events:read"]));
        assert!(!topics.granted_by(&["events:read:events.clickstream"]));
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let c: Claims =
            serde_json::from_str(r#"{"scope":"a events:read","scp":["b"]}"#).expect("claims");
        assert_eq!(c.scopes(), ["a", "events:read", "b"]);
        let c: Claims = serde_json::from_str(r#"{"scp":"c d"}"#).expect("claims");
        assert_eq!(c.scopes(), ["c", "d"]);
    }

    #[test]
    fn bad_key_settings_are_refused() {
        let mut c = GatewayConfig { jwt_secret: Some("short".into()), ..Default::default() };
        assert!(Auth::from_config(&c).expect_err("refused").contains("32 bytes"));
        c.jwt_secret = Some("x".repeat(32).into());
        assert!(Auth::from_config(&c).expect("valid").is_some());
        c.jwt_public_key =
            Some("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----".into());
        assert!(Auth::from_config(&c).expect_err("refused").contains("not both"));
        c.jwt_secret = None;
        assert!(Auth::from_config(&c).expect_err("refused").contains("PEM"));
        c.jwt_public_key = Some("/nonexistent/key.pem".into());
        assert!(Auth::from_config(&c).expect_err("refused").contains("reading jwt_public_key"));
        // A public key without both issuer and audience would accept any token of the IdP.
        c.jwt_public_key = Some(EC_PUBLIC_KEY.into());
        for (iss, aud) in [(None, None), (Some("https://idp.test/"), None), (None, Some("t"))] {
            c.jwt_issuer = iss.map(str::to_owned);
            c.jwt_audience = aud.map(str::to_owned);
            let err = Auth::from_config(&c).expect_err("refused");
            assert!(err.contains("needs jwt_issuer and jwt_audience"), "{err}");
        }
        c.jwt_issuer = Some("https://idp.test/".into());
        c.jwt_audience = Some("tributary".into());
        assert!(Auth::from_config(&c).expect("valid").is_some());
        assert!(Auth::from_config(&GatewayConfig::default()).expect("off").is_none());
    }
}
