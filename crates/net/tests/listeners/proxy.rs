use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;
use tern_net::proxy::V2_SIGNATURE;
use tern_net::{HandshakeError, ProxyError, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proxied(transport: Transport) -> tern_net::ListenerSettings {
    let mut s = settings(transport);
    s.proxy_protocol = true;
    s
}

/// The server reads `CONNECT` after the header, byte for byte.
async fn expect_connect(accepted: &mut tern_net::Accepted) {
    let mut got = vec![0u8; CONNECT.len()];
    tokio::time::timeout(Duration::from_secs(5), accepted.stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, CONNECT);
}

#[tokio::test]
async fn v1_gives_the_declared_address_and_leaves_the_stream_intact() {
    let mut server = Server::start(proxied(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n".to_vec();
    bytes.extend_from_slice(CONNECT);
    client.write_all(&bytes).await.unwrap(); // header and MQTT in one segment
    let mut accepted = server.accepted().await;
    assert_eq!(
        accepted.peer,
        "192.0.2.1:56324".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(accepted.via, Some(client.local_addr().unwrap()));
    expect_connect(&mut accepted).await;
}

#[tokio::test]
async fn v1_in_pieces_and_ipv6() {
    let mut server = Server::start(proxied(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let header = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n";
    for piece in [&header[..3], &header[3..20], &header[20..44], &header[44..]] {
        client.write_all(piece).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.write_all(CONNECT).await.unwrap();
    let mut accepted = server.accepted().await;
    assert_eq!(
        accepted.peer,
        "[2001:db8::1]:4000".parse::<SocketAddr>().unwrap()
    );
    expect_connect(&mut accepted).await;
}

#[tokio::test]
async fn v1_unknown_keeps_the_socket_address() {
    let mut server = Server::start(proxied(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = b"PROXY UNKNOWN\r\n".to_vec();
    bytes.extend_from_slice(CONNECT);
    client.write_all(&bytes).await.unwrap();
    let mut accepted = server.accepted().await;
    assert_eq!(accepted.peer, client.local_addr().unwrap());
    assert_eq!(accepted.via, None);
    expect_connect(&mut accepted).await;
}

fn v2(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | cmd);
    h.push(family);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

#[tokio::test]
async fn v2_gives_the_declared_address_and_leaves_the_stream_intact() {
    let mut server = Server::start(proxied(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let mut block = vec![203, 0, 113, 7, 10, 0, 0, 1];
    block.extend_from_slice(&51000u16.to_be_bytes());
    block.extend_from_slice(&1883u16.to_be_bytes());
    block.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'b', b'c']); // an authority TLV
    let mut bytes = v2(1, 0x11, &block);
    bytes.extend_from_slice(CONNECT);
    client.write_all(&bytes).await.unwrap();
    let mut accepted = server.accepted().await;
    assert_eq!(
        accepted.peer,
        "203.0.113.7:51000".parse::<SocketAddr>().unwrap()
    );
    expect_connect(&mut accepted).await;
}

#[tokio::test]
async fn v2_local_keeps_the_socket_address() {
    let mut server = Server::start(proxied(Transport::Tcp));
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = v2(0, 0x00, &[]);
    bytes.extend_from_slice(CONNECT);
    client.write_all(&bytes).await.unwrap();
    let mut accepted = server.accepted().await;
    assert_eq!(accepted.peer, client.local_addr().unwrap());
    expect_connect(&mut accepted).await;
}

#[tokio::test]
async fn v2_then_tls() {
    let pki = Pki::new();
    let mut server = Server::start(proxied(Transport::Tls).with_tls(pki.mtls_settings(true)));
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut block = vec![198, 51, 100, 20, 10, 0, 0, 1];
    block.extend_from_slice(&[0x9c, 0x40, 0x22, 0xb3]);
    tcp.write_all(&v2(1, 0x11, &block)).await.unwrap();
    let mut client = tokio_rustls::TlsConnector::from(pki.client(BOTH, true))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let accepted = server.accepted().await;
    assert_eq!(
        accepted.peer,
        "198.51.100.20:40000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(accepted.cert_cn.as_deref(), Some("alice"));
    echo(accepted);
    round_trip(&mut client, CONNECT).await;
}

#[tokio::test]
async fn garbage_header_is_an_error() {
    let mut server = Server::start(proxied(Transport::Tcp));
    // MQTT straight away, no header.
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    a.write_all(CONNECT).await.unwrap();
    let r = server.next().await;
    assert!(
        matches!(r, Err(HandshakeError::Proxy(ProxyError::NotProxy))),
        "{r:?}"
    );
    // A v1 line that never ends.
    let mut b = TcpStream::connect(server.addr).await.unwrap();
    b.write_all(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat())
        .await
        .unwrap();
    let r = server.next().await;
    assert!(
        matches!(r, Err(HandshakeError::Proxy(ProxyError::TooLong))),
        "{r:?}"
    );
    // A malformed v1 line.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(b"PROXY TCP4 300.0.0.1 10.0.0.1 1 2\r\n")
        .await
        .unwrap();
    let r = server.next().await;
    assert!(
        matches!(r, Err(HandshakeError::Proxy(ProxyError::Malformed(_)))),
        "{r:?}"
    );
    // A v2 header announcing too much.
    let mut d = TcpStream::connect(server.addr).await.unwrap();
    let mut h = v2(1, 0x11, &[]);
    h[14..16].copy_from_slice(&60000u16.to_be_bytes());
    d.write_all(&h).await.unwrap();
    let r = server.next().await;
    assert!(
        matches!(r, Err(HandshakeError::Proxy(ProxyError::TooLong))),
        "{r:?}"
    );
    // A header cut short by EOF.
    let mut e = TcpStream::connect(server.addr).await.unwrap();
    e.write_all(b"PROXY TCP4 192.0.2.1").await.unwrap();
    e.shutdown().await.unwrap();
    let r = server.next().await;
    assert!(
        matches!(r, Err(HandshakeError::Proxy(ProxyError::Io(_)))),
        "{r:?}"
    );
    assert_eq!(server.listener.stats().handshakes_failed, 5);
}
