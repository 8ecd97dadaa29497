//! Support for the admin, `$SYS` and dashboard tests: a minimal HTTP/1.1 client, a Prometheus
//! text parser, a broker core fed by hand behind a real admin listener, and `tern serve` as a
//! child process with its addresses read from its JSON log.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern::admin::{self, AdminServer, AdminSettings, DriverOps, LocalCore};
use tern::metrics::Metrics;
use tern_client::builder;
use tern_codec::{Packet, ProtocolVersion, QoS};
use tern_core::{Action, Broker, ConnId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(10);

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 4 + n..];
    }
}

/// One sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// A parsed Prometheus exposition: samples by name and labels, and each family's type.
#[derive(Debug, Default)]
pub struct Prom {
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Prom {
    /// Parses the text format strictly: every line is a comment (`# HELP`/`# TYPE`) or a sample
    /// whose family has a TYPE; values are numbers; label values are quoted.
    pub fn parse(text: &str) -> Self {
        let mut p = Prom::default();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap();
                let name = parts.next().expect("metric name").to_string();
                assert!(valid_name(&name), "bad metric name in {line:?}");
                match kind {
                    "HELP" => {}
                    "TYPE" => {
                        let t = parts.next().expect("type").to_string();
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"]
                                .contains(&t.as_str()),
                            "{line}"
                        );
                        assert!(
                            p.types.insert(name, t).is_none(),
                            "TYPE given twice: {line}"
                        );
                    }
                    _ => panic!("unknown comment {line:?}"),
                }
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("sample value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match name_labels.split_once('{') {
                None => (name_labels.to_string(), Vec::new()),
                Some((n, l)) => {
                    let l = l.strip_suffix('}').expect("closing brace");
                    let labels = split_labels(l)
                        .into_iter()
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label=value");
                            let v = v
                                .strip_prefix('"')
                                .and_then(|v| v.strip_suffix('"'))
                                .expect("quoted label value");
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            assert!(valid_name(&name), "bad metric name in {line:?}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| p.types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(&name)
                .to_string();
            assert!(
                p.types.contains_key(&family),
                "sample before its TYPE: {line:?}"
            );
            p.samples.push((name, labels, value));
        }
        p
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    }

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if in_quotes && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// A broker core fed by hand (connections are numbers) behind a real admin listener.
pub struct Harness {
    pub core: Arc<Mutex<LocalCore>>,
    pub metrics: Arc<Metrics>,
    pub admin: AdminServer,
    pub addr: SocketAddr,
    _shutdown: watch::Sender<bool>,
    next_conn: ConnId,
}

impl Harness {
    pub async fn start(token: Option<&str>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let ops = DriverOps::new(metrics.clone(), Duration::from_secs(1));
        let core = LocalCore::new(Broker::new(tern::config::Config::default().core()), ops);
        let calls = admin::spawn_local(core.clone(), None);
        let (tx, rx) = watch::channel(false);
        let settings = AdminSettings::new("127.0.0.1:0".parse().unwrap(), token.map(String::from));
        let admin = AdminServer::start(settings, calls, metrics.clone(), rx)
            .await
            .expect("admin listener starts");
        let addr = admin.local_addr();
        Self {
            core,
            metrics,
            admin,
            addr,
            _shutdown: tx,
            next_conn: 1,
        }
    }

    /// Feeds a packet to the core as if `conn` had sent it; returns the actions.
    pub fn packet(&self, conn: ConnId, p: Packet) -> Vec<Action> {
        let mut core = self.core.lock().unwrap();
        let mut out = Vec::new();
        core.broker.handle_packet(conn, p, Instant::now(), &mut out);
        out
    }

    pub fn connect(&mut self, version: ProtocolVersion, id: &str, clean: bool) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let mut c = builder::connect(version, id, clean, 30);
        if version.is_v5() && !clean {
            c.properties.session_expiry_interval = Some(3600);
        }
        let out = self.packet(conn, Packet::Connect(Box::new(c)));
        assert!(
            out.iter().any(
                |a| matches!(a, Action::Send(c, p) if *c == conn && matches!(&**p, Packet::ConnAck(ack) if ack.code == 0))
            ),
            "{out:?}"
        );
        conn
    }

    pub fn lose(&self, conn: ConnId) {
        let mut core = self.core.lock().unwrap();
        let mut out = Vec::new();
        core.broker.connection_lost(conn, Instant::now(), &mut out);
    }

    pub fn tick(&self) {
        self.core.lock().unwrap().tick(Instant::now());
    }

    /// Takes the actions admin commands produced.
    pub fn admin_actions(&self) -> Vec<Action> {
        std::mem::take(&mut self.core.lock().unwrap().actions)
    }

    pub async fn get(&self, path: &str) -> Resp {
        http(self.addr, "GET", path, None, None).await
    }
}

/// Known traffic: "sub" (v5, persistent) on `sensors/#` at QoS 1, "pub" (3.1.1) publishing
/// three messages (QoS 0, 1, 2) and two retained ones, "idle" (3.1.1, persistent) offline
/// with a subscription.
pub fn known_traffic(h: &mut Harness) -> (ConnId, ConnId) {
    let sub = h.connect(ProtocolVersion::V5, "sub", false);
    h.packet(
        sub,
        builder::subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]),
    );
    let idle = h.connect(ProtocolVersion::V3_1_1, "idle", false);
    h.packet(
        idle,
        builder::subscribe(1, &[("$share/g/jobs/+", QoS::AtLeastOnce)]),
    );
    h.lose(idle);
    let p = h.connect(ProtocolVersion::V3_1_1, "pub", true);
    h.packet(
        p,
        builder::publish("sensors/a", &b"1"[..], QoS::AtMostOnce, false, None),
    );
    h.packet(
        p,
        builder::publish("sensors/b", &b"22"[..], QoS::AtLeastOnce, false, Some(1)),
    );
    h.packet(
        p,
        builder::publish("sensors/c", &b"333"[..], QoS::ExactlyOnce, false, Some(2)),
    );
    h.packet(
        p,
        builder::publish("status/kitchen", &b"on"[..], QoS::AtMostOnce, true, None),
    );
    h.packet(
        p,
        builder::publish("status/hall", &b"off"[..], QoS::AtLeastOnce, true, Some(3)),
    );
    (sub, p)
}

/// `tern serve` as a child process, JSON logs on stderr, its addresses read from the log.
pub struct TernProcess {
    pub child: tokio::process::Child,
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TernProcess {
    /// Starts `tern serve` on ephemeral loopback ports with `extra` arguments.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tern-admin-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info",
                "--durability",
                "none",
            ])
            .arg("--data-dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("tern serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let log2 = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut mqtt = None;
        let mut admin = None;
        let deadline = tokio::time::Instant::now() + WAIT;
        while mqtt.is_none() || admin.is_none() {
            let line = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(l)) => l,
                _ => panic!(
                    "tern serve did not log both its MQTT and admin addresses (is the admin listener wired into Server::start?); log:\n{}",
                    log.lock().unwrap().join("\n")
                ),
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let msg = v["fields"]["message"].as_str().unwrap_or("");
            let addr = v["fields"]["addr"]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if msg.contains("listening for MQTT") {
                mqtt = mqtt.or(addr);
            } else if msg.contains("admin listener") {
                admin = admin.or(addr);
            }
        }
        Self {
            child,
            mqtt: mqtt.unwrap(),
            admin: admin.unwrap(),
            log,
        }
    }

    /// The JSON log lines so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Polls `f` until it returns `Some`, failing after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
