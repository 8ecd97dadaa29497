//! The admin listener of a running `tern serve` with real MQTT clients: addresses in the client
//! list, disconnect through the API (DISCONNECT 0x98 on the wire), `/metrics` with the I/O
//! counters, the token, structured JSON connection events, and the log limiter in a takeover
//! loop.
//!
//! Needs the admin/`$SYS` wiring in the driver, server and connections (the call points are
//! listed in `crates/tern/src/admin/handler.rs`).

mod admin_support;

use admin_support::*;
use tern_client::{Connection, builder};
use tern_codec::ProtocolVersion::V5;
use tern_codec::{Packet, QoS, reason};

const TOKEN: &str = "e2e-token";

async fn connect(addr: std::net::SocketAddr, id: &str) -> Connection {
    let mut c = Connection::connect(addr, V5).await.unwrap();
    c.send(&Packet::Connect(Box::new(builder::connect(
        V5, id, true, 60,
    ))))
    .await
    .unwrap();
    match c.recv_timeout(WAIT).await.unwrap() {
        Packet::ConnAck(a) => assert_eq!(a.code, 0),
        other => panic!("{other:?}"),
    }
    c
}

#[tokio::test]
async fn admin_api_on_a_running_broker() {
    let tern = TernProcess::start(&["--admin-token", TOKEN]).await;
    let admin = tern.admin;
    assert_eq!(http(admin, "GET", "/readyz", None, None).await.status, 200);
    assert_eq!(
        http(admin, "GET", "/api/v1/clients", None, None)
            .await
            .status,
        401
    );

    let mut c = connect(tern.mqtt, "e2e-client").await;
    c.send(&builder::subscribe(1, &[("e2e/#", QoS::AtLeastOnce)]))
        .await
        .unwrap();
    assert!(matches!(
        c.recv_timeout(WAIT).await.unwrap(),
        Packet::SubAck(_)
    ));
    let local = c.stream().tcp().local_addr().unwrap().to_string();

    let client = http(
        admin,
        "GET",
        "/api/v1/clients/e2e-client",
        Some(TOKEN),
        None,
    )
    .await
    .json();
    assert_eq!(client["address"], local.as_str());
    assert_eq!(client["protocol"], "5.0");
    assert_eq!(client["subscriptions"], 1);

    // Publish through the API: the client receives it.
    let r = http(
        admin,
        "POST",
        "/api/v1/publish",
        Some(TOKEN),
        Some(r#"{"topic":"e2e/x","payload":"from admin","qos":1}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    match c.recv_timeout(WAIT).await.unwrap() {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"from admin"),
        other => panic!("{other:?}"),
    }

    // /metrics: per-listener I/O counters and the core's figures.
    let m = Prom::parse(
        &http(admin, "GET", "/metrics", Some(TOKEN), None)
            .await
            .text(),
    );
    let listener = tern.mqtt.to_string();
    assert_eq!(m.value("tern_clients_connected", &[]), 1.0);
    assert!(m.value("tern_bytes_received_total", &[("listener", &listener)]) > 0.0);
    assert!(m.value("tern_packets_sent_total", &[("listener", &listener)]) >= 3.0);
    assert_eq!(
        m.value("tern_connections_open", &[("listener", &listener)]),
        1.0
    );
    assert_eq!(m.value("tern_admin_published_total", &[]), 1.0);

    // Disconnect through the API: DISCONNECT 0x98, then the connection closes.
    let r = http(
        admin,
        "DELETE",
        "/api/v1/clients/e2e-client",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    loop {
        match c.recv_timeout(WAIT).await {
            Ok(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, reason::ADMINISTRATIVE_ACTION);
                break;
            }
            Ok(Packet::PingResp) => {}
            other => panic!("expected DISCONNECT 0x98, got {other:?}"),
        }
    }
    c.expect_closed(WAIT).await.unwrap();

    // The connection events are in the JSON log with their reason.
    let lines = eventually("the disconnect event in the log", || {
        let lines = tern.log_lines();
        async move {
            lines
                .iter()
                .any(|l| l["fields"]["event"] == "disconnect")
                .then_some(lines)
        }
    })
    .await;
    let connect_ev = lines
        .iter()
        .find(|l| l["fields"]["event"] == "connect")
        .expect("connect event");
    assert_eq!(connect_ev["fields"]["client_id"], "e2e-client");
    assert_eq!(connect_ev["fields"]["peer"], local.as_str());
    let disc = lines
        .iter()
        .find(|l| l["fields"]["event"] == "disconnect")
        .unwrap();
    assert_eq!(disc["fields"]["reason"], "admin_action");
    assert_eq!(disc["fields"]["code"], "0x98");
    tern.stop().await;
}

#[tokio::test]
async fn a_takeover_loop_does_not_flood_the_log() {
    let tern = TernProcess::start(&[]).await;
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(connect(tern.mqtt, "looper").await);
    }
    let m = eventually("suppressed log lines counted", || async {
        let m = Prom::parse(&http(tern.admin, "GET", "/metrics", None, None).await.text());
        (m.value("tern_takeovers_total", &[]) >= 39.0
            && m.value("tern_log_lines_suppressed_total", &[]) > 0.0)
            .then_some(m)
    })
    .await;
    assert!(m.value("tern_disconnects_total", &[("reason", "taken_over")]) >= 39.0);
    let lines = tern.log_lines();
    let about_looper = lines
        .iter()
        .filter(|l| l["fields"]["client_id"] == "looper" && l["fields"]["event"].is_string())
        .count();
    assert!(
        about_looper <= tern::admin::events::PER_CLIENT as usize,
        "{about_looper} lines about the looping client"
    );
    tern.stop().await;
}
