//! Certificates made with rcgen, TLS client configurations and a server-side acceptor.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tern_net::{Accepted, HandshakeError, Listener, ListenerSettings, TlsSettings, Transport};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate with CN
/// "alice", as PEM files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tern-net test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let path = |name: &str| dir.path().join(name);
        let pki = Self {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            issuer,
            dir,
        };
        std::fs::write(&pki.ca, pki.issuer.pem()).unwrap();
        let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], "server one");
        std::fs::write(&pki.server_cert, cert).unwrap();
        std::fs::write(&pki.server_key, key).unwrap();
        let (cert, key) = pki.leaf(&["alice.example"], "alice");
        std::fs::write(&pki.client_cert, cert).unwrap();
        std::fs::write(&pki.client_key, key).unwrap();
        pki
    }

    /// A certificate signed by the CA and its key, as PEM.
    pub fn leaf(&self, names: &[&str], cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The CA certificate as PEM (the `ca` file may have been overwritten).
    pub fn issuer_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn tls_settings(&self) -> TlsSettings {
        TlsSettings::new(&self.server_cert, &self.server_key)
    }

    pub fn mtls_settings(&self, required: bool) -> TlsSettings {
        TlsSettings {
            ca: Some(self.ca.clone()),
            require_client_cert: required,
            cn_as_username: true,
            ..self.tls_settings()
        }
    }

    /// A client trusting the CA, offering `versions`, with the "alice" certificate if asked.
    pub fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        with_cert: bool,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&self.ca).unwrap())
            .unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        let config = if with_cert {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&self.client_key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}

pub const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Settings on 127.0.0.1:0.
pub fn settings(transport: Transport) -> ListenerSettings {
    ListenerSettings::new("127.0.0.1:0".parse().unwrap(), transport)
}

/// A running listener: each connection's handshake runs in its own task and its outcome comes
/// out of `results`.
pub struct Server {
    pub addr: SocketAddr,
    pub listener: Arc<Listener>,
    results: mpsc::UnboundedReceiver<Result<Accepted, HandshakeError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn start(settings: ListenerSettings) -> Self {
        let listener = Arc::new(Listener::bind(settings).unwrap());
        let (tx, results) = mpsc::unbounded_channel();
        let l = listener.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(incoming) = l.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(incoming.handshake().await);
                });
            }
        });
        Self {
            addr: listener.local_addr(),
            listener,
            results,
            task,
        }
    }

    /// The outcome of the next handshake.
    pub async fn next(&mut self) -> Result<Accepted, HandshakeError> {
        tokio::time::timeout(Duration::from_secs(10), self.results.recv())
            .await
            .expect("no connection within 10 s")
            .expect("acceptor ended")
    }

    pub async fn accepted(&mut self) -> Accepted {
        self.next().await.expect("handshake failed")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes what the server side reads, until EOF.
pub fn echo(mut accepted: Accepted) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match accepted.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if accepted.stream.write_all(&buf[..n]).await.is_err()
                        || accepted.stream.flush().await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

/// Writes `data` and expects it back.
pub async fn round_trip<S>(stream: &mut S, data: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(data).await.unwrap();
    stream.flush().await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(back, data);
}

/// An MQTT 3.1.1 CONNECT packet (client id "c1").
pub const CONNECT: &[u8] = &[
    0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'c', b'1',
];
/// An MQTT PINGREQ packet.
pub const PINGREQ: &[u8] = &[0xc0, 0x00];
