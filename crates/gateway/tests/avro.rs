//! Avro topics against a real broker and a real registry: values are Confluent-framed with the
//! id of the topic's registered schema, decode with that schema, follow new versions, and name
//! the field an event lacks when a version requires it.

mod common;

use common::{event, header, read_at, TestGateway};
use rdkafka::message::Message;
use serde_json::{json, Value};
use std::time::Duration;

async fn latest_schema(gw: &TestGateway, topic: &str) -> (u32, String) {
    let v: Value =
        reqwest::get(format!("{}/subjects/{topic}-value/versions/latest", gw.registry_url))
            .await
            .expect("registry answers")
            .json()
            .await
            .expect("json");
    (v["id"].as_u64().expect("id") as u32, v["schema"].as_str().expect("schema").to_owned())
}

fn decode(schema: &str, body: &[u8]) -> Value {
    let schema = apache_avro::Schema::parse_str(schema).expect("registered schema parses");
    let mut body = body;
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .and_then(|r| r.read_value(&mut body))
        .expect("value decodes with the registered schema");
    assert!(body.is_empty(), "nothing after the datum");
    Value::try_from(v).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_framed_with_the_registered_schema_id() {
    let gw = TestGateway::start_avro(|_| {}).await;
    let topic = gw.topics.click.clone();
    let body = json!({
        "event_id": "avro-1", "timestamp": "2026-11-30T12:00:00.250Z", "event_type": "page_view",
        "user_id": "user-77", "payload": {"url": "/", "n": 1}, "metadata": {"src": "web"}
    });
    let (status, resp) = gw.post(&topic, &body).await;
    assert_eq!(status, 201, "{resp}");
    // The gateway registered schemas/event.avsc as the topic's first version.
    let (id, schema) = latest_schema(&gw, &topic).await;
    let m = read_at(
        &gw.bootstrap,
        &topic,
        resp["partition"].as_i64().expect("p") as i32,
        resp["offset"].as_i64().expect("o"),
    );
    let value = m.payload().expect("value");
    assert_eq!(value[0], 0, "magic byte");
    assert_eq!(u32::from_be_bytes([value[1], value[2], value[3], value[4]]), id, "schema id");
    assert_eq!(header(&m, "content_type").as_deref(), Some("application/vnd.confluent.avro"));
    assert_eq!(
        decode(&schema, &value[5..]),
        json!({"event_id": "avro-1", "timestamp": 1_796_040_000_250i64, "event_type": "page_view",
               "user_id": "user-77", "payload": "{\"n\":1,\"url\":\"/\"}", "device_id": null,
               "metadata": "{\"src\":\"web\"}"})
    );

    // The read API decodes it back through the registry.
    let (status, latest) = gw.get(&format!("/api/v1/events/{topic}/latest?limit=1")).await;
    assert_eq!(status, 200);
    let e = &latest["events"][0];
    assert_eq!(e["schema_id"], id);
    assert_eq!(e["event"]["payload"], json!({"n": 1, "url": "/"}));
    assert_eq!(e["event"]["timestamp"], 1_796_040_000_250i64);

    // A batch writes the good events with the same schema and refuses the bad ones alone.
    let mut bad = event("avro-3", "u");
    bad["payload"] = json!(7);
    let r = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{topic}/batch")))
        .json(&json!([event("avro-2", "u"), bad]))
        .send()
        .await
        .expect("POST");
    let batch: Value = r.json().await.expect("json");
    assert_eq!(batch["accepted"], 1, "{batch}");
    assert_eq!(batch["results"][1]["field"], "payload");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_schema_versions_are_used_and_required_fields_are_named() {
    let gw = TestGateway::start_avro(|c| c.schema_refresh_secs = 0).await;
    let topic = gw.topics.tx.clone();
    assert_eq!(gw.post(&topic, &event("v1", "u1")).await.0, 201);
    let (v1, schema) = latest_schema(&gw, &topic).await;

    // A user registers version 2: a field with a default, backward compatible.
    let mut evolved: Value = serde_json::from_str(&schema).expect("schema");
    evolved["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "region", "type": "string", "default": "eu"}));
    let r = gw
        .http
        .post(format!("{}/subjects/{topic}-value/versions", gw.registry_url))
        .json(&json!({"schema": evolved.to_string()}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 200);
    let (status, resp) = gw.post(&topic, &event("v2", "u1")).await;
    assert_eq!(status, 201, "{resp}");
    let (v2, schema2) = latest_schema(&gw, &topic).await;
    assert_ne!(v1, v2);
    let m = read_at(
        &gw.bootstrap,
        &topic,
        resp["partition"].as_i64().expect("p") as i32,
        resp["offset"].as_i64().expect("o"),
    );
    let value = m.payload().expect("value");
    assert_eq!(
        u32::from_be_bytes([value[1], value[2], value[3], value[4]]),
        v2,
        "written with the new version"
    );
    assert_eq!(
        decode(&schema2, &value[5..])["region"],
        "eu",
        "the default fills what events do not carry"
    );

    // Version 3 requires a field no event has (compatibility NONE lets it in): every write
    // is refused with that field named, and nothing is written.
    let r = gw
        .http
        .put(format!("{}/config/{topic}-value", gw.registry_url))
        .json(&json!({"compatibility": "NONE"}))
        .send()
        .await
        .expect("config");
    assert_eq!(r.status().as_u16(), 200);
    evolved["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "tenant", "type": "string"}));
    let r = gw
        .http
        .post(format!("{}/subjects/{topic}-value/versions", gw.registry_url))
        .json(&json!({"schema": evolved.to_string()}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 200);
    let before = gw.end_offsets(&topic);
    let (status, resp) = gw.post(&topic, &event("v3", "u1")).await;
    assert_eq!(
        (status, resp["error"].as_str(), resp["field"].as_str()),
        (422, Some("validation_failed"), Some("tenant")),
        "{resp}"
    );
    assert_eq!(gw.end_offsets(&topic), before);
    // A retry of an event written before that version is still answered as a duplicate.
    let (status, resp) = gw.post(&topic, &event("v2", "u1")).await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("duplicate")), "{resp}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_a_503_not_a_json_write() {
    let closed = tributary_test_support::free_port();
    let gw = TestGateway::start_avro(|c| {
        c.registry.url = format!("http://127.0.0.1:{closed}");
        c.registry.timeout_ms = 500;
    })
    .await;
    let r = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{}", gw.topics.iot)))
        .json(&json!({"event_id": "x", "timestamp": 1, "event_type": "t", "device_id": "d", "payload": {}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "schema_registry_unavailable");
    assert_eq!(gw.end_offsets(&gw.topics.iot), 0, "nothing written without its schema");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_topics_write_framed_protobuf_with_message_indexes() {
    let gw = TestGateway::start_with(
        &tributary_test_support::bootstrap(),
        tributary_core::ValueFormat::Protobuf,
        |_| {},
    )
    .await;
    let topic = gw.topics.click.clone();
    let (status, resp) = gw.post(&topic, &event("pb-1", "user-1")).await;
    assert_eq!(status, 201, "{resp}");
    let v: Value =
        reqwest::get(format!("{}/subjects/{topic}-value/versions/latest", gw.registry_url))
            .await
            .expect("registry")
            .json()
            .await
            .expect("json");
    assert_eq!(v["schemaType"], "PROTOBUF", "the gateway registered schemas/event.proto");
    let id = v["id"].as_u64().expect("id") as u32;
    let m = read_at(
        &gw.bootstrap,
        &topic,
        resp["partition"].as_i64().expect("p") as i32,
        resp["offset"].as_i64().expect("o"),
    );
    let value = m.payload().expect("value");
    assert_eq!(value[0], 0, "magic byte");
    assert_eq!(u32::from_be_bytes([value[1], value[2], value[3], value[4]]), id);
    assert_eq!(value[5], 0, "message index [0]: the file's first message");
    assert_eq!(header(&m, "content_type").as_deref(), Some("application/vnd.confluent.protobuf"));
    // Decoded with the registered text by a Protobuf library, not by the gateway's code.
    let mut files = protox::Compiler::with_file_resolver(SingleProto(
        v["schema"].as_str().expect("schema").to_owned(),
    ));
    files.open_file("event.proto").expect("registered schema compiles");
    let desc =
        files.descriptor_pool().get_message_by_name("dev.tributary.Event").expect("Event message");
    let msg = prost_reflect::DynamicMessage::decode(desc, &value[6..]).expect("decodes");
    let field = |name: &str| msg.get_field_by_name(name).expect(name).into_owned();
    assert_eq!(field("event_id"), prost_reflect::Value::String("pb-1".into()));
    assert_eq!(field("user_id"), prost_reflect::Value::String("user-1".into()));
    assert_eq!(field("payload"), prost_reflect::Value::String(r#"{"n":1,"url":"/home"}"#.into()));

    let (status, latest) = gw.get(&format!("/api/v1/events/{topic}/latest?limit=1")).await;
    assert_eq!(status, 200);
    assert_eq!(latest["events"][0]["schema_id"], id);
    assert_eq!(latest["events"][0]["event"]["payload"], json!({"n": 1, "url": "/home"}));
    gw.shutdown().await;
}

struct SingleProto(String);

impl protox::file::FileResolver for SingleProto {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        protox::file::File::from_source(name, &self.0)
    }
}
