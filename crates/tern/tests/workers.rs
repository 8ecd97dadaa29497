//! `tern serve --workers N`. With one worker the broker writes a fan-out to its subscribers
//! itself, a few at a time, taking new messages between (see `Driver::write_some`); with two,
//! the connections' tasks write it. Either way a fan-out to more subscribers than one such
//! chunk, with messages published back to back so that they arrive while a round is being
//! written, reaches every subscriber whole and in order, at QoS 0 and QoS 1.

mod admin_support;

use admin_support::*;
use tern_client::{Connection, builder};
use tern_codec::ProtocolVersion::V3_1_1;
use tern_codec::{Packet, QoS};

/// More than `WRITE_CHUNK` (8) and `DIRECT_WRITES` (4) in the driver.
const SUBSCRIBERS: usize = 20;
const MESSAGES: usize = 200;

async fn connect(addr: std::net::SocketAddr, id: &str) -> Connection {
    let mut c = Connection::connect(addr, V3_1_1).await.unwrap();
    c.send(&Packet::Connect(Box::new(builder::connect(
        V3_1_1, id, true, 60,
    ))))
    .await
    .unwrap();
    match c.recv_timeout(WAIT).await.unwrap() {
        Packet::ConnAck(a) => assert_eq!(a.code, 0),
        other => panic!("{other:?}"),
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_on_one_worker_reaches_every_subscriber_in_order() {
    fan_out(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_on_two_workers_reaches_every_subscriber_in_order() {
    fan_out(2).await;
}

async fn fan_out(workers: u64) {
    let arg = workers.to_string();
    let tern = TernProcess::start(&["--workers", &arg]).await;
    let started = eventually("the start line", || {
        let lines = tern.log_lines();
        async move {
            lines
                .into_iter()
                .find(|l| l["fields"]["message"] == "tern started")
        }
    })
    .await;
    assert_eq!(started["fields"]["workers"], workers, "{started}");

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let topic = format!("fan/{}", qos as u8);
        let mut subs = Vec::new();
        for i in 0..SUBSCRIBERS {
            let mut s = connect(tern.mqtt, &format!("sub-{}-{i}", qos as u8)).await;
            s.send(&builder::subscribe(1, &[(topic.as_str(), qos)]))
                .await
                .unwrap();
            match s.recv_timeout(WAIT).await.unwrap() {
                Packet::SubAck(a) => assert_eq!(a.reasons, vec![qos as u8]),
                other => panic!("{other:?}"),
            }
            subs.push(s);
        }
        let mut publisher = connect(tern.mqtt, &format!("pub-{}", qos as u8)).await;
        for n in 0..MESSAGES {
            let id = (qos != QoS::AtMostOnce).then_some(n as u16 + 1);
            let payload = (n as u32).to_be_bytes().to_vec();
            publisher
                .send(&builder::publish(&topic, payload, qos, false, id))
                .await
                .unwrap();
        }
        for (i, s) in subs.iter_mut().enumerate() {
            for n in 0..MESSAGES {
                let p = match s.recv_timeout(WAIT).await {
                    Ok(Packet::Publish(p)) => p,
                    other => panic!("subscriber {i}, message {n}: {other:?}"),
                };
                assert_eq!(
                    p.payload[..],
                    (n as u32).to_be_bytes(),
                    "subscriber {i}: every message, in order [MQTT-4.6.0-6]"
                );
                if let Some(id) = p.packet_id {
                    s.send(&Packet::PubAck(tern_codec::Ack::new(id)))
                        .await
                        .unwrap();
                }
            }
        }
    }
    tern.stop().await;
}
