use crate::support::*;
use rustls::ProtocolVersion;
use std::time::Duration;
use tern_net::tls::PROTOCOL_VERSIONS;
use tern_net::{HandshakeError, Stream, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn only_tls_1_2_and_1_3_are_offered() {
    let versions: Vec<_> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]
    );
}

#[tokio::test]
async fn tls_1_2_and_1_3_handshakes() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.tls_settings()));
    for (versions, expect) in [
        (&[&rustls::version::TLS12][..], ProtocolVersion::TLSv1_2),
        (&[&rustls::version::TLS13][..], ProtocolVersion::TLSv1_3),
        (BOTH, ProtocolVersion::TLSv1_3),
    ] {
        let mut client = tls_connect(server.addr, pki.client(versions, false))
            .await
            .unwrap();
        let accepted = server.accepted().await;
        assert!(matches!(accepted.stream, Stream::Tls(_)));
        assert_eq!(accepted.stream.tls_version(), Some(expect));
        assert_eq!(accepted.cert_cn, None);
        echo(accepted);
        round_trip(&mut client, CONNECT).await;
    }
}

/// A TLS 1.1 client cannot be built with rustls: send a hand-made TLS 1.1 ClientHello and
/// expect an alert instead of a ServerHello.
#[tokio::test]
async fn tls_1_1_client_hello_is_refused() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.tls_settings()));
    let mut hello = vec![
        0x01, 0x00, 0x00, 0x00, // ClientHello, length filled below
        0x03, 0x02, // TLS 1.1
    ];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two CBC suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let len = (hello.len() - 4) as u32;
    hello[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    record.extend_from_slice(&hello);
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let r = server.next().await;
    assert!(matches!(r, Err(HandshakeError::Tls(_))), "{r:?}");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "expected an alert, got {answer:?}"
    );
    assert_eq!(server.listener.stats().handshakes_failed, 1);
}

#[tokio::test]
async fn mtls_required() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.mtls_settings(true)));

    // Without a certificate: the server refuses the handshake.
    let client = tls_connect(server.addr, pki.client(BOTH, false)).await;
    let r = server.next().await;
    assert!(matches!(r, Err(HandshakeError::Tls(_))), "{r:?}");
    if let Ok(mut c) = client {
        // TLS 1.3: the client finished first; the server's alert ends the stream.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));
    }

    // With one: accepted, and its CN is the username.
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let mut client = tls_connect(server.addr, pki.client(versions, true))
            .await
            .unwrap();
        let accepted = server.accepted().await;
        assert_eq!(accepted.cert_cn.as_deref(), Some("alice"));
        assert_eq!(accepted.cert_username(), Some("alice"));
        echo(accepted);
        round_trip(&mut client, CONNECT).await;
    }
}

#[tokio::test]
async fn mtls_optional() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.mtls_settings(false)));
    let _a = tls_connect(server.addr, pki.client(BOTH, false))
        .await
        .unwrap();
    let accepted = server.accepted().await;
    assert_eq!(accepted.cert_cn, None);
    assert_eq!(accepted.cert_username(), None);
    let _b = tls_connect(server.addr, pki.client(BOTH, true))
        .await
        .unwrap();
    assert_eq!(server.accepted().await.cert_cn.as_deref(), Some("alice"));

    // Without cn_as_username the CN is known but imposes no username.
    let mut tls = pki.mtls_settings(false);
    tls.cn_as_username = false;
    let mut server = Server::start(settings(Transport::Tls).with_tls(tls));
    let _c = tls_connect(server.addr, pki.client(BOTH, true))
        .await
        .unwrap();
    let accepted = server.accepted().await;
    assert_eq!(accepted.cert_cn.as_deref(), Some("alice"));
    assert!(!accepted.cn_as_username);
    assert_eq!(accepted.cert_username(), None);
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.mtls_settings(false)));
    // `other`'s client trusts `other`'s CA, so point it at ours but keep its own certificate.
    std::fs::copy(&pki.ca, &other.ca).unwrap();
    let _ = tls_connect(server.addr, other.client(BOTH, true)).await;
    assert!(matches!(server.next().await, Err(HandshakeError::Tls(_))));
}

#[tokio::test]
async fn require_client_cert_without_ca_is_a_config_error() {
    let pki = Pki::new();
    let mut tls = pki.tls_settings();
    tls.require_client_cert = true;
    let e = tern_net::Listener::bind(settings(Transport::Tls).with_tls(tls)).unwrap_err();
    assert!(e.to_string().contains("CA"), "{e}");
    let mut tls = pki.tls_settings();
    tls.cn_as_username = true;
    let e = tern_net::Listener::bind(settings(Transport::Tls).with_tls(tls)).unwrap_err();
    assert!(e.to_string().contains("cn_as_username"), "{e}");
}

#[tokio::test]
async fn bad_files_at_start_are_errors() {
    let pki = Pki::new();
    std::fs::write(&pki.server_key, "not a key").unwrap();
    assert!(
        tern_net::Listener::bind(settings(Transport::Tls).with_tls(pki.tls_settings())).is_err()
    );
    let pki = Pki::new();
    let mut tls = pki.tls_settings();
    tls.cert = pki.dir.path().join("missing.pem");
    let e = tern_net::Listener::bind(settings(Transport::Tls).with_tls(tls)).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // A key that does not match the certificate.
    let pki = Pki::new();
    let (_, other_key) = pki.leaf(&["localhost"], "x");
    std::fs::write(&pki.server_key, other_key).unwrap();
    assert!(
        tern_net::Listener::bind(settings(Transport::Tls).with_tls(pki.tls_settings())).is_err()
    );
}

fn server_cert_of(c: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    c.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn reload_swaps_certificates_for_new_handshakes_only() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.tls_settings()));
    let config = pki.client(BOTH, false);

    let mut old = tls_connect(server.addr, config.clone()).await.unwrap();
    echo(server.accepted().await);
    round_trip(&mut old, CONNECT).await;
    let first_cert = server_cert_of(&old);

    // Replace the files and reload.
    let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], "server two");
    std::fs::write(&pki.server_cert, &cert).unwrap();
    std::fs::write(&pki.server_key, &key).unwrap();
    assert!(server.listener.reload_tls().unwrap());

    let mut new = tls_connect(server.addr, config.clone()).await.unwrap();
    echo(server.accepted().await);
    round_trip(&mut new, PINGREQ).await;
    let second_cert = server_cert_of(&new);
    assert_ne!(first_cert, second_cert);
    assert_eq!(
        second_cert,
        der_of_pem(&cert),
        "new handshakes use the new certificate"
    );
    // The connection made before the reload keeps working.
    round_trip(&mut old, PINGREQ).await;

    // A broken new file: the reload fails and the last good configuration stays.
    std::fs::write(&pki.server_cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    assert!(server.listener.reload_tls().is_err());
    let third = tls_connect(server.addr, config.clone()).await.unwrap();
    let _ = server.accepted().await;
    assert_eq!(server_cert_of(&third), second_cert);
    // An empty file too.
    std::fs::write(&pki.server_cert, "").unwrap();
    assert!(server.listener.reload_tls().is_err());
    let fourth = tls_connect(server.addr, config).await.unwrap();
    let _ = server.accepted().await;
    assert_eq!(server_cert_of(&fourth), second_cert);
}

fn der_of_pem(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn reload_if_changed_and_watcher() {
    let pki = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.tls_settings()));
    let tls = server.listener.tls().unwrap().clone();
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");

    let watcher = server
        .listener
        .spawn_tls_watcher(Duration::from_millis(50))
        .unwrap();
    let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], "server watched");
    // Key first, then certificate: in between the pair does not match and must not be used.
    std::fs::write(&pki.server_key, &key).unwrap();
    std::fs::write(&pki.server_cert, &cert).unwrap();
    let want = der_of_pem(&cert);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let c = tls_connect(server.addr, pki.client(BOTH, false))
            .await
            .unwrap();
        let _ = server.accepted().await;
        if server_cert_of(&c) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
}

#[tokio::test]
async fn reload_can_turn_on_the_new_ca() {
    // Reload re-reads the CA too: a client certificate from a new CA works after the swap.
    let pki = Pki::new();
    let other = Pki::new();
    let mut server = Server::start(settings(Transport::Tls).with_tls(pki.mtls_settings(true)));
    let client_config = {
        // Trust our server CA, present `other`'s client certificate.
        std::fs::copy(&pki.ca, &other.ca).unwrap();
        other.client(BOTH, true)
    };
    let _ = tls_connect(server.addr, client_config.clone()).await;
    assert!(server.next().await.is_err());
    // Both CAs in the CA file now.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&pki.ca).unwrap(),
        other.issuer_pem()
    );
    std::fs::write(&pki.ca, both).unwrap();
    server.listener.reload_tls().unwrap();
    let _c = tls_connect(server.addr, client_config).await.unwrap();
    assert_eq!(server.accepted().await.cert_cn.as_deref(), Some("alice"));
}
