//! `tern pub`/`tern sub` against Debian's mosquitto broker (the tools must work with any
//! broker), over plain TCP and over TLS.

mod tools_support;

use tools_support::{Mosquitto, Sub, run};

fn p(port: u16) -> String {
    port.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_round_trip_on_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    for (qos, version) in [("0", "311"), ("1", "5"), ("2", "31"), ("2", "5")] {
        let topic = format!("m/{qos}/{version}");
        let sub = Sub::start(
            m.port,
            &["-t", "m/#", "-q", qos, "-V", version, "-v", "-C", "1"],
        )
        .await;
        tools_support::publish(
            m.port,
            &["-t", &topic, "-m", "from tern", "-q", qos, "-V", version],
        )
        .await;
        let out = sub.finish().await;
        assert_eq!(out.code, 0, "{out:?}\n{}", m.log());
        assert_eq!(out.lines(), [format!("{topic} from tern")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_json_and_lines_on_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let port = m.port;
    tools_support::publish(port, &["-t", "ret/x", "-m", "kept", "-r", "-q", "1"]).await;
    // v5 user properties and retained flag in JSON.
    let sub = Sub::start(
        port,
        &["-V", "5", "-t", "ret/#", "--json", "-C", "2", "-q", "1"],
    )
    .await;
    tools_support::publish(
        port,
        &[
            "-V",
            "5",
            "-t",
            "ret/live",
            "-m",
            "now",
            "-q",
            "1",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    )
    .await;
    let out = sub.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    let msgs: Vec<serde_json::Value> = out
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs[0]["topic"], "ret/x");
    assert_eq!(msgs[0]["retain"], true);
    assert_eq!(msgs[1]["topic"], "ret/live");
    assert_eq!(msgs[1]["retain"], false);
    assert_eq!(msgs[1]["properties"]["user-properties"]["k"], "v");

    // --remove-retained, then nothing is retained any more.
    let out = run(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(port),
        "-t",
        "ret/#",
        "--remove-retained",
        "-C",
        "1",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["kept"]);
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
    assert_eq!(out.stdout, "");

    // Line mode at QoS 2.
    let sub = Sub::start(port, &["-t", "l", "-q", "2", "-C", "2"]).await;
    let out = tools_support::run_with_stdin(
        &[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &p(port),
            "-t",
            "l",
            "-l",
            "-q",
            "2",
        ],
        b"one\ntwo\n",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = sub.finish().await;
    assert_eq!(out.lines(), ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let ca = m.certs.ca.to_str().unwrap().to_owned();
    let tls_port = p(m.tls_port);
    let sub = Sub::start_raw(
        &[
            "sub",
            "-d",
            "-h",
            "localhost",
            "-p",
            &tls_port,
            "--cafile",
            &ca,
            "-t",
            "tls/#",
            "-v",
            "-C",
            "1",
            "-q",
            "1",
        ],
        "received SUBACK",
    )
    .await;
    let out = run(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port,
        "--cafile",
        &ca,
        "-t",
        "tls/1",
        "-m",
        "secret",
        "-q",
        "1",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}\n{}", m.log());
    let out = sub.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.lines(), ["tls/1 secret"]);

    // A certificate for another name: refused, unless --insecure.
    let wrong = p(m.wrong_name_port);
    let out = run(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &wrong,
        "--cafile",
        &ca,
        "-t",
        "t",
        "-m",
        "x",
    ])
    .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.errors().len(), 1, "{out:?}");
    assert!(out.stderr.contains("tls: handshake"), "{out:?}");
    let out = run(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &wrong,
        "--cafile",
        &ca,
        "--insecure",
        "-t",
        "t",
        "-m",
        "x",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");

    // A CA file that does not exist: one line, connection failure code.
    let out = run(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port,
        "--cafile",
        "/nonexistent/ca.pem",
        "-t",
        "t",
        "-m",
        "x",
    ])
    .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("/nonexistent/ca.pem"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_refusal_on_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let out = run(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &p(m.port),
        "-t",
        "a",
        "-c",
        "-i",
        "",
    ])
    .await;
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(
        out.errors(),
        ["tern sub: connection refused: identifier rejected (CONNACK 0x02)"]
    );
}
