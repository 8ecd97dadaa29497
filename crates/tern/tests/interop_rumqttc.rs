//! Interop with rumqttc, an independent Rust client (MQTT 3.1.1 and 5.0).

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn rumqttc_v311_publish_subscribe_qos1_and_retained() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let b = TestBroker::start().await;
    let mut opts = MqttOptions::new("rumqttc-311", "127.0.0.1", b.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    client
        .publish("rq/retained", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    client.subscribe("rq/#", QoS::AtLeastOnce).await.unwrap();
    let mut got_retained = false;
    let mut sent_live = false;
    let result = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) if !sent_live => {
                    sent_live = true;
                    client
                        .publish("rq/live", QoS::AtLeastOnce, false, "now")
                        .await
                        .unwrap();
                }
                Event::Incoming(Packet::Publish(p)) => {
                    if p.topic == "rq/retained" {
                        assert!(p.retain);
                        assert_eq!(&p.payload[..], b"kept");
                        got_retained = true;
                    } else if p.topic == "rq/live" {
                        assert_eq!(&p.payload[..], b"now");
                        assert_eq!(p.qos, QoS::AtLeastOnce);
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    result.expect("live message arrives");
    assert!(got_retained);
}

#[tokio::test]
async fn rumqttc_v5_qos2_round_trip() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let b = TestBroker::start().await;
    let mut opts = MqttOptions::new("rumqttc-5", "127.0.0.1", b.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    client.subscribe("rq5/t", QoS::ExactlyOnce).await.unwrap();
    let result = tokio::time::timeout(WAIT, async {
        let mut published = false;
        loop {
            match eventloop.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) if !published => {
                    published = true;
                    client
                        .publish("rq5/t", QoS::ExactlyOnce, false, "exact")
                        .await
                        .unwrap();
                }
                Event::Incoming(Packet::Publish(p)) => {
                    assert_eq!(&p.payload[..], b"exact");
                    assert_eq!(p.qos, QoS::ExactlyOnce);
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    result.expect("QoS 2 message arrives");
}
