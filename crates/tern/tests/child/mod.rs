//! Test support: `tern serve` as a child process, for tests that kill it with SIGKILL or read
//! its resident memory (an in-process broker shares the test's memory and cannot be killed).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A running `tern serve`.
pub struct ChildBroker {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line it wrote to stderr so far, and a signal for each new one.
    pub lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// The thread reading its stderr (ends with the stream).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildBroker {
    /// Starts `tern serve --listen 127.0.0.1:0 --log-level info --config CONFIG --data-dir DATA`
    /// plus `extra`, and waits for the line naming its TCP listener. Its stderr is drained for
    /// the broker's whole life (so it never blocks on a full pipe), and echoed when the
    /// environment variable `verbose_env` is set.
    pub fn start(config: &Path, data_dir: &Path, extra: &[&str], verbose_env: &str) -> Self {
        Self::start_logging("info", config, data_dir, extra, verbose_env)
    }

    /// [`start`](Self::start) with another `--log-level`.
    pub fn start_logging(
        level: &str,
        config: &Path,
        data_dir: &Path,
        extra: &[&str],
        verbose_env: &str,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", level])
            .args(extra)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("tern starts");
        let stderr = child.stderr.take().unwrap();
        let verbose = std::env::var_os(verbose_env).is_some();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(i) = line.find("listening for MQTT over TCP addr=") {
                    let addr: SocketAddr = line[i + 33..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let _ = tx.send(addr);
                    sent = true;
                }
                if verbose {
                    eprintln!("[tern] {line}");
                }
                kept.0.lock().unwrap().push(line);
                kept.1.notify_all();
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("tern reports its listener");
        Self {
            child,
            addr,
            lines,
            reader: Some(reader),
        }
    }

    /// SIGKILL, and every line it wrote to stderr (read to the end of the stream).
    pub fn stop(&mut self) -> Vec<String> {
        self.kill();
        if let Some(r) = self.reader.take() {
            r.join().expect("the stderr reader ends");
        }
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) for a stderr line containing every one of `parts`.
    pub fn wait_for_line(&self, parts: &[&str], timeout: Duration) -> Option<String> {
        wait_for(&self.lines, parts, timeout)
    }

    /// Resident memory in KiB, from /proc/PID/status; panics if the broker has exited.
    pub fn rss_kib(&mut self) -> u64 {
        self.status_field("VmRSS")
    }

    /// A number from /proc/PID/status (its first word: `VmRSS` in KiB, `FDSize` in
    /// descriptors); panics if the broker has exited.
    pub fn status_field(&mut self, name: &str) -> u64 {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the broker has exited"
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker is not left running when a test fails before killing it.
impl Drop for ChildBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// [`ChildBroker::wait_for_line`] on a clone of its `lines` (usable from another thread).
pub fn wait_for(
    lines: &(Mutex<Vec<String>>, Condvar),
    parts: &[&str],
    timeout: Duration,
) -> Option<String> {
    let until = Instant::now() + timeout;
    let (lines, new_line) = lines;
    let mut lines = lines.lock().unwrap();
    loop {
        if let Some(l) = lines.iter().find(|l| parts.iter().all(|p| l.contains(p))) {
            return Some(l.clone());
        }
        let left = until.checked_duration_since(Instant::now())?;
        lines = new_line.wait_timeout(lines, left).unwrap().0;
    }
}

/// Opens an MQTT connection to `addr` and sends CONNECT: the connection and its CONNACK's code.
pub async fn mqtt_connect(
    addr: SocketAddr,
    version: tern_codec::ProtocolVersion,
    client_id: &str,
    clean: bool,
    keep_alive: u16,
) -> (tern_client::Connection, u8) {
    let mut c = tern_client::Connection::connect(addr, version)
        .await
        .unwrap();
    let connect = tern_client::builder::connect(version, client_id, clean, keep_alive);
    c.send(&tern_codec::Packet::Connect(Box::new(connect)))
        .await
        .unwrap();
    match c.recv_timeout(Duration::from_secs(10)).await.unwrap() {
        tern_codec::Packet::ConnAck(a) => (c, a.code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}
