//! [`Secret`]: a password or a key that never prints. `Debug`, `Display` and `Serialize` (so
//! `tributary config show`, logs and error messages) show `***`; the value itself comes out
//! only through [`Secret::expose`], at the one place that hands it to a client.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret shows instead of itself.
pub const REDACTED: &str = "***";

/// A secret text: read as given (a number-like password `007` stays `007`), shown as `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the client that needs it; never for a log or an answer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// A setting that is text, as it may arrive: text from a file, or a number or a boolean when an
/// environment variable was parsed as a value (`TRIBUTARY_KAFKA__SASL_PASSWORD=123456`), taken
/// back as the text it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(match Scalar::deserialize(deserializer)? {
            Scalar::Str(s) => s,
            Scalar::Int(n) => n.to_string(),
            Scalar::Uint(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Text::deserialize(deserializer).map(|t| Self(t.0))
    }
}

/// SHA-256 of a secret (or of what a client sent for one): compare these with [`same_digest`]
/// and the time taken says nothing about the secret, not even its length.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret).into()
}

/// Whether `given` is the secret whose [`digest`] is `expected`, in a time that does not
/// depend on where or whether they differ.
pub fn same_digest(given: &[u8], expected: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&digest(given)[..], &expected[..]).into()
}

/// A property name that holds a secret, by its name: one of its parts (split at `.`, `_` and
/// `-`) contains `password`, `passphrase` or `secret`, or its last part is `key` or `pem` (a
/// private key in the value). So `ssl.key.password`, `sasl.password`, `ssl.key.pem`, `ssl_key`
/// and `sasl.oauthbearer.client.secret` are secrets; `ssl.key.location` (a path),
/// `ssl.keystore.location` and `linger.ms` are not.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let parts: Vec<&str> = name.split(['.', '_', '-']).collect();
    let sensitive = ["password", "passphrase", "secret"];
    parts.iter().any(|p| sensitive.iter().any(|s| p.contains(s)))
        || parts.last().is_some_and(|last| matches!(*last, "key" | "pem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        let expected = digest(b"abc");
        assert!(same_digest(b"abc", &expected));
        assert!(!same_digest(b"abd", &expected));
        assert!(!same_digest(b"ab", &expected));
        assert!(!same_digest(b"abcd", &expected));
        assert!(!same_digest(b"", &expected));
    }

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_reads_as_given() {
        let s: Secret = serde_json::from_str("\"007\"").expect("text");
        assert_eq!(s.expose(), "007");
        let s: Secret = serde_json::from_str("123456").expect("number");
        assert_eq!(s.expose(), "123456");
        let s: Secret = serde_json::from_str("true").expect("bool");
        assert_eq!(s.expose(), "true");
        let s: Option<Secret> = serde_json::from_str("null").expect("none");
        assert_eq!(s, None);
        assert!(serde_json::from_str::<Secret>("[1]").is_err());
    }

    #[test]
    fn secret_names_by_rule() {
        for name in [
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.password",
            "ssl.key.pem",
            "ssl_key",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "SSL.KEY.PASSWORD",
        ] {
            assert!(is_secret_name(name), "{name} is a secret");
        }
        for name in [
            "linger.ms",
            "ssl.key.location",
            "ssl.keystore.location",
            "ssl.ca.location",
            "sasl.username",
            "sasl.oauthbearer.client.id",
            "sasl.oauthbearer.token.endpoint.url",
            "compression.type",
            "keyless",
        ] {
            assert!(!is_secret_name(name), "{name} is not a secret");
        }
    }
}
