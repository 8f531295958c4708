//! The registry's REST API against a real broker: every endpoint, every compatibility level,
//! deletes, Confluent's error codes, recovery from `_schemas` after a restart, two instances
//! sharing one topic, basic auth, and HTTPS.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use tributary_kafka::KafkaConfig;
use tributary_registry::{Registry, RegistryConfig};

struct Running {
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn config(topic: &str) -> RegistryConfig {
    RegistryConfig { topic: topic.to_owned(), ..RegistryConfig::default() }
}

fn kafka() -> KafkaConfig {
    KafkaConfig { bootstrap_servers: tributary_test_support::bootstrap(), ..KafkaConfig::default() }
}

async fn start(config: RegistryConfig) -> Running {
    let registry: Arc<Registry> = Registry::open(&config, &kafka()).await.expect("registry opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let scheme = if registry.tls() { "https" } else { "http" };
    let base = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tributary_registry::serve(listener, registry, async move {
        let _ = stopped.await;
    }));
    Running { base, http: reqwest::Client::new(), stop: Some(stop), task: Some(task) }
}

impl Running {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("registry answers");
        let status = r.status();
        let ct =
            r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = r.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if v.is_object() || v.is_array() {
            assert_eq!(ct, "application/vnd.schemaregistry.v1+json", "{path}");
        }
        (status, v)
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.post(&format!("/subjects/{subject}/versions"), json!({"schema": schema})).await
    }
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("task").expect("serve");
        }
    }
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#)
}

const F_A: &str = r#"{"name":"a","type":"int"}"#;

fn code(v: &Value) -> i64 {
    v["error_code"].as_i64().unwrap_or_else(|| panic!("no error_code in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_reads_and_looks_up_like_confluent() {
    let r = start(config(&tributary_test_support::random_topic("schemas"))).await;
    let v1 = record(F_A);
    let (s, body) = r.register("orders-value", &v1).await;
    assert_eq!((s, &body), (StatusCode::OK, &json!({"id": 1})));
    // Same schema again, even reformatted: same id, no new version.
    let reformatted = v1.replace(',', " , ");
    assert_eq!(r.register("orders-value", &reformatted).await.1, json!({"id": 1}));
    assert_eq!(r.get("/subjects/orders-value/versions").await.1, json!([1]));
    // The same schema under another subject keeps its id.
    assert_eq!(r.register("other-value", &v1).await.1, json!({"id": 1}));
    let v2 = record(&format!(r#"{F_A},{{"name":"b","type":"string","default":"x"}}"#));
    assert_eq!(r.register("orders-value", &v2).await.1, json!({"id": 2}));

    assert_eq!(r.get("/subjects").await.1, json!(["orders-value", "other-value"]));
    assert_eq!(r.get("/subjects/orders-value/versions").await.1, json!([1, 2]));
    let (s, latest) = r.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (latest["subject"].as_str(), latest["version"].as_i64(), latest["id"].as_i64()),
        (Some("orders-value"), Some(2), Some(2))
    );
    assert_eq!(latest.get("schemaType"), None, "AVRO is implied, as Confluent does");
    let stored: Value =
        serde_json::from_str(latest["schema"].as_str().expect("schema")).expect("schema is JSON");
    assert_eq!(stored["fields"][1]["name"], "b");
    assert_eq!(r.get("/subjects/orders-value/versions/1").await.1["id"], 1);
    assert_eq!(r.get("/subjects/orders-value/versions/-1").await.1["version"], 2);
    let (_, raw) = r.get("/subjects/orders-value/versions/2/schema").await;
    assert_eq!(raw["name"], "R", "raw schema endpoint returns the schema itself");
    let (s, by_id) = r.get("/schemas/ids/2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_id["schema"], latest["schema"]);
    assert_eq!(
        r.get("/schemas/ids/1/versions").await.1,
        json!([{"subject":"orders-value","version":1},{"subject":"other-value","version":1}])
    );
    assert_eq!(r.get("/schemas/types").await.1, json!(["AVRO", "PROTOBUF"]));
    let (_, raw_by_id) = r.get("/schemas/ids/2/schema").await;
    assert_eq!(raw_by_id, raw, "raw schema by id is the schema itself");
    assert_eq!(r.get("/").await, (StatusCode::OK, json!({})));
    assert_eq!(r.get("/mode").await.1, json!({"mode": "READWRITE"}));
    let (s, e) = r.get("/no/such/route").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 404));

    let (s, found) = r.post("/subjects/orders-value", json!({"schema": v1})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((found["id"].as_i64(), found["version"].as_i64()), (Some(1), Some(1)));
    let (s, e) = r
        .post("/subjects/orders-value", json!({"schema": record(r#"{"name":"zz","type":"int"}"#)}))
        .await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40403));
    let (s, e) = r.post("/subjects/nobody", json!({"schema": v1})).await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40401));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_schemas_register_and_evolve_by_wire_rules() {
    let r = start(config(&tributary_test_support::random_topic("schemas"))).await;
    let proto = |body: &str| format!("syntax = \"proto3\";\npackage t;\n{body}");
    let v1 = proto("message M { string a = 1; }");
    let (s, b) =
        r.post("/subjects/p-value/versions", json!({"schema": v1, "schemaType": "PROTOBUF"})).await;
    assert_eq!((s, &b), (StatusCode::OK, &json!({"id": 1})));
    let (_, latest) = r.get("/subjects/p-value/versions/latest").await;
    assert_eq!(latest["schemaType"], "PROTOBUF");
    assert_eq!(latest["schema"], v1.trim());
    assert_eq!(r.get("/schemas/ids/1").await.1["schemaType"], "PROTOBUF");
    // A new optional field is fine; changing a field's wire type is not.
    let v2 = proto("message M { string a = 1; int64 b = 2; }");
    assert_eq!(
        r.post("/subjects/p-value/versions", json!({"schema": v2, "schemaType": "PROTOBUF"}))
            .await
            .1,
        json!({"id": 2})
    );
    let bad = proto("message M { int64 a = 1; int64 b = 2; }");
    let (s, e) = r
        .post("/subjects/p-value/versions", json!({"schema": bad, "schemaType": "PROTOBUF"}))
        .await;
    assert_eq!((s, code(&e)), (StatusCode::CONFLICT, 409), "{e}");
    assert!(e["message"].as_str().unwrap_or_default().contains("type changed"), "{e}");
    let (s, e) = r
        .post(
            "/subjects/p-value/versions",
            json!({"schema": "message {", "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::UNPROCESSABLE_ENTITY, 42201));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_confluents_error_codes() {
    let r = start(config(&tributary_test_support::random_topic("schemas"))).await;
    assert_eq!(r.register("s", &record(F_A)).await.0, StatusCode::OK);
    let cases: Vec<(StatusCode, Value, StatusCode, i64)> = vec![
        {
            let (s, b) = r.register("s", r#"{"type":"record","name":"R"}"#).await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, 42201)
        },
        {
            let (s, b) = r.register("s", "not json at all").await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, 42201)
        },
        {
            let (s, b) = r
                .post("/subjects/s/versions", json!({"schema": "\"int\"", "schemaType": "XML"}))
                .await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, 42201)
        },
        {
            let (s, b) = r.get("/subjects/s/versions/0").await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, 42202)
        },
        {
            let (s, b) = r.get("/subjects/s/versions/latestish").await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, 42202)
        },
        {
            let (s, b) = r.put("/config", json!({"compatibility": "SIDEWAYS"})).await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, 42203)
        },
        {
            let (s, b) = r.get("/subjects/missing/versions").await;
            (s, b, StatusCode::NOT_FOUND, 40401)
        },
        {
            let (s, b) = r.get("/subjects/s/versions/9").await;
            (s, b, StatusCode::NOT_FOUND, 40402)
        },
        {
            let (s, b) = r.get("/schemas/ids/999").await;
            (s, b, StatusCode::NOT_FOUND, 40403)
        },
        {
            let (s, b) = r.get("/config/s").await;
            (s, b, StatusCode::NOT_FOUND, 40408)
        },
        {
            let (s, b) = r.register("s", &record(r#"{"name":"a","type":"string"}"#)).await;
            (s, b, StatusCode::CONFLICT, 409)
        },
    ];
    for (i, (status, body, want_status, want_code)) in cases.into_iter().enumerate() {
        assert_eq!((status, code(&body)), (want_status, want_code), "case {i}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compatibility_level_decides_registration() {
    let r = start(config(&tributary_test_support::random_topic("schemas"))).await;
    let (s, global) = r.get("/config").await;
    assert_eq!((s, global), (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"})));
    let v1 = record(F_A);
    // v2 adds a required field: forward compatible only.
    let v2 = record(&format!(r#"{F_A},{{"name":"b","type":"int"}}"#));
    // v3 adds a defaulted field to v1: compatible both ways.
    let v3 = record(&format!(r#"{F_A},{{"name":"c","type":"int","default":0}}"#));
    // (level, schema registered after v1, accepted?)
    let cases = [
        ("BACKWARD", &v2, false),
        ("BACKWARD", &v3, true),
        ("BACKWARD_TRANSITIVE", &v2, false),
        ("FORWARD", &v2, true),
        ("FORWARD_TRANSITIVE", &v2, true),
        ("FULL", &v2, false),
        ("FULL", &v3, true),
        ("FULL_TRANSITIVE", &v3, true),
        ("NONE", &record(r#"{"name":"a","type":"string"}"#), true),
    ];
    for (i, (level, next, accepted)) in cases.into_iter().enumerate() {
        let subject = format!("levels-{i}");
        assert_eq!(r.register(&subject, &v1).await.0, StatusCode::OK);
        let (s, b) = r.put(&format!("/config/{subject}"), json!({"compatibility": level})).await;
        assert_eq!((s, b), (StatusCode::OK, json!({"compatibility": level})));
        assert_eq!(
            r.get(&format!("/config/{subject}")).await.1,
            json!({"compatibilityLevel": level})
        );
        let (check_status, check) = r
            .post(
                &format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
                json!({"schema": next}),
            )
            .await;
        assert_eq!(check_status, StatusCode::OK);
        assert_eq!(check["is_compatible"], accepted, "{level}: {check}");
        if !accepted {
            assert!(!check["messages"].as_array().expect("messages").is_empty());
        }
        let (s, b) = r.register(&subject, next).await;
        assert_eq!(s == StatusCode::OK, accepted, "{level}: {b}");
    }

    // Transitive levels look at every version, not only the latest.
    let t = "transitive";
    let w1 = record(r#"{"name":"a","type":"int"}"#);
    let w2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":1}"#);
    let w3 = record(r#"{"name":"b","type":"int"}"#); // needs b, which w1 data lacks
    assert_eq!(r.register(t, &w1).await.0, StatusCode::OK);
    assert_eq!(r.register(t, &w2).await.0, StatusCode::OK);
    assert_eq!(
        r.post(&format!("/compatibility/subjects/{t}/versions/latest"), json!({"schema": w3}))
            .await
            .1["is_compatible"],
        true
    );
    r.put(&format!("/config/{t}"), json!({"compatibility": "BACKWARD_TRANSITIVE"})).await;
    assert_eq!(
        r.post(&format!("/compatibility/subjects/{t}/versions"), json!({"schema": w3})).await.1
            ["is_compatible"],
        false
    );
    assert_eq!(r.register(t, &w3).await.0, StatusCode::CONFLICT);

    // Global level, subject fallback, and removing a subject's own level.
    assert_eq!(r.put("/config", json!({"compatibility": "NONE"})).await.0, StatusCode::OK);
    assert_eq!(r.get("/config").await.1, json!({"compatibilityLevel": "NONE"}));
    assert_eq!(
        r.get("/config/fresh?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        r.delete(&format!("/config/{t}")).await.1,
        json!({"compatibilityLevel": "BACKWARD_TRANSITIVE"})
    );
    assert_eq!(r.register(t, &w3).await.0, StatusCode::OK, "now checked with the global NONE");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_permanent_deletes() {
    let r = start(config(&tributary_test_support::random_topic("schemas"))).await;
    let v1 = record(F_A);
    let v2 = record(&format!(r#"{F_A},{{"name":"b","type":"int","default":0}}"#));
    assert_eq!(r.register("d", &v1).await.1, json!({"id": 1}));
    assert_eq!(r.register("d", &v2).await.1, json!({"id": 2}));

    let (s, e) = r.delete("/subjects/d/versions/1?permanent=true").await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::NOT_FOUND, 40407),
        "permanent needs a soft delete first"
    );
    assert_eq!(r.delete("/subjects/d/versions/1").await.1, json!(1));
    let (s, e) = r.delete("/subjects/d/versions/1").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40406));
    assert_eq!(r.get("/subjects/d/versions").await.1, json!([2]));
    assert_eq!(r.get("/subjects/d/versions?deleted=true").await.1, json!([1, 2]));
    assert_eq!(r.get("/subjects/d/versions/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(r.get("/subjects/d/versions/1?deleted=true").await.1["id"], 1);
    assert_eq!(r.get("/schemas/ids/1").await.0, StatusCode::OK, "a soft-deleted id still resolves");
    assert_eq!(r.delete("/subjects/d/versions/1?permanent=true").await.1, json!(1));
    assert_eq!(r.get("/subjects/d/versions?deleted=true").await.1, json!([2]));
    assert_eq!(
        r.get("/schemas/ids/1").await.0,
        StatusCode::NOT_FOUND,
        "a permanently deleted id is gone"
    );

    let (s, e) = r.delete("/subjects/d?permanent=true").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40405));
    assert_eq!(r.delete("/subjects/d").await.1, json!([2]));
    let (s, e) = r.delete("/subjects/d").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40404));
    assert_eq!(r.get("/subjects").await.1, json!([]));
    assert_eq!(r.get("/subjects?deleted=true").await.1, json!(["d"]));
    assert_eq!(r.delete("/subjects/d?permanent=true").await.1, json!([2]));
    assert_eq!(r.get("/subjects?deleted=true").await.1, json!([]));
    // Ids are never reused, also after permanent deletes.
    assert_eq!(r.register("d", &record(r#"{"name":"q","type":"int"}"#)).await.1, json!({"id": 3}));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_serves_the_same_ids_from_the_topic() {
    let topic = tributary_test_support::random_topic("schemas");
    let r = start(config(&topic)).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let schema = record(&format!(r#"{{"name":"f{i}","type":"int","default":{i}}}"#));
        let (_, b) = r.register(&format!("s{}", i % 2), &schema).await;
        expected.push((format!("s{}", i % 2), schema, b["id"].clone()));
    }
    r.put("/config/s0", json!({"compatibility": "FULL"})).await;
    r.delete("/subjects/s1/versions/1").await;
    let before = (r.get("/subjects?deleted=true").await.1, r.get("/subjects/s1/versions").await.1);
    r.stop().await;

    let r = start(config(&topic)).await;
    for (subject, schema, id) in &expected {
        let (s, b) =
            r.post(&format!("/subjects/{subject}?deleted=true"), json!({"schema": schema})).await;
        assert_eq!(s, StatusCode::OK, "{subject}: {b}");
        assert_eq!(&b["id"], id);
        assert_eq!(&r.get(&format!("/schemas/ids/{id}")).await.1["schema"], &b["schema"]);
    }
    assert_eq!(
        (r.get("/subjects?deleted=true").await.1, r.get("/subjects/s1/versions").await.1),
        before
    );
    assert_eq!(r.get("/config/s0").await.1, json!({"compatibilityLevel": "FULL"}));
    // New ids continue after the old ones.
    assert_eq!(
        r.register("s9", &record(r#"{"name":"new","type":"int"}"#)).await.1,
        json!({"id": 6})
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_hand_out_one_id_for_different_schemas() {
    let topic = tributary_test_support::random_topic("schemas");
    let a = start(config(&topic)).await;
    let b = start(config(&topic)).await;
    // Unrelated schemas share subjects here: compatibility is not what this test is about.
    assert_eq!(a.put("/config", json!({"compatibility": "NONE"})).await.0, StatusCode::OK);
    b.get("/").await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let schema = record(&format!(r#"{{"name":"g{i}","type":"long"}}"#));
        let subject = format!("race-{}", i % 4);
        let target = if i % 2 == 0 { &a } else { &b };
        // Every schema is registered through both instances at once, in different subjects.
        calls.push(async move {
            let (s1, r1) = target.register(&subject, &schema).await;
            (s1, r1, schema)
        });
    }
    let mut also = Vec::new();
    for i in 0..16 {
        let schema = record(&format!(r#"{{"name":"g{i}","type":"long"}}"#));
        let target = if i % 2 == 0 { &b } else { &a };
        also.push(async move { target.register(&format!("mirror-{i}"), &schema).await });
    }
    let (first, second) =
        tokio::join!(futures::future::join_all(calls), futures::future::join_all(also));
    let mut id_of = std::collections::HashMap::new();
    for ((s, r, schema), (s2, r2)) in first.into_iter().zip(second) {
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(s2, StatusCode::OK, "{r2}");
        assert_eq!(r["id"], r2["id"], "one schema, one id, whichever instance registered it");
        id_of.insert(schema, r["id"].as_i64().expect("id"));
    }
    let distinct: std::collections::HashSet<i64> = id_of.values().copied().collect();
    assert_eq!(distinct.len(), 16, "different schemas, different ids: {id_of:?}");
    // Lookups of what the other instance wrote are answered at once (a miss catches up)...
    for id in distinct {
        assert_eq!(a.get(&format!("/schemas/ids/{id}")).await.0, StatusCode::OK);
        assert_eq!(b.get(&format!("/schemas/ids/{id}")).await.0, StatusCode::OK);
    }
    // ...and listings converge: both instances end with the same state.
    for path in [
        "/subjects",
        "/subjects/race-0/versions",
        "/subjects/race-3/versions/latest",
        "/schemas/ids/5",
    ] {
        tributary_test_support::wait_for(path, std::time::Duration::from_secs(10), || async {
            let (_, va) = a.get(path).await;
            let (_, vb) = b.get(path).await;
            (va == vb).then_some(())
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_every_endpoint_when_configured() {
    let mut cfg = config(&tributary_test_support::random_topic("schemas"));
    cfg.auth_user = Some("registry".into());
    cfg.auth_password = Some("s3cret".into());
    let r = start(cfg).await;
    let url = format!("{}/subjects", r.base);
    let none = r.http.get(&url).send().await.expect("GET");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers().get("www-authenticate").is_some());
    assert_eq!(none.json::<Value>().await.expect("json")["error_code"], 401);
    let wrong = r.http.get(&url).basic_auth("registry", Some("nope")).send().await.expect("GET");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = r.http.get(&url).basic_auth("registry", Some("s3cret")).send().await.expect("GET");
    assert_eq!(right.status(), StatusCode::OK);
    let reg = r
        .http
        .post(format!("{}/subjects/x/versions", r.base))
        .basic_auth("registry", Some("s3cret"))
        .json(&json!({"schema": "\"string\""}))
        .send()
        .await
        .expect("POST");
    assert_eq!(reg.status(), StatusCode::OK);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_basic_auth_and_no_clear_text() {
    let ca = tributary_test_support::TestCa::new();
    let mut cfg = config(&tributary_test_support::random_topic("schemas"));
    cfg.auth_user = Some("registry".into());
    cfg.auth_password = Some("s3cret".into());
    cfg.tls_cert_file = Some(ca.cert_file.clone());
    cfg.tls_key_file = Some(ca.key_file.clone());
    let mut r = start(cfg).await;
    assert!(r.base.starts_with("https://"), "{}", r.base);
    let plain_client = std::mem::replace(
        &mut r.http,
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca.ca_pem()).expect("CA"))
            .build()
            .expect("client"),
    );
    let url = format!("{}/subjects/x/versions", r.base);
    let reg = r
        .http
        .post(&url)
        .basic_auth("registry", Some("s3cret"))
        .json(&json!({"schema": "\"string\""}))
        .send()
        .await
        .expect("POST over https");
    assert_eq!(reg.status(), StatusCode::OK);
    let none = r.http.get(&url).send().await.expect("GET over https");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "auth still applies");
    // A client that does not trust the CA refuses the registry; clear text gets nothing.
    let untrusted = plain_client.get(&url).send().await.expect_err("untrusted certificate");
    assert!(format!("{untrusted:?}").contains("UnknownIssuer"), "{untrusted:?}");
    let clear = r.base.replacen("https://", "http://", 1);
    let clear = plain_client.get(format!("{clear}/subjects")).send().await;
    assert!(clear.is_err(), "clear text answered: {clear:?}");
    // A stalled handshake holds no slot: others are served meanwhile.
    let addr = r.base.trim_start_matches("https://").to_owned();
    let _silent = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let again = r.http.get(&url).basic_auth("registry", Some("s3cret")).send().await;
    assert_eq!(again.expect("GET").status(), StatusCode::OK);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_or_mismatched_tls_settings_are_refused_at_start() {
    let ca = tributary_test_support::TestCa::new();
    let mut cfg = config(&tributary_test_support::random_topic("schemas"));
    cfg.tls_key_file = Some(ca.key_file.clone());
    let e = Registry::open(&cfg, &kafka()).await.err().expect("a key without a certificate");
    assert!(e.to_string().contains("[registry] tls_cert_file and tls_key_file go together"), "{e}");
    cfg.tls_cert_file = Some(ca.cert_file.clone());
    cfg.tls_key_file = Some(ca.ca_key_file.clone());
    let e = Registry::open(&cfg, &kafka()).await.err().expect("another certificate's key");
    assert!(e.to_string().contains("cannot serve HTTPS"), "{e}");
    cfg.tls_key_file = Some("/nonexistent/key.pem".into());
    let e = Registry::open(&cfg, &kafka()).await.err().expect("a missing key file");
    assert!(e.to_string().contains("tls_key_file /nonexistent/key.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_password_is_refused_at_start() {
    for password in [None, Some("")] {
        let mut cfg = config(&tributary_test_support::random_topic("schemas"));
        cfg.auth_user = Some("registry".into());
        cfg.auth_password = password.map(Into::into);
        match Registry::open(&cfg, &kafka()).await {
            Ok(_) => panic!("a registry with user but no password ({password:?}) must not start"),
            Err(e) => assert!(e.to_string().contains("auth_password"), "{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_size_subjects_and_versions_are_bounded() {
    let mut cfg = config(&tributary_test_support::random_topic("schemas"));
    cfg.max_schema_bytes = 2_048;
    cfg.max_subjects = 2;
    cfg.max_versions_per_subject = 2;
    let r = start(cfg).await;
    let field = |n: usize| format!(r#"{{"name":"f{n}","type":"string","default":""}}"#);
    let fields = |k: usize| (0..k).map(field).collect::<Vec<_>>().join(",");

    // A schema text over max_schema_bytes: 413 in Confluent's format, nothing registered.
    let big =
        format!(r#"{{"type":"record","name":"R","doc":"{}","fields":[]}}"#, "x".repeat(4_096));
    let (status, v) = r.register("big", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(code(&v), 413, "{v}");
    assert!(v["message"].as_str().expect("message").contains("max_schema_bytes"), "{v}");
    assert_eq!(r.get("/subjects").await.1, json!([]));

    // Versions per subject: the third is refused; the same schema again is still its id.
    assert_eq!(r.register("a", &record(&fields(1))).await.0, StatusCode::OK);
    assert_eq!(r.register("a", &record(&fields(2))).await.0, StatusCode::OK);
    let (status, v) = r.register("a", &record(&fields(3))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(code(&v), 422, "{v}");
    assert!(v["message"].as_str().expect("message").contains("max_versions_per_subject"), "{v}");
    assert_eq!(r.register("a", &record(&fields(2))).await.0, StatusCode::OK);

    // Subjects: the third is refused.
    assert_eq!(r.register("b", &record(&fields(1))).await.0, StatusCode::OK);
    let (status, v) = r.register("c", &record(&fields(1))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().expect("message").contains("max_subjects"), "{v}");
    assert_eq!(r.get("/subjects").await.1, json!(["a", "b"]));
    r.stop().await;
}
