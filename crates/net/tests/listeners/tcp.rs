use crate::support::*;
use std::time::Duration;
use tern_net::{HandshakeError, Stream, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn plain_tcp_round_trip() {
    let mut server = Server::start(settings(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let accepted = server.accepted().await;
    assert!(matches!(accepted.stream, Stream::Tcp(_)));
    assert!(accepted.stream.tcp().nodelay().unwrap());
    assert_eq!(accepted.peer, client.local_addr().unwrap());
    assert_eq!(accepted.local, server.addr);
    assert_eq!(accepted.via, None);
    assert_eq!(accepted.cert_cn, None);
    echo(accepted);
    round_trip(&mut client, CONNECT).await;
}

#[tokio::test]
async fn split_halves_work_for_tcp() {
    let mut server = Server::start(settings(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let accepted = server.accepted().await;
    let (mut rd, mut wr) = accepted.stream.into_split();
    assert!(matches!(rd, tern_net::ReadHalf::Tcp(_)));
    assert!(rd.as_tcp().is_some());
    client.write_all(PINGREQ).await.unwrap();
    let mut got = Vec::new();
    rd.read_with(|b| got.extend_from_slice(b)).await.unwrap();
    assert_eq!(got, PINGREQ);
    let mut buf = [0u8; 2];
    wr.write_all(&[0xd0, 0x00]).await.unwrap();
    wr.flush().await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, [0xd0, 0x00]);
}

#[tokio::test]
async fn handshake_limiter_full_closes_new_connections_at_once() {
    let mut s = settings(Transport::Tcp);
    s.proxy_protocol = true; // a handshake phase on plain TCP
    s.max_handshakes = 1;
    let listener = tern_net::Listener::bind(s).unwrap();
    let addr = listener.local_addr();
    // The first connection holds the only handshake slot (it sends nothing).
    let _first = TcpStream::connect(addr).await.unwrap();
    let held = listener.accept().await.unwrap();
    assert_eq!(listener.stats().handshakes_in_progress, 1);
    // The second is closed by `accept`, which goes on waiting.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        pending.is_err(),
        "accept must not hand out the refused connection"
    );
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
        .await
        .expect("refused connection not closed fast");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(listener.stats().handshakes_rejected, 1);
    // Freeing the slot lets the next one through.
    drop(held);
    assert_eq!(listener.stats().handshakes_in_progress, 0);
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"PROXY TCP4 192.0.2.9 192.0.2.10 1000 1883\r\n")
        .await
        .unwrap();
    let accepted = listener.accept().await.unwrap().handshake().await.unwrap();
    assert_eq!(accepted.peer, "192.0.2.9:1000".parse().unwrap());
}

#[tokio::test]
async fn plain_tcp_has_no_handshake_limit() {
    let mut s = settings(Transport::Tcp);
    s.max_handshakes = 1;
    let listener = tern_net::Listener::bind(s).unwrap();
    let _a = TcpStream::connect(listener.local_addr()).await.unwrap();
    let _b = TcpStream::connect(listener.local_addr()).await.unwrap();
    let x = listener.accept().await.unwrap();
    let y = listener.accept().await.unwrap();
    assert_eq!(listener.stats().handshakes_rejected, 0);
    drop((x, y));
}

#[tokio::test]
async fn handshake_deadline() {
    let pki = Pki::new();
    let mut s = settings(Transport::Tls).with_tls(pki.tls_settings());
    s.handshake_timeout = Duration::from_millis(200);
    let mut server = Server::start(s);
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let r = server.next().await;
    assert!(matches!(r, Err(HandshakeError::Timeout(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.listener.stats().handshakes_timed_out, 1);
    assert_eq!(server.listener.stats().handshakes_in_progress, 0);
}

#[test]
fn transport_names() {
    for (s, t) in [
        ("tcp", Transport::Tcp),
        ("mqtt", Transport::Tcp),
        ("tls", Transport::Tls),
        ("mqtts", Transport::Tls),
        ("ws", Transport::Ws),
        ("websocket", Transport::Ws),
        ("wss", Transport::Wss),
        ("WSS", Transport::Wss),
    ] {
        assert_eq!(s.parse::<Transport>().unwrap(), t, "{s}");
    }
    assert!("quic".parse::<Transport>().is_err());
    assert_eq!(Transport::Wss.to_string(), "wss");
}

#[tokio::test]
async fn tls_listener_without_tls_settings_is_refused() {
    let e = tern_net::Listener::bind(settings(Transport::Wss)).unwrap_err();
    assert!(
        matches!(e, tern_net::ListenerError::MissingTls { .. }),
        "{e}"
    );
}
