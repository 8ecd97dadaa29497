//! Test support: an in-process broker on an ephemeral loopback port, and packet-level clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use tern::config::Config;
use tern::server::Server;
use tern_client::Connection;
use tern_client::builder;
use tern_codec::{ConnAck, Packet, ProtocolVersion};

#[allow(unused_imports)]
pub use tern_codec::ProtocolVersion::{V3_1, V3_1_1, V5};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A running broker, shut down when dropped by the test's end.
pub struct TestBroker {
    pub addr: SocketAddr,
    server: Option<Server>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    /// Starts a broker with `config` on an ephemeral port. Unless the test chose a data
    /// directory, each broker gets a fresh one, removed at the end (durability stays on, so
    /// every test also runs the durable path).
    pub async fn with_config(mut config: Config) -> Self {
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let dir = tempfile::tempdir().expect("temporary data directory");
        if config.data_dir == Config::default().data_dir {
            config.data_dir = dir.path().to_path_buf();
        }
        let server = Server::start(&config).await.expect("broker starts");
        let addr = server.local_addrs()[0];
        Self {
            addr,
            server: Some(server),
            _dir: dir,
        }
    }

    /// The admin listener's address, when the test's config enabled it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(|s| s.admin_addr())
    }

    /// The value of one sample of the admin listener's `/metrics` (`name` with its labels, as
    /// written there), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.admin_addr().expect("admin listener enabled");
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("admin connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .expect("admin request");
        let mut body = String::new();
        s.read_to_string(&mut body).await.expect("admin response");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Opens a TCP connection without sending anything.
    pub async fn raw(&self, version: ProtocolVersion) -> Connection {
        Connection::connect(self.addr, version)
            .await
            .expect("tcp connect")
    }

    /// Connects with `client_id` and returns the connection and its CONNACK, asserting success.
    pub async fn connect(
        &self,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
    ) -> (Connection, ConnAck) {
        self.connect_with(builder::connect(version, client_id, clean, 60))
            .await
    }

    /// Connects with a CONNECT of the caller's making, asserting success.
    pub async fn connect_with(&self, connect: tern_codec::Connect) -> (Connection, ConnAck) {
        let mut c = self.raw(connect.protocol).await;
        c.send(&Packet::Connect(Box::new(connect))).await.unwrap();
        match c.recv_timeout(WAIT).await.unwrap() {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, 0, "CONNACK refused: {ack:?}");
                (c, ack)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

/// Receives the next packet, failing the test after [`WAIT`].
pub async fn next(c: &mut Connection) -> Packet {
    c.recv_timeout(WAIT)
        .await
        .unwrap_or_else(|e| panic!("expected a packet: {e}"))
}

/// Asserts nothing arrives for [`QUIET`].
pub async fn nothing(c: &mut Connection) {
    match c.recv_timeout(QUIET).await {
        Err(tern_client::ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// Receives a PUBLISH, failing on anything else.
pub async fn next_publish(c: &mut Connection) -> tern_codec::Publish {
    match next(c).await {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Subscribes and waits for the SUBACK, returning its codes.
pub async fn subscribe(
    c: &mut Connection,
    pid: u16,
    filters: &[(&str, tern_codec::QoS)],
) -> Vec<u8> {
    c.send(&builder::subscribe(pid, filters)).await.unwrap();
    match next(c).await {
        Packet::SubAck(s) => {
            assert_eq!(s.packet_id, pid);
            s.reasons
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}
