//! The admin listener against a broker core fed by hand: every endpoint of the JSON API, the
//! token, health and readiness, and `/metrics` parsed and checked against known traffic.

mod admin_support;

use admin_support::*;
use std::sync::Arc;
use std::time::Duration;
use tern::admin::{AdminServer, AdminSettings};
use tern::metrics::{ListenerMetrics, Metrics};
use tern_codec::{Packet, reason};
use tern_core::{Action, CloseReason};

#[tokio::test]
async fn health_and_dashboard_need_no_token() {
    let h = Harness::start(Some("s3cret")).await;
    let r = h.get("/healthz").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(h.get("/readyz").await.status, 200);
    let page = h.get("/dashboard").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.text().contains("<title>tern"));
    assert_eq!(h.get("/").await.status, 200);
    assert_eq!(h.get("/nope").await.status, 404);
}

#[tokio::test]
async fn readyz_fails_when_the_core_does_not_answer() {
    // A call channel nobody serves: the core is stuck.
    let (calls, _stuck) = tokio::sync::mpsc::channel(1);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let admin = AdminServer::start(
        AdminSettings::new("127.0.0.1:0".parse().unwrap(), None),
        calls,
        Arc::new(Metrics::new()),
        rx,
    )
    .await
    .unwrap();
    let r = http(admin.local_addr(), "GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        http(admin.local_addr(), "GET", "/healthz", None, None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn token_protects_the_api_and_metrics() {
    let h = Harness::start(Some("s3cret")).await;
    for path in ["/api/v1/clients", "/metrics", "/api/v1/overview"] {
        let r = http(h.addr, "GET", path, None, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.headers["www-authenticate"].starts_with("Bearer"));
        assert_eq!(
            http(h.addr, "GET", path, Some("wrong"), None).await.status,
            401
        );
        assert_eq!(
            http(h.addr, "GET", path, Some("s3cre"), None).await.status,
            401
        );
        assert_eq!(
            http(h.addr, "GET", path, Some("s3cret"), None).await.status,
            200,
            "{path}"
        );
    }
    // A refused write changes nothing.
    let r = http(
        h.addr,
        "POST",
        "/api/v1/publish",
        None,
        Some(r#"{"topic":"x","payload":"y","retain":true}"#),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(h.core.lock().unwrap().broker.retained_count(), 0);
    assert_eq!(
        h.metrics
            .admin_auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
}

#[tokio::test]
async fn admin_beyond_loopback_without_token_is_refused() {
    let (calls, _rx) = tokio::sync::mpsc::channel(1);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let r = AdminServer::start(
        AdminSettings::new("0.0.0.0:0".parse().unwrap(), None),
        calls,
        Arc::new(Metrics::new()),
        rx,
    )
    .await;
    assert!(r.is_err());
}

#[tokio::test]
async fn clients_sessions_subscriptions() {
    let mut h = Harness::start(None).await;
    known_traffic(&mut h);

    let clients = h.get("/api/v1/clients").await.json();
    assert_eq!(clients["count"], 2);
    let ids: Vec<&str> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pub", "sub"]);

    let sub = h.get("/api/v1/clients/sub").await.json();
    assert_eq!(sub["protocol"], "5.0");
    assert_eq!(sub["keep_alive"], 30);
    assert_eq!(sub["subscriptions"], 1);
    assert_eq!(sub["session_expiry_interval"], 3600);
    // QoS 1 and QoS 2 deliveries await acknowledgement.
    assert_eq!(sub["inflight"], 2);
    assert_eq!(sub["queued"], 0);
    assert!(sub["connected_since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(h.get("/api/v1/clients/idle").await.status, 404);
    assert_eq!(h.get("/api/v1/clients/nobody").await.status, 404);

    let sessions = h.get("/api/v1/sessions").await.json();
    assert_eq!(sessions["count"], 3);
    assert_eq!(sessions["truncated"], false);
    assert!(sessions.get("next").is_none());
    // A page at a time: `limit` entries, and `next` for the `after` of the next page.
    let mut after = String::new();
    let mut ids = Vec::new();
    loop {
        let page = h
            .get(&format!("/api/v1/sessions?limit=2&after={after}"))
            .await
            .json();
        assert_eq!(page["count"], 3);
        for s in page["sessions"].as_array().unwrap() {
            ids.push(s["client_id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(page["truncated"], true);
                after = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(ids, ["idle", "pub", "sub"]);
    assert_eq!(h.get("/api/v1/clients?limit=x").await.status, 400);
    let idle = h.get("/api/v1/sessions/idle").await.json();
    assert_eq!(idle["online"], false);
    assert_eq!(idle["protocol"], "3.1.1");
    assert!(idle["expires_in_secs"].as_u64().unwrap() > 600_000);
    assert_eq!(idle["subscriptions"][0]["filter"], "$share/g/jobs/+");
    assert_eq!(idle["subscriptions"][0]["share_group"], "g");
    assert_eq!(h.get("/api/v1/sessions/nobody").await.status, 404);

    let subs = h.get("/api/v1/subscriptions").await.json();
    assert_eq!(subs["count"], 2);
    let mine = h.get("/api/v1/subscriptions?client_id=sub").await.json();
    assert_eq!(mine["count"], 1);
    assert_eq!(mine["subscriptions"][0]["filter"], "sensors/#");
    assert_eq!(mine["subscriptions"][0]["qos"], 1);
}

#[tokio::test]
async fn disconnect_a_client_and_delete_sessions() {
    let mut h = Harness::start(None).await;
    let (sub, _) = known_traffic(&mut h);

    // DELETE /api/v1/clients/{id}: DISCONNECT 0x98 to the v5 client, then close.
    let r = http(h.addr, "DELETE", "/api/v1/clients/sub", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let actions = h.admin_actions();
    assert!(actions.iter().any(|a| matches!(a,
        Action::Send(c, p) if *c == sub && matches!(&**p, Packet::Disconnect(d) if d.reason == reason::ADMINISTRATIVE_ACTION))));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Close(c, CloseReason::AdminAction) if *c == sub))
    );
    // Its persistent session stays, offline.
    let s = h.get("/api/v1/sessions/sub").await.json();
    assert_eq!(s["online"], false);
    assert_eq!(
        http(h.addr, "POST", "/api/v1/clients/sub/disconnect", None, None)
            .await
            .status,
        404
    );
    assert_eq!(
        http(h.addr, "POST", "/api/v1/clients/pub/disconnect", None, None)
            .await
            .status,
        200
    );

    // Delete an offline session, then check it is gone.
    let r = http(h.addr, "DELETE", "/api/v1/sessions/idle", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.get("/api/v1/sessions/idle").await.status, 404);
    assert_eq!(
        http(h.addr, "DELETE", "/api/v1/sessions/idle", None, None)
            .await
            .status,
        404
    );
    // An online one is disconnected first.
    let again = h.connect(tern_codec::ProtocolVersion::V5, "again", false);
    h.admin_actions();
    assert_eq!(
        http(h.addr, "DELETE", "/api/v1/sessions/again", None, None)
            .await
            .status,
        200
    );
    assert!(
        h.admin_actions()
            .iter()
            .any(|a| matches!(a, Action::Close(c, _) if *c == again))
    );
    assert_eq!(h.get("/api/v1/sessions").await.json()["count"], 1);
}

#[tokio::test]
async fn retained_list_read_delete() {
    let mut h = Harness::start(None).await;
    known_traffic(&mut h);

    let all = h.get("/api/v1/retained").await.json();
    assert_eq!(all["count"], 2);
    assert_eq!(all["truncated"], false);
    assert_eq!(all["retained"][0]["topic"], "status/hall");
    assert_eq!(all["retained"][0]["payload"], "off");
    assert_eq!(all["retained"][0]["qos"], 1);

    let topics = h
        .get("/api/v1/retained?filter=status%2F%2B&payload=false&limit=1")
        .await
        .json();
    assert_eq!(topics["count"], 2);
    assert_eq!(topics["truncated"], true);
    assert!(topics["retained"][0].get("payload").is_none());

    let one = h.get("/api/v1/retained/status/kitchen").await.json();
    assert_eq!(one["payload"], "on");
    assert_eq!(one["payload_encoding"], "utf-8");
    assert_eq!(h.get("/api/v1/retained/status/none").await.status, 404);
    assert_eq!(
        h.get("/api/v1/retained?filter=a%2F%23%2Fb").await.status,
        400
    );

    // $SYS topics are listed (and readable, percent-encoded) once published.
    h.tick();
    let sys = h
        .get("/api/v1/retained/%24SYS/broker/clients/connected")
        .await
        .json();
    assert_eq!(sys["payload"], "2");

    let r = http(
        h.addr,
        "DELETE",
        "/api/v1/retained/status/kitchen",
        None,
        None,
    )
    .await;
    assert_eq!(r.json()["deleted"], 1);
    let r = http(h.addr, "DELETE", "/api/v1/retained?filter=%23", None, None).await;
    assert_eq!(r.json()["deleted"], 1, "# does not match $SYS topics");
    let r = http(
        h.addr,
        "DELETE",
        "/api/v1/retained?filter=%24SYS%2F%23",
        None,
        None,
    )
    .await;
    assert!(r.json()["deleted"].as_u64().unwrap() > 20);
    assert_eq!(h.get("/api/v1/retained").await.json()["count"], 0);
}

#[tokio::test]
async fn publish_as_the_broker() {
    let mut h = Harness::start(None).await;
    let (sub, _) = known_traffic(&mut h);
    h.admin_actions();
    let body = r#"{"topic":"sensors/admin","payload":"aGk=","payload_encoding":"base64","qos":1,
                  "retain":true,"properties":{"content-type":"text/plain",
                  "user-properties":{"by":"test"}}}"#;
    let r = http(h.addr, "POST", "/api/v1/publish", None, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["routed"], 1);
    let actions = h.admin_actions();
    let delivered = actions.iter().find_map(|a| match a {
        Action::Send(c, p) if *c == sub => match &**p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        },
        _ => None,
    });
    let p = delivered.expect("delivered to sub");
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    let kept = h.get("/api/v1/retained/sensors/admin").await.json();
    assert_eq!(kept["properties"]["user-properties"]["by"], "test");

    for bad in [
        r#"{"topic":"a/#","payload":"x"}"#,
        r#"{"topic":"a","qos":5}"#,
        r#"not json"#,
        r#"{"topic":"a","extra":1}"#,
    ] {
        let r = http(h.addr, "POST", "/api/v1/publish", None, Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(
        http(h.addr, "GET", "/api/v1/publish", None, None)
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn overview_has_counts_history_and_sys() {
    let mut h = Harness::start(None).await;
    known_traffic(&mut h);
    h.tick();
    let o = h.get("/api/v1/overview").await.json();
    assert_eq!(o["clients_connected"], 2);
    assert_eq!(o["sessions"], 3);
    assert_eq!(o["sessions_offline"], 1);
    assert_eq!(o["subscriptions"], 2);
    // The two published retained messages, and the $SYS tree the tick just published.
    assert!(o["retained"].as_u64().unwrap() > 20);
    assert_eq!(o["publish_received"], 5);
    assert_eq!(o["history"].as_array().unwrap().len(), 1);
    assert_eq!(o["history"][0][1], 2);
    assert_eq!(o["sys"]["$SYS/broker/clients/connected"], "2");
    assert_eq!(o["sys_interval_secs"], 1);
}

#[tokio::test]
async fn metrics_parse_and_match_known_traffic() {
    let mut h = Harness::start(None).await;
    known_traffic(&mut h);
    // What the I/O layer would count.
    let l = h.metrics.listener("127.0.0.1:1883".parse().unwrap());
    for _ in 0..3 {
        l.conn_opened();
    }
    l.conn_closed();
    ListenerMetrics::add(&l.bytes_received, 1234);
    ListenerMetrics::add(&l.refused_max_connections, 2);
    h.metrics
        .store_commit_seconds
        .observe_duration(Duration::from_micros(300));
    h.metrics.store_batch_records.observe(7.0);

    let r = h.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let p = Prom::parse(&r.text());
    let lbl = [("listener", "127.0.0.1:1883")];
    assert_eq!(p.value("tern_up", &[]), 1.0);
    assert_eq!(p.value("tern_connections_open", &lbl), 2.0);
    assert_eq!(p.value("tern_connections_accepted_total", &lbl), 3.0);
    assert_eq!(p.value("tern_bytes_received_total", &lbl), 1234.0);
    assert_eq!(
        p.value(
            "tern_limit_hits_total",
            &[("listener", "127.0.0.1:1883"), ("limit", "max_connections")]
        ),
        2.0
    );
    assert_eq!(p.value("tern_clients_connected", &[]), 2.0);
    assert_eq!(p.value("tern_sessions", &[("state", "online")]), 2.0);
    assert_eq!(p.value("tern_sessions", &[("state", "offline")]), 1.0);
    assert_eq!(p.value("tern_subscriptions", &[]), 2.0);
    assert_eq!(p.value("tern_shared_subscriptions", &[]), 1.0);
    assert_eq!(p.value("tern_retained_messages", &[]), 2.0);
    for q in ["0", "1", "2"] {
        assert_eq!(
            p.value("tern_messages_received_total", &[("qos", q)]),
            if q == "2" { 1.0 } else { 2.0 },
            "qos {q}"
        );
    }
    // "sub" gets the three sensors/ messages, at QoS 0, 1, 1 (its subscription is QoS 1).
    assert_eq!(p.value("tern_messages_sent_total", &[("qos", "0")]), 1.0);
    assert_eq!(p.value("tern_messages_sent_total", &[("qos", "1")]), 2.0);
    assert_eq!(p.value("tern_publish_bytes_received_total", &[]), 11.0);
    assert_eq!(p.value("tern_publish_bytes_sent_total", &[]), 6.0);
    assert_eq!(p.value("tern_inflight_messages", &[]), 2.0);
    // No spool in this harness: nothing is paged out, the budget is the default.
    assert_eq!(p.value("tern_queued_paged_messages", &[]), 0.0);
    assert_eq!(
        p.value("tern_queue_memory_budget_bytes", &[]),
        (64 << 20) as f64
    );
    assert_eq!(p.value("tern_spool_lost_messages_total", &[]), 0.0);
    assert_eq!(p.value("tern_connects_total", &[]), 3.0);
    assert_eq!(
        p.value("tern_messages_dropped_total", &[("reason", "queue_full")]),
        0.0
    );
    assert_eq!(p.types["tern_store_commit_seconds"], "histogram");
    assert_eq!(p.value("tern_store_commit_seconds_count", &[]), 1.0);
    assert_eq!(
        p.value("tern_store_commit_seconds_bucket", &[("le", "0.0005")]),
        1.0
    );
    assert_eq!(
        p.value("tern_store_commit_seconds_bucket", &[("le", "0.00025")]),
        0.0
    );
    assert_eq!(
        p.value("tern_store_batch_records_bucket", &[("le", "+Inf")]),
        1.0
    );
    // Buckets are cumulative.
    let buckets: Vec<f64> = p
        .samples
        .iter()
        .filter(|(n, _, _)| n == "tern_store_batch_records_bucket")
        .map(|s| s.2)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
    // Counter families end in _total.
    for (name, t) in &p.types {
        if t == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}
