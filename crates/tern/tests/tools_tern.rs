//! `tern pub`, `tern sub` and `tern rr` (the real binary) against an in-process tern broker.

mod common;
mod tools_support;

use common::TestBroker;
use std::time::Duration;
use tern_client::{Client, ConnectOptions, Message};
use tern_codec::QoS;
use tools_support::{Sub, publish, run, run_with_stdin};

fn p(port: u16) -> String {
    port.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_to_sub_at_each_qos() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    for (qos, version) in [("0", "311"), ("1", "5"), ("2", "31"), ("2", "5")] {
        let topic = format!("qos/{qos}/{version}");
        let sub = Sub::start(
            port,
            &["-t", "qos/#", "-q", qos, "-V", version, "-v", "-C", "1"],
        )
        .await;
        publish(
            port,
            &["-t", &topic, "-m", "hello world", "-q", qos, "-V", version],
        )
        .await;
        let out = sub.finish().await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.lines(), [format!("{topic} hello world")]);
        if qos != "0" {
            assert!(
                out.stderr
                    .contains(&format!("received PUBLISH (d0, q{qos}")),
                "{}",
                out.stderr
            );
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_waits_for_qos_acks() {
    let broker = TestBroker::start().await;
    let port = p(broker.addr.port());
    for (qos, ack) in [("1", "received PUBACK"), ("2", "received PUBCOMP")] {
        let out = run(&[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "a",
            "-m",
            "x",
            "-q",
            qos,
            "-d",
        ])
        .await;
        assert_eq!(out.code, 0, "{out:?}");
        let ack_at = out.stderr.find(ack).expect("ack traced");
        let disconnect_at = out.stderr.find("sending DISCONNECT").expect("disconnect");
        assert!(ack_at < disconnect_at, "{}", out.stderr);
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_mode_and_count() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    let sub = Sub::start(port, &["-t", "lines", "-q", "1", "-C", "3"]).await;
    let out = run_with_stdin(
        &[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &p(port),
            "-t",
            "lines",
            "-l",
            "-q",
            "1",
        ],
        b"first\nsecond line\r\nthird\nfourth\n",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = sub.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["first", "second line", "third"]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_only_and_remove_retained() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    publish(port, &["-t", "ret/a", "-m", "A", "-r", "-q", "1"]).await;
    publish(port, &["-t", "ret/b", "-m", "B", "-r", "-q", "1"]).await;

    // --retained-only prints the retained messages and exits at the first live one.
    let sub = Sub::start(port, &["-t", "ret/#", "--retained-only", "-v"]).await;
    publish(port, &["-t", "ret/live", "-m", "L"]).await;
    let out = sub.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.lines();
    lines.sort();
    assert_eq!(lines, ["ret/a A", "ret/b B"]);

    // Without a live message, -W ends it with the timeout code.
    let out = run(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "ret/#",
        "--retained-only",
        "-W",
        "1",
    ])
    .await;
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.lines().len(), 2);

    // --remove-retained clears them (-T keeps ret/b).
    let out = run(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "ret/#",
        "--remove-retained",
        "-T",
        "ret/b",
        "-C",
        "1",
        "-v",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["ret/a A"]);
    let (mut c, _) = Client::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    c.subscribe_one("ret/#", QoS::AtMostOnce).await.unwrap();
    let m = c.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("ret/b", &b"B"[..]));
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_err());
    c.disconnect().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_with_user_properties() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    let sub = Sub::start(
        port,
        &["-V", "5", "-t", "j/#", "--json", "-C", "2", "-q", "2"],
    )
    .await;
    publish(
        port,
        &[
            "-V",
            "5",
            "-t",
            "j/text",
            "-m",
            "héllo",
            "-q",
            "1",
            "-r",
            "-D",
            "publish",
            "user-property",
            "origin",
            "test",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::write(&bin, [0xff, 0x00, 0xfe]).unwrap();
    publish(
        port,
        &["-V", "5", "-t", "j/bin", "-f", bin.to_str().unwrap()],
    )
    .await;
    let out = sub.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    let msgs: Vec<serde_json::Value> = out
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(msgs.len(), 2);
    let text = &msgs[0];
    assert_eq!(text["topic"], "j/text");
    assert_eq!(text["payload"], "héllo");
    assert_eq!(text["payload_encoding"], "utf-8");
    assert_eq!(text["qos"], 1);
    assert_eq!(text["retain"], false);
    assert_eq!(text["properties"]["user-properties"]["origin"], "test");
    assert_eq!(text["properties"]["content-type"], "text/plain");
    let bin = &msgs[1];
    assert_eq!(bin["payload"], "/wD+");
    assert_eq!(bin["payload_encoding"], "base64");
    assert_eq!(bin["payloadlen"], 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_user_property_and_session_expiry() {
    // A persistent v5 session made with -c -E keeps its subscription: a message published
    // while the subscriber is away is delivered when it comes back.
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    let port_s = p(port);
    let base = [
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port_s,
        "-V",
        "5",
        "-i",
        "keeper",
        "-c",
        "-x",
        "600",
        "-q",
        "1",
        "-t",
        "keep/#",
    ];
    let mut args = base.to_vec();
    args.extend(["-E", "-D", "connect", "user-property", "who", "me"]);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{out:?}");
    publish(port, &["-t", "keep/1", "-m", "while away", "-q", "1"]).await;
    let mut args = base.to_vec();
    args.extend(["-C", "1", "-v"]);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["keep/1 while away"]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_sub_is_killed() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    let (mut watcher, _) = Client::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    watcher
        .subscribe_one("wills/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut sub = Sub::start(
        port,
        &[
            "-t",
            "anything",
            "--will-topic",
            "wills/sub",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ],
    )
    .await;
    sub.kill().await;
    let m = watcher.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.topic.as_str(), "wills/sub");
    assert_eq!(&m.payload[..], b"gone");
    assert_eq!(m.qos, QoS::AtLeastOnce);
    // A clean exit sends DISCONNECT: no will.
    let out = run(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "x",
        "-E",
        "--will-topic",
        "wills/clean",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        watcher
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_err()
    );
    watcher.disconnect().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    // The responder: answers each request on its Response Topic with its Correlation Data.
    let (mut responder, _) = Client::connect(&ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    responder
        .subscribe_one("svc/echo", QoS::AtLeastOnce)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let req = responder.recv().await.unwrap();
        let props: tern_codec::Properties = tern_codec::PropertyValues {
            correlation_data: req.properties.correlation_data.clone(),
            ..Default::default()
        }
        .into();
        // A response with other correlation data first: tern rr must skip it.
        let other: tern_codec::Properties = tern_codec::PropertyValues {
            correlation_data: Some(bytes::Bytes::from_static(b"not-yours")),
            ..Default::default()
        }
        .into();
        let topic = req
            .properties
            .response_topic
            .clone()
            .expect("response topic");
        responder
            .publish(Message::new(&topic, "wrong").properties(other))
            .await
            .unwrap();
        let mut answer = b"echo: ".to_vec();
        answer.extend_from_slice(&req.payload);
        responder
            .publish(
                Message::new(&topic, answer)
                    .qos(QoS::AtLeastOnce)
                    .properties(props),
            )
            .await
            .unwrap();
        responder.disconnect().await.unwrap();
    });
    let out = run(&[
        "rr",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "svc/echo",
        "-e",
        "replies/me",
        "-m",
        "ping",
        "-q",
        "1",
        "-W",
        "10",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["echo: ping"]);
    task.await.unwrap();

    // Nobody answers: timeout.
    let out = run(&[
        "rr",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "svc/none",
        "-e",
        "replies/me",
        "-m",
        "ping",
        "-W",
        "1",
    ])
    .await;
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.errors(), ["tern rr: no response within 1 s"]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes() {
    // Nothing listening: connection failure, one line.
    let port = tools_support::free_port();
    let out = run(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "a",
        "-m",
        "x",
    ])
    .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        out.errors(),
        [format!(
            "tern pub: cannot connect to 127.0.0.1:{port}: connection refused"
        )]
    );
    let out = run(&["sub", "-h", "127.0.0.1", "-p", &p(port), "-t", "a"]).await;
    assert_eq!(out.code, 3, "{out:?}");

    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    // Timeout.
    let out = run(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "quiet",
        "-W",
        "1",
    ])
    .await;
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.errors(), ["tern sub: timed out after 1 s"]);
    // CONNACK refusal: an empty client id with a persistent 3.1.1 session is rejected.
    let out = run(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "a",
        "-m",
        "x",
        "-c",
        "-i",
        "",
    ])
    .await;
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(
        out.errors(),
        ["tern pub: connection refused: identifier rejected (CONNACK 0x02)"]
    );
    // Usage errors: one line, code 2.
    for args in [
        &["pub", "-t", "a"][..],
        &["pub", "-m", "x"],
        &["pub", "-t", "a/#", "-m", "x"],
        &[
            "pub",
            "-t",
            "a",
            "-m",
            "x",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
        &["sub", "-t", "a/#/b"],
        &["rr", "-t", "a", "-m", "x"],
    ] {
        let out = run(args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert_eq!(out.errors().len(), 1, "{args:?}: {out:?}");
    }
    // clap's own usage errors use 2 as well.
    let out = run(&["pub", "--no-such-flag"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_texts() {
    for tool in ["pub", "sub", "rr"] {
        let out = run(&[tool, "--help"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
        assert!(out.stdout.contains("-h, --host <HOST>"), "{}", out.stdout);
        assert!(out.stdout.contains("--cafile <FILE>"), "{}", out.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_and_no_eol() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    let sub = Sub::start(
        port,
        &["-t", "f/#", "-F", "%t|%p|%q|%r|%l", "-C", "1", "-q", "1"],
    )
    .await;
    publish(port, &["-t", "f/1", "-m", "hey", "-q", "1"]).await;
    let out = sub.finish().await;
    assert_eq!(out.stdout, "f/1|hey|1|0|3\n");
    let sub = Sub::start(port, &["-t", "f/#", "-N", "-C", "2"]).await;
    publish(port, &["-t", "f/1", "-m", "a", "-q", "1"]).await;
    publish(port, &["-t", "f/2", "-m", "b", "-q", "1"]).await;
    let out = sub.finish().await;
    assert_eq!(out.stdout, "ab");
    broker.stop().await;
}
