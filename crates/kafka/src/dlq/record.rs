//! One dead letter, both ways: [`Letter::dead`] builds it (the processor and the sink),
//! [`DeadLetter`] reads it back (`tributary dlq`) and [`Letter::replayed`] writes it back to its
//! source topic, all with the header names of [`header`].

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureRecord};
use std::collections::BTreeMap;

/// The headers a dead letter carries next to the original record's own.
pub mod header {
    /// What every header of ours starts with.
    pub const PREFIX: &str = "dlq.";
    /// Why the record was dead-lettered: a machine code (`undecodable`, `late`, ...).
    pub const REASON: &str = "dlq.reason";
    /// What was wrong with it, for humans.
    pub const ERROR: &str = "dlq.error";
    /// The topic the record was read from.
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    /// Its partition there.
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    /// Its offset there.
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// When it was dead-lettered (RFC 3339, milliseconds, UTC).
    pub const PROCESSED_AT: &str = "dlq.processed.at";
    /// The header a replayed record carries: `<dlq topic>/<partition>/<offset>` it was read
    /// from.
    pub const REPLAYED_FROM: &str = "dlq.replayed.from";

    /// What the headers of Kafka Connect's dead letters start with.
    pub const CONNECT_PREFIX: &str = "__connect.errors.";
    pub(crate) const CONNECT_TOPIC: &str = "__connect.errors.topic";
    pub(crate) const CONNECT_PARTITION: &str = "__connect.errors.partition";
    pub(crate) const CONNECT_OFFSET: &str = "__connect.errors.offset";
    pub(crate) const CONNECT_CLASS: &str = "__connect.errors.exception.class.name";
    pub(crate) const CONNECT_MESSAGE: &str = "__connect.errors.exception.message";
}

/// The reason given to Kafka Connect's dead letters (which say why in an exception instead).
pub const CONNECT_REASON: &str = "connect";
/// The reason given to records that carry no reason header at all.
pub const UNKNOWN_REASON: &str = "unknown";

/// A record of the dead-letter flow, ready to be written: a dead letter on its way to the
/// dead-letter topic ([`Letter::dead`]), or one on its way back ([`Letter::replayed`]). Key,
/// value and timestamp are the original record's, bytes untouched.
#[derive(Debug)]
pub struct Letter<'a> {
    /// Where it goes.
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The original record's timestamp, in epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    pub headers: OwnedHeaders,
}

impl<'a> Letter<'a> {
    /// The dead letter of `original`, for the dead-letter (or late) `topic`: its own headers,
    /// then the [`header`]s that say why (`reason` is the machine code, `error` what was wrong),
    /// where from and when (`processed_at_ms`, epoch milliseconds).
    pub fn dead<M: Message>(
        topic: &'a str,
        original: &'a M,
        reason: &str,
        error: &str,
        processed_at_ms: i64,
    ) -> Self {
        let mut headers = OwnedHeaders::new();
        if let Some(own) = original.headers() {
            for h in own.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let partition = original.partition().to_string();
        let offset = original.offset().to_string();
        let at = rfc3339(processed_at_ms);
        for (k, v) in [
            (header::REASON, reason),
            (header::ERROR, error),
            (header::SOURCE_TOPIC, original.topic()),
            (header::SOURCE_PARTITION, partition.as_str()),
            (header::SOURCE_OFFSET, offset.as_str()),
            (header::PROCESSED_AT, at.as_str()),
        ] {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        Self {
            topic,
            key: original.key(),
            value: original.payload(),
            timestamp_ms: original.timestamp().to_millis(),
            headers,
        }
    }

    /// Dead letter `d`, read from `dlq_topic`, written back to `target`: the original record's
    /// own headers plus [`header::REPLAYED_FROM`].
    pub fn replayed(dlq_topic: &str, target: &'a str, d: &'a DeadLetter) -> Self {
        let from = format!("{dlq_topic}/{}/{}", d.partition, d.offset);
        let mut headers = OwnedHeaders::new_with_capacity(d.headers.len() + 1);
        for (k, v) in &d.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        headers = headers.insert(Header { key: header::REPLAYED_FROM, value: Some(&from) });
        Self {
            topic: target,
            key: d.key.as_deref(),
            value: d.value.as_deref(),
            timestamp_ms: d.timestamp,
            headers,
        }
    }

    /// For a [`BaseRecord`]-taking producer (the transactional one).
    pub fn into_base_record(self) -> BaseRecord<'a, [u8], [u8]> {
        BaseRecord {
            key: self.key,
            payload: self.value,
            timestamp: self.timestamp_ms,
            headers: Some(self.headers),
            ..BaseRecord::to(self.topic)
        }
    }

    /// For a [`FutureRecord`]-taking producer (the acknowledged-write one).
    pub fn into_future_record(self) -> FutureRecord<'a, [u8], [u8]> {
        FutureRecord {
            key: self.key,
            payload: self.value,
            timestamp: self.timestamp_ms,
            headers: Some(self.headers),
            ..FutureRecord::to(self.topic)
        }
    }
}

/// Epoch milliseconds as RFC 3339 with milliseconds, UTC (`2026-12-05T11:00:00.000Z`).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// One record of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// `dlq.reason`; [`CONNECT_REASON`] for Kafka Connect's; [`UNKNOWN_REASON`] without either.
    pub reason: String,
    /// `dlq.error`, or Connect's exception class and message.
    pub error: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    /// `dlq.processed.at` (RFC 3339), when there is one.
    pub processed_at: Option<String>,
    /// The record's timestamp (the original record's: dead letters keep it).
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The original record's own headers, without the dead-letter ones.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    /// Reads a record of the dead-letter topic: our headers or Kafka Connect's, and the
    /// original record's own apart.
    pub fn from_message<M: Message>(m: &M) -> Self {
        let mut ours: BTreeMap<&str, String> = BTreeMap::new();
        let mut headers = Vec::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                if h.key.starts_with(header::PREFIX) || h.key.starts_with(header::CONNECT_PREFIX) {
                    let text = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    ours.insert(h.key, text.unwrap_or_default());
                } else {
                    headers.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
                }
            }
        }
        let connect = ours.keys().any(|k| k.starts_with(header::CONNECT_PREFIX));
        let reason = ours
            .get(header::REASON)
            .cloned()
            .unwrap_or_else(|| if connect { CONNECT_REASON } else { UNKNOWN_REASON }.to_owned());
        let error = ours.get(header::ERROR).cloned().or_else(|| {
            let class = ours.get(header::CONNECT_CLASS)?;
            Some(match ours.get(header::CONNECT_MESSAGE) {
                Some(message) => format!("{class}: {message}"),
                None => class.clone(),
            })
        });
        let field = |ours_key: &str, connect_key: &str| {
            ours.get(ours_key).or_else(|| ours.get(connect_key)).cloned()
        };
        Self {
            partition: m.partition(),
            offset: m.offset(),
            reason,
            error,
            source_topic: field(header::SOURCE_TOPIC, header::CONNECT_TOPIC),
            source_partition: field(header::SOURCE_PARTITION, header::CONNECT_PARTITION)
                .and_then(|p| p.parse().ok()),
            source_offset: field(header::SOURCE_OFFSET, header::CONNECT_OFFSET)
                .and_then(|o| o.parse().ok()),
            processed_at: ours.get(header::PROCESSED_AT).cloned(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Which dead letters a command is about; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<String>,
    pub source_topic: Option<String>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == d.reason)
            && self.source_topic.as_ref().is_none_or(|t| Some(t) == d.source_topic.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn original() -> OwnedMessage {
        let own = OwnedHeaders::new()
            .insert(Header { key: "trace", value: Some("abc") })
            .insert(Header { key: "empty", value: None::<&[u8]> });
        OwnedMessage::new(
            Some(b"not json".to_vec()),
            Some(b"user-1".to_vec()),
            "events.clickstream".into(),
            Timestamp::CreateTime(1_764_932_400_000),
            7,
            42,
            Some(own),
        )
    }

    /// The record as the dead-letter topic would hand it back.
    fn stored(r: Letter<'_>) -> OwnedMessage {
        OwnedMessage::new(
            r.value.map(<[u8]>::to_vec),
            r.key.map(<[u8]>::to_vec),
            r.topic.into(),
            r.timestamp_ms.map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
            3,
            9,
            Some(r.headers),
        )
    }

    #[test]
    fn a_dead_letter_reads_back_as_written() {
        let msg = original();
        let record = Letter::dead("events.dlq", &msg, "undecodable", "bad bytes", 0);
        assert_eq!(record.topic, "events.dlq");
        let d = DeadLetter::from_message(&stored(record));
        assert_eq!(d.reason, "undecodable");
        assert_eq!(d.error.as_deref(), Some("bad bytes"));
        assert_eq!(d.source_topic.as_deref(), Some("events.clickstream"));
        assert_eq!(d.source_partition, Some(7));
        assert_eq!(d.source_offset, Some(42));
        assert_eq!(d.processed_at.as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!((d.partition, d.offset), (3, 9));
        assert_eq!(d.timestamp, Some(1_764_932_400_000));
        assert_eq!(d.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(d.value.as_deref(), Some(&b"not json"[..]));
        let own = vec![("trace".to_owned(), Some(b"abc".to_vec())), ("empty".to_owned(), None)];
        assert_eq!(d.headers, own, "the original's own headers, null values kept, in order");
    }

    #[test]
    fn our_headers_follow_the_originals_under_the_shared_names() {
        let msg = original();
        let record = Letter::dead("events.dlq", &msg, "late", "closed", 1_500);
        let keys: Vec<&str> = record.headers.iter().map(|h| h.key).collect();
        let want = [
            "trace",
            "empty",
            header::REASON,
            header::ERROR,
            header::SOURCE_TOPIC,
            header::SOURCE_PARTITION,
            header::SOURCE_OFFSET,
            header::PROCESSED_AT,
        ];
        assert_eq!(keys, want);
        assert!(want[2..].iter().all(|k| k.starts_with(header::PREFIX)));
        let at = record.headers.iter().find(|h| h.key == header::PROCESSED_AT).expect("header");
        assert_eq!(at.value, Some(&b"1970-01-01T00:00:01.500Z"[..]));
    }

    #[test]
    fn a_record_without_key_value_or_timestamp_stays_so() {
        let msg = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 1, None);
        let record = Letter::dead("events.dlq", &msg, "undecodable", "empty", 0);
        assert_eq!((record.key, record.value, record.timestamp_ms), (None, None, None));
        let d = DeadLetter::from_message(&stored(record));
        assert!(d.headers.is_empty());
        assert_eq!(d.source_topic.as_deref(), Some("t"));
    }

    #[test]
    fn connect_dead_letters_and_bare_records_get_a_reason() {
        let connect = OwnedHeaders::new()
            .insert(Header { key: header::CONNECT_TOPIC, value: Some("events.iot.sensors") })
            .insert(Header { key: header::CONNECT_PARTITION, value: Some("2") })
            .insert(Header { key: header::CONNECT_CLASS, value: Some("DataException") })
            .insert(Header { key: header::CONNECT_MESSAGE, value: Some("no schema") });
        let m = OwnedMessage::new(
            None,
            None,
            "dlq".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(connect),
        );
        let d = DeadLetter::from_message(&m);
        assert_eq!(d.reason, CONNECT_REASON);
        assert_eq!(d.error.as_deref(), Some("DataException: no schema"));
        assert_eq!(
            (d.source_topic.as_deref(), d.source_partition),
            (Some("events.iot.sensors"), Some(2))
        );
        let bare = OwnedMessage::new(None, None, "dlq".into(), Timestamp::NotAvailable, 0, 0, None);
        assert_eq!(DeadLetter::from_message(&bare).reason, UNKNOWN_REASON);
        let f = Filter { reason: Some(CONNECT_REASON.into()), source_topic: None };
        assert!(f.matches(&d));
        assert!(!f.matches(&DeadLetter::from_message(&bare)));
    }

    #[test]
    fn a_replayed_record_is_the_original_with_where_it_was() {
        let msg = original();
        let dead = stored(Letter::dead("events.dlq", &msg, "undecodable", "bad", 0));
        let d = DeadLetter::from_message(&dead);
        let back = Letter::replayed("events.dlq", "events.clickstream", &d);
        assert_eq!(back.topic, "events.clickstream");
        let keys: Vec<&str> = back.headers.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["trace", "empty", header::REPLAYED_FROM]);
        let from = back.headers.iter().last().and_then(|h| h.value);
        assert_eq!(from, Some(&b"events.dlq/3/9"[..]));
        let r = back.into_base_record();
        assert_eq!(
            (r.key, r.payload, r.timestamp),
            (Some(&b"user-1"[..]), Some(&b"not json"[..]), Some(1_764_932_400_000))
        );
    }
}
