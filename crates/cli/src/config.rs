//! Configuration loading: defaults, then `tributary.toml`, then `TRIBUTARY_*` environment
//! variables, then command-line flags — each overriding the one before.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tributary_core::{Catalog, TopicSpec};
use tributary_gateway::GatewayConfig;
use tributary_kafka::KafkaConfig;
use tributary_processor::ProcessorConfig;
use tributary_registry::RegistryConfig;
use tributary_sink::SinkConfig;

/// Everything `tributary` can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach Kafka (`[kafka]`).
    pub kafka: KafkaConfig,
    /// The HTTP gateway (`[gateway]`).
    pub gateway: GatewayConfig,
    /// The schema registry (`[registry]`).
    pub registry: RegistryConfig,
    /// The stream processor (`[processor]`).
    pub processor: ProcessorConfig,
    /// The warehouse sink (`[sink]`).
    pub sink: SinkConfig,
    /// The topic catalog (`[[topics]]`); when given, it replaces the built-in catalog whole.
    pub topics: Vec<TopicSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            gateway: GatewayConfig::default(),
            registry: RegistryConfig::default(),
            processor: ProcessorConfig::default(),
            sink: SinkConfig::default(),
            topics: Catalog::default_specs(),
        }
    }
}

impl Config {
    /// The catalog, validated.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        Ok(Catalog::new(self.topics.clone())?)
    }
}

/// Values given as flags; `None` leaves the lower layers' value.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<GatewayFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<ProcessorFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<GatewayFlags>,
}

#[derive(Debug, Default, Serialize)]
pub struct ProcessorFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct KafkaFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct GatewayFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// Loads the configuration. `path` is the file given with `--config`; without it
/// `tributary.toml` in the working directory is read when it exists.
pub fn load(path: Option<&Path>, flags: &FlagOverrides) -> anyhow::Result<Config> {
    load_with_env(path, flags, settings_env())
}

/// Settings that are text whatever they look like: a password `007` must stay `007`, not
/// become the number 7. They are read from the environment as exact strings. `key` is the
/// path below the section, `.`-separated (`registry.password` for
/// `TRIBUTARY_GATEWAY__REGISTRY__PASSWORD`); its last part decides.
fn is_text_setting(section: &str, key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    let named = |word: &str| last == word || last.ends_with(&format!("_{word}"));
    section == "kafka"
        || named("password")
        || named("user")
        || named("url")
        || named("topic")
        || named("secret")
        || named("token")
        || last == "instance"
        || last == "group_id"
        || last == "database"
}

/// Splits `TRIBUTARY_<SECTION>__<KEY>[__<KEY>...]` into the lowercase section and the
/// `.`-separated path below it (`registry.url` of `[gateway.registry]`), for the sections that
/// are settings. `[kafka]` has no table that can come from the environment (`[kafka.extra]`'s
/// names hold dots), so a `__` there stays in the key and names an unknown key. Other
/// `TRIBUTARY_*` variables (`TRIBUTARY_CONFIG`, `TRIBUTARY_LOG`, `TRIBUTARY_CACHE`, ...) are
/// not settings and are left alone.
fn setting_name(var: &str) -> Option<(String, String)> {
    let rest = var.strip_prefix("TRIBUTARY_")?;
    let (section, key) = rest.split_once("__")?;
    let section = section.to_ascii_lowercase();
    let mut key = key.to_ascii_lowercase();
    if section != "kafka" {
        key = key.replace("__", ".");
    }
    matches!(section.as_str(), "kafka" | "gateway" | "registry" | "processor" | "sink")
        .then_some((section, key))
}

/// `TRIBUTARY_<SECTION>__<KEY>` variables of the gateway and registry, parsed as values
/// (numbers, booleans, addresses), except the text settings [`text_env`] reads.
fn settings_env() -> Env {
    Env::prefixed("TRIBUTARY_")
        .filter(|k| {
            let var = format!("TRIBUTARY_{}", k.as_str().to_ascii_uppercase());
            setting_name(&var).is_some_and(|(section, key)| {
                section != "kafka" && !is_text_setting(&section, &key)
            })
        })
        .split("__")
}

/// Text settings from the environment, exactly as given, as `section.key` paths.
fn text_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(var, value)| {
            let (section, key) = setting_name(&var)?;
            is_text_setting(&section, &key).then(|| (format!("{section}.{key}"), value))
        })
        .collect()
}

fn load_with_env(path: Option<&Path>, flags: &FlagOverrides, env: Env) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    match path {
        Some(p) => {
            if !p.exists() {
                anyhow::bail!("config file {} does not exist", p.display());
            }
            fig = fig.merge(Toml::file(p));
        }
        None => {
            let default = PathBuf::from("tributary.toml");
            if default.exists() {
                fig = fig.merge(Toml::file(default));
            }
        }
    }
    let mut fig = fig.merge(env);
    for (key, value) in text_env() {
        fig = fig.merge(Serialized::default(&key, value));
    }
    let config: Config = fig
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    config.catalog()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tributary_core::Secret;

    fn file(contents: &str) -> (PathBuf, impl Drop) {
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let path = std::env::temp_dir().join(format!(
            "tributary-test-{}.toml",
            std::process::id() as u64 * 1000 + rand_suffix()
        ));
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(contents.as_bytes()).expect("write");
        (path.clone(), Rm(path))
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            let (path, _rm) = file(
                "[kafka]\nbootstrap_servers = \"file:1\"\n[gateway]\nlisten = \"127.0.0.1:1111\"\nmax_body_bytes = 10\n",
            );
            // file over defaults
            let c = load_with_env(Some(&path), &FlagOverrides::default(), settings_env())
                .expect("load");
            assert_eq!(c.kafka.bootstrap_servers, "file:1");
            assert_eq!(c.gateway.max_body_bytes, 10);
            assert_eq!(c.gateway.produce_timeout_ms, 5_000, "untouched default");
            // env over file
            jail.set_env("TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS", "env:2");
            jail.set_env("TRIBUTARY_GATEWAY__LISTEN", "127.0.0.1:2222");
            jail.set_env("TRIBUTARY_CACHE", "/not/a/setting");
            let c = load_with_env(Some(&path), &FlagOverrides::default(), settings_env())
                .expect("load");
            assert_eq!(c.kafka.bootstrap_servers, "env:2");
            assert_eq!(c.gateway.listen.port(), 2222);
            // flags over env
            let flags = FlagOverrides {
                kafka: Some(KafkaFlags { bootstrap_servers: Some("flag:3".into()) }),
                gateway: None,
                registry: None,
                processor: Some(ProcessorFlags { listen: None, instance: Some("7".into()) }),
                sink: None,
            };
            jail.set_env("TRIBUTARY_PROCESSOR__INSTANCE", "3");
            let c = load_with_env(Some(&path), &FlagOverrides::default(), settings_env())
                .expect("load");
            assert_eq!(c.processor.instance, "3", "a number-like slot stays text");
            let c = load_with_env(Some(&path), &flags, settings_env()).expect("load");
            assert_eq!(c.kafka.bootstrap_servers, "flag:3");
            assert_eq!(c.gateway.listen.port(), 2222);
            assert_eq!(c.processor.transactional_id(), "tributary-processor-7");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn environment_strings_that_look_like_numbers_stay_strings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRIBUTARY_KAFKA__SASL_PASSWORD", "007");
            jail.set_env("TRIBUTARY_KAFKA__CLIENT_ID", "true");
            jail.set_env("TRIBUTARY_GATEWAY__MAX_BODY_BYTES", "2048");
            jail.set_env("TRIBUTARY_REGISTRY__AUTH_PASSWORD", "0042");
            jail.set_env("TRIBUTARY_GATEWAY__REGISTRY__USER", "true");
            jail.set_env("TRIBUTARY_GATEWAY__REGISTRY__PASSWORD", "007");
            jail.set_env("TRIBUTARY_GATEWAY__REGISTRY__URL", "http://r:1");
            jail.set_env("TRIBUTARY_GATEWAY__REGISTRY__TIMEOUT_MS", "750");
            jail.set_env("TRIBUTARY_PROCESSOR__REGISTRY__PASSWORD", "1e3");
            jail.set_env("TRIBUTARY_SINK__REGISTRY__USER", "42");
            jail.set_env("TRIBUTARY_SINK__SQL_TOKEN", "0042");
            jail.set_env("TRIBUTARY_GATEWAY__JWT_SECRET", "12345678901234567890123456789012");
            let c = load_with_env(None, &FlagOverrides::default(), settings_env()).expect("load");
            let exposed = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
            assert_eq!(exposed(&c.kafka.sasl_password).as_deref(), Some("007"), "exactly as given");
            assert_eq!(c.kafka.client_id, "true");
            assert_eq!(c.gateway.max_body_bytes, 2048);
            assert_eq!(exposed(&c.registry.auth_password).as_deref(), Some("0042"));
            assert_eq!(c.gateway.registry.user.as_deref(), Some("true"));
            assert_eq!(exposed(&c.gateway.registry.password).as_deref(), Some("007"));
            assert_eq!(c.gateway.registry.url, "http://r:1");
            assert_eq!(c.gateway.registry.timeout_ms, 750, "a nested number is a number");
            assert_eq!(exposed(&c.processor.registry.password).as_deref(), Some("1e3"));
            assert_eq!(c.processor.registry.timeout_ms, 10_000, "untouched default");
            assert_eq!(c.sink.registry.user.as_deref(), Some("42"));
            assert_eq!(exposed(&c.sink.sql_token).as_deref(), Some("0042"));
            assert_eq!(
                exposed(&c.gateway.jwt_secret).as_deref(),
                Some("12345678901234567890123456789012")
            );
            Ok(())
        });
    }

    #[test]
    fn nested_variables_name_nested_settings() {
        assert_eq!(
            setting_name("TRIBUTARY_GATEWAY__REGISTRY__PASSWORD"),
            Some(("gateway".into(), "registry.password".into()))
        );
        assert_eq!(
            setting_name("TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS"),
            Some(("kafka".into(), "bootstrap_servers".into()))
        );
        assert_eq!(
            setting_name("TRIBUTARY_KAFKA__EXTRA__LINGER_MS"),
            Some(("kafka".into(), "extra__linger_ms".into())),
            "an unknown [kafka] key, not a property linger_ms"
        );
        assert_eq!(setting_name("TRIBUTARY_STATE_DIR"), None);
        assert_eq!(setting_name("TRIBUTARY_OTHER__X"), None);
        assert!(is_text_setting("gateway", "registry.password"));
        assert!(is_text_setting("sink", "registry.user"));
        assert!(is_text_setting("processor", "registry.url"));
        assert!(is_text_setting("registry", "auth_password"));
        assert!(is_text_setting("registry", "topic"));
        assert!(is_text_setting("processor", "dlq_topic"));
        assert!(!is_text_setting("gateway", "registry.timeout_ms"));
        assert!(!is_text_setting("gateway", "max_body_bytes"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn passwords_and_keys_show_as_stars() {
        // In a Jail: other tests set TRIBUTARY_* variables, which text settings read.
        figment::Jail::expect_with(|_jail| {
            let (path, _rm) = file(
                "[kafka]\nsasl_password = \"k\"\n[kafka.extra]\n\"ssl.key.password\" = \"e\"\n\"linger.ms\" = \"5\"\n[registry]\nauth_password = \"r\"\n[gateway]\njwt_secret = \"j\"\n[gateway.registry]\nuser = \"u\"\npassword = \"g\"\n[processor.registry]\npassword = \"p\"\n[sink]\nsql_token = \"tok\"\n[sink.registry]\npassword = \"s\"\n",
            );
            let c = load_with_env(
                Some(&path),
                &FlagOverrides::default(),
                Env::prefixed("TRIBUTARY_NOTHING_"),
            )
            .expect("load");
            let shown = serde_json::to_value(&c).expect("json");
            for pointer in [
                "/kafka/sasl_password",
                "/kafka/extra/ssl.key.password",
                "/registry/auth_password",
                "/gateway/jwt_secret",
                "/gateway/registry/password",
                "/processor/registry/password",
                "/sink/registry/password",
                "/sink/sql_token",
            ] {
                assert_eq!(shown.pointer(pointer), Some(&serde_json::json!("***")), "{pointer}");
            }
            assert_eq!(shown.pointer("/kafka/extra/linger.ms"), Some(&serde_json::json!("5")));
            assert_eq!(shown.pointer("/gateway/registry/user"), Some(&serde_json::json!("u")));
            let debug = format!("{c:?}");
            for leaked in ["\"k\"", "\"e\"", "\"r\"", "\"j\"", "\"g\"", "\"p\"", "\"s\"", "\"tok\""]
            {
                assert!(!debug.contains(leaked), "{leaked} in {debug}");
            }
            Ok(())
        });
    }

    /// Whether a setting's name says it holds a secret: a password, passphrase, secret, key or
    /// PEM (`is_secret_name`), a token or a credential; `jwt_public_key` names a public key.
    fn names_a_secret(name: &str) -> bool {
        let other =
            name.split(['.', '_', '-']).any(|p| p.contains("token") || p.contains("credential"));
        (tributary_core::is_secret_name(name) || other) && !name.ends_with("public_key")
    }

    /// The dotted paths of the settings (the leaves) of `value`.
    fn leaves(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if v.is_object() && !v.as_object().is_some_and(serde_json::Map::is_empty) {
                    leaves(v, &path, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    /// Every setting whose name says secret, and every URL's password, set to a recognisable
    /// value: none may show in `config show` or in `Debug`. A secret setting added as a plain
    /// `String` fails here without anyone listing it.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn no_secret_ever_shows() {
        figment::Jail::expect_with(|_jail| {
            let mut value = serde_json::to_value(Config::default()).expect("json");
            let mut paths = Vec::new();
            leaves(&value, "", &mut paths);
            let mut planted = Vec::new();
            for (i, path) in paths.iter().enumerate() {
                let leaf = path.rsplit('.').next().unwrap_or(path);
                let marker = format!("planted-secret-{i}");
                let setting = if names_a_secret(leaf) {
                    marker.clone()
                } else if leaf == "url" {
                    format!("https://user:{marker}@registry.example:8081")
                } else {
                    continue;
                };
                let pointer = format!("/{}", path.replace('.', "/"));
                *value.pointer_mut(&pointer).expect("a setting") = serde_json::json!(setting);
                planted.push((path.clone(), marker));
            }
            // librdkafka properties are secrets by their names.
            for name in [
                "sasl.password",
                "ssl.key.password",
                "ssl.key.pem",
                "sasl.oauthbearer.client.secret",
            ] {
                let marker = format!("planted-property-{name}");
                value["kafka"]["extra"][name] = serde_json::json!(marker);
                planted.push((format!("kafka.extra.{name}"), marker));
            }
            let names: Vec<&str> = planted.iter().map(|(p, _)| p.as_str()).collect();
            for known in [
                "kafka.sasl_password",
                "gateway.jwt_secret",
                "registry.auth_password",
                "sink.sql_token",
                "gateway.registry.password",
                "processor.registry.url",
            ] {
                assert!(names.contains(&known), "{known} was not found among {names:?}");
            }
            let config: Config = Figment::from(Serialized::defaults(&value))
                .extract()
                .expect("a configuration with every secret set");
            let planted_in =
                |s: &Option<Secret>| s.as_ref().is_some_and(|s| s.expose().starts_with("planted-"));
            assert!(planted_in(&config.kafka.sasl_password) && planted_in(&config.sink.sql_token));
            assert!(config.sink.registry.url.contains("planted-"), "the URL was set");
            let shown = crate::cmd::config::show(&config).expect("config show");
            let debug = format!("{config:?}\n{config:#?}");
            for (path, marker) in &planted {
                assert!(!shown.contains(marker.as_str()), "{path} shows in config show:\n{shown}");
                assert!(!debug.contains(marker.as_str()), "{path} shows in Debug");
            }
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_catalogs_are_errors() {
        let (path, _rm) = file("[gateway]\nlisen = \"x\"\n");
        let err = load(Some(&path), &FlagOverrides::default()).expect_err("typo");
        assert!(err.to_string().contains("lisen"), "{err}");

        let (path, _rm2) = file("[[topics]]\nname = \"a\"\npartitions = 0\nrole = \"source\"\n");
        let err = load(Some(&path), &FlagOverrides::default()).expect_err("bad catalog");
        assert!(err.to_string().contains("partitions"), "{err}");

        assert!(load(Some(Path::new("/nonexistent/tributary.toml")), &FlagOverrides::default())
            .is_err());
    }

    #[test]
    fn topics_replace_the_catalog() {
        let (path, _rm) = file("[[topics]]\nname = \"events.custom\"\npartitions = 3\nkey_field = \"user_id\"\nrole = \"source\"\n");
        let c = load(Some(&path), &FlagOverrides::default()).expect("load");
        let catalog = c.catalog().expect("valid");
        assert_eq!(catalog.names(), vec!["events.custom"]);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn the_example_file_is_the_defaults() {
        // In a Jail: other tests set TRIBUTARY_* variables, which text settings read.
        figment::Jail::expect_with(|_jail| {
            let path = tributary_test_support::repo_root().join("tributary.example.toml");
            let loaded = load_with_env(
                Some(&path),
                &FlagOverrides::default(),
                Env::prefixed("TRIBUTARY_NOTHING_"),
            )
            .expect("the example parses");
            let mut want = Config::default();
            let mut got = loaded;
            // The catalog's order does not matter.
            want.topics.sort_by(|a, b| a.name.cmp(&b.name));
            got.topics.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(got, want, "tributary.example.toml documents the defaults");
            Ok(())
        });
    }
}
