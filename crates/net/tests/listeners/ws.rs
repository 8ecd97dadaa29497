use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tern_net::{Accepted, HandshakeError, Stream, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{WebSocketStream, client_async};

fn request(
    path: &str,
    protocols: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://localhost{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    req
}

async fn ws_connect(
    server: &mut Server,
    path: &str,
    protocols: Option<&str>,
) -> (WebSocketStream<TcpStream>, Option<String>, Accepted) {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (ws, resp) = client_async(request(path, protocols), tcp).await.unwrap();
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen, server.accepted().await)
}

/// Sends one packet split over two frames and two packets in one frame; the server reads the
/// exact bytes; then the server writes and the client gets one binary frame.
async fn packets_across_frames<S, C>(client: &mut WebSocketStream<C>, server_side: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    client
        .send(Message::Binary(CONNECT[..5].to_vec().into()))
        .await
        .unwrap();
    client
        .send(Message::Binary(CONNECT[5..].to_vec().into()))
        .await
        .unwrap();
    let mut two = PINGREQ.to_vec();
    two.extend_from_slice(PINGREQ);
    client.send(Message::Binary(two.into())).await.unwrap();
    let mut want = CONNECT.to_vec();
    want.extend_from_slice(PINGREQ);
    want.extend_from_slice(PINGREQ);
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), server_side.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);

    // Server to client: CONNACK + PINGRESP in one write, one frame.
    let out = [0x20, 0x02, 0x00, 0x00, 0xd0, 0x00];
    server_side.write_all(&out).await.unwrap();
    server_side.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::Binary(out.to_vec().into()));
}

#[tokio::test]
async fn ws_mqtt_subprotocol_and_frames() {
    let mut server = Server::start(settings(Transport::Ws));
    let (mut client, chosen, mut accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    assert!(matches!(accepted.stream, Stream::Ws(_)));
    assert_eq!(accepted.stream.ws_subprotocol(), Some("mqtt"));
    packets_across_frames(&mut client, &mut accepted.stream).await;

    // A close from the client is EOF on the server side.
    client.close(None).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), accepted.stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn ws_split_halves() {
    let mut server = Server::start(settings(Transport::Ws));
    let (mut client, _, accepted) = ws_connect(&mut server, "/ws", Some("mqtt")).await;
    let (mut rd, mut wr) = accepted.stream.into_split();
    // The reader waits for data while the writer writes.
    let reader = tokio::spawn(async move {
        let mut got = [0u8; 2];
        rd.read_exact(&mut got).await.unwrap();
        got
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    wr.write_all(&[0xd0, 0x00]).await.unwrap();
    wr.flush().await.unwrap();
    let msg = client.next().await.unwrap().unwrap();
    assert_eq!(msg, Message::Binary(vec![0xd0, 0x00].into()));
    client
        .send(Message::Binary(PINGREQ.to_vec().into()))
        .await
        .unwrap();
    assert_eq!(reader.await.unwrap(), [0xc0, 0x00]);
}

#[tokio::test]
async fn ws_read_with_holds_no_buffer_of_its_own() {
    let mut server = Server::start(settings(Transport::Ws));
    let (mut client, _, accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    let (mut rd, _wr) = accepted.stream.into_split();
    assert!(rd.as_tcp().is_none());
    client
        .send(Message::Binary(CONNECT.to_vec().into()))
        .await
        .unwrap();
    let mut buf = Vec::new();
    while buf.len() < CONNECT.len() {
        let n = rd.read_with(|b| buf.extend_from_slice(b)).await.unwrap();
        assert!(n > 0);
    }
    assert_eq!(buf, CONNECT);
    // Cancelled while waiting: nothing is lost.
    let waiting = tokio::time::timeout(
        Duration::from_millis(50),
        rd.read_with(|_| panic!("no data yet")),
    )
    .await;
    assert!(waiting.is_err());
    client
        .send(Message::Binary(PINGREQ.to_vec().into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    rd.read_with(|b| got.extend_from_slice(b)).await.unwrap();
    assert_eq!(got, PINGREQ);
    client.close(None).await.unwrap();
    assert_eq!(rd.read_with(|_| {}).await.unwrap(), 0);
}

#[tokio::test]
async fn ws_subprotocols() {
    let mut server = Server::start(settings(Transport::Ws));
    // MQTT 3.1 clients.
    let (_c, chosen, accepted) = ws_connect(&mut server, "/ws", Some("mqttv3.1")).await;
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
    assert_eq!(accepted.stream.ws_subprotocol(), Some("mqttv3.1"));
    // Several offered: the first we know.
    let (_c, chosen, _) = ws_connect(&mut server, "/", Some("wamp, mqttv3.1, mqtt")).await;
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
    // None offered: accepted without one.
    let (_c, chosen, accepted) = ws_connect(&mut server, "/anything/at/all", None).await;
    assert_eq!(chosen, None);
    assert_eq!(accepted.stream.ws_subprotocol(), None);
    // Only unknown ones: refused.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        client_async(request("/mqtt", Some("wamp")), tcp)
            .await
            .is_err()
    );
    assert!(matches!(
        server.next().await,
        Err(HandshakeError::WebSocket(_))
    ));
}

#[tokio::test]
async fn ws_path_restriction() {
    let mut s = settings(Transport::Ws);
    s.ws_path = Some("/mqtt".into());
    let mut server = Server::start(s);
    let (_c, _, _) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let e = client_async(request("/ws", Some("mqtt")), tcp)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    assert!(server.next().await.is_err());
}

#[tokio::test]
async fn ws_text_frame_is_an_error() {
    let mut server = Server::start(settings(Transport::Ws));
    let (mut client, _, mut accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    client.send(Message::text("hello")).await.unwrap();
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(5), accepted.stream.read(&mut buf))
        .await
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    // The client is told why.
    let msg = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap();
    assert!(
        matches!(msg, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == 1003),
        "{msg:?}"
    );
}

#[tokio::test]
async fn ws_ping_is_answered_and_skipped() {
    let mut server = Server::start(settings(Transport::Ws));
    let (mut client, _, mut accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    client
        .send(Message::Ping(vec![1, 2, 3].into()))
        .await
        .unwrap();
    client
        .send(Message::Binary(PINGREQ.to_vec().into()))
        .await
        .unwrap();
    let mut got = [0u8; 2];
    accepted.stream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, PINGREQ);
    let msg = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::Pong(vec![1, 2, 3].into()));
}

#[tokio::test]
async fn wss_with_client_certificate() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Wss).with_tls(pki.mtls_settings(false)));
    let tls = tls_connect(server.addr, pki.client(BOTH, true))
        .await
        .unwrap();
    let (mut client, resp) = client_async(request("/mqtt", Some("mqtt")), tls)
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    let mut accepted = server.accepted().await;
    assert!(matches!(accepted.stream, Stream::WsTls(_)));
    assert_eq!(accepted.cert_cn.as_deref(), Some("alice"));
    assert!(accepted.stream.tls_version().is_some());
    packets_across_frames(&mut client, &mut accepted.stream).await;
}

#[tokio::test]
async fn wss_split_halves_round_trip() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Wss).with_tls(pki.tls_settings()));
    let tls = tls_connect(server.addr, pki.client(BOTH, false))
        .await
        .unwrap();
    let (mut client, _) = client_async(request("/ws", Some("mqtt")), tls)
        .await
        .unwrap();
    let accepted = server.accepted().await;
    let (mut rd, mut wr) = accepted.stream.into_split();
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    wr.write_all(&buf[..n]).await.unwrap();
                    wr.flush().await.unwrap();
                }
            }
        }
    });
    for _ in 0..3 {
        client
            .send(Message::Binary(CONNECT.to_vec().into()))
            .await
            .unwrap();
        let mut back = Vec::new();
        while back.len() < CONNECT.len() {
            match client.next().await.unwrap().unwrap() {
                Message::Binary(b) => back.extend_from_slice(&b),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(back, CONNECT);
    }
}

/// The header of a masked 1,000-byte binary frame and 100 bytes of it: a message under way.
fn unfinished_frame() -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
    frame.extend(std::iter::repeat_n(0u8, 100));
    frame
}

/// A WebSocket message is handed on only when whole, so the connection cannot see an MQTT
/// packet left unfinished in one: the transport times out a message that was started and not
/// finished (`ws_message_timeout`), and leaves an idle connection alone.
#[tokio::test]
async fn ws_message_left_unfinished_times_out() {
    let mut s = settings(Transport::Ws);
    s.ws_message_timeout = Some(Duration::from_millis(500));
    let mut server = Server::start(s);
    let (mut client, _, mut accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    // A whole message, then nothing: an idle client (keep alive 0 is its right) stays.
    client
        .send(Message::Binary(PINGREQ.to_vec().into()))
        .await
        .unwrap();
    let mut got = [0u8; 2];
    accepted.stream.read_exact(&mut got).await.unwrap();
    let idle =
        tokio::time::timeout(Duration::from_millis(1500), accepted.stream.read(&mut got)).await;
    assert!(idle.is_err(), "an idle connection ended: {idle:?}");
    // The header of a masked 1,000-byte binary frame and 100 bytes of it, then nothing.
    let frame = unfinished_frame();
    client.get_mut().write_all(&frame).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), accepted.stream.read(&mut got))
        .await
        .expect("the unfinished message times out");
    let e = read.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(
        e.get_ref()
            .is_some_and(|i| i.is::<tern_net::WsMessageTimeout>())
    );

    // The first fragment of a message (FIN clear, 4 masked bytes), then a Ping every 100 ms:
    // a control frame between fragments finishes only itself, and the message still times out.
    let (mut client, _, mut accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    let fragment = [0x02, 0x80 | 4, 1, 2, 3, 4, 0, 0, 0, 0];
    client.get_mut().write_all(&fragment).await.unwrap();
    let pinger = tokio::spawn(async move {
        for _ in 0..100 {
            let ping = [0x89, 0x80, 9, 9, 9, 9];
            if client.get_mut().write_all(&ping).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let read = tokio::time::timeout(Duration::from_secs(10), accepted.stream.read(&mut got))
        .await
        .expect("the unfinished message times out in spite of the Pings");
    let e = read.unwrap_err();
    assert!(
        e.get_ref()
            .is_some_and(|i| i.is::<tern_net::WsMessageTimeout>()),
        "{e}"
    );
    pinger.abort();
}

/// While the connection holds reading back (its client's answers pile up), a message under way
/// does not lose time: the connection tells the transport how long it held (`ws_hold_clock`),
/// as the packet timeout of plain TCP is paused meanwhile.
#[tokio::test]
async fn ws_message_timeout_does_not_run_while_reading_is_held() {
    let mut s = settings(Transport::Ws);
    s.ws_message_timeout = Some(Duration::from_secs(2));
    let mut server = Server::start(s);
    let (mut client, _, mut accepted) = ws_connect(&mut server, "/mqtt", Some("mqtt")).await;
    let clock = accepted.stream.ws_hold_clock().expect("a WebSocket stream");
    let frame = unfinished_frame();
    client.get_mut().write_all(&frame).await.unwrap();
    let mut got = [0u8; 2];
    // A read that sees the start of the message: its 2 s start.
    let first =
        tokio::time::timeout(Duration::from_millis(300), accepted.stream.read(&mut got)).await;
    assert!(first.is_err(), "{first:?}");
    // The connection held reading back for 10 s (as it reports on resuming): the message now
    // has until about 12 s after it started, so 3 s more of reading do not end it.
    clock.fetch_add(10_000, std::sync::atomic::Ordering::Relaxed);
    let later = tokio::time::timeout(Duration::from_secs(3), accepted.stream.read(&mut got)).await;
    assert!(later.is_err(), "timed out in spite of the hold: {later:?}");
}
