//! Support for the tests of `tern pub`/`sub`/`rr`: running the real binary, a `tern sub` that
//! is known to be subscribed, Debian's mosquitto broker on ephemeral ports, and TLS
//! certificates made with rcgen.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a tool may take to do what it should.
pub const WAIT: Duration = Duration::from_secs(15);

/// A `tern` command with piped stdout and stderr, killed if the test drops it.
pub fn tern(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// What a finished tool printed and returned.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stderr without the `-d` packet trace.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.starts_with("Client "))
            .collect()
    }

    /// stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Waits (bounded) for a child to exit.
pub async fn finish(child: Child) -> Output {
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("tern exits in time")
        .expect("wait for tern");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tern ARGS` to completion.
pub async fn run(args: &[&str]) -> Output {
    finish(tern(args).spawn().expect("spawn tern")).await
}

/// Runs `tern ARGS` with `input` on stdin.
pub async fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = tern(args);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tern");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write stdin");
    drop(stdin);
    finish(child).await
}

/// `tern pub -h 127.0.0.1 -p PORT ARGS`, asserting success.
pub async fn publish(port: u16, args: &[&str]) -> Output {
    let port = port.to_string();
    let mut full = vec!["pub", "-h", "127.0.0.1", "-p", &port];
    full.extend_from_slice(args);
    let out = run(&full).await;
    assert_eq!(out.code, 0, "tern pub {args:?} failed: {out:?}");
    out
}

/// A running `tern sub` whose subscription has been acknowledged.
pub struct Sub {
    child: Child,
    stderr: Arc<Mutex<String>>,
    drain: JoinHandle<()>,
}

impl Sub {
    /// Starts `tern sub -d -h 127.0.0.1 -p PORT ARGS` and waits until its `-d` trace shows the
    /// SUBACK.
    pub async fn start(port: u16, args: &[&str]) -> Self {
        let port = port.to_string();
        let mut full = vec!["sub", "-d", "-h", "127.0.0.1", "-p", &port];
        full.extend_from_slice(args);
        Self::start_raw(&full, "received SUBACK").await
    }

    /// Starts `tern ARGS` and waits for a stderr line containing `ready`.
    pub async fn start_raw(args: &[&str], ready: &str) -> Self {
        let mut child = tern(args).spawn().expect("spawn tern");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = oneshot::channel();
        let ready = ready.to_owned();
        let buf = stderr.clone();
        let drain = tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let hit = line.contains(&ready);
                {
                    let mut b = buf.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
                if hit && let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        });
        if tokio::time::timeout(WAIT, rx).await.is_err() {
            panic!(
                "tern {args:?} did not get ready; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        Self {
            child,
            stderr,
            drain,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Kills the process (SIGKILL: no DISCONNECT).
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill tern sub");
    }

    /// Waits for the process to exit.
    pub async fn finish(self) -> Output {
        let mut out = finish(self.child).await;
        let _ = tokio::time::timeout(WAIT, self.drain).await;
        out.stderr = self.stderr.lock().unwrap().clone();
        out
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .unwrap()
        .port()
}

/// CA, server and client certificates in PEM files.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A server certificate for another host name, signed by the same CA.
    pub wrong_name_cert: PathBuf,
    pub wrong_name_key: PathBuf,
}

impl Certs {
    /// Makes a CA and server certificates for `localhost` / `127.0.0.1` (and one for another
    /// name) in `dir`.
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tern test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, &names[0]);
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (wrong_cert, wrong_key) = leaf(vec!["broker.invalid".into()]);
        Self {
            dir: dir.to_owned(),
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            wrong_name_cert: write("wrong.pem", &wrong_cert),
            wrong_name_key: write("wrong.key", &wrong_key),
        }
    }
}

/// Debian's mosquitto broker on ephemeral loopback ports; killed when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    /// Plain MQTT.
    pub port: u16,
    /// TLS with the server certificate for localhost/127.0.0.1.
    pub tls_port: u16,
    /// TLS with a certificate for another host name.
    pub wrong_name_port: u16,
    _dir: tempfile::TempDir,
    pub certs: Certs,
}

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

impl Mosquitto {
    /// Starts mosquitto, or returns `None` (with a note) when it is not installed outside CI.
    /// In CI (`CI` set) a missing mosquitto fails the test: scripts/test installs it.
    pub fn start() -> Option<Self> {
        if !Path::new(MOSQUITTO).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{MOSQUITTO} is missing (scripts/test installs the mosquitto package)"
            );
            eprintln!("skipped: {MOSQUITTO} is not installed (apt-get install mosquitto)");
            return None;
        }
        // The free ports are found by binding port 0 and letting go: another process may take
        // one before mosquitto binds it. Then mosquitto exits, and it starts again on others.
        for attempt in 1.. {
            match Self::launch() {
                Ok(m) => return Some(m),
                Err(log) if log.contains("Address already in use") && attempt < 5 => {}
                Err(log) => panic!("mosquitto exited {log}"),
            }
        }
        unreachable!()
    }

    /// One start on three free ports; `Err` with mosquitto's log when it exits instead.
    fn launch() -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::generate(dir.path());
        let (port, tls_port, wrong_name_port) = loop {
            let ports = (free_port(), free_port(), free_port());
            if ports.0 != ports.1 && ports.1 != ports.2 && ports.0 != ports.2 {
                break ports;
            }
        };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nallow_anonymous true\nlog_dest stderr\n\
                 listener {port} 127.0.0.1\n\
                 listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 listener {wrong_name_port} 127.0.0.1\ncafile {ca}\ncertfile {wcert}\nkeyfile {wkey}\n",
                ca = certs.ca.display(),
                cert = certs.server_cert.display(),
                key = certs.server_key.display(),
                wcert = certs.wrong_name_cert.display(),
                wkey = certs.wrong_name_key.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
        let child = std::process::Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let mut m = Self {
            child,
            port,
            tls_port,
            wrong_name_port,
            _dir: dir,
            certs,
        };
        // Wait (bounded) until every listener accepts connections.
        let deadline = std::time::Instant::now() + WAIT;
        for p in [port, tls_port, wrong_name_port] {
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", p)).is_ok() {
                    break;
                }
                if let Ok(Some(status)) = m.child.try_wait() {
                    return Err(format!("({status}): {}", m.log()));
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "mosquitto does not listen on {p}: {}",
                    m.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(m)
    }

    /// mosquitto's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
