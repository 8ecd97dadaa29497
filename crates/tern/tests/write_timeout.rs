//! A client that reads nothing of what it is sent ([`limits.write_timeout_secs`]): its socket
//! stays full, and the broker closes it once the timeout passes without any progress, logs it,
//! and goes on serving others. The real binary (`tern serve` as a child process) and a client
//! with keep alive 0, so no other deadline can close it first.

mod child;

use child::ChildBroker;
use std::time::Duration;
use tern_client::{ClientError, builder};
use tern_codec::{Packet, ProtocolVersion, QoS};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const WAIT: Duration = Duration::from_secs(10);
/// Most bytes published before the broker must have given up on the reader.
const FLOOD_BYTES: usize = 512 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("write_timeout.toml");
    std::fs::write(
        &config,
        // A connect timeout far beyond the wait below: no other timer of the sleeper's may
        // fire (and wake it) while it is tested.
        "sys_interval_secs = 0\ndurability = \"none\"\n\n[limits]\nwrite_timeout_secs = 1\n\
         connect_timeout_secs = 3600\n",
    )
    .unwrap();
    let mut broker =
        ChildBroker::start(&config, &dir.path().join("data"), &[], "TERN_TEST_VERBOSE");
    let addr = broker.addr;

    // The sleeper subscribes, then never reads again (keep alive 0: no keep alive deadline).
    let (mut sleeper, code) = child::mqtt_connect(addr, V3, "sleeper", true, 0).await;
    assert_eq!(code, 0);
    sleeper
        .send(&builder::subscribe(1, &[("flood/#", QoS::AtMostOnce)]))
        .await
        .unwrap();
    assert!(matches!(
        sleeper.recv_timeout(WAIT).await.unwrap(),
        Packet::SubAck(_)
    ));

    // A publisher floods it until the broker reports the close (or the bound is reached).
    let flood = tokio::spawn(async move {
        let (mut p, code) = child::mqtt_connect(addr, V3, "flooder", true, 60).await;
        assert_eq!(code, 0);
        let payload = bytes::Bytes::from(vec![0x5a; 64 << 10]);
        let mut sent = 0;
        while sent < FLOOD_BYTES {
            let msg = builder::publish("flood/x", payload.clone(), QoS::AtMostOnce, false, None);
            if p.send(&msg).await.is_err() {
                break;
            }
            sent += payload.len();
        }
        p
    });
    let lines = broker.lines.clone();
    let closed = tokio::task::spawn_blocking(move || {
        child::wait_for(
            &lines,
            &["closing connection", "has not taken what it was sent"],
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert!(
        closed.is_some(),
        "the sleeper was not closed for not reading"
    );
    flood.abort();

    // The sleeper finds the end of the stream once it reads what was buffered for it.
    // (A packet within WAIT each time, or the end: a timeout means it is still open.)
    loop {
        match sleeper.recv_timeout(WAIT).await {
            Ok(_) => {}
            Err(ClientError::Closed) => break,
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the sleeper's connection did not end: {e}"),
        }
    }

    // Others are still served.
    let (mut c, code) = child::mqtt_connect(addr, V3, "after", true, 30).await;
    assert_eq!(code, 0);
    c.send(&Packet::PingReq).await.unwrap();
    assert_eq!(c.recv_timeout(WAIT).await.unwrap(), Packet::PingResp);
    broker.kill();
}
