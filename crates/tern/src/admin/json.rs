//! JSON shapes of the admin API, and the small codecs it needs (base64, percent-decoding, UTC
//! timestamps) without pulling in crates for them.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tern_codec::{ByteStr, Properties, ProtocolVersion, QoS};
use tern_core::Message;
use tern_core::inspect::{AdminPublish, ClientInfo, SessionInfo, SubscriptionInfo};

/// "3.1", "3.1.1" or "5.0".
pub fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// Session expiry as JSON: seconds, or null for never.
fn expiry(secs: u32) -> Value {
    if secs == u32::MAX {
        Value::Null
    } else {
        json!(secs)
    }
}

/// A client, with what only the I/O layer knows (its address).
pub fn client(c: &ClientInfo, peer: Option<SocketAddr>, now: Instant) -> Value {
    let since = c.connected_at;
    json!({
        "client_id": c.client_id,
        "username": c.username,
        "address": peer.map(|p| p.to_string()),
        "protocol": protocol_name(c.protocol),
        "protocol_level": c.protocol.level(),
        "keep_alive": c.keep_alive,
        "connected_since": since.map(|t| rfc3339(wall_clock(t, now))),
        "connected_secs": since.map(|t| now.saturating_duration_since(t).as_secs()),
        "inflight": c.inflight,
        "queued": c.queued,
        "subscriptions": c.subscriptions,
        "session_expiry_interval": expiry(c.session_expiry),
    })
}

pub fn session(s: &SessionInfo, peer: Option<SocketAddr>) -> Value {
    json!({
        "client_id": s.client_id,
        "username": s.username,
        "online": s.conn.is_some(),
        "address": peer.map(|p| p.to_string()),
        "protocol": protocol_name(s.protocol),
        "session_expiry_interval": expiry(s.expiry_interval),
        "expires_in_secs": s.expires_in.map(|d| d.as_secs()),
        "inflight": s.inflight,
        "queued": s.queued,
        "inbound_qos2": s.inbound_qos2,
        "persistent": s.persisted,
        "subscriptions": s.subscriptions.iter().map(subscription).collect::<Vec<_>>(),
    })
}

pub fn subscription(s: &SubscriptionInfo) -> Value {
    json!({
        "client_id": s.client_id,
        "filter": s.filter,
        "qos": s.qos as u8,
        "no_local": s.no_local,
        "retain_as_published": s.retain_as_published,
        "retain_handling": s.retain_handling,
        "subscription_identifier": s.id,
        "share_group": s.share_group,
        "online": s.online,
    })
}

/// A retained message; `with_payload` false lists the topic and sizes only.
pub fn retained(m: &Message, now: Instant, with_payload: bool) -> Value {
    let mut o = Map::new();
    o.insert("topic".into(), json!(m.topic.as_str()));
    o.insert("qos".into(), json!(m.qos as u8));
    o.insert("payloadlen".into(), json!(m.payload.len()));
    o.insert(
        "expires_in_secs".into(),
        json!(m.remaining_expiry(now).map(u64::from)),
    );
    if with_payload {
        let (payload, enc) = text_or_base64(&m.payload);
        o.insert("payload".into(), json!(payload));
        o.insert("payload_encoding".into(), json!(enc));
        o.insert("properties".into(), properties(&m.properties));
    }
    Value::Object(o)
}

/// One page of a listing: `{"count": entries in the whole listing, "truncated": whether
/// entries follow this page, "next": the `after` that gets them (absent at the end), key: the
/// page's entries}`.
pub fn page(page: tern_core::Page<Value>, key: &str) -> Value {
    let mut o = Map::new();
    o.insert("count".into(), json!(page.total));
    o.insert("truncated".into(), json!(page.truncated));
    if let Some(next) = page.next {
        o.insert("next".into(), json!(next));
    }
    o.insert(key.into(), Value::Array(page.items));
    Value::Object(o)
}

/// MQTT 5 message properties with Mosquitto's names (as `tern sub --json`).
pub fn properties(p: &Properties) -> Value {
    let mut props = Map::new();
    if let Some(v) = p.payload_format_indicator {
        props.insert("payload-format-indicator".into(), json!(v));
    }
    if let Some(v) = p.message_expiry_interval {
        props.insert("message-expiry-interval".into(), json!(v));
    }
    if let Some(v) = &p.content_type {
        props.insert("content-type".into(), json!(v.as_str()));
    }
    if let Some(v) = &p.response_topic {
        props.insert("response-topic".into(), json!(v.as_str()));
    }
    if let Some(v) = &p.correlation_data {
        let (text, enc) = text_or_base64(v);
        props.insert("correlation-data".into(), json!(text));
        if enc != "utf-8" {
            props.insert("correlation-data-encoding".into(), json!(enc));
        }
    }
    if !p.subscription_identifiers.is_empty() {
        props.insert(
            "subscription-identifiers".into(),
            json!(p.subscription_identifiers),
        );
    }
    if !p.user_properties.is_empty() {
        // An object like mosquitto's; a key that repeats maps to the array of its values.
        let mut users = Map::new();
        for (k, v) in &p.user_properties {
            match users.get_mut(k.as_str()) {
                None => {
                    users.insert(k.to_string(), json!(v.as_str()));
                }
                Some(Value::Array(a)) => a.push(json!(v.as_str())),
                Some(old) => *old = json!([old.clone(), v.as_str()]),
            }
        }
        props.insert("user-properties".into(), Value::Object(users));
    }
    Value::Object(props)
}

/// Parses the body of `POST /api/v1/publish`:
///
/// ```json
/// {"topic": "a/b", "payload": "text", "payload_encoding": "utf-8" | "base64",
///  "qos": 0, "retain": false,
///  "properties": {"content-type": "...", "response-topic": "...", "correlation-data": "...",
///                 "message-expiry-interval": 60, "payload-format-indicator": 1,
///                 "user-properties": {"k": "v" | ["v1", "v2"]}}}
/// ```
pub fn parse_publish(body: &[u8]) -> Result<AdminPublish, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let o = v.as_object().ok_or("the body must be a JSON object")?;
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "topic" | "payload" | "payload_encoding" | "qos" | "retain" | "properties"
        ) {
            return Err(format!("unknown field `{k}`"));
        }
    }
    let topic = o
        .get("topic")
        .and_then(Value::as_str)
        .ok_or("`topic` (a string) is required")?
        .to_string();
    let text = match o.get("payload") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("`payload` must be a string".into()),
    };
    let payload = match o.get("payload_encoding").and_then(Value::as_str) {
        None | Some("utf-8") | Some("utf8") => Bytes::copy_from_slice(text.as_bytes()),
        Some("base64") => Bytes::from(base64_decode(text).ok_or("`payload` is not valid base64")?),
        Some(other) => return Err(format!("unknown payload_encoding `{other}`")),
    };
    let qos = match o.get("qos").map(Value::as_u64) {
        None => QoS::AtMostOnce,
        Some(Some(0)) => QoS::AtMostOnce,
        Some(Some(1)) => QoS::AtLeastOnce,
        Some(Some(2)) => QoS::ExactlyOnce,
        Some(_) => return Err("`qos` must be 0, 1 or 2".into()),
    };
    let retain = match o.get("retain") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`retain` must be true or false".into()),
    };
    let mut properties = Properties::default();
    if let Some(p) = o.get("properties") {
        let p = p.as_object().ok_or("`properties` must be an object")?;
        for (k, v) in p {
            let str_of = |v: &Value| {
                v.as_str()
                    .map(ByteStr::from)
                    .ok_or_else(|| format!("property `{k}` must be a string"))
            };
            match k.as_str() {
                "content-type" => properties.content_type = Some(str_of(v)?),
                "response-topic" => properties.response_topic = Some(str_of(v)?),
                "correlation-data" => {
                    properties.correlation_data = Some(Bytes::from(str_of(v)?.to_string()))
                }
                "message-expiry-interval" => {
                    properties.message_expiry_interval = Some(
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or("`message-expiry-interval` must be a number of seconds")?,
                    )
                }
                "payload-format-indicator" => {
                    properties.payload_format_indicator = match v.as_u64() {
                        Some(0) => Some(0),
                        Some(1) => Some(1),
                        _ => return Err("`payload-format-indicator` must be 0 or 1".into()),
                    }
                }
                "user-properties" => {
                    let users = v.as_object().ok_or("`user-properties` must be an object")?;
                    for (name, value) in users {
                        let values: Vec<&Value> = match value {
                            Value::Array(a) => a.iter().collect(),
                            other => vec![other],
                        };
                        for value in values {
                            let value = value
                                .as_str()
                                .ok_or("user property values must be strings")?;
                            properties
                                .user_properties
                                .push((ByteStr::from(name.as_str()), ByteStr::from(value)));
                        }
                    }
                }
                other => return Err(format!("unknown property `{other}`")),
            }
        }
    }
    if properties.payload_format_indicator == Some(1) && std::str::from_utf8(&payload).is_err() {
        return Err("payload-format-indicator is 1 but the payload is not UTF-8".into());
    }
    Ok(AdminPublish {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

/// Text of binary data: itself when UTF-8, else base64.
pub fn text_or_base64(data: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(data) {
        Ok(s) => (s.to_owned(), "utf-8"),
        Err(_) => (base64_encode(data), "base64"),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` when invalid.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set, for query strings).
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Query parameters, decoded.
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// The wall-clock time of `t`, given that `now` is the present.
pub fn wall_clock(t: Instant, now: Instant) -> SystemTime {
    let wall_now = SystemTime::now();
    if t <= now {
        wall_now
            .checked_sub(now - t)
            .unwrap_or(UNIX_EPOCH + Duration::ZERO)
    } else {
        wall_now + (t - now)
    }
}

/// `2024-05-01T12:34:56Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\x00\x80"] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert!(base64_decode("a$b").is_none());
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Fb%23", false).unwrap(), "a/b#");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert!(percent_decode("%zz", false).is_none());
        assert_eq!(
            query_params(Some("filter=%24SYS%2F%23&limit=5")),
            vec![
                ("filter".to_string(), "$SYS/#".to_string()),
                ("limit".to_string(), "5".to_string())
            ]
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59Z"
        );
    }

    #[test]
    fn publish_body() {
        let p = parse_publish(
            br#"{"topic":"a/b","payload":"AAE=","payload_encoding":"base64","qos":1,"retain":true,
                 "properties":{"content-type":"x","user-properties":{"k":["1","2"]}}}"#,
        )
        .unwrap();
        assert_eq!(p.topic, "a/b");
        assert_eq!(&p.payload[..], &[0, 1]);
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(p.retain);
        assert_eq!(p.properties.user_properties.len(), 2);
        assert!(parse_publish(br#"{"topic":"a","qos":3}"#).is_err());
        assert!(parse_publish(br#"{"topic":"a","bogus":1}"#).is_err());
        assert!(parse_publish(br#"{"payload":"x"}"#).is_err());
    }
}
