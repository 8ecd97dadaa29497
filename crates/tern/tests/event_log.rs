//! The connection event log of the real binary (`tern serve` as a child process, its stderr
//! read line by line): one line per connect, refused connect and disconnect, with the client
//! id, the address and the reason; and none of them once the log level is above `info` (the
//! broker then skips the log's bookkeeping, and must still serve clients).

mod child;

use child::ChildBroker;
use std::time::Duration;
use tern_client::Connection;
use tern_codec::{Packet, ProtocolVersion};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const WAIT: Duration = Duration::from_secs(10);

/// The broker (killed when dropped) and its directory.
struct Broker {
    child: ChildBroker,
    _dir: tempfile::TempDir,
}

fn start(level: &str) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("events.toml");
    std::fs::write(&config, "sys_interval_secs = 0\ndurability = \"none\"\n").unwrap();
    let child = ChildBroker::start_logging(
        level,
        &config,
        &dir.path().join("data"),
        &[],
        "TERN_TEST_VERBOSE",
    );
    Broker { child, _dir: dir }
}

/// Connects `client_id` (keep alive 30 s) and returns the CONNACK's code.
async fn connect(
    b: &Broker,
    version: ProtocolVersion,
    client_id: &str,
    clean: bool,
) -> (Connection, u8) {
    child::mqtt_connect(b.child.addr, version, client_id, clean, 30).await
}

#[tokio::test]
async fn connects_refusals_and_disconnects_are_logged() {
    let b = start("info");
    let (mut c, code) = connect(&b, V5, "logged-client", true).await;
    assert_eq!(code, 0);
    let line = b
        .child
        .wait_for_line(
            &["client connected", "client_id=logged-client", "protocol=5"],
            WAIT,
        )
        .expect("a connect line");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    c.send(&Packet::Disconnect(Default::default()))
        .await
        .unwrap();
    c.expect_closed(WAIT).await.unwrap();
    let line = b
        .child
        .wait_for_line(&["client disconnected", "client_id=logged-client"], WAIT)
        .expect("a disconnect line");
    assert!(line.contains("client_disconnect"), "{line}");
    // [MQTT-3.1.3-8] 3.1.1: an empty client id with clean session 0 is refused (code 0x02).
    let (_c, code) = connect(&b, V3, "", false).await;
    assert_eq!(code, 2);
    b.child
        .wait_for_line(&["connection refused", "code=0x02"], WAIT)
        .expect("a refusal line");
}

#[tokio::test]
async fn above_info_nothing_is_logged_and_clients_are_served() {
    // Above info, but for the start-up line naming the listener (the test needs its port).
    let mut b = start("warn,tern::server=info");
    // The refusal first: the rounds after it are handled by the driver after it, so whatever
    // it would log is written by the time they end.
    let (_c, code) = connect(&b, V3, "", false).await;
    assert_eq!(code, 2);
    for round in 0..3 {
        let (mut c, code) = connect(&b, V3, "quiet-client", true).await;
        assert_eq!(code, 0, "round {round}");
        c.send(&Packet::PingReq).await.unwrap();
        assert_eq!(c.recv_timeout(WAIT).await.unwrap(), Packet::PingResp);
        c.send(&Packet::Disconnect(Default::default()))
            .await
            .unwrap();
        c.expect_closed(WAIT).await.unwrap();
    }
    // Every line the broker wrote, read to the end of its stderr.
    let lines = b.child.stop();
    assert!(
        !lines.iter().any(|l| l.contains("client connected")
            || l.contains("client disconnected")
            || l.contains("connection refused")),
        "{lines:#?}"
    );
}
